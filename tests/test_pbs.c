/* PBS-Attn on the device against the float64 reference: each stage on its own, fed identical
 * inputs (the permutation, the block selection, the sparse attention over a given block list),
 * then the whole pipeline, its special cases (full threshold, short-sequence fallback) and its
 * parameter checks. The permutation runs again with its scores through CLBlast, and the pipeline
 * again with CLBlast scores and materialised K' and V' (the internal methods, forced on the
 * context). Where float32 rounding can flip a near tie, the tests check properties that any
 * correct answer has rather than equality with the reference's choice. */
#include "device.h"
#include "pbs_plan.h"
#include "pbsattn_ref.h"
#include "splitmix.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/* Poisoned elements before and after every tensor and int buffer, checked after each call. */
enum { GUARD = 32 };

typedef struct pbs_case {
    const char *name;
    pbsa_dtype dtype;
    int batch, q_heads, kv_heads, q_len, kv_len, head_dim;
    int block, segment;
    float threshold;
    int causal, sink;
    pbsa_gqa_mode mode;
    int bshd;
} pbs_case;

#define PER PBSA_GQA_PER_QUERY_HEAD
#define SHARED PBSA_GQA_SHARED_PER_KV_GROUP
#define F32 PBSA_DTYPE_F32
#define F16 PBSA_DTYPE_F16
#define BF16 PBSA_DTYPE_BF16

/* Segment counts 0, 1 (with and without a tail), 2 and many; lengths that are not a multiple of
 * the block; GQA 4:1 in both modes; batch 2; chunked prefill; every dtype; head dims 64 to 256.
 * The last case uses exactly pbsa_params_default(), so it also runs with params NULL. */
static const pbs_case cases[] = {
    /* name                   dtype B Hq Hkv  Sq  Skv    D   b  seg   tau causal sink mode bshd */
    {"f32_nseg0_fallback",     F32, 1, 2, 2,  50,  50,  64, 16,  64, 0.9f, 1, 1, PER, 0},
    {"f32_nseg1_exact",        F32, 1, 2, 1,  64,  64,  64, 16,  64, 0.9f, 1, 1, SHARED, 0},
    {"f32_nseg1_tail",         F32, 1, 2, 2, 100, 100,  64, 16,  64, 0.8f, 1, 1, PER, 0},
    {"f32_nseg2_partial",      F32, 1, 2, 2, 150, 150,  64, 32,  64, 0.9f, 1, 1, PER, 0},
    {"f32_many_gqa_per_head",  F32, 1, 4, 1, 700, 700,  64, 32,  64, 0.9f, 1, 1, PER, 0},
    {"f32_many_gqa_shared",    F32, 1, 4, 1, 700, 700,  64, 32,  64, 0.9f, 1, 1, SHARED, 0},
    {"f16_batch2_d128",        F16, 2, 2, 2, 333, 333, 128, 16,  64, 0.9f, 1, 1, PER, 0},
    {"bf16_chunked_gqa",      BF16, 1, 4, 2, 200, 520,  64, 32, 128, 0.9f, 1, 1, PER, 0},
    {"f32_chunked_short_q",    F32, 1, 2, 1,  20, 340,  64, 32,  64, 0.9f, 1, 1, SHARED, 0},
    {"f32_noncausal_d96",      F32, 1, 2, 1, 400, 400,  96, 16,  64, 0.7f, 0, 1, SHARED, 0},
    {"f16_d256_nosink",        F16, 1, 1, 1, 300, 300, 256, 32,  64, 0.9f, 1, 0, PER, 0},
    {"bf16_bshd_d128",        BF16, 1, 2, 1, 257, 257, 128, 16,  32, 0.95f, 1, 1, PER, 1},
    {"f16_defaults",           F16, 1, 2, 2, 600, 600, 128, 128, 256, 0.9f, 1, 1, PER, 0},
};
enum { CASE_COUNT = sizeof cases / sizeof cases[0] };

static support_device fixture;
static unsigned long long run_seed;
static cl_context cl_ctx;

/* ---- random inputs --------------------------------------------------------------------------- */

static uint64_t case_seed(const char *name)
{
    uint64_t h = run_seed ^ 0xcbf29ce484222325ull;
    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* ---- tensors --------------------------------------------------------------------------------- */

/* A device tensor and a host copy of its whole buffer (guards included). */
typedef struct dev_tensor {
    pbsa_tensor desc;
    unsigned char *bytes;
    size_t size;
} dev_tensor;

static void tensor_layout(dev_tensor *t, pbsa_dtype dtype, int batch, int heads, int seq, int dim,
                          int bshd)
{
    t->desc = bshd ? pbsa_tensor_bshd(NULL, dtype, batch, heads, seq, dim)
                   : pbsa_tensor_bhsd(NULL, dtype, batch, heads, seq, dim);
    t->desc.offset = GUARD;
    size_t elements = (size_t)GUARD * 2 + (size_t)batch * heads * seq * dim;
    t->size = elements * pbsa_dtype_size(dtype);
    t->bytes = malloc(t->size);
    assert_non_null(t->bytes);
    memset(t->bytes, 0xff, t->size);
}

static size_t element_index(const pbsa_tensor *t, int64_t b, int64_t h, int64_t s, int64_t d)
{
    return (size_t)(t->offset + (uint64_t)(b * t->stride_batch + h * t->stride_head +
                                           s * t->stride_seq + d));
}

static void store_float(dev_tensor *t, size_t index, float x)
{
    unsigned char *at = t->bytes + index * pbsa_dtype_size(t->desc.dtype);
    uint16_t bits;
    switch (t->desc.dtype) {
    case PBSA_DTYPE_F32: memcpy(at, &x, 4); return;
    case PBSA_DTYPE_F16: bits = pbsa_ref_float_to_half(x); break;
    case PBSA_DTYPE_BF16: bits = pbsa_ref_float_to_bf16(x); break;
    default: return;
    }
    memcpy(at, &bits, 2);
}

static void tensor_upload(dev_tensor *t)
{
    cl_int err;
    t->desc.buffer = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, t->size,
                                    t->bytes, &err);
    assert_int_equal(err, CL_SUCCESS);
}

/* Writes the host copy to the device again, after a test changed it. */
static void tensor_rewrite(dev_tensor *t)
{
    assert_int_equal(clEnqueueWriteBuffer(fixture.queue, t->desc.buffer, CL_TRUE, 0, t->size,
                                          t->bytes, 0, NULL, NULL),
                     CL_SUCCESS);
}

static void tensor_download(dev_tensor *t)
{
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, t->desc.buffer, CL_TRUE, 0, t->size,
                                         t->bytes, 0, NULL, NULL),
                     CL_SUCCESS);
}

static void tensor_free(dev_tensor *t)
{
    if (t->desc.buffer)
        clReleaseMemObject(t->desc.buffer);
    free(t->bytes);
    memset(t, 0, sizeof *t);
}

static pbsa_host_tensor host_view(const dev_tensor *t)
{
    const pbsa_tensor *d = &t->desc;
    pbsa_host_tensor h = {t->bytes + d->offset * pbsa_dtype_size(d->dtype), d->dtype, d->batch,
                          d->heads, d->seq, d->head_dim, d->stride_batch, d->stride_head,
                          d->stride_seq};
    return h;
}

/* Q, K, V of a case, on the device and on the host, with the derived sizes. */
typedef struct inputs {
    const pbs_case *c;
    pbsa_params params;
    dev_tensor q, k, v;
    pbsa_host_tensor hq, hk, hv;
    int perm_heads, group, nqb, nkb, nseg, key_count;
    size_t pi_count;  /* B * Hp * Skv */
    size_t rows;      /* B * Hq * nqb */
    size_t out_count; /* B * Hq * Sq * D */
} inputs;

