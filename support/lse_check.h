/* The log-sum-exp output of a call on the device (pbsa_dense_params::lse, pbsa_params::lse): a
 * buffer poisoned with NaN, guards included, and its check against the float64 reference. Used
 * by the dense, PBS and variable-length checks, and so by the tests and pbsa-conformance. */
#ifndef PBSA_SUPPORT_LSE_CHECK_H
#define PBSA_SUPPORT_LSE_CHECK_H

#include "host_tensor.h"
#include "pbsattn.h"

#include <stddef.h>

/* NaN floats before the values (the call's lse_offset) and after them. */
enum { LSE_GUARD = 16 };

typedef struct lse_buffer {
    cl_mem mem; /* NULL when not made */
    size_t count;
} lse_buffer;

/* count values between two guards, all NaN. Returns CL_SUCCESS or the OpenCL error. */
cl_int lse_buffer_make(lse_buffer *b, cl_context cl_ctx, size_t count);
void lse_buffer_free(lse_buffer *b);

typedef struct lse_error {
    double max_abs;    /* the largest |lse - ref| where ref is finite; infinite when a -INFINITY
                          of ref (a row without keys) or of the device does not match */
    long unwritten;    /* NaN where ref is not NaN */
    long stray;        /* written where ref is NaN (rows outside every sequence) */
    long guard_damage; /* guard floats that are no longer NaN */
} lse_error;

/* Reads b back and compares it with ref (count doubles). Returns CL_SUCCESS or the OpenCL
 * error of the read. */
cl_int lse_buffer_compare(const lse_buffer *b, cl_command_queue queue, const double *ref,
                          lse_error *e);

/* The limit of max_abs for a call on dtypes: fp32 accumulation of the logits (the inputs are the
 * same rounded values on both sides), looser where the tensor-core kernels take f16 or bf16, and
 * looser still where they round a wider q to k's type, a rounding the reference does not make. */
double lse_tolerance(const tensor_dtypes *dtypes);

/* Whether e is within limit, every value written and nothing else. */
int lse_error_ok(const lse_error *e, double limit);

#endif
