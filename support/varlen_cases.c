/* Variable-length and paged conformance cases (see varlen_cases.h). */
#include "varlen_cases.h"
#include "conformance.h"
#include "pbs_checks.h"
#include "splitmix.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define PER PBSA_GQA_PER_QUERY_HEAD
#define SHARED PBSA_GQA_SHARED_PER_KV_GROUP

/* 1 to 8 sequences of unequal lengths; chunked prefill (fewer queries than keys); a sequence
 * shorter than one block, one exactly at the short-sequence fallback (Skv = segment) and one
 * below it; pages of 16, 64 and 256 keys; every dtype; GQA in both modes; shapes the tensor-core
 * tiles take. Tiny, for CI. */
const varlen_case varlen_cases[] = {
    {"dense_f32_d64_3seq", 0, F32, 4, 2, 64, 3, {5, 1, 37}, {5, 20, 100}, 0, 1, 0, 0, 0, PER},
    {"dense_f16_d64_paged16_4seq", 0, F16, 2, 1, 64, 4, {16, 3, 50, 1}, {40, 3, 50, 70}, 16, 1,
     0, 0, 0, PER},
    {"dense_bf16_d128_paged64_noncausal", 0, BF16, 2, 2, 128, 2, {10, 70}, {130, 70}, 64, 0, 0,
     0, 0, PER},
    {"dense_f32_d64_paged256_1seq", 0, F32, 2, 1, 64, 1, {33}, {300}, 256, 1, 0, 0, 0, PER},
    {"pbs_f32_8seq", 1, F32, 2, 1, 64, 8, {300, 10, 64, 168, 130, 47, 256, 90},
     {300, 10, 64, 200, 130, 47, 256, 90}, 0, 1, 16, 64, 0.9f, PER},
    {"pbs_f16_shared_3seq", 1, F16, 4, 2, 64, 3, {150, 40, 196}, {150, 40, 260}, 0, 1, 16, 64,
     0.8f, SHARED},
    {"pbs_f32_1seq_noncausal", 1, F32, 2, 2, 64, 1, {200}, {200}, 0, 0, 32, 64, 0.9f, PER},
    {"pbs_f32_paged16_shuffled", 1, F32, 2, 1, 64, 4, {100, 12, 64, 180}, {100, 12, 64, 260}, 16,
     1, 16, 64, 0.9f, PER},
    {"pbs_bf16_paged64_shuffled", 1, BF16, 2, 2, 128, 3, {140, 33, 250}, {140, 33, 250}, 64, 1,
     16, 64, 0.9f, SHARED},
    {"pbs_f32_paged256_shuffled", 1, F32, 2, 1, 64, 2, {300, 70}, {300, 70}, 256, 1, 32, 64,
     0.9f, PER},
    /* Blocks of 64 in bf16 at D 128: what the tensor-core tiles take, where they run. */
    {"pbs_bf16_d128_block64_paged64", 1, BF16, 2, 1, 128, 3, {300, 40, 136}, {300, 40, 200}, 64,
     1, 64, 128, 0.9f, PER},
};
const int varlen_case_count = (int)(sizeof varlen_cases / sizeof varlen_cases[0]);

/* The first row of the first sequence in packed tensors: rows before it are never touched. */
enum { FIRST_ROW = 2 };

static cl_context context_of(cl_command_queue queue)
{
    cl_context cl_ctx = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL);
    return cl_ctx;
}

static cl_mem int_buffer(cl_context cl_ctx, const int32_t *values, size_t count, pbs_report *r)
{
    cl_int err;
    cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                count * sizeof(cl_int), (void *)values, &err);
    if (err != CL_SUCCESS)
        pbs_fail(r, "cannot create an int buffer (%d)", err);
    return err == CL_SUCCESS ? mem : NULL;
}

static int upload(host_tensor *t, cl_context cl_ctx, pbs_report *r)
{
    int err = t->bytes ? tensor_upload(t, cl_ctx) : CL_OUT_OF_HOST_MEMORY;
    if (err != CL_SUCCESS)
        pbs_fail(r, "cannot create a tensor (%d)", err);
    return err != CL_SUCCESS;
}