static pbsa_params params_of(const pbs_case *c)
{
    pbsa_params p = pbsa_params_default();
    p.block_size = c->block;
    p.segment_size = c->segment;
    p.threshold = c->threshold;
    p.causal = c->causal;
    p.force_first_block = c->sink;
    p.gqa_mode = c->mode;
    return p;
}

/* Random inputs with structure, so that the permutation and the selection have work to do: some
 * keys carry a shared direction that every query leans towards (heavy hitters), the rest is
 * noise. Queries are larger than keys for sharper, more realistic attention rows. */
static void inputs_make(inputs *in, const pbs_case *c)
{
    memset(in, 0, sizeof *in);
    in->c = c;
    in->params = params_of(c);
    in->group = c->q_heads / c->kv_heads;
    in->perm_heads = c->mode == PER ? c->q_heads : c->kv_heads;
    in->nqb = (c->q_len + c->block - 1) / c->block;
    in->nkb = (c->kv_len + c->block - 1) / c->block;
    in->nseg = c->kv_len / c->segment;
    in->key_count = in->nseg * c->segment;
    in->pi_count = (size_t)c->batch * in->perm_heads * c->kv_len;
    in->rows = (size_t)c->batch * c->q_heads * in->nqb;
    in->out_count = (size_t)c->batch * c->q_heads * c->q_len * c->head_dim;

    uint64_t rng = case_seed(c->name);
    float *direction = malloc((size_t)c->head_dim * sizeof *direction);
    assert_non_null(direction);
    for (int d = 0; d < c->head_dim; d++)
        direction[d] = splitmix_signed(&rng) < 0.0f ? -1.0f : 1.0f;
    tensor_layout(&in->q, c->dtype, c->batch, c->q_heads, c->q_len, c->head_dim, c->bshd);
    tensor_layout(&in->k, c->dtype, c->batch, c->kv_heads, c->kv_len, c->head_dim, c->bshd);
    tensor_layout(&in->v, c->dtype, c->batch, c->kv_heads, c->kv_len, c->head_dim, c->bshd);
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->q_heads; h++)
            for (int s = 0; s < c->q_len; s++)
                for (int d = 0; d < c->head_dim; d++)
                    store_float(&in->q, element_index(&in->q.desc, b, h, s, d),
                                1.5f * splitmix_signed(&rng) + 0.5f * direction[d]);
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->kv_heads; h++)
            for (int s = 0; s < c->kv_len; s++) {
                float heavy = splitmix_signed(&rng) > 0.6f ? 0.6f + 0.4f * splitmix_signed(&rng) : 0.0f;
                for (int d = 0; d < c->head_dim; d++) {
                    store_float(&in->k, element_index(&in->k.desc, b, h, s, d),
                                splitmix_signed(&rng) + heavy * direction[d]);
                    store_float(&in->v, element_index(&in->v.desc, b, h, s, d), splitmix_signed(&rng));
                }
            }
    free(direction);
    tensor_upload(&in->q);
    tensor_upload(&in->k);
    tensor_upload(&in->v);
    in->hq = host_view(&in->q);
    in->hk = host_view(&in->k);
    in->hv = host_view(&in->v);
}

static void inputs_free(inputs *in)
{
    tensor_free(&in->q);
    tensor_free(&in->k);
    tensor_free(&in->v);
}

/* A poisoned output tensor for in's queries, on the device. */
static void output_make(dev_tensor *o, const inputs *in)
{
    const pbs_case *c = in->c;
    tensor_layout(o, c->dtype, c->batch, c->q_heads, c->q_len, c->head_dim, c->bshd);
    tensor_upload(o);
}

static double tolerance_of(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return 1e-5;
    case PBSA_DTYPE_F16: return 1e-3;
    case PBSA_DTYPE_BF16: return 5e-3;
    }
    return 0.0;
}

/* Reads o back and compares it with ref (BHSD doubles): rel_l2 within the dtype's limit, every
 * element written, every byte outside the tensor still poison. */
static void check_output(const char *what, dev_tensor *o, const double *ref)
{
    tensor_download(o);
    const pbsa_tensor *t = &o->desc;
    size_t element = pbsa_dtype_size(t->dtype);
    unsigned char *owned = calloc(o->size, 1);
    assert_non_null(owned);
    pbsa_host_tensor view = host_view(o);
    double diff2 = 0.0, ref2 = 0.0, max_abs = 0.0;
    long unwritten = 0, damaged = 0;
    size_t n = 0;
    for (int64_t b = 0; b < t->batch; b++)
        for (int64_t h = 0; h < t->heads; h++)
            for (int64_t s = 0; s < t->seq; s++)
                for (int64_t d = 0; d < t->head_dim; d++, n++) {
                    memset(owned + element_index(t, b, h, s, d) * element, 1, element);
                    double got = pbsa_ref_element(&view, b, h, s, d);
                    if (!isfinite(got)) {
                        unwritten++;
                        continue;
                    }
                    double e = got - ref[n];
                    diff2 += e * e;
                    ref2 += ref[n] * ref[n];
                    max_abs = fmax(max_abs, fabs(e));
                }
    for (size_t i = 0; i < o->size; i++)
        if (!owned[i] && o->bytes[i] != 0xff)
            damaged++;
    free(owned);
    double rel = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    double limit = tolerance_of(t->dtype);
    printf("  %-44s rel_l2 %.3e (limit %.0e) max_abs %.3e\n", what, rel, limit, max_abs);
    if (unwritten || damaged || !(rel <= limit))
        fail_msg("%s: rel_l2 %.3e (limit %.0e), %ld elements unwritten or non-finite, %ld bytes "
                 "outside the output changed",
                 what, rel, limit, unwritten, damaged);
}

/* ---- int buffers ----------------------------------------------------------------------------- */

/* A cl_int buffer holding count values from element GUARD on, poisoned (-1) around them, or
 * filled from values when not NULL. */
typedef struct int_buffer {
    cl_mem mem;
    size_t count;
} int_buffer;

static int_buffer int_buffer_make(size_t count, const cl_int *values)
{
    size_t total = count + 2 * GUARD;
    cl_int *host = malloc(total * sizeof *host);
    assert_non_null(host);
    for (size_t i = 0; i < total; i++)
        host[i] = -1;
    if (values)
        memcpy(host + GUARD, values, count * sizeof *host);
    cl_int err;
    int_buffer b = {clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                   total * sizeof *host, host, &err),
                    count};
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return b;
}

/* The count values of b (caller frees); fails when a guard element changed. */
static cl_int *int_buffer_read(const char *what, const int_buffer *b)
{
    size_t total = b->count + 2 * GUARD;
    cl_int *host = malloc(total * sizeof *host);
    assert_non_null(host);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, b->mem, CL_TRUE, 0, total * sizeof *host,
                                         host, 0, NULL, NULL),
                     CL_SUCCESS);
    for (size_t i = 0; i < GUARD; i++)
        if (host[i] != -1 || host[GUARD + b->count + i] != -1)
            fail_msg("%s: the call wrote outside its part of the buffer", what);
    memmove(host, host + GUARD, b->count * sizeof *host);
    return host;
}

static void int_buffer_free(int_buffer *b)
{
    if (b->mem)
        clReleaseMemObject(b->mem);
    b->mem = NULL;
}

static void expect_ok(const char *what, int status)
{
    if (status != PBSA_SUCCESS)
        fail_msg("%s: status %d (%s): %s", what, status, pbsa_status_string(status),
                 pbsa_context_last_error(fixture.ctx));
}

