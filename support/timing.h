/* Wall-clock time and the statistics of timed runs, for the tools and the benchmarks. */
#ifndef PBSA_SUPPORT_TIMING_H
#define PBSA_SUPPORT_TIMING_H

/* Seconds of a monotonic clock (only differences mean anything). Thread-safe. */
double timing_now_seconds(void);
/* Median of values[0 .. count), which it sorts in place; NaN when count is 0. */
double timing_median(double *values, int count);
/* Smallest of values[0 .. count); NaN when count is 0. */
double timing_min(const double *values, int count);

#endif
