/* Conformance cases and their runner (see conformance.h). */
#include "conformance.h"
#include "pbsattn_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements of poisoned space before and after every output tensor, checked after each run. */
enum { GUARD_ELEMENTS = 64 };

const conformance_case conformance_dense_cases[] = {
    {"f32_d64_s1", ALL_F32, 1, 2, 2, 1, 1, 64, 1, TENSOR_BHSD},
    {"f32_d64_s7_gqa4", ALL_F32, 1, 4, 1, 7, 7, 64, 1, TENSOR_BHSD},
    {"f16_d96_s129_gqa4", ALL_F16, 1, 8, 2, 129, 129, 96, 1, TENSOR_BHSD},
    {"bf16_d128_s1000_gqa8", ALL_BF16, 1, 8, 1, 1000, 1000, 128, 1, TENSOR_BHSD},
    {"f32_d256_s129_batch2", ALL_F32, 2, 2, 2, 129, 129, 256, 1, TENSOR_BHSD},
    {"bf16_d128_s200_noncausal_bshd", ALL_BF16, 1, 4, 2, 200, 200, 128, 0, TENSOR_BSHD},
    {"f16_d64_q100_kv300_offset_bshd", ALL_F16, 1, 4, 4, 100, 300, 64, 1, TENSOR_BSHD},
    {"f32_d128_q7_kv129_noncausal", ALL_F32, 1, 2, 1, 7, 129, 128, 0, TENSOR_BHSD},
    {"bf16_d256_q64_kv1000_batch2_gqa4", ALL_BF16, 2, 4, 1, 64, 1000, 256, 1, TENSOR_BHSD},
    {"f16_d128_s513_padded", ALL_F16, 1, 2, 2, 513, 513, 128, 1, TENSOR_PADDED},
    {"f32_d96_s1000_noncausal", ALL_F32, 1, 2, 2, 1000, 1000, 96, 0, TENSOR_BHSD},
    {"bf16_d64_s257_batch2_gqa8", ALL_BF16, 2, 8, 1, 257, 257, 64, 1, TENSOR_BHSD},
    {"f16_d256_q1_kv1000_padded", ALL_F16, 1, 4, 2, 1, 1000, 256, 1, TENSOR_PADDED},
    /* Mixed dtypes (q, k and v, o; each tensor read or written in its own) and head dims 80,
     * 112 and 192. */
    {"f32q_f16kv_f32o_d128_s200_gqa2", {F32, F16, F32}, 1, 4, 2, 200, 200, 128, 1, TENSOR_BHSD},
    {"bf16q_bf16kv_f32o_d80_s129_gqa4", {BF16, BF16, F32}, 1, 4, 1, 129, 129, 80, 1, TENSOR_BSHD},
    {"f16q_f32kv_bf16o_d112_q64_kv300", {F16, F32, BF16}, 1, 2, 2, 64, 300, 112, 1, TENSOR_PADDED},
    {"f32q_bf16kv_f16o_d192_batch2_noncausal", {F32, BF16, F16}, 2, 2, 1, 150, 150, 192, 0,
     TENSOR_BHSD},
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

double conformance_limit(const tensor_dtypes *dtypes)
{
    return fmax(conformance_tolerance(dtypes->o), conformance_tolerance(dtypes->kv));
}

static void make_tensor(host_tensor *t, const conformance_case *c, pbsa_dtype dtype, int heads,
                        int seq)
{
    /* The padded layout starts at an odd offset as well. */
    int guard = GUARD_ELEMENTS + (c->layout == TENSOR_PADDED ? 11 : 0);
    tensor_init(t, dtype, c->batch, heads, seq, c->head_dim, c->layout, guard);
}

int conformance_run_dense(pbsa_context *ctx, cl_command_queue queue, const conformance_case *c,
                          unsigned long long seed, conformance_result *result)
{
    memset(result, 0, sizeof *result);
    result->tolerance = conformance_limit(&c->dtypes);
    cl_context cl_ctx = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL);

    uint64_t rng = seed ^ (0x51ed270b27ull * (unsigned long long)(c->q_len + 1));
    host_tensor q, k, v, o;
    make_tensor(&q, c, c->dtypes.q, c->q_heads, c->q_len);
    make_tensor(&k, c, c->dtypes.kv, c->kv_heads, c->kv_len);
    make_tensor(&v, c, c->dtypes.kv, c->kv_heads, c->kv_len);
    make_tensor(&o, c, c->dtypes.o, c->q_heads, c->q_len);
    const size_t rows = (size_t)c->batch * c->q_heads * c->q_len;
    double *ref = malloc(rows * c->head_dim * sizeof *ref);
    double *ref_lse = malloc(rows * sizeof *ref_lse);
    host_tensor *all[4] = {&q, &k, &v, &o};
    lse_buffer lse = {0};
    int status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
    if (!ref || !ref_lse || !q.bytes || !k.bytes || !v.bytes || !o.bytes)
        goto done;
    /* Larger queries than keys give sharper, more realistic attention rows. */
    tensor_fill_random(&q, &rng, 2.0f);
    tensor_fill_random(&k, &rng, 1.0f);
    tensor_fill_random(&v, &rng, 1.0f);
    for (int i = 0; i < 4; i++)
        if ((status = tensor_upload(all[i], cl_ctx)) != CL_SUCCESS)
            goto done;
    if ((status = lse_buffer_make(&lse, cl_ctx, rows)) != CL_SUCCESS)
        goto done;
    pbsa_dense_params params = {.causal = c->causal, .lse = lse.mem, .lse_offset = LSE_GUARD};
    status = pbsa_dense_attention(ctx, queue, &q.desc, &k.desc, &v.desc, &o.desc, &params, NULL);
    result->status = status;
    if (status != PBSA_SUCCESS || (status = tensor_download(&o, queue)) != CL_SUCCESS)
        goto done;
    pbsa_host_tensor hq = tensor_host_view(&q), hk = tensor_host_view(&k),
                     hv = tensor_host_view(&v);
    status = pbsa_ref_dense_attention_lse(&hq, &hk, &hv, &params, ref, ref_lse);
    if (status != PBSA_SUCCESS ||
        (status = lse_buffer_compare(&lse, queue, ref_lse, &result->lse)) != CL_SUCCESS)
        goto done;
    result->lse_limit = lse_tolerance(&c->dtypes);
    tensor_error e = tensor_compare(&o, ref);
    result->rel_l2 = e.rel_l2;
    result->max_abs = e.max_abs;
    result->unwritten = e.nonfinite;
    result->guard_damage = e.guard_damage;
    result->passed = result->unwritten == 0 && result->guard_damage == 0 &&
                     result->rel_l2 <= result->tolerance &&
                     lse_error_ok(&result->lse, result->lse_limit);
done:
    for (int i = 0; i < 4; i++)
        tensor_free(all[i]);
    lse_buffer_free(&lse);
    free(ref);
    free(ref_lse);
    return status;
}
