/* Validation of caller arguments before anything is enqueued. */
#include "core/internal.h"

#include <inttypes.h>

bool pbsa_head_dim_supported(int64_t head_dim)
{
    return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 112 ||
           head_dim == 128 || head_dim == 192 || head_dim == 256;
}

static bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static bool add_overflows(uint64_t a, uint64_t b, uint64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* Index of the last element of t (all sizes positive, strides non-negative), or false on overflow. */
static bool last_element(const pbsa_tensor *t, uint64_t *out)
{
    uint64_t last = t->offset, term;
    const int64_t extent[4] = {t->batch, t->heads, t->seq, t->head_dim};
    const int64_t stride[4] = {t->stride_batch, t->stride_head, t->stride_seq, 1};
    for (int i = 0; i < 4; i++) {
        if (mul_overflows((uint64_t)(extent[i] - 1), (uint64_t)stride[i], &term) ||
            add_overflows(last, term, &last))
            return false;
    }
    *out = last;
    return true;
}

int pbsa_check_tensor(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                      const char *name, const pbsa_tensor *t)
{
    if (!t)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn, name);
    if (!t->buffer && mode == PBSA_CHECK_CALL)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: %s.buffer is NULL", fn, name);
    size_t element_size = pbsa_dtype_size(t->dtype);
    if (element_size == 0)
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DTYPE, "%s: %s.dtype = %d is not a pbsa_dtype",
                         fn, name, (int)t->dtype);
    const char *size_names[4] = {"batch", "heads", "seq", "head_dim"};
    const int64_t sizes[4] = {t->batch, t->heads, t->seq, t->head_dim};
    for (int i = 0; i < 4; i++)
        if (sizes[i] <= 0 || sizes[i] > INT32_MAX)
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                             "%s: %s.%s = %" PRId64 " must be in 1..%d", fn, name, size_names[i],
                             sizes[i], INT32_MAX);
    const char *stride_names[3] = {"stride_batch", "stride_head", "stride_seq"};
    const int64_t strides[3] = {t->stride_batch, t->stride_head, t->stride_seq};
    for (int i = 0; i < 3; i++)
        if (strides[i] < 0)
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: %s.%s = %" PRId64 " is negative",
                             fn, name, stride_names[i], strides[i]);
    uint64_t last, bytes;
    if (!last_element(t, &last) || add_overflows(last, 1, &bytes) ||
        mul_overflows(bytes, element_size, &bytes))
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW,
                         "%s: %s: offset + strides x sizes overflows 64 bits", fn, name);
    if (!t->buffer)
        return PBSA_SUCCESS; /* a query's description of a buffer not made yet */

    cl_context owner = NULL;
    size_t buffer_bytes = 0;
    cl_int err = clGetMemObjectInfo(t->buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(t->buffer, CL_MEM_SIZE, sizeof buffer_bytes, &buffer_bytes, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: %s.buffer is not a valid cl_mem (OpenCL error %d)", fn,
                         name, err);
    if (owner != ctx->cl_ctx)
        return pbsa_fail(ctx, PBSA_ERROR_WRONG_DEVICE,
                         "%s: %s.buffer belongs to another OpenCL context", fn, name);
    if (bytes > buffer_bytes)
        return pbsa_fail(ctx, PBSA_ERROR_BUFFER_TOO_SMALL,
                         "%s: %s needs %" PRIu64 " bytes but %s.buffer has %zu", fn, name, bytes,
                         name, buffer_bytes);
    return PBSA_SUCCESS;
}

int pbsa_check_int_buffer(const pbsa_context *ctx, const char *fn, const char *name,
                          cl_mem buffer, uint64_t offset, uint64_t count)
{
    if (!buffer)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn, name);
    cl_context owner = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: %s is not a valid cl_mem (OpenCL error %d)", fn, name, err);
    if (owner != ctx->cl_ctx)
        return pbsa_fail(ctx, PBSA_ERROR_WRONG_DEVICE, "%s: %s belongs to another OpenCL context",
                         fn, name);
    uint64_t end;
    if (__builtin_add_overflow(offset, count, &end) || end > UINT64_MAX / 4)
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW, "%s: %s offset + size overflows", fn, name);
    if (end * 4 > size)
        return pbsa_fail(ctx, PBSA_ERROR_BUFFER_TOO_SMALL,
                         "%s: %s needs %" PRIu64 " bytes but has %zu", fn, name, end * 4, size);
    return PBSA_SUCCESS;
}

