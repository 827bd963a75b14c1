/* Attention forward on NVIDIA tensor cores (mma.sync through inline PTX, sm_80+) for one tile of
 * queries, shared by the dense and block-sparse kernels; f16 and bf16 storage with fp32
 * accumulation. Needs common.cl first. Used only after the probe (cl/mma_probe.cl) passed.
 *
 * A work-group of 4 warps owns 64 queries, 16 per warp. Q stays in registers as mma A fragments;
 * each key tile of BN keys is staged in local memory (K row-major, V transposed) and the scores
 * of a warp stay in registers, where they become the A fragments of P.V (the accumulator layout
 * of m16n8k16 matches its A layout). Row reductions use shfl.sync within each group of 4 lanes.
 * Key tiles come as a list of source rows (so the sparse kernel can gather through the
 * permutation). K and V rows are read 8 elements (16 bytes) at a time: the host uses these
 * kernels only when every K/V row starts on a 16-byte boundary. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef BN
#define BN 32
#endif
#ifndef CAUSAL
#define CAUSAL 1
#endif
#define BM 64
#define KP (HEAD_DIM + 8) /* K row pitch in 16-bit elements: conflict-free fragment reads */
#define VP (BN + 8)       /* V^T row pitch */

#if defined(DTYPE_BF16)
#define MMA_TYPE "bf16"
#define PACK_INSTRUCTION "cvt.rn.bf16x2.f32 %0, %1, %2;"
#elif defined(DTYPE_F16)
#define MMA_TYPE "f16"
#define PACK_INSTRUCTION "cvt.rn.f16x2.f32 %0, %1, %2;"
#else
#error "the tensor-core kernel takes f16 or bf16 storage"
#endif

/* Macros rather than functions, so the fragments stay in registers. */
#define MMA(c, a, b0, b1)                                                                          \
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE                    \
                 ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"                     \
                 : "+f"((c)[0]), "+f"((c)[1]), "+f"((c)[2]), "+f"((c)[3])                         \
                 : "r"((a)[0]), "r"((a)[1]), "r"((a)[2]), "r"((a)[3]), "r"(b0), "r"(b1))
