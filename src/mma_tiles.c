/* When and how the attention kernels run on the tensor-core tiles (cl/mma_tile.cl) instead of
 * the portable ones (cl/flash_tile.cl). */
#include "internal.h"

enum { MMA_ROWS = 64, MMA_WORK_ITEMS = 128, MMA_KEYS = 32 };

/* Every row of t starts on a 16-byte boundary (8 elements of 16 bits). */
static bool rows_aligned(const pbsa_tensor *t)
{
    return t->offset % 8 == 0 && t->stride_batch % 8 == 0 && t->stride_head % 8 == 0 &&
           t->stride_seq % 8 == 0;
}

bool pbsa_mma_applies(const pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                      const pbsa_tensor *v, int logical_block)
{
    return ctx->use_tensor_cores && q->dtype != PBSA_DTYPE_F32 &&
           (q->head_dim == 64 || q->head_dim == 96 || q->head_dim == 128) && rows_aligned(k) &&
           rows_aligned(v) && logical_block % MMA_ROWS == 0;
}

int pbsa_mma_kernel(pbsa_context *ctx, const char *kernel_file, const char *kernel_name,
                    const char *extra_options, pbsa_dtype dtype, int head_dim, int causal,
                    cl_kernel *out, size_t *work_items, size_t *rows)
{
    const char *files[] = {"common.cl", "mma_tile.cl", kernel_file};
    char options[512] = "";
    pbsa_append_option(options, sizeof options, "%s -DHEAD_DIM=%d -DCAUSAL=%d -DBN=%d %s",
                       pbsa_dtype_define(dtype), head_dim, causal ? 1 : 0, MMA_KEYS,
                       extra_options);
    *work_items = MMA_WORK_ITEMS;
    *rows = MMA_ROWS;
    return pbsa_get_kernel(ctx, files, 3, options, kernel_name, out);
}
