/* Numerical robustness of dense and PBS attention against the float64 reference:
 *  - logits of magnitude 1e4 (a large common shift either way, or a large spread) stay finite and
 *    correct, within what fp32 can resolve at that magnitude;
 *  - so do logits up to the largest float (equal ones give the mean of V), and a scale whose
 *    logits pass it;
 *  - f16 inputs at the edge of its range (65504) give finite outputs;
 *  - rows without any key (an empty block list) are zeros; malformed block lists and
 *    permutations are ignored without reading or writing out of bounds;
 *  - NaN inputs give the outcome README.md documents: a NaN in Q spoils its own row, a NaN in K
 *    spoils exactly the rows that see that key, a NaN in V the rows that see that key (and, in
 *    today's kernels, possibly other rows of the same query tile); the permutation and the block
 *    lists stay valid. */
#include "conformance.h"
#include "device.h"
#include "host_tensor.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;

enum { GUARD = 16 };

/* ---- inputs ---------------------------------------------------------------------------------- */

typedef struct problem {
    pbsa_dtype dtype;
    int q_heads, kv_heads, q_len, kv_len, head_dim;
    int causal;
    host_tensor q, k, v;
} problem;

static uint64_t rng_state;

static float uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((double)(rng_state >> 11) * 0x1.0p-53);
}

typedef float (*generator)(int which, int head, int s, int d); /* which: 0 q, 1 k, 2 v */

static void problem_make(problem *p, pbsa_dtype dtype, int q_heads, int kv_heads, int q_len,
                         int kv_len, int head_dim, int causal, generator gen, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->dtype = dtype;
    p->q_heads = q_heads;
    p->kv_heads = kv_heads;
    p->q_len = q_len;
    p->kv_len = kv_len;
    p->head_dim = head_dim;
    p->causal = causal;
    rng_state = seed;
    tensor_init(&p->q, dtype, 1, q_heads, q_len, head_dim, TENSOR_BHSD, GUARD);
    tensor_init(&p->k, dtype, 1, kv_heads, kv_len, head_dim, TENSOR_BHSD, GUARD);
    tensor_init(&p->v, dtype, 1, kv_heads, kv_len, head_dim, TENSOR_BHSD, GUARD);
    assert_non_null(p->q.bytes);
    assert_non_null(p->k.bytes);
    assert_non_null(p->v.bytes);
    for (int h = 0; h < q_heads; h++)
        for (int s = 0; s < q_len; s++)
            for (int d = 0; d < head_dim; d++)
                tensor_set(&p->q, 0, h, s, d, gen(0, h, s, d));
    for (int h = 0; h < kv_heads; h++)
        for (int s = 0; s < kv_len; s++)
            for (int d = 0; d < head_dim; d++) {
                tensor_set(&p->k, 0, h, s, d, gen(1, h, s, d));
                tensor_set(&p->v, 0, h, s, d, gen(2, h, s, d));
            }
}

static void problem_upload(problem *p)
{
    assert_int_equal(tensor_upload(&p->q, fixture.cl_ctx), CL_SUCCESS);
    assert_int_equal(tensor_upload(&p->k, fixture.cl_ctx), CL_SUCCESS);
    assert_int_equal(tensor_upload(&p->v, fixture.cl_ctx), CL_SUCCESS);
}

static void problem_free(problem *p)
{
    tensor_free(&p->q);
    tensor_free(&p->k);
    tensor_free(&p->v);
}

static void output_make(host_tensor *o, const problem *p)
{
    tensor_init(o, p->dtype, 1, p->q_heads, p->q_len, p->head_dim, TENSOR_BHSD, GUARD);
    assert_non_null(o->bytes);
    assert_int_equal(tensor_upload(o, fixture.cl_ctx), CL_SUCCESS);
}

static double *reference(const problem *p, float scale)
{
    size_t count = (size_t)p->q_heads * p->q_len * p->head_dim;
    double *ref = malloc(count * sizeof *ref);
    assert_non_null(ref);
    pbsa_host_tensor q = tensor_host_view(&p->q), k = tensor_host_view(&p->k),
                     v = tensor_host_view(&p->v);
    pbsa_dense_params params = {.causal = p->causal, .scale = scale};
    assert_int_equal(pbsa_ref_dense_attention(&q, &k, &v, &params, ref), PBSA_SUCCESS);
    return ref;
}

