/* Attention forward on NVIDIA tensor cores for one tile of queries, shared by the dense and
 * block-sparse kernels: K and V in f16 or bf16, the products' type, to which Q is converted as it
 * loads; O in any dtype; fp32 accumulation. Needs common.cl and mma_ptx.cl first. Used only
 * after the probe (cl/mma_probe.cl) passed.
 *
 * A work-group of MMA_WARPS warps owns MMA_GROUPS groups of 16 queries per warp: each K or V
 * fragment read from local memory serves every group. Q stays in registers as mma A fragments.
 * Key tiles of BN keys are copied into local memory with cp.async, K and V both row-major with
 * rows padded by 16 bytes so that ldmatrix reads them without bank conflicts (V through its
 * transposing form). MMA_STAGES 1 copies a tile's K and V between two tiles; MMA_STAGES 2
 * pipelines them: V of this tile loads during the first Q.K^T, K of the next tile during the
 * last P.V, in the same local memory. A tile is computed PART_KEYS keys at a time, one
 * online-softmax step each. The scores of a warp stay in registers, where they become the A
 * fragments of P.V (the accumulator layout of m16n8k16 matches its A layout); row reductions use
 * shfl.sync within each group of 4 lanes. Key tiles come as a list of source rows, so the sparse
 * kernel can gather through the permutation. K and V rows are copied 16 bytes at a time: the
 * host uses these kernels only when every K/V row starts on a 16-byte boundary.
 *
 * WGMMA 1 (Hopper, needs wgmma_ptx.cl before this file) computes the products with warpgroup
 * instructions instead: each warpgroup of 4 warps multiplies its 64 rows by a whole tile of BN
 * keys at once, Q and P as register operands and K and V read by the tensor cores straight from
 * local memory. There, K and V tiles are stored in the 128-byte-swizzle layout
 * (swizzled_slot() of wgmma_ptx.cl) that the products' descriptors read: K as a k-major operand
 * of Q.K^T, V as an n-major operand of P.V. A row's 16-byte chunks then come from one run of
 * global memory; with the unswizzled layout (8x8 core matrices, one after another) staging the
 * tiles cost more and the dense kernel took 1.4x as long (bench/NOTES.md).
 *
 * Tuning parameters (src/tiles/mma_tile.c declares their ranges): MMA_WARPS, MMA_GROUPS, BN and
 * MMA_STAGES. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef CAUSAL
#define CAUSAL 1
#endif
#ifndef MMA_WARPS
#define MMA_WARPS 4
#endif
#ifndef BN
#define BN 32
#endif
#ifndef MMA_STAGES
#define MMA_STAGES 2
#endif
#ifndef MMA_GROUPS
#define MMA_GROUPS 1
#endif
#ifndef WGMMA
#define WGMMA 0
#endif
#if WGMMA
/* A warpgroup's scores of a whole tile take BN / 2 registers a thread: one softmax step per
 * tile. */
#define PART_KEYS BN
#if MMA_GROUPS != 1 || MMA_WARPS % 4 != 0 || (BN != 32 && BN != 64) || HEAD_DIM % 64 != 0
#error "WGMMA takes whole warpgroups of one row group, 32- or 64-key tiles, head dims of 64 or 128"
#endif
#define KP HEAD_DIM /* K and V row length in 16-bit elements: the swizzle needs no padding */
#define TILE_ALIGN SWIZZLE_BYTES /* where the swizzle pattern repeats */
#else
/* Keys per online-softmax step: a tile of BN keys is copied at once and computed 32 keys at a
 * time, so that the scores of two row groups fit in registers beside Q and O. */
#define PART_KEYS 32
#define KP (HEAD_DIM + 8) /* K and V row pitch in 16-bit elements: ldmatrix without conflicts */
#define TILE_ALIGN 16
#if HEAD_DIM % 16 != 0
#error "head dims are steps of 16"
#endif
#endif
#if BN % PART_KEYS != 0
#error "BN is a multiple of PART_KEYS"
#endif
/* The output is rescaled only when a row's maximum grows by more than this, in log2 units of
 * the scaled scores. */
