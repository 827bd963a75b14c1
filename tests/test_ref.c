/* Tests of the CPU reference itself: conversions, dense attention and the PBS-Attn stages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "pbsattn_ref.h"
#include "splitmix.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------------ */

/* An f32 tensor that owns its storage, BHSD unless built otherwise. */
typedef struct owned_tensor {
    float *data;
    pbsa_host_tensor t;
} owned_tensor;

static owned_tensor random_bhsd(uint64_t *rng, int64_t batch, int64_t heads, int64_t seq,
                                int64_t dim, float amplitude)
{
    owned_tensor o;
    size_t count = (size_t)(batch * heads * seq * dim);
    o.data = malloc(count * sizeof *o.data);
    assert_non_null(o.data);
    for (size_t x = 0; x < count; x++)
        o.data[x] = amplitude * splitmix_signed(rng);
    o.t = (pbsa_host_tensor){.data = o.data, .dtype = PBSA_DTYPE_F32, .batch = batch,
                             .heads = heads, .seq = seq, .head_dim = dim,
                             .stride_batch = heads * seq * dim, .stride_head = seq * dim,
                             .stride_seq = dim};
    return o;
}

static void free_tensor(owned_tensor *o)
{
    free(o->data);
    o->data = NULL;
}

static double *alloc_doubles(size_t count)
{
    double *p = malloc(count * sizeof *p);
    assert_non_null(p);
    return p;
}

static size_t out_count(const pbsa_host_tensor *q)
{
    return (size_t)(q->batch * q->heads * q->seq * q->head_dim);
}

/* max |a - b| / max |b|: the error relative to the size of the expected output. */
static double relative_error(const double *a, const double *b, size_t count)
{
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t x = 0; x < count; x++) {
        double diff = fabs(a[x] - b[x]);
        if (!(diff <= max_diff))
            max_diff = diff; /* also catches NaN */
        if (fabs(b[x]) > max_ref)
            max_ref = fabs(b[x]);
    }
    return max_ref > 0.0 ? max_diff / max_ref : max_diff;
}

static void assert_close(const double *a, const double *b, size_t count, double tolerance)
{
    double error = relative_error(a, b, count);
    if (!(error <= tolerance)) {
        print_error("relative error %.3g exceeds %.3g\n", error, tolerance);
        fail();
    }
}

static pbsa_params make_params(int block, int segment, float threshold, int causal)
{
    pbsa_params p = {.struct_size = sizeof(pbsa_params), .block_size = block,
                     .segment_size = segment, .threshold = threshold, .causal = causal,
                     .force_first_block = 1, .gqa_mode = PBSA_GQA_PER_QUERY_HEAD, .scale = 0.0f};
    return p;
}

typedef struct pbs_sizes {
    int64_t perm_heads, nqb, nkb, nseg;
} pbs_sizes;

static pbs_sizes sizes_of(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                          const pbsa_params *p)
{
    pbs_sizes s;
    s.perm_heads = p->gqa_mode == PBSA_GQA_PER_QUERY_HEAD ? q->heads : k->heads;
    s.nqb = (q->seq + p->block_size - 1) / p->block_size;
    s.nkb = (k->seq + p->block_size - 1) / p->block_size;
    s.nseg = k->seq / p->segment_size;
    return s;
}

/* ---- conversions ---------------------------------------------------------------------------- */

static void test_half_known_values(void **state)
{
    (void)state;
    assert_int_equal(pbsa_ref_float_to_half(1.0f), 0x3c00);
    assert_int_equal(pbsa_ref_float_to_half(-2.0f), 0xc000);
    assert_int_equal(pbsa_ref_float_to_half(65504.0f), 0x7bff);
    assert_int_equal(pbsa_ref_float_to_half(65519.0f), 0x7bff);
    assert_int_equal(pbsa_ref_float_to_half(65520.0f), 0x7c00); /* tie rounds to even: Inf */
    assert_int_equal(pbsa_ref_float_to_half(1e10f), 0x7c00);
    assert_int_equal(pbsa_ref_float_to_half(-INFINITY), 0xfc00);
    assert_int_equal(pbsa_ref_float_to_half(-0.0f), 0x8000);
    assert_int_equal(pbsa_ref_float_to_half(0x1.0p-14f), 0x0400);   /* smallest normal */
    assert_int_equal(pbsa_ref_float_to_half(0x1.0p-24f), 0x0001);   /* smallest subnormal */
    assert_int_equal(pbsa_ref_float_to_half(0x3ffp-24f), 0x03ff);   /* largest subnormal */
    assert_int_equal(pbsa_ref_float_to_half(0x1.0p-25f), 0x0000);   /* tie to even: zero */
    assert_int_equal(pbsa_ref_float_to_half(0x1.8p-25f), 0x0001);
    assert_int_equal(pbsa_ref_float_to_half(0x3p-25f), 0x0002);     /* tie 1 / 2: even */
    assert_int_equal(pbsa_ref_float_to_half(0x7ffp-25f), 0x0400);   /* rounds up to normal */
    assert_int_equal(pbsa_ref_float_to_half(1e-30f), 0x0000);
    assert_int_equal(pbsa_ref_float_to_half(0x1.002p0f), 0x3c00);   /* tie: stays even */
    assert_int_equal(pbsa_ref_float_to_half(0x1.006p0f), 0x3c02);   /* tie: up to even */
    assert_int_equal(pbsa_ref_float_to_half(0x1.0021p0f), 0x3c01);  /* above the tie */
    uint16_t nan_half = pbsa_ref_float_to_half(NAN);
    assert_true((nan_half & 0x7c00) == 0x7c00 && (nan_half & 0x03ff) != 0);

    assert_true(pbsa_ref_half_to_float(0x3c00) == 1.0f);
    assert_true(pbsa_ref_half_to_float(0x7bff) == 65504.0f);
    assert_true(pbsa_ref_half_to_float(0x0001) == 0x1.0p-24f);
    assert_true(pbsa_ref_half_to_float(0x8001) == -0x1.0p-24f);
    assert_true(pbsa_ref_half_to_float(0x03ff) == 0x3ffp-24f);
    assert_true(pbsa_ref_half_to_float(0xfc00) == -INFINITY);
    assert_true(isnan(pbsa_ref_half_to_float(0x7e00)));
    assert_true(signbit(pbsa_ref_half_to_float(0x8000)));
}

static void test_half_round_trip(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = pbsa_ref_half_to_float((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(pbsa_ref_half_to_float(pbsa_ref_float_to_half(f))));
            continue;
        }
        assert_int_equal(pbsa_ref_float_to_half(f), h);
    }
}

static void test_bf16_known_values(void **state)
{
    (void)state;
    assert_int_equal(pbsa_ref_float_to_bf16(1.0f), 0x3f80);
    assert_int_equal(pbsa_ref_float_to_bf16(-1.0f), 0xbf80);
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.01p0f), 0x3f80);    /* tie: stays even */
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.03p0f), 0x3f82);    /* tie: up to even */
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.0101p0f), 0x3f81);  /* above the tie */
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.fffffep127f), 0x7f80); /* FLT_MAX: Inf */
    assert_int_equal(pbsa_ref_float_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.0p-149f), 0x0000);  /* float subnormal */
    assert_int_equal(pbsa_ref_float_to_bf16(0x1.0p-133f), 0x0001);  /* bf16 subnormal kept */
    uint32_t nan_bits = 0x7f800001u; /* truncation would give Inf */
    float nan_low;
    memcpy(&nan_low, &nan_bits, sizeof nan_low);
    assert_true(isnan(pbsa_ref_bf16_to_float(pbsa_ref_float_to_bf16(nan_low))));
    assert_true(isnan(pbsa_ref_bf16_to_float(pbsa_ref_float_to_bf16(-NAN))));

    assert_true(pbsa_ref_bf16_to_float(0x3f80) == 1.0f);
    assert_true(pbsa_ref_bf16_to_float(0xc040) == -3.0f);
    assert_true(pbsa_ref_bf16_to_float(0x0001) == 0x1.0p-133f);
}