#define SHFL_XOR(out, x, mask)                                                                     \
    do {                                                                                           \
        uint shuffled_;                                                                            \
        asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;"                            \
                     : "=r"(shuffled_) : "r"(as_uint(x)), "r"(mask));                             \
        (out) = as_float(shuffled_);                                                               \
    } while (0)
/* Two floats to one register of two 16-bit values, lo in the low half. */
#define PACK2(out, lo, hi) asm(PACK_INSTRUCTION : "=r"(out) : "f"(hi), "f"(lo))

#define TILE_ROWS BM
#define TILE_KEYS BN
#define TILE_WORK_ITEMS 128

typedef struct tile_local {
    uint4 k[BN * KP / 8];       /* K tile, row-major */
    uint4 v[HEAD_DIM * VP / 8]; /* V tile, transposed */
    int key_row[BN];            /* source row of each key of the tile, -1 when absent */
    int key_pos[BN];            /* original position of that key, for the causal test */
} tile_local;

typedef struct tile_state {
    uint q[HEAD_DIM / 16][4];    /* Q fragments of rows r0 and r0 + 8 */
    float acc[HEAD_DIM / 8][4];  /* O fragments */
    float m0, m1, l0, l1;        /* running max (log2 units) and this lane's share of the sum */
    int r0;                      /* the lane's first row in the query tile; the other is r0 + 8 */
} tile_state;

/* Describes where one head's rows live: element (s, d) is at base + s*stride_seq + d. */
typedef struct head_view {
    ulong base;
    ulong stride_seq;
} head_view;

/* Two raw 16-bit elements as one register, the first in the low half. */
inline uint load_pair(__global const storage_t *base, ulong index)
{
    __global const ushort *raw = (__global const ushort *)base;
    return raw[index] | ((uint)raw[index + 1] << 16);
}

/* Loads the Q fragments of the lane's rows (clamped: rows past q_rows are computed, not stored). */
inline void tile_begin(tile_state *st, __global const storage_t *q, head_view qv, int q_rows)
{
    const int lane = get_local_id(0) % 32, warp = get_local_id(0) / 32;
    const int g = lane / 4, t = lane % 4;
    st->r0 = warp * 16 + g;
    const ulong row0 = qv.base + (ulong)min(st->r0, q_rows - 1) * qv.stride_seq;
    const ulong row1 = qv.base + (ulong)min(st->r0 + 8, q_rows - 1) * qv.stride_seq;
#pragma unroll
    for (int s = 0; s < HEAD_DIM / 16; s++) {
        const int c = s * 16 + 2 * t;
        st->q[s][0] = load_pair(q, row0 + c);
        st->q[s][1] = load_pair(q, row1 + c);
        st->q[s][2] = load_pair(q, row0 + c + 8);
        st->q[s][3] = load_pair(q, row1 + c + 8);
    }
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
        st->acc[n][0] = st->acc[n][1] = st->acc[n][2] = st->acc[n][3] = 0.0f;
    st->m0 = st->m1 = -INFINITY;
    st->l0 = st->l1 = 0.0f;
}

/* One key tile: the caller has filled shm->key_row / key_pos and synchronised. q_pos0 is the
 * absolute position of the tile's first query, for the causal test. */
inline void tile_keys(__local tile_local *shm, tile_state *st, __global const storage_t *q,
                      head_view qv, int q_rows, int q_pos0, __global const storage_t *k,
                      head_view kv, __global const storage_t *v, head_view vv, float scale_log2)
{
    /* Q is held in registers since tile_begin(). */
    (void)q;
    (void)qv;
    (void)q_rows;
    const int lid = get_local_id(0);
    const int lane = lid % 32, g = lane / 4, t = lane % 4;
    __local ushort *vt = (__local ushort *)shm->v;
    __local const uint *kw = (__local const uint *)shm->k;
    __local const uint *vw = (__local const uint *)shm->v;
    /* Stage the tile: K row-major, V transposed, 8 elements per load; zeros for absent keys. */
    for (int i = lid; i < BN * HEAD_DIM / 8; i += 128) {
        const int n = i / (HEAD_DIM / 8), d = i % (HEAD_DIM / 8) * 8;
        const int row = shm->key_row[n];
        uint4 kx = (uint4)(0), vx = (uint4)(0);
        if (row >= 0) {
            kx = *(__global const uint4 *)(k + kv.base + (ulong)row * kv.stride_seq + d);
            vx = *(__global const uint4 *)(v + vv.base + (ulong)row * vv.stride_seq + d);
        }
        shm->k[(n * KP + d) / 8] = kx;
        const uint words[4] = {vx.x, vx.y, vx.z, vx.w};
#pragma unroll
        for (int w = 0; w < 4; w++) {
            vt[(d + 2 * w) * VP + n] = (ushort)words[w];
            vt[(d + 2 * w + 1) * VP + n] = (ushort)(words[w] >> 16);
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float s[BN / 8][4];
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++) {
        s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
        for (int kb = 0; kb < HEAD_DIM / 16; kb++) {
            const int word = (nb * 8 + g) * (KP / 2) + kb * 8 + t;
            MMA(s[nb], st->q[kb], kw[word], kw[word + 4]);
        }
    }
    /* Scale and mask, then the online softmax of rows r0 (elements 0, 1) and r0 + 8 (2, 3). */
    float max0 = -INFINITY, max1 = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int n = nb * 8 + 2 * t + (e & 1);
            bool visible = shm->key_row[n] >= 0;
#if CAUSAL
            visible = visible && shm->key_pos[n] <= q_pos0 + st->r0 + (e < 2 ? 0 : 8);
#endif
            s[nb][e] = visible ? s[nb][e] * scale_log2 : -INFINITY;
        }
        max0 = fmax(max0, fmax(s[nb][0], s[nb][1]));
        max1 = fmax(max1, fmax(s[nb][2], s[nb][3]));
    }
    float other;
    SHFL_XOR(other, max0, 1);
    max0 = fmax(max0, other);
    SHFL_XOR(other, max0, 2);
    max0 = fmax(max0, other);
    SHFL_XOR(other, max1, 1);
    max1 = fmax(max1, other);
    SHFL_XOR(other, max1, 2);
    max1 = fmax(max1, other);
    const float new0 = fmax(st->m0, max0), new1 = fmax(st->m1, max1);
    /* Rows that have seen no visible key keep -inf; use 0 so no inf - inf appears. */
    const float use0 = new0 == -INFINITY ? 0.0f : new0, use1 = new1 == -INFINITY ? 0.0f : new1;
    const float alpha0 = exp2(st->m0 - use0), alpha1 = exp2(st->m1 - use1);
    st->m0 = new0;
    st->m1 = new1;
    st->l0 *= alpha0;
    st->l1 *= alpha1;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) {
        st->acc[n][0] *= alpha0;
        st->acc[n][1] *= alpha0;
        st->acc[n][2] *= alpha1;
        st->acc[n][3] *= alpha1;
    }
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++) {
        s[nb][0] = exp2(s[nb][0] - use0);
        s[nb][1] = exp2(s[nb][1] - use0);
        s[nb][2] = exp2(s[nb][2] - use1);
        s[nb][3] = exp2(s[nb][3] - use1);
        st->l0 += s[nb][0] + s[nb][1];
        st->l1 += s[nb][2] + s[nb][3];
    }
    /* O += P.V, 16 keys per step. */
