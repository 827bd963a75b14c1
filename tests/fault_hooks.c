/* Counting and failure injection through the linker's --wrap (see fault_hooks.h). Every function
 * named __wrap_X here must be listed in fault_hooks_wrapped in tests/meson.build and the other
 * way round. */
#include "fault_hooks.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- a small pointer table (allocations and OpenCL objects) ---------------------------------- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t size);
void __real_free(void *p);

enum { BUCKETS = 4096 };

typedef struct entry {
    const void *key;
    const char *kind; /* NULL for a host allocation */
    long refs;
    struct entry *next;
} entry;

typedef struct table {
    entry *buckets[BUCKETS];
    long total; /* allocations, or the sum of refs */
} table;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static table allocations, objects;

static size_t bucket_of(const void *key)
{
    uintptr_t x = (uintptr_t)key;
    x ^= x >> 17;
    x *= 0xed5ad4bbu;
    x ^= x >> 11;
    return (size_t)(x % BUCKETS);
}

static entry **find(table *t, const void *key)
{
    entry **at = &t->buckets[bucket_of(key)];
    while (*at && (*at)->key != key)
        at = &(*at)->next;
    return at;
}

/* Adds delta references to key (creating the entry), removing it when none are left. Untracked
 * keys are only added for positive deltas. */
static void table_add(table *t, const void *key, const char *kind, long delta)
{
    if (!key)
        return;
    pthread_mutex_lock(&lock);
    entry **at = find(t, key);
    if (!*at && delta > 0) {
        entry *e = __real_malloc(sizeof *e);
        if (e) {
            *e = (entry){key, kind, 0, NULL};
            *at = e;
        }
    }
    if (*at) {
        entry *e = *at;
        long applied = delta < -e->refs ? -e->refs : delta;
        e->refs += applied;
        t->total += applied;
        if (e->refs == 0) {
            *at = e->next;
            __real_free(e);
        }
    }
    pthread_mutex_unlock(&lock);
}

long hooks_live_allocations(void)
{
    pthread_mutex_lock(&lock);
    long n = allocations.total;
    pthread_mutex_unlock(&lock);
    return n;
}

long hooks_live_cl_references(void)
{
    pthread_mutex_lock(&lock);
    long n = objects.total;
    pthread_mutex_unlock(&lock);
    return n;
}

void hooks_print_live_cl(FILE *out)
{
    pthread_mutex_lock(&lock);
    for (size_t b = 0; b < BUCKETS; b++)
        for (const entry *e = objects.buckets[b]; e; e = e->next)
            fprintf(out, "  live OpenCL %s %p: %ld reference(s)\n", e->kind, e->key, e->refs);
    pthread_mutex_unlock(&lock);
}

/* ---- injection ------------------------------------------------------------------------------- */

static struct {
    bool armed;
    hooks_target target;
    long fail_at;
    long calls;
    bool delivered;
    hooks_failure failure;
} inject;

void hooks_arm(hooks_target target, long n)
{
    pthread_mutex_lock(&lock);
    inject.armed = true;
    inject.target = target;
    inject.fail_at = n;
    inject.calls = 0;
    inject.delivered = false;
    inject.failure = (hooks_failure){0};
    pthread_mutex_unlock(&lock);
}

bool hooks_disarm(void)
{
    pthread_mutex_lock(&lock);
    inject.armed = false;
    bool delivered = inject.delivered;
    pthread_mutex_unlock(&lock);
    return delivered;
}

long hooks_calls(void)
{
    pthread_mutex_lock(&lock);
    long n = inject.calls;
    pthread_mutex_unlock(&lock);
    return n;
}

hooks_failure hooks_last_failure(void)
{
    pthread_mutex_lock(&lock);
    hooks_failure f = inject.failure;
    pthread_mutex_unlock(&lock);
    return f;
}

/* Whether this call of target fails; records it when it does. */
static bool should_fail(hooks_target target, const char *function, cl_int code, bool must_fail,
                        bool enqueue)
{
    pthread_mutex_lock(&lock);
    bool fail = false;
    if (inject.armed && inject.target == target) {
        fail = inject.calls == inject.fail_at;
        inject.calls++;
        if (fail) {
            inject.delivered = true;
            inject.failure = (hooks_failure){function, code, must_fail, enqueue};
        }
    }
    pthread_mutex_unlock(&lock);
    return fail;
}

