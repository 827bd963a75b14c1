/* PBS stage 1: permutation scores (the fused kernels of cl/pbs_scores.cl, or through CLBlast in
 * src/pbs/scores_clblast.c) and the segmented sort (cl/pbs_sort.cl). */
#include "pbs/plan.h"


static const char *const sort_files[] = {"sequence.cl", "pbs_sort.cl"};

enum { SORT_WG_MAX = 256, REDUCE_WG = 64 };

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* The leading arguments of both score kernels: Q, K, their layouts and the sizes. */
static void score_inputs(pbsa_kernel_args *a, const pbsa_pbs_plan *plan, const pbsa_tensor *q,
                         const pbsa_tensor *k)
{
    pbsa_arg_mem(a, q->buffer);
    pbsa_arg_mem(a, k->buffer);
    pbsa_arg_tensor_layout(a, q);
    pbsa_arg_tensor_layout(a, k);
    pbsa_arg_i32(a, plan->q_heads);
    pbsa_arg_i32(a, plan->kv_heads);
    pbsa_arg_i32(a, plan->q_len);
    pbsa_arg_i32(a, plan->last_rows);
    pbsa_arg_i32(a, plan->key_count);
    pbsa_arg_i32(a, plan->kv_len);
    pbsa_arg_i32(a, plan->segment);
    pbsa_arg_f32(a, pbsa_scale_log2(plan->scale));
}

static int prepare_scores_fused(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                const pbsa_tensor *q, const pbsa_tensor *k,
                                cl_mem workspace, pbsa_launch_chain *chain)
{
    /* The two tile kernels run on the plan's family; the reduction does not depend on the tiles
     * and runs from the portable program. */
    const size_t tiles = (size_t)plan->score_tiles;
    const int q_rows = plan->batch * plan->q_heads;

    cl_kernel kernel;
    size_t wg, rows, reduce_wg;
    int status = pbsa_dispatch_kernel(ctx, &plan->scores, "pbs_score_stats", "", &kernel, &wg,
                                      &rows);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    score_inputs(&a, plan, q, k);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_PARTIALS);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t global[2] = {tiles * wg, (size_t)q_rows}, local[2] = {wg, 1};
    status = pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
    if (status != PBSA_SUCCESS)
        return status;

    /* The reduction's work-group is its own, not the tiles': fitted to its kernel's limit. */
    status = pbsa_dispatch_build(ctx, &plan->scores_reduce, "pbs_score_stats_reduce", "",
                                 &kernel);
    if (status != PBSA_SUCCESS)
        return status;
    reduce_wg = pbsa_fitted_group_size(ctx, kernel, REDUCE_WG);
    const int stat_rows = q_rows * plan->last_rows;
    a = (pbsa_kernel_args){kernel, 0, CL_SUCCESS};
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_PARTIALS);
    pbsa_arg_i32(&a, plan->score_tiles);
    pbsa_arg_i32(&a, stat_rows);
    pbsa_arg_f32(&a, pbsa_scale_log2(plan->scale));
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_STATS);
    size_t reduce_global = round_up((size_t)stat_rows, reduce_wg);
    status = pbsa_chain_add_kernel(ctx, fn, chain, &a, 1, &reduce_global, &reduce_wg);
    if (status != PBSA_SUCCESS)
        return status;

    status = pbsa_dispatch_kernel(ctx, &plan->scores, "pbs_scores", "", &kernel, &wg, &rows);
    if (status != PBSA_SUCCESS)
        return status;
    a = (pbsa_kernel_args){kernel, 0, CL_SUCCESS};
    score_inputs(&a, plan, q, k);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_STATS);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_SCORES);
    pbsa_arg_sequences(&a, &plan->seqs);
    global[1] = (size_t)plan->batch * (size_t)plan->perm_heads;
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

int pbsa_pbs_prepare_permutation(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                 const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                                 uint64_t pi_offset, cl_mem workspace,
                                 pbsa_launch_chain *chain)
{
    if (!plan->identity) {
        int status = plan->score_method == PBSA_SCORE_CLBLAST
                         ? pbsa_pbs_prepare_scores_clblast(ctx, fn, plan, q, k, workspace, chain)
                         : prepare_scores_fused(ctx, fn, plan, q, k, workspace, chain);
        if (status != PBSA_SUCCESS)
            return status;
    }
    size_t sort_wg = (size_t)plan->sort_size / 2;
    if (sort_wg > SORT_WG_MAX)
        sort_wg = SORT_WG_MAX;
    if (sort_wg > ctx->info.max_work_group_size)
        sort_wg = ctx->info.max_work_group_size;
    char options[128] = "";
    pbsa_append_option(options, sizeof options, "-DSORT_SIZE=%d", plan->sort_size);
    cl_kernel kernel;
    int status = pbsa_get_fitted_kernel(ctx, sort_files, 2, options, "SORT_WG",
                                        "pbs_segment_sort", sort_wg, 1, &kernel, &sort_wg);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_SCORES);
    pbsa_arg_mem(&a, pi);
    pbsa_arg_u64(&a, pi_offset);
    pbsa_arg_i32(&a, plan->q_len);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_i32(&a, plan->segment);
    pbsa_arg_i32(&a, plan->segments);
    pbsa_arg_i32(&a, plan->identity ? 1 : 0);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t groups = ((size_t)plan->kv_len + (size_t)plan->segment - 1) / (size_t)plan->segment;
    size_t global[2] = {groups * sort_wg, (size_t)plan->batch * (size_t)plan->perm_heads};
    size_t local[2] = {sort_wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

int pbsa_permutation(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                     const pbsa_tensor *k, const pbsa_params *params, cl_mem pi,
                     uint64_t pi_offset, cl_mem workspace, cl_event *event)
{
    static const char fn[] = "pbsa_permutation";
    pbsa_pbs_plan plan;
    int status = pbsa_pbs_begin(ctx, fn, PBSA_CHECK_CALL, queue, event, q, k, false, NULL, NULL,
                                params, &plan);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_check_pi(ctx, fn, &plan, pi, pi_offset);
    cl_mem ws = NULL;
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_workspace_acquire(ctx, fn, &plan, workspace, &ws);
    if (status == PBSA_SUCCESS) {
        const pbsa_span outputs[2] = {
            pbsa_int_span("pi", pi, pi_offset, plan.layout.count[PBSA_REGION_PI]),
            pbsa_int_span("workspace", ws, 0, plan.layout.total)};
        pbsa_span inputs[5] = {pbsa_tensor_span("q", q), pbsa_tensor_span("k", k)};
        const int input_count = 2 + pbsa_sequence_spans(&plan.seqs, inputs + 2);
        status = pbsa_check_disjoint(ctx, fn, outputs, workspace ? 2 : 1, inputs, input_count);
    }
    if (status != PBSA_SUCCESS) {
        if (ws)
            clReleaseMemObject(ws);
        return status;
    }
    pbsa_launch_chain chain = {.queue = queue};
    status = pbsa_pbs_prepare_permutation(ctx, fn, &plan, q, k, pi, pi_offset, ws, &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_chain_enqueue(ctx, fn, &chain, event);
    pbsa_chain_release(&chain);
    clReleaseMemObject(ws);
    return status;
}
