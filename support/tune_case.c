/* pbsa-tune's workloads (see tune_case.h). */
#include "tune_case.h"
#include "conformance.h"
#include "host_tensor.h"
#include "pbsattn_ref.h"
#include "splitmix.h"
#include "timing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    MIN_SETS = 2,
    MAX_SETS = 4,
    SEGMENT = 256,   /* the paper's segment: the permutation of the sparse inputs */
    CHECK_HEADS = 4, /* the check case: GQA with 2 query heads per KV head */
    CHECK_KV_HEADS = 2,
    DENSE_CHECK_SEQ = 200, /* not a multiple of any tile: partial tiles are checked too */
    MAX_RUNS = 1000,
};

/* Share of the blocks before a query block's own segment that the sparse workload selects,
 * besides the sink block and the own segment (about the density PBS reaches on LLM heads). */
static const double SPARSE_KEEP = 0.3;

typedef struct device_set {
    cl_mem q, k, v;
} device_set;

/* Inputs of the sparse kernel: the permutation and the block list. */
typedef struct sparse_inputs {
    cl_mem pi, counts, blocks;
} sparse_inputs;

struct tune_case {
    pbsa_context *ctx;
    cl_context cl_ctx;
    cl_command_queue queue;
    pbsa_tuning_key key;
    uint64_t seed;
    /* Timed: sets of inputs in rotation, one output. */
    tune_shape shape;
    device_set sets[MAX_SETS];
    int set_count;
    cl_mem out;
    sparse_inputs sparse;
    /* Sparse check: inputs on the host and the device, and the reference output. */
    int check_seq;
    void *check_host[3];
    device_set check_set;
    cl_mem check_out;
    sparse_inputs check_sparse;
    double *check_ref;
    /* The permutation stage (scores_method): its output and workspace, grown as needed. */
    cl_mem pi, workspace;
    size_t workspace_bytes;
};

/* Whether key is timed through pbsa_permutation(), the stage whose method it chooses. */
static bool runs_permutation(const pbsa_tuning_key *key)
{
    return key->kind == PBSA_KERNEL_SCORES_METHOD;
}

/* Whether the kernel of key runs in pbsa_sparse_attention() (else in pbsa_dense_attention()). */
static bool runs_sparse(const pbsa_tuning_key *key)
{
    return pbsa_kernel_kind_is_sparse(key->kind);
}

/* count random elements of dtype in [-amplitude, amplitude), or NULL. */
static void *random_host(pbsa_dtype dtype, size_t count, float amplitude, uint64_t *rng)
{
    void *data = malloc(count * pbsa_dtype_size(dtype));
    if (data)
        tensor_random(data, dtype, count, amplitude, rng);
    return data;
}

static cl_mem upload(cl_context cl_ctx, const void *host, size_t bytes, cl_int *err)
{
    if (*err != CL_SUCCESS)
        return NULL;
    return clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | (host ? CL_MEM_COPY_HOST_PTR : 0), bytes,
                          (void *)host, err);
}

static void release(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

/* pi [heads, seq]: a random order inside every whole segment, the identity on the tail. */
static cl_int *make_permutation(int heads, int seq, uint64_t *rng)
{
    cl_int *pi = malloc((size_t)heads * (size_t)seq * sizeof *pi);
    for (int h = 0; pi && h < heads; h++) {
        cl_int *row = pi + (size_t)h * (size_t)seq;
        for (int s = 0; s < seq; s++)
            row[s] = s;
        for (int start = 0; start + SEGMENT <= seq; start += SEGMENT)
            for (int i = SEGMENT - 1; i > 0; i--) {
                int j = (int)(splitmix64(rng) % (uint64_t)(i + 1));
                cl_int t = row[start + i];
                row[start + i] = row[start + j];
                row[start + j] = t;
            }
    }
    return pi;
}

/* The block list of every (head, query block) row: the sink block, the blocks of the query
 * block's own segment that causality allows (all of them: the permutation moves earlier keys
 * into later blocks), and keep of the earlier ones. mask, when not NULL, receives it as bytes. */
static void make_blocks(int heads, int seq, int block, int causal, double keep, uint64_t *rng,
                        cl_int *counts, cl_int *blocks, uint8_t *mask)
{
    const int nb = (seq + block - 1) / block, per_segment = SEGMENT / block;
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < nb; i++) {
            size_t row = (size_t)h * (size_t)nb + (size_t)i;
            int own_start = i / per_segment * per_segment;
            int own_end = own_start + per_segment < nb ? own_start + per_segment : nb;
            int last = causal ? own_end : nb;
            int count = 0;
            for (int j = 0; j < last; j++) {
                bool take = j == 0 || (j >= own_start && j < own_end) || splitmix_unit(rng) < keep;
                if (mask)
                    mask[row * (size_t)nb + (size_t)j] = take;
                if (take)
                    blocks[row * (size_t)nb + (size_t)count++] = j;
            }
            for (int j = last; mask && j < nb; j++)
                mask[row * (size_t)nb + (size_t)j] = 0;
            counts[row] = count;
        }
}