static pbsa_params pbs_params(const problem *p, float threshold, float scale)
{
    pbsa_params params = pbsa_params_default();
    params.block_size = 32;
    params.segment_size = 64;
    params.threshold = threshold;
    params.causal = p->causal;
    params.scale = scale;
    return params;
}

static void run_dense(const problem *p, host_tensor *o, float scale)
{
    pbsa_dense_params params = {.causal = p->causal, .scale = scale};
    int status = pbsa_dense_attention(fixture.ctx, fixture.queue, &p->q.desc, &p->k.desc,
                                      &p->v.desc, &o->desc, &params, NULL);
    if (status != PBSA_SUCCESS)
        fail_msg("pbsa_dense_attention: %d %s", status, pbsa_context_last_error(fixture.ctx));
    assert_int_equal(tensor_download(o, fixture.queue), CL_SUCCESS);
    assert_int_equal(tensor_guard_damage(o), 0);
}

/* Every row of pi a permutation that keeps keys in their segments; every block list in range. */
static void check_workspace(const problem *p, const pbsa_params *params, cl_mem workspace)
{
    int segment = params->segment_size, block = params->block_size;
    int nkb = (p->kv_len + block - 1) / block, nqb = (p->q_len + block - 1) / block;
    size_t pi_count = (size_t)p->q_heads * p->kv_len, rows = (size_t)p->q_heads * nqb;
    cl_int *pi = malloc(pi_count * sizeof *pi), *counts = malloc(rows * sizeof *counts),
           *blocks = malloc(rows * nkb * sizeof *blocks);
    assert_true(pi && counts && blocks);
    const pbsa_workspace_part parts[3] = {PBSA_PART_PERMUTATION, PBSA_PART_BLOCK_COUNTS,
                                          PBSA_PART_BLOCKS};
    void *hosts[3] = {pi, counts, blocks};
    size_t sizes[3] = {pi_count * 4, rows * 4, rows * nkb * 4};
    for (int i = 0; i < 3; i++)
        assert_int_equal(pbsa_workspace_read(fixture.ctx, fixture.queue, &p->q.desc, &p->k.desc,
                                             params, workspace, parts[i], hosts[i], sizes[i],
                                             NULL),
                         PBSA_SUCCESS);
    int complete = p->kv_len / segment * segment;
    for (int h = 0; h < p->q_heads; h++) {
        char *seen = calloc((size_t)p->kv_len, 1);
        assert_non_null(seen);
        for (int x = 0; x < p->kv_len; x++) {
            int key = pi[(size_t)h * p->kv_len + x];
            if (key < 0 || key >= p->kv_len || seen[key] ||
                (x < complete ? key / segment != x / segment : key != x))
                fail_msg("head %d: position %d holds key %d: not a segmented permutation", h, x,
                         key);
            seen[key] = 1;
        }
        free(seen);
    }
    for (size_t r = 0; r < rows; r++) {
        if (counts[r] < 0 || counts[r] > nkb)
            fail_msg("block list %zu has %d blocks", r, counts[r]);
        for (int t = 0; t < counts[r]; t++)
            if (blocks[r * nkb + t] < 0 || blocks[r * nkb + t] >= nkb)
                fail_msg("block list %zu holds block %d", r, blocks[r * nkb + t]);
    }
    free(pi);
    free(counts);
    free(blocks);
}

/* pbsa_attention with a workspace of ours, checked as above; o read back. */
static void run_pbs(const problem *p, host_tensor *o, const pbsa_params *params)
{
    size_t bytes;
    assert_int_equal(pbsa_workspace_size(fixture.ctx, &p->q.desc, &p->k.desc, params, &bytes),
                     PBSA_SUCCESS);
    cl_int err;
    cl_mem workspace = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    int status = pbsa_attention(fixture.ctx, fixture.queue, &p->q.desc, &p->k.desc, &p->v.desc,
                                &o->desc, params, workspace, NULL);
    if (status != PBSA_SUCCESS)
        fail_msg("pbsa_attention: %d %s", status, pbsa_context_last_error(fixture.ctx));
    assert_int_equal(tensor_download(o, fixture.queue), CL_SUCCESS);
    assert_int_equal(tensor_guard_damage(o), 0);
    check_workspace(p, params, workspace);
    clReleaseMemObject(workspace);
}