/* Pages are dealt out to the sequences in a shuffled order of the pool. */
static int make_pages(varlen_inputs *in, uint64_t *rng, int *num_pages, pbs_report *r)
{
    const varlen_case *c = in->c;
    int needed = 0, max_pages = 1;
    for (int b = 0; b < c->count; b++) {
        int pages = (c->kv_lens[b] + c->page_size - 1) / c->page_size;
        needed += pages;
        max_pages = pages + 1 > max_pages ? pages + 1 : max_pages;
    }
    *num_pages = needed + 2;
    int *order = malloc((size_t)*num_pages * sizeof *order);
    in->page_table = malloc((size_t)(c->count * max_pages) * sizeof *in->page_table);
    if (!order || !in->page_table) {
        free(order);
        pbs_fail(r, "%s: out of host memory", c->name);
        return 1;
    }
    for (int i = 0; i < *num_pages; i++)
        order[i] = i;
    for (int i = *num_pages - 1; i > 0; i--) {
        int j = (int)(splitmix64(rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    int next = 0;
    for (int b = 0; b < c->count; b++) {
        int pages = (c->kv_lens[b] + c->page_size - 1) / c->page_size;
        for (int j = 0; j < max_pages; j++)
            in->page_table[b * max_pages + j] = j < pages ? order[next++] : -1;
    }
    free(order);
    in->paged.max_pages = max_pages;
    in->paged.page_table = in->page_table;
    return 0;
}

int varlen_inputs_make(varlen_inputs *in, const varlen_case *c, unsigned long long seed,
                       cl_context cl_ctx, pbs_report *r)
{
    memset(in, 0, sizeof *in);
    in->c = c;
    uint64_t rng = pbs_case_seed(seed, c->name);
    const int kv_first = c->page_size ? 0 : FIRST_ROW;
    in->q_offsets[0] = FIRST_ROW;
    in->kv_offsets[0] = kv_first;
    for (int b = 0; b < c->count; b++) {
        in->q_offsets[b + 1] = in->q_offsets[b] + c->q_lens[b];
        in->kv_offsets[b + 1] = in->kv_offsets[b] + c->kv_lens[b];
    }
    const int q_rows = in->q_offsets[c->count] + 1;
    tensor_init(&in->q, c->dtype, 1, c->q_heads, q_rows, c->head_dim, TENSOR_BSHD, PBS_GUARD);
    tensor_init(&in->o, c->dtype, 1, c->q_heads, q_rows, c->head_dim, TENSOR_BSHD, PBS_GUARD);
    int pool = 1, rows = in->kv_offsets[c->count] + 1;
    if (c->page_size) {
        if (make_pages(in, &rng, &pool, r))
            return 1;
        rows = c->page_size;
    }
    tensor_init(&in->k, c->dtype, pool, c->kv_heads, rows, c->head_dim, TENSOR_BSHD, PBS_GUARD);
    tensor_init(&in->v, c->dtype, pool, c->kv_heads, rows, c->head_dim, TENSOR_BSHD, PBS_GUARD);
    if (!in->q.bytes || !in->o.bytes || !in->k.bytes || !in->v.bytes) {
        pbs_fail(r, "%s: out of host memory", c->name);
        return 1;
    }
    /* Larger queries than keys give sharper attention rows; o stays poison. */
    tensor_fill_random(&in->q, &rng, 2.0f);
    tensor_fill_random(&in->k, &rng, 1.0f);
    tensor_fill_random(&in->v, &rng, 1.0f);
    if (upload(&in->q, cl_ctx, r) || upload(&in->k, cl_ctx, r) || upload(&in->v, cl_ctx, r) ||
        upload(&in->o, cl_ctx, r))
        return 1;
    in->varlen.batch = c->count;
    in->varlen.q_offsets = in->q_offsets;
    in->varlen.kv_offsets = in->kv_offsets;
    const size_t entries = (size_t)c->count + 1;
    if (!(in->varlen.q_offsets_buffer = int_buffer(cl_ctx, in->q_offsets, entries, r)) ||
        !(in->varlen.kv_offsets_buffer = int_buffer(cl_ctx, in->kv_offsets, entries, r)))
        return 1;
    if (c->page_size &&
        !(in->paged.page_table_buffer =
              int_buffer(cl_ctx, in->page_table, (size_t)(c->count * in->paged.max_pages), r)))
        return 1;
    const pbsa_paged_kv *paged = c->page_size ? &in->paged : NULL;
    in->params = pbsa_params_default();
    in->params.block_size = c->block ? c->block : 128;
    in->params.segment_size = c->segment ? c->segment : 256;
    in->params.threshold = c->threshold > 0.0f ? c->threshold : 0.9f;
    in->params.causal = c->causal;
    in->params.gqa_mode = c->mode;
    in->params.varlen = &in->varlen;
    in->params.paged_kv = paged;
    in->dense = (pbsa_dense_params){.causal = c->causal, .varlen = &in->varlen, .paged_kv = paged};
    return 0;
}

void varlen_inputs_free(varlen_inputs *in)
{
    tensor_free(&in->q);
    tensor_free(&in->k);
    tensor_free(&in->v);
    tensor_free(&in->o);
    cl_mem buffers[3] = {in->varlen.q_offsets_buffer, in->varlen.kv_offsets_buffer,
                         in->paged.page_table_buffer};
    for (int i = 0; i < 3; i++)
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
    free(in->page_table);
    memset(in, 0, sizeof *in);
}

/* Key j of sequence b, head h, dim d of k or v (packed or paged). */
static double key_element(const varlen_inputs *in, const host_tensor *t, int b, int h, int j, int d)
{
    const int page_size = in->c->page_size;
    if (!page_size)
        return tensor_get(t, 0, h, in->kv_offsets[b] + j, d);
    const int page = in->page_table[b * in->paged.max_pages + j / page_size];
    return tensor_get(t, page, h, j % page_size, d);
}

int varlen_sequence_alone(const varlen_inputs *in, int b, host_tensor *q, host_tensor *k,
                          host_tensor *v, pbs_report *r)
{
    const varlen_case *c = in->c;
    const int q_len = c->q_lens[b], kv_len = c->kv_lens[b];
    tensor_init(q, c->dtype, 1, c->q_heads, q_len, c->head_dim, TENSOR_BHSD, PBS_GUARD);
    tensor_init(k, c->dtype, 1, c->kv_heads, kv_len, c->head_dim, TENSOR_BHSD, PBS_GUARD);
    tensor_init(v, c->dtype, 1, c->kv_heads, kv_len, c->head_dim, TENSOR_BHSD, PBS_GUARD);
    if (!q->bytes || !k->bytes || !v->bytes) {
        pbs_fail(r, "%s: out of host memory", c->name);
        return 1;
    }
    for (int h = 0; h < c->q_heads; h++)
        for (int s = 0; s < q_len; s++)
            for (int d = 0; d < c->head_dim; d++)
                tensor_set(q, 0, h, s, d, (float)tensor_get(&in->q, 0, h, in->q_offsets[b] + s, d));
    for (int h = 0; h < c->kv_heads; h++)
        for (int j = 0; j < kv_len; j++)
            for (int d = 0; d < c->head_dim; d++) {
                tensor_set(k, 0, h, j, d, (float)key_element(in, &in->k, b, h, j, d));
                tensor_set(v, 0, h, j, d, (float)key_element(in, &in->v, b, h, j, d));
            }
    return 0;
}

/* The PBS workspace of a call, with its permutation and block lists read back after it ran. */
typedef struct pbs_lists {
    cl_int *pi, *counts, *blocks;
} pbs_lists;

static int read_part(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                     const pbsa_tensor *k, const pbsa_params *params, cl_mem workspace,
                     pbsa_workspace_part part, cl_int **out, pbs_report *r)
{
    size_t bytes = 0;
    cl_int probe;
    /* A capacity of 0 fails, and tells the part's size. */
    pbsa_workspace_read(ctx, queue, q, k, params, workspace, part, &probe, 0, &bytes);
    *out = malloc(bytes ? bytes : 1);
    int status = *out ? pbsa_workspace_read(ctx, queue, q, k, params, workspace, part, *out,
                                            bytes, NULL)
                      : PBSA_ERROR_OUT_OF_HOST_MEMORY;
    if (status != PBSA_SUCCESS)
        pbs_fail(r, "pbsa_workspace_read: status %d: %s", status, pbsa_context_last_error(ctx));
    return status != PBSA_SUCCESS;
}

/* Runs pbsa_attention() with a workspace of its own and reads its lists back. */
static int run_pbs(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                   const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                   const pbsa_params *params, pbs_lists *lists, pbs_report *r)
{
    size_t bytes = 0;
    int status = pbsa_workspace_size(ctx, q, k, params, &bytes);
    cl_mem workspace = NULL;
    if (status == PBSA_SUCCESS)
        workspace = clCreateBuffer(context_of(queue), CL_MEM_READ_WRITE, bytes, NULL, &status);
    if (status == PBSA_SUCCESS)
        status = pbsa_attention(ctx, queue, q, k, v, o, params, workspace, NULL);
    if (status != PBSA_SUCCESS) {
        pbs_fail(r, "pbsa_attention: status %d: %s", status, pbsa_context_last_error(ctx));
    } else {
        clFinish(queue);
        if (!read_part(ctx, queue, q, k, params, workspace, PBSA_PART_PERMUTATION, &lists->pi,
                       r) &&
            !read_part(ctx, queue, q, k, params, workspace, PBSA_PART_BLOCK_COUNTS,
                       &lists->counts, r))
            read_part(ctx, queue, q, k, params, workspace, PBSA_PART_BLOCKS, &lists->blocks, r);
    }
    if (workspace)
        clReleaseMemObject(workspace);
    return r->failed;
}

static void lists_free(pbs_lists *l)
{
    free(l->pi);
    free(l->counts);
    free(l->blocks);
}

/* Sequence b's lists in the varlen call against those of b alone (NULL: the fallback, the
 * identity and every block), and its block mask for the reference. */
static int compare_lists(const varlen_inputs *in, int b, const pbs_lists *all,
                         const pbs_lists *alone, uint8_t *mask, pbs_report *r)
{
    const varlen_case *c = in->c;
    const int block = c->block, perm_heads = c->mode == PER ? c->q_heads : c->kv_heads;
    int max_q = 0, max_kv = 0;
    for (int s = 0; s < c->count; s++) {
        max_q = c->q_lens[s] > max_q ? c->q_lens[s] : max_q;
        max_kv = c->kv_lens[s] > max_kv ? c->kv_lens[s] : max_kv;
    }
    const int nqb = (max_q + block - 1) / block, nkb = (max_kv + block - 1) / block;
    const int kv_len = c->kv_lens[b], own_qb = (c->q_lens[b] + block - 1) / block;
    const int own_kb = (kv_len + block - 1) / block;
    for (int h = 0; h < perm_heads; h++)
        for (int p = 0; p < kv_len; p++) {
            const cl_int got = all->pi[((size_t)b * perm_heads + h) * max_kv + p];
            const cl_int want = alone ? alone->pi[(size_t)h * kv_len + p] : p;
            if (got != want) {
                pbs_fail(r, "%s: sequence %d head %d: pi[%d] = %d, alone %d", c->name, b, h, p,
                         got, want);
                return 1;
            }
        }
    memset(mask, 0, (size_t)(c->q_heads * own_qb * own_kb));
    for (int h = 0; h < c->q_heads; h++)
        for (int i = 0; i < own_qb; i++) {
            const size_t row = ((size_t)b * c->q_heads + h) * nqb + i;
            const size_t own_row = (size_t)h * own_qb + i;
            const cl_int count = all->counts[row];
            const cl_int want = alone ? alone->counts[own_row] : own_kb;
            if (count != want) {
                pbs_fail(r, "%s: sequence %d head %d query block %d: %d blocks, alone %d",
                         c->name, b, h, i, count, want);
                return 1;
            }
            for (int t = 0; t < count; t++) {
                const cl_int got = all->blocks[row * nkb + t];
                const cl_int j = alone ? alone->blocks[own_row * own_kb + t] : t;
                if (got != j) {
                    pbs_fail(r, "%s: sequence %d head %d query block %d: block %d is %d, alone %d",
                             c->name, b, h, i, t, got, j);
                    return 1;
                }
                mask[own_row * own_kb + j] = 1;
            }
        }
    return 0;
}

/* The reference output rows of sequence b of a PBS case, [Hq, Sq_b, D], and their log-sum-exp
 * [Hq, Sq_b]: over the lists the device chose (checked equal to those of b alone), or dense
 * attention at the fallback. */
static int pbs_sequence(pbsa_context *ctx, cl_command_queue queue, const varlen_inputs *in, int b,
                        const pbs_lists *all, double *seq_ref, double *seq_lse, pbs_report *r)
{
    const varlen_case *c = in->c;
    host_tensor q = {0}, k = {0}, v = {0}, o = {0};
    pbs_lists alone = {0};
    const int q_len = c->q_lens[b], kv_len = c->kv_lens[b];
    const int own_qb = (q_len + c->block - 1) / c->block;
    const int own_kb = (kv_len + c->block - 1) / c->block;
    uint8_t *mask = malloc((size_t)(c->q_heads * own_qb * own_kb) + 1);
    pbsa_params params = in->params;
    params.varlen = NULL;
    params.paged_kv = NULL;
    const bool fallback = kv_len <= c->segment;
    if (!mask)
        pbs_fail(r, "%s: out of host memory", c->name);
    if (mask && !varlen_sequence_alone(in, b, &q, &k, &v, r) &&
        !upload(&q, context_of(queue), r) && !upload(&k, context_of(queue), r) &&
        !upload(&v, context_of(queue), r)) {
        tensor_init(&o, c->dtype, 1, c->q_heads, q_len, c->head_dim, TENSOR_BHSD, PBS_GUARD);
        pbsa_host_tensor hq = tensor_host_view(&q), hk = tensor_host_view(&k),
                         hv = tensor_host_view(&v);
        if ((fallback ||
             (!upload(&o, context_of(queue), r) &&
              !run_pbs(ctx, queue, &q.desc, &k.desc, &v.desc, &o.desc, &params, &alone, r))) &&
            !compare_lists(in, b, all, fallback ? NULL : &alone, mask, r)) {
            pbsa_dense_params dense = {.causal = c->causal};
            int status = fallback
                             ? pbsa_ref_dense_attention_lse(&hq, &hk, &hv, &dense, seq_ref, seq_lse)
                             : pbsa_ref_pbs_sparse_attention_lse(&hq, &hk, &hv, alone.pi, mask,
                                                                 &params, seq_ref, seq_lse);
            if (status != PBSA_SUCCESS)
                pbs_fail(r, "%s: the reference failed (%d)", c->name, status);
        }
    }
    tensor_free(&q);
    tensor_free(&k);
    tensor_free(&v);
    tensor_free(&o);
    lists_free(&alone);
    free(mask);
    return r->failed;
}

static cl_mem device_ints(cl_context cl_ctx, size_t count, pbs_report *r)
{
    cl_int err;
    cl_mem mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, count * sizeof(cl_int), NULL, &err);
    if (err != CL_SUCCESS)
        pbs_fail(r, "cannot create an int buffer (%d)", err);
    return err == CL_SUCCESS ? mem : NULL;
}

static int read_ints(cl_command_queue queue, cl_mem mem, size_t count, cl_int **out,
                     pbs_report *r)
{
    *out = malloc(count * sizeof **out);
    if (!*out || clEnqueueReadBuffer(queue, mem, CL_TRUE, 0, count * sizeof **out, *out, 0, NULL,
                                     NULL) != CL_SUCCESS)
        pbs_fail(r, "cannot read an int buffer back");
    return r->failed;
}

/* The stage calls of a varlen case (pbsa_permutation(), pbsa_block_selection() into buffers of
 * the caller, pbsa_sparse_attention() over them) give the pipeline's permutation and lists, on
 * every sequence's own entries, and bit for bit its output. */
static int check_stages(pbsa_context *ctx, cl_command_queue queue, varlen_inputs *in,
                        const pbs_lists *all, pbs_report *r)
{
    const varlen_case *c = in->c;
    const int perm_heads = c->mode == PER ? c->q_heads : c->kv_heads;
    int max_q = 0, max_kv = 0;
    for (int b = 0; b < c->count; b++) {
        max_q = c->q_lens[b] > max_q ? c->q_lens[b] : max_q;
        max_kv = c->kv_lens[b] > max_kv ? c->kv_lens[b] : max_kv;
    }
    const size_t nqb = (size_t)(max_q + c->block - 1) / c->block;
    const size_t nkb = (size_t)(max_kv + c->block - 1) / c->block;
    const size_t pi_count = (size_t)c->count * perm_heads * max_kv;
    const size_t rows = (size_t)c->count * c->q_heads * nqb;
    cl_context cl_ctx = context_of(queue);
    host_tensor o = {0};
    pbs_lists stages = {0};
    cl_mem pi = device_ints(cl_ctx, pi_count, r), counts = device_ints(cl_ctx, rows, r);
    cl_mem blocks = device_ints(cl_ctx, rows * nkb, r);
    tensor_init(&o, c->dtype, 1, c->q_heads, (int)in->o.desc.seq, c->head_dim, TENSOR_BSHD,
                PBS_GUARD);
    pbsa_block_list list = {counts, blocks, 0, 0};
    int status = PBSA_SUCCESS;
    if (!r->failed && !upload(&o, cl_ctx, r) &&
        (status = pbsa_permutation(ctx, queue, &in->q.desc, &in->k.desc, &in->params, pi, 0,
                                   NULL, NULL)) == PBSA_SUCCESS &&
        (status = pbsa_block_selection(ctx, queue, &in->q.desc, &in->k.desc, &in->params, pi, 0,
                                       &list, NULL, NULL)) == PBSA_SUCCESS &&
        (status = pbsa_sparse_attention(ctx, queue, &in->q.desc, &in->k.desc, &in->v.desc,
                                        &o.desc, &in->params, pi, 0, &list, NULL)) ==
            PBSA_SUCCESS &&
        !read_ints(queue, pi, pi_count, &stages.pi, r) &&
        !read_ints(queue, counts, rows, &stages.counts, r) &&
        !read_ints(queue, blocks, rows * nkb, &stages.blocks, r)) {
        for (int b = 0; b < c->count && !r->failed; b++) {
            const size_t own_qb = (size_t)(c->q_lens[b] + c->block - 1) / c->block;
            for (int h = 0; h < perm_heads; h++)
                for (int p = 0; p < c->kv_lens[b]; p++) {
                    const size_t at = ((size_t)b * perm_heads + h) * max_kv + p;
                    if (stages.pi[at] != all->pi[at])
                        pbs_fail(r, "%s: pbsa_permutation: sequence %d head %d: pi[%d] = %d, "
                                 "the pipeline's %d",
                                 c->name, b, h, p, stages.pi[at], all->pi[at]);
                }
            for (size_t row = ((size_t)b * c->q_heads) * nqb;
                 row < ((size_t)b + 1) * c->q_heads * nqb; row++) {
                if ((row % nqb) >= own_qb)
                    continue;
                int same = stages.counts[row] == all->counts[row];
                for (int t = 0; same && t < all->counts[row]; t++)
                    same = stages.blocks[row * nkb + t] == all->blocks[row * nkb + t];
                if (!same)
                    pbs_fail(r, "%s: pbsa_block_selection: sequence %d, list row %zu differs "
                             "from the pipeline's",
                             c->name, b, row);
            }
        }
        if (!r->failed && (tensor_download(&o, queue) != CL_SUCCESS ||
                           tensor_download(&in->o, queue) != CL_SUCCESS ||
                           memcmp(o.bytes, in->o.bytes, o.size) != 0))
            pbs_fail(r, "%s: pbsa_sparse_attention over the stages' lists differs from the "
                     "pipeline's output",
                     c->name);
    }
    if (status != PBSA_SUCCESS)
        pbs_fail(r, "%s: a PBS stage call: status %d: %s", c->name, status,
                 pbsa_context_last_error(ctx));
    tensor_free(&o);
    lists_free(&stages);
    cl_mem buffers[3] = {pi, counts, blocks};
    for (int i = 0; i < 3; i++)
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
    return r->failed;
}

/* The output against ref, and the rows outside every sequence still poison. */
static int check_output(varlen_inputs *in, cl_command_queue queue, const double *ref,
                        pbs_report *r)
{
    const varlen_case *c = in->c;
    if (tensor_download(&in->o, queue) != CL_SUCCESS) {
        pbs_fail(r, "%s: cannot read the output back", c->name);
        return 1;
    }
    tensor_error e = tensor_compare(&in->o, ref);
    const double tolerance = conformance_tolerance(c->dtype);
    long touched = 0;
    const int rows = (int)in->o.desc.seq;
    for (int h = 0; h < c->q_heads; h++)
        for (int s = 0; s < rows; s++)
            for (int d = 0; d < c->head_dim; d++)
                touched += isnan(ref[((size_t)h * rows + s) * c->head_dim + d]) &&
                           !isnan(tensor_get(&in->o, 0, h, s, d));
    if (r->log)
        fprintf(r->log, "%-36s rel_l2 %.3e (limit %.0e) unwritten %ld outside %ld guard %ld\n",
                c->name, e.rel_l2, tolerance, e.nonfinite, touched, e.guard_damage);
    if (e.rel_l2 > r->rel_l2)
        r->rel_l2 = e.rel_l2;
    if (e.nonfinite || touched || e.guard_damage || !(e.rel_l2 <= tolerance))
        pbs_fail(r, "%s: rel_l2 %.3e (limit %.0e), %ld unwritten, %ld written outside the "
                 "sequences, %ld guard bytes changed",
                 c->name, e.rel_l2, tolerance, e.nonfinite, touched, e.guard_damage);
    return r->failed;
}

int varlen_check(pbsa_context *ctx, cl_command_queue queue, const varlen_case *c,
                 unsigned long long seed, pbs_report *r)
{
    varlen_inputs in;
    pbs_lists all = {0};
    lse_buffer lse = {0};
    double *ref = NULL, *seq_ref = NULL, *ref_lse = NULL, *seq_lse = NULL;
    if (varlen_inputs_make(&in, c, seed, context_of(queue), r))
        goto done;
    const size_t rows = (size_t)in.o.desc.seq, dim = (size_t)c->head_dim;
    const size_t lse_count = (size_t)c->q_heads * rows;
    ref = malloc(lse_count * dim * sizeof *ref);
    seq_ref = malloc(lse_count * dim * sizeof *seq_ref);
    ref_lse = malloc(lse_count * sizeof *ref_lse);
    seq_lse = malloc(lse_count * sizeof *seq_lse);
    if (!ref || !seq_ref || !ref_lse || !seq_lse) {
        pbs_fail(r, "%s: out of host memory", c->name);
        goto done;
    }
    if (lse_buffer_make(&lse, context_of(queue), lse_count) != CL_SUCCESS) {
        pbs_fail(r, "%s: cannot create the log-sum-exp buffer", c->name);
        goto done;
    }
    /* Rows outside every sequence: NaN, left out of the comparison and checked untouched. */
    for (size_t i = 0; i < lse_count * dim; i++)
        ref[i] = NAN;
    for (size_t i = 0; i < lse_count; i++)
        ref_lse[i] = NAN;
    pbsa_host_tensor hq = tensor_host_view(&in.q), hk = tensor_host_view(&in.k),
                     hv = tensor_host_view(&in.v);
    /* The log-sum-exp is asked of the pipeline and dense calls, not of the stage calls. */
    pbsa_dense_params dense = in.dense;
    pbsa_params params = in.params;
    dense.lse = params.lse = lse.mem;
    dense.lse_offset = params.lse_offset = LSE_GUARD;
    if (!c->pbs) {
        int status = pbsa_dense_attention(ctx, queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                          &in.o.desc, &dense, NULL);
        if (status != PBSA_SUCCESS) {
            pbs_fail(r, "%s: pbsa_dense_attention: status %d: %s", c->name, status,
                     pbsa_context_last_error(ctx));
            goto done;
        }
        status = pbsa_ref_dense_attention_lse(&hq, &hk, &hv, &in.dense, ref, ref_lse);
        if (status != PBSA_SUCCESS)
            pbs_fail(r, "%s: the reference failed (%d)", c->name, status);
    } else if (!run_pbs(ctx, queue, &in.q.desc, &in.k.desc, &in.v.desc, &in.o.desc, &params, &all,
                        r)) {
        for (int b = 0; b < c->count && !r->failed; b++) {
            const size_t q_len = (size_t)c->q_lens[b], first = (size_t)in.q_offsets[b];
            if (q_len == 0 || pbs_sequence(ctx, queue, &in, b, &all, seq_ref, seq_lse, r))
                continue;
            for (int h = 0; h < c->q_heads; h++) {
                memcpy(ref + ((size_t)h * rows + first) * dim, seq_ref + (size_t)h * q_len * dim,
                       q_len * dim * sizeof *ref);
                memcpy(ref_lse + (size_t)h * rows + first, seq_lse + (size_t)h * q_len,
                       q_len * sizeof *ref_lse);
            }
        }
    }
    if (!r->failed)
        check_output(&in, queue, ref, r);
    const tensor_dtypes dtypes = {c->dtype, c->dtype, c->dtype};
    if (!r->failed)
        pbs_check_lse(c->name, &lse, &dtypes, queue, ref_lse, r);
    if (!r->failed && c->pbs)
        check_stages(ctx, queue, &in, &all, r);
done:
    lists_free(&all);
    lse_buffer_free(&lse);
    free(ref);
    free(seq_ref);
    free(ref_lse);
    free(seq_lse);
    varlen_inputs_free(&in);
    return r->failed;
}