/* Uploads a permutation and a block list for heads x seq; mask as make_blocks(). */
static cl_int upload_sparse(tune_case *c, int heads, int seq, double keep, uint64_t *rng,
                            sparse_inputs *out, cl_int **pi_out, uint8_t *mask)
{
    const int block = c->key.block, nb = (seq + block - 1) / block;
    cl_int *pi = make_permutation(heads, seq, rng);
    cl_int *counts = malloc((size_t)heads * (size_t)nb * sizeof *counts);
    cl_int *blocks = calloc((size_t)heads * (size_t)nb * (size_t)nb, sizeof *blocks);
    cl_int err = pi && counts && blocks ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
    if (err == CL_SUCCESS) {
        make_blocks(heads, seq, block, c->key.causal, keep, rng, counts, blocks, mask);
        out->pi = upload(c->cl_ctx, pi, (size_t)heads * (size_t)seq * sizeof *pi, &err);
        out->counts = upload(c->cl_ctx, counts, (size_t)heads * (size_t)nb * sizeof *counts, &err);
        out->blocks = upload(c->cl_ctx, blocks,
                             (size_t)heads * (size_t)nb * (size_t)nb * sizeof *blocks, &err);
    }
    free(counts);
    free(blocks);
    if (pi_out && err == CL_SUCCESS)
        *pi_out = pi;
    else
        free(pi);
    return err;
}

/* The sparse check: inputs, the device copies, and the reference output. */
static int create_sparse_check(tune_case *c, uint64_t *rng, char *error, size_t capacity)
{
    const int block = c->key.block, d = c->key.head_dim;
    c->check_seq = 2 * SEGMENT + block / 2; /* two segments and a partial tail block */
    const int seq = c->check_seq, nb = (seq + block - 1) / block;
    const size_t q_count = (size_t)CHECK_HEADS * seq * d,
                 kv_count = (size_t)CHECK_KV_HEADS * seq * d;
    const size_t element = pbsa_dtype_size(c->key.dtype);
    c->check_host[0] = random_host(c->key.dtype, q_count, 2.0f, rng);
    c->check_host[1] = random_host(c->key.dtype, kv_count, 1.0f, rng);
    c->check_host[2] = random_host(c->key.dtype, kv_count, 1.0f, rng);
    uint8_t *mask = malloc((size_t)CHECK_HEADS * nb * nb);
    c->check_ref = malloc(q_count * sizeof *c->check_ref);
    cl_int *pi = NULL;
    cl_int err = c->check_host[0] && c->check_host[1] && c->check_host[2] && mask && c->check_ref
                     ? CL_SUCCESS
                     : CL_OUT_OF_HOST_MEMORY;
    c->check_set.q = upload(c->cl_ctx, c->check_host[0], q_count * element, &err);
    c->check_set.k = upload(c->cl_ctx, c->check_host[1], kv_count * element, &err);
    c->check_set.v = upload(c->cl_ctx, c->check_host[2], kv_count * element, &err);
    c->check_out = upload(c->cl_ctx, NULL, q_count * element, &err);
    if (err == CL_SUCCESS) /* half of the earlier blocks: more than the timed workload */
        err = upload_sparse(c, CHECK_HEADS, seq, 0.5, rng, &c->check_sparse, &pi, mask);
    if (err != CL_SUCCESS) {
        free(mask);
        snprintf(error, capacity, "cannot set up the check case (OpenCL error %d)", err);
        return 1;
    }
    pbsa_host_tensor hq = {c->check_host[0], c->key.dtype,     1, CHECK_HEADS, seq, d,
                           (int64_t)q_count, (int64_t)seq * d, d};
    pbsa_host_tensor hk = {c->check_host[1],  c->key.dtype,     1, CHECK_KV_HEADS, seq, d,
                           (int64_t)kv_count, (int64_t)seq * d, d};
    pbsa_host_tensor hv = hk;
    hv.data = c->check_host[2];
    pbsa_params params = pbsa_params_default();
    params.block_size = block;
    params.segment_size = SEGMENT;
    params.causal = c->key.causal;
    int status = pbsa_ref_pbs_sparse_attention(&hq, &hk, &hv, pi, mask, &params, c->check_ref);
    free(pi);
    free(mask);
    if (status != PBSA_SUCCESS) {
        snprintf(error, capacity, "the reference failed (%s)", pbsa_status_string(status));
        return 1;
    }
    return 0;
}

