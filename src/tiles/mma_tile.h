/* The NVIDIA tensor-core tiles (cl/mma_tile.cl) in their two families, mma.sync and Hopper's
 * wgmma: configurations, their rules, local-memory need, heuristic defaults and -D options; the
 * probes that decide whether a context uses them are in src/tiles/mma_probe.c.
 * src/launch/dispatch.c decides when a call runs on them; configurations are looked up under the
 * kinds PBSA_KERNEL_DENSE_MMA and PBSA_KERNEL_SPARSE_MMA, and _WGMMA for the wgmma family. */
#ifndef PBSA_MMA_TILE_H
#define PBSA_MMA_TILE_H

#include "core/internal.h"

/* The tuning parameters of cl/mma_tile.cl, passed to it as -D options. src/tuning/space.c
 * declares them (names in tuning files, value ranges, values the tuner tries). */
typedef struct pbsa_mma_config {
    int warps;  /* MMA_WARPS: work-items per work-group, in warps of 32 */
    int groups; /* MMA_GROUPS: groups of 16 query rows per warp, which share each K/V fragment */
    int keys;   /* BN: keys per tile */
    int stages; /* MMA_STAGES: 1 loads a tile's K and V between tiles; 2 overlaps their loads
                   with the products (V during Q.K^T, the next K during P.V); wgmma only: 3
                   double-buffers them (the next tile's K and V during this tile), 4 defers each
                   tile's P.V to the next tile, 5 stages the next tile through registers, 6 is
                   5 with the warpgroups taking turns at Q.K^T (cl/mma_tile.cl) */
} pbsa_mma_config;

/* Local memory (bytes) the kernel declares for config and head_dim. */
size_t pbsa_mma_local_bytes(const pbsa_mma_config *config, int head_dim);
/* The head dims of the mma.sync tiles: 64, 80, 96, 112, 128 and 192 (256 needs more registers
 * than a thread has). */
bool pbsa_mma_config_head_dim(int head_dim);
/* Whether the kernel accepts config for head_dim (warps 2, 4 or 8, groups 1 or 2 (1 beyond head
 * dim 128), keys 32 or 64, stages 1 or 2, a head dim of pbsa_mma_config_head_dim()) and it fits
 * the device's local memory and work-group size. */
bool pbsa_mma_config_valid(const pbsa_mma_config *config, int head_dim,
                           const pbsa_device_info *info);
/* Whether the query rows and key tiles of config divide block (the logical block of the sparse
 * kernel; 0 for the dense kernel: no limit). */
bool pbsa_mma_config_fits(const pbsa_mma_config *config, int block);
bool pbsa_mma_config_equal(const pbsa_mma_config *a, const pbsa_mma_config *b);
/* The lists the heuristics of the two variants choose from, largest first, which are also the
 * rungs a call steps down through when the compiled kernel allows fewer work-items. Set *list and
 * return its length. */
size_t pbsa_mma_ladder(const pbsa_mma_config **list);
size_t pbsa_wgmma_ladder(const pbsa_mma_config **list);
/* The built-in rule: the first of a short list (the fastest on an H100 first) that fits the
 * device and block. Check the result with pbsa_mma_config_valid() (a tiny device may have
 * none). */
pbsa_mma_config pbsa_mma_config_heuristic(const pbsa_device_info *info, int head_dim, int block);
/* The wgmma variant (cl/mma_tile.cl with WGMMA 1, contexts whose wgmma probe passed): whether it
 * accepts config for head_dim (warps 4, 8 or 12, groups 1, keys 32 or 64, stages 1 to 6, head
 * dim 128: at 64 it computed wrong results on the H200, cause not found) on the device, and its heuristic default, as for pbsa_mma_config_valid() and
 * pbsa_mma_config_heuristic(). Its calls' configurations are looked up under the kinds
 * PBSA_KERNEL_DENSE_WGMMA and PBSA_KERNEL_SPARSE_WGMMA. */
bool pbsa_wgmma_config_valid(const pbsa_mma_config *config, int head_dim,
                             const pbsa_device_info *info);
pbsa_mma_config pbsa_wgmma_config_heuristic(const pbsa_device_info *info, int head_dim, int block);
/* Writes the build options of a tensor-core kernel variant (dtypes, head dim, causal, config). */
bool pbsa_mma_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                      int causal, const pbsa_mma_config *config);

#endif
