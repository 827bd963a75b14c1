/* Wall-clock time and medians (see timing.h). */
#include "timing.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

double timing_now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double timing_median(double *values, int count)
{
    if (count <= 0)
        return NAN;
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

double timing_min(const double *values, int count)
{
    double best = count > 0 ? values[0] : NAN;
    for (int i = 1; i < count; i++)
        best = values[i] < best ? values[i] : best;
    return best;
}