void tune_case_release(tune_case *c)
{
    if (!c)
        return;
    for (int i = 0; i < MAX_SETS; i++) {
        release(&c->sets[i].q);
        release(&c->sets[i].k);
        release(&c->sets[i].v);
    }
    release(&c->out);
    release(&c->sparse.pi);
    release(&c->sparse.counts);
    release(&c->sparse.blocks);
    release(&c->check_set.q);
    release(&c->check_set.k);
    release(&c->check_set.v);
    release(&c->check_out);
    release(&c->check_sparse.pi);
    release(&c->check_sparse.counts);
    release(&c->check_sparse.blocks);
    release(&c->pi);
    release(&c->workspace);
    for (int i = 0; i < 3; i++)
        free(c->check_host[i]);
    free(c->check_ref);
    free(c);
}

int tune_case_create(pbsa_context *ctx, cl_context cl_ctx, cl_command_queue queue,
                     const pbsa_tuning_key *key, const tune_shape *shape, uint64_t seed,
                     tune_case **out, char *error, size_t capacity)
{
    *out = NULL;
    if (key->kind == PBSA_KERNEL_SCORES) {
        snprintf(error, capacity, "pbsa-tune times the dense and sparse kernels only");
        return 1;
    }
    tune_case *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(error, capacity, "out of host memory");
        return 1;
    }
    c->ctx = ctx;
    c->cl_ctx = cl_ctx;
    c->queue = queue;
    c->key = *key;
    c->shape = *shape;
    c->seed = seed;
    uint64_t rng = seed ^ ((uint64_t)key->kind << 40) ^ ((uint64_t)key->head_dim << 20) ^
                   ((uint64_t)key->block << 8) ^ ((uint64_t)key->dtype << 4) ^
                   (uint64_t)key->causal;

    /* As many input sets as fit in a quarter of the device memory, within [2, 4]. */
    pbsa_device_info info;
    pbsa_context_device_info(ctx, &info);
    const size_t element = pbsa_dtype_size(key->dtype);
    const size_t q_count = (size_t)shape->heads * shape->seq * key->head_dim;
    const size_t kv_count = (size_t)shape->kv_heads * shape->seq * key->head_dim;
    const uint64_t set_bytes = (uint64_t)(q_count + 2 * kv_count) * element;
    uint64_t fit = info.global_mem_bytes / 4 / (set_bytes ? set_bytes : 1);
    c->set_count = fit < MIN_SETS ? MIN_SETS : fit > MAX_SETS ? MAX_SETS : (int)fit;
    if (q_count * element > info.max_alloc_bytes ||
        (c->set_count + 1) * set_bytes > info.global_mem_bytes) {
        snprintf(error, capacity, "the timed shape needs %.2f GB; the device has %.2f GB",
                 (double)(c->set_count + 1) * (double)set_bytes * 1e-9,
                 (double)info.global_mem_bytes * 1e-9);
        tune_case_release(c);
        return 1;
    }
    void *staging = NULL;
    cl_int err = CL_SUCCESS;
    for (int s = 0; s < c->set_count && err == CL_SUCCESS; s++) {
        /* Queries larger than keys give sharper, more realistic attention rows. */
        const float amplitude[3] = {2.0f, 1.0f, 1.0f};
        const size_t counts[3] = {q_count, kv_count, kv_count};
        cl_mem *targets[3] = {&c->sets[s].q, &c->sets[s].k, &c->sets[s].v};
        for (int t = 0; t < 3 && err == CL_SUCCESS; t++) {
            free(staging);
            staging = random_host(key->dtype, counts[t], amplitude[t], &rng);
            if (!staging)
                err = CL_OUT_OF_HOST_MEMORY;
            *targets[t] = upload(cl_ctx, staging, counts[t] * element, &err);
        }
    }
    free(staging);
    c->out = upload(cl_ctx, NULL, q_count * element, &err);
    if (runs_permutation(key))
        c->pi = upload(cl_ctx, NULL, (size_t)shape->heads * (size_t)shape->seq * sizeof(cl_int),
                       &err);
    if (err == CL_SUCCESS && runs_sparse(key))
        err = upload_sparse(c, shape->heads, shape->seq, SPARSE_KEEP, &rng, &c->sparse, NULL, NULL);
    if (err != CL_SUCCESS) {
        snprintf(error, capacity, "cannot create the timed inputs (OpenCL error %d)", err);
        tune_case_release(c);
        return 1;
    }
    if (runs_sparse(key) && create_sparse_check(c, &rng, error, capacity) != 0) {
        tune_case_release(c);
        return 1;
    }
    *out = c;
    return 0;
}

