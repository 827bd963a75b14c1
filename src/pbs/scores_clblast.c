/* PBS stage 1a through CLBlast: the permutation scores as one strided-batched SGEMM per chunk of
 * KV rows, between the kernels of cl/pbs_scores_clblast.cl (transposition into fp32 before, row
 * softmax statistics and column means after). The result is the scores region the sort reads,
 * as cl/pbs_scores.cl's fused kernels write it. */
#include "pbs/plan.h"

#include <clblast_c.h>
#include <stdio.h>

static const char *const gemm_files[] = {"common.cl", "pbs_scores_clblast.cl"};

enum { MEANS_WG = 64 };

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* One GEMM of the chunk: per unit, logits [rows, keys] = qt^T kt, in CLBlast's column-major terms
 * C [keys x rows] = A [keys x D] * B [D x rows] with A = kt and B given as its transpose qt.
 * The logits sit at offset 0 of the workspace; qt and kt have padded rows, so CLBlast copies
 * them (see PBSA_REGION_LOGITS). */
typedef struct gemm_call {
    cl_mem workspace;
    size_t qt, kt, logits; /* element offsets in the workspace */
    size_t keys, rows, units;
    size_t head_dim;
} gemm_call;

/* The pbsa status of a CLBlast status: OpenCL codes pass through, a CLBlast kernel build
 * failure is a build failure, CLBlast's own codes mean it cannot serve this device or request. */
static int clblast_fail(pbsa_context *ctx, const char *fn, CLBlastStatusCode code)
{
    int status = code == CLBlastOpenCLBuildProgramFailure ? PBSA_ERROR_BUILD_FAILED
                 : code > CLBlastNotImplemented          ? (int)code
                                                         : PBSA_ERROR_UNSUPPORTED_DEVICE;
    return pbsa_fail(ctx, status,
                     "%s: CLBlast SGEMM (strided batched) failed with CLBlast status %d", fn,
                     (int)code);
}

/* The GEMM of a chunk of units KV rows. */
static gemm_call gemm_of(const pbsa_pbs_plan *plan, cl_mem workspace, int units)
{
    const uint64_t *start = plan->layout.start;
    gemm_call g = {workspace,
                   (size_t)start[PBSA_REGION_GEMM_Q],
                   (size_t)start[PBSA_REGION_GEMM_K],
                   (size_t)start[PBSA_REGION_LOGITS],
                   (size_t)plan->key_count,
                   (size_t)plan->last_rows * (size_t)(plan->q_heads / plan->kv_heads),
                   (size_t)units,
                   (size_t)plan->head_dim};
    return g;
}

static CLBlastStatusCode run_gemm(const gemm_call *g, size_t units, cl_command_queue *queue,
                                  cl_event *done)
{
    return CLBlastSgemmStridedBatched(
        CLBlastLayoutColMajor, CLBlastTransposeNo, CLBlastTransposeYes, g->keys, g->rows,
        g->head_dim, 1.0f, g->workspace, g->kt, g->keys + PBSA_GEMM_LD_PAD,
        (g->keys + PBSA_GEMM_LD_PAD) * g->head_dim, g->workspace, g->qt,
        g->rows + PBSA_GEMM_LD_PAD, (g->rows + PBSA_GEMM_LD_PAD) * g->head_dim, 0.0f,
        g->workspace, g->logits, g->keys, g->keys * g->rows, units, queue, done);
}

static int gemm_step(pbsa_context *ctx, const char *fn, cl_command_queue queue, const void *data,
                     cl_event *done)
{
    CLBlastStatusCode code = run_gemm(data, ((const gemm_call *)data)->units, &queue, done);
    return code == CLBlastSuccess ? PBSA_SUCCESS : clblast_fail(ctx, fn, code);
}

/* Has CLBlast build (or find in its cache) the program of the GEMM without enqueuing anything:
 * it compiles when the routine is created and only then rejects a batch count of 0. */
static int prepare_clblast(pbsa_context *ctx, const char *fn, const gemm_call *g,
                           cl_command_queue queue)
{
    CLBlastStatusCode code = run_gemm(g, 0, &queue, NULL);
    return code == CLBlastInvalidBatchCount ? PBSA_SUCCESS : clblast_fail(ctx, fn, code);
}

/* The program's options with its two work-group sizes, both build options, fitted to their
 * kernels: the statistics' STATS_WG (pbsa_get_fitted_kernel()) and the transposition's TILE x
 * TILE, halved until its kernel allows it. Programs are cached, so later calls build nothing. */
static int fit_sizes(pbsa_context *ctx, const pbsa_pbs_plan *plan, char *options, size_t capacity,
                     size_t *tile, size_t *stats_wg)
{
    for (*tile = (size_t)plan->gemm_tile;; *tile /= 2) {
        snprintf(options, capacity, "-DHEAD_DIM=%d -DTILE=%zu", plan->head_dim, *tile);
        cl_kernel kernel;
        int status = pbsa_get_fitted_kernel(ctx, gemm_files, 2, options, "STATS_WG",
                                            "pbs_gemm_row_stats", (size_t)plan->gemm_stats_wg,
                                            1, &kernel, stats_wg);
        if (status != PBSA_SUCCESS)
            return status;
        clReleaseKernel(kernel);
        pbsa_append_option(options, capacity, " -DSTATS_WG=%zu", *stats_wg);
        status = pbsa_get_kernel(ctx, gemm_files, 2, options, "pbs_gemm_transpose", &kernel);
        if (status != PBSA_SUCCESS)
            return status;
        const size_t limit = pbsa_kernel_group_limit(ctx, kernel);
        clReleaseKernel(kernel);
        if (*tile * *tile <= limit)
            return PBSA_SUCCESS;
        if (*tile == 1)
            return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                             "kernel pbs_gemm_transpose allows no work-item on this device");
    }
}