/* The log-sum-exp values of a call on q: one per query row of every head. q was checked: each
 * size is below 2^31, so the product fits. */
static uint64_t lse_count(const pbsa_tensor *q)
{
    return (uint64_t)q->batch * (uint64_t)q->heads * (uint64_t)q->seq;
}

int pbsa_check_lse(const pbsa_context *ctx, const char *fn, const pbsa_tensor *q, cl_mem lse,
                   uint64_t offset)
{
    if (!lse)
        return PBSA_SUCCESS;
    return pbsa_check_int_buffer(ctx, fn, "params->lse", lse, offset, lse_count(q));
}

pbsa_span pbsa_lse_span(const pbsa_tensor *q, cl_mem lse, uint64_t offset)
{
    return pbsa_int_span("params->lse", lse, offset, lse_count(q));
}

pbsa_span pbsa_tensor_span(const char *name, const pbsa_tensor *t)
{
    uint64_t last = 0;
    last_element(t, &last); /* t was checked: no overflow */
    const uint64_t size = pbsa_dtype_size(t->dtype);
    return (pbsa_span){name, t->buffer, t->offset * size, (last + 1) * size};
}

int pbsa_check_queue(const pbsa_context *ctx, const char *fn, cl_command_queue queue)
{
    if (!queue)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: queue is NULL", fn);
    cl_context owner = NULL;
    cl_device_id device = NULL;
    cl_int err = clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof device, &device, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: queue is not a valid command queue (OpenCL error %d)", fn,
                         err);
    if (owner != ctx->cl_ctx || device != ctx->device)
        return pbsa_fail(ctx, PBSA_ERROR_WRONG_DEVICE,
                         "%s: queue belongs to another OpenCL context or device than ctx", fn);
    return PBSA_SUCCESS;
}

static int shape_mismatch(const pbsa_context *ctx, const char *fn, const char *name,
                          const char *field, int64_t value, const char *other_name,
                          int64_t other_value)
{
    return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                     "%s: %s.%s = %" PRId64 " differs from %s.%s = %" PRId64, fn, name, field,
                     value, other_name, field, other_value);
}

/* Fails when two elements of an output may share an address (a zero stride, or rows or heads
 * that interleave). Conservative: with the dimensions of more than one element ordered by
 * stride, each stride must step past everything the smaller ones span. t was checked, so
 * nothing overflows. */
static int check_no_self_overlap(const pbsa_context *ctx, const char *fn, const char *name,
                                 const pbsa_tensor *t)
{
    const char *stride_names[4] = {"head_dim", "stride_seq", "stride_head", "stride_batch"};
    const int64_t extent[4] = {t->head_dim, t->seq, t->heads, t->batch};
    const int64_t stride[4] = {1, t->stride_seq, t->stride_head, t->stride_batch};
    int order[4], count = 0;
    for (int i = 0; i < 4; i++) {
        if (extent[i] == 1)
            continue;
        int at = count++;
        while (at > 0 && stride[order[at - 1]] > stride[i]) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = i;
    }
    uint64_t span = 1;
    for (int j = 0; j < count; j++) {
        int i = order[j];
        if ((uint64_t)stride[i] < span)
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                             "%s: %s.%s = %" PRId64 " makes elements of %s overlap each other",
                             fn, name, stride_names[i], stride[i], name);
        span += (uint64_t)(extent[i] - 1) * (uint64_t)stride[i];
    }
    return PBSA_SUCCESS;
}