static void expect_close(const char *what, const host_tensor *o, const double *ref, double limit)
{
    tensor_error e = tensor_compare(o, ref);
    double rel = e.rel_l2;
    printf("  %-48s rel_l2 %.2e (limit %.1e)\n", what, rel, limit);
    if (e.nonfinite)
        fail_msg("%s: %ld elements are not finite", what, e.nonfinite);
    if (!(rel <= limit))
        fail_msg("%s: rel_l2 %.3e above %.1e", what, rel, limit);
}

/* ---- large logits ---------------------------------------------------------------------------- */

static float shift_sign;

/* q and k share a component of 100 in dimension 0, so every logit (scale 1) is about +-1e4,
 * with an O(1) spread from the other dimensions. */
static float gen_shift(int which, int head, int s, int d)
{
    (void)head;
    (void)s;
    if (d == 0)
        return which == 0 ? 100.0f : which == 1 ? 100.0f * shift_sign : uniform(-1.0f, 1.0f);
    return uniform(-0.5f, 0.5f);
}

/* Logits spread over about +-1e4: near one-hot rows. */
static float gen_spread(int which, int head, int s, int d)
{
    (void)head;
    (void)s;
    (void)d;
    return which == 2 ? uniform(-1.0f, 1.0f) : uniform(-30.0f, 30.0f);
}

static void test_large_logits(void **state)
{
    (void)state;
    const pbsa_dtype dtypes[3] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
    const char *names[3] = {"f32", "f16", "bf16"};
    for (int t = 0; t < 3; t++) {
        for (int pattern = 0; pattern < 3; pattern++) {
            shift_sign = pattern == 0 ? 1.0f : -1.0f;
            generator gen = pattern < 2 ? gen_shift : gen_spread;
            problem p;
            problem_make(&p, dtypes[t], 2, 1, 256, 256, 64, 1, gen, 42 + (uint64_t)pattern);
            problem_upload(&p);
            /* fp32 holds a logit of 1e4 to within 1e4 x 2^-24; the softmax weights, and so the
             * output, can be no better than a few times that. */
            double limit = fmax(conformance_tolerance(dtypes[t]), 8 * 1e4 * 0x1.0p-24);
            double *ref = reference(&p, 1.0f);
            char what[96];
            const char *kind = pattern == 0 ? "logits +1e4" : pattern == 1 ? "logits -1e4"
                                                                            : "logits spread 1e4";
            host_tensor o;
            output_make(&o, &p);
            run_dense(&p, &o, 1.0f);
            snprintf(what, sizeof what, "%s dense, %s", names[t], kind);
            expect_close(what, &o, ref, limit);
            tensor_free(&o);
            /* PBS keeping every block: the scores and selection see the same logits. (With
             * the spread, block probabilities underflow: see test_threshold_one_underflow.) */
            pbsa_params params;
            if (pattern < 2) {
                output_make(&o, &p);
                params = pbs_params(&p, 1.0f, 1.0f);
                run_pbs(&p, &o, &params);
                snprintf(what, sizeof what, "%s PBS threshold 1, %s", names[t], kind);
                expect_close(what, &o, ref, limit);
                tensor_free(&o);
            }
            /* And the default threshold: finite, valid permutation and lists. */
            output_make(&o, &p);
            params = pbs_params(&p, 0.9f, 1.0f);
            run_pbs(&p, &o, &params);
            long nonfinite = tensor_compare(&o, ref).nonfinite;
            if (nonfinite)
                fail_msg("%s PBS threshold 0.9, %s: %ld elements not finite", names[t], kind,
                         nonfinite);
            tensor_free(&o);
            free(ref);
            problem_free(&p);
        }
    }
}

