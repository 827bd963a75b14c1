/* Opening an OpenCL device for the tools, the benchmarks and the tests: the device chosen by a
 * selector (as pbsa_helper_create_cl_context() takes it: NULL means $PBSA_DEVICE, else the first
 * GPU, else any device), an in-order queue on it and a library context. */
#ifndef PBSA_SUPPORT_DEVICE_H
#define PBSA_SUPPORT_DEVICE_H

#include "pbsattn.h"

/* Exit code that makes Meson report a skipped test. */
#define TEST_SKIP_EXIT 77

typedef struct support_device {
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    pbsa_context *ctx;
    pbsa_device_info info;
} support_device;

/*
 * Opens the device of selector with a queue of queue_properties (0, or
 * CL_QUEUE_PROFILING_ENABLE) and a library context of options (NULL: the defaults). Returns
 * PBSA_SUCCESS, or after printing "program: reason" on stderr PBSA_ERROR_NO_DEVICE when no
 * OpenCL device exists, and another status for any other failure; on failure *d holds nothing
 * to release. The caller owns *d and releases it with support_device_close() (which accepts a
 * zeroed or already closed *d). Thread-safety: as pbsa_context_create().
 */
int support_device_open(const char *program, const char *selector,
                        cl_command_queue_properties queue_properties,
                        const pbsa_context_options *options, support_device *d);
void support_device_close(support_device *d);

/* The device tests' set-up: the default device and options, its name printed on stderr.
 * Returns 0, TEST_SKIP_EXIT when no OpenCL device exists, 1 on other failures. */
int support_device_open_test(support_device *d);

/* The device tests' seed, fresh on every run: $PBSA_TEST_SEED, else the time. Printed as
 * "PBSA_TEST_SEED=N" on stdout so that a failure can be replayed. */
unsigned long long support_test_seed(void);

#endif
