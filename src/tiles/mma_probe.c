/* The NVIDIA tensor-core paths: whether a context may use them, decided once at context creation
 * by compiling and running probe kernels and checking their results exactly: mma.sync
 * (cl/mma_probe.cl) on compute capability 8.0 and up, then wgmma (cl/wgmma_probe.cl, rewritten
 * for sm_90a) on 9.0. */
#include "core/internal.h"
#include "pbsattn_ref.h"

#include <stdlib.h>

/* Small integers: exact in bf16 and in the fp32 products. */
static float probe_a(int i, int k) { return (float)((i * 3 + k * 5) % 7 - 3); }
static float probe_b(int k, int j) { return (float)((k * 2 + j * 3) % 5 - 2); }

/* Two bf16 values as one word, the first in the low half. */
static cl_uint bf16_pair(float lo, float hi)
{
    return pbsa_ref_float_to_bf16(lo) | (cl_uint)pbsa_ref_float_to_bf16(hi) << 16;
}

typedef struct probe_input {
    const void *data;
    size_t bytes;
} probe_input;

/* Runs kernel (one work-group of work_items) on the inputs and a float output of expected_count
 * elements, on a queue of its own; true when the output equals expected exactly. */
static bool probe_exact(pbsa_context *ctx, cl_kernel kernel, size_t work_items,
                        const probe_input *inputs, int input_count, const float *expected,
                        size_t expected_count)
{
    enum { MAX_BUFFERS = 4 };
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &err);
    cl_mem buffers[MAX_BUFFERS] = {NULL};
    const int count = input_count + 1;
    for (int i = 0; i < input_count && err == CL_SUCCESS; i++)
        buffers[i] = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                    inputs[i].bytes, (void *)inputs[i].data, &err);
    float *out = malloc(expected_count * sizeof *out);
    if (!out)
        err = CL_OUT_OF_HOST_MEMORY;
    if (err == CL_SUCCESS)
        buffers[input_count] = clCreateBuffer(ctx->cl_ctx, CL_MEM_WRITE_ONLY,
                                              expected_count * sizeof *out, NULL, &err);
    for (int i = 0; i < count && err == CL_SUCCESS; i++)
        err = clSetKernelArg(kernel, (cl_uint)i, sizeof(cl_mem), &buffers[i]);
    if (err == CL_SUCCESS)
        err =
            clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &work_items, &work_items, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(queue, buffers[input_count], CL_TRUE, 0,
                                  expected_count * sizeof *out, out, 0, NULL, NULL);
    bool exact = err == CL_SUCCESS;
    for (size_t i = 0; exact && i < expected_count; i++)
        exact = out[i] == expected[i];
    free(out);
    for (int i = 0; i < count; i++)
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
    if (queue)
        clReleaseCommandQueue(queue);
    return exact;
}

/* mma.sync m16n8k16: A (16x16) as row pairs, B given as B^T (8 rows of 16). */
static bool mma_sync_probe(pbsa_context *ctx)
{
    enum { M = 16, N = 8, K = 16 };
    static const char *const files[] = {"mma_ptx.cl", "mma_probe.cl"};
    cl_uint a[M * K / 2], b[N * K / 2];
    float expected[M * N];
    for (int i = 0; i < M; i++)
        for (int w = 0; w < K / 2; w++)
            a[i * 8 + w] = bf16_pair(probe_a(i, 2 * w), probe_a(i, 2 * w + 1));
    for (int j = 0; j < N; j++)
        for (int w = 0; w < K / 2; w++)
            b[j * 8 + w] = bf16_pair(probe_b(2 * w, j), probe_b(2 * w + 1, j));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            expected[i * N + j] = 0.0f;
            for (int kk = 0; kk < K; kk++)
                expected[i * N + j] += probe_a(i, kk) * probe_b(kk, j);
        }
    cl_kernel kernel;
    if (pbsa_get_kernel(ctx, files, 2, "-DKV_DTYPE=bf16", "mma_probe", &kernel) != PBSA_SUCCESS)
        return false;
    const probe_input inputs[] = {{a, sizeof a}, {b, sizeof b}};
    bool exact = probe_exact(ctx, kernel, 32, inputs, 2, expected, M * N);
    clReleaseKernel(kernel);
    return exact;
}

/* wgmma at the tiles' shape (cl/wgmma_probe.cl): c1 = A . K^T and c2 = A[:, :64] . V, A 64 x 128,
 * K and V 64 keys x 128 dims, row-major; K[key][d] = probe_b(d, key), V[key][d] = probe_b(key, d). */
