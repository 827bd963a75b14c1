/* A multi-kernel operation as a list of prepared steps: every kernel is obtained (compiled) and
 * given its arguments before the first step is enqueued, so a failing build or argument leaves
 * nothing enqueued. The steps then run in order, each waiting for the previous one's event (for
 * out-of-order queues), and the caller receives one event of the end. */
#ifndef PBSA_LAUNCH_CHAIN_H
#define PBSA_LAUNCH_CHAIN_H

#include "core/internal.h"

/* A step that enqueues work through another library (CLBlast). It must enqueue after everything
 * already on queue (the chain puts a barrier first) and may leave *done NULL. data is the
 * step's own copy of what pbsa_chain_add_call() was given. */
typedef int (*pbsa_step_call)(pbsa_context *ctx, const char *fn, cl_command_queue queue,
                              const void *data, cl_event *done);

typedef struct pbsa_step pbsa_step;

/* Start with {.queue = the caller's queue}: preparing steps may need it (CLBlast compiles for the
 * queue's device), enqueuing uses it. */
typedef struct pbsa_launch_chain {
    cl_command_queue queue;
    pbsa_step *steps;
    size_t count, capacity;
} pbsa_launch_chain;

/* Appends a kernel launch (dims 1 to 3). The chain takes args->kernel in every case; fails, and
 * releases it, when setting an argument failed (args->status) or local exceeds what the kernel
 * allows on the device. */
int pbsa_chain_add_kernel(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                          const pbsa_kernel_args *args, cl_uint dims, const size_t *global,
                          const size_t *local);
/* Enqueues kernel after the event last (NULL: nothing before it) and takes it in every case:
 * it is released when the launch has run (or at once where no completion callback can be set,
 * and on failure). *event (event may be NULL) receives the launch's event. fn names the caller
 * in the message. */
int pbsa_enqueue_kernel(pbsa_context *ctx, const char *fn, cl_command_queue queue,
                        cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local,
                        cl_event last, cl_event *event);
/* Fails with PBSA_ERROR_UNSUPPORTED_DEVICE when kernel, as compiled for the device, allows fewer
 * than items work-items per group (register-heavy variants can fall below the device's maximum),
 * or with the OpenCL error of the query. fn names the caller in the message. Kernels are fitted
 * to their limits before (src/launch/kernel_fit.c): this is the last check of each step. */
int pbsa_check_group_size(pbsa_context *ctx, const char *fn, cl_kernel kernel, size_t items);
/* Appends a call step with a copy of size bytes of data. */
int pbsa_chain_add_call(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                        pbsa_step_call call, const void *data, size_t size);
/* Enqueues the steps in order on the chain's queue and releases them. event (may be NULL)
 * receives the last step's event on success, NULL otherwise. Only a failing enqueue (the device
 * refusing work) can leave earlier steps enqueued. */
int pbsa_chain_enqueue(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                       cl_event *event);
/* Releases the steps without enqueuing them (the chain keeps its queue and can be reused). */
void pbsa_chain_release(pbsa_launch_chain *chain);

#endif