#define RESCALE_SLACK 8.0f
#if MMA_STAGES != 1 && MMA_STAGES != 2 && !(WGMMA && MMA_STAGES >= 3 && MMA_STAGES <= 6)
#error "MMA_STAGES is 1 or 2, or 3 to 6 with WGMMA"
#endif
/* MMA_STAGES 3 double-buffers the tiles: the next tile's K and V load into the second buffers
 * while this tile is computed, with one barrier per tile. MMA_STAGES 4 keeps one buffer of each
 * but defers each tile's P.V to the next tile, where the tensor cores run it during that tile's
 * softmax; V of a tile then loads after its last barrier. Both need three slots of key lists, so
 * that a warp still reading a tile's lists never meets those of the tile after next.
 * MMA_STAGES 5 stages the next tile through registers: each work-item loads its pieces of the
 * next K and V from global memory as this tile starts and stores them to the one buffer of each
 * after this tile's last barrier, so that the loads' latency hides behind the whole tile.
 * MMA_STAGES 6 is MMA_STAGES 5 with the warpgroups taking turns: each issues its Q.K^T only
 * once the one before has issued its own, so that the tensor cores run one warpgroup's products
 * while the one before computes its softmax, instead of all warpgroups computing their softmax
 * at once with the tensor cores idle. */
#define TILE_BUFFERS (MMA_STAGES == 3 ? 2 : 1)
#define TILE_LIST_SLOTS (MMA_STAGES == 3 || MMA_STAGES == 4 ? 3 : 2)

#define TILE_ROWS (16 * MMA_WARPS * MMA_GROUPS)
#define TILE_KEYS BN
#define TILE_WORK_ITEMS (32 * MMA_WARPS)

/* The keys of tile i are listed in slot i % TILE_LIST_SLOTS, so that the next tile's lists can
 * be written while this one is used. src/tiles/mma_tile.c counts these bytes. */
typedef struct __attribute__((aligned(TILE_ALIGN))) tile_local {
    uint4 k[BN * KP / 8];
    uint4 v[BN * KP / 8];
#if TILE_BUFFERS == 2
    uint4 k_other[BN * KP / 8]; /* the second buffers of MMA_STAGES 3 */
    uint4 v_other[BN * KP / 8];
#endif
    int key_row[TILE_LIST_SLOTS][BN]; /* source row of each key, -1 when absent */
    int key_pos[TILE_LIST_SLOTS][BN]; /* original position of each key, INT_MAX when absent */
} tile_local;

/* The K and V buffers of parity buffer (always 0 with one buffer). */
inline __local uint4 *tile_k(__local tile_local *shm, int buffer)
{
#if TILE_BUFFERS == 2
    return buffer ? shm->k_other : shm->k;
#else
    (void)buffer;
    return shm->k;
#endif
}

inline __local uint4 *tile_v(__local tile_local *shm, int buffer)
{
#if TILE_BUFFERS == 2
    return buffer ? shm->v_other : shm->v;
#else
    (void)buffer;
    return shm->v;
#endif
}

/* A lane holds two rows of each of its warp's MMA_GROUPS groups of 16: row r0 + 16 * group + 8 * h
 * (h = 0, 1) is its row index 2 * group + h below. */
#define LANE_ROWS (2 * MMA_GROUPS)
typedef struct tile_state {
    uint q[MMA_GROUPS][HEAD_DIM / 16][4];   /* Q fragments */
    float acc[MMA_GROUPS][HEAD_DIM / 8][4]; /* O fragments */
    float m[LANE_ROWS];                     /* running max of each row's raw scores q.k */
    float l[LANE_ROWS];                     /* this lane's share of each row's sum */
    int r0;                                 /* the lane's first row in the query tile */
    int buffer;                             /* the K/V buffers of the current tile */
#if WGMMA && MMA_STAGES == 4
    uint p[PART_KEYS / 16][4]; /* the previous tile's probabilities, whose P.V is pending */
#endif
} tile_state;

inline __local int *tile_key_rows(__local tile_local *shm, int slot)
{
    return shm->key_row[slot];
}

inline __local int *tile_key_positions(__local tile_local *shm, int slot)
{
    return shm->key_pos[slot];
}

/* Two elements of q converted to K and V's type (the products'), as one register, the first in
 * the low half: exact when q has that type. */
inline uint q_pair(__global const q_storage_t *q, ulong index)
{
    uint pair;
    PACK2(pair, load_q(q, index), load_q(q, index + 1));
    return pair;
}

/* Loads the Q fragments of the lane's rows (clamped: rows past q_rows are computed, not stored). */
inline void tile_begin(tile_state *st, __global const q_storage_t *q, head_view qv, int q_rows)
{
    const int lane = get_local_id(0) % 32, warp = get_local_id(0) / 32;
    const int g = lane / 4, t = lane % 4;
    st->r0 = warp * 16 * MMA_GROUPS + g;
    st->buffer = 0;
#if WGMMA && MMA_STAGES == 4
    /* Before the first tile, a P.V of zeros (tile_fetch() zeroes V) stands for the pending one:
     * every tile issues and waits for one unconditionally, so that the compiler sees the
     * products' registers untouched between each product and its wait (a conditional product
     * makes ptxas serialise every wgmma of the kernel). */
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++)
        st->p[j][0] = st->p[j][1] = st->p[j][2] = st->p[j][3] = 0u;
