/* fp32 FMA throughput probe of pbsa-bench-dense (bench/fma_peak.c builds it): independent FMA
 * chains per work-item. Each work-item performs FMA_CHAINS * iterations * 4 FMAs. */
#ifndef FMA_CHAINS
#define FMA_CHAINS 8
#endif

__kernel void fma_peak(__global float *out, int iterations, float seed)
{
    float4 acc[FMA_CHAINS];
    float4 x = (float4)(seed, seed * 0.5f, seed * 0.25f, seed * 0.125f) + (float)get_global_id(0) * 1e-7f;
#pragma unroll
    for (int c = 0; c < FMA_CHAINS; c++)
        acc[c] = x + (float)c;
    for (int it = 0; it < iterations; it++) {
#pragma unroll
        for (int c = 0; c < FMA_CHAINS; c++)
            acc[c] = mad(acc[c], x, (float4)(0.999f));
    }
    float4 sum = 0.0f;
#pragma unroll
    for (int c = 0; c < FMA_CHAINS; c++)
        sum += acc[c];
    out[get_global_id(0)] = sum.x + sum.y + sum.z + sum.w;
}