static void test_bf16_round_trip(void **state)
{
    (void)state;
    for (uint32_t b = 0; b <= 0xffff; b++) {
        float f = pbsa_ref_bf16_to_float((uint16_t)b);
        if (isnan(f)) {
            assert_true(isnan(pbsa_ref_bf16_to_float(pbsa_ref_float_to_bf16(f))));
            continue;
        }
        assert_int_equal(pbsa_ref_float_to_bf16(f), b);
    }
}

static void test_element_reads_every_dtype(void **state)
{
    (void)state;
    /* [1, 2, 2, 2] in BSHD order, so the strides differ from the sizes. */
    float f32[8];
    uint16_t f16[8], bf16[8];
    for (int x = 0; x < 8; x++) {
        f32[x] = 0.5f * (float)x - 1.25f;
        f16[x] = pbsa_ref_float_to_half(f32[x]);
        bf16[x] = pbsa_ref_float_to_bf16(f32[x]);
    }
    pbsa_host_tensor t = {.data = f32, .dtype = PBSA_DTYPE_F32, .batch = 1, .heads = 2, .seq = 2,
                          .head_dim = 2, .stride_batch = 8, .stride_head = 2, .stride_seq = 4};
    for (int dtype = 0; dtype < 3; dtype++) {
        t.dtype = (pbsa_dtype)dtype;
        t.data = dtype == PBSA_DTYPE_F32 ? (const void *)f32
                 : dtype == PBSA_DTYPE_F16 ? (const void *)f16 : (const void *)bf16;
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 2; s++)
                for (int d = 0; d < 2; d++)
                    assert_true(pbsa_ref_element(&t, 0, h, s, d) == (double)f32[s * 4 + h * 2 + d]);
    }
}

/* ---- dense attention ------------------------------------------------------------------------ */

/* The textbook formula, without the max subtraction; fine for the small logits used here. */
static void naive_dense(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                        const pbsa_host_tensor *v, int causal, double scale, double *out)
{
    int64_t group = q->heads / k->heads, dim = q->head_dim;
    for (int64_t b = 0; b < q->batch; b++)
        for (int64_t h = 0; h < q->heads; h++)
            for (int64_t i = 0; i < q->seq; i++) {
                int64_t last = causal ? i + k->seq - q->seq : k->seq - 1;
                double *o = out + ((b * q->heads + h) * q->seq + i) * dim;
                double sum = 0.0;
                for (int64_t d = 0; d < dim; d++)
                    o[d] = 0.0;
                for (int64_t j = 0; j <= last; j++) {
                    double logit = 0.0;
                    for (int64_t d = 0; d < dim; d++)
                        logit += pbsa_ref_element(q, b, h, i, d) *
                                 pbsa_ref_element(k, b, h / group, j, d);
                    double w = exp(logit * scale);
                    sum += w;
                    for (int64_t d = 0; d < dim; d++)
                        o[d] += w * pbsa_ref_element(v, b, h / group, j, d);
                }
                for (int64_t d = 0; d < dim; d++)
                    o[d] /= sum;
            }
}

static void test_dense_hand_checked(void **state)
{
    (void)state;
    /* One query [1, 0] over keys [1, 0] and [0, 1]: weights e/(e+1) and 1/(e+1). */
    float qd[2] = {1, 0}, kd[4] = {1, 0, 0, 1}, vd[4] = {1, 2, 3, 4};
    pbsa_host_tensor q = {.data = qd, .dtype = PBSA_DTYPE_F32, .batch = 1, .heads = 1, .seq = 1,
                          .head_dim = 2, .stride_batch = 2, .stride_head = 2, .stride_seq = 2};
    pbsa_host_tensor k = q, v = q;
    k.data = kd;
    v.data = vd;
    k.seq = v.seq = 2;
    k.stride_batch = k.stride_head = v.stride_batch = v.stride_head = 4;
    pbsa_dense_params params = {.causal = 0, .scale = 1.0f};
    double out[2];
    assert_int_equal(pbsa_ref_dense_attention(&q, &k, &v, &params, out), PBSA_SUCCESS);
    double e = exp(1.0), w0 = e / (e + 1.0), w1 = 1.0 / (e + 1.0);
    assert_true(fabs(out[0] - (w0 * 1 + w1 * 3)) < 1e-15);
    assert_true(fabs(out[1] - (w0 * 2 + w1 * 4)) < 1e-15);
    /* Causal, the query being the last of 2 positions: it sees both keys, the same result. */
    params.causal = 1;
    double causal_out[2];
    assert_int_equal(pbsa_ref_dense_attention(&q, &k, &v, &params, causal_out), PBSA_SUCCESS);
    assert_memory_equal(out, causal_out, sizeof out);
}

static void test_dense_matches_naive(void **state)
{
    (void)state;
    uint64_t rng = 11;
    owned_tensor q = random_bhsd(&rng, 2, 4, 37, 16, 1.0f);
    owned_tensor k = random_bhsd(&rng, 2, 2, 53, 16, 1.0f);
    owned_tensor v = random_bhsd(&rng, 2, 2, 53, 16, 1.0f);
    size_t n = out_count(&q.t);
    double *got = alloc_doubles(n), *want = alloc_doubles(n);
    for (int causal = 0; causal <= 1; causal++) {
        pbsa_dense_params params = {.causal = causal, .scale = 0.3f};
        assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, &params, got), PBSA_SUCCESS);
        naive_dense(&q.t, &k.t, &v.t, causal, (double)0.3f, want);
        assert_close(got, want, n, 1e-13);
    }
    /* params NULL: causal with 1/sqrt(D); scale 0 means the same. */
    pbsa_dense_params defaults = {.causal = 1, .scale = 0.0f};
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, NULL, got), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, &defaults, want), PBSA_SUCCESS);
    assert_memory_equal(got, want, n * sizeof *got);
    naive_dense(&q.t, &k.t, &v.t, 1, 0.25, want);
    assert_close(got, want, n, 1e-13);
    free(got);
    free(want);
    free_tensor(&q);
    free_tensor(&k);
    free_tensor(&v);
}

/* Queries given as the last rows of a full-length Q equal those rows of the full result. */
static void test_dense_causal_offset(void **state)
{
    (void)state;
    uint64_t rng = 12;
    const int64_t skv = 70, sq = 9, dim = 8;
    owned_tensor qf = random_bhsd(&rng, 1, 2, skv, dim, 1.0f);
    owned_tensor k = random_bhsd(&rng, 1, 2, skv, dim, 1.0f);
    owned_tensor v = random_bhsd(&rng, 1, 2, skv, dim, 1.0f);
    pbsa_host_tensor q = qf.t;
    q.data = qf.data + (skv - sq) * dim;
    q.seq = sq;
    double *full = alloc_doubles(out_count(&qf.t)), *part = alloc_doubles(out_count(&q));
    for (int causal = 0; causal <= 1; causal++) {
        pbsa_dense_params params = {.causal = causal};
        assert_int_equal(pbsa_ref_dense_attention(&qf.t, &k.t, &v.t, &params, full),
                         PBSA_SUCCESS);
        assert_int_equal(pbsa_ref_dense_attention(&q, &k.t, &v.t, &params, part), PBSA_SUCCESS);
        for (int64_t h = 0; h < 2; h++)
            assert_close(part + h * sq * dim, full + (h * skv + skv - sq) * dim,
                         (size_t)(sq * dim), 1e-15);
    }
    /* Causal, the first query of the chunk sees exactly skv - sq + 1 keys. */
    pbsa_host_tensor k_prefix = k.t, v_prefix = v.t, q_one = q;
    k_prefix.seq = v_prefix.seq = skv - sq + 1;
    q_one.seq = 1;
    double one[2 * 8]; /* both heads, one query each */
    assert_int_equal(pbsa_ref_dense_attention(&q_one, &k_prefix, &v_prefix, NULL, one),
                     PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&q, &k.t, &v.t, NULL, part), PBSA_SUCCESS);
    assert_close(part, one, (size_t)dim, 1e-15);
    free(full);
    free(part);
    free_tensor(&qf);
    free_tensor(&k);
    free_tensor(&v);
}