#endif
#pragma unroll
    for (int group = 0; group < MMA_GROUPS; group++) {
        const int r = st->r0 + 16 * group;
        const ulong row0 = qv.base + (ulong)min(r, q_rows - 1) * qv.stride_seq;
        const ulong row1 = qv.base + (ulong)min(r + 8, q_rows - 1) * qv.stride_seq;
#pragma unroll
        for (int s = 0; s < HEAD_DIM / 16; s++) {
            const int c = s * 16 + 2 * t;
            st->q[group][s][0] = q_pair(q, row0 + c);
            st->q[group][s][1] = q_pair(q, row1 + c);
            st->q[group][s][2] = q_pair(q, row0 + c + 8);
            st->q[group][s][3] = q_pair(q, row1 + c + 8);
        }
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++)
            st->acc[group][n][0] = st->acc[group][n][1] = st->acc[group][n][2] =
                st->acc[group][n][3] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++) {
        st->m[i] = -INFINITY;
        st->l[i] = 0.0f;
    }
}

/* Starts copying rows (the keys of a tile, -1 for an absent one) of one tensor into tile; absent
 * keys become zeros, so that their probability 0 meets a finite V. The pieces of a work-item
 * are a fixed count apart: unrolled, their index arithmetic folds into constants. */
#define COPY_PIECES (BN * HEAD_DIM / 8)
#define COPY_ROUNDS ((COPY_PIECES + TILE_WORK_ITEMS - 1) / TILE_WORK_ITEMS)

/* Where 16-byte piece i of a tile goes: key n, dims d.., at tile[return value]. Consecutive
 * pieces are consecutive in global memory: a row's 16-byte chunks, one row after another. */
inline int tile_piece(int i, int *n, int *d)
{
    *n = i / (HEAD_DIM / 8);
    *d = i % (HEAD_DIM / 8) * 8;
#if WGMMA
    return swizzled_slot(*n, *d / 8, BN);
#else
    return (*n * KP + *d) / 8;
#endif
}

/* Sets *i to the work-item's piece in copy round round; false past the tile's last piece (never
 * when the work-items divide the pieces). */
inline bool round_piece(int round, int *i)
{
    *i = get_local_id(0) + round * TILE_WORK_ITEMS;
    return COPY_PIECES % TILE_WORK_ITEMS == 0 || *i < COPY_PIECES;
}

/* Where piece i of the keys listed in rows comes from in x (element offset); sets *slot to its
 * place in the tile (tile_piece()) and *row to its key's source row, -1 when absent (the offset
 * then points at row 0). */
inline ulong piece_source(int i, __local const int *rows, head_view xv, int *slot, int *row)
{
    int n, d;
    *slot = tile_piece(i, &n, &d);
    *row = rows[n];
    return xv.base + (ulong)max(*row, 0) * xv.stride_seq + d;
}

inline void copy_rows(__local uint4 *tile, __local const int *rows,
                      __global const kv_storage_t *x, head_view xv)
{
#pragma unroll
    for (int round = 0; round < COPY_ROUNDS; round++) {
        int i;
        if (!round_piece(round, &i))
            break;
        int slot, row;
        const ulong source = piece_source(i, rows, xv, &slot, &row);
        COPY_ASYNC16(local_address(&tile[slot]), x + source, row >= 0 ? 16u : 0u);
    }
    COPY_ASYNC_COMMIT();
}

#if MMA_STAGES >= 5
/* A work-item's pieces of one tensor's tile, held in registers between load and store. */
typedef struct staged_rows {
    uint4 piece[COPY_ROUNDS];
} staged_rows;

/* Loads the work-item's pieces of rows (as copy_rows() lays them out; absent keys as zeros). */
inline void load_rows(staged_rows *r, __local const int *rows, __global const kv_storage_t *x,
                      head_view xv)
{
#pragma unroll
    for (int round = 0; round < COPY_ROUNDS; round++) {
        int i;
        if (!round_piece(round, &i))
            break;
        int slot, row;
        const ulong source = piece_source(i, rows, xv, &slot, &row);
        const uint4 piece = *(__global const uint4 *)(x + source);
        r->piece[round] = row >= 0 ? piece : (uint4)(0u);
    }
}

