/* Internals shared by the CPU reference files. */
#ifndef PBSA_REFERENCE_H
#define PBSA_REFERENCE_H

#include "pbsattn_ref.h"

/* PBSA_SUCCESS for a host tensor with data, a known dtype and positive sizes; otherwise
 * PBSA_ERROR_NULL_ARGUMENT or PBSA_ERROR_INVALID_VALUE. */
int pbsa_ref_check_tensor(const pbsa_host_tensor *t);

#endif