/* Copies K/V so that KV head h of the result is KV head h / repeat of t. */
static owned_tensor repeat_heads(const owned_tensor *t, int64_t repeat)
{
    const pbsa_host_tensor *s = &t->t;
    uint64_t rng = 1; /* every value is overwritten below */
    owned_tensor o = random_bhsd(&rng, s->batch, s->heads * repeat, s->seq, s->head_dim, 1.0f);
    for (int64_t b = 0; b < s->batch; b++)
        for (int64_t h = 0; h < s->heads * repeat; h++)
            for (int64_t i = 0; i < s->seq; i++)
                for (int64_t d = 0; d < s->head_dim; d++)
                    o.data[((b * s->heads * repeat + h) * s->seq + i) * s->head_dim + d] =
                        (float)pbsa_ref_element(s, b, h / repeat, i, d);
    return o;
}

static void test_dense_gqa_equals_repeated_kv(void **state)
{
    (void)state;
    uint64_t rng = 13;
    owned_tensor q = random_bhsd(&rng, 2, 6, 20, 8, 1.0f);
    owned_tensor k = random_bhsd(&rng, 2, 2, 31, 8, 1.0f);
    owned_tensor v = random_bhsd(&rng, 2, 2, 31, 8, 1.0f);
    owned_tensor kr = repeat_heads(&k, 3), vr = repeat_heads(&v, 3);
    size_t n = out_count(&q.t);
    double *gqa = alloc_doubles(n), *mha = alloc_doubles(n);
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, NULL, gqa), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &kr.t, &vr.t, NULL, mha), PBSA_SUCCESS);
    assert_memory_equal(gqa, mha, n * sizeof *gqa);
    free(gqa);
    free(mha);
    free_tensor(&q);
    free_tensor(&k);
    free_tensor(&v);
    free_tensor(&kr);
    free_tensor(&vr);
}

/* The same values stored BSHD: a layout change must not change a bit of the result. */
static pbsa_host_tensor to_bshd(const pbsa_host_tensor *t, float *storage)
{
    pbsa_host_tensor o = *t;
    o.data = storage;
    o.stride_head = t->head_dim;
    o.stride_seq = t->heads * t->head_dim;
    o.stride_batch = t->seq * t->heads * t->head_dim;
    for (int64_t b = 0; b < t->batch; b++)
        for (int64_t h = 0; h < t->heads; h++)
            for (int64_t s = 0; s < t->seq; s++)
                for (int64_t d = 0; d < t->head_dim; d++)
                    storage[b * o.stride_batch + h * o.stride_head + s * o.stride_seq + d] =
                        (float)pbsa_ref_element(t, b, h, s, d);
    return o;
}

static void test_dense_bshd_equals_bhsd(void **state)
{
    (void)state;
    uint64_t rng = 14;
    owned_tensor q = random_bhsd(&rng, 2, 4, 25, 8, 1.0f);
    owned_tensor k = random_bhsd(&rng, 2, 2, 40, 8, 1.0f);
    owned_tensor v = random_bhsd(&rng, 2, 2, 40, 8, 1.0f);
    float *qs = malloc(out_count(&q.t) * sizeof(float));
    float *ks = malloc(out_count(&k.t) * sizeof(float));
    float *vs = malloc(out_count(&v.t) * sizeof(float));
    assert_true(qs && ks && vs);
    pbsa_host_tensor qb = to_bshd(&q.t, qs), kb = to_bshd(&k.t, ks), vb = to_bshd(&v.t, vs);
    size_t n = out_count(&q.t);
    double *a = alloc_doubles(n), *b = alloc_doubles(n);
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, NULL, a), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&qb, &kb, &vb, NULL, b), PBSA_SUCCESS);
    assert_memory_equal(a, b, n * sizeof *a);
    free(a);
    free(b);
    free(qs);
    free(ks);
    free(vs);
    free_tensor(&q);
    free_tensor(&k);
    free_tensor(&v);
}