/* Stores what load_rows() loaded into tile; the products see it after FENCE_PROXY_ASYNC() and a
 * barrier. */
inline void store_rows(__local uint4 *tile, const staged_rows *r)
{
#pragma unroll
    for (int round = 0; round < COPY_ROUNDS; round++) {
        int i;
        if (!round_piece(round, &i))
            break;
        int n, d;
        tile[tile_piece(i, &n, &d)] = r->piece[round];
    }
}
#endif

/* Waits for this work-item's copies and makes them visible to the products; a barrier follows. */
inline void copies_arrived(void)
{
    COPY_ASYNC_WAIT(0);
#if WGMMA
    FENCE_PROXY_ASYNC();
#endif
}

/* Starts loading the first tile, listed in slot (the caller has synchronised since). */
inline void tile_fetch(__local tile_local *shm, int slot, __global const kv_storage_t *k,
                       head_view kv, __global const kv_storage_t *v, head_view vv)
{
#if MMA_STAGES >= 5
    staged_rows first;
    load_rows(&first, shm->key_row[slot], k, kv);
    store_rows(shm->k, &first);
    load_rows(&first, shm->key_row[slot], v, vv);
    store_rows(shm->v, &first);
#else
    copy_rows(shm->k, shm->key_row[slot], k, kv);
#if MMA_STAGES == 4
    /* V of zeros for the first tile's P.V of zero probabilities (tile_begin()), and an empty
     * group for the V copy that precedes each later K copy. */
    for (int i = get_local_id(0); i < BN * KP / 8; i += TILE_WORK_ITEMS)
        shm->v[i] = (uint4)(0u);
    COPY_ASYNC_COMMIT();
#elif MMA_STAGES != 2
    copy_rows(shm->v, shm->key_row[slot], v, vv);
#endif
#endif
}

/* Whether p holds in any lane of the warp. */
inline bool warp_any(bool p)
{
    uint any;
    asm volatile("{ .reg .pred p; setp.ne.u32 p, %1, 0; vote.sync.any.pred p, p, 0xffffffff;"
                 " selp.u32 %0, 1, 0, p; }"
                 : "=r"(any) : "r"((uint)p));
    return any != 0;
}

/* Online softmax of the raw scores s of keys key0.. (positions in key_pos), first part: masks
 * them and updates each row's running maximum and sum; when a maximum moves, returns true and
 * the factor alpha by which tile_rescale() must then scale the output (the caller picks when:
 * with MMA_STAGES 4 a P.V may still be adding to it); tile_probabilities() then turns the scores
 * into probabilities relative to the new maximum. Element e of a fragment is in row h = e / 2. Absent keys have position
 * INT_MAX, which the causal test also rejects. The maximum is taken on the raw scores and
 * scale_log2 (the softmax scale times log2(e)) multiplies the difference inside the exponent,
 * exp2((s - m) * scale_log2): one subtraction and one multiplication per score, as scaling first
 * and subtracting after would be, but no scaled score is ever formed, so every logit fp32 holds
 * works (s * scale_log2 overflows above 2.4e38), and a score equal to the maximum gets exactly 1
 * (a fused s * c - m * c would not: m * c is rounded separately). */
inline bool tile_softmax(tile_state *st, float s[MMA_GROUPS][PART_KEYS / 8][4],
                         __local const int *key_pos, int q_pos0, float scale_log2,
                         float alpha[LANE_ROWS])
{
    const int t = get_local_id(0) % 4;
    float row_max[LANE_ROWS];
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++)
        row_max[i] = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < PART_KEYS / 8; nb++) {
        const int2 key = vload2(0, key_pos + nb * 8 + 2 * t);
#pragma unroll
        for (int i = 0; i < LANE_ROWS; i++) {
            float *x = &s[i / 2][nb][i % 2 * 2];
#if CAUSAL
            const int pos = q_pos0 + st->r0 + i / 2 * 16 + i % 2 * 8;
            x[0] = key.x <= pos ? x[0] : -INFINITY;
            x[1] = key.y <= pos ? x[1] : -INFINITY;
#else
            x[0] = key.x != INT_MAX ? x[0] : -INFINITY;
            x[1] = key.y != INT_MAX ? x[1] : -INFINITY;
#endif
            row_max[i] = fmax(row_max[i], fmax(x[0], x[1]));
        }
    }
    bool moved = false;
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++) {
        float other;
        SHFL_XOR(other, row_max[i], 1);
        row_max[i] = fmax(row_max[i], other);
        SHFL_XOR(other, row_max[i], 2);
        row_max[i] = fmax(row_max[i], other);
        moved = moved || (row_max[i] - st->m[i]) * scale_log2 > RESCALE_SLACK;
    }
    /* The output is rescaled only when some row's maximum grew by more than RESCALE_SLACK (log2
     * units): below that, probabilities relative to the old maximum stay under 2^RESCALE_SLACK,
     * far from overflow, and l is summed against the same maximum. Most steps then skip the
     * rescale; the branch is uniform across the warp. */
    if (!warp_any(moved))
        return false;
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++) {
        const float new_max =
            (row_max[i] - st->m[i]) * scale_log2 > RESCALE_SLACK ? row_max[i] : st->m[i];
        /* Rows that have seen no visible key keep -inf; use 0 so no inf - inf appears. */
        alpha[i] = exp2_ftz((st->m[i] - (new_max == -INFINITY ? 0.0f : new_max)) * scale_log2);
        st->m[i] = new_max;
        st->l[i] *= alpha[i];
    }
    return true;
}

