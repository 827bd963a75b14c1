/* Internals shared by the CPU reference files. */
#ifndef PBSA_REFERENCE_H
#define PBSA_REFERENCE_H

#include "pbsattn_ref.h"

/* PBSA_SUCCESS for a host tensor with data, a known dtype and positive sizes; otherwise
 * PBSA_ERROR_NULL_ARGUMENT or PBSA_ERROR_INVALID_VALUE. */
int pbsa_ref_check_tensor(const pbsa_host_tensor *t);

/* The variable-length (and paged) forms of pbsa_ref_dense_attention() and
 * pbsa_ref_pbs_attention(), for params->varlen set (src/reference/varlen.c). */
int pbsa_ref_varlen_dense(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                          const pbsa_host_tensor *v, const pbsa_dense_params *params, double *out,
                          double *lse);
int pbsa_ref_varlen_pbs(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                        const pbsa_host_tensor *v, const pbsa_params *params, double *out,
                        int32_t *pi_out, uint8_t *mask_out, double *lse);

#endif
