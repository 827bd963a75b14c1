/* The checks and dispatch decision of a dense attention call, shared by pbsa_dense_attention(),
 * pbsa_query_dense_support() and the short-sequence fallback of the PBS calls. */
#ifndef PBSA_DENSE_ATTENTION_H
#define PBSA_DENSE_ATTENTION_H

#include "launch/dispatch.h"

/* What a checked dense call runs. */
typedef struct pbsa_dense_call {
    pbsa_dense_params params; /* the caller's, or the defaults for NULL */
    pbsa_sequences seqs;
    float scale;            /* the softmax scale, default applied */
    pbsa_dispatch dispatch; /* the family and configuration of its kernel */
    uint64_t groups_bh;     /* work-groups along the grid's second dimension */
} pbsa_dense_call;

/* Checks the arguments of a dense call (mode: a call, with queue, or a support query without)
 * and decides its kernel, naming fn in messages; nothing is built or enqueued. */
int pbsa_dense_check(pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                     cl_command_queue queue, const pbsa_tensor *q, const pbsa_tensor *k,
                     const pbsa_tensor *v, const pbsa_tensor *o, const pbsa_dense_params *params,
                     pbsa_dense_call *call);

#endif