/* Scales the output rows by the factors tile_softmax() returned. */
inline void tile_rescale(tile_state *st, const float alpha[LANE_ROWS])
{
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++)
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) {
            st->acc[i / 2][n][i % 2 * 2] *= alpha[i];
            st->acc[i / 2][n][i % 2 * 2 + 1] *= alpha[i];
        }
}

/* tile_softmax() with the output rescaled at once, as every schedule but MMA_STAGES 4's does. */
inline void tile_softmax_now(tile_state *st, float s[MMA_GROUPS][PART_KEYS / 8][4],
                             __local const int *key_pos, int q_pos0, float scale_log2)
{
    float alpha[LANE_ROWS];
    if (tile_softmax(st, s, key_pos, q_pos0, scale_log2, alpha))
        tile_rescale(st, alpha);
}

/* The probabilities of 16-key step j of the masked scores s, packed in pairs as the A fragments
 * of P.V: a fragment's row-h pair of key block nb becomes register (nb % 2) * 2 + h of step
 * nb / 2. Adds them to the lane's row sums. */
inline void tile_probabilities(tile_state *st, float s[MMA_GROUPS][PART_KEYS / 8][4], int j,
                               float scale_log2, uint p[MMA_GROUPS][PART_KEYS / 16][4])
{
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++) {
        const float use = st->m[i] == -INFINITY ? 0.0f : st->m[i];
#pragma unroll
        for (int nb = 2 * j; nb < 2 * j + 2; nb++) {
            const float *x = &s[i / 2][nb][i % 2 * 2];
            uint pair;
            const float p0 = exp2_ftz((x[0] - use) * scale_log2);
            const float p1 = exp2_ftz((x[1] - use) * scale_log2);
            st->l[i] += p0 + p1;
            PACK2(pair, p0, p1);
            p[i / 2][j][nb % 2 * 2 + i % 2] = pair;
        }
    }
}

#if WGMMA
/* s = Q.K^T of the warpgroup's 64 rows and the BN keys from key0 of the staged K tile
 * (unscaled), one product per 16 dims, each over the whole tile. */
#if BN == 64
#define WGMMA_SCORES WGMMA_M64N64K16
#define WGMMA_HOLD_SCORES WGMMA_HOLD32
#else
#define WGMMA_SCORES WGMMA_M64N32K16
#define WGMMA_HOLD_SCORES WGMMA_HOLD16
#endif
inline void scores_issue(__local tile_local *shm, const tile_state *st, int key0,
                         float s[MMA_GROUPS][PART_KEYS / 8][4])
{
    __local const uint4 *keys = tile_k(shm, st->buffer) + key0 * 8;
    WGMMA_FENCE();
#pragma unroll
    for (int kb = 0; kb < HEAD_DIM / 16; kb++)
        WGMMA_SCORES(s[0], st->q[0][kb], swizzled_keys_desc(keys, BN, kb), kb > 0 ? 1 : 0, 0);
    WGMMA_COMMIT();
}

/* Waits for the products scores_issue() issued. */
inline void scores_wait(float s[MMA_GROUPS][PART_KEYS / 8][4])
{
    WGMMA_WAIT_ALL();
    WGMMA_HOLD_SCORES(s[0]);
}

inline void tile_scores(__local tile_local *shm, const tile_state *st, int key0,
                        float s[MMA_GROUPS][PART_KEYS / 8][4])
{
    scores_issue(shm, st, key0, s);
    scores_wait(s);
}

