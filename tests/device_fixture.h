/* Shared set-up of device tests: the OpenCL device chosen by PBSA_DEVICE (default: first GPU,
 * else first device), a library context and an in-order queue on it. */
#ifndef PBSA_DEVICE_FIXTURE_H
#define PBSA_DEVICE_FIXTURE_H

#include "pbsattn.h"

/* Exit code that makes Meson report a skipped test. */
#define TEST_SKIP_EXIT 77

typedef struct device_fixture {
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    pbsa_context *ctx;
} device_fixture;

/* Returns 0 on success, TEST_SKIP_EXIT when no OpenCL device exists, 1 on other failures. */
int device_fixture_open(device_fixture *f);
void device_fixture_close(device_fixture *f);

#endif