/* ---- host allocations ------------------------------------------------------------------------ */

void *__wrap_malloc(size_t size)
{
    if (should_fail(HOOKS_ALLOCATION, "malloc", 0, false, false))
        return NULL;
    void *p = __real_malloc(size);
    table_add(&allocations, p, NULL, 1);
    return p;
}

void *__wrap_calloc(size_t count, size_t size)
{
    if (should_fail(HOOKS_ALLOCATION, "calloc", 0, false, false))
        return NULL;
    void *p = __real_calloc(count, size);
    table_add(&allocations, p, NULL, 1);
    return p;
}

void *__wrap_realloc(void *p, size_t size)
{
    if (should_fail(HOOKS_ALLOCATION, "realloc", 0, false, false))
        return NULL;
    void *q = __real_realloc(p, size);
    if (q || size == 0)
        table_add(&allocations, p, NULL, -1);
    table_add(&allocations, q, NULL, 1);
    return q;
}

void __wrap_free(void *p)
{
    table_add(&allocations, p, NULL, -1);
    __real_free(p);
}

/* ---- OpenCL ---------------------------------------------------------------------------------- */

/* A creator: fails with code when armed, else creates and counts one reference of kind. */
#define CREATOR(type, kind, name, code, params, args)                                             \
    type __real_##name params;                                                                     \
    type __wrap_##name params                                                                      \
    {                                                                                              \
        if (should_fail(HOOKS_OPENCL, #name, code, true, false)) {                                 \
            if (errcode_ret)                                                                       \
                *errcode_ret = code;                                                               \
            return NULL;                                                                           \
        }                                                                                          \
        type object = __real_##name args;                                                          \
        table_add(&objects, object, kind, 1);                                                      \
        return object;                                                                             \
    }

CREATOR(cl_context, "context", clCreateContext, CL_OUT_OF_HOST_MEMORY,
        (const cl_context_properties *properties, cl_uint num_devices, const cl_device_id *devices,
         void(CL_CALLBACK *notify)(const char *, const void *, size_t, void *), void *user_data,
         cl_int *errcode_ret),
        (properties, num_devices, devices, notify, user_data, errcode_ret))
CREATOR(cl_context, "context", clCreateContextFromType, CL_OUT_OF_HOST_MEMORY,
        (const cl_context_properties *properties, cl_device_type device_type,
         void(CL_CALLBACK *notify)(const char *, const void *, size_t, void *), void *user_data,
         cl_int *errcode_ret),
        (properties, device_type, notify, user_data, errcode_ret))
CREATOR(cl_command_queue, "command queue", clCreateCommandQueue, CL_OUT_OF_HOST_MEMORY,
        (cl_context context, cl_device_id device, cl_command_queue_properties properties,
         cl_int *errcode_ret),
        (context, device, properties, errcode_ret))
CREATOR(cl_mem, "buffer", clCreateBuffer, CL_MEM_OBJECT_ALLOCATION_FAILURE,
        (cl_context context, cl_mem_flags flags, size_t size, void *host_ptr, cl_int *errcode_ret),
        (context, flags, size, host_ptr, errcode_ret))
CREATOR(cl_mem, "sub-buffer", clCreateSubBuffer, CL_MEM_OBJECT_ALLOCATION_FAILURE,
        (cl_mem buffer, cl_mem_flags flags, cl_buffer_create_type type, const void *info,
         cl_int *errcode_ret),
        (buffer, flags, type, info, errcode_ret))
CREATOR(cl_program, "program", clCreateProgramWithSource, CL_OUT_OF_HOST_MEMORY,
        (cl_context context, cl_uint count, const char **strings, const size_t *lengths,
         cl_int *errcode_ret),
        (context, count, strings, lengths, errcode_ret))
CREATOR(cl_program, "program", clCreateProgramWithBinary, CL_OUT_OF_HOST_MEMORY,
        (cl_context context, cl_uint num_devices, const cl_device_id *devices,
         const size_t *lengths, const unsigned char **binaries, cl_int *binary_status,
         cl_int *errcode_ret),
        (context, num_devices, devices, lengths, binaries, binary_status, errcode_ret))
CREATOR(cl_kernel, "kernel", clCreateKernel, CL_OUT_OF_HOST_MEMORY,
        (cl_program program, const char *kernel_name, cl_int *errcode_ret),
        (program, kernel_name, errcode_ret))
CREATOR(cl_event, "event", clCreateUserEvent, CL_OUT_OF_HOST_MEMORY,
        (cl_context context, cl_int *errcode_ret), (context, errcode_ret))

/* Retain and release: count references of objects the wrapped code holds. */
#define REFCOUNT(type, kind, retain, release)                                                      \
    cl_int __real_##retain(type object);                                                           \
    cl_int __real_##release(type object);                                                          \
    cl_int __wrap_##retain(type object)                                                            \
    {                                                                                              \
        cl_int err = __real_##retain(object);                                                      \
        if (err == CL_SUCCESS)                                                                     \
            table_add(&objects, object, kind, 1);                                                  \
        return err;                                                                                \
    }                                                                                              \
    cl_int __wrap_##release(type object)                                                           \
    {                                                                                              \
        cl_int err = __real_##release(object);                                                     \
        if (err == CL_SUCCESS)                                                                     \
            table_add(&objects, object, kind, -1);                                                 \
        return err;                                                                                \
    }

REFCOUNT(cl_context, "context", clRetainContext, clReleaseContext)
REFCOUNT(cl_command_queue, "command queue", clRetainCommandQueue, clReleaseCommandQueue)
REFCOUNT(cl_mem, "buffer", clRetainMemObject, clReleaseMemObject)
REFCOUNT(cl_program, "program", clRetainProgram, clReleaseProgram)
REFCOUNT(cl_kernel, "kernel", clRetainKernel, clReleaseKernel)
REFCOUNT(cl_event, "event", clRetainEvent, clReleaseEvent)
REFCOUNT(cl_device_id, "device", clRetainDevice, clReleaseDevice)

/* An enqueue: fails with CL_OUT_OF_RESOURCES when armed, else counts the event it returns. */
#define ENQUEUE(name, params, args)                                                                \
    cl_int __real_##name params;                                                                   \
    cl_int __wrap_##name params                                                                    \
    {                                                                                              \
        if (should_fail(HOOKS_OPENCL, #name, CL_OUT_OF_RESOURCES, true, true))                     \
            return CL_OUT_OF_RESOURCES;                                                            \
        cl_int err = __real_##name args;                                                           \
        if (err == CL_SUCCESS && event)                                                            \
            table_add(&objects, *event, "event", 1);                                               \
        return err;                                                                                \
    }

#define WAIT_LIST cl_uint num_events, const cl_event *wait_list, cl_event *event

/* ---- a device whose kernels allow fewer work-items ----------------------------------------- */

static size_t group_cap, largest_group;
static long limit_queries;

void hooks_cap_kernel_group_size(size_t cap)
{
    pthread_mutex_lock(&lock);
    group_cap = cap;
    largest_group = 0;
    limit_queries = 0;
    pthread_mutex_unlock(&lock);
}

size_t hooks_largest_group(void)
{
    pthread_mutex_lock(&lock);
    size_t n = largest_group;
    pthread_mutex_unlock(&lock);
    return n;
}

long hooks_kernel_limit_queries(void)
{
    pthread_mutex_lock(&lock);
    long n = limit_queries;
    pthread_mutex_unlock(&lock);
    return n;
}

/* Records the work-group size of every launch, then enqueues as ENQUEUE() does. */
cl_int __real_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel, cl_uint dims,
                                     const size_t *offset, const size_t *global,
                                     const size_t *local, WAIT_LIST);
cl_int __wrap_clEnqueueNDRangeKernel(cl_command_queue queue, cl_kernel kernel, cl_uint dims,
                                     const size_t *offset, const size_t *global,
                                     const size_t *local, WAIT_LIST)
{
    if (should_fail(HOOKS_OPENCL, "clEnqueueNDRangeKernel", CL_OUT_OF_RESOURCES, true, true))
        return CL_OUT_OF_RESOURCES;
    size_t items = 1;
    for (cl_uint d = 0; local && d < dims; d++)
        items *= local[d];
    pthread_mutex_lock(&lock);
    if (items > largest_group)
        largest_group = items;
    pthread_mutex_unlock(&lock);
    cl_int err = __real_clEnqueueNDRangeKernel(queue, kernel, dims, offset, global, local,
                                               num_events, wait_list, event);
    if (err == CL_SUCCESS && event)
        table_add(&objects, *event, "event", 1);
    return err;
}
ENQUEUE(clEnqueueTask, (cl_command_queue queue, cl_kernel kernel, WAIT_LIST),
        (queue, kernel, num_events, wait_list, event))
ENQUEUE(clEnqueueReadBuffer,
        (cl_command_queue queue, cl_mem buffer, cl_bool blocking, size_t offset, size_t size,
         void *ptr, WAIT_LIST),
        (queue, buffer, blocking, offset, size, ptr, num_events, wait_list, event))
ENQUEUE(clEnqueueWriteBuffer,
        (cl_command_queue queue, cl_mem buffer, cl_bool blocking, size_t offset, size_t size,
         const void *ptr, WAIT_LIST),
        (queue, buffer, blocking, offset, size, ptr, num_events, wait_list, event))
ENQUEUE(clEnqueueCopyBuffer,
        (cl_command_queue queue, cl_mem src, cl_mem dst, size_t src_offset, size_t dst_offset,
         size_t size, WAIT_LIST),
        (queue, src, dst, src_offset, dst_offset, size, num_events, wait_list, event))
ENQUEUE(clEnqueueFillBuffer,
        (cl_command_queue queue, cl_mem buffer, const void *pattern, size_t pattern_size,
         size_t offset, size_t size, WAIT_LIST),
        (queue, buffer, pattern, pattern_size, offset, size, num_events, wait_list, event))
ENQUEUE(clEnqueueMarkerWithWaitList, (cl_command_queue queue, WAIT_LIST),
        (queue, num_events, wait_list, event))
ENQUEUE(clEnqueueBarrierWithWaitList, (cl_command_queue queue, WAIT_LIST),
        (queue, num_events, wait_list, event))
ENQUEUE(clEnqueueUnmapMemObject, (cl_command_queue queue, cl_mem buffer, void *ptr, WAIT_LIST),
        (queue, buffer, ptr, num_events, wait_list, event))

void *__real_clEnqueueMapBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                cl_map_flags flags, size_t offset, size_t size, WAIT_LIST,
                                cl_int *errcode_ret);
void *__wrap_clEnqueueMapBuffer(cl_command_queue queue, cl_mem buffer, cl_bool blocking,
                                cl_map_flags flags, size_t offset, size_t size, WAIT_LIST,
                                cl_int *errcode_ret)
{
    if (should_fail(HOOKS_OPENCL, "clEnqueueMapBuffer", CL_OUT_OF_RESOURCES, true, true)) {
        if (errcode_ret)
            *errcode_ret = CL_OUT_OF_RESOURCES;
        return NULL;
    }
    cl_int err;
    void *p = __real_clEnqueueMapBuffer(queue, buffer, blocking, flags, offset, size, num_events,
                                        wait_list, event, &err);
    if (err == CL_SUCCESS && event)
        table_add(&objects, *event, "event", 1);
    if (errcode_ret)
        *errcode_ret = err;
    return p;
}

/* Other calls that can fail: they return code when armed. must_fail: whether the library must
 * then fail the operation (false for queries of optional capabilities and of message text). */
#define FALLIBLE(name, code, must_fail, params, args)                                             \
    cl_int __real_##name params;                                                                   \
    cl_int __wrap_##name params                                                                    \
    {                                                                                              \
        if (should_fail(HOOKS_OPENCL, #name, code, must_fail, false))                              \
            return code;                                                                           \
        return __real_##name args;                                                                 \
    }

FALLIBLE(clBuildProgram, CL_OUT_OF_HOST_MEMORY, true,
         (cl_program program, cl_uint num_devices, const cl_device_id *devices,
          const char *options, void(CL_CALLBACK *notify)(cl_program, void *), void *user_data),
         (program, num_devices, devices, options, notify, user_data))
FALLIBLE(clSetKernelArg, CL_OUT_OF_RESOURCES, true,
         (cl_kernel kernel, cl_uint index, size_t size, const void *value),
         (kernel, index, size, value))
FALLIBLE(clGetMemObjectInfo, CL_OUT_OF_RESOURCES, true,
         (cl_mem buffer, cl_mem_info name, size_t size, void *value, size_t *size_ret),
         (buffer, name, size, value, size_ret))
FALLIBLE(clGetCommandQueueInfo, CL_OUT_OF_RESOURCES, true,
         (cl_command_queue queue, cl_command_queue_info name, size_t size, void *value,
          size_t *size_ret),
         (queue, name, size, value, size_ret))
FALLIBLE(clGetContextInfo, CL_OUT_OF_RESOURCES, true,
         (cl_context context, cl_context_info name, size_t size, void *value, size_t *size_ret),
         (context, name, size, value, size_ret))
/* A kernel's work-group limit is advisory: a caller may go on and let the enqueue decide. The
 * cap of hooks_cap_kernel_group_size() applies to what it reports. */
cl_int __real_clGetKernelWorkGroupInfo(cl_kernel kernel, cl_device_id device,
                                       cl_kernel_work_group_info name, size_t size, void *value,
                                       size_t *size_ret);
cl_int __wrap_clGetKernelWorkGroupInfo(cl_kernel kernel, cl_device_id device,
                                       cl_kernel_work_group_info name, size_t size, void *value,
                                       size_t *size_ret)
{
    if (should_fail(HOOKS_OPENCL, "clGetKernelWorkGroupInfo", CL_OUT_OF_RESOURCES, false, false))
        return CL_OUT_OF_RESOURCES;
    cl_int err = __real_clGetKernelWorkGroupInfo(kernel, device, name, size, value, size_ret);
    if (err == CL_SUCCESS && name == CL_KERNEL_WORK_GROUP_SIZE && size >= sizeof(size_t)) {
        pthread_mutex_lock(&lock);
        limit_queries++;
        size_t *limit = value;
        if (group_cap && *limit > group_cap)
            *limit = group_cap;
        pthread_mutex_unlock(&lock);
    }
    return err;
}
FALLIBLE(clGetPlatformIDs, CL_OUT_OF_HOST_MEMORY, true,
         (cl_uint capacity, cl_platform_id *platforms, cl_uint *count),
         (capacity, platforms, count))
FALLIBLE(clGetDeviceInfo, CL_OUT_OF_RESOURCES, false,
         (cl_device_id device, cl_device_info name, size_t size, void *value, size_t *size_ret),
         (device, name, size, value, size_ret))
FALLIBLE(clGetDeviceIDs, CL_OUT_OF_RESOURCES, false,
         (cl_platform_id platform, cl_device_type type, cl_uint capacity, cl_device_id *devices,
          cl_uint *count),
         (platform, type, capacity, devices, count))
FALLIBLE(clGetPlatformInfo, CL_OUT_OF_HOST_MEMORY, false,
         (cl_platform_id platform, cl_platform_info name, size_t size, void *value,
          size_t *size_ret),
         (platform, name, size, value, size_ret))
FALLIBLE(clGetProgramBuildInfo, CL_OUT_OF_RESOURCES, false,
         (cl_program program, cl_device_id device, cl_program_build_info name, size_t size,
          void *value, size_t *size_ret),
         (program, device, name, size, value, size_ret))
FALLIBLE(clGetKernelInfo, CL_OUT_OF_RESOURCES, false,
         (cl_kernel kernel, cl_kernel_info name, size_t size, void *value, size_t *size_ret),
         (kernel, name, size, value, size_ret))
