/* Conformance cases and their runner (see conformance.h). */
#include "conformance.h"
#include "pbsattn_ref.h"
#include "splitmix.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Elements of poisoned space before and after every output tensor, checked after each run. */
enum { GUARD_ELEMENTS = 64 };

const conformance_case conformance_dense_cases[] = {
    {"f32_d64_s1", PBSA_DTYPE_F32, 1, 2, 2, 1, 1, 64, 1, LAYOUT_BHSD},
    {"f32_d64_s7_gqa4", PBSA_DTYPE_F32, 1, 4, 1, 7, 7, 64, 1, LAYOUT_BHSD},
    {"f16_d96_s129_gqa4", PBSA_DTYPE_F16, 1, 8, 2, 129, 129, 96, 1, LAYOUT_BHSD},
    {"bf16_d128_s1000_gqa8", PBSA_DTYPE_BF16, 1, 8, 1, 1000, 1000, 128, 1, LAYOUT_BHSD},
    {"f32_d256_s129_batch2", PBSA_DTYPE_F32, 2, 2, 2, 129, 129, 256, 1, LAYOUT_BHSD},
    {"bf16_d128_s200_noncausal_bshd", PBSA_DTYPE_BF16, 1, 4, 2, 200, 200, 128, 0, LAYOUT_BSHD},
    {"f16_d64_q100_kv300_offset_bshd", PBSA_DTYPE_F16, 1, 4, 4, 100, 300, 64, 1, LAYOUT_BSHD},
    {"f32_d128_q7_kv129_noncausal", PBSA_DTYPE_F32, 1, 2, 1, 7, 129, 128, 0, LAYOUT_BHSD},
    {"bf16_d256_q64_kv1000_batch2_gqa4", PBSA_DTYPE_BF16, 2, 4, 1, 64, 1000, 256, 1, LAYOUT_BHSD},
    {"f16_d128_s513_padded", PBSA_DTYPE_F16, 1, 2, 2, 513, 513, 128, 1, LAYOUT_PADDED},
    {"f32_d96_s1000_noncausal", PBSA_DTYPE_F32, 1, 2, 2, 1000, 1000, 96, 0, LAYOUT_BHSD},
    {"bf16_d64_s257_batch2_gqa8", PBSA_DTYPE_BF16, 2, 8, 1, 257, 257, 64, 1, LAYOUT_BHSD},
    {"f16_d256_q1_kv1000_padded", PBSA_DTYPE_F16, 1, 4, 2, 1, 1000, 256, 1, LAYOUT_PADDED},
};
const int conformance_dense_case_count =
    (int)(sizeof conformance_dense_cases / sizeof conformance_dense_cases[0]);

double conformance_tolerance(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return 1e-5;  /* fp32 accumulation over up to ~1000 keys */
    case PBSA_DTYPE_F16: return 1e-3;  /* output rounding 2^-11 relative */
    case PBSA_DTYPE_BF16: return 5e-3; /* output rounding 2^-8 relative */
    }
    return 0.0;
}

/* A host copy of one device tensor: its layout and the bytes of its whole buffer. */
typedef struct host_buffer {
    pbsa_tensor desc;
    unsigned char *bytes;
    size_t size;
} host_buffer;

static void make_layout(host_buffer *h, const conformance_case *c, int heads, int seq)
{
    pbsa_tensor t = {.dtype = c->dtype, .batch = c->batch, .heads = heads, .seq = seq,
                     .head_dim = c->head_dim};
    int64_t d = c->head_dim;
    switch (c->layout) {
    case LAYOUT_BHSD:
        t = pbsa_tensor_bhsd(NULL, c->dtype, c->batch, heads, seq, d);
        break;
    case LAYOUT_BSHD:
        t = pbsa_tensor_bshd(NULL, c->dtype, c->batch, heads, seq, d);
        break;
    case LAYOUT_PADDED:
        t.stride_seq = d + 8;
        t.stride_head = seq * t.stride_seq + 5;
        t.stride_batch = heads * t.stride_head + 3;
        break;
    }
    t.offset = GUARD_ELEMENTS + (c->layout == LAYOUT_PADDED ? 11 : 0);
    uint64_t last = t.offset + (uint64_t)(t.batch - 1) * t.stride_batch +
                    (uint64_t)(t.heads - 1) * t.stride_head + (uint64_t)(t.seq - 1) * t.stride_seq +
                    (uint64_t)(d - 1);
    h->desc = t;
    h->size = (size_t)(last + 1 + GUARD_ELEMENTS) * pbsa_dtype_size(c->dtype);
}

static void store_float(unsigned char *at, pbsa_dtype dtype, float x)
{
    uint16_t bits;
    switch (dtype) {
    case PBSA_DTYPE_F32: memcpy(at, &x, 4); return;
    case PBSA_DTYPE_F16: bits = pbsa_ref_float_to_half(x); break;
    case PBSA_DTYPE_BF16: bits = pbsa_ref_float_to_bf16(x); break;
    default: return;
    }
    memcpy(at, &bits, 2);
}