static void test_dense_bad_arguments(void **state)
{
    (void)state;
    uint64_t rng = 15;
    owned_tensor q = random_bhsd(&rng, 1, 4, 8, 4, 1.0f);
    owned_tensor k = random_bhsd(&rng, 1, 2, 8, 4, 1.0f);
    owned_tensor v = random_bhsd(&rng, 1, 2, 8, 4, 1.0f);
    double out[128];
    for (int x = 0; x < 128; x++)
        out[x] = 12345.0;
    pbsa_host_tensor bad;

    assert_int_equal(pbsa_ref_dense_attention(NULL, &k.t, &v.t, NULL, out),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &v.t, NULL, NULL),
                     PBSA_ERROR_NULL_ARGUMENT);
    bad = k.t;
    bad.data = NULL;
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &bad, &v.t, NULL, out),
                     PBSA_ERROR_NULL_ARGUMENT);
    bad = v.t;
    bad.seq = 7;
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &k.t, &bad, NULL, out),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = k.t;
    bad.head_dim = 2;
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &bad, &v.t, NULL, out),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = q.t;
    bad.heads = 3; /* not a multiple of 2 */
    assert_int_equal(pbsa_ref_dense_attention(&bad, &k.t, &v.t, NULL, out),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = q.t;
    bad.seq = 9; /* Sq > Skv */
    assert_int_equal(pbsa_ref_dense_attention(&bad, &k.t, &v.t, NULL, out),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = q.t;
    bad.batch = 0;
    assert_int_equal(pbsa_ref_dense_attention(&bad, &k.t, &v.t, NULL, out),
                     PBSA_ERROR_INVALID_VALUE);
    bad = k.t;
    bad.seq = -1;
    assert_int_equal(pbsa_ref_dense_attention(&q.t, &bad, &v.t, NULL, out),
                     PBSA_ERROR_INVALID_VALUE);
    bad = q.t;
    bad.dtype = (pbsa_dtype)9;
    assert_int_equal(pbsa_ref_dense_attention(&bad, &k.t, &v.t, NULL, out),
                     PBSA_ERROR_INVALID_VALUE);
    for (int x = 0; x < 128; x++)
        assert_true(out[x] == 12345.0);
    free_tensor(&q);
    free_tensor(&k);
    free_tensor(&v);
}

/* ---- PBS-Attn ---------------------------------------------------------------------------------- */

/* Q, K, V of one PBS test, D 64. Most tests use 600 keys with block 32 and segment 128: four
 * segments and an 88-key tail, so the tail and a partial last block are always exercised. */
typedef struct pbs_case {
    owned_tensor q, k, v;
} pbs_case;

static pbs_case make_case(uint64_t seed, int64_t batch, int64_t hq, int64_t hkv, int64_t sq,
                          int64_t skv)
{
    uint64_t rng = seed;
    pbs_case c;
    /* Amplitude 1.5 gives peaked but not degenerate softmaxes at D 64. */
    c.q = random_bhsd(&rng, batch, hq, sq, 64, 1.5f);
    c.k = random_bhsd(&rng, batch, hkv, skv, 64, 1.5f);
    c.v = random_bhsd(&rng, batch, hkv, skv, 64, 1.0f);
    return c;
}

static void free_case(pbs_case *c)
{
    free_tensor(&c->q);
    free_tensor(&c->k);
    free_tensor(&c->v);
}

static void check_permutation_properties(const pbs_case *c, const pbsa_params *p)
{
    pbs_sizes z = sizes_of(&c->q.t, &c->k.t, p);
    const int64_t skv = c->k.t.seq, seg = p->segment_size, len = z.nseg * seg;
    size_t rows = (size_t)(c->q.t.batch * z.perm_heads);
    int32_t *pi = malloc(rows * (size_t)skv * sizeof *pi);
    double *scores = alloc_doubles(rows * (size_t)(len > 0 ? len : 1));
    uint8_t *seen = calloc((size_t)skv, 1);
    assert_true(pi && seen);
    assert_int_equal(pbsa_ref_pbs_permutation(&c->q.t, &c->k.t, p, pi, scores), PBSA_SUCCESS);
    for (size_t r = 0; r < rows; r++) {
        const int32_t *row = pi + r * (size_t)skv;
        const double *score = scores + r * (size_t)len;
        memset(seen, 0, (size_t)skv);
        double total = 0.0;
        for (int64_t pos = 0; pos < skv; pos++) {
            int32_t key = row[pos];
            assert_true(key >= 0 && key < skv && !seen[key]);
            seen[key] = 1;
            if (pos >= len) {
                assert_int_equal(key, pos); /* tail identity */
                continue;
            }
            assert_int_equal(key / seg, pos / seg); /* stays inside its segment */
            total += score[key];
            if (pos % seg != 0) {
                int32_t prev = row[pos - 1];
                assert_true(score[prev] > score[key] ||
                            (score[prev] == score[key] && prev < key));
            }
        }
        if (len > 0)
            assert_true(fabs(total - 1.0) < 1e-12); /* a mean of softmax rows */
    }
    free(pi);
    free(scores);
    free(seen);
}

static void test_pbs_permutation_properties(void **state)
{
    (void)state;
    pbs_case c = make_case(101, 2, 4, 2, 600, 600);
    pbsa_params p = make_params(32, 128, 0.9f, 1);
    check_permutation_properties(&c, &p);
    p.gqa_mode = PBSA_GQA_SHARED_PER_KV_GROUP;
    check_permutation_properties(&c, &p);
    free_case(&c);
    /* Fewer queries than a block (Qlast is every query), chunked. */
    c = make_case(102, 1, 2, 1, 20, 20 + 16 * 32);
    p = make_params(32, 128, 0.9f, 1);
    check_permutation_properties(&c, &p);
    free_case(&c);
}

static void test_pbs_permutation_identity(void **state)
{
    (void)state;
    pbsa_params p = make_params(32, 128, 0.9f, 1);
    int64_t lengths[2] = {100, 128}; /* nseg == 0, and a single whole segment */
    for (int t = 0; t < 2; t++) {
        pbs_case c = make_case(103 + (uint64_t)t, 1, 2, 2, lengths[t], lengths[t]);
        int32_t pi[2 * 128];
        assert_int_equal(pbsa_ref_pbs_permutation(&c.q.t, &c.k.t, &p, pi, NULL), PBSA_SUCCESS);
        for (int64_t h = 0; h < 2; h++)
            for (int64_t pos = 0; pos < lengths[t]; pos++)
                assert_int_equal(pi[h * lengths[t] + pos], pos);
        free_case(&c);
    }
    /* Identical keys tie everywhere: ties keep the original order. */
    pbs_case c = make_case(105, 1, 1, 1, 300, 300);
    for (int64_t s = 1; s < 300; s++)
        memcpy(c.k.data + s * 64, c.k.data, 64 * sizeof(float));
    int32_t pi[300];
    assert_int_equal(pbsa_ref_pbs_permutation(&c.q.t, &c.k.t, &p, pi, NULL), PBSA_SUCCESS);
    for (int64_t pos = 0; pos < 300; pos++)
        assert_int_equal(pi[pos], pos);
    free_case(&c);
}

/* Scores straight from the definition: for each query head of the group, the mean over the last
 * min(b, Sq) queries of the unmasked softmax over keys 0 .. len-1; then the mean over the heads. */
static void test_pbs_scores_match_definition(void **state)
{
    (void)state;
    pbs_case c = make_case(151, 1, 2, 1, 300, 300); /* 2 segments of 128 and a 44-key tail */
    pbsa_params p = make_params(32, 128, 0.9f, 1);
    p.gqa_mode = PBSA_GQA_SHARED_PER_KV_GROUP;
    const int64_t len = 256;
    double scores[256], want[256] = {0};
    int32_t pi[300];
    assert_int_equal(pbsa_ref_pbs_permutation(&c.q.t, &c.k.t, &p, pi, scores), PBSA_SUCCESS);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t r = 300 - 32; r < 300; r++) {
            double w[256], sum = 0.0;
            for (int64_t j = 0; j < len; j++) {
                double logit = 0.0;
                for (int64_t d = 0; d < 64; d++)
                    logit += pbsa_ref_element(&c.q.t, 0, h, r, d) *
                             pbsa_ref_element(&c.k.t, 0, 0, j, d);
                w[j] = exp(logit * 0.125);
                sum += w[j];
            }
            for (int64_t j = 0; j < len; j++)
                want[j] += w[j] / sum / 32.0 / 2.0;
        }
    assert_close(scores, want, (size_t)len, 1e-12);
    free_case(&c);
}

/* A from the definition: zero-padded block means (divided by b even for the partial last
 * block), keys pooled in permuted order, softmax over the allowed blocks only. */
static void test_pbs_block_probs_match_definition(void **state)
{
    (void)state;
    pbs_case c = make_case(152, 1, 1, 1, 300, 300); /* 10 blocks of 32, the last one of 12 */
    pbsa_params p = make_params(32, 64, 0.9f, 1);
    int32_t pi[300];
    uint8_t mask[100];
    double probs[100], qbar[10][64] = {{0}}, kbar[10][64] = {{0}};
    assert_int_equal(pbsa_ref_pbs_permutation(&c.q.t, &c.k.t, &p, pi, NULL), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_pbs_block_mask(&c.q.t, &c.k.t, pi, &p, mask, probs), PBSA_SUCCESS);
    for (int64_t pos = 0; pos < 300; pos++)
        for (int64_t d = 0; d < 64; d++) {
            qbar[pos / 32][d] += pbsa_ref_element(&c.q.t, 0, 0, pos, d) / 32.0;
            kbar[pos / 32][d] += pbsa_ref_element(&c.k.t, 0, 0, pi[pos], d) / 32.0;
        }
    for (int64_t i = 0; i < 10; i++) {
        double want[10] = {0}, sum = 0.0;
        for (int64_t j = 0; j <= i; j++) {
            if (j / 2 == i / 2)
                continue; /* own segment: not scored */
            double logit = 0.0;
            for (int64_t d = 0; d < 64; d++)
                logit += qbar[i][d] * kbar[j][d];
            want[j] = exp(logit * 0.125);
            sum += want[j];
        }
        for (int64_t j = 0; j < 10 && sum > 0.0; j++)
            want[j] /= sum;
        assert_close(probs + i * 10, want, 10, 1e-12);
    }
    free_case(&c);
}

/* Mask invariants, checked against a second mask computed without the sink: the selection
 * (the allowed blocks of that mask) is the shortest prefix by probability that reaches tau, the
 * whole own segment is present, and the sink adds exactly its block. */
