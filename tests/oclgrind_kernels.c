/* Every kernel of the library once, at tiny shapes, for Oclgrind (.ci/run runs this program under
 * `oclgrind --data-races --check-api --uninitialized` and fails on any diagnostic): dense
 * attention of each dtype, causal and not; the PBS pipeline (scores, their statistics, the
 * segment sort, block means, selection, sparse attention through the permutation) of each dtype;
 * its materialised-K/V and CLBlast-scores variants; sparse attention without a permutation; the
 * short-sequence fallback; variable-length calls with a paged cache, dense and PBS; and mixed
 * dtypes at head dim 80, dense and PBS. Every output, and the log-sum-exp every call also writes,
 * is checked against the float64 reference.
 * The tile configurations are those the library picks for Oclgrind's 32 KiB of local memory.
 * Exit status 0 when every call succeeds and matches. */
#include "device.h"
#include "host_tensor.h"
#include "lse_check.h"
#include "varlen_cases.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HQ = 2, HKV = 1, D = 64, BLOCK = 16, SEGMENT = 32, GUARD = 4 };

/* Every tensor in dtype t. */
static tensor_dtypes same(pbsa_dtype t) { return (tensor_dtypes){t, t, t}; }

static support_device fixture;
static int failures;

typedef struct problem {
    tensor_dtypes dtypes;
    int head_dim, q_len, kv_len, causal;
    host_tensor q, k, v, o;
    lse_buffer lse;
    double *ref, *ref_lse;
} problem;

static void problem_make(problem *p, tensor_dtypes dtypes, int head_dim, int q_len, int kv_len,
                         int causal)
{
    *p = (problem){.dtypes = dtypes, .head_dim = head_dim, .q_len = q_len, .kv_len = kv_len,
                   .causal = causal};
    host_tensor *t[4] = {&p->q, &p->k, &p->v, &p->o};
    const pbsa_dtype dtype[4] = {dtypes.q, dtypes.kv, dtypes.kv, dtypes.o};
    uint64_t seed = 2024;
    for (int i = 0; i < 4; i++) {
        const int heads = i == 1 || i == 2 ? HKV : HQ, seq = i == 1 || i == 2 ? kv_len : q_len;
        tensor_init(t[i], dtype[i], 1, heads, seq, head_dim, TENSOR_BHSD, GUARD);
        if (!t[i]->bytes) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        if (i < 3)
            tensor_fill_random(t[i], &seed, 1.0f);
        if (tensor_upload(t[i], fixture.cl_ctx) != CL_SUCCESS) {
            fprintf(stderr, "cannot upload the inputs\n");
            exit(1);
        }
    }
    p->ref = malloc((size_t)HQ * q_len * head_dim * sizeof *p->ref);
    p->ref_lse = malloc((size_t)HQ * q_len * sizeof *p->ref_lse);
    if (lse_buffer_make(&p->lse, fixture.cl_ctx, (size_t)HQ * q_len) != CL_SUCCESS) {
        fprintf(stderr, "cannot create the log-sum-exp buffer\n");
        exit(1);
    }
    pbsa_host_tensor q = tensor_host_view(&p->q), k = tensor_host_view(&p->k),
                     v = tensor_host_view(&p->v);
    pbsa_dense_params params = {.causal = causal};
    if (!p->ref || !p->ref_lse ||
        pbsa_ref_dense_attention_lse(&q, &k, &v, &params, p->ref, p->ref_lse) != PBSA_SUCCESS) {
        fprintf(stderr, "reference failed\n");
        exit(1);
    }
}

static void problem_free(problem *p)
{
    tensor_free(&p->q);
    tensor_free(&p->k);
    tensor_free(&p->v);
    tensor_free(&p->o);
    lse_buffer_free(&p->lse);
    free(p->ref);
    free(p->ref_lse);
}

/* Reads o and the log-sum-exp back and compares them with dense attention, which PBS keeping
 * every block equals. */
static void check(const char *what, problem *p, int status)
{
    double rel = -1.0;
    long nonfinite = 0;
    lse_error lse = {.max_abs = INFINITY};
    if (status == PBSA_SUCCESS && tensor_download(&p->o, fixture.queue) == CL_SUCCESS &&
        lse_buffer_compare(&p->lse, fixture.queue, p->ref_lse, &lse) == CL_SUCCESS) {
        const tensor_error e = tensor_compare(&p->o, p->ref);
        rel = e.rel_l2;
        nonfinite = e.nonfinite;
    }
    const bool f32 = p->dtypes.kv == PBSA_DTYPE_F32 && p->dtypes.o == PBSA_DTYPE_F32;
    const double limit = f32 ? 1e-5 : 1e-2;
    const bool ok = status == PBSA_SUCCESS && !nonfinite && rel >= 0.0 && rel <= limit &&
                    tensor_guard_damage(&p->o) == 0 &&
                    lse_error_ok(&lse, lse_tolerance(&p->dtypes));
    printf("%-52s %s (rel_l2 %.1e, lse %.1e) %s\n", what, ok ? "ok" : "FAILED", rel, lse.max_abs,
           status ? pbsa_context_last_error(fixture.ctx) : "");
    failures += !ok;
}