static bool fill_random(host_buffer *h, uint64_t *rng, float amplitude)
{
    h->bytes = malloc(h->size);
    if (!h->bytes)
        return false;
    size_t element = pbsa_dtype_size(h->desc.dtype);
    for (size_t i = 0; i + element <= h->size; i += element)
        store_float(h->bytes + i, h->desc.dtype, amplitude * splitmix_signed(rng));
    return true;
}

static pbsa_host_tensor host_view(const host_buffer *h)
{
    const pbsa_tensor *t = &h->desc;
    pbsa_host_tensor v = {h->bytes + t->offset * pbsa_dtype_size(t->dtype), t->dtype, t->batch,
                          t->heads, t->seq, t->head_dim, t->stride_batch, t->stride_head,
                          t->stride_seq};
    return v;
}

static cl_mem upload(cl_context cl_ctx, host_buffer *h, cl_int *err)
{
    return clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, h->size, h->bytes, err);
}

/* Compares the device output with the reference, counts unwritten elements and damaged guard or
 * gap bytes (everything in the buffer outside the tensor must still be poison, 0xff). */
static void compare(const host_buffer *out, const double *ref, conformance_result *r)
{
    const pbsa_tensor *t = &out->desc;
    size_t element = pbsa_dtype_size(t->dtype);
    unsigned char *owned = calloc(out->size, 1);
    double diff2 = 0.0, ref2 = 0.0;
    pbsa_host_tensor view = host_view(out);
    size_t n = 0;
    for (int64_t b = 0; b < t->batch; b++)
        for (int64_t h = 0; h < t->heads; h++)
            for (int64_t s = 0; s < t->seq; s++)
                for (int64_t d = 0; d < t->head_dim; d++, n++) {
                    uint64_t index = t->offset + b * t->stride_batch + h * t->stride_head +
                                     s * t->stride_seq + d;
                    if (owned)
                        memset(owned + index * element, 1, element);
                    double got = pbsa_ref_element(&view, b, h, s, d);
                    if (isnan(got)) {
                        r->unwritten++;
                        continue;
                    }
                    double e = got - ref[n];
                    diff2 += e * e;
                    ref2 += ref[n] * ref[n];
                    if (fabs(e) > r->max_abs)
                        r->max_abs = fabs(e);
                }
    for (size_t i = 0; owned && i < out->size; i++)
        if (!owned[i] && out->bytes[i] != 0xff)
            r->guard_damage++;
    free(owned);
    r->rel_l2 = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
}

int conformance_run_dense(pbsa_context *ctx, cl_command_queue queue, const conformance_case *c,
                          unsigned long long seed, conformance_result *result)
{
    memset(result, 0, sizeof *result);
    result->tolerance = conformance_tolerance(c->dtype);
    cl_context cl_ctx = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL);

    uint64_t rng = seed ^ (0x51ed270b27ull * (unsigned long long)(c->q_len + 1));
    host_buffer q = {0}, k = {0}, v = {0}, o = {0};
    make_layout(&q, c, c->q_heads, c->q_len);
    make_layout(&k, c, c->kv_heads, c->kv_len);
    make_layout(&v, c, c->kv_heads, c->kv_len);
    make_layout(&o, c, c->q_heads, c->q_len);
    size_t out_count = (size_t)c->batch * c->q_heads * c->q_len * c->head_dim;
    double *ref = malloc(out_count * sizeof *ref);
    cl_mem buffers[4] = {NULL, NULL, NULL, NULL};
    int status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
    /* Larger queries than keys give sharper, more realistic attention rows. */
    if (!ref || !fill_random(&q, &rng, 2.0f) || !fill_random(&k, &rng, 1.0f) ||
        !fill_random(&v, &rng, 1.0f) || !(o.bytes = malloc(o.size)))
        goto done;
    memset(o.bytes, 0xff, o.size);

    host_buffer *hosts[4] = {&q, &k, &v, &o};
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 4 && err == CL_SUCCESS; i++) {
        buffers[i] = upload(cl_ctx, hosts[i], &err);
        hosts[i]->desc.buffer = buffers[i];
    }
    if (err != CL_SUCCESS) {
        status = err;
        goto done;
    }
    pbsa_dense_params params = {.causal = c->causal};
    status = pbsa_dense_attention(ctx, queue, &q.desc, &k.desc, &v.desc, &o.desc, &params, NULL);
    result->status = status;
    if (status != PBSA_SUCCESS)
        goto done;
    err = clEnqueueReadBuffer(queue, buffers[3], CL_TRUE, 0, o.size, o.bytes, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        status = err;
        goto done;
    }
    pbsa_host_tensor hq = host_view(&q), hk = host_view(&k), hv = host_view(&v);
    status = pbsa_ref_dense_attention(&hq, &hk, &hv, &params, ref);
    if (status != PBSA_SUCCESS)
        goto done;
    compare(&o, ref, result);
    result->passed = result->unwritten == 0 && result->guard_damage == 0 &&
                     result->rel_l2 <= result->tolerance;
done:
    for (int i = 0; i < 4; i++)
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
    free(q.bytes);
    free(k.bytes);
    free(v.bytes);
    free(o.bytes);
    free(ref);
    return status;
}
