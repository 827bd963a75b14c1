/* The NVIDIA tensor-core path: whether a context may use it, decided once at context creation by
 * compiling and running a probe kernel (cl/mma_probe.cl) and checking its result exactly. */
#include "core/internal.h"
#include "pbsattn_ref.h"

#include <stdlib.h>
#include <string.h>

static const char *const probe_files[] = {"mma_ptx.cl", "mma_probe.cl"};

enum { PROBE_M = 16, PROBE_N = 8, PROBE_K = 16 };

/* Small integers: exact in bf16 and in the fp32 products. */
static float probe_a(int i, int k) { return (float)((i * 3 + k * 5) % 7 - 3); }
static float probe_b(int k, int j) { return (float)((k * 2 + j * 3) % 5 - 2); }

static bool run_probe(pbsa_context *ctx)
{
    cl_uint a[PROBE_M * PROBE_K / 2], b[PROBE_N * PROBE_K / 2];
    for (int i = 0; i < PROBE_M; i++)
        for (int w = 0; w < PROBE_K / 2; w++)
            a[i * 8 + w] = pbsa_ref_float_to_bf16(probe_a(i, 2 * w)) |
                           (cl_uint)pbsa_ref_float_to_bf16(probe_a(i, 2 * w + 1)) << 16;
    for (int j = 0; j < PROBE_N; j++)
        for (int w = 0; w < PROBE_K / 2; w++)
            b[j * 8 + w] = pbsa_ref_float_to_bf16(probe_b(2 * w, j)) |
                           (cl_uint)pbsa_ref_float_to_bf16(probe_b(2 * w + 1, j)) << 16;
    cl_kernel kernel;
    if (pbsa_get_kernel(ctx, probe_files, 2, "-DDTYPE_BF16", "mma_probe", &kernel) != PBSA_SUCCESS)
        return false;
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(ctx->cl_ctx, ctx->device, 0, &err);
    cl_mem buffers[3] = {NULL, NULL, NULL};
    if (err == CL_SUCCESS)
        buffers[0] = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof a,
                                    a, &err);
    if (err == CL_SUCCESS)
        buffers[1] = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof b,
                                    b, &err);
    if (err == CL_SUCCESS)
        buffers[2] = clCreateBuffer(ctx->cl_ctx, CL_MEM_WRITE_ONLY,
                                    PROBE_M * PROBE_N * sizeof(float), NULL, &err);
    float c[PROBE_M * PROBE_N];
    size_t size = 32;
    for (int i = 0; i < 3 && err == CL_SUCCESS; i++)
        err = clSetKernelArg(kernel, (cl_uint)i, sizeof(cl_mem), &buffers[i]);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &size, &size, 0, NULL, NULL);
    if (err == CL_SUCCESS)
        err = clEnqueueReadBuffer(queue, buffers[2], CL_TRUE, 0, sizeof c, c, 0, NULL, NULL);
    bool exact = err == CL_SUCCESS;
    for (int i = 0; exact && i < PROBE_M; i++)
        for (int j = 0; exact && j < PROBE_N; j++) {
            float expected = 0.0f;
            for (int kk = 0; kk < PROBE_K; kk++)
                expected += probe_a(i, kk) * probe_b(kk, j);
            exact = c[i * PROBE_N + j] == expected;
        }
    for (int i = 0; i < 3; i++)
        if (buffers[i])
            clReleaseMemObject(buffers[i]);
    if (queue)
        clReleaseCommandQueue(queue);
    clReleaseKernel(kernel);
    return exact;
}

bool pbsa_tensor_core_decide(pbsa_context *ctx)
{
    if (!ctx->info.tensor_core_capable)
        return false;
    if (ctx->options.force_portable || ctx->env.force_portable) {
        pbsa_log(PBSA_LOG_INFO, "%s: portable kernels forced", ctx->info.name);
        return false;
    }
    bool ok = run_probe(ctx);
    /* A failed probe is not the caller's error: clear what it left and say why in the log. */
    pbsa_clear_error(ctx);
    pbsa_log(ok ? PBSA_LOG_INFO : PBSA_LOG_WARNING,
             ok ? "%s: tensor-core probe passed; using the mma.sync kernels"
                : "%s: tensor-core probe failed; using the portable kernels",
             ctx->info.name);
    return ok;
}

int pbsa_context_uses_tensor_cores(const pbsa_context *ctx)
{
    return ctx && ctx->use_tensor_cores ? 1 : 0;
}
