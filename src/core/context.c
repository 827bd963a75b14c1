/* Library contexts: created on the caller's OpenCL context and device. */
#include "core/internal.h"
#include "tuning/tuning.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static bool device_in_context(cl_context cl_ctx, cl_device_id device, cl_int *err)
{
    cl_uint count = 0;
    *err = clGetContextInfo(cl_ctx, CL_CONTEXT_NUM_DEVICES, sizeof count, &count, NULL);
    if (*err != CL_SUCCESS || count == 0)
        return false;
    cl_device_id *devices = malloc(count * sizeof *devices);
    if (!devices) {
        *err = CL_OUT_OF_HOST_MEMORY;
        return false;
    }
    bool found = false;
    *err = clGetContextInfo(cl_ctx, CL_CONTEXT_DEVICES, count * sizeof *devices, devices, NULL);
    for (cl_uint i = 0; *err == CL_SUCCESS && i < count; i++)
        found = found || devices[i] == device;
    free(devices);
    return found;
}

int pbsa_context_create(cl_context cl_ctx, cl_device_id device,
                        const pbsa_context_options *options, pbsa_context **out)
{
    static const char fn[] = "pbsa_context_create";
    pbsa_clear_error(NULL);
    if (!out)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: out is NULL", fn);
    *out = NULL;
    if (!cl_ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: cl_ctx is NULL", fn);
    if (!device)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: device is NULL", fn);
    pbsa_context_options opts = {0};
    if (options) {
        /* Callers built against an older header pass the size of its shorter struct: the
         * members it lacks keep their defaults. */
        size_t size = options->struct_size ? options->struct_size : sizeof *options;
        if (size < offsetof(pbsa_context_options, disable_kernel_cache) || size > sizeof *options)
            return pbsa_fail(NULL, PBSA_ERROR_INVALID_VALUE,
                             "%s: options->struct_size is %zu, expected %zu", fn,
                             options->struct_size, sizeof *options);
        memcpy(&opts, options, size);
    }
    opts.struct_size = sizeof opts;

    cl_int err;
    if (!device_in_context(cl_ctx, device, &err)) {
        if (err != CL_SUCCESS)
            return pbsa_fail(NULL, err, "%s: cannot query cl_ctx (OpenCL error %d)", fn, err);
        return pbsa_fail(NULL, PBSA_ERROR_WRONG_DEVICE, "%s: device is not a device of cl_ctx",
                         fn);
    }
    pbsa_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    int status = pbsa_query_device_info(device, &ctx->info);
    if (status != PBSA_SUCCESS) {
        free(ctx);
        return status;
    }
    if (!pbsa_error_table_create(ctx)) {
        free(ctx);
        return pbsa_fail(NULL, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    }
    if (pthread_mutex_init(&ctx->lock, NULL) != 0) {
        pbsa_error_table_release(ctx);
        free(ctx);
        return pbsa_fail(NULL, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: cannot create a mutex", fn);
    }
    ctx->cl_ctx = cl_ctx;
    ctx->device = device;
    ctx->options = opts;
    pbsa_environment_read(&ctx->env);
    clRetainContext(cl_ctx);
    clRetainDevice(device);
    pbsa_tensor_core_decide(ctx);
    pbsa_tuning_load(ctx, pbsa_builtin_tuning, pbsa_builtin_tuning_count);
    /* A failed probe is no error of the caller's. */
    pbsa_clear_error(ctx);
    *out = ctx;
    return PBSA_SUCCESS;
}

void pbsa_context_release(pbsa_context *ctx)
{
    if (!ctx)
        return;
    pbsa_program_cache_clear(ctx);
    pbsa_fit_clear(ctx);
    pbsa_tuning_release(ctx);
    pbsa_error_table_release(ctx);
    pthread_mutex_destroy(&ctx->lock);
    clReleaseDevice(ctx->device);
    clReleaseContext(ctx->cl_ctx);
    free(ctx);
}

const char *pbsa_context_build_log(const pbsa_context *ctx)
{
    if (!ctx || !ctx->build_log)
        return "";
    return ctx->build_log;
}

int pbsa_context_device_info(const pbsa_context *ctx, pbsa_device_info *out)
{
    if (!ctx || !out)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "pbsa_context_device_info: %s is NULL",
                         ctx ? "out" : "ctx");
    *out = ctx->info;
    return PBSA_SUCCESS;
}
