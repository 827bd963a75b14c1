/* Tensor descriptor constructors, dtype sizes and names. */
#include "core/internal.h"

size_t pbsa_dtype_size(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return 4;
    case PBSA_DTYPE_F16:
    case PBSA_DTYPE_BF16: return 2;
    }
    return 0;
}

const char *pbsa_dtype_name(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return "f32";
    case PBSA_DTYPE_F16: return "f16";
    case PBSA_DTYPE_BF16: return "bf16";
    }
    return NULL;
}

pbsa_tensor pbsa_tensor_bhsd(cl_mem buffer, pbsa_dtype dtype, int64_t batch, int64_t heads,
                             int64_t seq, int64_t head_dim)
{
    pbsa_tensor t = {.buffer = buffer, .dtype = dtype, .batch = batch, .heads = heads,
                     .seq = seq, .head_dim = head_dim};
    /* Unsigned products: sizes too large wrap instead of overflowing, and the argument checks of
     * every call reject the result. */
    t.stride_seq = head_dim;
    t.stride_head = (int64_t)((uint64_t)seq * (uint64_t)head_dim);
    t.stride_batch = (int64_t)((uint64_t)heads * (uint64_t)t.stride_head);
    return t;
}

pbsa_tensor pbsa_tensor_bshd(cl_mem buffer, pbsa_dtype dtype, int64_t batch, int64_t heads,
                             int64_t seq, int64_t head_dim)
{
    pbsa_tensor t = {.buffer = buffer, .dtype = dtype, .batch = batch, .heads = heads,
                     .seq = seq, .head_dim = head_dim};
    t.stride_head = head_dim;
    t.stride_seq = (int64_t)((uint64_t)heads * (uint64_t)head_dim);
    t.stride_batch = (int64_t)((uint64_t)seq * (uint64_t)t.stride_seq);
    return t;
}
