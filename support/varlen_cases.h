/* Variable-length and paged conformance cases: their table, their inputs (packed Q, packed or
 * paged K and V, offsets and page table on the host and the device) and their checks against the
 * float64 reference, for dense attention and PBS. Used by tests/test_varlen.c and by
 * pbsa-conformance. Thread-safety: as the library calls they make on ctx and queue. */
#ifndef PBSA_SUPPORT_VARLEN_CASES_H
#define PBSA_SUPPORT_VARLEN_CASES_H

#include "pbs_cases.h"

enum { VARLEN_MAX_SEQUENCES = 8 };

typedef struct varlen_case {
    const char *name;
    int pbs; /* 0: dense attention, 1: PBS (pbsa_attention()) */
    pbsa_dtype dtype;
    int q_heads, kv_heads, head_dim;
    int count;                           /* sequences */
    int q_lens[VARLEN_MAX_SEQUENCES];    /* each at most its key length */
    int kv_lens[VARLEN_MAX_SEQUENCES];
    int page_size; /* 0: K and V packed like Q; else pages of this size in shuffled order */
    int causal;
    int block, segment; /* PBS only */
    float threshold;
    pbsa_gqa_mode mode;
} varlen_case;

extern const varlen_case varlen_cases[];
extern const int varlen_case_count;

/* A case's inputs: packed q (its first sequence starts at row 2, a spare row after the last),
 * k and v packed the same way or as page pools (two spare pages, pages dealt out in a shuffled
 * order, one unused -1 entry at the end of every row of the page table), the descriptors with
 * their device copies, and a poisoned packed output. */
typedef struct varlen_inputs {
    const varlen_case *c;
    host_tensor q, k, v, o;
    int32_t q_offsets[VARLEN_MAX_SEQUENCES + 1], kv_offsets[VARLEN_MAX_SEQUENCES + 1];
    int32_t *page_table; /* count x max_pages entries, NULL when not paged */
    pbsa_varlen varlen;
    pbsa_paged_kv paged;
    pbsa_params params;           /* PBS: the case's, with varlen (and paged_kv) set */
    pbsa_dense_params dense;      /* dense: the case's, with varlen (and paged_kv) set */
} varlen_inputs;

/* Makes fresh random inputs of c from seed on cl_ctx. Returns 0, or 1 after pbs_fail(); the
 * caller releases in with varlen_inputs_free() either way. */
int varlen_inputs_make(varlen_inputs *in, const varlen_case *c, unsigned long long seed,
                       cl_context cl_ctx, pbs_report *r);
void varlen_inputs_free(varlen_inputs *in);
/* Sequence b's q, k and v copied into tensors of their own ([1, H, S, D], BHSD). */
int varlen_sequence_alone(const varlen_inputs *in, int b, host_tensor *q, host_tensor *k,
                          host_tensor *v, pbs_report *r);

/* Runs the case and checks it. Dense: against the float64 reference of the varlen call. PBS:
 * each sequence's permutation and block lists equal those of the sequence run alone (a sequence
 * at the short-sequence fallback: the identity and all of its blocks), and each sequence's output
 * rows against the float64 reference on those lists (dense attention for the fallback). Both:
 * the log-sum-exp too ([Hq, packed rows]), every output row of a sequence written, the rows
 * outside them and the guards untouched. PBS
 * again through the stage calls (permutation, selection into the caller's buffers, sparse
 * attention over them): the pipeline's entries and, bit for bit, its output.
 * Returns 0 when the case passed, else 1 with the reason in r. */
int varlen_check(pbsa_context *ctx, cl_command_queue queue, const varlen_case *c,
                 unsigned long long seed, pbs_report *r);

#endif
