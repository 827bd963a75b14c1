/* Host copies of device tensors (see host_tensor.h). */
#include "host_tensor.h"
#include "splitmix.h"

#include "splitmix.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void tensor_store(void *data, pbsa_dtype dtype, size_t index, float value)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: ((float *)data)[index] = value; break;
    case PBSA_DTYPE_F16: ((uint16_t *)data)[index] = pbsa_ref_float_to_half(value); break;
    case PBSA_DTYPE_BF16: ((uint16_t *)data)[index] = pbsa_ref_float_to_bf16(value); break;
    }
}

double tensor_load(const void *data, pbsa_dtype dtype, size_t index)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return ((const float *)data)[index];
    case PBSA_DTYPE_F16: return pbsa_ref_half_to_float(((const uint16_t *)data)[index]);
    case PBSA_DTYPE_BF16: return pbsa_ref_bf16_to_float(((const uint16_t *)data)[index]);
    }
    return NAN;
}

void tensor_random(void *data, pbsa_dtype dtype, size_t count, float amplitude, uint64_t *rng)
{
    for (size_t i = 0; i < count; i++)
        tensor_store(data, dtype, i, amplitude * splitmix_signed(rng));
}

void tensor_init(host_tensor *t, pbsa_dtype dtype, int batch, int heads, int seq, int head_dim,
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

void tensor_set(host_tensor *t, int b, int h, int s, int d, float value)
{
    tensor_store(t->bytes, t->desc.dtype, index_of(&t->desc, b, h, s, d), value);
}

void tensor_fill_random(host_tensor *t, uint64_t *rng, float amplitude)
{
    tensor_random(t->bytes, t->desc.dtype, t->size / pbsa_dtype_size(t->desc.dtype), amplitude,
                  rng);
}

pbsa_host_tensor tensor_host_view(const host_tensor *t)
{
    const pbsa_tensor *d = &t->desc;
    pbsa_host_tensor h = {t->bytes + d->offset * pbsa_dtype_size(d->dtype), d->dtype, d->batch,
                          d->heads, d->seq, d->head_dim, d->stride_batch, d->stride_head,
                          d->stride_seq};
    return h;
}

double tensor_get(const host_tensor *t, int b, int h, int s, int d)
{
    pbsa_host_tensor view = tensor_host_view(t);
    return pbsa_ref_element(&view, b, h, s, d);
}

int tensor_upload(host_tensor *t, cl_context cl_ctx)
{
    cl_int err;
    t->desc.buffer = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, t->size,
                                    t->bytes, &err);
    return err;
}

int tensor_rewrite(host_tensor *t, cl_command_queue queue)
{
    return clEnqueueWriteBuffer(queue, t->desc.buffer, CL_TRUE, 0, t->size, t->bytes, 0, NULL,
                                NULL);
}

int tensor_download(host_tensor *t, cl_command_queue queue)
{
    return clEnqueueReadBuffer(queue, t->desc.buffer, CL_TRUE, 0, t->size, t->bytes, 0, NULL,
                               NULL);
}

void tensor_free(host_tensor *t)
{
    if (t->desc.buffer)
        clReleaseMemObject(t->desc.buffer);
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

long tensor_guard_damage(const host_tensor *t)
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

tensor_error tensor_compare(const host_tensor *t, const double *ref)
{
    const pbsa_tensor *d = &t->desc;
    tensor_error e = {0};
    double diff2 = 0.0, ref2 = 0.0;
    size_t n = 0;
    for (int b = 0; b < d->batch; b++)
        for (int h = 0; h < d->heads; h++)
            for (int s = 0; s < d->seq; s++)
                for (int x = 0; x < d->head_dim; x++, n++) {
                    if (!isfinite(ref[n]))
                        continue;
                    double got = tensor_get(t, b, h, s, x);
                    if (!isfinite(got)) {
                        e.nonfinite++;
                        continue;
                    }
                    double diff = got - ref[n];
                    diff2 += diff * diff;
                    ref2 += ref[n] * ref[n];
                    e.max_abs = fmax(e.max_abs, fabs(diff));
                }
    e.rel_l2 = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    e.guard_damage = tensor_guard_damage(t);
    return e;
}
