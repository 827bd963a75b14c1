/* What an inference engine does with pbsattn: two sequences of different lengths whose keys and
 * values live in a paged KV cache, prefilled with one PBS call on the engine's own OpenCL
 * context and queue, with each query row's log-sum-exp. The engine owns everything: the
 * context, the queue, the page pool, the page table, the packed queries and the outputs; the
 * library only enqueues work on them. Before making any buffer, the engine asks whether the
 * call is supported, as its own dispatch would.
 *
 * Runs on the first OpenCL device (PBSA_DEVICE is not read: the engine picks its device), checks
 * the output and the log-sum-exp against the library's float64 reference and exits 0 when they
 * agree, 77 when there is no OpenCL device, 1 on an error. */
#include "pbsattn.h"
#include "pbsattn_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    SEQUENCES = 2,
    HEADS = 4,       /* query heads */
    KV_HEADS = 2,    /* grouped-query attention, two query heads per KV head */
    HEAD_DIM = 64,
    PAGE_SIZE = 16,  /* keys per page */
    POOL_PAGES = 40, /* the engine's whole cache: more pages than these two sequences use */
    MAX_PAGES = 20,  /* page-table entries per sequence */
};

/* The prompt lengths of the two sequences. */
static const int lengths[SEQUENCES] = {300, 170};