#pragma unroll
    for (int j = 0; j < BN / 16; j++) {
        uint pa[4];
        PACK2(pa[0], s[2 * j][0], s[2 * j][1]);
        PACK2(pa[1], s[2 * j][2], s[2 * j][3]);
        PACK2(pa[2], s[2 * j + 1][0], s[2 * j + 1][1]);
        PACK2(pa[3], s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) {
            const int word = (n * 8 + g) * (VP / 2) + j * 8 + t;
            MMA(st->acc[n], pa, vw[word], vw[word + 4]);
        }
    }
    /* The next tile rewrites the key list and the staged tile. */
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Writes O = acc / l for the lane's rows; a row that saw no key gets zeros. */
inline void tile_store(tile_state *st, __global storage_t *o, head_view ov, int q_rows)
{
    const int t = get_local_id(0) % 4;
    float other;
    SHFL_XOR(other, st->l0, 1);
    st->l0 += other;
    SHFL_XOR(other, st->l0, 2);
    st->l0 += other;
    SHFL_XOR(other, st->l1, 1);
    st->l1 += other;
    SHFL_XOR(other, st->l1, 2);
    st->l1 += other;
    const float inv0 = st->l0 > 0.0f ? 1.0f / st->l0 : 0.0f;
    const float inv1 = st->l1 > 0.0f ? 1.0f / st->l1 : 0.0f;
    const int r1 = st->r0 + 8;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) {
        const int c = n * 8 + 2 * t;
        if (st->r0 < q_rows) {
            store_element(o, ov.base + (ulong)st->r0 * ov.stride_seq + c, st->acc[n][0] * inv0);
            store_element(o, ov.base + (ulong)st->r0 * ov.stride_seq + c + 1, st->acc[n][1] * inv0);
        }
        if (r1 < q_rows) {
            store_element(o, ov.base + (ulong)r1 * ov.stride_seq + c, st->acc[n][2] * inv1);
            store_element(o, ov.base + (ulong)r1 * ov.stride_seq + c + 1, st->acc[n][3] * inv1);
        }
    }
}
