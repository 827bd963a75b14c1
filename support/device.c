/* Opening an OpenCL device, and the device tests' set-up (see device.h). */
#include "device.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int support_device_open(const char *program, const char *selector,
                        cl_command_queue_properties queue_properties,
                        const pbsa_context_options *options, support_device *d)
{
    *d = (support_device){0};
    int status = pbsa_helper_create_cl_context(selector, &d->cl_ctx, &d->device);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "%s: %s\n", program, pbsa_context_last_error(NULL));
        return status;
    }
    cl_int err;
    d->queue = clCreateCommandQueue(d->cl_ctx, d->device, queue_properties, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "%s: cannot set up the device: clCreateCommandQueue failed (%d)\n",
                program, err);
        support_device_close(d);
        return err;
    }
    status = pbsa_context_create(d->cl_ctx, d->device, options, &d->ctx);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "%s: cannot set up the device: %s\n", program,
                pbsa_context_last_error(NULL));
        support_device_close(d);
        return status;
    }
    pbsa_context_device_info(d->ctx, &d->info);
    return PBSA_SUCCESS;
}

void support_device_close(support_device *d)
{
    pbsa_context_release(d->ctx);
    if (d->queue)
        clReleaseCommandQueue(d->queue);
    if (d->cl_ctx)
        clReleaseContext(d->cl_ctx);
    *d = (support_device){0};
}

int support_device_open_test(support_device *d)
{
    int status = support_device_open("device set-up", NULL, 0, NULL, d);
    if (status == PBSA_ERROR_NO_DEVICE)
        return TEST_SKIP_EXIT;
    if (status != PBSA_SUCCESS)
        return 1;
    fprintf(stderr, "device: %s (%s, driver %s)\n", d->info.name, d->info.vendor,
            d->info.driver_version);
    return 0;
}

unsigned long long support_test_seed(void)
{
    const char *fixed = getenv("PBSA_TEST_SEED");
    unsigned long long seed = fixed ? strtoull(fixed, NULL, 0) : (unsigned long long)time(NULL);
    printf("PBSA_TEST_SEED=%llu\n", seed);
    return seed;
}
