/* Configurations of the tensor-core kernels: the kernel's rules, its local-memory need and the
 * heuristic default. */
#include "tiles/mma_tile.h"

size_t pbsa_mma_local_bytes(const pbsa_mma_config *c, int head_dim)
{
    /* struct tile_local of cl/mma_tile.cl: per key, its K and V rows at a pitch of head_dim + 8
     * 16-bit elements and its entries in two slots of two lists (row and position). */
    return (size_t)c->keys * (((size_t)head_dim + 8) * 4 + 16);
}

static bool either(int value, int a, int b) { return value == a || value == b; }

bool pbsa_mma_config_head_dim(int head_dim)
{
    return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 112 ||
           head_dim == 128 || head_dim == 192;
}

bool pbsa_mma_config_valid(const pbsa_mma_config *c, int head_dim, const pbsa_device_info *info)
{
    if ((c->warps != 2 && !either(c->warps, 4, 8)) || !either(c->groups, 1, 2) ||
        !either(c->keys, 32, 64) || !either(c->stages, 1, 2) || !pbsa_mma_config_head_dim(head_dim))
        return false;
    /* Two row groups hold two sets of Q and O fragments: beyond head dim 128 they exceed the 255
     * registers of a thread and spill. */
    if (c->groups == 2 && head_dim > 128)
        return false;
    return 32 * (size_t)c->warps <= info->max_work_group_size &&
           pbsa_mma_local_bytes(c, head_dim) <= info->local_mem_bytes;
}

bool pbsa_mma_config_fits(const pbsa_mma_config *c, int block)
{
    return block == 0 || (c->warps > 0 && c->groups > 0 && c->keys > 0 &&
                          block % (16 * c->warps * c->groups) == 0 && block % c->keys == 0);
}

bool pbsa_mma_config_equal(const pbsa_mma_config *a, const pbsa_mma_config *b)
{
    return a->warps == b->warps && a->groups == b->groups && a->keys == b->keys &&
           a->stages == b->stages;
}

/* The first of list that fits block and that valid accepts on info, else the last. */
static pbsa_mma_config first_valid(const pbsa_mma_config *list, size_t count,
                                   bool (*valid)(const pbsa_mma_config *, int,
                                                 const pbsa_device_info *),
                                   const pbsa_device_info *info, int head_dim, int block)
{
    for (size_t i = 0; i < count; i++)
        if (pbsa_mma_config_fits(&list[i], block) && valid(&list[i], head_dim, info))
            return list[i];
    return list[count - 1];
}

/* The fastest on an H100 first. */
static const pbsa_mma_config mma_ladder[] = {{4, 2, 64, 2}, {4, 1, 64, 2}, {4, 1, 32, 2}};

size_t pbsa_mma_ladder(const pbsa_mma_config **list)
{
    *list = mma_ladder;
    return sizeof mma_ladder / sizeof mma_ladder[0];
}

pbsa_mma_config pbsa_mma_config_heuristic(const pbsa_device_info *info, int head_dim, int block)
{
    return first_valid(mma_ladder, sizeof mma_ladder / sizeof mma_ladder[0],
                       pbsa_mma_config_valid, info, head_dim, block);
}

/* ---- the wgmma variant (WGMMA 1): whole warpgroups, unpadded tiles of 64 keys ---- */

static size_t wgmma_local_bytes(const pbsa_mma_config *c, int head_dim)
{
    /* struct tile_local with WGMMA: K and V rows of head_dim 16-bit elements, no padding; stages
     * 3 keeps two buffers of each, and stages 3 and 4 three list slots; the struct is aligned to,
     * so its size rounded up to, the swizzle's 1024 bytes (SWIZZLE_BYTES of cl/wgmma_ptx.cl). */
    const size_t buffers = c->stages == 3 ? 2 : 1,
                 slots = c->stages == 3 || c->stages == 4 ? 3 : 2;
    const size_t bytes = (size_t)c->keys * ((size_t)head_dim * 4 * buffers + 8 * slots);
    return (bytes + 1023) / 1024 * 1024;
}

bool pbsa_wgmma_config_valid(const pbsa_mma_config *c, int head_dim, const pbsa_device_info *info)
{
    return (either(c->warps, 4, 8) || c->warps == 12) && c->groups == 1 &&
           either(c->keys, 32, 64) && c->stages >= 1 && c->stages <= 6 &&
           head_dim == 128 && 32 * (size_t)c->warps <= info->max_work_group_size &&
           wgmma_local_bytes(c, head_dim) <= info->local_mem_bytes;
}

/* Two warpgroups share each K/V tile, taking turns at Q.K^T (stages 6, w6: the fastest wgmma
 * tile on the H100, bench/NOTES.md); one warpgroup where a block has 64 rows. */
static const pbsa_mma_config wgmma_ladder[] = {{8, 1, 64, 6}, {4, 1, 64, 2}};

size_t pbsa_wgmma_ladder(const pbsa_mma_config **list)
{
    *list = wgmma_ladder;
    return sizeof wgmma_ladder / sizeof wgmma_ladder[0];
}

pbsa_mma_config pbsa_wgmma_config_heuristic(const pbsa_device_info *info, int head_dim, int block)
{
    return first_valid(wgmma_ladder, sizeof wgmma_ladder / sizeof wgmma_ladder[0],
                       pbsa_wgmma_config_valid, info, head_dim, block);
}

bool pbsa_mma_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                      int causal, const pbsa_mma_config *c)
{
    return pbsa_append_dtype_options(options, capacity, dtypes) &&
           pbsa_append_option(options, capacity,
                              " -DHEAD_DIM=%d -DCAUSAL=%d -DMMA_WARPS=%d -DMMA_GROUPS=%d"
                              " -DBN=%d -DMMA_STAGES=%d",
                              head_dim, causal ? 1 : 0, c->warps, c->groups, c->keys, c->stages);
}