static void *alloc_or_fail(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

/* ---- permutation checks ---------------------------------------------------------------------- */

static bool permutation_is_identity(const inputs *in)
{
    return in->nseg == 0 || (in->nseg == 1 && in->c->kv_len % in->c->segment == 0);
}

/* Every row of pi is a permutation that keeps each key in its segment, the identity on the tail
 * and everywhere when there is nothing to sort. */
static void check_pi_structure(const char *what, const inputs *in, const cl_int *pi)
{
    const int skv = in->c->kv_len, seg = in->c->segment;
    uint8_t *seen = alloc_or_fail((size_t)skv);
    for (size_t row = 0; row < in->pi_count / (size_t)skv; row++) {
        const cl_int *r = pi + row * (size_t)skv;
        memset(seen, 0, (size_t)skv);
        for (int p = 0; p < skv; p++) {
            cl_int key = r[p];
            if (key < 0 || key >= skv || seen[key])
                fail_msg("%s: row %zu is not a permutation (position %d holds %d)", what, row, p,
                         key);
            seen[key] = 1;
            if (p >= in->key_count || permutation_is_identity(in)) {
                if (key != p)
                    fail_msg("%s: row %zu, position %d holds %d, expected the identity", what,
                             row, p, key);
            } else if (key / seg != p / seg) {
                fail_msg("%s: row %zu moves key %d out of its segment to position %d", what, row,
                         key, p);
            }
        }
    }
    free(seen);
}

/* Along pi inside each segment, the reference scores must not increase by more than
 * eps x (the largest score of the row). */
static void check_pi_order(const char *what, const inputs *in, const cl_int *pi,
                           const double *scores, double eps)
{
    const int skv = in->c->kv_len, seg = in->c->segment, len = in->key_count;
    double worst = 0.0;
    for (size_t row = 0; row < in->pi_count / (size_t)skv; row++) {
        const cl_int *r = pi + row * (size_t)skv;
        const double *s = scores + row * (size_t)len;
        double top = 0.0;
        for (int j = 0; j < len; j++)
            top = fmax(top, s[j]);
        for (int p = 1; p < len; p++) {
            if (p % seg == 0)
                continue;
            double rise = (s[r[p]] - s[r[p - 1]]) / top;
            worst = fmax(worst, rise);
            if (rise > eps)
                fail_msg("%s: row %zu, positions %d and %d: score rises from %.9g to %.9g "
                         "(%.2e of the row's maximum, limit %.0e)",
                         what, row, p - 1, p, s[r[p - 1]], s[r[p]], rise, eps);
        }
    }
    printf("  %-44s largest score rise along pi %.2e (limit %.0e)\n", what, worst, eps);
}

static void test_permutation(void **state)
{
    const pbs_case *c = *state;
    inputs in;
    inputs_make(&in, c);
    int_buffer pi_buf = int_buffer_make(in.pi_count, NULL);
    size_t ws_bytes;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes));
    cl_int err;
    cl_mem workspace = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, ws_bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    cl_event done = NULL;
    expect_ok("pbsa_permutation",
              pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.params,
                               pi_buf.mem, GUARD, workspace, &done));
    assert_non_null(done);
    assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    cl_int *pi = int_buffer_read("pbsa_permutation", &pi_buf);

    int32_t *ref_pi = alloc_or_fail(in.pi_count * sizeof *ref_pi);
    double *scores =
        alloc_or_fail((size_t)c->batch * in.perm_heads * in.key_count * sizeof(double));
    expect_ok("pbsa_ref_pbs_permutation",
              pbsa_ref_pbs_permutation(&in.hq, &in.hk, &in.params, ref_pi, scores));
    check_pi_structure("permutation structure", &in, pi);
    /* The device scores in float32 from the same stored inputs. */
    double eps = c->dtype == PBSA_DTYPE_F32 ? 2e-6 : 1e-5;
    if (!permutation_is_identity(&in))
        check_pi_order("permutation order", &in, pi, scores, eps);
    size_t same = 0;
    for (size_t x = 0; x < in.pi_count; x++)
        same += pi[x] == ref_pi[x];
    printf("  %-44s %.1f%% of positions equal to the reference\n", "permutation",
           100.0 * (double)same / (double)in.pi_count);

    /* Without a workspace the library brings its own: the same permutation. */
    int_buffer pi2_buf = int_buffer_make(in.pi_count, NULL);
    expect_ok("pbsa_permutation (workspace NULL)",
              pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.params,
                               pi2_buf.mem, GUARD, NULL, NULL));
    cl_int *pi2 = int_buffer_read("pbsa_permutation (workspace NULL)", &pi2_buf);
    assert_memory_equal(pi, pi2, in.pi_count * sizeof *pi);

    free(pi);
    free(pi2);
    free(ref_pi);
    free(scores);
    int_buffer_free(&pi_buf);
    int_buffer_free(&pi2_buf);
    clReleaseMemObject(workspace);
    inputs_free(&in);
}

/* ---- selection checks ------------------------------------------------------------------------ */

/* Block of the row of pi that holds original key 0. */
static int sink_block_of(const inputs *in, const cl_int *pi_row)
{
    for (int p = 0; p < in->c->kv_len; p++)
        if (pi_row[p] == 0)
            return p / in->c->block;
    return -1;
}

/* Checks block lists against the reference probabilities A of the same permutation: lists
 * ascending and in range; the own segment and the sink present; nothing else that is not
 * allowed; the allowed blocks kept reach tau; dropping the smallest kept block (the forced sink
 * aside) falls below tau; no block left out is clearly more probable than one kept. Fills mask
 * (B*Hq*nqb*nkb bytes) from the lists; returns the number of rows equal to the reference's. */
