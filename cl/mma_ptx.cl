/* The PTX instructions of the tensor-core path (sm_80+), as inline asm: warp-level matrix
 * multiply, matrix loads from local memory, asynchronous global-to-local copies and lane
 * shuffles. Needs KV_DTYPE f16 or bf16. Macros rather than functions, so that fragments stay
 * in registers; every asm is volatile so that none moves across a barrier or is merged with the
 * same load of the next key tile. */

/* The products take K and V's type, KV_DTYPE f16 or bf16 (f32 has no MMA_TYPE_f32): Q and the
 * probabilities are converted to it. */
#define MMA_TYPE_f16 "f16"
#define MMA_TYPE_bf16 "bf16"
#define MMA_TYPE_OF_(dtype) MMA_TYPE_##dtype
#define MMA_TYPE_OF(dtype) MMA_TYPE_OF_(dtype)
#define MMA_TYPE MMA_TYPE_OF(KV_DTYPE)
#define PACK_INSTRUCTION "cvt.rn." MMA_TYPE "x2.f32 %0, %1, %2;"

/* c (4 floats) += a (16x16, 4 registers) . b (16x8, 2 registers), fp32 accumulation. */
#define MMA(c, a, b0, b1)                                                                          \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE                    \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                     \
                 : "+f"((c)[0]), "+f"((c)[1]), "+f"((c)[2]), "+f"((c)[3])                         \
                 : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "r"(b0), "r"(b1))

/* Four 8x8 matrices of 16-bit elements from local memory; lane i gives the address of row i % 8
 * of matrix i / 8, and r[m] receives the lane's fragment of matrix m. TRANS transposes each. */
#define LDMATRIX_X4(r, address)                                                                    \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"                   \
                 : "=r"((r)[0]), "=r"((r)[1]), "=r"((r)[2]), "=r"((r)[3]) : "r"(address))
#define LDMATRIX_X4_TRANS(r, address)                                                              \
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"             \
                 : "=r"((r)[0]), "=r"((r)[1]), "=r"((r)[2]), "=r"((r)[3]) : "r"(address))
/* Two matrices (not transposed): lanes 0-15 give the addresses. */
#define LDMATRIX_X2(r, address)                                                                    \
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"                         \
                 : "=r"((r)[0]), "=r"((r)[1]) : "r"(address))

/* Copies 16 bytes from global to local memory without passing through registers; bytes (0 or
 * 16) are read and the rest zero-filled. Completion is tracked per group of copies. */
#define COPY_ASYNC16(local_address, global_pointer, bytes)                                         \
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;"                                   \
                 :: "r"(local_address), "l"(global_pointer), "r"(bytes) : "memory")
#define COPY_ASYNC_COMMIT() asm volatile("cp.async.commit_group;" ::: "memory")
/* Waits until at most n (a literal) of this work-item's newest groups are still in flight. */
#define COPY_ASYNC_WAIT(n) asm volatile("cp.async.wait_group " #n ";" ::: "memory")

#define SHFL_XOR(out, x, mask)                                                                     \
    do {                                                                                           \
        uint shuffled_;                                                                            \
        asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"                            \
                     : "=r"(shuffled_) : "r"(as_uint(x)), "r"(mask));                             \
        (out) = as_float(shuffled_);                                                               \
    } while (0)

/* Two floats to one register of two 16-bit values, lo in the low half. */
#define PACK2(out, lo, hi) asm(PACK_INSTRUCTION : "=r"(out) : "f"(hi), "f"(lo))

/* 2^x, flushing subnormal results to zero (probabilities that small do not count). */
inline float exp2_ftz(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* The address of p in the local (shared) state space, as ldmatrix and cp.async take it. */
inline uint local_address(__local const void *p)
{
    return (uint)(ulong)p;
}
