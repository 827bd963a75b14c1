/* Probe of the tensor-core path: one warp multiplies a 16x16 by a 16x8 bf16 tile with mma.sync
 * (the instruction cl/dense_mma.cl is built on) and writes the 16x8 fp32 result. The host
 * compares it with the exact product. */
__kernel __attribute__((reqd_work_group_size(32, 1, 1)))
void mma_probe(__global const uint *a, __global const uint *b, __global float *c)
{
    const int lane = get_local_id(0);
    const int g = lane / 4, t = lane % 4;
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    /* a: 16 rows x 8 words (pairs of columns); b: 8 columns x 8 words (pairs of rows). */
    uint a0 = a[g * 8 + t], a1 = a[(g + 8) * 8 + t], a2 = a[g * 8 + t + 4],
         a3 = a[(g + 8) * 8 + t + 4];
    uint b0 = b[g * 8 + t], b1 = b[g * 8 + t + 4];
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    c[g * 8 + 2 * t] = d[0];
    c[g * 8 + 2 * t + 1] = d[1];
    c[(g + 8) * 8 + 2 * t] = d[2];
    c[(g + 8) * 8 + 2 * t + 1] = d[3];
}