static size_t check_block_lists(const char *what, const inputs *in, const cl_int *pi,
                              const cl_int *counts, const cl_int *blocks, uint8_t *mask)
{
    const pbs_case *c = in->c;
    const int nkb = in->nkb, nqb = in->nqb, bps = c->segment / c->block;
    const int offset = nkb - nqb;
    const double tau = (double)c->threshold;
    size_t cells = in->rows * (size_t)nkb;
    uint8_t *ref_mask = alloc_or_fail(cells);
    double *probs = alloc_or_fail(cells * sizeof *probs);
    int32_t *pi32 = alloc_or_fail(in->pi_count * sizeof *pi32);
    for (size_t x = 0; x < in->pi_count; x++)
        pi32[x] = pi[x];
    expect_ok("pbsa_ref_pbs_block_mask",
              pbsa_ref_pbs_block_mask(&in->hq, &in->hk, pi32, &in->params, ref_mask, probs));
    memset(mask, 0, cells);
    size_t exact_rows = 0, selected = 0, ref_selected = 0;
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->q_heads; h++) {
            int ph = c->mode == PER ? h : h / in->group;
            int sink = sink_block_of(in, pi + ((size_t)b * in->perm_heads + ph) * c->kv_len);
            for (int i = 0; i < nqb; i++) {
                size_t row = ((size_t)b * c->q_heads + h) * nqb + i;
                uint8_t *chosen = mask + row * nkb;
                const double *a = probs + row * nkb;
                int n = counts[row];
                if (n < 1 || n > nkb)
                    fail_msg("%s: row %zu has %d blocks (1 .. %d expected)", what, row, n, nkb);
                for (int t = 0; t < n; t++) {
                    int j = blocks[row * nkb + t];
                    if (j < 0 || j >= nkb || (t > 0 && j <= blocks[row * nkb + t - 1]))
                        fail_msg("%s: row %zu, entry %d = %d: not ascending within 0 .. %d", what,
                                 row, t, j, nkb - 1);
                    chosen[j] = 1;
                }
                int own = (i + offset) / bps;
                double kept = 0.0, kept_free = 0.0, smallest_free = INFINITY, largest_left = 0.0;
                int allowed_count = 0, free_count = 0;
                for (int j = 0; j < nkb; j++) {
                    bool allowed = j / bps != own && (!c->causal || j <= i + offset);
                    bool forced = j / bps == own || (c->sink && j == sink);
                    if (forced && !chosen[j])
                        fail_msg("%s: row %zu lacks block %d (%s)", what, row, j,
                                 j / bps == own ? "own segment" : "sink");
                    if (!allowed) {
                        if (chosen[j] && !forced)
                            fail_msg("%s: row %zu holds block %d, which may not be selected",
                                     what, row, j);
                        continue;
                    }
                    allowed_count++;
                    if (!chosen[j]) {
                        largest_left = fmax(largest_left, a[j]);
                        continue;
                    }
                    kept += a[j];
                    if (!(c->sink && j == sink)) {
                        kept_free += a[j];
                        smallest_free = fmin(smallest_free, a[j]);
                        free_count++;
                    }
                }
                if (allowed_count > 0) {
                    if (tau >= 1.0) {
                        if (largest_left > 1e-30)
                            fail_msg("%s: row %zu, threshold %g leaves a block of mass %.3g out",
                                     what, row, tau, largest_left);
                    } else {
                        if (kept < tau - 1e-4)
                            fail_msg("%s: row %zu keeps mass %.6f < threshold %.6f", what, row,
                                     kept, tau);
                        if (free_count > 0 && kept_free - smallest_free >= tau + 1e-4)
                            fail_msg("%s: row %zu is not minimal: without its smallest block "
                                     "(%.3g) it still keeps %.6f >= threshold %.6f",
                                     what, row, smallest_free, kept_free - smallest_free, tau);
                        if (free_count > 0 && largest_left > smallest_free + 1e-5)
                            fail_msg("%s: row %zu leaves out a block of mass %.6f but keeps one "
                                     "of %.6f",
                                     what, row, largest_left, smallest_free);
                    }
                }
                bool exact = memcmp(chosen, ref_mask + row * nkb, (size_t)nkb) == 0;
                exact_rows += exact;
            }
        }
    for (size_t x = 0; x < cells; x++) {
        selected += mask[x];
        ref_selected += ref_mask[x];
    }
    printf("  %-44s %zu of %zu rows equal to the reference; %zu blocks kept (reference %zu) of "
           "%zu\n",
           what, exact_rows, in->rows, selected, ref_selected, cells);
    free(ref_mask);
    free(probs);
    free(pi32);
    return exact_rows;
}

/* The permutation and the selection of in on the device, checked against the reference with the
 * device's pi; returns the number of rows equal to the reference's. */
static size_t select_and_check(const inputs *in)
{
    int_buffer pi_buf = int_buffer_make(in->pi_count, NULL);
    expect_ok("pbsa_permutation", pbsa_permutation(fixture.ctx, fixture.queue, &in->q.desc,
                                                   &in->k.desc, &in->params, pi_buf.mem, GUARD,
                                                   NULL, NULL));
    cl_int *pi = int_buffer_read("pbsa_permutation", &pi_buf);
    check_pi_structure("permutation structure", in, pi);

    /* The device's pi goes to both selections, so they work on identical inputs. */
    int_buffer counts_buf = int_buffer_make(in->rows, NULL);
    int_buffer blocks_buf = int_buffer_make(in->rows * (size_t)in->nkb, NULL);
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, GUARD, GUARD};
    cl_event done = NULL;
    expect_ok("pbsa_block_selection",
              pbsa_block_selection(fixture.ctx, fixture.queue, &in->q.desc, &in->k.desc,
                                   &in->params, pi_buf.mem, GUARD, &list, NULL, &done));
    assert_non_null(done);
    assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    cl_int *counts = int_buffer_read("pbsa_block_selection counts", &counts_buf);
    cl_int *blocks = int_buffer_read("pbsa_block_selection blocks", &blocks_buf);
    uint8_t *mask = alloc_or_fail(in->rows * (size_t)in->nkb);
    size_t exact_rows = check_block_lists("selection", in, pi, counts, blocks, mask);

    free(pi);
    free(counts);
    free(blocks);
    free(mask);
    int_buffer_free(&pi_buf);
    int_buffer_free(&counts_buf);
    int_buffer_free(&blocks_buf);
    return exact_rows;
}

static void test_selection(void **state)
{
    inputs in;
    inputs_make(&in, *state);
    select_and_check(&in);
    inputs_free(&in);
}

/* Exact ties. Keys are equal within each segment: +a, 0 or -a by segment (a a vector of +-1);
 * queries are zero (head 0) or 8a (head 1), so that block means and logits are exact. Head 0 has
 * every selectable block equally likely; in head 1 the +a blocks (else the 0 blocks) share all
 * the mass, the others hold about 1e-28 each or 0 in float, so the kept set ends inside a group
 * of ties and many blocks have tiny or no mass. No threshold is k/m for any count m of tied
 * blocks, so the float64 reference's choice is exact: the first ceil(tau m) of the tied blocks by
 * index. The device must choose the same in every row, over a block count that is not a power
 * of two, and over more than 2048 blocks. */
static void test_selection_ties(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_ties_132_blocks", F32, 1, 2, 1, 2100, 2100, 64, 16, 32, 0.9f, 1, 1, PER, 0},
        {"f32_ties_chunked_noncausal", F32, 1, 2, 1, 700, 1100, 64, 16, 64, 0.7f, 0, 0, PER, 0},
        {"f32_ties_2063_blocks", F32, 1, 2, 1, 33000, 33000, 64, 16, 64, 0.9f, 1, 1, PER, 0},
    };
    for (size_t n = 0; n < sizeof shapes / sizeof shapes[0]; n++) {
        const pbs_case *c = &shapes[n];
        inputs in;
        inputs_make(&in, c);
        for (int s = 0; s < c->kv_len; s++) {
            int pattern = (s / c->segment * 7 + 3) % 5;
            float sign = pattern < 2 ? 1.0f : pattern == 2 ? 0.0f : -1.0f;
            for (int d = 0; d < c->head_dim; d++)
                store_float(&in.k, element_index(&in.k.desc, 0, 0, s, d),
                            d % 3 ? sign : -sign);
        }
        for (int s = 0; s < c->q_len; s++)
            for (int d = 0; d < c->head_dim; d++) {
                store_float(&in.q, element_index(&in.q.desc, 0, 0, s, d), 0.0f);
                store_float(&in.q, element_index(&in.q.desc, 0, 1, s, d), d % 3 ? 8.0f : -8.0f);
            }
        tensor_rewrite(&in.q);
        tensor_rewrite(&in.k);
        size_t exact_rows = select_and_check(&in);
        if (exact_rows != in.rows)
            fail_msg("%s: %zu of %zu rows differ from the reference", c->name,
                     in.rows - exact_rows, in.rows);
        inputs_free(&in);
    }
}

/* ---- sparse attention over a given list ------------------------------------------------------ */

/* Block lists (counts, then blocks with row stride nkb, -1 past each count) from a mask. */
static void mask_to_lists(const inputs *in, const uint8_t *mask, cl_int *counts, cl_int *blocks)
{
    for (size_t row = 0; row < in->rows; row++) {
        int n = 0;
        for (int j = 0; j < in->nkb; j++) {
            blocks[row * in->nkb + j] = -1;
            if (mask[row * in->nkb + j])
                blocks[row * in->nkb + n++] = j;
        }
        counts[row] = n;
    }
}