/* ---- logits up to the largest float ---------------------------------------------------------- */

static int huge_case;

/* Q and K on a grid of eighths, so that every q.k (D = 64) is exact in any order of summation and
 * the device and the reference see the same logits; case 0 and 1: every logit equal (q = 1,
 * k = -1 or 1), so each row is the mean of the V rows it sees. */
static float gen_huge(int which, int head, int s, int d)
{
    (void)head;
    (void)s;
    (void)d;
    if (which == 2)
        return uniform(-1.0f, 1.0f);
    if (huge_case < 2)
        return which == 0 ? 1.0f : huge_case == 0 ? -1.0f : 1.0f;
    return roundf(uniform(-8.0f, 8.0f)) / 8.0f;
}

static void test_huge_logits(void **state)
{
    (void)state;
    const pbsa_dtype dtypes[3] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
    const char *names[3] = {"f32", "f16", "bf16"};
    /* Logits of -2.5e38 and 2.5e38 everywhere; up to +-3e38 (64 x 4.6875e36); and a scale of
     * 2.5e38, whose logits pass the largest float (the raw scores still order the keys). */
    const float scales[4] = {2.5e38f / 64, 2.5e38f / 64, 3e38f / 64, 2.5e38f};
    const char *kinds[4] = {"all logits -2.5e38", "all logits 2.5e38", "logits up to 3e38",
                            "scale 2.5e38"};
    for (huge_case = 0; huge_case < 4; huge_case++) {
        for (int t = 0; t < 3; t++) {
            problem p;
            problem_make(&p, dtypes[t], 2, 1, 256, 256, 64, 1, gen_huge, 77 + (uint64_t)huge_case);
            problem_upload(&p);
            double *ref = reference(&p, scales[huge_case]);
            double limit = conformance_tolerance(dtypes[t]);
            char what[96];
            host_tensor o;
            output_make(&o, &p);
            run_dense(&p, &o, scales[huge_case]);
            snprintf(what, sizeof what, "%s dense, %s", names[t], kinds[huge_case]);
            expect_close(what, &o, ref, limit);
            tensor_free(&o);
            /* PBS keeping every block (the scores and selection see the same logits), and with
             * the default threshold: finite, valid permutation and lists. */
            for (int pass = 0; pass < 2 && t == 0; pass++) {
                output_make(&o, &p);
                pbsa_params params = pbs_params(&p, pass == 0 ? 1.0f : 0.9f, scales[huge_case]);
                run_pbs(&p, &o, &params);
                snprintf(what, sizeof what, "%s PBS threshold %s, %s", names[t],
                         pass == 0 ? "1" : "0.9", kinds[huge_case]);
                if (pass == 0)
                    expect_close(what, &o, ref, limit);
                else if (tensor_compare(&o, ref).nonfinite)
                    fail_msg("%s: elements not finite", what);
                tensor_free(&o);
            }
            free(ref);
            problem_free(&p);
        }
    }
}

/* ---- f16 at the edge of its range ------------------------------------------------------------ */

static int f16_case;

static float gen_f16_edge(int which, int head, int s, int d)
{
    (void)head;
    if (which == 2) /* values at +-65504, the largest f16 */
        return ((s + d) % 3 == 0 ? -1.0f : 1.0f) * 65504.0f;
    if (f16_case == 0)
        return uniform(-1.0f, 1.0f);
    /* q and k near the largest f16 as well: logits of about 1e11 */
    if (uniform(-1.0f, 1.0f) < 0.0f)
        return -60000.0f + 100.0f * (float)(d % 7);
    return 60000.0f - 50.0f * (float)(s % 13);
}