/* Transposes rows of a tensor's heads into fp32 for the units of a chunk. */
static int add_transpose(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                         const char *options, size_t tile, const pbsa_tensor *x, int heads_per_unit,
                         int first_unit, int units, int first_row, int rows, cl_mem workspace,
                         pbsa_pbs_region dst, pbsa_launch_chain *chain)
{
    cl_kernel kernel;
    int status = pbsa_get_kernel(ctx, gemm_files, 2, options, "pbs_gemm_transpose", &kernel);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&a, x->buffer);
    pbsa_arg_i32(&a, (int32_t)x->dtype); /* one program transposes q and k of any dtypes */
    pbsa_arg_tensor_layout(&a, x);
    pbsa_arg_i32(&a, plan->kv_heads);
    pbsa_arg_i32(&a, heads_per_unit);
    pbsa_arg_i32(&a, first_unit);
    pbsa_arg_i32(&a, first_row);
    pbsa_arg_i32(&a, rows);
    pbsa_arg_region(&a, plan, workspace, dst);
    pbsa_arg_i32(&a, heads_per_unit * rows + PBSA_GEMM_LD_PAD);
    size_t global[3] = {round_up((size_t)rows, tile), (size_t)plan->head_dim,
                        (size_t)units * (size_t)heads_per_unit};
    size_t local[3] = {tile, tile, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 3, global, local);
}

/* The five steps of one chunk: transpose Q and K, GEMM, row statistics, column means. */
static int add_chunk(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                     const char *options, size_t tile, size_t stats_wg, const pbsa_tensor *q,
                     const pbsa_tensor *k,
                     cl_mem workspace, int first_unit, int units, pbsa_launch_chain *chain)
{
    const int group = plan->q_heads / plan->kv_heads;
    const int unit_rows = group * plan->last_rows;
    int status = add_transpose(ctx, fn, plan, options, tile, q, group, first_unit, units,
                               plan->q_len - plan->last_rows, plan->last_rows, workspace,
                               PBSA_REGION_GEMM_Q, chain);
    if (status == PBSA_SUCCESS)
        status = add_transpose(ctx, fn, plan, options, tile, k, 1, first_unit, units, 0,
                               plan->key_count, workspace, PBSA_REGION_GEMM_K, chain);
    gemm_call g = gemm_of(plan, workspace, units);
    if (status == PBSA_SUCCESS)
        status = pbsa_chain_add_call(ctx, fn, chain, gemm_step, &g, sizeof g);
    if (status != PBSA_SUCCESS)
        return status;

    cl_kernel kernel;
    status = pbsa_get_kernel(ctx, gemm_files, 2, options, "pbs_gemm_row_stats", &kernel);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_LOGITS);
    pbsa_arg_i32(&a, plan->key_count);
    pbsa_arg_i32(&a, first_unit * unit_rows);
    pbsa_arg_f32(&a, pbsa_scale_log2(plan->scale));
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_STATS);
    size_t stats_global = (size_t)units * (size_t)unit_rows * stats_wg;
    status = pbsa_chain_add_kernel(ctx, fn, chain, &a, 1, &stats_global, &stats_wg);
    if (status != PBSA_SUCCESS)
        return status;

    size_t means_wg;
    status = pbsa_get_fitted_kernel(ctx, gemm_files, 2, options, NULL, "pbs_gemm_column_means",
                                    MEANS_WG, 1, &kernel, &means_wg);
    if (status != PBSA_SUCCESS)
        return status;
    const int perms_per_unit = plan->perm_heads == plan->q_heads ? group : 1;
    a = (pbsa_kernel_args){kernel, 0, CL_SUCCESS};
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_LOGITS);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_STATS);
    pbsa_arg_i32(&a, plan->q_heads);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_i32(&a, plan->last_rows);
    pbsa_arg_i32(&a, plan->key_count);
    pbsa_arg_i32(&a, first_unit * perms_per_unit);
    pbsa_arg_f32(&a, pbsa_scale_log2(plan->scale));
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_SCORES);
    size_t global[2] = {round_up((size_t)plan->key_count, means_wg),
                        (size_t)units * (size_t)perms_per_unit};
    size_t local[2] = {means_wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

int pbsa_pbs_prepare_scores_clblast(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                    const pbsa_tensor *q, const pbsa_tensor *k,
                                    cl_mem workspace, pbsa_launch_chain *chain)
{
    char options[256];
    size_t tile, stats_wg;
    int status = fit_sizes(ctx, plan, options, sizeof options, &tile, &stats_wg);
    const gemm_call probe = gemm_of(plan, workspace, 0);
    if (status == PBSA_SUCCESS)
        status = prepare_clblast(ctx, fn, &probe, chain->queue);
    const int units = plan->batch * plan->kv_heads;
    for (int first = 0; first < units && status == PBSA_SUCCESS; first += plan->gemm_units) {
        int count = units - first < plan->gemm_units ? units - first : plan->gemm_units;
        status = add_chunk(ctx, fn, plan, options, tile, stats_wg, q, k, workspace, first, count,
                           chain);
    }
    return status;
}
