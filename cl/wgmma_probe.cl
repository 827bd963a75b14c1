/* Probe of the Hopper path: one warpgroup computes, with wgmma, the two products of
 * cl/mma_tile.cl's WGMMA tiles at their shape, reading K and V from local memory in the same
 * swizzled layout through the same descriptors (wgmma_ptx.cl): c1 = A . K^T (A 64 rows x 128
 * dims from registers, K 64 keys x 128 dims: Q.K^T) and c2 = A[:, :64] . V (V 64 keys x 128
 * dims: P.V). Needs mma_ptx.cl and wgmma_ptx.cl first, built for bf16 and rewritten for sm_90a.
 * The host compares c (c1, 64x64, then c2, 64x128, both row-major) with the exact products. */

#define PROBE_KEYS 64
#define PROBE_DIMS 128

/* Starts copying a row-major tile of PROBE_KEYS rows x PROBE_DIMS 16-bit elements into tile,
 * swizzled as copy_rows() of mma_tile.cl stores K and V. */
inline void probe_copy(__local uint4 *tile, __global const uint4 *m)
{
    for (int i = get_local_id(0); i < PROBE_KEYS * PROBE_DIMS / 8; i += 128) {
        const int n = i / (PROBE_DIMS / 8), c = i % (PROBE_DIMS / 8);
        COPY_ASYNC16(local_address(&tile[swizzled_slot(n, c, PROBE_KEYS)]), m + i, 16u);
    }
}

/* Writes the accumulators of one m64nXk16 product's 64 columns from col0 into c (row pitch
 * pitch): lane row r0 and r0 + 8, columns 8 n + 2 t and the one after. */
inline void probe_store(__global float *c, int pitch, int col0, const float d[8][4], int r0, int t)
{
#pragma unroll
    for (int n = 0; n < 8; n++) {
        const int col = col0 + n * 8 + 2 * t;
        c[r0 * pitch + col] = d[n][0];
        c[r0 * pitch + col + 1] = d[n][1];
        c[(r0 + 8) * pitch + col] = d[n][2];
        c[(r0 + 8) * pitch + col + 1] = d[n][3];
    }
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void wgmma_probe(__global const uint *a, __global const uint4 *k, __global const uint4 *v,
                 __global float *c)
{
    __local uint4 k_tile[PROBE_KEYS * PROBE_DIMS / 8] __attribute__((aligned(SWIZZLE_BYTES)));
    __local uint4 v_tile[PROBE_KEYS * PROBE_DIMS / 8] __attribute__((aligned(SWIZZLE_BYTES)));
    probe_copy(k_tile, k);
    probe_copy(v_tile, v);
    COPY_ASYNC_COMMIT();
    COPY_ASYNC_WAIT(0);
    FENCE_PROXY_ASYNC();
    barrier(CLK_LOCAL_MEM_FENCE);
    const int lane = get_local_id(0) % 32, warp = get_local_id(0) / 32;
    const int r0 = warp * 16 + lane / 4, t = lane % 4;
    /* A fragments of dims 16 kb..: rows r0 and r0 + 8, word pairs t and t + 4 of the 8 words. */
    const int words = PROBE_DIMS / 2;
    uint fa[PROBE_DIMS / 16][4];
#pragma unroll
    for (int kb = 0; kb < PROBE_DIMS / 16; kb++) {
        fa[kb][0] = a[r0 * words + kb * 8 + t];
        fa[kb][1] = a[(r0 + 8) * words + kb * 8 + t];
        fa[kb][2] = a[r0 * words + kb * 8 + t + 4];
        fa[kb][3] = a[(r0 + 8) * words + kb * 8 + t + 4];
    }
    float d1[8][4], d2[PROBE_DIMS / 64][8][4];
    WGMMA_FENCE();
#pragma unroll
    for (int kb = 0; kb < PROBE_DIMS / 16; kb++)
        WGMMA_M64N64K16(d1, fa[kb], swizzled_keys_desc(k_tile, PROBE_KEYS, kb), kb > 0, 0);
#pragma unroll
    for (int j = 0; j < PROBE_KEYS / 16; j++)
#pragma unroll
        for (int g = 0; g < PROBE_DIMS / 64; g++)
            WGMMA_M64N64K16(d2[g], fa[j], swizzled_values_desc(v_tile, PROBE_KEYS, j, g), j > 0,
                            1);
    WGMMA_COMMIT();
    WGMMA_WAIT_ALL();
    WGMMA_HOLD32(d1);
#pragma unroll
    for (int g = 0; g < PROBE_DIMS / 64; g++)
        WGMMA_HOLD32(d2[g]);
    probe_store(c, PROBE_KEYS, 0, d1, r0, t);
#pragma unroll
    for (int g = 0; g < PROBE_DIMS / 64; g++)
        probe_store(c + PROBE_KEYS * PROBE_KEYS, PROBE_DIMS, 64 * g, d2[g], r0, t);
}
