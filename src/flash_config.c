/* Tile configurations of the flash-attention kernels: rules, local-memory need and defaults. */
#include "flash_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t pbsa_flash_local_bytes(const pbsa_flash_config *c, int head_dim)
{
    /* Mirrors struct flash_local in cl/flash_tile.cl. */
    size_t qs_pitch = (size_t)c->block_m + 4, ks_pitch = (size_t)c->block_n + 4;
    size_t stage_qk = (size_t)c->kchunk * (qs_pitch + ks_pitch);
    size_t stage_v = (size_t)c->vchunk * ((size_t)head_dim + 4);
    size_t stage = 2 * (stage_qk > stage_v ? stage_qk : stage_v); /* double-buffered */
    size_t p = (size_t)c->block_n * qs_pitch;
    size_t reductions = 2 * (size_t)c->block_m * (size_t)c->wg_cols;
    size_t keys = 2 * (size_t)c->block_n;
    return 4 * (stage + p + reductions + keys) + 16;
}

static bool divides(int a, int b) { return a > 0 && b % a == 0; }

bool pbsa_flash_config_valid(const pbsa_flash_config *c, int head_dim, const pbsa_device_info *info)
{
    if (!divides(c->wg_rows, c->block_m) || !divides(c->wg_cols, c->block_n) ||
        !divides(c->wg_cols, head_dim))
        return false;
    int tm = c->block_m / c->wg_rows, tn = c->block_n / c->wg_cols, td = head_dim / c->wg_cols;
    if (tm % 4 || tn % 4 || td % 4)
        return false;
    if (!divides(c->kchunk, head_dim) || c->kchunk % 4 || !divides(c->vchunk, c->block_n))
        return false;
    size_t wg = (size_t)c->wg_rows * (size_t)c->wg_cols;
    return wg <= info->max_work_group_size &&
           pbsa_flash_local_bytes(c, head_dim) <= info->local_mem_bytes;
}

static bool fits_tile(const pbsa_flash_config *c, int max_tile)
{
    return max_tile == 0 || (divides(c->block_m, max_tile) && divides(c->block_n, max_tile));
}

/* PBSA_FLASH_CONFIG="block_m,block_n,wg_rows,wg_cols,kchunk,vchunk" overrides the default for
 * kernel development and tuning experiments, where it is valid for the call. */
static bool config_from_environment(pbsa_flash_config *out)
{
    const char *text = getenv("PBSA_FLASH_CONFIG");
    pbsa_flash_config c;
    if (!text || sscanf(text, "%d,%d,%d,%d,%d,%d", &c.block_m, &c.block_n, &c.wg_rows,
                        &c.wg_cols, &c.kchunk, &c.vchunk) != 6)
        return false;
    *out = c;
    return true;
}

pbsa_flash_config pbsa_flash_config_default(const pbsa_device_info *info, int head_dim,
                                            int max_tile)
{
    pbsa_flash_config forced;
    if (config_from_environment(&forced) && fits_tile(&forced, max_tile) &&
        pbsa_flash_config_valid(&forced, head_dim, info))
        return forced;
    /* Candidates from the largest to the smallest; the first that is valid wins. */
    static const pbsa_flash_config gpu[] = {
        {64, 64, 8, 16, 16, 16},  /* D 64, 128: 8x4 score and 8x8 output tiles per work-item */
        {64, 64, 16, 16, 16, 8},  /* D 256 */
        {64, 32, 16, 8, 16, 16},  /* D 96 */
        {32, 32, 8, 8, 16, 16},
        {16, 16, 4, 4, 16, 16},
    };
    static const pbsa_flash_config cpu[] = {
        {32, 32, 8, 8, 16, 16},
        {16, 16, 4, 4, 16, 16},
    };
    const pbsa_flash_config *list = info->is_gpu ? gpu : cpu;
    size_t count = info->is_gpu ? sizeof gpu / sizeof gpu[0] : sizeof cpu / sizeof cpu[0];
    for (size_t i = 0; i < count; i++)
        if (fits_tile(&list[i], max_tile) && pbsa_flash_config_valid(&list[i], head_dim, info))
            return list[i];
    return list[count - 1];
}

bool pbsa_flash_options(char *options, size_t capacity, pbsa_dtype dtype, int head_dim, int causal,
                        const pbsa_flash_config *c)
{
    return pbsa_append_option(options, capacity,
                              " %s -DHEAD_DIM=%d -DCAUSAL=%d -DBLOCK_M=%d -DBLOCK_N=%d"
                              " -DWG_ROWS=%d -DWG_COLS=%d -DKCHUNK=%d -DVCHUNK=%d",
                              pbsa_dtype_define(dtype), head_dim, causal ? 1 : 0, c->block_m,
                              c->block_n, c->wg_rows, c->wg_cols, c->kchunk, c->vchunk);
}
