/* Sequences the kernels of a multi-kernel operation through events, so the operation is also
 * correct on out-of-order queues and hands one event of its end to the caller. */
#include "pbs_plan.h"

int pbsa_chain_enqueue(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                       cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local)
{
    cl_event done = NULL;
    cl_int err = clEnqueueNDRangeKernel(chain->queue, kernel, dims, NULL, global, local,
                                        chain->last ? 1 : 0, chain->last ? &chain->last : NULL,
                                        &done);
    clReleaseKernel(kernel);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: clEnqueueNDRangeKernel failed (%d)", fn, err);
    if (chain->last)
        clReleaseEvent(chain->last);
    chain->last = done;
    return PBSA_SUCCESS;
}

void pbsa_chain_finish(pbsa_launch_chain *chain, cl_event *event)
{
    if (event)
        *event = chain->last;
    else if (chain->last)
        clReleaseEvent(chain->last);
    chain->last = NULL;
}