/* ---- check ---- */

static void call_failed(const tune_case *c, int status, char *reason, size_t capacity)
{
    const char *log = pbsa_context_build_log(c->ctx);
    if (status == PBSA_ERROR_BUILD_FAILED)
        snprintf(reason, capacity, "build failed: %.200s%s", log[0] ? log : "no log",
                 strlen(log) > 200 ? "..." : "");
    else
        snprintf(reason, capacity, "%s (%s)", pbsa_context_last_error(c->ctx),
                 pbsa_status_string(status));
    /* Build logs run over lines: keep the reason on one. */
    for (char *p = reason; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
}

static int check_dense(tune_case *c, char *reason, size_t capacity)
{
    /* A square case and a chunked-prefill one (queries the last positions of the keys). */
    const conformance_case cases[2] = {
        {"tune_square", {c->key.dtype, c->key.dtype, c->key.dtype}, 1, CHECK_HEADS,
         CHECK_KV_HEADS, DENSE_CHECK_SEQ, DENSE_CHECK_SEQ, c->key.head_dim, c->key.causal,
         TENSOR_BHSD},
        {"tune_prefill", {c->key.dtype, c->key.dtype, c->key.dtype}, 1, CHECK_HEADS,
         CHECK_KV_HEADS, 77, DENSE_CHECK_SEQ, c->key.head_dim, c->key.causal, TENSOR_BHSD},
    };
    for (int i = 0; i < 2; i++) {
        conformance_result r;
        int status = conformance_run_dense(c->ctx, c->queue, &cases[i], c->seed + (uint64_t)i, &r);
        if (status != PBSA_SUCCESS) {
            call_failed(c, status, reason, capacity);
            return 1;
        }
        if (!r.passed) {
            snprintf(reason, capacity,
                     "wrong result on the %s check: rel_l2 %.2e (limit %.0e), %ld unwritten, %ld "
                     "bytes written outside",
                     cases[i].name, r.rel_l2, r.tolerance, r.unwritten, r.guard_damage);
            return 1;
        }
    }
    return 0;
}

static double load(const void *data, pbsa_dtype dtype, size_t index)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return ((const float *)data)[index];
    case PBSA_DTYPE_F16: return pbsa_ref_half_to_float(((const uint16_t *)data)[index]);
    case PBSA_DTYPE_BF16: return pbsa_ref_bf16_to_float(((const uint16_t *)data)[index]);
    }
    return NAN;
}

