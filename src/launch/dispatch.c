/* When and how the attention kernels run on the tensor-core tiles (cl/mma_tile.cl) instead of
 * the portable ones (cl/flash_tile.cl). */
#include "tiles/mma_tile.h"
#include "tuning/tuning.h"

/* Every row of t starts on a 16-byte boundary (8 elements of 16 bits). */
static bool rows_aligned(const pbsa_tensor *t)
{
    return t->offset % 8 == 0 && t->stride_batch % 8 == 0 && t->stride_head % 8 == 0 &&
           t->stride_seq % 8 == 0;
}

bool pbsa_mma_applies(const pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_tensor *q,
                      const pbsa_tensor *k, const pbsa_tensor *v, int block, int causal,
                      pbsa_mma_config *config)
{
    pbsa_tuning_key key = {kind, q->dtype, (int)q->head_dim, block, causal ? 1 : 0};
    if (!ctx->use_tensor_cores || !pbsa_tuning_key_valid(&key) || !rows_aligned(k) ||
        !rows_aligned(v))
        return false;
    /* The lookup passes over tuned entries that do not fit; the heuristic may not fit either. */
    pbsa_mma_config c = pbsa_tuning_lookup(ctx, &key, NULL, NULL, 0).mma;
    if (!pbsa_mma_config_fits(&c, block) || !pbsa_mma_config_valid(&c, key.head_dim, &ctx->info))
        return false;
    *config = c;
    return true;
}

bool pbsa_mma_scores_apply(const pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                           pbsa_mma_config *config)
{
    /* One query-row group per warp (the kernels' rule); the tile count sizes the workspace, so
     * the configuration is fixed rather than tuned. */
    const pbsa_mma_config c = {4, 1, 64, 1};
    if (!ctx->use_tensor_cores || q->dtype == PBSA_DTYPE_F32 || !rows_aligned(q) ||
        !rows_aligned(k) ||
        !pbsa_mma_config_valid(&c, (int)q->head_dim, &ctx->info))
        return false;
    *config = c;
    return true;
}

int pbsa_mma_kernel(pbsa_context *ctx, const char *kernel_file, const char *kernel_name,
                    const char *extra_options, pbsa_dtype dtype, int head_dim, int causal,
                    const pbsa_mma_config *config, cl_kernel *out, size_t *work_items,
                    size_t *rows)
{
    const char *files[] = {"common.cl", "mma_ptx.cl", "mma_tile.cl", kernel_file};
    char options[512] = "";
    pbsa_mma_options(options, sizeof options, dtype, head_dim, causal, config);
    pbsa_append_option(options, sizeof options, "%s", extra_options);
    *work_items = 32 * (size_t)config->warps;
    *rows = 16 * (size_t)config->warps * (size_t)config->groups;
    return pbsa_get_kernel(ctx, files, 4, options, kernel_name, out);
}