static float random_value(unsigned *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* The engine's side: an OpenCL context and an in-order queue on the first device. */
static int open_device(cl_context *context, cl_command_queue *queue, cl_device_id *device)
{
    cl_platform_id platform;
    cl_uint platforms = 0;
    if (clGetPlatformIDs(1, &platform, &platforms) != CL_SUCCESS || platforms == 0 ||
        clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, device, NULL) != CL_SUCCESS)
        return 77;
    cl_int err;
    *context = clCreateContext(NULL, 1, device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return 1;
    *queue = clCreateCommandQueue(*context, *device, 0, &err);
    if (err != CL_SUCCESS) {
        clReleaseContext(*context);
        return 1;
    }
    return 0;
}

static cl_mem upload(cl_context context, const void *host, size_t bytes)
{
    cl_int err;
    cl_mem m = clCreateBuffer(context, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                              (void *)host, &err);
    return err == CL_SUCCESS ? m : NULL;
}

int main(void)
{
    cl_context context;
    cl_command_queue queue;
    cl_device_id device;
    int status = open_device(&context, &queue, &device);
    if (status != 0) {
        fprintf(stderr, "paged_prefill: no OpenCL device\n");
        return status;
    }

    /* Packed queries and outputs: [total tokens, heads, head_dim], sequence after sequence. */
    int32_t q_offsets[SEQUENCES + 1] = {0}, kv_offsets[SEQUENCES + 1] = {0};
    for (int b = 0; b < SEQUENCES; b++)
        q_offsets[b + 1] = kv_offsets[b + 1] = q_offsets[b] + lengths[b];
    const int total = q_offsets[SEQUENCES];
    /* The page table: sequence b's key j is in page table[b][j / PAGE_SIZE]. Pages are handed
     * out in a scattered order, as a cache does after some sequences have come and gone. */
    int32_t table[SEQUENCES * MAX_PAGES];
    for (int b = 0, next = 0; b < SEQUENCES; b++)
        for (int j = 0; j < MAX_PAGES; j++)
            table[b * MAX_PAGES + j] = j * PAGE_SIZE < lengths[b] ? (next++ * 7 + 3) % POOL_PAGES
                                                                  : -1;

    const size_t q_count = (size_t)total * HEADS * HEAD_DIM;
    const size_t pool_count = (size_t)POOL_PAGES * PAGE_SIZE * KV_HEADS * HEAD_DIM;
    const size_t rows = (size_t)HEADS * total; /* log-sum-exp values: [heads, total] */
    float *q = malloc(q_count * sizeof *q), *o = malloc(q_count * sizeof *o);
    float *k = malloc(pool_count * sizeof *k), *v = malloc(pool_count * sizeof *v);
    float *lse = malloc(rows * sizeof *lse);
    double *expected = malloc(q_count * sizeof *expected);
    double *expected_lse = malloc(rows * sizeof *expected_lse);
    if (!q || !o || !k || !v || !lse || !expected || !expected_lse)
        return 1;
    unsigned seed = 12345;
    for (size_t i = 0; i < q_count; i++)
        q[i] = 2.0f * random_value(&seed);
    /* The engine's kernels would have written K and V into their pages; here, random values. */
    for (size_t i = 0; i < pool_count; i++) {
        k[i] = random_value(&seed);
        v[i] = random_value(&seed);
    }

    /* The library on the engine's context; one pbsa_context per device, kept for the engine's
     * life (it holds the compiled kernels). */
    pbsa_context *ctx;
    if (pbsa_context_create(context, device, NULL, &ctx) != PBSA_SUCCESS) {
        fprintf(stderr, "paged_prefill: %s\n", pbsa_context_last_error(NULL));
        return 1;
    }
    /* Packed q and o: batch 1, seq = all tokens. The pools: batch = pages, seq = page size.
     * Described before their buffers exist, for the support query. */
    pbsa_tensor qt = pbsa_tensor_bshd(NULL, PBSA_DTYPE_F32, 1, HEADS, total, HEAD_DIM);
    pbsa_tensor ot = qt;
    pbsa_tensor kt =
        pbsa_tensor_bshd(NULL, PBSA_DTYPE_F32, POOL_PAGES, KV_HEADS, PAGE_SIZE, HEAD_DIM);
    pbsa_tensor vt = kt;
    /* The offsets and the table twice: on the host for the checks and the plan, on the device
     * for the kernels. */
    pbsa_varlen varlen = {SEQUENCES, q_offsets, kv_offsets, NULL, 0, NULL, 0};
    pbsa_paged_kv paged = {MAX_PAGES, table, NULL, 0};
    pbsa_params params = pbsa_params_default();
    params.block_size = 64; /* small blocks and segments for these short prompts */
    params.segment_size = 128;
    params.varlen = &varlen;
    params.paged_kv = &paged;
    if (pbsa_query_attention_support(ctx, &qt, &kt, &vt, &ot, &params) != PBSA_SUCCESS) {
        fprintf(stderr, "paged_prefill: not supported: %s\n", pbsa_context_last_error(ctx));
        return 1;
    }

    cl_mem q_mem = upload(context, q, q_count * sizeof *q);
    cl_mem o_mem = clCreateBuffer(context, CL_MEM_READ_WRITE, q_count * sizeof *o, NULL, NULL);
    cl_mem k_mem = upload(context, k, pool_count * sizeof *k);
    cl_mem v_mem = upload(context, v, pool_count * sizeof *v);
    cl_mem q_offsets_mem = upload(context, q_offsets, sizeof q_offsets);
    cl_mem kv_offsets_mem = upload(context, kv_offsets, sizeof kv_offsets);
    cl_mem table_mem = upload(context, table, sizeof table);
    cl_mem lse_mem = clCreateBuffer(context, CL_MEM_READ_WRITE, rows * sizeof *lse, NULL, NULL);
    if (!q_mem || !o_mem || !k_mem || !v_mem || !q_offsets_mem || !kv_offsets_mem || !table_mem ||
        !lse_mem)
        return 1;
    qt.buffer = q_mem;
    ot.buffer = o_mem;
    kt.buffer = k_mem;
    vt.buffer = v_mem;
    varlen.q_offsets_buffer = q_offsets_mem;
    varlen.kv_offsets_buffer = kv_offsets_mem;
    paged.page_table_buffer = table_mem;
    /* Each query row's log-sum-exp, f32 [heads, total] for a variable-length call: what an
     * engine needs to merge this prefill with attention over a cached prefix, or keys split in
     * parts; two partial results o1, lse1 and o2, lse2 of a row merge into
     * o = (o1 e^lse1 + o2 e^lse2) / (e^lse1 + e^lse2). */
    params.lse = lse_mem;

    /* A workspace of the engine's own, sized for these shapes (reusable for smaller calls). */
    size_t workspace_bytes = 0;
    cl_mem workspace = NULL;
    cl_int err = CL_SUCCESS;
    status = pbsa_workspace_size(ctx, &qt, &kt, &params, &workspace_bytes);
    if (status == PBSA_SUCCESS)
        workspace = clCreateBuffer(context, CL_MEM_READ_WRITE, workspace_bytes, NULL, &err);
    if (status == PBSA_SUCCESS && err == CL_SUCCESS)
        status = pbsa_attention(ctx, queue, &qt, &kt, &vt, &ot, &params, workspace, NULL);
    if (status != PBSA_SUCCESS || err != CL_SUCCESS) {
        fprintf(stderr, "paged_prefill: %s (status %d, OpenCL %d)\n",
                pbsa_context_last_error(ctx), status, err);
        return 1;
    }
    err = clEnqueueReadBuffer(queue, o_mem, CL_TRUE, 0, q_count * sizeof *o, o, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err =
            clEnqueueReadBuffer(queue, lse_mem, CL_TRUE, 0, rows * sizeof *lse, lse, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return 1;

    /* The check: the float64 reference of the same call. Its permutation may order keys of
     * nearly equal scores differently from the device, so the outputs agree to about 1e-3. */
    pbsa_host_tensor hq = {q, PBSA_DTYPE_F32, 1, HEADS, total, HEAD_DIM,
                           qt.stride_batch, qt.stride_head, qt.stride_seq};
    pbsa_host_tensor hk = {k, PBSA_DTYPE_F32, POOL_PAGES, KV_HEADS, PAGE_SIZE, HEAD_DIM,
                           kt.stride_batch, kt.stride_head, kt.stride_seq};
    pbsa_host_tensor hv = hk;
    hv.data = v;
    status = pbsa_ref_pbs_attention_lse(&hq, &hk, &hv, &params, expected, NULL, NULL, expected_lse);
    if (status != PBSA_SUCCESS)
        return 1;
    double lse_error = 0.0;
    for (size_t r = 0; r < rows; r++)
        lse_error = fmax(lse_error, fabs(lse[r] - expected_lse[r]));
    double error = 0.0, norm = 0.0;
    for (int h = 0; h < HEADS; h++)
        for (int t = 0; t < total; t++)
            for (int d = 0; d < HEAD_DIM; d++) {
                const double want = expected[((size_t)h * total + t) * HEAD_DIM + d];
                const double got = o[((size_t)t * HEADS + h) * HEAD_DIM + d];
                error += (got - want) * (got - want);
                norm += want * want;
            }
    const double rel_l2 = sqrt(error / norm);
    printf("paged_prefill: %d sequences (%d and %d tokens) in pages of %d, PBS prefill on %s: "
           "relative L2 error %.2e, log-sum-exp error %.2e against the float64 reference\n",
           SEQUENCES, lengths[0], lengths[1], PAGE_SIZE,
           pbsa_context_uses_tensor_cores(ctx) ? "tensor cores" : "the portable kernels", rel_l2,
           lse_error);

    pbsa_context_release(ctx);
    cl_mem buffers[] = {q_mem,          o_mem,     k_mem,   v_mem,    q_offsets_mem,
                        kv_offsets_mem, table_mem, lse_mem, workspace};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        clReleaseMemObject(buffers[i]);
    clReleaseCommandQueue(queue);
    clReleaseContext(context);
    free(q);
    free(o);
    free(k);
    free(v);
    free(lse);
    free(expected);
    free(expected_lse);
    return rel_l2 < 1e-3 && lse_error < 1e-3 ? 0 : 1;
}
