/* Host copies of device tensors (see tensor_io.h). */
#include "tensor_io.h"

#include "splitmix.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void tensor_init(test_tensor *t, pbsa_dtype dtype, int batch, int heads, int seq, int head_dim,
                 tensor_layout layout, int guard)
{
    pbsa_tensor d = layout == TENSOR_BSHD
                        ? pbsa_tensor_bshd(NULL, dtype, batch, heads, seq, head_dim)
                        : pbsa_tensor_bhsd(NULL, dtype, batch, heads, seq, head_dim);
    if (layout == TENSOR_PADDED) {
        d.stride_seq = head_dim + 8;
        d.stride_head = (int64_t)seq * d.stride_seq + 5;
        d.stride_batch = (int64_t)heads * d.stride_head + 3;
    }
    d.offset = (uint64_t)guard;
    uint64_t last = d.offset + (uint64_t)(batch - 1) * (uint64_t)d.stride_batch +
                    (uint64_t)(heads - 1) * (uint64_t)d.stride_head +
                    (uint64_t)(seq - 1) * (uint64_t)d.stride_seq + (uint64_t)(head_dim - 1);
    t->desc = d;
    t->size = (size_t)(last + 1 + (uint64_t)guard) * pbsa_dtype_size(dtype);
    t->bytes = malloc(t->size);
    if (t->bytes)
        memset(t->bytes, 0xff, t->size);
}

static size_t index_of(const pbsa_tensor *d, int b, int h, int s, int e)
{
    return (size_t)(d->offset + (uint64_t)b * (uint64_t)d->stride_batch +
                    (uint64_t)h * (uint64_t)d->stride_head + (uint64_t)s * (uint64_t)d->stride_seq +
                    (uint64_t)e);
}

void tensor_set(test_tensor *t, int b, int h, int s, int d, float value)
{
    unsigned char *at = t->bytes + index_of(&t->desc, b, h, s, d) * pbsa_dtype_size(t->desc.dtype);
    uint16_t bits;
    switch (t->desc.dtype) {
    case PBSA_DTYPE_F32: memcpy(at, &value, 4); return;
    case PBSA_DTYPE_F16: bits = pbsa_ref_float_to_half(value); break;
    case PBSA_DTYPE_BF16: bits = pbsa_ref_float_to_bf16(value); break;
    default: return;
    }
    memcpy(at, &bits, 2);
}

pbsa_host_tensor tensor_host_view(const test_tensor *t)
{
    const pbsa_tensor *d = &t->desc;
    pbsa_host_tensor h = {t->bytes + d->offset * pbsa_dtype_size(d->dtype), d->dtype, d->batch,
                          d->heads, d->seq, d->head_dim, d->stride_batch, d->stride_head,
                          d->stride_seq};
    return h;
}

double tensor_get(const test_tensor *t, int b, int h, int s, int d)
{
    pbsa_host_tensor view = tensor_host_view(t);
    return pbsa_ref_element(&view, b, h, s, d);
}

void tensor_fill_uniform(test_tensor *t, uint64_t *seed)
{
    const pbsa_tensor *d = &t->desc;
    for (int b = 0; b < d->batch; b++)
        for (int h = 0; h < d->heads; h++)
            for (int s = 0; s < d->seq; s++)
                for (int e = 0; e < d->head_dim; e++)
                    tensor_set(t, b, h, s, e, splitmix_signed(seed));
}

int tensor_upload(test_tensor *t, cl_context cl_ctx)
{
    cl_int err;
    t->desc.buffer = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, t->size,
                                    t->bytes, &err);
    return err;
}

int tensor_download(test_tensor *t, cl_command_queue queue)
{
    return clEnqueueReadBuffer(queue, t->desc.buffer, CL_TRUE, 0, t->size, t->bytes, 0, NULL,
                               NULL);
}

void tensor_free(test_tensor *t)
{
    if (t->desc.buffer)
        clReleaseMemObject(t->desc.buffer);
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

long tensor_guard_damage(const test_tensor *t)
{
    const pbsa_tensor *d = &t->desc;
    size_t element = pbsa_dtype_size(d->dtype);
    unsigned char *owned = calloc(t->size, 1);
    if (!owned)
        return -1;
    for (int b = 0; b < d->batch; b++)
        for (int h = 0; h < d->heads; h++)
            for (int s = 0; s < d->seq; s++)
                memset(owned + index_of(d, b, h, s, 0) * element, 1,
                       (size_t)d->head_dim * element);
    long damaged = 0;
    for (size_t i = 0; i < t->size; i++)
        damaged += !owned[i] && t->bytes[i] != 0xff;
    free(owned);
    return damaged;
}

double tensor_rel_l2(const test_tensor *t, const double *ref, long *nonfinite)
{
    const pbsa_tensor *d = &t->desc;
    double diff2 = 0.0, ref2 = 0.0;
    long bad = 0;
    size_t n = 0;
    for (int b = 0; b < d->batch; b++)
        for (int h = 0; h < d->heads; h++)
            for (int s = 0; s < d->seq; s++)
                for (int e = 0; e < d->head_dim; e++, n++) {
                    if (!isfinite(ref[n]))
                        continue;
                    double got = tensor_get(t, b, h, s, e);
                    if (!isfinite(got)) {
                        bad++;
                        continue;
                    }
                    diff2 += (got - ref[n]) * (got - ref[n]);
                    ref2 += ref[n] * ref[n];
                }
    if (nonfinite)
        *nonfinite = bad;
    return ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
}
