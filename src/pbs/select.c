/* PBS stage 2: block means and threshold selection (cl/pbs_select.cl). */
#include "pbs/plan.h"

static const char *const select_files[] = {"common.cl", "sequence.cl", "pbs_select.cl"};

/* The work-group size of the sink and means kernels where their kernels allow it. */
enum { HELPER_WG = 64 };

static size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

/* Block means of x: of the queries, or (keys set) of the keys read through pi, stored
 * dimension-major for the selection kernel. The kernel takes x's dtype as an argument, so that
 * one program serves q and k of any dtypes. */
static int prepare_means(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                         const char *options, const pbsa_tensor *x, int out_heads, int blocks,
                         int keys, cl_mem pi, uint64_t pi_offset, cl_mem workspace,
                         pbsa_pbs_region means, pbsa_launch_chain *chain)
{
    cl_kernel kernel;
    size_t wg;
    int status = pbsa_get_fitted_kernel(ctx, select_files, 3, options, NULL, "pbs_block_means",
                                        HELPER_WG, 1, &kernel, &wg);
    if (status != PBSA_SUCCESS)
        return status;
    /* Key means read the KV head of each permutation head: one per group in per-query-head mode. */
    int heads_per_in = out_heads / (int)x->heads;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&a, x->buffer);
    pbsa_arg_i32(&a, (int32_t)x->dtype);
    pbsa_arg_tensor_layout(&a, x);
    pbsa_arg_i32(&a, out_heads);
    pbsa_arg_i32(&a, heads_per_in);
    pbsa_arg_i32(&a, plan->q_len);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_i32(&a, plan->block);
    pbsa_arg_i32(&a, blocks);
    pbsa_arg_mem(&a, pi);
    pbsa_arg_u64(&a, pi_offset);
    pbsa_arg_i32(&a, keys);
    pbsa_arg_region(&a, plan, workspace, means);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t global[2] = {round_up((size_t)blocks * (size_t)plan->head_dim, wg),
                        (size_t)plan->batch * (size_t)out_heads};
    size_t local[2] = {wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

int pbsa_pbs_prepare_selection(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                               const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                               uint64_t pi_offset, const pbsa_block_list *out,
                               cl_mem workspace, pbsa_launch_chain *chain)
{
    /* The selection's work-group size is a build option of the program, which the sink and
     * the means share: it is fitted first. */
    char options[256] = "";
    pbsa_append_option(options, sizeof options, "-DHEAD_DIM=%d -DSELECT_SIZE=%d -DCAUSAL=%d",
                       plan->head_dim, plan->select_size, plan->params.causal ? 1 : 0);
    cl_kernel select_kernel, kernel;
    size_t select_wg, sink_wg;
    int status = pbsa_get_fitted_kernel(ctx, select_files, 3, options, "SELECT_WG",
                                        "pbs_select_blocks", (size_t)plan->select_wg, 8,
                                        &select_kernel, &select_wg);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_append_option(options, sizeof options, " -DSELECT_WG=%zu", select_wg);
    status = pbsa_get_fitted_kernel(ctx, select_files, 3, options, NULL, "pbs_find_sink",
                                    HELPER_WG, 1, &kernel, &sink_wg);
    if (status != PBSA_SUCCESS) {
        clReleaseKernel(select_kernel);
        return status;
    }
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&a, pi);
    pbsa_arg_u64(&a, pi_offset);
    pbsa_arg_i32(&a, plan->q_len);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_i32(&a, plan->segment);
    pbsa_arg_i32(&a, plan->block);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_SINK);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t perm_rows = (size_t)plan->batch * (size_t)plan->perm_heads;
    size_t sink_global = perm_rows * sink_wg;
    status = pbsa_chain_add_kernel(ctx, fn, chain, &a, 1, &sink_global, &sink_wg);
    if (status == PBSA_SUCCESS)
        status = prepare_means(ctx, fn, plan, options, q, plan->q_heads, plan->q_blocks, 0, pi,
                               pi_offset, workspace, PBSA_REGION_Q_MEANS, chain);
    if (status == PBSA_SUCCESS)
        status = prepare_means(ctx, fn, plan, options, k, plan->perm_heads, plan->k_blocks, 1, pi,
                               pi_offset, workspace, PBSA_REGION_K_MEANS, chain);
    if (status != PBSA_SUCCESS) {
        clReleaseKernel(select_kernel);
        return status;
    }
    a = (pbsa_kernel_args){select_kernel, 0, CL_SUCCESS};
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_Q_MEANS);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_K_MEANS);
    pbsa_arg_region(&a, plan, workspace, PBSA_REGION_SINK);
    pbsa_arg_i32(&a, plan->q_heads);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_i32(&a, plan->q_blocks);
    pbsa_arg_i32(&a, plan->k_blocks);
    pbsa_arg_i32(&a, plan->segment / plan->block);
    pbsa_arg_f32(&a, plan->scale);
    pbsa_arg_f32(&a, plan->params.threshold);
    pbsa_arg_i32(&a, plan->params.force_first_block ? 1 : 0);
    pbsa_arg_mem(&a, out->counts);
    pbsa_arg_u64(&a, out->counts_offset);
    pbsa_arg_mem(&a, out->blocks);
    pbsa_arg_u64(&a, out->blocks_offset);
    pbsa_arg_i32(&a, plan->q_len);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_i32(&a, plan->block);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t global[2] = {(size_t)plan->q_blocks * select_wg,
                        (size_t)plan->batch * (size_t)plan->q_heads};
    size_t local[2] = {select_wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

/* Checks a block list for the plan's shapes. */
int pbsa_pbs_check_block_list(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                              const pbsa_block_list *list)
{
    if (!list)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: block list is NULL", fn);
    const uint64_t *count = plan->layout.count;
    int status = pbsa_check_int_buffer(ctx, fn, "blocks.counts", list->counts, list->counts_offset,
                                       count[PBSA_REGION_COUNTS]);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_int_buffer(ctx, fn, "blocks.blocks", list->blocks,
                                       list->blocks_offset, count[PBSA_REGION_BLOCKS]);
    return status;
}

int pbsa_block_selection(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                         const pbsa_tensor *k, const pbsa_params *params, cl_mem pi,
                         uint64_t pi_offset, const pbsa_block_list *out, cl_mem workspace,
                         cl_event *event)
{
    static const char fn[] = "pbsa_block_selection";
    pbsa_pbs_plan plan;
    int status = pbsa_pbs_begin(ctx, fn, PBSA_CHECK_CALL, queue, event, q, k, false, NULL, NULL,
                                params, &plan);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_check_pi(ctx, fn, &plan, pi, pi_offset);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_check_block_list(ctx, fn, &plan, out);
    cl_mem ws = NULL;
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_workspace_acquire(ctx, fn, &plan, workspace, &ws);
    if (status == PBSA_SUCCESS) {
        const uint64_t *count = plan.layout.count;
        const pbsa_span outputs[3] = {
            pbsa_int_span("out.counts", out->counts, out->counts_offset,
                          count[PBSA_REGION_COUNTS]),
            pbsa_int_span("out.blocks", out->blocks, out->blocks_offset,
                          count[PBSA_REGION_BLOCKS]),
            pbsa_int_span("workspace", ws, 0, plan.layout.total)};
        pbsa_span inputs[6] = {pbsa_tensor_span("q", q), pbsa_tensor_span("k", k),
                               pbsa_int_span("pi", pi, pi_offset, count[PBSA_REGION_PI])};
        const int input_count = 3 + pbsa_sequence_spans(&plan.seqs, inputs + 3);
        status = pbsa_check_disjoint(ctx, fn, outputs, workspace ? 3 : 2, inputs, input_count);
    }
    if (status != PBSA_SUCCESS) {
        if (ws)
            clReleaseMemObject(ws);
        return status;
    }
    pbsa_launch_chain chain = {.queue = queue};
    status = pbsa_pbs_prepare_selection(ctx, fn, &plan, q, k, pi, pi_offset, out, ws, &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_chain_enqueue(ctx, fn, &chain, event);
    pbsa_chain_release(&chain);
    clReleaseMemObject(ws);
    return status;
}
