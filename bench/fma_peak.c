/* The fp32 FMA peak of a device: bench/fma_peak.cl built and timed with plain OpenCL calls. */
#include "fma_peak.h"

#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    FMA_CHAINS = 8, /* fma_peak.cl's default: independent float4 chains per item */
    FMA_ITEMS_PER_CU = 2048,
    FMA_LAUNCHES = 5,
    FMA_MAX_ITERATIONS = 1 << 24,
};

static const double FMA_TARGET_MS = 8.0; /* calibrated launch time, at least 5 ms */
static const double FMA_MIN_MS = 5.0;

/* Prints the build log of program on d's device to stderr. */
static void print_build_log(cl_program program, cl_device_id device)
{
    size_t size = 0;
    if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, NULL, &size) != CL_SUCCESS
        || size == 0)
        return;
    char *log = malloc(size);
    if (log && clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log, NULL)
                   == CL_SUCCESS)
        fprintf(stderr, "%s\n", log);
    free(log);
}

/* The fma_peak kernel, built for d's device; NULL after a message on failure (*err set). */
static cl_kernel build_kernel(const char *program_name, const support_device *d, cl_int *err)
{
    const char *text = bench_kernel_sources[0].text;
    cl_program program = clCreateProgramWithSource(d->cl_ctx, 1, &text, NULL, err);
    if (*err != CL_SUCCESS) {
        fprintf(stderr, "%s: fma_peak.cl: cannot create the program (%d)\n", program_name, *err);
        return NULL;
    }
    cl_kernel kernel = NULL;
    *err = clBuildProgram(program, 1, &d->device, "-cl-std=CL1.2", NULL, NULL);
    if (*err != CL_SUCCESS) {
        fprintf(stderr, "%s: fma_peak.cl: build failed (%d)\n", program_name, *err);
        print_build_log(program, d->device);
    } else {
        kernel = clCreateKernel(program, "fma_peak", err);
        if (*err != CL_SUCCESS)
            fprintf(stderr, "%s: fma_peak.cl: no kernel fma_peak (%d)\n", program_name, *err);
    }
    clReleaseProgram(program); /* the kernel keeps it alive */
    return kernel;
}

static cl_int fma_launch(cl_command_queue queue, cl_kernel kernel, size_t global, size_t local,
                         int iterations, double *ms)
{
    cl_int err = clSetKernelArg(kernel, 1, sizeof iterations, &iterations);
    cl_event event = NULL;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &global, &local, 0, NULL, &event);
    if (err == CL_SUCCESS)
        err = clWaitForEvents(1, &event);
    if (err == CL_SUCCESS) {
        *ms = bench_event_ms(event);
        if (*ms < 0.0)
            err = CL_PROFILING_INFO_NOT_AVAILABLE;
    }
    if (event)
        clReleaseEvent(event);
    return err;
}

/* fp32 FMA throughput: 2 FLOPs per FMA, 4 lanes per float4 operation. */
int fma_peak_measure(const char *program, const support_device *d, fma_result *result)
{
    cl_int err;
    cl_kernel kernel = build_kernel(program, d, &err);
    if (!kernel)
        return err;
    size_t local = 256, kernel_wg = 0;
    clGetKernelWorkGroupInfo(kernel, d->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kernel_wg,
                             &kernel_wg, NULL);
    while (local > 1 && ((kernel_wg && local > kernel_wg) || local > d->info.max_work_group_size))
        local /= 2;
    size_t global = (size_t)(d->info.compute_units ? d->info.compute_units : 1) * FMA_ITEMS_PER_CU;
    global = (global + local - 1) / local * local;

    cl_mem out = clCreateBuffer(d->cl_ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    float seed = 0.5f;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(kernel, 0, sizeof out, &out);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(kernel, 2, sizeof seed, &seed);

    /* Best of FMA_LAUNCHES launches; more iterations until that best takes FMA_MIN_MS. */
    int iterations = 64;
    double best = INFINITY;
    while (err == CL_SUCCESS) {
        best = INFINITY;
        for (int i = 0; i < FMA_LAUNCHES && err == CL_SUCCESS; i++) {
            double ms = 0.0;
            err = fma_launch(d->queue, kernel, global, local, iterations, &ms);
            best = ms < best ? ms : best;
        }
        if (err != CL_SUCCESS || best >= FMA_MIN_MS || iterations >= FMA_MAX_ITERATIONS)
            break;
        double scale = best > 0.01 ? FMA_TARGET_MS / best : 64.0;
        scale = scale > 64.0 ? 64.0 : scale < 1.5 ? 1.5 : scale;
        double next = iterations * scale;
        iterations = next > FMA_MAX_ITERATIONS ? FMA_MAX_ITERATIONS : (int)next;
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "%s: FMA peak launch failed (%d)\n", program, err);
    } else {
        double flops = (double)global * FMA_CHAINS * 4.0 * 2.0 * iterations;
        result->tflops = flops / (best * 1e-3) * 1e-12;
        result->ms = best;
        result->work_items = global;
        result->iterations = iterations;
    }
    bench_release_mem(&out);
    clReleaseKernel(kernel);
    return err;
}
