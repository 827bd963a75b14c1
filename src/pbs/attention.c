/* PBS stage 3 (cl/pbs_attention.cl) and the whole pipeline: pbsa_attention(), its workspace and
 * what can be read back from it, and pbsa_query_attention_support(), which runs the pipeline's
 * checks and dispatch decisions without building or enqueueing. The pipeline reads K and V
 * through pi (gather) or, with the materialised method, from K' and V' copied by
 * src/pbs/gather.c; the stage call pbsa_sparse_attention() has no workspace and always gathers. */
#include "dense/attention.h"
#include "pbs/plan.h"

#include <inttypes.h>
#include <stdlib.h>

int pbsa_pbs_prepare_sparse(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                            const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                            const pbsa_tensor *o, cl_mem pi, uint64_t pi_offset,
                            const pbsa_block_list *blocks, bool materialised,
                            pbsa_launch_chain *chain)
{
    char sparse_options[128] = "";
    pbsa_sparse_options(sparse_options, sizeof sparse_options, plan->block, pi != NULL,
                        materialised);
    cl_kernel kernel;
    size_t wg, rows;
    int status = pbsa_dispatch_kernel(ctx, &plan->sparse, "pbs_attention", sparse_options,
                                      &kernel, &wg, &rows);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&a, q->buffer);
    pbsa_arg_mem(&a, k->buffer);
    pbsa_arg_mem(&a, v->buffer);
    pbsa_arg_mem(&a, o->buffer);
    pbsa_arg_tensor_layout(&a, q);
    pbsa_arg_tensor_layout(&a, k);
    pbsa_arg_tensor_layout(&a, v);
    pbsa_arg_tensor_layout(&a, o);
    pbsa_arg_i32(&a, plan->q_heads);
    pbsa_arg_i32(&a, (int)k->heads); /* Hp for materialised K' and V' */
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_i32(&a, plan->q_len);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_f32(&a, pbsa_scale_log2(plan->scale));
    /* Without pi the kernel never reads it; any valid buffer stands in. */
    pbsa_arg_mem(&a, pi ? pi : blocks->counts);
    pbsa_arg_u64(&a, pi ? pi_offset : 0);
    pbsa_arg_mem(&a, blocks->counts);
    pbsa_arg_u64(&a, blocks->counts_offset);
    pbsa_arg_mem(&a, blocks->blocks);
    pbsa_arg_u64(&a, blocks->blocks_offset);
    pbsa_arg_lse(&a, plan->params.lse, plan->params.lse_offset, q);
    pbsa_arg_sequences(&a, &plan->seqs);
    size_t tiles = (size_t)plan->q_blocks * ((size_t)plan->block / rows);
    size_t global[2] = {tiles * wg, (size_t)plan->batch * (size_t)plan->q_heads};
    size_t local[2] = {wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}

int pbsa_sparse_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                          const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                          const pbsa_params *params, cl_mem pi, uint64_t pi_offset,
                          const pbsa_block_list *blocks, cl_event *event)
{
    static const char fn[] = "pbsa_sparse_attention";
    pbsa_pbs_plan plan;
    int status =
        pbsa_pbs_begin(ctx, fn, PBSA_CHECK_CALL, queue, event, q, k, true, v, o, params, &plan);
    if (status == PBSA_SUCCESS && pi)
        status = pbsa_pbs_check_pi(ctx, fn, &plan, pi, pi_offset);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_check_block_list(ctx, fn, &plan, blocks);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_lse(ctx, fn, q, plan.params.lse, plan.params.lse_offset);
    if (status == PBSA_SUCCESS) {
        const uint64_t *count = plan.layout.count;
        const pbsa_span outputs[2] = {pbsa_tensor_span("o", o),
                                      pbsa_lse_span(q, plan.params.lse, plan.params.lse_offset)};
        pbsa_span inputs[9] = {
            pbsa_tensor_span("q", q),
            pbsa_tensor_span("k", k),
            pbsa_tensor_span("v", v),
            pbsa_int_span("blocks.counts", blocks->counts, blocks->counts_offset,
                          count[PBSA_REGION_COUNTS]),
            pbsa_int_span("blocks.blocks", blocks->blocks, blocks->blocks_offset,
                          count[PBSA_REGION_BLOCKS]),
            pbsa_int_span("pi", pi, pi_offset, count[PBSA_REGION_PI]),
        };
        int input_count = pi ? 6 : 5;
        input_count += pbsa_sequence_spans(&plan.seqs, inputs + input_count);
        status = pbsa_check_disjoint(ctx, fn, outputs, 2, inputs, input_count);
    }
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_launch_chain chain = {.queue = queue};
    status = pbsa_pbs_prepare_sparse(ctx, fn, &plan, q, k, v, o, pi, pi_offset, blocks, false,
                                     &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_chain_enqueue(ctx, fn, &chain, event);
    pbsa_chain_release(&chain);
    return status;
}

int pbsa_workspace_size(pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                        const pbsa_params *params, size_t *bytes)
{
    static const char fn[] = "pbsa_workspace_size";
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    if (!bytes)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: bytes is NULL", fn);
    pbsa_pbs_plan plan;
    int status = pbsa_pbs_plan_make(ctx, fn, PBSA_CHECK_CALL, q, k, NULL, NULL, params, &plan);
    if (status != PBSA_SUCCESS)
        return status;
    if (plan.layout.total > SIZE_MAX / 4)
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW, "%s: the workspace size overflows", fn);
    *bytes = (size_t)plan.layout.total * 4;
    return PBSA_SUCCESS;
}