#if MMA_STAGES == 6
/* The warpgroups' turns (MMA_STAGES 6): warpgroup g > 0 waits at named barrier g until
 * warpgroup g - 1 has arrived there (256 work-items in all, the two warpgroups); barrier 0 is
 * barrier()'s. */
inline void turn_wait(int warpgroup)
{
    if (warpgroup > 0)
        asm volatile("bar.sync %0, 256;" ::"r"(warpgroup) : "memory");
}

inline void turn_pass(int warpgroup)
{
    if (warpgroup + 1 < MMA_WARPS / 4)
        asm volatile("bar.arrive %0, 256;" ::"r"(warpgroup + 1) : "memory");
}
#endif

/* Issues O += P.V for 16-key step j of the staged V tile from values, p the step's
 * probabilities: one product per 64 head dims. */
inline void values_step(__local const uint4 *values, tile_state *st, const uint p[4], int j)
{
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 64; n++)
        WGMMA_M64N64K16(st->acc[0] + 8 * n, p, swizzled_values_desc(values, BN, j, n), 1, 1);
}

/* Waits for the issued P.V products. The accumulators and the probabilities they read from
 * registers are held until then, so that the compiler neither reads the one nor reuses the
 * other's registers while the tensor cores still use them. */
inline void values_wait(tile_state *st, uint p[PART_KEYS / 16][4])
{
    WGMMA_WAIT_ALL();
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 64; n++)
        WGMMA_HOLD32(st->acc[0] + 8 * n);
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++)
        WGMMA_HOLD_A(p[j]);
}

/* O += P.V for the BN keys from key0 of the staged V tile, s their masked scores: per 16 keys,
 * the probabilities (tile_probabilities) and their products, issued as soon as they are ready,
 * so that the tensor cores work on step j while the next step's exponentials are computed. */
inline void tile_values(__local tile_local *shm, tile_state *st, int key0,
                        float s[MMA_GROUPS][PART_KEYS / 8][4], float scale_log2)
{
    __local const uint4 *values = tile_v(shm, st->buffer) + key0 * 8;
    uint p[MMA_GROUPS][PART_KEYS / 16][4];
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++) {
        tile_probabilities(st, s, j, scale_log2, p);
        WGMMA_FENCE();
        values_step(values, st, p[0][j], j);
        WGMMA_COMMIT();
    }
    values_wait(st, p[0]);
}

#if MMA_STAGES == 4
/* Issues the previous tile's P.V, deferred to this tile (its V is staged); values_wait() ends
 * it. */
inline void values_issue_pending(__local tile_local *shm, tile_state *st)
{
    WGMMA_FENCE();
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++)
        values_step(tile_v(shm, st->buffer), st, st->p[j], j);
    WGMMA_COMMIT();
}
#endif
#else
/* s = Q.K^T of the lane's rows and keys key0.. of the staged K tile (unscaled). Lane i addresses
 * row i % 8 of 8x8 matrix i / 8: keys nb*8.., dims 8*(i / 8).. give the two B fragments of two
 * consecutive 16-dim steps, used by every row group. */
inline void tile_scores(__local const tile_local *shm, const tile_state *st, int key0,
                        float s[MMA_GROUPS][PART_KEYS / 8][4])
{
    const int lane = get_local_id(0) % 32;
    const uint k_lane = local_address(shm->k) + (((key0 + lane % 8) * KP) + lane / 8 * 8) * 2;
#pragma unroll
    for (int nb = 0; nb < PART_KEYS / 8; nb++) {
#pragma unroll
        for (int group = 0; group < MMA_GROUPS; group++)
            s[group][nb][0] = s[group][nb][1] = s[group][nb][2] = s[group][nb][3] = 0.0f;
#pragma unroll
        for (int kb = 0; kb + 1 < HEAD_DIM / 16; kb += 2) {
            uint b[4];
            LDMATRIX_X4(b, k_lane + (nb * 8 * KP + kb * 16) * 2);
#pragma unroll
            for (int group = 0; group < MMA_GROUPS; group++) {
                MMA(s[group][nb], st->q[group][kb], b[0], b[1]);
                MMA(s[group][nb], st->q[group][kb + 1], b[2], b[3]);
            }
        }
#if HEAD_DIM / 16 % 2 != 0
        /* An odd last 16-dim step (head dims 80 and 112) takes its two matrices alone. */
        uint b[2];
        LDMATRIX_X2(b, k_lane + (nb * 8 * KP + HEAD_DIM - 16) * 2);
#pragma unroll
        for (int group = 0; group < MMA_GROUPS; group++)
            MMA(s[group][nb], st->q[group][HEAD_DIM / 16 - 1], b[0], b[1]);
#endif
    }
}