static void check_mask_properties(const pbs_case *c, const pbsa_params *p)
{
    const pbsa_host_tensor *q = &c->q.t, *k = &c->k.t;
    pbs_sizes z = sizes_of(q, k, p);
    const int64_t skv = k->seq, bps = p->segment_size / p->block_size, m = z.nkb - z.nqb;
    const int64_t group = q->heads / k->heads;
    const double tau = (double)p->threshold;
    pbsa_params no_sink = *p;
    no_sink.force_first_block = 0;
    int32_t *pi = malloc((size_t)(q->batch * z.perm_heads * skv) * sizeof *pi);
    size_t cells = (size_t)(q->batch * q->heads * z.nqb * z.nkb);
    uint8_t *mask = malloc(cells), *selected = malloc(cells);
    double *probs = alloc_doubles(cells);
    assert_true(pi && mask && selected);
    assert_int_equal(pbsa_ref_pbs_permutation(q, k, p, pi, NULL), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_pbs_block_mask(q, k, pi, p, mask, probs), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_pbs_block_mask(q, k, pi, &no_sink, selected, NULL), PBSA_SUCCESS);

    for (int64_t b = 0; b < q->batch; b++)
        for (int64_t h = 0; h < q->heads; h++) {
            int64_t ph = p->gqa_mode == PBSA_GQA_PER_QUERY_HEAD ? h : h / group;
            const int32_t *pi_row = pi + (b * z.perm_heads + ph) * skv;
            int64_t sink = 0;
            while (pi_row[sink] != 0)
                sink++;
            sink /= p->block_size;
            for (int64_t i = 0; i < z.nqb; i++) {
                size_t base = (size_t)(((b * q->heads + h) * z.nqb + i) * z.nkb);
                const uint8_t *row = mask + base, *sel = selected + base;
                const double *a = probs + base;
                int64_t own = (i + m) / bps, allowed_count = 0;
                double total = 0.0, kept = 0.0, smallest_kept = INFINITY, largest_left = 0.0;
                for (int64_t j = 0; j < z.nkb; j++) {
                    int allowed = j / bps != own && (!p->causal || j <= i + m);
                    int is_sink = p->force_first_block && j == sink;
                    assert_int_equal(row[j], sel[j] || is_sink);
                    if (!allowed) {
                        assert_true(a[j] == 0.0);
                        assert_int_equal(sel[j], j / bps == own);
                        continue;
                    }
                    allowed_count++;
                    total += a[j];
                    if (sel[j]) {
                        kept += a[j];
                        smallest_kept = fmin(smallest_kept, a[j]);
                    } else {
                        largest_left = fmax(largest_left, a[j]);
                    }
                }
                if (allowed_count == 0)
                    continue; /* nothing to select from: only the own segment and sink */
                assert_true(fabs(total - 1.0) < 1e-12);
                if (tau >= 1.0) {
                    assert_true(fabs(kept - 1.0) < 1e-12);
                    continue;
                }
                assert_true(kept >= tau - 1e-12);                 /* reaches tau */
                assert_true(kept - smallest_kept < tau + 1e-12);  /* shortest such prefix */
                assert_true(largest_left <= smallest_kept);       /* and a prefix by value */
            }
        }
    free(pi);
    free(mask);
    free(selected);
    free(probs);
}

static void test_pbs_mask_properties(void **state)
{
    (void)state;
    pbs_case c = make_case(201, 2, 4, 2, 600, 600);
    float taus[3] = {0.3f, 0.9f, 1.0f};
    for (int t = 0; t < 3; t++)
        for (int causal = 0; causal <= 1; causal++)
            for (int mode = 0; mode <= 1; mode++) {
                pbsa_params p = make_params(32, 128, taus[t], causal);
                p.gqa_mode = (pbsa_gqa_mode)mode;
                check_mask_properties(&c, &p);
                p.force_first_block = 0;
                check_mask_properties(&c, &p);
            }
    free_case(&c);
}

/* Runs the pipeline and dense attention (with the same causality) and compares them. */
static void check_pbs_equals_dense(const pbs_case *c, const pbsa_params *p, double tolerance)
{
    size_t n = out_count(&c->q.t);
    double *sparse = alloc_doubles(n), *dense = alloc_doubles(n);
    pbsa_dense_params dp = {.causal = p->causal, .scale = p->scale};
    assert_int_equal(pbsa_ref_pbs_attention(&c->q.t, &c->k.t, &c->v.t, p, sparse, NULL, NULL),
                     PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&c->q.t, &c->k.t, &c->v.t, &dp, dense),
                     PBSA_SUCCESS);
    assert_close(sparse, dense, n, tolerance);
    free(sparse);
    free(dense);
}

static void test_pbs_full_threshold_equals_dense(void **state)
{
    (void)state;
    pbs_case c = make_case(301, 1, 2, 1, 600, 600);
    for (int causal = 0; causal <= 1; causal++) {
        pbsa_params p = make_params(32, 128, 1.0f, causal);
        check_pbs_equals_dense(&c, &p, 1e-12);
        p.gqa_mode = PBSA_GQA_SHARED_PER_KV_GROUP;
        p.threshold = 5.0f;
        p.force_first_block = 0;
        check_pbs_equals_dense(&c, &p, 1e-12);
    }
    free_case(&c);
}

/* With a tiny tau and no sink, queries of the first segment still see every earlier key: the
 * whole own segment is attended, including blocks after the query block that hold earlier keys
 * moved there by the permutation. */
static void test_pbs_first_segment_is_dense(void **state)
{
    (void)state;
    pbs_case c = make_case(302, 1, 2, 2, 512, 512);
    pbsa_params p = make_params(32, 128, 1e-6f, 1);
    p.force_first_block = 0;
    size_t n = out_count(&c.q.t);
    double *sparse = alloc_doubles(n), *dense = alloc_doubles(n);
    assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &p, sparse, NULL, NULL),
                     PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&c.q.t, &c.k.t, &c.v.t, NULL, dense),
                     PBSA_SUCCESS);
    for (int64_t h = 0; h < 2; h++)
        assert_close(sparse + h * 512 * 64, dense + h * 512 * 64, 128 * 64, 1e-12);
    /* Later segments select fewer blocks, so they differ from dense. */
    assert_true(relative_error(sparse, dense, n) > 1e-6);
    free(sparse);
    free(dense);
    free_case(&c);
}

static void test_pbs_fallback_equals_dense(void **state)
{
    (void)state;
    int64_t lengths[2] = {200, 256};
    for (int t = 0; t < 2; t++) {
        int64_t s = lengths[t];
        pbs_case c = make_case(401 + (uint64_t)t, 1, 4, 2, s, s);
        for (int causal = 0; causal <= 1; causal++) {
            pbsa_params p = make_params(64, 256, 0.5f, causal);
            size_t n = out_count(&c.q.t);
            double *sparse = alloc_doubles(n), *dense = alloc_doubles(n);
            int64_t nb = (s + 63) / 64;
            int32_t *pi = malloc((size_t)(4 * s) * sizeof *pi);
            uint8_t *mask = malloc((size_t)(4 * nb * nb));
            assert_true(pi && mask);
            pbsa_dense_params dp = {.causal = causal};
            assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &p, sparse, pi, mask),
                             PBSA_SUCCESS);
            assert_int_equal(pbsa_ref_dense_attention(&c.q.t, &c.k.t, &c.v.t, &dp, dense),
                             PBSA_SUCCESS);
            assert_memory_equal(sparse, dense, n * sizeof *sparse);
            for (int64_t x = 0; x < 4 * s; x++)
                assert_int_equal(pi[x], x % s);
            for (int64_t x = 0; x < 4 * nb * nb; x++) {
                int64_t i = (x / nb) % nb, j = x % nb;
                assert_int_equal(mask[x], !causal || j <= i);
            }
            free(sparse);
            free(dense);
            free(pi);
            free(mask);
        }
        free_case(&c);
    }
}

