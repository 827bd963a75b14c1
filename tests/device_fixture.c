/* Shared set-up of device tests (see device_fixture.h). */
#include "device_fixture.h"

#include <stdio.h>

int device_fixture_open(device_fixture *f)
{
    *f = (device_fixture){0};
    int status = pbsa_helper_create_cl_context(NULL, &f->cl_ctx, &f->device);
    if (status == PBSA_ERROR_NO_DEVICE) {
        fprintf(stderr, "skipped: %s\n", pbsa_context_last_error(NULL));
        return TEST_SKIP_EXIT;
    }
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "no OpenCL context: %s\n", pbsa_context_last_error(NULL));
        return 1;
    }
    cl_int err;
    f->queue = clCreateCommandQueue(f->cl_ctx, f->device, 0, &err);
    if (err == CL_SUCCESS)
        status = pbsa_context_create(f->cl_ctx, f->device, NULL, &f->ctx);
    if (err != CL_SUCCESS || status != PBSA_SUCCESS) {
        fprintf(stderr, "device set-up failed: %d %s\n", err, pbsa_context_last_error(NULL));
        device_fixture_close(f);
        return 1;
    }
    pbsa_device_info info;
    pbsa_context_device_info(f->ctx, &info);
    fprintf(stderr, "device: %s (%s, driver %s)\n", info.name, info.vendor, info.driver_version);
    return 0;
}

void device_fixture_close(device_fixture *f)
{
    pbsa_context_release(f->ctx);
    if (f->queue)
        clReleaseCommandQueue(f->queue);
    if (f->cl_ctx)
        clReleaseContext(f->cl_ctx);
    *f = (device_fixture){0};
}