int pbsa_check_query_key(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                         const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_varlen *varlen,
                         const pbsa_paged_kv *paged, pbsa_sequences *seqs)
{
    int status = pbsa_check_tensor(ctx, fn, mode, "q", q);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_tensor(ctx, fn, mode, "k", k);
    if (status != PBSA_SUCCESS)
        return status;
    /* q and k may differ in dtype: every kernel reads each tensor in its own. */
    if (!pbsa_head_dim_supported(q->head_dim))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_HEAD_DIM,
                         "%s: q.head_dim = %" PRId64 " is not supported (" PBSA_HEAD_DIMS ")", fn,
                         q->head_dim);
    if (paged && !varlen)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: paged_kv needs varlen (its key offsets give the sequences' lengths)",
                         fn);
    /* A paged k is a pool of pages, not a batch. */
    if (!paged && k->batch != q->batch)
        return shape_mismatch(ctx, fn, "k", "batch", k->batch, "q", q->batch);
    if (k->head_dim != q->head_dim)
        return shape_mismatch(ctx, fn, "k", "head_dim", k->head_dim, "q", q->head_dim);
    if (q->heads % k->heads != 0)
        return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                         "%s: q.heads = %" PRId64 " is not a multiple of k.heads = %" PRId64, fn,
                         q->heads, k->heads);
    /* Packed sequences compare their lengths one by one (pbsa_check_sequences()). */
    if (!varlen && q->seq > k->seq)
        return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                         "%s: q.seq = %" PRId64 " exceeds k.seq = %" PRId64
                         " (queries are the last q.seq positions)",
                         fn, q->seq, k->seq);
    return pbsa_check_sequences(ctx, fn, mode, q, k, varlen, paged, seqs);
}

int pbsa_check_attention_tensors(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                                 const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                                 const pbsa_tensor *o, const pbsa_varlen *varlen,
                                 const pbsa_paged_kv *paged, pbsa_sequences *seqs)
{
    int status = pbsa_check_query_key(ctx, fn, mode, q, k, varlen, paged, seqs);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_tensor(ctx, fn, mode, "v", v);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_tensor(ctx, fn, mode, "o", o);
    if (status != PBSA_SUCCESS)
        return status;
    const char *names[4] = {"q", "k", "v", "o"};
    const pbsa_tensor *tensors[4] = {q, k, v, o};
    /* K and V are staged and multiplied as one type; q and o may each have any dtype. */
    if (v->dtype != k->dtype)
        return pbsa_fail(ctx, PBSA_ERROR_DTYPE_MISMATCH,
                         "%s: v.dtype = %s differs from k.dtype = %s (k and v share one dtype)", fn,
                         pbsa_dtype_name(v->dtype), pbsa_dtype_name(k->dtype));
    for (int i = 2; i < 4; i++) {
        const pbsa_tensor *t = tensors[i];
        /* v has k's batch (the pool's pages when paged), o has q's. */
        const pbsa_tensor *like = i == 2 ? k : q;
        if (t->batch != like->batch)
            return shape_mismatch(ctx, fn, names[i], "batch", t->batch, i == 2 ? "k" : "q",
                                  like->batch);
        if (t->head_dim != q->head_dim)
            return shape_mismatch(ctx, fn, names[i], "head_dim", t->head_dim, "q", q->head_dim);
    }
    if (v->heads != k->heads)
        return shape_mismatch(ctx, fn, "v", "heads", v->heads, "k", k->heads);
    if (v->seq != k->seq)
        return shape_mismatch(ctx, fn, "v", "seq", v->seq, "k", k->seq);
    if (o->heads != q->heads)
        return shape_mismatch(ctx, fn, "o", "heads", o->heads, "q", q->heads);
    if (o->seq != q->seq)
        return shape_mismatch(ctx, fn, "o", "seq", o->seq, "q", q->seq);
    if (paged) {
        status = pbsa_check_pages_consecutive(ctx, fn, "v", v);
        if (status != PBSA_SUCCESS)
            return status;
    }
    return check_no_self_overlap(ctx, fn, "o", o);
}