/* Runs pbsa_sparse_attention with the given pi (NULL: identity) and mask and compares it with
 * the reference on the same inputs. */
static void check_sparse(const char *what, const inputs *in, const int32_t *pi,
                         const uint8_t *mask)
{
    size_t cells = in->rows * (size_t)in->nkb;
    cl_int *counts = alloc_or_fail(in->rows * sizeof *counts);
    cl_int *blocks = alloc_or_fail(cells * sizeof *blocks);
    mask_to_lists(in, mask, counts, blocks);
    int_buffer counts_buf = int_buffer_make(in->rows, counts);
    int_buffer blocks_buf = int_buffer_make(cells, blocks);
    int_buffer pi_buf = {0};
    int32_t *ref_pi = alloc_or_fail(in->pi_count * sizeof *ref_pi);
    if (pi) {
        pi_buf = int_buffer_make(in->pi_count, pi);
        memcpy(ref_pi, pi, in->pi_count * sizeof *ref_pi);
    } else {
        for (size_t x = 0; x < in->pi_count; x++)
            ref_pi[x] = (int32_t)(x % (size_t)in->c->kv_len);
    }
    dev_tensor o;
    output_make(&o, in);
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, GUARD, GUARD};
    cl_event done = NULL;
    expect_ok("pbsa_sparse_attention",
              pbsa_sparse_attention(fixture.ctx, fixture.queue, &in->q.desc, &in->k.desc,
                                    &in->v.desc, &o.desc, &in->params, pi ? pi_buf.mem : NULL,
                                    pi ? GUARD : 0, &list, &done));
    assert_non_null(done);
    assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);
    double *ref = alloc_or_fail(in->out_count * sizeof *ref);
    expect_ok("pbsa_ref_pbs_sparse_attention",
              pbsa_ref_pbs_sparse_attention(&in->hq, &in->hk, &in->hv, ref_pi, mask, &in->params,
                                            ref));
    check_output(what, &o, ref);
    /* The inputs of the call are left as they were. */
    cl_int *counts_after = int_buffer_read("counts", &counts_buf);
    cl_int *blocks_after = int_buffer_read("blocks", &blocks_buf);
    assert_memory_equal(counts_after, counts, in->rows * sizeof *counts);
    assert_memory_equal(blocks_after, blocks, cells * sizeof *blocks);
    free(counts_after);
    free(blocks_after);
    free(ref);
    free(ref_pi);
    free(counts);
    free(blocks);
    tensor_free(&o);
    int_buffer_free(&counts_buf);
    int_buffer_free(&blocks_buf);
    int_buffer_free(&pi_buf);
}

static void test_sparse(void **state)
{
    const pbs_case *c = *state;
    inputs in;
    inputs_make(&in, c);
    int32_t *pi = alloc_or_fail(in.pi_count * sizeof *pi);
    uint8_t *mask = alloc_or_fail(in.rows * (size_t)in.nkb);
    expect_ok("pbsa_ref_pbs_permutation",
              pbsa_ref_pbs_permutation(&in.hq, &in.hk, &in.params, pi, NULL));
    expect_ok("pbsa_ref_pbs_block_mask",
              pbsa_ref_pbs_block_mask(&in.hq, &in.hk, pi, &in.params, mask, NULL));
    check_sparse("sparse attention, reference pi and mask", &in, pi, mask);
    free(pi);
    free(mask);
    inputs_free(&in);
}

/* pi NULL (plain block-sparse attention) over random masks, with rows that have no block or, when
 * causal, no visible key (those must come out as zeros). */
static void test_sparse_identity(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_identity_causal", F32, 1, 4, 2, 150, 278, 64, 16, 64, 0.9f, 1, 1, SHARED, 0},
        {"bf16_identity_noncausal", BF16, 2, 2, 1, 100, 100, 128, 32, 64, 0.9f, 0, 1, PER, 0},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        inputs in;
        inputs_make(&in, &shapes[s]);
        uint64_t rng = case_seed("random mask") + s;
        size_t cells = in.rows * (size_t)in.nkb;
        uint8_t *mask = alloc_or_fail(cells);
        for (size_t x = 0; x < cells; x++)
            mask[x] = splitmix_signed(&rng) < 0.0f;
        memset(mask, 0, (size_t)in.nkb); /* row 0: no block at all */
        if (in.rows > 2) {
            /* row 1: only blocks after the diagonal (nothing visible when causal) */
            memset(mask + in.nkb, 0, (size_t)in.nkb);
            mask[in.nkb + in.nkb - 1] = 1;
        }
        printf("%s\n", shapes[s].name);
        check_sparse("sparse attention, pi NULL, random mask", &in, NULL, mask);
        free(mask);
        inputs_free(&in);
    }
}

/* ---- the whole pipeline ---------------------------------------------------------------------- */

static cl_int *workspace_read(const inputs *in, cl_mem workspace, pbsa_workspace_part part,
                              size_t count)
{
    cl_int *host = alloc_or_fail(count * sizeof *host);
    size_t size = 0;
    expect_ok("pbsa_workspace_read",
              pbsa_workspace_read(fixture.ctx, fixture.queue, &in->q.desc, &in->k.desc,
                                  &in->params, workspace, part, host, count * sizeof *host,
                                  &size));
    assert_int_equal(size, count * sizeof *host);
    return host;
}

static void dense_reference(const inputs *in, double *ref)
{
    pbsa_dense_params dense = {.causal = in->params.causal, .scale = in->params.scale};
    expect_ok("pbsa_ref_dense_attention",
              pbsa_ref_dense_attention(&in->hq, &in->hk, &in->hv, &dense, ref));
}

static bool params_are_default(const pbsa_params *p)
{
    pbsa_params d = pbsa_params_default();
    return p->block_size == d.block_size && p->segment_size == d.segment_size &&
           p->threshold == d.threshold && p->causal == d.causal &&
           p->force_first_block == d.force_first_block && p->gqa_mode == d.gqa_mode &&
           p->scale == d.scale;
}