static void test_pbs_shared_mode_without_gqa(void **state)
{
    (void)state;
    pbs_case c = make_case(501, 1, 3, 3, 600, 600);
    pbsa_params per_head = make_params(32, 128, 0.8f, 1);
    pbsa_params shared = per_head;
    shared.gqa_mode = PBSA_GQA_SHARED_PER_KV_GROUP;
    size_t n = out_count(&c.q.t), np = (size_t)(3 * 600), nm = (size_t)(3 * 19 * 19);
    double *out_a = alloc_doubles(n), *out_b = alloc_doubles(n);
    int32_t *pi_a = malloc(np * sizeof *pi_a), *pi_b = malloc(np * sizeof *pi_b);
    uint8_t *mask_a = malloc(nm), *mask_b = malloc(nm);
    assert_true(pi_a && pi_b && mask_a && mask_b);
    assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &per_head, out_a, pi_a,
                                            mask_a), PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &shared, out_b, pi_b,
                                            mask_b), PBSA_SUCCESS);
    assert_memory_equal(pi_a, pi_b, np * sizeof *pi_a);
    assert_memory_equal(mask_a, mask_b, nm);
    assert_memory_equal(out_a, out_b, n * sizeof *out_a);
    free(out_a);
    free(out_b);
    free(pi_a);
    free(pi_b);
    free(mask_a);
    free(mask_b);
    free_case(&c);
}

static void test_pbs_chunked_prefill(void **state)
{
    (void)state;
    /* 600 keys, the last 440 (and the last 24) positions as queries: offsets of 5 and 18 blocks. */
    int64_t query_counts[2] = {440, 24};
    for (int t = 0; t < 2; t++) {
        int64_t sq = query_counts[t];
        pbs_case c = make_case(601 + (uint64_t)t, 1, 4, 2, 600, 600);
        c.q.t.data = c.q.data + (600 - sq) * 64;
        c.q.t.seq = sq;
        for (int causal = 0; causal <= 1; causal++) {
            pbsa_params p = make_params(32, 128, 1.0f, causal);
            check_pbs_equals_dense(&c, &p, 1e-12);
            p.threshold = 0.7f;
            check_mask_properties(&c, &p);
            check_permutation_properties(&c, &p);
        }
        /* The chunk's rows of a full-length prefill with tau < 1 need not match (Qlast
         * differs), but the query block alignment rule must hold: an offset of 1 fails. */
        pbsa_params p = make_params(32, 128, 0.9f, 1);
        c.q.t.data = c.q.data + 1 * 64;
        c.q.t.seq = 599;
        size_t n = out_count(&c.q.t);
        double *out = alloc_doubles(n);
        assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &p, out, NULL, NULL),
                         PBSA_ERROR_INVALID_VALUE);
        free(out);
        free_case(&c);
    }
}

/* Attention over a caller-supplied mask: an empty row gives zeros. */
static void test_pbs_sparse_empty_mask(void **state)
{
    (void)state;
    pbs_case c = make_case(701, 1, 1, 1, 300, 300);
    pbsa_params p = make_params(32, 128, 0.9f, 1);
    int32_t pi[300];
    uint8_t mask[10 * 10];
    double out[300 * 64];
    for (int x = 0; x < 300; x++)
        pi[x] = x;
    memset(mask, 0, sizeof mask);
    mask[9 * 10 + 0] = 1; /* the last query block sees block 0 only */
    assert_int_equal(pbsa_ref_pbs_sparse_attention(&c.q.t, &c.k.t, &c.v.t, pi, mask, &p, out),
                     PBSA_SUCCESS);
    for (int x = 0; x < 288 * 64; x++)
        assert_true(out[x] == 0.0);
    /* Query 299 over keys 0..31: dense attention on that prefix. */
    pbsa_host_tensor q1 = c.q.t, k32 = c.k.t, v32 = c.v.t;
    q1.data = c.q.data + 299 * 64;
    q1.seq = 1;
    k32.seq = v32.seq = 32;
    pbsa_dense_params dp = {.causal = 0};
    double want[64];
    assert_int_equal(pbsa_ref_dense_attention(&q1, &k32, &v32, &dp, want), PBSA_SUCCESS);
    assert_close(out + 299 * 64, want, 64, 1e-14);
    free_case(&c);
}

/* The log-sum-exp outputs: their definition on a hand-checked case and against a direct sum,
 * unchanged outputs, PBS keeping every block equal to dense, -INFINITY for a row without keys,
 * and a varlen call's rows equal to each sequence alone, the rows outside left unwritten. */
static void test_lse(void **state)
{
    (void)state;
    float qd[2] = {1, 0}, kd[4] = {1, 0, 0, 1}, vd[4] = {1, 2, 3, 4};
    pbsa_host_tensor q = {.data = qd,
                          .dtype = PBSA_DTYPE_F32,
                          .batch = 1,
                          .heads = 1,
                          .seq = 1,
                          .head_dim = 2,
                          .stride_batch = 2,
                          .stride_head = 2,
                          .stride_seq = 2};
    pbsa_host_tensor k = q, v = q;
    k.data = kd;
    v.data = vd;
    k.seq = v.seq = 2;
    k.stride_batch = k.stride_head = v.stride_batch = v.stride_head = 4;
    pbsa_dense_params one = {.causal = 0, .scale = 1.0f};
    double out[2], lse;
    assert_int_equal(pbsa_ref_dense_attention_lse(&q, &k, &v, &one, out, &lse), PBSA_SUCCESS);
    assert_true(fabs(lse - log(exp(1.0) + 1.0)) < 1e-15);

    pbs_case c = make_case(901, 1, 2, 1, 300, 300);
    const size_t n = out_count(&c.q.t), rows = n / 64;
    double *o1 = alloc_doubles(n), *o2 = alloc_doubles(n);
    double *l1 = alloc_doubles(rows), *l2 = alloc_doubles(rows);
    pbsa_dense_params dense = {.causal = 1, .scale = 0.2f};
    assert_int_equal(pbsa_ref_dense_attention_lse(&c.q.t, &c.k.t, &c.v.t, &dense, o1, l1),
                     PBSA_SUCCESS);
    assert_int_equal(pbsa_ref_dense_attention(&c.q.t, &c.k.t, &c.v.t, &dense, o2), PBSA_SUCCESS);
    assert_memory_equal(o1, o2, n * sizeof *o1);
    for (int64_t h = 0; h < 2; h++)
        for (int64_t i = 0; i < 300; i += 37) {
            double sum = 0.0;
            for (int64_t j = 0; j <= i; j++) {
                double dot = 0.0;
                for (int64_t d = 0; d < 64; d++)
                    dot +=
                        pbsa_ref_element(&c.q.t, 0, h, i, d) * pbsa_ref_element(&c.k.t, 0, 0, j, d);
                sum += exp(dot * (double)0.2f);
            }
            assert_true(fabs(l1[h * 300 + i] - log(sum)) < 1e-12);
        }
    pbsa_params p = make_params(32, 128, 1.0f, 1);
    p.scale = 0.2f;
    assert_int_equal(pbsa_ref_pbs_attention_lse(&c.q.t, &c.k.t, &c.v.t, &p, o2, NULL, NULL, l2),
                     PBSA_SUCCESS);
    assert_close(l2, l1, rows, 1e-12);

    /* Only the last query block has a block (key block 0): the others have no key. */
    int32_t pi[2 * 300];
    uint8_t mask[2 * 10 * 10] = {0};
    for (int x = 0; x < 2 * 300; x++)
        pi[x] = x % 300;
    mask[9 * 10] = mask[(10 + 9) * 10] = 1;
    assert_int_equal(
        pbsa_ref_pbs_sparse_attention_lse(&c.q.t, &c.k.t, &c.v.t, pi, mask, &p, o2, l2),
        PBSA_SUCCESS);
    assert_true(l2[0] == -INFINITY && l2[300 + 287] == -INFINITY);
    assert_true(isfinite(l2[299]) && isfinite(l2[300 + 299]));

    /* Two sequences packed from row 1 of 302: rows 0 and 301 are outside both. */
    owned_tensor pq = random_bhsd(&(uint64_t){5}, 1, 2, 302, 64, 1.0f);
    const int32_t q_offsets[3] = {1, 101, 301}, kv_offsets[3] = {0, 100, 300};
    pbsa_varlen varlen = {2, q_offsets, kv_offsets, NULL, 0, NULL, 0};
    pbsa_dense_params vd_params = {.causal = 1, .varlen = &varlen};
    double *vo = alloc_doubles(2 * 302 * 64), *vl = alloc_doubles(2 * 302);
    for (int x = 0; x < 2 * 302; x++)
        vl[x] = NAN;
    assert_int_equal(pbsa_ref_dense_attention_lse(&pq.t, &c.k.t, &c.v.t, &vd_params, vo, vl),
                     PBSA_SUCCESS);
    assert_true(isnan(vl[0]) && isnan(vl[301]) && isnan(vl[302]) && isnan(vl[603]));
    pbsa_host_tensor q2 = pq.t, k2 = c.k.t, v2 = c.v.t;
    q2.data = pq.data + 101 * 64;
    q2.seq = 200;
    k2.data = c.k.data + 100 * 64;
    v2.data = c.v.data + 100 * 64;
    k2.seq = v2.seq = 200;
    pbsa_dense_params causal = {.causal = 1};
    assert_int_equal(pbsa_ref_dense_attention_lse(&q2, &k2, &v2, &causal, o2, l2), PBSA_SUCCESS);
    for (int64_t h = 0; h < 2; h++)
        assert_close(vl + h * 302 + 101, l2 + h * 200, 200, 0.0);
    free(vo);
    free(vl);
    free_tensor(&pq);
    free(o1);
    free(o2);
    free(l1);
    free(l2);
    free_case(&c);
}

