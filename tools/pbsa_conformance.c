/* pbsa-conformance: runs the library's conformance cases on a chosen OpenCL device against the
 * CPU reference and prints a pass/fail table. Exit status 0 when every case passes. */
#include "conformance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-conformance [--device SELECTOR] [--seed N] [--portable]\n"
            "  --device SELECTOR  'P:D', a device index or a name substring (see pbsa-info);\n"
            "                     default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --seed N           random seed of the inputs (default: the current time)\n"
            "  --portable         force the portable kernels\n");
}

int main(int argc, char **argv)
{
    const char *selector = NULL;
    unsigned long long seed = (unsigned long long)time(NULL);
    pbsa_context_options options = {.struct_size = sizeof options};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            selector = argv[++i];
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 0);
            if (*end) {
                fprintf(stderr, "pbsa-conformance: --seed needs a number, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--portable") == 0) {
            options.force_portable = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pbsa-conformance: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    cl_context cl_ctx;
    cl_device_id device;
    if (pbsa_helper_create_cl_context(selector, &cl_ctx, &device) != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-conformance: %s\n", pbsa_context_last_error(NULL));
        return 2;
    }
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, device, 0, &err);
    pbsa_context *ctx = NULL;
    if (err != CL_SUCCESS || pbsa_context_create(cl_ctx, device, &options, &ctx) != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-conformance: cannot set up the device: %s\n",
                err != CL_SUCCESS ? "clCreateCommandQueue failed" : pbsa_context_last_error(NULL));
        if (queue)
            clReleaseCommandQueue(queue);
        clReleaseContext(cl_ctx);
        return 2;
    }
    pbsa_device_info info;
    pbsa_context_device_info(ctx, &info);
    printf("device: %s | %s | driver %s | seed %llu | kernels: %s\n", info.name, info.vendor,
           info.driver_version, seed,
           pbsa_context_uses_tensor_cores(ctx) ? "tensor-core where it applies, else portable"
                                               : "portable");
    printf("%-36s %-6s %11s %9s %11s %9s %6s\n", "case", "result", "rel_l2", "limit", "max_abs",
           "unwritten", "guard");
    int failures = 0;
    for (int i = 0; i < conformance_dense_case_count; i++) {
        const conformance_case *c = &conformance_dense_cases[i];
        conformance_result r;
        int status = conformance_run_dense(ctx, queue, c, seed, &r);
        if (status != PBSA_SUCCESS) {
            printf("%-36s %-6s status %d: %s\n", c->name, "ERROR", status,
                   pbsa_context_last_error(ctx));
            failures++;
            continue;
        }
        printf("%-36s %-6s %11.3e %9.0e %11.3e %9ld %6ld\n", c->name, r.passed ? "pass" : "FAIL",
               r.rel_l2, r.tolerance, r.max_abs, r.unwritten, r.guard_damage);
        failures += !r.passed;
    }
    printf("%d of %d cases passed\n", conformance_dense_case_count - failures,
           conformance_dense_case_count);
    pbsa_context_release(ctx);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
    return failures ? 1 : 0;
}