static void test_end_to_end(void **state)
{
    const pbs_case *c = *state;
    inputs in;
    inputs_make(&in, c);
    size_t ws_bytes;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes));
    cl_int err;
    cl_mem workspace = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, ws_bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    dev_tensor o;
    output_make(&o, &in);
    cl_event done = NULL;
    expect_ok("pbsa_attention", pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc,
                                               &in.k.desc, &in.v.desc, &o.desc, &in.params,
                                               workspace, &done));
    assert_non_null(done);
    assert_int_equal(clWaitForEvents(1, &done), CL_SUCCESS);
    clReleaseEvent(done);

    double *ref = alloc_or_fail(in.out_count * sizeof *ref);
    if (c->kv_len <= c->segment) {
        /* The short-sequence fallback is dense attention. */
        dense_reference(&in, ref);
        check_output("pbsa_attention (fallback) vs dense", &o, ref);
    } else {
        /* The reference runs on the device's own permutation and block lists, so a near tie
         * that float32 broke the other way does not matter. */
        size_t cells = in.rows * (size_t)in.nkb;
        cl_int *pi = workspace_read(&in, workspace, PBSA_PART_PERMUTATION, in.pi_count);
        cl_int *counts = workspace_read(&in, workspace, PBSA_PART_BLOCK_COUNTS, in.rows);
        cl_int *blocks = workspace_read(&in, workspace, PBSA_PART_BLOCKS, cells);
        check_pi_structure("workspace permutation", &in, pi);
        uint8_t *mask = alloc_or_fail(cells);
        check_block_lists("workspace block lists", &in, pi, counts, blocks, mask);
        int32_t *pi32 = alloc_or_fail(in.pi_count * sizeof *pi32);
        for (size_t x = 0; x < in.pi_count; x++)
            pi32[x] = pi[x];
        expect_ok("pbsa_ref_pbs_sparse_attention",
                  pbsa_ref_pbs_sparse_attention(&in.hq, &in.hk, &in.hv, pi32, mask, &in.params,
                                                ref));
        check_output("pbsa_attention vs reference on its lists", &o, ref);

        double *density = alloc_or_fail((size_t)c->batch * c->q_heads * sizeof *density);
        expect_ok("pbsa_block_density",
                  pbsa_block_density(c->batch, c->q_heads, c->q_len, c->kv_len, &in.params,
                                     counts, density));
        double mean = 0.0;
        for (int x = 0; x < c->batch * c->q_heads; x++) {
            assert_true(density[x] > 0.0 && isfinite(density[x]));
            if (!c->causal)
                assert_true(density[x] <= 1.0);
            mean += density[x] / (c->batch * c->q_heads);
        }
        printf("  %-44s mean density %.3f\n", "pbsa_block_density", mean);
        free(density);
        free(pi);
        free(pi32);
        free(counts);
        free(blocks);
        free(mask);
    }

    /* Again with a workspace of the library's own; with params NULL when they are the
     * defaults. */
    dev_tensor o2;
    output_make(&o2, &in);
    const pbsa_params *params = params_are_default(&in.params) ? NULL : &in.params;
    expect_ok("pbsa_attention (workspace NULL)",
              pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                             &o2.desc, params, NULL, NULL));
    check_output(params ? "pbsa_attention, workspace NULL"
                        : "pbsa_attention, workspace NULL, params NULL",
                 &o2, ref);

    free(ref);
    tensor_free(&o);
    tensor_free(&o2);
    clReleaseMemObject(workspace);
    inputs_free(&in);
}

/* pbsa_attention equals dense attention on each shape; with check_pipeline, the reference
 * pipeline does too. */
static void expect_dense(const pbs_case *shapes, size_t count, bool check_pipeline)
{
    for (size_t s = 0; s < count; s++) {
        inputs in;
        inputs_make(&in, &shapes[s]);
        dev_tensor o;
        output_make(&o, &in);
        expect_ok("pbsa_attention",
                  pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                 &o.desc, &in.params, NULL, NULL));
        double *ref = alloc_or_fail(in.out_count * sizeof *ref);
        dense_reference(&in, ref);
        printf("%s\n", shapes[s].name);
        check_output("pbsa_attention vs dense", &o, ref);
        if (check_pipeline) {
            double *pipeline = alloc_or_fail(in.out_count * sizeof *pipeline);
            expect_ok("pbsa_ref_pbs_attention",
                      pbsa_ref_pbs_attention(&in.hq, &in.hk, &in.hv, &in.params, pipeline, NULL,
                                             NULL));
            for (size_t x = 0; x < in.out_count; x++)
                assert_true(fabs(pipeline[x] - ref[x]) <= 1e-12);
            free(pipeline);
        }
        free(ref);
        tensor_free(&o);
        inputs_free(&in);
    }
}

/* A threshold of 1 or more keeps every block causality allows: dense attention. */
static void test_full_threshold_is_dense(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_tau1_causal_gqa", F32, 1, 4, 1, 300, 300, 64, 32, 64, 1.0f, 1, 1, SHARED, 0},
        {"f16_tau1.5_noncausal", F16, 1, 2, 2, 200, 200, 64, 16, 64, 1.5f, 0, 0, PER, 0},
        {"bf16_tau1_chunked", BF16, 1, 2, 2, 100, 260, 128, 32, 64, 1.0f, 1, 0, PER, 0},
    };
    expect_dense(shapes, sizeof shapes / sizeof shapes[0], false);
}

/* Skv <= segment: dense attention, whatever the threshold. */
static void test_fallback_is_dense(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_fallback_one_segment", F32, 1, 2, 1, 128, 128, 64, 32, 128, 0.1f, 1, 1, PER, 0},
        {"f16_fallback_chunked", F16, 2, 2, 2, 16, 64, 64, 16, 64, 0.1f, 1, 1, SHARED, 0},
        {"bf16_fallback_noncausal", BF16, 1, 4, 2, 70, 70, 128, 16, 128, 0.1f, 0, 0, PER, 0},
    };
    expect_dense(shapes, sizeof shapes / sizeof shapes[0], true);
}

/* ---- bad parameters -------------------------------------------------------------------------- */

/* Whole buffers read back, to prove that a failing call wrote nothing. */
static unsigned char *snapshot(cl_mem mem, size_t *size)
{
    assert_int_equal(clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof *size, size, NULL), CL_SUCCESS);
    unsigned char *bytes = alloc_or_fail(*size);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, mem, CL_TRUE, 0, *size, bytes, 0, NULL,
                                         NULL),
                     CL_SUCCESS);
    return bytes;
}

static void expect_untouched(const char *what, cl_mem mem, const unsigned char *before)
{
    size_t size;
    unsigned char *now = snapshot(mem, &size);
    if (memcmp(now, before, size) != 0)
        fail_msg("%s: a failing call changed a caller buffer", what);
    free(now);
}

static void expect_failure(const char *what, int got, int expected, const char *needle)
{
    const char *message = pbsa_context_last_error(fixture.ctx);
    if (got != expected)
        fail_msg("%s: status %d (%s), expected %d (%s); message: %s", what, got,
                 pbsa_status_string(got), expected, pbsa_status_string(expected), message);
    if (needle && !strstr(message, needle))
        fail_msg("%s: message '%s' does not name '%s'", what, message, needle);
}

/* Every entry point, given one bad parameter set, fails with INVALID_VALUE naming it and leaves
 * every output buffer as it was. sparse: whether pbsa_sparse_attention reads that parameter. */
static void expect_bad_params(const char *what, const inputs *in, const pbsa_params *p,
                              const char *needle, bool sparse, cl_mem o, cl_mem pi,
                              const pbsa_block_list *list, cl_mem workspace)
{
    const int bad = PBSA_ERROR_INVALID_VALUE;
    const pbsa_tensor *q = &in->q.desc, *k = &in->k.desc, *v = &in->v.desc;
    pbsa_tensor out = pbsa_tensor_bhsd(o, q->dtype, q->batch, q->heads, q->seq, q->head_dim);
    size_t size_before[4];
    unsigned char *before[4] = {snapshot(o, &size_before[0]), snapshot(pi, &size_before[1]),
                                snapshot(list->counts, &size_before[2]),
                                snapshot(list->blocks, &size_before[3])};
    char label[160];
    size_t bytes = 12345;
    cl_event event = (cl_event)&bytes;

    snprintf(label, sizeof label, "%s: pbsa_attention", what);
    expect_failure(label, pbsa_attention(fixture.ctx, fixture.queue, q, k, v, &out, p, NULL,
                                         &event),
                   bad, needle);
    assert_null(event);
    snprintf(label, sizeof label, "%s: pbsa_attention with a workspace", what);
    expect_failure(label, pbsa_attention(fixture.ctx, fixture.queue, q, k, v, &out, p, workspace,
                                         NULL),
                   bad, needle);
    snprintf(label, sizeof label, "%s: pbsa_workspace_size", what);
    expect_failure(label, pbsa_workspace_size(fixture.ctx, q, k, p, &bytes), bad, needle);
    assert_int_equal(bytes, 12345);
    snprintf(label, sizeof label, "%s: pbsa_permutation", what);
    expect_failure(label, pbsa_permutation(fixture.ctx, fixture.queue, q, k, p, pi, 0, NULL, NULL),
                   bad, needle);
    snprintf(label, sizeof label, "%s: pbsa_block_selection", what);
    expect_failure(label, pbsa_block_selection(fixture.ctx, fixture.queue, q, k, p, pi, 0, list,
                                               NULL, NULL),
                   bad, needle);
    if (sparse) {
        snprintf(label, sizeof label, "%s: pbsa_sparse_attention", what);
        expect_failure(label, pbsa_sparse_attention(fixture.ctx, fixture.queue, q, k, v, &out, p,
                                                    pi, 0, list, NULL),
                       bad, needle);
    }
    snprintf(label, sizeof label, "%s: pbsa_workspace_read", what);
    cl_int host[4];
    expect_failure(label, pbsa_workspace_read(fixture.ctx, fixture.queue, q, k, p, workspace,
                                              PBSA_PART_BLOCK_COUNTS, host, sizeof host, NULL),
                   bad, needle);
    cl_mem all[4] = {o, pi, list->counts, list->blocks};
    for (int x = 0; x < 4; x++) {
        expect_untouched(what, all[x], before[x]);
        free(before[x]);
    }
}