/* O += P.V for the probabilities p of keys key0.. of the staged V tile, 16 keys per step. Lane i
 * addresses key row i % 8 + 8 * (i / 8 % 2) and dims 8 * (i / 16)..: transposed, the four
 * matrices are the B fragments of two 8-dim columns. */
inline void tile_values(__local const tile_local *shm, tile_state *st, int key0,
                        uint p[MMA_GROUPS][PART_KEYS / 16][4])
{
    const int lane = get_local_id(0) % 32;
    const uint v_lane = local_address(shm->v) +
                        ((key0 + lane % 8 + lane / 8 % 2 * 8) * KP + lane / 16 * 8) * 2;
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++) {
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n += 2) {
            uint b[4];
            LDMATRIX_X4_TRANS(b, v_lane + (j * 16 * KP + n * 8) * 2);
#pragma unroll
            for (int group = 0; group < MMA_GROUPS; group++) {
                MMA(st->acc[group][n], p[group][j], b[0], b[1]);
                MMA(st->acc[group][n + 1], p[group][j], b[2], b[3]);
            }
        }
    }
}
#endif

/* Attends the tile's queries to the keys listed in slot, whose loading has started, and starts
 * loading those of next_slot (the caller has filled both lists and synchronised). q_pos0 is the
 * absolute position of the tile's first query, for the causal test. The tile's keys are taken
 * PART_KEYS at a time, one online-softmax step each: fewer scores live in registers. */
inline void tile_keys(__local tile_local *shm, int slot, int next_slot, tile_state *st,
                      __global const q_storage_t *q, head_view qv, int q_rows, int q_pos0,
                      __global const kv_storage_t *k, head_view kv,
                      __global const kv_storage_t *v, head_view vv, float scale_log2)
{
    /* Q is held in registers since tile_begin(). */
    (void)q, (void)qv, (void)q_rows;
#if MMA_STAGES == 4
    /* This tile's K has arrived; the previous tile's V may still be in flight. */
    COPY_ASYNC_WAIT(1);
    FENCE_PROXY_ASYNC();
    barrier(CLK_LOCAL_MEM_FENCE);
    float s[MMA_GROUPS][PART_KEYS / 8][4];
    tile_scores(shm, st, 0, s);
    /* The previous tile's V has arrived and every warp is done with this K: the next K may come,
     * and the previous tile's P.V runs on the tensor cores during this tile's softmax. */
    copies_arrived();
    barrier(CLK_LOCAL_MEM_FENCE);
    copy_rows(shm->k, shm->key_row[next_slot], k, kv);
    values_issue_pending(shm, st);
    float alpha[LANE_ROWS];
    const bool moved = tile_softmax(st, s, shm->key_pos[slot], q_pos0, scale_log2, alpha);
    uint p[MMA_GROUPS][PART_KEYS / 16][4];
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++)
        tile_probabilities(st, s, j, scale_log2, p);
    values_wait(st, st->p);
    if (moved)
        tile_rescale(st, alpha);
#pragma unroll
    for (int j = 0; j < PART_KEYS / 16; j++)
#pragma unroll
        for (int r = 0; r < 4; r++)
            st->p[j][r] = p[0][j][r];
    /* Every warp is done with the previous V: this tile's may come. */
    barrier(CLK_LOCAL_MEM_FENCE);
    copy_rows(shm->v, shm->key_row[slot], v, vv);
#elif MMA_STAGES >= 5
    /* This tile, stored by every work-item, is visible to the products; the next one loads into
     * registers while it is computed, and is stored once every warp is done with it. */
    FENCE_PROXY_ASYNC();
    barrier(CLK_LOCAL_MEM_FENCE);
    staged_rows next_k, next_v;
    load_rows(&next_k, shm->key_row[next_slot], k, kv);
    load_rows(&next_v, shm->key_row[next_slot], v, vv);
    float s[MMA_GROUPS][PART_KEYS / 8][4];
#if MMA_STAGES == 6
    const int warpgroup = get_local_id(0) / 128;
    turn_wait(warpgroup);
    scores_issue(shm, st, 0, s);
    turn_pass(warpgroup);
    scores_wait(s);
#else
    tile_scores(shm, st, 0, s);
#endif
    tile_softmax_now(st, s, shm->key_pos[slot], q_pos0, scale_log2);
    tile_values(shm, st, 0, s, scale_log2);
    barrier(CLK_LOCAL_MEM_FENCE);
    store_rows(shm->k, &next_k);
    store_rows(shm->v, &next_v);
