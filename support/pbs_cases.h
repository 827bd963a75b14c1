/* The PBS conformance cases: their table, their inputs on the host and on the device, and the
 * int buffers the stages write. Used by the per-stage tests and by pbsa-conformance. */
#ifndef PBSA_SUPPORT_PBS_CASES_H
#define PBSA_SUPPORT_PBS_CASES_H

#include "host_tensor.h"
#include "pbsattn.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Poisoned elements before and after every tensor and int buffer, checked after each call. */
enum { PBS_GUARD = 32 };

typedef struct pbs_case {
    const char *name;
    tensor_dtypes dtypes;
    int batch, q_heads, kv_heads, q_len, kv_len, head_dim;
    int block, segment;
    float threshold;
    int causal, sink;
    pbsa_gqa_mode mode;
    int bshd;
} pbs_case;

/* Every stage and the pipeline run on these (pbs_cases.c says what they cover). */
extern const pbs_case pbs_cases[];
extern const int pbs_case_count;
/* Exact ties in the selection (pbs_inputs_make_ties()); the last is large (33000 keys). */
extern const pbs_case pbs_tie_cases[];
extern const int pbs_tie_case_count;

/* The outcome of a run of checks: the first failure's message, and progress lines on log. */
typedef struct pbs_report {
    FILE *log;         /* NULL: no progress lines */
    int failed;
    char message[512]; /* the first failure */
    double rel_l2;     /* the largest of the output checks (0 when none ran) */
    size_t rows, exact_rows; /* block-list rows checked, and those equal to the reference */
} pbs_report;

/* Records a failure (the first message is kept). */
void pbs_fail(pbs_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Q, K, V of a case, on the device and on the host, with the derived sizes. */
typedef struct pbs_inputs {
    const pbs_case *c;
    pbsa_params params;
    host_tensor q, k, v;
    pbsa_host_tensor hq, hk, hv;
    int perm_heads, group, nqb, nkb, nseg, key_count;
    size_t pi_count;  /* B * Hp * Skv */
    size_t rows;      /* B * Hq * nqb */
    size_t out_count; /* B * Hq * Sq * D */
} pbs_inputs;

/* The seed of case name in a run of seed. */
uint64_t pbs_case_seed(unsigned long long seed, const char *name);
pbsa_params pbs_case_params(const pbs_case *c);

/* Makes fresh random inputs of c from seed and uploads them to cl_ctx. Returns 0, or 1 after
 * pbs_fail(). The caller releases in with pbs_inputs_free() either way. */
int pbs_inputs_make(pbs_inputs *in, const pbs_case *c, unsigned long long seed,
                    cl_context cl_ctx, pbs_report *r);
/* pbs_inputs_make(), then the keys and queries of the tie construction (pbs_cases.c). */
int pbs_inputs_make_ties(pbs_inputs *in, const pbs_case *c, unsigned long long seed,
                         cl_context cl_ctx, cl_command_queue queue, pbs_report *r);
void pbs_inputs_free(pbs_inputs *in);

/* A poisoned output tensor for in's queries, on the device. Returns 0, or 1 after pbs_fail(). */
int pbs_output_make(host_tensor *o, const pbs_inputs *in, cl_context cl_ctx, pbs_report *r);

/* A cl_int buffer holding count values from element PBS_GUARD on, poisoned (-1) around them,
 * or filled from values when not NULL. */
typedef struct pbs_int_buffer {
    cl_mem mem;
    size_t count;
} pbs_int_buffer;

int pbs_int_buffer_make(pbs_int_buffer *b, cl_context cl_ctx, size_t count,
                        const cl_int *values, pbs_report *r);
/* The count values of b (caller frees), or NULL after pbs_fail() (also when a guard changed). */
cl_int *pbs_int_buffer_read(const char *what, const pbs_int_buffer *b, cl_command_queue queue,
                            pbs_report *r);
void pbs_int_buffer_free(pbs_int_buffer *b);

#endif