/* The dense attention call of a PBS call at the short-sequence fallback. */
static pbsa_dense_params fallback_params(const pbsa_pbs_plan *plan)
{
    const pbsa_params *p = &plan->params;
    return (pbsa_dense_params){.causal = p->causal,
                               .scale = plan->scale,
                               .varlen = p->varlen,
                               .paged_kv = p->paged_kv,
                               .lse = p->lse,
                               .lse_offset = p->lse_offset};
}

/* The outputs of pbsa_attention() past its fallback (o, the log-sum-exp and the caller's
 * workspace, NULL when none) share no memory with each other or the inputs. */
static int check_outputs(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                         const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                         const pbsa_tensor *o, cl_mem workspace)
{
    const pbsa_params *p = &plan->params;
    int status = pbsa_check_lse(ctx, fn, q, p->lse, p->lse_offset);
    if (status != PBSA_SUCCESS)
        return status;
    const pbsa_span outputs[3] = {pbsa_tensor_span("o", o), pbsa_lse_span(q, p->lse, p->lse_offset),
                                  pbsa_int_span("workspace", workspace, 0, plan->layout.total)};
    pbsa_span inputs[6] = {pbsa_tensor_span("q", q), pbsa_tensor_span("k", k),
                           pbsa_tensor_span("v", v)};
    const int input_count = 3 + pbsa_sequence_spans(&plan->seqs, inputs + 3);
    return pbsa_check_disjoint(ctx, fn, outputs, 3, inputs, input_count);
}

int pbsa_query_attention_support(pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                                 const pbsa_tensor *v, const pbsa_tensor *o,
                                 const pbsa_params *params)
{
    static const char fn[] = "pbsa_attention";
    pbsa_pbs_plan plan;
    int status =
        pbsa_pbs_begin(ctx, fn, PBSA_CHECK_QUERY, NULL, NULL, q, k, true, v, o, params, &plan);
    if (status != PBSA_SUCCESS)
        return status;
    if (plan.fallback) {
        const pbsa_dense_params dense = fallback_params(&plan);
        pbsa_dense_call call;
        return pbsa_dense_check(ctx, "pbsa_dense_attention", PBSA_CHECK_QUERY, NULL, q, k, v, o,
                                &dense, &call);
    }
    return check_outputs(ctx, fn, &plan, q, k, v, o, NULL);
}

