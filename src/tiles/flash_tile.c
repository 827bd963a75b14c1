/* Tile configurations of the flash-attention kernels: rules, local-memory need and the heuristic
 * defaults. */
#include "tiles/flash_tile.h"

size_t pbsa_flash_local_bytes(const pbsa_flash_config *c, int head_dim)
{
    /* Mirrors struct flash_local in cl/flash_tile.cl. */
    size_t qs_pitch = (size_t)c->block_m + 4, ks_pitch = (size_t)c->block_n + 4;
    size_t stage_qk = (size_t)c->kchunk * (qs_pitch + ks_pitch);
    size_t stage_v = (size_t)c->vchunk * ((size_t)head_dim + 4);
    size_t stage = 2 * (stage_qk > stage_v ? stage_qk : stage_v); /* double-buffered */
    size_t p = (size_t)c->block_n * qs_pitch;
    size_t reductions = 2 * (size_t)c->block_m * (size_t)c->wg_cols;
    size_t keys = 4 * (size_t)c->block_n; /* key_row and key_pos, two slots each */
    return 4 * (stage + p + reductions + keys) + 16;
}

static bool divides(int a, int b) { return a > 0 && b % a == 0; }

/* Bounds that keep the size arithmetic below far from overflow (configurations come from files). */
enum { MAX_TILE_VALUE = 4096 };

static bool in_range(int value, int min) { return value >= min && value <= MAX_TILE_VALUE; }

bool pbsa_flash_config_valid(const pbsa_flash_config *c, int head_dim, const pbsa_device_info *info)
{
    if (!in_range(c->block_m, 1) || !in_range(c->block_n, 1) || !in_range(c->wg_rows, 1) ||
        !in_range(c->wg_cols, 1) || !in_range(c->kchunk, 1) || !in_range(c->vchunk, 1) ||
        !in_range(c->unroll_qk, 0) || !in_range(c->unroll_pv, 0) || !in_range(head_dim, 1))
        return false;
    if (!divides(c->wg_rows, c->block_m) || !divides(c->wg_cols, c->block_n) ||
        !divides(c->wg_cols, head_dim))
        return false;
    int tm = c->block_m / c->wg_rows, tn = c->block_n / c->wg_cols, td = head_dim / c->wg_cols;
    if (tm % 4 || tn % 4 || td % 4)
        return false;
    if (!divides(c->kchunk, head_dim) || c->kchunk % 4 || !divides(c->vchunk, c->block_n))
        return false;
    /* Unrolling by a divisor of the trip count (0: full), so no remainder loop is needed. */
    if ((c->unroll_qk != 0 && !divides(c->unroll_qk, c->kchunk)) ||
        (c->unroll_pv != 0 && !divides(c->unroll_pv, c->vchunk)))
        return false;
    size_t wg = (size_t)c->wg_rows * (size_t)c->wg_cols;
    return wg <= info->max_work_group_size &&
           pbsa_flash_local_bytes(c, head_dim) <= info->local_mem_bytes;
}

bool pbsa_flash_config_fits(const pbsa_flash_config *c, int max_tile)
{
    return max_tile == 0 || (divides(c->block_m, max_tile) && divides(c->block_n, max_tile));
}

static int full_unroll(int unroll, int chunk) { return unroll == 0 ? chunk : unroll; }

bool pbsa_flash_config_equal(const pbsa_flash_config *a, const pbsa_flash_config *b)
{
    return a->block_m == b->block_m && a->block_n == b->block_n && a->wg_rows == b->wg_rows &&
           a->wg_cols == b->wg_cols && a->kchunk == b->kchunk && a->vchunk == b->vchunk &&
           full_unroll(a->unroll_qk, a->kchunk) == full_unroll(b->unroll_qk, b->kchunk) &&
           full_unroll(a->unroll_pv, a->vchunk) == full_unroll(b->unroll_pv, b->vchunk);
}

/* Candidates from the largest to the smallest per device class; the first valid one is the
 * heuristic's choice, and the later ones are where a call steps down when the compiled kernel
 * allows fewer work-items (src/launch/dispatch.c). Unrolling is full (0): on the H100 it ran 6%
 * faster than 4 and 2. V chunks of 8 rows fit head dim 256 into 32 KiB of local memory (the
 * OpenCL 1.2 minimum). Among the rungs of 32 work-items, 8 x 64 comes before 16 x 32 for D 256:
 * output tiles of 32 columns per work-item (D 256 over 8 columns of work-items, D 128 over 4)
 * compute wrong results on Mesa 22.3's Rusticl, which PoCL computes right. */
static const pbsa_flash_config gpu_ladder[] = {
    {64, 64, 8, 16, 16, 16, 0, 0}, /* D 64, 128: 8x4 score and 8x8 output tiles per item */
    {64, 64, 16, 16, 16, 8, 0, 0}, /* D 256 */
    {64, 32, 16, 8, 16, 16, 0, 0}, /* D 96 */
    {64, 64, 16, 4, 16, 16, 0, 0}, /* D 80, 112: 4x16 score and 4x20 or 4x28 output tiles */
    {32, 32, 8, 8, 16, 16, 0, 0},  {32, 32, 8, 8, 16, 8, 0, 0},  {16, 32, 4, 8, 16, 16, 0, 0},
    {8, 64, 2, 16, 16, 8, 0, 0},   {16, 32, 4, 8, 16, 8, 0, 0},  {16, 16, 4, 4, 16, 16, 0, 0},
    {16, 16, 4, 4, 16, 8, 0, 0},
};
static const pbsa_flash_config cpu_ladder[] = {
    {32, 32, 8, 8, 16, 16, 0, 0}, {32, 32, 8, 8, 16, 8, 0, 0},  {16, 32, 4, 8, 16, 16, 0, 0},
    {8, 64, 2, 16, 16, 8, 0, 0},  {16, 32, 4, 8, 16, 8, 0, 0},  {16, 16, 4, 4, 16, 16, 0, 0},
    {16, 16, 4, 4, 16, 8, 0, 0},
};

size_t pbsa_flash_ladder(const pbsa_device_info *info, const pbsa_flash_config **list)
{
    *list = info->is_gpu ? gpu_ladder : cpu_ladder;
    return info->is_gpu ? sizeof gpu_ladder / sizeof gpu_ladder[0]
                        : sizeof cpu_ladder / sizeof cpu_ladder[0];
}

pbsa_flash_config pbsa_flash_config_heuristic(const pbsa_device_info *info, int head_dim,
                                              int max_tile)
{
    const pbsa_flash_config *list;
    size_t count = pbsa_flash_ladder(info, &list);
    for (size_t i = 0; i < count; i++)
        if (pbsa_flash_config_fits(&list[i], max_tile) &&
            pbsa_flash_config_valid(&list[i], head_dim, info))
            return list[i];
    return list[count - 1];
}

bool pbsa_flash_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                        int causal, const pbsa_flash_config *c)
{
    return pbsa_append_dtype_options(options, capacity, dtypes) &&
           pbsa_append_option(options, capacity,
                              " -DHEAD_DIM=%d -DCAUSAL=%d -DBLOCK_M=%d -DBLOCK_N=%d"
                              " -DWG_ROWS=%d -DWG_COLS=%d -DKCHUNK=%d -DVCHUNK=%d"
                              " -DUNROLL_QK=%d -DUNROLL_PV=%d",
                              head_dim, causal ? 1 : 0, c->block_m,
                              c->block_n, c->wg_rows, c->wg_cols, c->kchunk, c->vchunk,
                              full_unroll(c->unroll_qk, c->kchunk),
                              full_unroll(c->unroll_pv, c->vchunk));
}
