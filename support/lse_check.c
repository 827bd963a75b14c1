/* The log-sum-exp output on the device against the reference (see lse_check.h). */
#include "lse_check.h"

#include <math.h>
#include <stdlib.h>

cl_int lse_buffer_make(lse_buffer *b, cl_context cl_ctx, size_t count)
{
    const size_t total = count + 2 * LSE_GUARD;
    float *poison = malloc(total * sizeof *poison);
    b->mem = NULL;
    b->count = count;
    if (!poison)
        return CL_OUT_OF_HOST_MEMORY;
    for (size_t i = 0; i < total; i++)
        poison[i] = NAN;
    cl_int err;
    b->mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                            total * sizeof *poison, poison, &err);
    free(poison);
    return err;
}

void lse_buffer_free(lse_buffer *b)
{
    if (b->mem)
        clReleaseMemObject(b->mem);
    b->mem = NULL;
}

cl_int lse_buffer_compare(const lse_buffer *b, cl_command_queue queue, const double *ref,
                          lse_error *e)
{
    *e = (lse_error){0};
    const size_t total = b->count + 2 * LSE_GUARD;
    float *got = malloc(total * sizeof *got);
    if (!got)
        return CL_OUT_OF_HOST_MEMORY;
    cl_int err =
        clEnqueueReadBuffer(queue, b->mem, CL_TRUE, 0, total * sizeof *got, got, 0, NULL, NULL);
    for (size_t i = 0; err == CL_SUCCESS && i < total; i++) {
        const double value = got[i];
        if (i < LSE_GUARD || i >= LSE_GUARD + b->count) {
            e->guard_damage += !isnan(value);
            continue;
        }
        const double want = ref[i - LSE_GUARD];
        if (isnan(want))
            e->stray += !isnan(value);
        else if (isnan(value))
            e->unwritten++;
        else if (isinf(want) || isinf(value))
            e->max_abs = value == want ? e->max_abs : INFINITY;
        else
            e->max_abs = fmax(e->max_abs, fabs(value - want));
    }
    free(got);
    return err;
}

double lse_tolerance(const tensor_dtypes *dtypes)
{
    if (dtypes->kv == PBSA_DTYPE_F32)
        return 1e-5;
    if (dtypes->q == dtypes->kv)
        return 1e-4;
    /* q's rounding to 11 (f16) or 8 (bf16) significant bits moves logits of a few units by
     * about that relative amount. */
    return dtypes->kv == PBSA_DTYPE_F16 ? 2e-3 : 1.6e-2;
}

int lse_error_ok(const lse_error *e, double limit)
{
    return e->unwritten == 0 && e->stray == 0 && e->guard_damage == 0 && e->max_abs <= limit;
}
