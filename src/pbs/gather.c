/* PBS stage 3, materialised form: copies K' = K[pi] and V' = V[pi] into the workspace
 * (cl/pbs_gather.cl) for the sparse kernel to read contiguously. */
#include "pbs/plan.h"

static const char *const gather_files[] = {"pbs_gather.cl"};

enum { GATHER_WG = 256 };

int pbsa_pbs_prepare_gather(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                            const pbsa_tensor *k, const pbsa_tensor *v, cl_mem pi,
                            uint64_t pi_offset, cl_mem workspace,
                            pbsa_tensor *k_perm, pbsa_tensor *v_perm, pbsa_launch_chain *chain)
{
    /* Both live in the workspace itself, at their regions' offsets (in elements of K's dtype). */
    const size_t element_bytes = pbsa_dtype_size(plan->dtypes.kv);
    const uint64_t per_word = 4 / element_bytes;
    *k_perm = pbsa_tensor_bhsd(workspace, plan->dtypes.kv, plan->batch, plan->perm_heads,
                               plan->kv_len, plan->head_dim);
    *v_perm = *k_perm;
    k_perm->offset = plan->layout.start[PBSA_REGION_K_PERM] * per_word;
    v_perm->offset = plan->layout.start[PBSA_REGION_V_PERM] * per_word;
    char options[128] = "";
    pbsa_append_option(options, sizeof options, "-DELEMENT_BYTES=%zu -DHEAD_DIM=%d", element_bytes,
                       plan->head_dim);
    cl_kernel kernel;
    size_t wg;
    int status = pbsa_get_fitted_kernel(ctx, gather_files, 1, options, NULL, "pbs_gather_kv",
                                        GATHER_WG, 1, &kernel, &wg);
    if (status != PBSA_SUCCESS)
        return status;
    pbsa_kernel_args a = {kernel, 0, CL_SUCCESS};
    pbsa_arg_mem(&a, k->buffer);
    pbsa_arg_mem(&a, v->buffer);
    pbsa_arg_tensor_layout(&a, k);
    pbsa_arg_tensor_layout(&a, v);
    pbsa_arg_i32(&a, plan->q_heads);
    pbsa_arg_i32(&a, plan->kv_heads);
    pbsa_arg_i32(&a, plan->perm_heads);
    pbsa_arg_i32(&a, plan->kv_len);
    pbsa_arg_mem(&a, pi);
    pbsa_arg_u64(&a, pi_offset);
    pbsa_arg_mem(&a, workspace);
    pbsa_arg_u64(&a, k_perm->offset);
    pbsa_arg_u64(&a, v_perm->offset);
    size_t items = (size_t)plan->kv_len * (size_t)(plan->head_dim / 4);
    size_t global[2] = {(items + wg - 1) / wg * wg, (size_t)plan->batch * (size_t)plan->perm_heads};
    size_t local[2] = {wg, 1};
    return pbsa_chain_add_kernel(ctx, fn, chain, &a, 2, global, local);
}