static void test_f16_edges(void **state)
{
    (void)state;
    for (f16_case = 0; f16_case < 2; f16_case++) {
        problem p;
        problem_make(&p, PBSA_DTYPE_F16, 2, 2, 200, 200, 64, 1, gen_f16_edge, 7);
        problem_upload(&p);
        double *ref = reference(&p, 0.0f);
        const char *what = f16_case == 0 ? "f16 V at +-65504" : "f16 Q, K, V near 65504";
        host_tensor o;
        output_make(&o, &p);
        run_dense(&p, &o, 0.0f);
        char label[96];
        snprintf(label, sizeof label, "%s, dense", what);
        expect_close(label, &o, ref, conformance_tolerance(PBSA_DTYPE_F16));
        tensor_free(&o);
        /* PBS keeping every block (where block probabilities do not underflow: see
         * test_threshold_one_underflow), and with the default threshold: finite. */
        for (int pass = f16_case; pass < 2; pass++) {
            output_make(&o, &p);
            pbsa_params params = pbs_params(&p, pass == 0 ? 1.0f : 0.9f, 0.0f);
            run_pbs(&p, &o, &params);
            if (pass == 0) {
                snprintf(label, sizeof label, "%s, PBS threshold 1", what);
                expect_close(label, &o, ref, conformance_tolerance(PBSA_DTYPE_F16));
            } else {
                long nonfinite = tensor_compare(&o, ref).nonfinite;
                if (nonfinite)
                    fail_msg("%s, PBS threshold 0.9: %ld elements not finite", what, nonfinite);
            }
            tensor_free(&o);
        }
        free(ref);
        problem_free(&p);
    }
}

/* A threshold of 1 or more keeps every allowed block (include/pbsattn.h, and the reference), also
 * those whose block probability underflows to 0 when logits spread over 1e4: PBS equals dense. */
static void test_threshold_one_underflow(void **state)
{
    (void)state;
    for (int c = 0; c < 2; c++) {
        problem p;
        if (c == 0) {
            problem_make(&p, PBSA_DTYPE_F32, 2, 1, 256, 256, 64, 1, gen_spread, 44);
        } else {
            f16_case = 1;
            problem_make(&p, PBSA_DTYPE_F16, 2, 2, 200, 200, 64, 1, gen_f16_edge, 7);
        }
        problem_upload(&p);
        float scale = c == 0 ? 1.0f : 0.0f;
        double *ref = reference(&p, scale);
        host_tensor o;
        output_make(&o, &p);
        pbsa_params params = pbs_params(&p, 1.0f, scale);
        run_pbs(&p, &o, &params);
        expect_close(c == 0 ? "f32 PBS threshold 1, logits spread 1e4"
                            : "f16 PBS threshold 1, Q, K, V near 65504",
                     &o, ref, c == 0 ? 8 * 1e4 * 0x1.0p-24 : conformance_tolerance(PBSA_DTYPE_F16));
        tensor_free(&o);
        free(ref);
        problem_free(&p);
    }
}

/* ---- rows without keys and malformed lists ---------------------------------------------------- */

static float gen_plain(int which, int head, int s, int d)
{
    (void)which;
    (void)head;
    (void)s;
    (void)d;
    return uniform(-1.0f, 1.0f);
}

static cl_mem int_buffer(size_t count, const cl_int *values)
{
    cl_int err;
    cl_mem mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                count * sizeof(cl_int), (void *)values, &err);
    assert_int_equal(err, CL_SUCCESS);
    return mem;
}

