/* pbsa-tune's workloads: for one tuning key, a small case checked against the CPU reference and
 * a large one timed, both through the public calls (pbsa_dense_attention(),
 * pbsa_sparse_attention()) with whatever configuration is forced on the context. */
#ifndef PBSA_TUNE_CASE_H
#define PBSA_TUNE_CASE_H

#include "tuning/space.h"

#include <signal.h>
#include <stdint.h>

typedef struct tune_shape {
    int heads, kv_heads; /* query and key/value heads (batch 1) */
    int seq;             /* queries = keys */
} tune_shape;

typedef struct tune_case tune_case;

/* Creates the inputs of key (kind dense, sparse, dense_mma or sparse_mma; ctx decides whether the
 * calls run on the tensor cores) for the timed shape, and the small check case with its reference
 * output. Kind scores_method runs pbsa_permutation() on the timed shape instead: its check is
 * that the output is a permutation within every segment, its time the whole call's. Returns 0,
 * or 1 with the reason in error. */
int tune_case_create(pbsa_context *ctx, cl_context cl_ctx, cl_command_queue queue,
                     const pbsa_tuning_key *key, const tune_shape *shape, uint64_t seed,
                     tune_case **out, char *error, size_t capacity);
void tune_case_release(tune_case *c);

/* Runs the small case with the forced configuration and compares it with the float64 reference
 * (relative L2 error within the conformance limit of the dtype, every output written). Returns
 * 0 when it passed, else 1 with the reason (a build failure, an error of the call, the error). */
int tune_case_check(tune_case *c, char *reason, size_t capacity);

/* Times the large case: warmup untimed runs, then up to repeats timed ones (at least 3; fewer
 * once max_seconds have passed), rotating over the input sets; *median_ms is the median kernel
 * time from profiling events. Stops after the first warm-up run, with *median_ms set to that
 * run's time and 2 returned, when that run takes more than give_up_ms (> 0). *stop (may be NULL)
 * is polled between runs: when it becomes non-zero, returns 3. Returns 0, or 1 with the reason. */
int tune_case_time(tune_case *c, int warmup, int repeats, double max_seconds, double give_up_ms,
                   volatile const sig_atomic_t *stop, double *median_ms, char *reason,
                   size_t capacity);

#endif