static pbsa_params pbs_params(const problem *p, int causal)
{
    pbsa_params params = pbsa_params_default();
    params.lse = p->lse.mem;
    params.lse_offset = LSE_GUARD;
    params.block_size = BLOCK;
    params.segment_size = SEGMENT;
    params.threshold = 1.0f; /* every block: the result is dense attention */
    params.causal = causal;
    return params;
}

static void run_dense(tensor_dtypes dtypes, int head_dim, const char *name)
{
    for (int causal = 0; causal < 2; causal++) {
        problem p;
        problem_make(&p, dtypes, head_dim, 24, 40, causal);
        pbsa_dense_params params = {.causal = causal, .lse = p.lse.mem, .lse_offset = LSE_GUARD};
        char what[96];
        snprintf(what, sizeof what, "%s dense%s", name, causal ? " causal" : "");
        check(what, &p, pbsa_dense_attention(fixture.ctx, fixture.queue, &p.q.desc, &p.k.desc,
                                             &p.v.desc, &p.o.desc, &params, NULL));
        problem_free(&p);
    }
}

/* The whole pipeline; kv_len <= SEGMENT takes the fallback. */
static void run_pbs(tensor_dtypes dtypes, int head_dim, const char *label, int kv_len)
{
    problem p;
    problem_make(&p, dtypes, head_dim, kv_len, kv_len, 1);
    pbsa_params params = pbs_params(&p, 1);
    check(label, &p, pbsa_attention(fixture.ctx, fixture.queue, &p.q.desc, &p.k.desc, &p.v.desc,
                                    &p.o.desc, &params, NULL, NULL));
    problem_free(&p);
}

/* Sparse attention without a permutation, every block listed. */
static void run_sparse_identity(void)
{
    problem p;
    problem_make(&p, same(PBSA_DTYPE_F32), D, 48, 48, 0);
    enum { NB = 48 / BLOCK };
    cl_int counts[HQ * NB], blocks[HQ * NB * NB];
    for (int r = 0; r < HQ * NB; r++) {
        counts[r] = NB;
        for (int j = 0; j < NB; j++)
            blocks[r * NB + j] = j;
    }
    cl_int err_counts, err_blocks;
    cl_mem counts_mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                       sizeof counts, counts, &err_counts);
    cl_mem blocks_mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                       sizeof blocks, blocks, &err_blocks);
    pbsa_block_list list = {counts_mem, blocks_mem, 0, 0};
    pbsa_params params = pbs_params(&p, 0);
    int status = err_counts || err_blocks
                     ? PBSA_ERROR_OUT_OF_HOST_MEMORY
                     : pbsa_sparse_attention(fixture.ctx, fixture.queue, &p.q.desc, &p.k.desc,
                                             &p.v.desc, &p.o.desc, &params, NULL, 0, &list, NULL);
    check("f32 sparse attention, no permutation", &p, status);
    clReleaseMemObject(counts_mem);
    clReleaseMemObject(blocks_mem);
    problem_free(&p);
}

/* Three sequences (one at the fallback, one shorter than a block) in pages of 16 keys. */
static void run_varlen_paged(int pbs)
{
    const varlen_case c = {pbs ? "f32 PBS, varlen, paged" : "f32 dense, varlen, paged", pbs,
                           PBSA_DTYPE_F32, HQ, HKV, D, 3, {72, 10, 16}, {72, 10, 32}, 16, 1,
                           BLOCK, SEGMENT, 0.9f, PBSA_GQA_PER_QUERY_HEAD};
    pbs_report r = {.log = stdout};
    if (varlen_check(fixture.ctx, fixture.queue, &c, 2024, &r)) {
        fprintf(stderr, "%s: %s\n", c.name, r.message);
        failures++;
    }
}

int main(void)
{
    int status = support_device_open_test(&fixture);
    if (status != 0)
        return status;
    const pbsa_dtype dtypes[3] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
    const char *names[3] = {"f32", "f16", "bf16"};
    char label[96];
    for (int t = 0; t < 3; t++) {
        run_dense(same(dtypes[t]), D, names[t]);
        snprintf(label, sizeof label, "%s PBS", names[t]);
        run_pbs(same(dtypes[t]), D, label, 72);
    }
    const tensor_dtypes llama = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_F32};
    const tensor_dtypes f32_kv = {PBSA_DTYPE_BF16, PBSA_DTYPE_F32, PBSA_DTYPE_F16};
    run_dense(llama, 80, "f32 q and o, f16 k and v, D 80");
    run_pbs(f32_kv, 80, "bf16 q, f32 k and v, f16 o, D 80, PBS", 72);
    run_pbs(same(PBSA_DTYPE_F32), D, "f32 PBS, short-sequence fallback", SEGMENT);
    run_sparse_identity();
    run_varlen_paged(0);
    run_varlen_paged(1);
    setenv("PBSA_KV_METHOD", "materialised", 1);
    run_pbs(same(PBSA_DTYPE_F32), D, "f32 PBS, materialised K and V", 72);
    unsetenv("PBSA_KV_METHOD");
    setenv("PBSA_SCORE_METHOD", "clblast", 1);
    run_pbs(same(PBSA_DTYPE_F32), D, "f32 PBS, CLBlast scores", 72);
    unsetenv("PBSA_SCORE_METHOD");
    support_device_close(&fixture);
    return failures ? 1 : 0;
}
