/* Conformance cases: device kernels against the CPU reference. One case list, used both by the
 * cmocka tests and by the installed pbsa-conformance tool. */
#ifndef PBSA_CONFORMANCE_H
#define PBSA_CONFORMANCE_H

#include "host_tensor.h"
#include "lse_check.h"
#include "pbsattn.h"

typedef struct conformance_case {
    const char *name;
    tensor_dtypes dtypes;
    int batch, q_heads, kv_heads, q_len, kv_len, head_dim;
    int causal;
    tensor_layout layout;
} conformance_case;

typedef struct conformance_result {
    int status;         /* what the library call returned */
    double rel_l2;      /* ||out - ref|| / ||ref|| */
    double max_abs;     /* max |out - ref| */
    double tolerance;   /* the rel_l2 limit for the case's dtypes */
    long unwritten;     /* output elements left as the poison value (or NaN) */
    long guard_damage;  /* bytes outside the output tensor that changed */
    lse_error lse;      /* the log-sum-exp output, requested on every case */
    double lse_limit;   /* lse_tolerance() of the case's dtypes */
    int passed;
} conformance_result;

extern const conformance_case conformance_dense_cases[];
extern const int conformance_dense_case_count;

/* The rel_l2 limit for dtype: output rounding of the storage type plus fp32 accumulation. */
double conformance_tolerance(pbsa_dtype dtype);
/* The rel_l2 limit of an output of dtypes: the looser of o's and K/V's. Q is read exactly by the
 * portable tiles and, like the probabilities, rounded to K/V's 16-bit type by the tensor-core
 * ones, so its own dtype never sets the limit. */
double conformance_limit(const tensor_dtypes *dtypes);

/* Runs one dense case on ctx/queue with fresh random inputs drawn from seed, against the float64
 * reference, output and log-sum-exp. Returns PBSA_SUCCESS when the case could be run (result
 * says whether it passed). */
int conformance_run_dense(pbsa_context *ctx, cl_command_queue queue, const conformance_case *c,
                          unsigned long long seed, conformance_result *result);

#endif
