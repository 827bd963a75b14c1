/* Prepared kernel launches and library calls of a multi-kernel operation, enqueued together and
 * sequenced through events, so the operation is also correct on out-of-order queues. */
#include "launch/launch_chain.h"

#include <stdlib.h>
#include <string.h>

struct pbsa_step {
    cl_kernel kernel; /* NULL for a call step */
    cl_uint dims;
    size_t global[3], local[3];
    pbsa_step_call call;
    void *data;
};

static void step_release(pbsa_step *step)
{
    if (step->kernel)
        clReleaseKernel(step->kernel);
    free(step->data);
    memset(step, 0, sizeof *step);
}

/* A new zeroed step at the end of the chain, or NULL when out of host memory. */
static pbsa_step *append(pbsa_launch_chain *chain)
{
    if (chain->count == chain->capacity) {
        size_t capacity = chain->capacity ? 2 * chain->capacity : 8;
        pbsa_step *steps = realloc(chain->steps, capacity * sizeof *steps);
        if (!steps)
            return NULL;
        chain->steps = steps;
        chain->capacity = capacity;
    }
    pbsa_step *step = &chain->steps[chain->count++];
    memset(step, 0, sizeof *step);
    return step;
}

int pbsa_check_group_size(pbsa_context *ctx, const char *fn, cl_kernel kernel, size_t items)
{
    size_t allowed = 0;
    cl_int err = clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof allowed, &allowed, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: clGetKernelWorkGroupInfo failed (%d)", fn, err);
    if (items <= allowed)
        return PBSA_SUCCESS;
    char name[128] = "";
    clGetKernelInfo(kernel, CL_KERNEL_FUNCTION_NAME, sizeof name - 1, name, NULL);
    return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                     "%s: kernel %s allows work-groups of at most %zu work-items on this device; "
                     "it needs %zu",
                     fn, name, allowed, items);
}

int pbsa_chain_add_kernel(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                          const pbsa_kernel_args *args, cl_uint dims, const size_t *global,
                          const size_t *local)
{
    int status = PBSA_SUCCESS;
    if (args->status != CL_SUCCESS)
        status = pbsa_fail(ctx, args->status, "%s: clSetKernelArg failed (%d)", fn, args->status);
    size_t items = 1;
    for (cl_uint d = 0; d < dims; d++)
        items *= local[d];
    if (status == PBSA_SUCCESS)
        status = pbsa_check_group_size(ctx, fn, args->kernel, items);
    pbsa_step *step = status == PBSA_SUCCESS ? append(chain) : NULL;
    if (status == PBSA_SUCCESS && !step)
        status = pbsa_fail(ctx, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    if (status != PBSA_SUCCESS) {
        clReleaseKernel(args->kernel);
        return status;
    }
    step->kernel = args->kernel;
    step->dims = dims;
    for (cl_uint d = 0; d < dims; d++) {
        step->global[d] = global[d];
        step->local[d] = local[d];
    }
    return PBSA_SUCCESS;
}

int pbsa_chain_add_call(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                        pbsa_step_call call, const void *data, size_t size)
{
    void *copy = malloc(size ? size : 1);
    pbsa_step *step = copy ? append(chain) : NULL;
    if (!step) {
        free(copy);
        return pbsa_fail(ctx, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    }
    memcpy(copy, data, size);
    step->call = call;
    step->data = copy;
    return PBSA_SUCCESS;
}

static void CL_CALLBACK release_kernel(cl_event event, cl_int status, void *kernel)
{
    (void)event, (void)status;
    clReleaseKernel((cl_kernel)kernel);
}

int pbsa_enqueue_kernel(pbsa_context *ctx, const char *fn, cl_command_queue queue,
                        cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local,
                        cl_event last, cl_event *event)
{
    cl_event done = NULL;
    cl_int err = clEnqueueNDRangeKernel(queue, kernel, dims, NULL, global, local, last ? 1 : 0,
                                        last ? &last : NULL, &done);
    if (err != CL_SUCCESS) {
        clReleaseKernel(kernel);
        return pbsa_fail(ctx, err, "%s: clEnqueueNDRangeKernel failed (%d)", fn, err);
    }
    /* The kernel is released once its launch has run, not now: NVIDIA's OpenCL (driver 580)
     * crashes when a kernel is released while its launch still waits, e.g. behind the caller's
     * user event. Where no callback can be set, it is released now (legal OpenCL). */
    if (clSetEventCallback(done, CL_COMPLETE, release_kernel, kernel) != CL_SUCCESS)
        clReleaseKernel(kernel);
    if (event)
        *event = done;
    else
        clReleaseEvent(done);
    return PBSA_SUCCESS;
}

/* Enqueues one step after the event last (NULL: nothing before it); *done receives its event. */
static int enqueue_step(pbsa_context *ctx, const char *fn, cl_command_queue queue,
                        pbsa_step *step, cl_event last, cl_event *done)
{
    *done = NULL;
    cl_int err;
    if (step->kernel) {
        cl_kernel kernel = step->kernel;
        step->kernel = NULL; /* taken by pbsa_enqueue_kernel */
        return pbsa_enqueue_kernel(ctx, fn, queue, kernel, step->dims, step->global, step->local,
                                   last, done);
    }
    /* The library call takes no wait list: a barrier orders it after the previous step. */
    if (last && (err = clEnqueueBarrierWithWaitList(queue, 1, &last, NULL)) != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: clEnqueueBarrierWithWaitList failed (%d)", fn, err);
    int status = step->call(ctx, fn, queue, step->data, done);
    if (status != PBSA_SUCCESS || *done)
        return status;
    /* Without an event of its own, a marker stands for the end of the call. */
    err = clEnqueueMarkerWithWaitList(queue, 0, NULL, done);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: clEnqueueMarkerWithWaitList failed (%d)", fn, err);
    return PBSA_SUCCESS;
}

int pbsa_chain_enqueue(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                       cl_event *event)
{
    cl_event last = NULL;
    int status = PBSA_SUCCESS;
    for (size_t i = 0; i < chain->count && status == PBSA_SUCCESS; i++) {
        cl_event done = NULL;
        status = enqueue_step(ctx, fn, chain->queue, &chain->steps[i], last, &done);
        if (last)
            clReleaseEvent(last);
        last = done;
    }
    pbsa_chain_release(chain);
    if (event && status == PBSA_SUCCESS)
        *event = last;
    else if (last)
        clReleaseEvent(last);
    return status;
}

void pbsa_chain_release(pbsa_launch_chain *chain)
{
    for (size_t i = 0; i < chain->count; i++)
        step_release(&chain->steps[i]);
    free(chain->steps);
    chain->steps = NULL;
    chain->count = chain->capacity = 0;
}
