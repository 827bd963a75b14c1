/* Probe of the tensor-core path: one warp copies a 16x16 tile A and a 16x8 tile B (given as B^T,
 * 8 rows of 16) into local memory with cp.async, reads their fragments with ldmatrix, multiplies
 * them with mma.sync and writes the 16x8 fp32 result: every instruction cl/mma_tile.cl is built
 * on. Needs mma_ptx.cl first, built for bf16. The host compares the result with the exact
 * product. */
__kernel __attribute__((reqd_work_group_size(32, 1, 1)))
void mma_probe(__global const uint4 *a, __global const uint4 *b, __global float *c)
{
    __local uint4 a_tile[32], b_tile[16];
    const int lane = get_local_id(0);
    const int g = lane / 4, t = lane % 4;
    COPY_ASYNC16(local_address(&a_tile[lane]), a + lane, 16u);
    if (lane < 16)
        COPY_ASYNC16(local_address(&b_tile[lane]), b + lane, 16u);
    COPY_ASYNC_COMMIT();
    COPY_ASYNC_WAIT(0);
    barrier(CLK_LOCAL_MEM_FENCE);
    /* A rows are 2 uint4 long: matrices (rows 0-7, 8-15) x (columns 0-7, 8-15). */
    uint fa[4], fb[4];
    LDMATRIX_X4(fa, local_address(&a_tile[(lane % 16) * 2 + lane / 16]));
    /* B^T rows: matrices (columns 0-7 of k) and (8-15); the last two repeat them. */
    LDMATRIX_X4(fb, local_address(&b_tile[(lane % 8) * 2 + lane / 8 % 2]));
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    MMA(d, fa, fb[0], fb[1]);
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}
