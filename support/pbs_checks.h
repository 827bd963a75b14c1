/* Each PBS stage and the whole pipeline on the device against the float64 reference, fed the
 * same inputs: the permutation (a permutation within each segment, sorted by the reference
 * scores up to float32 rounding), the block selection (lists that keep the threshold's mass,
 * minimal, never leaving a clearly more probable block out; the reference's exact lists where the
 * inputs have no float tie), the sparse attention over given lists and the pipeline (outputs
 * within the dtype's tolerance, every element written, nothing written outside). Used by the
 * per-stage tests and by pbsa-conformance. Each returns 0 when the stage passed, else 1 with
 * the reason in r. Thread-safety: as the library calls they make on ctx and queue. */
#ifndef PBSA_SUPPORT_PBS_CHECKS_H
#define PBSA_SUPPORT_PBS_CHECKS_H

#include "lse_check.h"
#include "pbs_cases.h"

int pbs_check_permutation(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                          pbs_report *r);
/* Sets r->rows and r->exact_rows. With exact, every row must equal the reference's. */
int pbs_check_selection(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                        int exact, pbs_report *r);
/* Over the reference's permutation and block mask. */
int pbs_check_sparse(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                     pbs_report *r);
/* Over pi (NULL: identity, passed as NULL to the call) and mask (B*Hq*nqb*nkb bytes), output
 * and log-sum-exp (-INFINITY for a row without keys). */
int pbs_check_sparse_over(const char *what, pbsa_context *ctx, cl_command_queue queue,
                          const pbs_inputs *in, const int32_t *pi, const uint8_t *mask,
                          pbs_report *r);
/* pbsa_attention() with a workspace against the reference on the device's own permutation and
 * lists (dense attention for the short-sequence fallback), output and log-sum-exp, then again
 * with the library's own workspace (and params NULL when they are the defaults). */
int pbs_check_pipeline(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                       pbs_report *r);

/* Reads o back and compares it with ref (BHSD doubles), within the limit of dtypes
 * (conformance_limit()). */
int pbs_check_output(const char *what, const tensor_dtypes *dtypes, host_tensor *o,
                     cl_command_queue queue, const double *ref, pbs_report *r);
/* Reads lse back and compares it with ref (lse_check.h), within lse_tolerance(dtypes). */
int pbs_check_lse(const char *what, const lse_buffer *lse, const tensor_dtypes *dtypes,
                  cl_command_queue queue, const double *ref, pbs_report *r);
/* Dense attention of in's inputs on the reference, causal and scale as in's params; and the
 * log-sum-exp into lse unless NULL. */
int pbs_dense_reference(const pbs_inputs *in, double *ref, double *lse, pbs_report *r);

#endif