static void expect_invalid(const pbs_case *c, const pbsa_params *p, int expected)
{
    double out[4] = {0};
    int32_t pi[4] = {0};
    uint8_t mask[4] = {0};
    assert_int_equal(pbsa_ref_pbs_permutation(&c->q.t, &c->k.t, p, pi, NULL), expected);
    assert_int_equal(pbsa_ref_pbs_block_mask(&c->q.t, &c->k.t, pi, p, mask, NULL), expected);
    assert_int_equal(pbsa_ref_pbs_sparse_attention(&c->q.t, &c->k.t, &c->v.t, pi, mask, p, out),
                     expected);
    assert_int_equal(pbsa_ref_pbs_attention(&c->q.t, &c->k.t, &c->v.t, p, out, pi, mask),
                     expected);
}

static void test_pbs_bad_params(void **state)
{
    (void)state;
    pbs_case c = make_case(801, 1, 2, 1, 300, 300);
    pbsa_params good = make_params(32, 128, 0.9f, 1), p;
    p = good;
    p.block_size = 8;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p.block_size = 256;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p = good;
    p.segment_size = 0;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p.segment_size = 100;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p.segment_size = -64;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p = good;
    p.threshold = 0.0f;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p.threshold = -0.5f;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p.threshold = NAN;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p = good;
    p.gqa_mode = (pbsa_gqa_mode)7;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    p = good;
    p.struct_size = 3;
    expect_invalid(&c, &p, PBSA_ERROR_INVALID_VALUE);
    expect_invalid(&c, NULL, PBSA_ERROR_NULL_ARGUMENT);
    p = good;
    p.struct_size = 0; /* accepted as the current size */
    double *out = alloc_doubles(out_count(&c.q.t));
    assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &c.v.t, &p, out, NULL, NULL),
                     PBSA_SUCCESS);
    free(out);

    /* pi that is not a permutation, and shape errors; outputs stay untouched. */
    int32_t pi[2 * 300];
    uint8_t mask[2 * 10 * 10];
    double *small_out = alloc_doubles(out_count(&c.q.t));
    for (int x = 0; x < 600; x++)
        pi[x] = x % 300;
    pi[5] = 6;
    memset(mask, 7, sizeof mask);
    small_out[0] = 42.0;
    assert_int_equal(pbsa_ref_pbs_block_mask(&c.q.t, &c.k.t, pi, &good, mask, NULL),
                     PBSA_ERROR_INVALID_VALUE);
    assert_int_equal(pbsa_ref_pbs_sparse_attention(&c.q.t, &c.k.t, &c.v.t, pi, mask, &good,
                                                   small_out), PBSA_ERROR_INVALID_VALUE);
    pi[5] = 5;
    pi[7] = 300;
    assert_int_equal(pbsa_ref_pbs_block_mask(&c.q.t, &c.k.t, pi, &good, mask, NULL),
                     PBSA_ERROR_INVALID_VALUE);
    assert_int_equal(pbsa_ref_pbs_block_mask(&c.q.t, &c.k.t, NULL, &good, mask, NULL),
                     PBSA_ERROR_NULL_ARGUMENT);
    pbsa_host_tensor bad = c.v.t;
    bad.seq = 299;
    assert_int_equal(pbsa_ref_pbs_attention(&c.q.t, &c.k.t, &bad, &good, small_out, NULL, NULL),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = c.q.t;
    bad.head_dim = 32;
    assert_int_equal(pbsa_ref_pbs_attention(&bad, &c.k.t, &c.v.t, &good, small_out, NULL, NULL),
                     PBSA_ERROR_SHAPE_MISMATCH);
    bad = c.q.t;
    bad.seq = 301;
    assert_int_equal(pbsa_ref_pbs_attention(&bad, &c.k.t, &c.v.t, &good, small_out, NULL, NULL),
                     PBSA_ERROR_SHAPE_MISMATCH);
    for (size_t x = 0; x < sizeof mask; x++)
        assert_int_equal(mask[x], 7);
    assert_true(small_out[0] == 42.0);
    free(small_out);
    free_case(&c);
}

/* ---- variable-length batches and paged caches --------------------------------------------- */

/* Rows first.. of t copied into rows at.. of dst (same heads and head_dim, BHSD, f32). */
static void copy_rows(const pbsa_host_tensor *t, owned_tensor *dst, int64_t at)
{
    for (int64_t h = 0; h < t->heads; h++)
        for (int64_t s = 0; s < t->seq; s++)
            for (int64_t d = 0; d < t->head_dim; d++)
                dst->data[(h * dst->t.seq + at + s) * t->head_dim + d] =
                    (float)pbsa_ref_element(t, 0, h, s, d);
}

/* Two sequences packed, and their keys in pages of 16 in a scattered order: each sequence's
 * output, permutation and mask are those of the sequence alone, packed and paged alike; bad
 * offsets and pages are refused. */
