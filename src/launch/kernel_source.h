/* OpenCL C sources embedded at build time (src/embed_files.py). */
#ifndef PBSA_KERNEL_SOURCE_H
#define PBSA_KERNEL_SOURCE_H

#include <stddef.h>

typedef struct pbsa_kernel_source {
    const char *name; /* file name in cl/, e.g. "dense_attention.cl" */
    const char *text; /* NUL-terminated */
} pbsa_kernel_source;

extern const pbsa_kernel_source pbsa_kernel_sources[];
extern const size_t pbsa_kernel_sources_count;

#endif
