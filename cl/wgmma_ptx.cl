/* Hopper's warpgroup matrix instructions (wgmma, sm_90a) for the tensor-core tile. NVIDIA's
 * OpenCL compiler targets sm_90, where these are rejected, so each is written here as a PTX
 * comment: "// PBSA_SM90A <instruction>" with its operands substituted by the compiler. The host
 * (src/ptx_sm90a.c) uncomments the marked lines of the compiled PTX, retargets it to sm_90a and
 * rebuilds it from that text. Needs mma_ptx.cl first (MMA_TYPE).
 *
 * Every asm is volatile and touches "memory", so that none moves across another or a barrier.
 * The accumulators are "+f" operands of the products and of the fence after the wait, so the
 * compiler neither reads them while a product is in flight nor keeps copies that would need
 * the product to finish early. */

#define SM90A "// PBSA_SM90A "

/* Orders this thread's earlier register and local-memory accesses before the warpgroup's next
 * products. Needed before the first product and whenever its inputs were written since. */
#define WGMMA_FENCE() asm volatile(SM90A "wgmma.fence.sync.aligned;" ::: "memory")
#define WGMMA_COMMIT() asm volatile(SM90A "wgmma.commit_group.sync.aligned;" ::: "memory")
#define WGMMA_WAIT_ALL() asm volatile(SM90A "wgmma.wait_group.sync.aligned 0;" ::: "memory")
/* Makes this thread's generic-proxy writes of local memory (cp.async copies included) visible
 * to the products, which read local memory through the async proxy; before the barrier that
 * publishes them. */
#define FENCE_PROXY_ASYNC() asm volatile(SM90A "fence.proxy.async.shared::cta;" ::: "memory")

/* Ties 16 or 32 accumulators to an empty asm placed after WGMMA_WAIT_ALL(): their next use
 * depends on it, so it stays after the wait. */
#define ACC4(x) "+f"((x)[0]), "+f"((x)[1]), "+f"((x)[2]), "+f"((x)[3])
#define ACC16(d) ACC4((d)[0]), ACC4((d)[1]), ACC4((d)[2]), ACC4((d)[3])
#define ACC32(d) ACC16(d), ACC16((d) + 4)
#define WGMMA_HOLD16(d) asm volatile("" : ACC16(d) :: "memory")
#define WGMMA_HOLD32(d) asm volatile("" : ACC32(d) :: "memory")
/* The same for the 4 registers of an A operand read from registers. */
#define WGMMA_HOLD_A(a)                                                                            \
    asm volatile("" : "+r"((a)[0]), "+r"((a)[1]), "+r"((a)[2]), "+r"((a)[3]) :: "memory")

/* d (64 rows x 64 columns, 32 floats a thread in 8 blocks of 4) += a (64x16, the thread's 4
 * registers of A fragments) . B (16x64 from local memory, described by desc). TRANS_B 0: B's
 * 16-dim rows are contiguous (K-major, as K for Q.K^T); 1: its columns are (as V for P.V).
 * scale_d 0 ignores d's old value. */
#define WGMMA_M64N64K16(d, a, desc, scale_d, TRANS_B)                                              \
    asm volatile(SM90A "{ .reg .pred p; setp.ne.b32 p, %37, 0; "                                    \
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." MMA_TYPE "." MMA_TYPE " "           \
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "          \
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "\
                 "{%32, %33, %34, %35}, %36, p, 1, 1, " #TRANS_B "; }"                              \
                 : ACC32(d)                                                                        \
                 : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "l"(desc), "r"(scale_d)    \
                 : "memory")

/* The same with 32 columns: d is 16 floats a thread in 4 blocks of 4. */
#define WGMMA_M64N32K16(d, a, desc, scale_d, TRANS_B)                                              \
    asm volatile(SM90A "{ .reg .pred p; setp.ne.b32 p, %21, 0; "                                    \
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32." MMA_TYPE "." MMA_TYPE " "           \
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "         \
                 "{%16, %17, %18, %19}, %20, p, 1, 1, " #TRANS_B "; }"                              \
                 : ACC16(d)                                                                        \
                 : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "l"(desc), "r"(scale_d)    \
                 : "memory")

/* K and V tiles of `rows` keys by a multiple of 64 dims (16-bit elements) in local memory, in
 * the layout that the products read with 128-byte swizzle: the dims in groups of 64, each group
 * `rows` rows after the one before; a row of a group is 128 bytes, eight 16-byte chunks, chunk
 * c of row n stored at position c ^ (n % 8). Consecutive rows' same chunks thus fall in different
 * banks, both where the copies write them and where the tensor cores read them. The pattern
 * repeats every 8 rows (SWIZZLE_BYTES) from an address aligned to SWIZZLE_BYTES, where tiles
 * start. Returns the 16-byte slot of chunk c (dims 8c..8c+7) of row n. */
#define SWIZZLE_BYTES 1024
inline int swizzled_slot(int n, int c, int rows)
{
    return c / 8 * rows * 8 + n * 8 + ((c % 8) ^ (n % 8));
}

/* A descriptor of such a tile from tile (rows 8-aligned): 128-byte swizzle (bit 62), stride
 * SWIZZLE_BYTES between groups of 8 rows, lead the bytes between 64-element groups along the
 * product's n dimension (read only by V's products). */
inline ulong swizzled_desc(__local const uint4 *tile, uint lead)
{
    return (((ulong)tile & 0x3FFFFul) >> 4) | ((ulong)(lead >> 4) << 16) |
           ((ulong)(SWIZZLE_BYTES >> 4) << 32) | 1ul << 62;
}

/* The tile as Q.K^T reads it (K-major: the dims are the product's k), dims 16 kb..16 kb+15 of
 * every row: within a group, the hardware applies the swizzle to the start address moved by
 * the 32 bytes of each 16 dims. */
inline ulong swizzled_keys_desc(__local const uint4 *tile, int rows, int kb)
{
    return swizzled_desc(tile, 16) + (ulong)((kb / 4 * rows * 128 + kb % 4 * 32) >> 4);
}

/* The tile as P.V reads it (MN-major: the rows are the product's k), rows 16 j..16 j+15 and
 * dims 64 g..64 g+63. */
inline ulong swizzled_values_desc(__local const uint4 *tile, int rows, int j, int g)
{
    return swizzled_desc(tile, (uint)rows * 128) + (ulong)((j * 2048 + g * rows * 128) >> 4);
}
