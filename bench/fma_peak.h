/* The fp32 FMA peak of a device, measured by bench/fma_peak.cl: the ceiling that
 * pbsa-bench-dense reports its throughput against. */
#ifndef PBSA_BENCH_FMA_PEAK_H
#define PBSA_BENCH_FMA_PEAK_H

#include "device.h"

#include <stddef.h>

/* The embedded source of fma_peak.cl (written at build time by src/embed_files.py). */
typedef struct bench_kernel_source {
    const char *name; /* file name in bench/ */
    const char *text; /* NUL-terminated */
} bench_kernel_source;

extern const bench_kernel_source bench_kernel_sources[];
extern const size_t bench_kernel_sources_count;

typedef struct fma_result {
    double tflops;
    double ms;
    size_t work_items;
    int iterations;
} fma_result;

/*
 * Builds fma_peak.cl on d's device with plain OpenCL calls and times it on d's queue (which must
 * have profiling enabled): the best of several launches, the iteration count raised until a
 * launch takes at least 5 ms. Returns CL_SUCCESS with *result filled, or after printing
 * "program: reason" (and the build log) on stderr an OpenCL error code, *result untouched.
 * Nothing stays allocated. Thread-safety: one call at a time per queue.
 */
int fma_peak_measure(const char *program, const support_device *d, fma_result *result);

#endif