#else
    copies_arrived();
    barrier(CLK_LOCAL_MEM_FENCE);
#if MMA_STAGES == 3
    /* Every warp is done with the tile before this one: its buffers take the next tile. */
    copy_rows(tile_k(shm, 1 - st->buffer), shm->key_row[next_slot], k, kv);
    copy_rows(tile_v(shm, 1 - st->buffer), shm->key_row[next_slot], v, vv);
    float s[MMA_GROUPS][PART_KEYS / 8][4];
    tile_scores(shm, st, 0, s);
    tile_softmax_now(st, s, shm->key_pos[slot], q_pos0, scale_log2);
    tile_values(shm, st, 0, s, scale_log2);
    st->buffer = 1 - st->buffer;
#else
#if MMA_STAGES == 2
    copy_rows(shm->v, shm->key_row[slot], v, vv);
#endif
#pragma unroll
    for (int part = 0; part < BN / PART_KEYS; part++) {
        float s[MMA_GROUPS][PART_KEYS / 8][4];
        tile_scores(shm, st, part * PART_KEYS, s);
        tile_softmax_now(st, s, shm->key_pos[slot] + part * PART_KEYS, q_pos0, scale_log2);
#if !WGMMA
        uint p[MMA_GROUPS][PART_KEYS / 16][4];
#pragma unroll
        for (int j = 0; j < PART_KEYS / 16; j++)
            tile_probabilities(st, s, j, scale_log2, p);
#endif
#if MMA_STAGES == 2
        /* V has arrived before the first product with it; once every warp is done with K, the
         * next tile's K may come. */
        if (part == 0)
            copies_arrived();
        if (part == 0 || part == BN / PART_KEYS - 1)
            barrier(CLK_LOCAL_MEM_FENCE);
        if (part == BN / PART_KEYS - 1)
            copy_rows(shm->k, shm->key_row[next_slot], k, kv);
#endif
#if WGMMA
        tile_values(shm, st, part * PART_KEYS, s, scale_log2);
#else
        tile_values(shm, st, part * PART_KEYS, p);
#endif
    }
#if MMA_STAGES == 1
    /* Every warp is done with this tile: the next one may come. */
    barrier(CLK_LOCAL_MEM_FENCE);
    copy_rows(shm->k, shm->key_row[next_slot], k, kv);
    copy_rows(shm->v, shm->key_row[next_slot], v, vv);
#endif
#endif
#endif
}

/* Writes O = acc / l for the lane's rows; a row that saw no key gets zeros. Unless lse is NULL,
 * the first lane of each group of 4 (which all hold the row's m and, summed, its l) also writes
 * the row's log-sum-exp at lse[lse_row0 + row]. With MMA_STAGES 4 it first runs the last tile's
 * deferred P.V from shm; every work-item of the group calls it. */
inline void tile_store(__local tile_local *shm, tile_state *st, __global o_storage_t *o,
                       head_view ov, int q_rows, __global float *lse, ulong lse_row0,
                       float scale_log2)
{
#if MMA_STAGES != 4
    (void)shm;
#else
    /* The last tile's P.V, once its V has arrived. */
    copies_arrived();
    barrier(CLK_LOCAL_MEM_FENCE);
    values_issue_pending(shm, st);
    values_wait(st, st->p);
#endif
    /* The copy of the (empty) tile after the last one may still be in flight. */
    COPY_ASYNC_WAIT(0);
    const int t = get_local_id(0) % 4;
#pragma unroll
    for (int i = 0; i < LANE_ROWS; i++) {
        float other;
        SHFL_XOR(other, st->l[i], 1);
        st->l[i] += other;
        SHFL_XOR(other, st->l[i], 2);
        st->l[i] += other;
        const float inverse = st->l[i] > 0.0f ? 1.0f / st->l[i] : 0.0f;
        const int r = st->r0 + i / 2 * 16 + i % 2 * 8;
        if (r >= q_rows)
            continue;
        if (lse && t == 0)
            lse[lse_row0 + r] = row_lse(st->m[i], st->l[i], scale_log2);
        const ulong row = ov.base + (ulong)r * ov.stride_seq;
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) {
            const int c = n * 8 + 2 * t;
            store_o(o, row + c, st->acc[i / 2][n][i % 2 * 2] * inverse);
            store_o(o, row + c + 1, st->acc[i / 2][n][i % 2 * 2 + 1] * inverse);
        }
    }
}