int pbsa_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                   const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                   const pbsa_params *params, cl_mem workspace, cl_event *event)
{
    static const char fn[] = "pbsa_attention";
    pbsa_pbs_plan plan;
    int status =
        pbsa_pbs_begin(ctx, fn, PBSA_CHECK_CALL, queue, event, q, k, true, v, o, params, &plan);
    if (status != PBSA_SUCCESS)
        return status;
    if (plan.fallback) {
        const pbsa_dense_params dense = fallback_params(&plan);
        return pbsa_dense_attention(ctx, queue, q, k, v, o, &dense, event);
    }
    cl_mem ws = NULL;
    status = pbsa_pbs_workspace_acquire(ctx, fn, &plan, workspace, &ws);
    if (status == PBSA_SUCCESS)
        status = check_outputs(ctx, fn, &plan, q, k, v, o, workspace);
    if (status != PBSA_SUCCESS) {
        if (ws)
            clReleaseMemObject(ws);
        return status;
    }
    /* Every kernel is prepared (compiled, arguments set) before the first is enqueued. */
    const uint64_t *start = plan.layout.start;
    const uint64_t pi = start[PBSA_REGION_PI];
    pbsa_block_list blocks = {ws, ws, start[PBSA_REGION_COUNTS], start[PBSA_REGION_BLOCKS]};
    pbsa_launch_chain chain = {.queue = queue};
    status = pbsa_pbs_prepare_permutation(ctx, fn, &plan, q, k, ws, pi, ws, &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_prepare_selection(ctx, fn, &plan, q, k, ws, pi, &blocks, ws, &chain);
    const bool materialised = plan.kv_method == PBSA_KV_MATERIALISED;
    pbsa_tensor k_perm, v_perm;
    if (status == PBSA_SUCCESS && materialised)
        status = pbsa_pbs_prepare_gather(ctx, fn, &plan, k, v, ws, pi, ws, &k_perm, &v_perm,
                                         &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_prepare_sparse(ctx, fn, &plan, q, materialised ? &k_perm : k,
                                         materialised ? &v_perm : v, o, ws, pi, &blocks,
                                         materialised, &chain);
    if (status == PBSA_SUCCESS)
        status = pbsa_chain_enqueue(ctx, fn, &chain, event);
    pbsa_chain_release(&chain);
    clReleaseMemObject(ws);
    return status;
}

int pbsa_workspace_read(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                        const pbsa_tensor *k, const pbsa_params *params, cl_mem workspace,
                        pbsa_workspace_part part, void *host, size_t capacity, size_t *size_out)
{
    static const char fn[] = "pbsa_workspace_read";
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    if (!host)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: host is NULL", fn);
    pbsa_pbs_plan plan;
    int status = pbsa_check_queue(ctx, fn, queue);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_plan_make(ctx, fn, PBSA_CHECK_CALL, q, k, NULL, NULL, params, &plan);
    if (status == PBSA_SUCCESS)
        status = pbsa_pbs_check_workspace(ctx, fn, &plan, workspace);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_pbs_region region;
    switch (part) {
    case PBSA_PART_PERMUTATION: region = PBSA_REGION_PI; break;
    case PBSA_PART_BLOCK_COUNTS: region = PBSA_REGION_COUNTS; break;
    case PBSA_PART_BLOCKS: region = PBSA_REGION_BLOCKS; break;
    default:
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: part = %d is not a pbsa_workspace_part",
                         fn, (int)part);
    }
    const uint64_t start = plan.layout.start[region];
    size_t bytes = (size_t)plan.layout.count[region] * 4;
    if (size_out)
        *size_out = bytes;
    if (capacity < bytes)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: capacity = %zu is below the %zu bytes "
                         "of the part", fn, capacity, bytes);
    cl_int err = clEnqueueReadBuffer(queue, workspace, CL_TRUE, (size_t)start * 4, bytes, host, 0,
                                     NULL, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: clEnqueueReadBuffer failed (%d)", fn, err);
    return PBSA_SUCCESS;
}

int pbsa_block_density(int64_t batch, int64_t q_heads, int64_t q_len, int64_t kv_len,
                       const pbsa_params *params, const cl_int *counts, double *density)
{
    static const char fn[] = "pbsa_block_density";
    if (!params || !counts || !density)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn,
                         !params ? "params" : !counts ? "counts" : "density");
    int64_t b = params->block_size;
    if (batch <= 0 || q_heads <= 0 || q_len <= 0 || kv_len < q_len || b <= 0 ||
        batch > INT32_MAX || q_heads > INT32_MAX || kv_len > INT32_MAX)
        return pbsa_fail(NULL, PBSA_ERROR_INVALID_VALUE,
                         "%s: needs batch, q_heads, q_len > 0, kv_len >= q_len and "
                         "params->block_size > 0", fn);
    int64_t q_blocks = (q_len + b - 1) / b, k_blocks = (kv_len + b - 1) / b;
    for (int64_t r = 0; r < batch * q_heads * q_blocks; r++)
        if (counts[r] < 0 || counts[r] > k_blocks)
            return pbsa_fail(NULL, PBSA_ERROR_INVALID_VALUE,
                             "%s: counts[%" PRId64 "] = %d is not in 0..%" PRId64
                             " (the key blocks)",
                             fn, r, (int)counts[r], k_blocks);
    /* Blocks that dense attention visits: up to the diagonal when causal, else all. */
    double visited = 0.0;
    for (int64_t i = 0; i < q_blocks; i++)
        visited += params->causal ? (double)(i + k_blocks - q_blocks + 1) : (double)k_blocks;
    for (int64_t bh = 0; bh < batch * q_heads; bh++) {
        double selected = 0.0;
        for (int64_t i = 0; i < q_blocks; i++)
            selected += counts[bh * q_blocks + i];
        density[bh] = selected / visited;
    }
    return PBSA_SUCCESS;
}