static cl_mem poisoned_buffer(size_t bytes)
{
    unsigned char *host = alloc_or_fail(bytes);
    memset(host, 0xff, bytes);
    cl_int err;
    cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes, host,
                                &err);
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return mem;
}

static void test_bad_params(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_bad_params", F32, 1, 2, 1, 150, 150, 64, 32, 64,
                                   0.9f, 1, 1, PER, 0};
    inputs in;
    inputs_make(&in, &shape);
    /* Outputs large enough for any of the parameter sets below (block 16 at most). */
    const size_t big = 4 * (in.out_count + in.pi_count + 64 * 64 * 8);
    cl_mem o = poisoned_buffer(big), pi = poisoned_buffer(big), counts = poisoned_buffer(big),
           blocks = poisoned_buffer(big), workspace = poisoned_buffer(16 << 20);
    pbsa_block_list list = {counts, blocks, 0, 0};

    pbsa_params p = in.params;
    p.segment_size = 48; /* not a multiple of the block (32) */
    expect_bad_params("segment 48, block 32", &in, &p, "params->segment_size", false, o, pi,
                      &list, workspace);
    p = in.params;
    p.segment_size = 0;
    expect_bad_params("segment 0", &in, &p, "params->segment_size", false, o, pi, &list,
                      workspace);
    p = in.params;
    p.block_size = 48;
    p.segment_size = 96;
    expect_bad_params("block 48", &in, &p, "params->block_size", true, o, pi, &list, workspace);
    p = in.params;
    p.block_size = 0;
    expect_bad_params("block 0", &in, &p, "params->block_size", true, o, pi, &list, workspace);
    float bad_thresholds[3] = {0.0f, -0.5f, NAN};
    for (int t = 0; t < 3; t++) {
        p = in.params;
        p.threshold = bad_thresholds[t];
        char what[64];
        snprintf(what, sizeof what, "threshold %g", (double)bad_thresholds[t]);
        expect_bad_params(what, &in, &p, "params->threshold", false, o, pi, &list, workspace);
    }
    p = in.params;
    p.gqa_mode = (pbsa_gqa_mode)7;
    expect_bad_params("gqa_mode 7", &in, &p, "params->gqa_mode", true, o, pi, &list, workspace);
    p = in.params;
    p.struct_size = 3;
    expect_bad_params("struct_size 3", &in, &p, "params->struct_size", true, o, pi, &list,
                      workspace);

    /* Chunked prefill whose offset (150 - 100) is not a multiple of the block. */
    inputs_free(&in);
    static const pbs_case chunked = {"f32_bad_chunk", F32, 1, 2, 1, 100, 150, 64, 32, 64,
                                     0.9f, 1, 1, PER, 0};
    inputs_make(&in, &chunked);
    expect_bad_params("chunked offset 50, block 32", &in, &in.params, "k.seq", true, o, pi, &list,
                      workspace);

    clReleaseMemObject(o);
    clReleaseMemObject(pi);
    clReleaseMemObject(counts);
    clReleaseMemObject(blocks);
    clReleaseMemObject(workspace);
    inputs_free(&in);
}

/* A workspace one element short fails with BUFFER_TOO_SMALL and nothing is written. */
static void test_small_workspace(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_small_workspace", F32, 1, 2, 2, 200, 200, 64, 16, 64,
                                   0.9f, 1, 1, PER, 0};
    inputs in;
    inputs_make(&in, &shape);
    size_t ws_bytes;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes));
    assert_true(ws_bytes > 4);
    cl_mem small = poisoned_buffer(ws_bytes - 4);
    dev_tensor o;
    output_make(&o, &in);
    int_buffer pi_buf = int_buffer_make(in.pi_count, NULL);
    int_buffer counts_buf = int_buffer_make(in.rows, NULL);
    int_buffer blocks_buf = int_buffer_make(in.rows * (size_t)in.nkb, NULL);
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, GUARD, GUARD};
    size_t sizes[5];
    cl_mem all[5] = {o.desc.buffer, pi_buf.mem, counts_buf.mem, blocks_buf.mem, small};
    unsigned char *before[5];
    for (int x = 0; x < 5; x++)
        before[x] = snapshot(all[x], &sizes[x]);

    const int too_small = PBSA_ERROR_BUFFER_TOO_SMALL;
    expect_failure("pbsa_attention, small workspace",
                   pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                  &o.desc, &in.params, small, NULL),
                   too_small, "workspace");
    expect_failure("pbsa_permutation, small workspace",
                   pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                    &in.params, pi_buf.mem, GUARD, small, NULL),
                   too_small, "workspace");
    expect_failure("pbsa_block_selection, small workspace",
                   pbsa_block_selection(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                        &in.params, pi_buf.mem, GUARD, &list, small, NULL),
                   too_small, "workspace");
    cl_int host[8];
    expect_failure("pbsa_workspace_read, small workspace",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, small, PBSA_PART_BLOCK_COUNTS, host,
                                       sizeof host, NULL),
                   too_small, "workspace");
    /* Output buffers too small for their parts. */
    expect_failure("pbsa_permutation, pi one element short",
                   pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                    &in.params, pi_buf.mem, 2 * GUARD + 1, NULL, NULL),
                   too_small, "pi");
    pbsa_block_list short_list = {counts_buf.mem, blocks_buf.mem, GUARD, 2 * GUARD + 1};
    expect_failure("pbsa_block_selection, blocks one element short",
                   pbsa_block_selection(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                        &in.params, pi_buf.mem, GUARD, &short_list, NULL, NULL),
                   too_small, "blocks");
    for (int x = 0; x < 5; x++) {
        expect_untouched("small workspace", all[x], before[x]);
        free(before[x]);
    }

    /* pbsa_workspace_read: capacity below the part, and a part that does not exist. */
    size_t ws_full;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_full));
    cl_mem workspace = poisoned_buffer(ws_full);
    size_t part_size = 0;
    expect_failure("pbsa_workspace_read, capacity too small",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, workspace, PBSA_PART_BLOCK_COUNTS, host,
                                       sizeof host, &part_size),
                   PBSA_ERROR_INVALID_VALUE, "capacity");
    assert_int_equal(part_size, in.rows * sizeof(cl_int));
    expect_failure("pbsa_workspace_read, bad part",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, workspace, (pbsa_workspace_part)9, host,
                                       sizeof host, NULL),
                   PBSA_ERROR_INVALID_VALUE, "part");

    clReleaseMemObject(small);
    clReleaseMemObject(workspace);
    tensor_free(&o);
    int_buffer_free(&pi_buf);
    int_buffer_free(&counts_buf);
    int_buffer_free(&blocks_buf);
    inputs_free(&in);
}