static pbsa_block_list block_list(const sparse_inputs *s)
{
    pbsa_block_list list = {s->counts, s->blocks, 0, 0};
    return list;
}

static int check_sparse(tune_case *c, char *reason, size_t capacity)
{
    const int seq = c->check_seq, d = c->key.head_dim;
    const size_t count = (size_t)CHECK_HEADS * seq * d, element = pbsa_dtype_size(c->key.dtype);
    pbsa_tensor q = pbsa_tensor_bhsd(c->check_set.q, c->key.dtype, 1, CHECK_HEADS, seq, d);
    pbsa_tensor k = pbsa_tensor_bhsd(c->check_set.k, c->key.dtype, 1, CHECK_KV_HEADS, seq, d);
    pbsa_tensor v = pbsa_tensor_bhsd(c->check_set.v, c->key.dtype, 1, CHECK_KV_HEADS, seq, d);
    pbsa_tensor o = pbsa_tensor_bhsd(c->check_out, c->key.dtype, 1, CHECK_HEADS, seq, d);
    pbsa_params params = pbsa_params_default();
    params.block_size = c->key.block;
    params.segment_size = SEGMENT;
    params.causal = c->key.causal;
    pbsa_block_list list = block_list(&c->check_sparse);
    const cl_uchar poison = 0xff; /* NaN in every dtype: unwritten outputs show */
    cl_int err =
        clEnqueueFillBuffer(c->queue, c->check_out, &poison, 1, 0, count * element, 0, NULL, NULL);
    if (err != CL_SUCCESS) {
        snprintf(reason, capacity, "cannot poison the output (OpenCL error %d)", err);
        return 1;
    }
    int status = pbsa_sparse_attention(c->ctx, c->queue, &q, &k, &v, &o, &params,
                                       c->check_sparse.pi, 0, &list, NULL);
    if (status != PBSA_SUCCESS) {
        call_failed(c, status, reason, capacity);
        return 1;
    }
    void *host = malloc(count * element);
    err = host ? clEnqueueReadBuffer(c->queue, c->check_out, CL_TRUE, 0, count * element, host, 0,
                                     NULL, NULL)
               : CL_OUT_OF_HOST_MEMORY;
    if (err != CL_SUCCESS) {
        free(host);
        snprintf(reason, capacity, "reading the output failed (OpenCL error %d)", err);
        return 1;
    }
    double diff2 = 0.0, ref2 = 0.0;
    long unwritten = 0;
    for (size_t i = 0; i < count; i++) {
        double got = load(host, c->key.dtype, i), want = c->check_ref[i];
        if (isnan(got)) {
            unwritten++;
            continue;
        }
        diff2 += (got - want) * (got - want);
        ref2 += want * want;
    }
    free(host);
    double rel_l2 = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
    double limit = conformance_tolerance(c->key.dtype);
    if (unwritten || !(rel_l2 <= limit)) {
        snprintf(reason, capacity,
                 "wrong result on the check: rel_l2 %.2e (limit %.0e), %ld unwritten", rel_l2,
                 limit, unwritten);
        return 1;
    }
    return 0;
}

/* The params of the permutation stage for key. */
static pbsa_params permutation_params(const tune_case *c)
{
    pbsa_params params = pbsa_params_default();
    params.block_size = c->key.block;
    params.segment_size = SEGMENT;
    return params;
}

/* Runs pbsa_permutation() on input set of the timed shape into c->pi, growing the workspace to
 * what the forced method needs; *event (may be NULL) receives its event. */
