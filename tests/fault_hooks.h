/* Counting and failure injection for the host allocations and OpenCL objects of the code linked
 * into one test executable: the library's objects and the test's own. The linker's --wrap option
 * (the list is in tests/meson.build) sends their calls of malloc, calloc, realloc, free and of the
 * OpenCL functions that create, retain, release or enqueue to the __wrap_ functions of
 * fault_hooks.c. Calls made inside the OpenCL implementation or any other shared library are not
 * seen, so what is counted is exactly what this code owns. Not thread-safe for arming; the
 * counters themselves are. */
#ifndef PBSA_FAULT_HOOKS_H
#define PBSA_FAULT_HOOKS_H

#include "pbsattn.h"

#include <stdbool.h>
#include <stdio.h>

/* Blocks from malloc, calloc and realloc not yet given to free. */
long hooks_live_allocations(void);

/* References to OpenCL objects taken through the wrapped calls (a create or a retain counts one,
 * a release takes one back) and not yet released. References to objects that the wrapped code
 * did not create or retain, such as events another library hands back, are not counted, and
 * releasing them does not change the count. */
long hooks_live_cl_references(void);

/* Prints every counted OpenCL object with its kind and references. */
void hooks_print_live_cl(FILE *out);

/* Which calls an armed failure hits. */
typedef enum hooks_target {
    HOOKS_ALLOCATION, /* malloc, calloc, realloc: they return NULL */
    HOOKS_OPENCL,     /* the OpenCL calls below: they return an error, creators set *errcode */
} hooks_target;

/* Makes the call with index n (0: the next one) of target fail; every other call goes through.
 * Also resets the call count of target. */
void hooks_arm(hooks_target target, long n);

/* Turns injection off. Returns whether the armed failure was delivered. */
bool hooks_disarm(void);

/* Calls of the armed target seen since hooks_arm(). */
long hooks_calls(void);

/* About the delivered failure (valid after hooks_disarm() returned true). */
typedef struct hooks_failure {
    const char *function; /* "malloc", "clCreateBuffer", ... */
    cl_int code;          /* the OpenCL error returned (0 for an allocation) */
    /* Whether a correct caller must fail when this call fails: false for queries whose failure
     * only costs an optional capability, an advisory check or a message (clGetDeviceInfo,
     * clGetKernelWorkGroupInfo, clGetProgramBuildInfo, clGetKernelInfo...) and for allocations
     * (a caller may fall back). A call that succeeds anyway must still give the right result. */
    bool must_fail;
    /* An enqueue: earlier commands of the same operation may already be enqueued. */
    bool enqueue;
} hooks_failure;

hooks_failure hooks_last_failure(void);

/* Makes CL_KERNEL_WORK_GROUP_SIZE report at most cap work-items (0: the real limit), as on a
 * device whose compiled kernels allow fewer than its maximum (Rusticl: 32), and resets the two
 * counters below. */
void hooks_cap_kernel_group_size(size_t cap);
/* The most work-items per group of a kernel launch since the cap was set. */
size_t hooks_largest_group(void);
/* Queries of CL_KERNEL_WORK_GROUP_SIZE since the cap was set. */
long hooks_kernel_limit_queries(void);

#endif