static void test_empty_and_malformed_lists(void **state)
{
    (void)state;
    problem p;
    problem_make(&p, PBSA_DTYPE_F32, 2, 1, 160, 160, 64, 1, gen_plain, 3);
    problem_upload(&p);
    pbsa_params params = pbs_params(&p, 0.9f, 0.0f);
    const int nkb = 5, rows = 2 * 5;
    cl_int counts[10], blocks[10 * 5], pi[2 * 160];
    /* Empty lists everywhere: every row is exactly zero. */
    memset(counts, 0, sizeof counts);
    for (int i = 0; i < rows * nkb; i++)
        blocks[i] = i % nkb;
    cl_mem counts_mem = int_buffer(rows, counts), blocks_mem = int_buffer(rows * nkb, blocks);
    pbsa_block_list list = {counts_mem, blocks_mem, 0, 0};
    host_tensor o;
    output_make(&o, &p);
    assert_int_equal(pbsa_sparse_attention(fixture.ctx, fixture.queue, &p.q.desc, &p.k.desc,
                                           &p.v.desc, &o.desc, &params, NULL, 0, &list, NULL),
                     PBSA_SUCCESS);
    assert_int_equal(tensor_download(&o, fixture.queue), CL_SUCCESS);
    assert_int_equal(tensor_guard_damage(&o), 0);
    for (int h = 0; h < 2; h++)
        for (int s = 0; s < 160; s++)
            for (int d = 0; d < 64; d++)
                if (tensor_get(&o, 0, h, s, d) != 0.0)
                    fail_msg("empty lists: element (%d, %d, %d) is %g, not 0", h, s, d,
                             tensor_get(&o, 0, h, s, d));
    printf("  empty block lists: every row is 0\n");
    clReleaseMemObject(counts_mem);
    clReleaseMemObject(blocks_mem);
    tensor_free(&o);

    /* Counts beyond nkb or negative, block indices out of range, a permutation with keys out of
     * range: the caller's error, which the kernel must survive without touching anything outside
     * the output, writing finite values (or zeros) everywhere. */
    const cl_int wild[8] = {-1, 5, 1000, INT32_MIN, INT32_MAX, 4, -7, 2};
    for (int i = 0; i < rows; i++)
        counts[i] = i % 3 == 0 ? 1000 : i % 3 == 1 ? -5 : 3;
    for (int i = 0; i < rows * nkb; i++)
        blocks[i] = wild[i % 8];
    for (int i = 0; i < 2 * 160; i++)
        pi[i] = wild[(i * 3) % 8] == 2 ? i % 160 : wild[(i * 3) % 8];
    counts_mem = int_buffer(rows, counts);
    blocks_mem = int_buffer(rows * nkb, blocks);
    cl_mem pi_mem = int_buffer(2 * 160, pi);
    list = (pbsa_block_list){counts_mem, blocks_mem, 0, 0};
    for (int with_pi = 0; with_pi < 2; with_pi++) {
        output_make(&o, &p);
        assert_int_equal(pbsa_sparse_attention(fixture.ctx, fixture.queue, &p.q.desc, &p.k.desc,
                                               &p.v.desc, &o.desc, &params,
                                               with_pi ? pi_mem : NULL, 0, &list, NULL),
                         PBSA_SUCCESS);
        assert_int_equal(tensor_download(&o, fixture.queue), CL_SUCCESS);
        assert_int_equal(tensor_guard_damage(&o), 0);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 160; s++)
                for (int d = 0; d < 64; d++)
                    if (!isfinite(tensor_get(&o, 0, h, s, d)))
                        fail_msg("malformed lists%s: element (%d, %d, %d) is not finite",
                                 with_pi ? " and pi" : "", h, s, d);
        tensor_free(&o);
    }
    printf("  malformed block lists and permutation: no damage, finite output\n");
    clReleaseMemObject(counts_mem);
    clReleaseMemObject(blocks_mem);
    clReleaseMemObject(pi_mem);
    problem_free(&p);
}

/* ---- NaN --------------------------------------------------------------------------------------- */

static bool row_all_nan(const host_tensor *o, int h, int s)
{
    for (int d = 0; d < o->desc.head_dim; d++)
        if (!isnan(tensor_get(o, 0, h, s, d)))
            return false;
    return true;
}

static bool row_finite(const host_tensor *o, int h, int s)
{
    for (int d = 0; d < o->desc.head_dim; d++)
        if (!isfinite(tensor_get(o, 0, h, s, d)))
            return false;
    return true;
}

static bool row_equal(const host_tensor *a, const host_tensor *b, int h, int s)
{
    for (int d = 0; d < a->desc.head_dim; d++)
        if (tensor_get(a, 0, h, s, d) != tensor_get(b, 0, h, s, d))
            return false;
    return true;
}

/* Runs dense or PBS (threshold 0.9) on p with element (which, head 0, row, all dims) set to NaN,
 * into o; clean receives the run without the NaN. */