static int run_permutation(tune_case *c, int set, cl_event *event, char *reason, size_t capacity)
{
    const device_set *s = &c->sets[set % c->set_count];
    const int seq = c->shape.seq, d = c->key.head_dim;
    pbsa_tensor q = pbsa_tensor_bhsd(s->q, c->key.dtype, 1, c->shape.heads, seq, d);
    pbsa_tensor k = pbsa_tensor_bhsd(s->k, c->key.dtype, 1, c->shape.kv_heads, seq, d);
    pbsa_params params = permutation_params(c);
    size_t bytes = 0;
    int status = pbsa_workspace_size(c->ctx, &q, &k, &params, &bytes);
    if (status == PBSA_SUCCESS && bytes > c->workspace_bytes) {
        cl_int err = CL_SUCCESS;
        release(&c->workspace);
        c->workspace_bytes = 0;
        c->workspace = upload(c->cl_ctx, NULL, bytes, &err);
        if (err != CL_SUCCESS) {
            snprintf(reason, capacity, "cannot allocate a %zu-byte workspace (OpenCL error %d)",
                     bytes, err);
            return 1;
        }
        c->workspace_bytes = bytes;
    }
    if (status == PBSA_SUCCESS)
        status = pbsa_permutation(c->ctx, c->queue, &q, &k, &params, c->pi, 0, c->workspace,
                                  event);
    if (status != PBSA_SUCCESS) {
        call_failed(c, status, reason, capacity);
        return 1;
    }
    return 0;
}

/* The permutation of the timed shape: every complete segment of every head holds each of its
 * positions once, the tail is the identity. */
static int check_permutation(tune_case *c, char *reason, size_t capacity)
{
    const size_t seq = (size_t)c->shape.seq, count = (size_t)c->shape.heads * seq;
    cl_int *pi = malloc(count * sizeof *pi);
    unsigned char *seen = calloc(seq, 1);
    int failed = !pi || !seen;
    if (failed)
        snprintf(reason, capacity, "out of host memory");
    if (!failed) {
        /* Poisoned first, so that an unwritten element is caught. */
        const cl_int poison = -1;
        cl_int err = clEnqueueFillBuffer(c->queue, c->pi, &poison, sizeof poison, 0,
                                         count * sizeof *pi, 0, NULL, NULL);
        failed = err != CL_SUCCESS || run_permutation(c, 0, NULL, reason, capacity) != 0;
        if (err != CL_SUCCESS)
            snprintf(reason, capacity, "cannot poison pi (OpenCL error %d)", err);
    }
    if (!failed) {
        cl_int err = clEnqueueReadBuffer(c->queue, c->pi, CL_TRUE, 0, count * sizeof *pi, pi, 0,
                                         NULL, NULL);
        failed = err != CL_SUCCESS;
        if (failed)
            snprintf(reason, capacity, "cannot read pi (OpenCL error %d)", err);
    }
    const size_t whole = seq / SEGMENT * SEGMENT;
    for (size_t h = 0; !failed && h < (size_t)c->shape.heads; h++) {
        const cl_int *row = pi + h * seq;
        memset(seen, 0, seq);
        for (size_t i = 0; !failed && i < seq; i++) {
            const size_t start = i < whole ? i / SEGMENT * SEGMENT : i;
            const size_t end = i < whole ? start + SEGMENT : i + 1;
            failed = row[i] < (cl_int)start || (size_t)row[i] >= end || seen[row[i]]++;
            if (failed)
                snprintf(reason, capacity,
                         "wrong permutation on the check: head %zu, position %zu holds %d", h, i,
                         (int)row[i]);
        }
    }
    free(pi);
    free(seen);
    return failed ? 1 : 0;
}

int tune_case_check(tune_case *c, char *reason, size_t capacity)
{
    if (runs_permutation(&c->key))
        return check_permutation(c, reason, capacity);
    return runs_sparse(&c->key) ? check_sparse(c, reason, capacity)
                                : check_dense(c, reason, capacity);
}

/* ---- timing ---- */

/* One permutation on input set run % set_count; *ms is the whole call's time on the host, from
 * an idle queue to its completion (the CLBlast method's host work and its several kernels
 * included). */