/* Density from counts, as documented: selected blocks over the blocks dense attention visits. */
static void test_block_density(void **state)
{
    (void)state;
    pbsa_params p = pbsa_params_default();
    p.block_size = 16;
    /* Sq 40, Skv 72: 3 query blocks at key blocks 2..4 of 5. */
    const cl_int counts[2 * 3] = {1, 2, 3, 3, 4, 5};
    double density[2];
    expect_ok("pbsa_block_density", pbsa_block_density(1, 2, 40, 72, &p, counts, density));
    assert_true(fabs(density[0] - 6.0 / 12.0) < 1e-15);
    assert_true(fabs(density[1] - 12.0 / 12.0) < 1e-15);
    p.causal = 0;
    expect_ok("pbsa_block_density", pbsa_block_density(1, 2, 40, 72, &p, counts, density));
    assert_true(fabs(density[0] - 6.0 / 15.0) < 1e-15);
    assert_int_equal(pbsa_block_density(1, 2, 40, 72, NULL, counts, density),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_int_equal(pbsa_block_density(1, 2, 80, 72, &p, counts, density),
                     PBSA_ERROR_INVALID_VALUE);
}

/* ---- nothing enqueued on error --------------------------------------------------------------- */

/* A kernel of the last stage that fails to build leaves nothing enqueued: every kernel (and
 * CLBlast's GEMM program) is prepared before the first launch. A context of its own starts with
 * an empty program cache, and PBSA_KERNEL_DIR points it at a sparse kernel that cannot compile. */
static void test_build_failure_enqueues_nothing(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_build_failure", F32, 1, 2, 1, 300, 300, 64, 32, 64,
                                   0.9f, 1, 1, PER, 0};
    inputs in;
    inputs_make(&in, &shape);
    char dir[] = "/tmp/pbsa-broken-kernels-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/pbs_attention.cl", dir);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs("#error \"broken on purpose\"\n", file);
    fclose(file);
    const char *previous = getenv("PBSA_KERNEL_DIR");
    char *saved = previous ? strdup(previous) : NULL;
    pbsa_context *ctx = NULL;
    expect_ok("pbsa_context_create", pbsa_context_create(cl_ctx, fixture.device, NULL, &ctx));
    assert_int_equal(setenv("PBSA_KERNEL_DIR", dir, 1), 0);

    static const pbsa_pbs_methods methods[2] = {
        {PBSA_SCORE_FUSED, PBSA_KV_GATHER, 0},
        {PBSA_SCORE_CLBLAST, PBSA_KV_MATERIALISED, 0},
    };
    for (int m = 0; m < 2; m++) {
        pbsa_pbs_force_methods(ctx, &methods[m]);
        size_t ws_bytes;
        assert_int_equal(pbsa_workspace_size(ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes),
                         PBSA_SUCCESS);
        cl_mem workspace = poisoned_buffer(ws_bytes);
        dev_tensor o;
        output_make(&o, &in);
        size_t sizes[2];
        unsigned char *before[2] = {snapshot(workspace, &sizes[0]),
                                    snapshot(o.desc.buffer, &sizes[1])};
        cl_event event = (cl_event)&ws_bytes;
        int status = pbsa_attention(ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                    &o.desc, &in.params, workspace, &event);
        const char *message = pbsa_context_last_error(ctx);
        printf("  %s, %s: %s\n", m ? "clblast" : "fused", m ? "materialised" : "gather", message);
        if (status != PBSA_ERROR_BUILD_FAILED || !strstr(message, "pbs_attention.cl"))
            fail_msg("pbsa_attention with a broken sparse kernel: status %d (%s), message '%s'",
                     status, pbsa_status_string(status), message);
        assert_null(event);
        expect_untouched("workspace after a build failure", workspace, before[0]);
        expect_untouched("output after a build failure", o.desc.buffer, before[1]);
        free(before[0]);
        free(before[1]);
        clReleaseMemObject(workspace);
        tensor_free(&o);
    }

    if (saved)
        setenv("PBSA_KERNEL_DIR", saved, 1);
    else
        unsetenv("PBSA_KERNEL_DIR");
    free(saved);
    pbsa_context_release(ctx);
    remove(path);
    rmdir(dir);
    inputs_free(&in);
}

/* ---- main ------------------------------------------------------------------------------------ */

/* Method variants of the stage tests. The CLBlast permutation runs in chunks of one KV row, so
 * that cases with several KV rows run several chunks. */
static int use_clblast_in_small_chunks(void **state)
{
    (void)state;
    const pbsa_pbs_methods methods = {.score = PBSA_SCORE_CLBLAST, .gemm_chunk_bytes = 1};
    pbsa_pbs_force_methods(fixture.ctx, &methods);
    return 0;
}

static int use_clblast_and_materialised(void **state)
{
    (void)state;
    const pbsa_pbs_methods methods = {.score = PBSA_SCORE_CLBLAST, .kv = PBSA_KV_MATERIALISED};
    pbsa_pbs_force_methods(fixture.ctx, &methods);
    return 0;
}

static int use_automatic_methods(void **state)
{
    (void)state;
    pbsa_pbs_force_methods(fixture.ctx, NULL);
    return 0;
}

enum { MAX_TESTS = 6 * CASE_COUNT + 16 };
static char test_names[MAX_TESTS][80];

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    cl_ctx = fixture.cl_ctx;
    /* Fresh inputs on every run; the seed is printed so a failure can be replayed. */
    const char *fixed = getenv("PBSA_TEST_SEED");
    run_seed = fixed ? strtoull(fixed, NULL, 0) : (unsigned long long)time(NULL);
    printf("PBSA_TEST_SEED=%llu\n", run_seed);

    static const struct {
        const char *stage;
        CMUnitTestFunction fn;
        CMFixtureFunction setup;
    } stages[] = {
        {"permutation", test_permutation, NULL},
        {"permutation_clblast", test_permutation, use_clblast_in_small_chunks},
        {"selection", test_selection, NULL},
        {"sparse", test_sparse, NULL},
        {"end_to_end", test_end_to_end, NULL},
        {"end_to_end_clblast_materialised", test_end_to_end, use_clblast_and_materialised},
    };
    struct CMUnitTest tests[MAX_TESTS];
    int count = 0;
    for (size_t s = 0; s < sizeof stages / sizeof stages[0]; s++)
        for (int i = 0; i < CASE_COUNT; i++) {
            snprintf(test_names[count], sizeof test_names[count], "%s/%s", stages[s].stage,
                     cases[i].name);
            struct CMUnitTest t = {test_names[count], stages[s].fn, stages[s].setup,
                                   stages[s].setup ? use_automatic_methods : NULL,
                                   (void *)&cases[i]};
            tests[count++] = t;
        }
    const struct CMUnitTest others[] = {
        cmocka_unit_test(test_selection_ties),
        cmocka_unit_test(test_sparse_identity),
        cmocka_unit_test(test_full_threshold_is_dense),
        cmocka_unit_test(test_fallback_is_dense),
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_small_workspace),
        cmocka_unit_test(test_build_failure_enqueues_nothing),
        cmocka_unit_test(test_block_density),
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        tests[count++] = others[i];
    int failed = _cmocka_run_group_tests("pbs", tests, (size_t)count, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