static void test_varlen_and_paged(void **state)
{
    (void)state;
    enum { HQ = 2, HKV = 1, D = 8, PAGE = 16, POOL = 8, MAX_PAGES = 5 };
    const int32_t q_lens[2] = {38, 40}, kv_lens[2] = {70, 40};
    uint64_t rng = 77;
    owned_tensor q[2], k[2], v[2];
    for (int b = 0; b < 2; b++) {
        q[b] = random_bhsd(&rng, 1, HQ, q_lens[b], D, 2.0f);
        k[b] = random_bhsd(&rng, 1, HKV, kv_lens[b], D, 1.0f);
        v[b] = random_bhsd(&rng, 1, HKV, kv_lens[b], D, 1.0f);
    }
    int32_t q_offsets[3] = {0, 38, 78}, kv_offsets[3] = {0, 70, 110};
    const int32_t table[2 * MAX_PAGES] = {6, 1, 3, 7, 4, 0, 5, 2, -1, -1};
    owned_tensor pq = random_bhsd(&rng, 1, HQ, 78, D, 0.0f);
    owned_tensor pk = random_bhsd(&rng, 1, HKV, 110, D, 0.0f);
    owned_tensor pv = random_bhsd(&rng, 1, HKV, 110, D, 0.0f);
    owned_tensor gk = random_bhsd(&rng, POOL, HKV, PAGE, D, 0.0f);
    owned_tensor gv = random_bhsd(&rng, POOL, HKV, PAGE, D, 0.0f);
    for (int b = 0; b < 2; b++) {
        copy_rows(&q[b].t, &pq, q_offsets[b]);
        copy_rows(&k[b].t, &pk, kv_offsets[b]);
        copy_rows(&v[b].t, &pv, kv_offsets[b]);
        for (int32_t j = 0; j < kv_lens[b]; j++)
            for (int d = 0; d < D; d++) {
                const int32_t at = (table[b * MAX_PAGES + j / PAGE] * PAGE + j % PAGE) * D + d;
                gk.data[at] = k[b].data[j * D + d];
                gv.data[at] = v[b].data[j * D + d];
            }
    }
    pbsa_varlen varlen = {2, q_offsets, kv_offsets, NULL, 0, NULL, 0};
    pbsa_paged_kv paged = {MAX_PAGES, table, NULL, 0};
    pbsa_params p = make_params(16, 32, 0.9f, 1);
    const size_t count = (size_t)HQ * 78 * D;
    double *packed = alloc_doubles(count), *paged_out = alloc_doubles(count);
    double *alone = alloc_doubles(count);
    int32_t pi[2 * HQ * 70];
    uint8_t mask[2 * HQ * 3 * 5];
    int32_t pi_alone[HQ * 70];
    uint8_t mask_alone[HQ * 3 * 5];

    pbsa_dense_params dense = {.causal = 1, .varlen = &varlen};
    assert_int_equal(pbsa_ref_dense_attention(&pq.t, &pk.t, &pv.t, &dense, packed), PBSA_SUCCESS);
    dense.paged_kv = &paged;
    assert_int_equal(pbsa_ref_dense_attention(&pq.t, &gk.t, &gv.t, &dense, paged_out),
                     PBSA_SUCCESS);
    assert_close(paged_out, packed, count, 0.0);
    pbsa_dense_params causal = {.causal = 1};
    for (int b = 0; b < 2; b++) {
        assert_int_equal(pbsa_ref_dense_attention(&q[b].t, &k[b].t, &v[b].t, &causal, alone),
                         PBSA_SUCCESS);
        for (int h = 0; h < HQ; h++)
            assert_close(packed + ((size_t)h * 78 + q_offsets[b]) * D,
                         alone + (size_t)h * q_lens[b] * D, (size_t)q_lens[b] * D, 0.0);
    }

    p.varlen = &varlen;
    p.paged_kv = &paged;
    assert_int_equal(pbsa_ref_pbs_attention(&pq.t, &gk.t, &gv.t, &p, packed, pi, mask),
                     PBSA_SUCCESS);
    pbsa_params one = make_params(16, 32, 0.9f, 1);
    for (int b = 0; b < 2; b++) {
        const int qb = (q_lens[b] + 15) / 16, kb = (kv_lens[b] + 15) / 16;
        assert_int_equal(pbsa_ref_pbs_attention(&q[b].t, &k[b].t, &v[b].t, &one, alone,
                                                pi_alone, mask_alone),
                         PBSA_SUCCESS);
        for (int h = 0; h < HQ; h++) {
            assert_close(packed + ((size_t)h * 78 + q_offsets[b]) * D,
                         alone + (size_t)h * q_lens[b] * D, (size_t)q_lens[b] * D, 0.0);
            assert_memory_equal(pi + (b * HQ + h) * 70, pi_alone + h * kv_lens[b],
                                (size_t)kv_lens[b] * sizeof *pi);
            for (int i = 0; i < qb; i++)
                assert_memory_equal(mask + ((b * HQ + h) * 3 + i) * 5,
                                    mask_alone + (h * qb + i) * kb, (size_t)kb);
        }
    }

    kv_offsets[1] = 200; /* past the packed keys */
    assert_int_equal(pbsa_ref_dense_attention(&pq.t, &pk.t, &pv.t, &(pbsa_dense_params){
                         .causal = 1, .varlen = &varlen}, packed),
                     PBSA_ERROR_INVALID_VALUE);
    kv_offsets[1] = 30; /* sequence 0: 38 queries, 30 keys */
    assert_int_equal(pbsa_ref_pbs_attention(&pq.t, &gk.t, &gv.t, &p, packed, NULL, NULL),
                     PBSA_ERROR_SHAPE_MISMATCH);
    kv_offsets[1] = 70;
    const int32_t bad_table[2 * MAX_PAGES] = {6, 1, 3, 7, 4, 0, POOL, 2, -1, -1};
    paged.page_table = bad_table;
    assert_int_equal(pbsa_ref_pbs_attention(&pq.t, &gk.t, &gv.t, &p, packed, NULL, NULL),
                     PBSA_ERROR_INVALID_VALUE);
    p.varlen = NULL;
    assert_int_equal(pbsa_ref_pbs_attention(&pq.t, &gk.t, &gv.t, &p, packed, NULL, NULL),
                     PBSA_ERROR_INVALID_VALUE);

    for (int b = 0; b < 2; b++) {
        free_tensor(&q[b]);
        free_tensor(&k[b]);
        free_tensor(&v[b]);
    }
    owned_tensor *packs[5] = {&pq, &pk, &pv, &gk, &gv};
    for (int i = 0; i < 5; i++)
        free_tensor(packs[i]);
    free(packed);
    free(paged_out);
    free(alone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varlen_and_paged),
        cmocka_unit_test(test_lse),
        cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_half_round_trip),
        cmocka_unit_test(test_bf16_known_values),
        cmocka_unit_test(test_bf16_round_trip),
        cmocka_unit_test(test_element_reads_every_dtype),
        cmocka_unit_test(test_dense_hand_checked),
        cmocka_unit_test(test_dense_matches_naive),
        cmocka_unit_test(test_dense_causal_offset),
        cmocka_unit_test(test_dense_gqa_equals_repeated_kv),
        cmocka_unit_test(test_dense_bshd_equals_bhsd),
        cmocka_unit_test(test_dense_bad_arguments),
        cmocka_unit_test(test_pbs_permutation_properties),
        cmocka_unit_test(test_pbs_permutation_identity),
        cmocka_unit_test(test_pbs_scores_match_definition),
        cmocka_unit_test(test_pbs_block_probs_match_definition),
        cmocka_unit_test(test_pbs_mask_properties),
        cmocka_unit_test(test_pbs_full_threshold_equals_dense),
        cmocka_unit_test(test_pbs_first_segment_is_dense),
        cmocka_unit_test(test_pbs_fallback_equals_dense),
        cmocka_unit_test(test_pbs_shared_mode_without_gqa),
        cmocka_unit_test(test_pbs_chunked_prefill),
        cmocka_unit_test(test_pbs_sparse_empty_mask),
        cmocka_unit_test(test_pbs_bad_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