static int timed_permutation(tune_case *c, int run, double *ms, char *reason, size_t capacity)
{
    cl_event event = NULL;
    cl_int err = clFinish(c->queue);
    double begin = timing_now_seconds();
    if (err == CL_SUCCESS && run_permutation(c, run, &event, reason, capacity) != 0)
        return 1;
    if (err == CL_SUCCESS)
        err = clWaitForEvents(1, &event);
    *ms = (timing_now_seconds() - begin) * 1e3;
    if (event)
        clReleaseEvent(event);
    if (err != CL_SUCCESS) {
        snprintf(reason, capacity, "the run failed on the device (OpenCL error %d)", err);
        return 1;
    }
    return 0;
}

/* One run on input set run % set_count; *ms is its kernel time. */
static int timed_run(tune_case *c, int run, double *ms, char *reason, size_t capacity)
{
    if (runs_permutation(&c->key))
        return timed_permutation(c, run, ms, reason, capacity);
    const device_set *s = &c->sets[run % c->set_count];
    const int seq = c->shape.seq, d = c->key.head_dim;
    pbsa_tensor q = pbsa_tensor_bhsd(s->q, c->key.dtype, 1, c->shape.heads, seq, d);
    pbsa_tensor k = pbsa_tensor_bhsd(s->k, c->key.dtype, 1, c->shape.kv_heads, seq, d);
    pbsa_tensor v = pbsa_tensor_bhsd(s->v, c->key.dtype, 1, c->shape.kv_heads, seq, d);
    pbsa_tensor o = pbsa_tensor_bhsd(c->out, c->key.dtype, 1, c->shape.heads, seq, d);
    cl_event event = NULL;
    int status;
    if (!runs_sparse(&c->key)) {
        pbsa_dense_params params = {.causal = c->key.causal};
        status = pbsa_dense_attention(c->ctx, c->queue, &q, &k, &v, &o, &params, &event);
    } else {
        pbsa_params params = pbsa_params_default();
        params.block_size = c->key.block;
        params.segment_size = SEGMENT;
        params.causal = c->key.causal;
        pbsa_block_list list = block_list(&c->sparse);
        status = pbsa_sparse_attention(c->ctx, c->queue, &q, &k, &v, &o, &params, c->sparse.pi, 0,
                                       &list, &event);
    }
    if (status != PBSA_SUCCESS) {
        call_failed(c, status, reason, capacity);
        return 1;
    }
    cl_ulong start = 0, end = 0;
    cl_int err = clWaitForEvents(1, &event);
    if (err == CL_SUCCESS)
        err =
            clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL);
    if (err == CL_SUCCESS)
        err = clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL);
    clReleaseEvent(event);
    if (err != CL_SUCCESS) {
        snprintf(reason, capacity, "the run failed on the device (OpenCL error %d)", err);
        return 1;
    }
    *ms = (double)(end - start) * 1e-6;
    return 0;
}

int tune_case_time(tune_case *c, int warmup, int repeats, double max_seconds, double give_up_ms,
                   volatile const sig_atomic_t *stop, double *median_ms, char *reason,
                   size_t capacity)
{
    double times[MAX_RUNS];
    if (repeats > MAX_RUNS)
        repeats = MAX_RUNS;
    if (warmup < 1)
        warmup = 1;
    for (int i = 0; i < warmup; i++) {
        double ms;
        if (stop && *stop)
            return 3;
        if (timed_run(c, warmup - 1 - i, &ms, reason, capacity) != 0)
            return 1;
        if (i == 0 && give_up_ms > 0.0 && ms > give_up_ms) {
            *median_ms = ms;
            return 2;
        }
    }
    double begin = timing_now_seconds();
    int runs = 0;
    while (runs < repeats && (runs < 3 || timing_now_seconds() - begin < max_seconds)) {
        if (stop && *stop)
            return 3;
        if (timed_run(c, runs, &times[runs], reason, capacity) != 0)
            return 1;
        runs++;
    }
    *median_ms = timing_median(times, runs);
    return 0;
}
