/* Configurations of the NVIDIA tensor-core kernels (cl/mma_tile.cl) and when a call runs on them
 * (src/launch/dispatch.c). A call picks its configuration through the same lookup as the flash kernels
 * (src/tuning/tuning.c), under the kinds PBSA_KERNEL_DENSE_MMA and PBSA_KERNEL_SPARSE_MMA. */
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
                   with the products (V during Q.K^T, the next K during P.V) */
} pbsa_mma_config;

/* Local memory (bytes) the kernel declares for config and head_dim. */
size_t pbsa_mma_local_bytes(const pbsa_mma_config *config, int head_dim);
/* Whether the kernel accepts config for head_dim (warps 2, 4 or 8, groups 1 or 2, keys 32 or 64,
 * stages 1 or 2, head dim 64, 96 or 128) and it fits the device's local memory and work-group
 * size. */
bool pbsa_mma_config_valid(const pbsa_mma_config *config, int head_dim,
                           const pbsa_device_info *info);
/* Whether the query rows and key tiles of config divide block (the logical block of the sparse
 * kernel; 0 for the dense kernel: no limit). */
bool pbsa_mma_config_fits(const pbsa_mma_config *config, int block);
bool pbsa_mma_config_equal(const pbsa_mma_config *a, const pbsa_mma_config *b);
/* The built-in rule: the first of a short list (the fastest on an H100 first) that fits the
 * device and block. Check the result with pbsa_mma_config_valid() (a tiny device may have
 * none). */
pbsa_mma_config pbsa_mma_config_heuristic(const pbsa_device_info *info, int head_dim, int block);
/* Writes the build options of a tensor-core kernel variant (dtype, head dim, causal, config). */
bool pbsa_mma_options(char *options, size_t capacity, pbsa_dtype dtype, int head_dim, int causal,
                      const pbsa_mma_config *config);

/* ---- the tensor-core path (src/launch/dispatch.c) ---- */

/* Whether a call of kind (PBSA_KERNEL_DENSE_MMA with block 0, or PBSA_KERNEL_SPARSE_MMA with the
 * logical block) on these tensors runs on the tensor-core tiles, and with which configuration:
 * ctx uses tensor cores, the key has a tensor-core variant (f16/bf16, head dim 64, 96 or 128,
 * sparse blocks 64 and 128), K and V rows start on 16-byte boundaries, and the configuration
 * that the lookup finds for the key (pbsa_tuning_lookup(): tuned entries that do not fit are
 * passed over for the heuristic) fits. *config receives it when true. Thread-safe. */
bool pbsa_mma_applies(const pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_tensor *q,
                      const pbsa_tensor *k, const pbsa_tensor *v, int block, int causal,
                      pbsa_mma_config *config);
/* Whether the fused permutation-score kernels run on the tensor cores (cl/pbs_scores_mma.cl)
 * for q and k on ctx: ctx uses tensor cores, f16/bf16, head dim 64, 96 or 128, Q and K rows
 * 16-byte aligned. *config receives their fixed configuration (4 warps, 64 keys) when true. */
bool pbsa_mma_scores_apply(const pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                           pbsa_mma_config *config);
/* kernel_name of kernel_file built on the tensor-core tiles of config (extra_options appended),
 * with its work-group size (32 x warps) and query rows per work-group (16 x warps x groups). The
 * caller releases *out. */
int pbsa_mma_kernel(pbsa_context *ctx, const char *kernel_file, const char *kernel_name,
                    const char *extra_options, pbsa_dtype dtype, int head_dim, int causal,
                    const pbsa_mma_config *config, cl_kernel *out, size_t *work_items,
                    size_t *rows);

#endif