static void run_with_nan(problem *p, int which, int row, bool pbs, host_tensor *o,
                         host_tensor *clean)
{
    for (int pass = 0; pass < 2; pass++) {
        host_tensor *out = pass == 0 ? clean : o;
        if (pass == 1) {
            host_tensor *t = which == 0 ? &p->q : which == 1 ? &p->k : &p->v;
            for (int d = 0; d < p->head_dim; d++)
                tensor_set(t, 0, 0, row, d, NAN);
            clReleaseMemObject(t->desc.buffer);
            assert_int_equal(tensor_upload(t, fixture.cl_ctx), CL_SUCCESS);
        }
        output_make(out, p);
        if (pbs) {
            pbsa_params params = pbs_params(p, 0.9f, 0.0f);
            run_pbs(p, out, &params);
        } else {
            run_dense(p, out, 0.0f);
        }
    }
}

static void test_nan_inputs(void **state)
{
    (void)state;
    const char *inputs[3] = {"Q", "K", "V"};
    enum { S = 256, J = 150 };
    for (int pbs = 0; pbs < 2; pbs++) {
        for (int which = 0; which < 3; which++) {
            problem p;
            problem_make(&p, PBSA_DTYPE_F32, 2, 1, S, S, 64, 1, gen_plain, 11);
            problem_upload(&p);
            host_tensor o, clean;
            run_with_nan(&p, which, J, pbs, &o, &clean);
            const char *op = pbs ? "PBS" : "dense";
            long nan_rows = 0, spoiled_unseen = 0;
            for (int h = 0; h < 2; h++) {
                for (int s = 0; s < S; s++) {
                    /* With one KV head, both query heads read key J; Q's NaN is in head 0. */
                    bool sees = which == 0 ? h == 0 && s == J : s >= J;
                    bool nan = row_all_nan(&o, h, s);
                    nan_rows += nan;
                    if (!row_finite(&o, h, s) && !nan)
                        fail_msg("%s, NaN in %s row %d: output row (%d, %d) is partly NaN", op,
                                 inputs[which], J, h, s);
                    if (which == 0) {
                        /* Q: its own row only. Dense leaves every other row as it was; PBS may
                         * choose other blocks, but every other row stays finite. */
                        if (sees != nan)
                            fail_msg("%s, NaN in Q row %d: output row (%d, %d) %s NaN", op, J, h,
                                     s, nan ? "is" : "is not");
                        if (!pbs && !sees && !row_equal(&o, &clean, h, s))
                            fail_msg("dense, NaN in Q: row (%d, %d) changed", h, s);
                    } else if (!pbs && which == 1) {
                        /* Dense, K: exactly the rows that see key J, the others unchanged. */
                        if (sees != nan || (!sees && !row_equal(&o, &clean, h, s)))
                            fail_msg("dense, NaN in K row %d: output row (%d, %d) %s", J, h, s,
                                     nan ? "is NaN" : "is wrong");
                    } else {
                        /* Rows that cannot see key J are untouched by a NaN in K; a NaN in V can
                         * reach the rows of J's query tile (at most 128 rows) through the zero
                         * weight of the masked key. */
                        bool unseen = s < J;
                        bool far = s < J - 128;
                        if (unseen && nan)
                            spoiled_unseen++;
                        if (unseen && nan && (which == 1 || far))
                            fail_msg("%s, NaN in %s row %d: row (%d, %d), which cannot see it, "
                                     "is NaN",
                                     op, inputs[which], J, h, s);
                        if (!pbs && sees && !nan)
                            fail_msg("dense, NaN in V row %d: row (%d, %d) sees it but is not NaN",
                                     J, h, s);
                    }
                }
            }
            printf("  %-5s NaN in %s row %d: %ld NaN rows of %d (%ld that cannot see the key)\n",
                   op, inputs[which], J, nan_rows, 2 * S, spoiled_unseen);
            tensor_free(&o);
            tensor_free(&clean);
            problem_free(&p);
        }
    }
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_logits),
        cmocka_unit_test(test_huge_logits),
        cmocka_unit_test(test_f16_edges),
        cmocka_unit_test(test_empty_and_malformed_lists),
        cmocka_unit_test(test_nan_inputs),
        cmocka_unit_test(test_threshold_one_underflow),
    };
    int failed = cmocka_run_group_tests_name("numerics", tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
