/* pbsa_dense_attention(): argument checks, kernel variant selection and launch; and
 * pbsa_query_dense_support(), which runs the same checks and choice without the launch. */
#include "dense/attention.h"
#include "launch/launch_chain.h"

#include <math.h>
#include <stdio.h>

int pbsa_dense_check(pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                     cl_command_queue queue, const pbsa_tensor *q, const pbsa_tensor *k,
                     const pbsa_tensor *v, const pbsa_tensor *o, const pbsa_dense_params *params,
                     pbsa_dense_call *call)
{
    pbsa_dense_params p = params ? *params : (pbsa_dense_params){.causal = 1};
    int status = mode == PBSA_CHECK_CALL ? pbsa_check_queue(ctx, fn, queue) : PBSA_SUCCESS;
    if (status == PBSA_SUCCESS)
        status = pbsa_check_attention_tensors(ctx, fn, mode, q, k, v, o, p.varlen, p.paged_kv,
                                              &call->seqs);
    if (status == PBSA_SUCCESS)
        status = pbsa_check_lse(ctx, fn, q, p.lse, p.lse_offset);
    if (status == PBSA_SUCCESS) {
        const pbsa_span outputs[2] = {pbsa_tensor_span("o", o),
                                      pbsa_lse_span(q, p.lse, p.lse_offset)};
        pbsa_span inputs[6] = {pbsa_tensor_span("q", q), pbsa_tensor_span("k", k),
                               pbsa_tensor_span("v", v)};
        const int count = 3 + pbsa_sequence_spans(&call->seqs, inputs + 3);
        status = pbsa_check_disjoint(ctx, fn, outputs, 2, inputs, count);
    }
    if (status != PBSA_SUCCESS)
        return status;
    if (!isfinite(p.scale) || p.scale < 0.0f)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->scale = %g must be finite and >= 0 (0: 1/sqrt(D))", fn,
                         (double)p.scale);
    call->params = p;
    call->scale = p.scale > 0.0f ? p.scale : 1.0f / sqrtf((float)q->head_dim);

    const int head_dim = (int)q->head_dim;
    const pbsa_dtypes dtypes = {q->dtype, k->dtype, o->dtype};
    if (!pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &dtypes, head_dim, 0, p.causal,
                            pbsa_row_alignment(k, v), &call->dispatch))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: the device's local memory (%llu bytes) or work-group size (%zu) is "
                         "too small for head_dim %d",
                         fn, (unsigned long long)ctx->info.local_mem_bytes,
                         ctx->info.max_work_group_size, head_dim);
    call->groups_bh = (uint64_t)call->seqs.batch * (uint64_t)q->heads;
    if (call->groups_bh > INT32_MAX)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: %s x q.heads = %llu exceeds %d", fn,
                         p.varlen ? "varlen->batch" : "q.batch",
                         (unsigned long long)call->groups_bh, INT32_MAX);
    return PBSA_SUCCESS;
}

int pbsa_query_dense_support(pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                             const pbsa_tensor *v, const pbsa_tensor *o,
                             const pbsa_dense_params *params)
{
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "pbsa_dense_attention: ctx is NULL");
    pbsa_clear_error(ctx);
    pbsa_dense_call call;
    return pbsa_dense_check(ctx, "pbsa_dense_attention", PBSA_CHECK_QUERY, NULL, q, k, v, o, params,
                            &call);
}

int pbsa_dense_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                         const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                         const pbsa_dense_params *params, cl_event *event)
{
    static const char fn[] = "pbsa_dense_attention";
    if (event)
        *event = NULL;
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    pbsa_dense_call call;
    int status = pbsa_dense_check(ctx, fn, PBSA_CHECK_CALL, queue, q, k, v, o, params, &call);
    if (status != PBSA_SUCCESS)
        return status;

    /* Every family's kernel takes the same arguments; they differ in tiles and work-group size. */
    cl_kernel kernel;
    size_t wg, rows;
    status = pbsa_dispatch_kernel(ctx, &call.dispatch, "dense_attention", "", &kernel, &wg, &rows);
    if (status != PBSA_SUCCESS)
        return status;

    const pbsa_sequences *seqs = &call.seqs;
    pbsa_kernel_args args = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&args, q->buffer);
    pbsa_arg_mem(&args, k->buffer);
    pbsa_arg_mem(&args, v->buffer);
    pbsa_arg_mem(&args, o->buffer);
    pbsa_arg_tensor_layout(&args, q);
    pbsa_arg_tensor_layout(&args, k);
    pbsa_arg_tensor_layout(&args, v);
    pbsa_arg_tensor_layout(&args, o);
    pbsa_arg_i32(&args, (int32_t)q->heads);
    pbsa_arg_i32(&args, (int32_t)k->heads);
    pbsa_arg_i32(&args, seqs->q_len);
    pbsa_arg_i32(&args, seqs->kv_len);
    pbsa_arg_f32(&args, pbsa_scale_log2(call.scale));
    pbsa_arg_lse(&args, call.params.lse, call.params.lse_offset, q);
    pbsa_arg_sequences(&args, seqs);
    if (args.status != CL_SUCCESS) {
        clReleaseKernel(kernel);
        return pbsa_fail(ctx, args.status, "%s: clSetKernelArg failed (%d)", fn, args.status);
    }
    size_t tiles = ((size_t)seqs->q_len + rows - 1) / rows;
    size_t global[2] = {tiles * wg, (size_t)call.groups_bh};
    size_t local[2] = {wg, 1};
    return pbsa_enqueue_kernel(ctx, fn, queue, kernel, 2, global, local, NULL, event);
}
