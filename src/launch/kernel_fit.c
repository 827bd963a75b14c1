/* Fitting kernels to their own compiled limits: the work-group limit of a built kernel, helper
 * kernels sized to it, and the per-context memo of fitted answers, so that a call builds each
 * variant once and asks once. */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pbsa_fit_entry {
    char *key;
    void *value;
    size_t size;
    pbsa_fit_entry *next;
};

bool pbsa_fit_recall(pbsa_context *ctx, const char *key, void *value, size_t size)
{
    bool found = false;
    pthread_mutex_lock(&ctx->lock);
    for (const pbsa_fit_entry *e = ctx->fits; e && !found; e = e->next)
        if (e->size == size && strcmp(e->key, key) == 0) {
            memcpy(value, e->value, size);
            found = true;
        }
    pthread_mutex_unlock(&ctx->lock);
    return found;
}

void pbsa_fit_remember(pbsa_context *ctx, const char *key, const void *value, size_t size)
{
    pbsa_fit_entry *e = malloc(sizeof *e);
    char *k = strdup(key);
    void *v = malloc(size);
    if (!e || !k || !v) { /* not remembered: the next call fits again */
        free(e);
        free(k);
        free(v);
        return;
    }
    memcpy(v, value, size);
    *e = (pbsa_fit_entry){k, v, size, NULL};
    pthread_mutex_lock(&ctx->lock);
    bool known = false;
    for (const pbsa_fit_entry *o = ctx->fits; o && !known; o = o->next)
        known = strcmp(o->key, key) == 0;
    if (!known) {
        e->next = ctx->fits;
        ctx->fits = e;
    }
    pthread_mutex_unlock(&ctx->lock);
    if (known) { /* another thread fitted it meanwhile, to the same answer */
        free(k);
        free(v);
        free(e);
    }
}

void pbsa_fit_clear(pbsa_context *ctx)
{
    pbsa_fit_entry *e = ctx->fits;
    while (e) {
        pbsa_fit_entry *next = e->next;
        free(e->key);
        free(e->value);
        free(e);
        e = next;
    }
    ctx->fits = NULL;
}

size_t pbsa_kernel_group_limit(const pbsa_context *ctx, cl_kernel kernel)
{
    size_t limit = 0;
    if (clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof limit,
                                 &limit, NULL) != CL_SUCCESS ||
        limit == 0)
        return ctx->info.max_work_group_size; /* advisory: the enqueue has the last word */
    return limit;
}

static size_t floor_power_of_two(size_t x)
{
    size_t p = 1;
    while (p <= x / 2)
        p *= 2;
    return p;
}

size_t pbsa_fitted_group_size(const pbsa_context *ctx, cl_kernel kernel, size_t preferred)
{
    const size_t limit = pbsa_kernel_group_limit(ctx, kernel);
    return floor_power_of_two(limit < preferred ? limit : preferred);
}

int pbsa_get_fitted_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                           const char *options, const char *size_define, const char *kernel_name,
                           size_t preferred, size_t minimum, cl_kernel *out, size_t *wg)
{
    *out = NULL;
    char key[1024];
    snprintf(key, sizeof key, "helper|%s|%s|%s|%s|%zu", files[file_count - 1], options,
             size_define ? size_define : "", kernel_name, preferred);
    size_t size = preferred;
    const bool known = pbsa_fit_recall(ctx, key, &size, sizeof size);
    for (;;) {
        char full[1024];
        snprintf(full, sizeof full, "%s", options);
        if (size_define)
            pbsa_append_option(full, sizeof full, " -D%s=%zu", size_define, size);
        cl_kernel kernel;
        int status = pbsa_get_kernel(ctx, files, file_count, full, kernel_name, &kernel);
        if (status != PBSA_SUCCESS)
            return status;
        const size_t limit = known ? size : pbsa_kernel_group_limit(ctx, kernel);
        /* A size that is a build option needs a new build; any other is a launch parameter. */
        const size_t next = floor_power_of_two(limit < size ? limit : size);
        if (size <= limit || (!size_define && next >= minimum)) {
            size = size <= limit ? size : next;
            if (!known)
                pbsa_fit_remember(ctx, key, &size, sizeof size);
            *out = kernel;
            *wg = size;
            return PBSA_SUCCESS;
        }
        clReleaseKernel(kernel);
        if (next < minimum)
            return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                             "kernel %s allows work-groups of at most %zu work-items on this "
                             "device; it needs at least %zu",
                             kernel_name, limit, minimum);
        size = next;
    }
}
