/* splitmix64: the small, seedable generator that gives the same random inputs on every platform
 * to the tools, the tests and the benchmarks. */
#ifndef PBSA_SPLITMIX_H
#define PBSA_SPLITMIX_H

#include <stdint.h>

/* Advances *state and returns 64 random bits. */
static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), from 53 random bits. */
static inline double splitmix_unit(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Uniform in [-1, 1). */
static inline float splitmix_signed(uint64_t *state)
{
    return (float)(2.0 * splitmix_unit(state) - 1.0);
}

#endif