static bool wgmma_probe(pbsa_context *ctx)
{
    enum { M = 64, KEYS = 64, DIMS = 128, WORDS = DIMS / 2 };
    static const char *const files[] = {"mma_ptx.cl", "wgmma_ptx.cl", "wgmma_probe.cl"};
    const size_t count = M * KEYS + M * DIMS, words = (size_t)M * WORDS;
    float *expected = malloc(count * sizeof *expected);
    cl_uint *a = malloc(3 * words * sizeof *a);
    if (!expected || !a) {
        free(expected);
        free(a);
        return false;
    }
    cl_uint *k = a + words, *v = k + words;
    for (int r = 0; r < M; r++)
        for (int w = 0; w < WORDS; w++) {
            a[r * WORDS + w] = bf16_pair(probe_a(r, 2 * w), probe_a(r, 2 * w + 1));
            k[r * WORDS + w] = bf16_pair(probe_b(2 * w, r), probe_b(2 * w + 1, r));
            v[r * WORDS + w] = bf16_pair(probe_b(r, 2 * w), probe_b(r, 2 * w + 1));
        }
    for (int i = 0; i < M; i++) {
        for (int key = 0; key < KEYS; key++) {
            float sum = 0.0f;
            for (int d = 0; d < DIMS; d++)
                sum += probe_a(i, d) * probe_b(d, key);
            expected[i * KEYS + key] = sum;
        }
        for (int d = 0; d < DIMS; d++) {
            float sum = 0.0f;
            for (int key = 0; key < KEYS; key++)
                sum += probe_a(i, key) * probe_b(key, d);
            expected[M * KEYS + i * DIMS + d] = sum;
        }
    }
    cl_kernel kernel;
    bool exact = false;
    if (pbsa_get_sm90a_kernel(ctx, files, 3, "-DKV_DTYPE=bf16", "wgmma_probe", &kernel) ==
        PBSA_SUCCESS) {
        const size_t bytes = words * sizeof *a;
        const probe_input inputs[] = {{a, bytes}, {k, bytes}, {v, bytes}};
        exact = probe_exact(ctx, kernel, 128, inputs, 3, expected, count);
        clReleaseKernel(kernel);
    } else {
        pbsa_log(PBSA_LOG_WARNING, "%s: %s\n%s", ctx->info.name, pbsa_context_last_error(ctx),
                 ctx->build_log ? ctx->build_log : "");
    }
    free(expected);
    free(a);
    return exact;
}

void pbsa_tensor_core_decide(pbsa_context *ctx)
{
    ctx->use_tensor_cores = false;
    ctx->use_wgmma = false;
    if (!ctx->info.tensor_core_capable)
        return;
    if (ctx->options.force_portable || ctx->env.force_portable) {
        pbsa_log(PBSA_LOG_INFO, "%s: portable kernels forced", ctx->info.name);
        return;
    }
    ctx->use_tensor_cores = mma_sync_probe(ctx);
    /* A failed probe is not the caller's error: clear what it left and say why in the log. */
    pbsa_clear_error(ctx);
    if (!ctx->use_tensor_cores) {
        pbsa_log(PBSA_LOG_WARNING, "%s: tensor-core probe failed; using the portable kernels",
                 ctx->info.name);
        return;
    }
    /* The wgmma tiles made dense attention 1.4x and PBS 1.16x as fast as mma.sync on the H100 at
     * 32K (bench/NOTES.md). */
    if (ctx->info.nv_compute_major == 9 && !ctx->env.no_wgmma) {
        ctx->use_wgmma = wgmma_probe(ctx);
        pbsa_clear_error(ctx);
        if (!ctx->use_wgmma)
            pbsa_log(PBSA_LOG_WARNING, "%s: wgmma probe failed; using mma.sync", ctx->info.name);
    }
    pbsa_log(PBSA_LOG_INFO, "%s: tensor-core probe passed; using the %s kernels", ctx->info.name,
             ctx->use_wgmma ? "wgmma" : "mma.sync");
}

int pbsa_context_uses_tensor_cores(const pbsa_context *ctx)
{
    return ctx && ctx->use_tensor_cores ? 1 : 0;
}

pbsa_tensor_core_path pbsa_context_tensor_core_path(const pbsa_context *ctx)
{
    if (!ctx || !ctx->use_tensor_cores)
        return PBSA_TENSOR_CORES_NONE;
    return ctx->use_wgmma ? PBSA_TENSOR_CORES_WGMMA : PBSA_TENSOR_CORES_MMA_SYNC;
}
