/* Probe of the Hopper path: one warpgroup computes two 64x64x16 products with wgmma, A from
 * registers, B copied into local memory with cp.async in the core-matrix layout of
 * cl/mma_tile.cl's WGMMA tiles: once as K is read for Q.K^T (b1: 64 rows of 16, the rows of B^T),
 * once as V is read for P.V (b2: 16 rows of 64, the rows of B). Needs mma_ptx.cl and
 * wgmma_ptx.cl first, built for bf16 and rewritten for sm_90a. The host compares c (the two
 * 64x64 results, row-major) with the exact products. */

/* Starts copying a row-major matrix of rows x cols 16-bit elements into core matrices: 16-byte
 * piece i holds row i / cols * 8 + i % 8, columns (i / 8 % (cols / 8)) * 8.., as copy_rows()
 * of mma_tile.cl stores K and V. */
inline void probe_copy(__local uint4 *tile, __global const uint4 *m, int rows, int cols)
{
    for (int i = get_local_id(0); i < rows * cols / 8; i += 128) {
        const int row = i / cols * 8 + i % 8, chunk = i / 8 % (cols / 8);
        COPY_ASYNC16(local_address(&tile[i]), m + row * (cols / 8) + chunk, 16u);
    }
}

__kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void wgmma_probe(__global const uint *a, __global const uint4 *b1, __global const uint4 *b2,
                 __global float *c)
{
    __local uint4 k_tile[128], v_tile[128];
    probe_copy(k_tile, b1, 64, 16);
    probe_copy(v_tile, b2, 16, 64);
    COPY_ASYNC_COMMIT();
    COPY_ASYNC_WAIT(0);
    FENCE_PROXY_ASYNC();
    barrier(CLK_LOCAL_MEM_FENCE);
    const int lane = get_local_id(0) % 32, warp = get_local_id(0) / 32;
    const int r0 = warp * 16 + lane / 4, t = lane % 4;
    /* A fragments: rows r0 and r0 + 8, columns 2t.. and 2t + 8.. (pairs of a row's 8 words). */
    const uint fa[4] = {a[r0 * 8 + t], a[(r0 + 8) * 8 + t], a[r0 * 8 + t + 4],
                        a[(r0 + 8) * 8 + t + 4]};
    float d[2][8][4];
    WGMMA_FENCE();
    /* As K: lead (next 8 columns) 128 bytes, stride (next 8 rows) 16 x 16 bytes. */
    WGMMA_M64N64K16(d[0], fa, wgmma_desc(k_tile, 128, 256), 0, 0);
    /* As V: lead (next 8 rows, along k) 64 x 16 bytes, stride (next 8 columns) 128 bytes. */
    WGMMA_M64N64K16(d[1], fa, wgmma_desc(v_tile, 1024, 128), 0, 1);
    WGMMA_COMMIT();
    WGMMA_WAIT_ALL();
    WGMMA_HOLD32(d[0]);
    WGMMA_HOLD32(d[1]);
#pragma unroll
    for (int p = 0; p < 2; p++)
#pragma unroll
        for (int n = 0; n < 8; n++) {
            const int col = n * 8 + 2 * t;
            c[p * 4096 + r0 * 64 + col] = d[p][n][0];
            c[p * 4096 + r0 * 64 + col + 1] = d[p][n][1];
            c[p * 4096 + (r0 + 8) * 64 + col] = d[p][n][2];
            c[p * 4096 + (r0 + 8) * 64 + col + 1] = d[p][n][3];
        }
}
