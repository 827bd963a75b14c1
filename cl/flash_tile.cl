/* Flash-attention forward for one tile of queries, shared by the dense and block-sparse kernels.
 *
 * A work-group of WG_ROWS x WG_COLS work-items owns BLOCK_M queries. Work-item (ty, tx) holds
 * the scores of rows ty*TM.. and keys tx*TN.. of each key tile, and the output of rows ty*TM..
 * and dims tx*TD... Key tiles of BLOCK_N keys are given as a list of source rows (so the sparse
 * kernel can gather through the permutation) and processed with an online softmax in fp32:
 * Q.K^T through local memory in chunks of KCHUNK dims, then P.V in chunks of VCHUNK keys.
 * Chunks are double-buffered: the global loads of chunk c+1 are in flight while chunk c is
 * computed, which hides their latency and needs one barrier per chunk. Those loads are
 * unconditional (a missing row reads row 0 and is masked or zeroed when staged) and stay in
 * their storage format until staged, so that nothing waits for them before that compute. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef BLOCK_M
#define BLOCK_M 64
#endif
#ifndef BLOCK_N
#define BLOCK_N 64
#endif
#ifndef WG_ROWS
#define WG_ROWS 16
#endif
#ifndef WG_COLS
#define WG_COLS 16
#endif
#ifndef KCHUNK
#define KCHUNK 16
#endif
#ifndef VCHUNK
#define VCHUNK 16
#endif
#ifndef CAUSAL
#define CAUSAL 1
#endif
/* Unrolling of the inner Q.K^T and P.V loops (a tuning parameter; full by default: on the
 * H100 full unrolling ran 6% faster than 4 and 2). */
#ifndef UNROLL_QK
#define UNROLL_QK KCHUNK
#endif
#ifndef UNROLL_PV
#define UNROLL_PV VCHUNK
#endif


#define WG_SIZE (WG_ROWS * WG_COLS)
#define TM (BLOCK_M / WG_ROWS)
#define TN (BLOCK_N / WG_COLS)
#define TD (HEAD_DIM / WG_COLS)

#if TM % 4 != 0 || TN % 4 != 0 || TD % 4 != 0
#error "each work-item's rows, keys and dims must come in groups of 4"
#endif
#if HEAD_DIM % KCHUNK != 0 || BLOCK_N % VCHUNK != 0
#error "KCHUNK must divide HEAD_DIM and VCHUNK must divide BLOCK_N"
#endif

/* Row pitches padded by 4 floats: keeps float4 alignment and spreads transposed writes over banks. */
#define QS_PITCH (BLOCK_M + 4)
#define KS_PITCH (BLOCK_N + 4)
#define VS_PITCH (HEAD_DIM + 4)
#define PS_PITCH (BLOCK_M + 4)
#define STAGE_QK (KCHUNK * (QS_PITCH + KS_PITCH))
#define STAGE_V (VCHUNK * VS_PITCH)
#define STAGE_FLOATS (STAGE_QK > STAGE_V ? STAGE_QK : STAGE_V)

/* Work-items load 4 consecutive elements at a time; these are the loads per work-item. */
#define Q_QUADS ((BLOCK_M * KCHUNK / 4 + WG_SIZE - 1) / WG_SIZE)
#define K_QUADS ((BLOCK_N * KCHUNK / 4 + WG_SIZE - 1) / WG_SIZE)
#define V_QUADS ((VCHUNK * HEAD_DIM / 4 + WG_SIZE - 1) / WG_SIZE)

/* A prefetched quad as loaded, per dtype (<name>_raw4): bf16 stays pairs of 16-bit patterns in
 * 32-bit words until it is staged, so that no unpacking waits for the load before the compute
 * that is to hide it; f32 and f16 are converted as they load. bf16 rows are read as uint2 when
 * the head view keeps them 8-byte aligned (aligned is the same in every work-item), else element
 * by element. Q and K/V each use their own dtype's (q_raw4, kv_raw4 and their functions). */
#define CONVERTED_RAW4(name)                                                                   \
    typedef float4 name##_raw4;                                                                \
    inline bool name##_raw_aligned(head_view view)                                             \
    {                                                                                          \
        (void)view;                                                                            \
        return true;                                                                           \
    }                                                                                          \
    inline float4 name##_load_raw4(__global const name##_storage *base, ulong index,           \
                                   bool aligned)                                               \
    {                                                                                          \
        (void)aligned;                                                                         \
        return name##_load4(base, index);                                                      \
    }                                                                                          \
    inline float4 name##_raw_float4(float4 r) { return r; }
CONVERTED_RAW4(f32)
CONVERTED_RAW4(f16)

typedef uint2 bf16_raw4;
inline bool bf16_raw_aligned(head_view view) { return ((view.base | view.stride_seq) & 3) == 0; }
inline uint2 bf16_load_raw4(__global const ushort *base, ulong index, bool aligned)
{
    if (aligned)
        return *(__global const uint2 *)(base + index);
    return (uint2)((uint)base[index] | (uint)base[index + 1] << 16,
                   (uint)base[index + 2] | (uint)base[index + 3] << 16);
}
inline float4 bf16_raw_float4(uint2 r)
{
    return as_float4((uint4)(r.s0 << 16, r.s0 & 0xffff0000u, r.s1 << 16, r.s1 & 0xffff0000u));
}

typedef DTYPE_NAME(Q_DTYPE, raw4) q_raw4;
typedef DTYPE_NAME(KV_DTYPE, raw4) kv_raw4;
#define q_raw_aligned DTYPE_NAME(Q_DTYPE, raw_aligned)
#define load_q_raw4 DTYPE_NAME(Q_DTYPE, load_raw4)
#define q_raw_float4 DTYPE_NAME(Q_DTYPE, raw_float4)
#define kv_raw_aligned DTYPE_NAME(KV_DTYPE, raw_aligned)
#define load_kv_raw4 DTYPE_NAME(KV_DTYPE, load_raw4)
#define kv_raw_float4 DTYPE_NAME(KV_DTYPE, raw_float4)

typedef struct __attribute__((aligned(16))) flash_local {
    float stage[2][STAGE_FLOATS];    /* double buffer: Q and K chunks (transposed), or V chunks */
    float p[BLOCK_N * PS_PITCH];     /* probabilities of the tile, transposed: p[key][row] */
    float row_max[BLOCK_M * WG_COLS];
    float row_sum[BLOCK_M * WG_COLS];
    int key_row[2][BLOCK_N];         /* per list slot: source row of each key, -1 when absent */
    int key_pos[2][BLOCK_N];         /* original position of that key, INT_MAX when absent */
} flash_local;

/* The interface the attention kernels are written against; cl/mma_tile.cl provides the same
 * names for the tensor-core path: tile_local, tile_state, tile_key_rows,
 * tile_key_positions, tile_begin, tile_fetch, tile_keys, tile_store, TILE_ROWS, TILE_KEYS,
 * TILE_WORK_ITEMS and TILE_LIST_SLOTS. The keys of tile i are listed in slot
 * i % TILE_LIST_SLOTS, so that the lists of the next tile can be written while this one is used. */
#define TILE_ROWS BLOCK_M
#define TILE_KEYS BLOCK_N
#define TILE_WORK_ITEMS WG_SIZE
typedef flash_local tile_local;
#define TILE_LIST_SLOTS 2

inline __local int *tile_key_rows(__local flash_local *shm, int slot)
{
    return shm->key_row[slot];
}

inline __local int *tile_key_positions(__local flash_local *shm, int slot)
{
    return shm->key_pos[slot];
}

/* Nothing to start: tile_keys() loads each tile chunk by chunk. */
inline void tile_fetch(__local flash_local *shm, int slot, __global const kv_storage_t *k,
                       head_view kv, __global const kv_storage_t *v, head_view vv)
{
    (void)shm, (void)slot, (void)k, (void)kv, (void)v, (void)vv;
}

typedef struct flash_state {
    float o[TM][TD];
    float m[TM]; /* running max of the raw scores q.k (unscaled) */
    float l[TM]; /* running sum of exp2((score - m) * scale_log2) */
} flash_state;
typedef flash_state tile_state;

inline void tile_begin(flash_state *st, __global const q_storage_t *q, head_view qv, int q_rows)
{
    /* Q is staged with every key tile, so nothing of it is loaded here. */
    (void)q;
    (void)qv;
    (void)q_rows;
#pragma unroll
    for (int i = 0; i < TM; i++) {
        st->m[i] = -INFINITY;
        st->l[i] = 0.0f;
#pragma unroll
        for (int e = 0; e < TD; e++)
            st->o[i][e] = 0.0f;
    }
}

/* Where the partial of row i (of the work-item's rows) from column tx lives in row_max and
 * row_sum: [i][ty][tx], so that the two row groups of a warp fall in different banks. */
inline int partial_index(int i, int ty, int tx)
{
    return (i * WG_ROWS + ty) * WG_COLS + tx;
}

/* Sum or max of the WG_COLS partials of row i. */
inline float reduce_partials(__local const float *partials, int i, int ty, bool is_max)
{
    __local const float *row = partials + partial_index(i, ty, 0);
    float r = is_max ? -INFINITY : 0.0f;
#if WG_COLS % 4 == 0
#pragma unroll
    for (int t = 0; t < WG_COLS; t += 4) {
        float4 x = vload4(0, row + t);
        r = is_max ? fmax(fmax(r, fmax(x.s0, x.s1)), fmax(x.s2, x.s3))
                   : r + ((x.s0 + x.s1) + (x.s2 + x.s3));
    }
#else
    for (int t = 0; t < WG_COLS; t++)
        r = is_max ? fmax(r, row[t]) : r + row[t];
#endif
    return r;
}

/* First of the 4 consecutive output dims g (0 .. TD/4) of work-item tx: interleaved (tx*4 +
 * 4*WG_COLS*g) so that the work-items of a row read V without bank conflicts. */
inline int dim_base(int tx, int g)
{
    return g * 4 * WG_COLS + tx * 4;
}

/* Component i of v; with a constant i (unrolled loops) this folds to a register. Loading into
 * float4 values rather than through vstore4 into private arrays keeps them out of memory. */
inline float lane(float4 v, int i)
{
    return i == 0 ? v.s0 : i == 1 ? v.s1 : i == 2 ? v.s2 : v.s3;
}

/* Global loads of one Q.K^T chunk (dims d0..d0+KCHUNK) into registers, unconditional, from row 0 (the tile's, or the head's) in place of a missing row: such rows
 * only reach scores that are never stored (query rows past q_rows) or are masked to -inf
 * (absent keys) by a select, so their values do not matter. */
inline void fetch_qk_chunk(__local const int *key_row, q_raw4 qr[Q_QUADS], kv_raw4 kr[K_QUADS],
                           __global const q_storage_t *q, head_view qv, int q_rows,
                           __global const kv_storage_t *k, head_view kv, int d0, bool aligned)
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < Q_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int r = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        bool ok = quad < BLOCK_M * KCHUNK / 4 && r < q_rows;
        qr[u] = load_q_raw4(q, qv.base + (ulong)(ok ? r : 0) * qv.stride_seq + d0 + c, aligned);
    }
#pragma unroll
    for (int u = 0; u < K_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int n = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        int row = quad < BLOCK_N * KCHUNK / 4 ? key_row[n] : -1;
        kr[u] = load_kv_raw4(k, kv.base + (ulong)max(row, 0) * kv.stride_seq + d0 + c, aligned);
    }
}

/* Writes a fetched Q.K^T chunk into a stage buffer, transposed: [dim][row] and [dim][key]. */
inline void store_qk_chunk(__local float *buffer, const q_raw4 qr_raw[Q_QUADS],
                           const kv_raw4 kr_raw[K_QUADS])
{
    const int lid = get_local_id(0);
    __local float *qs = buffer;
    __local float *ks = buffer + KCHUNK * QS_PITCH;
#pragma unroll
    for (int u = 0; u < Q_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        if (quad >= BLOCK_M * KCHUNK / 4)
            break;
        int r = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        float4 x = q_raw_float4(qr_raw[u]);
#pragma unroll
        for (int t = 0; t < 4; t++)
            qs[(c + t) * QS_PITCH + r] = lane(x, t);
    }
#pragma unroll
    for (int u = 0; u < K_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        if (quad >= BLOCK_N * KCHUNK / 4)
            break;
        int n = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        float4 x = kv_raw_float4(kr_raw[u]);
#pragma unroll
        for (int t = 0; t < 4; t++)
            ks[(c + t) * KS_PITCH + n] = lane(x, t);
    }
}

/* Q.K^T for the tile: s[i][j] = q(row ty*TM+i) . k(key tx*TN+j). The caller has filled
 * key_row and synchronised; on return the stage buffers may still be read by other work-items
 * until the caller's next barrier. aligned: see bf16_load_raw4. */
inline void flash_scores_with(__local flash_local *shm, __local const int *key_row,
                              float s[TM][TN], __global const q_storage_t *q, head_view qv,
                              int q_rows, __global const kv_storage_t *k, head_view kv,
                              bool aligned)
{
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            s[i][j] = 0.0f;
    q_raw4 qr[Q_QUADS];
    kv_raw4 kr[K_QUADS];
    fetch_qk_chunk(key_row, qr, kr, q, qv, q_rows, k, kv, 0, aligned);
    for (int c = 0; c < HEAD_DIM / KCHUNK; c++) {
        __local float *buffer = shm->stage[c & 1];
        store_qk_chunk(buffer, qr, kr);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < HEAD_DIM / KCHUNK)
            fetch_qk_chunk(key_row, qr, kr, q, qv, q_rows, k, kv, (c + 1) * KCHUNK, aligned);
        __local const float *qs = buffer;
        __local const float *ks = buffer + KCHUNK * QS_PITCH;
#pragma unroll UNROLL_QK
        for (int kk = 0; kk < KCHUNK; kk++) {
            float4 a[TM / 4], b[TN / 4];
#pragma unroll
            for (int g = 0; g < TM / 4; g++)
                a[g] = vload4(0, qs + kk * QS_PITCH + ty * TM + 4 * g);
#pragma unroll
            for (int g = 0; g < TN / 4; g++)
                b[g] = vload4(0, ks + kk * KS_PITCH + tx * TN + 4 * g);
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++)
                    s[i][j] = mad(lane(a[i / 4], i % 4), lane(b[j / 4], j % 4), s[i][j]);
        }
    }
}

/* Q.K^T for a tile (as flash_scores_with), for the score kernels: one inlined copy for aligned
 * rows and one for the others, so that neither holds the other's loads in registers. */
inline void flash_scores(__local flash_local *shm, __local const int *key_row, float s[TM][TN],
                         __global const q_storage_t *q, head_view qv, int q_rows,
                         __global const kv_storage_t *k, head_view kv)
{
    if (q_raw_aligned(qv) && kv_raw_aligned(kv))
        flash_scores_with(shm, key_row, s, q, qv, q_rows, k, kv, true);
    else
        flash_scores_with(shm, key_row, s, q, qv, q_rows, k, kv, false);
}

/* Global loads of one P.V chunk (keys n0..n0+VCHUNK of the tile) into registers: row 0 in place
 * of an absent key, zeroed when staged. */
inline void fetch_v_chunk(__local const int *key_row, kv_raw4 vr[V_QUADS],
                          __global const kv_storage_t *v, head_view vv, int n0, bool aligned)
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < V_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int nn = quad / (HEAD_DIM / 4), d = quad % (HEAD_DIM / 4) * 4;
        int row = quad < VCHUNK * HEAD_DIM / 4 ? key_row[n0 + nn] : -1;
        vr[u] = load_kv_raw4(v, vv.base + (ulong)max(row, 0) * vv.stride_seq + d, aligned);
    }
}

inline void store_v_chunk(__local float *buffer, const kv_raw4 vr[V_QUADS],
                          __local const int *key_row, int n0)
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < V_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        if (quad >= VCHUNK * HEAD_DIM / 4)
            break;
        int nn = quad / (HEAD_DIM / 4), d = quad % (HEAD_DIM / 4) * 4;
        float4 x = key_row[n0 + nn] >= 0 ? kv_raw_float4(vr[u]) : (float4)(0.0f);
        vstore4(x, 0, buffer + nn * VS_PITCH + d);
    }
}

/* P.V for keys n0..n0+VCHUNK of the tile, the V chunk staged in vs. */
inline void pv_chunk(__local flash_local *shm, __local const float *vs, flash_state *st, int n0)
{
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
#pragma unroll UNROLL_PV
    for (int nn = 0; nn < VCHUNK; nn++) {
        float4 a[TM / 4], b[TD / 4];
#pragma unroll
        for (int g = 0; g < TM / 4; g++)
            a[g] = vload4(0, shm->p + (n0 + nn) * PS_PITCH + ty * TM + 4 * g);
#pragma unroll
        for (int g = 0; g < TD / 4; g++)
            b[g] = vload4(0, vs + nn * VS_PITCH + dim_base(tx, g));
#pragma unroll
        for (int i = 0; i < TM; i++)
#pragma unroll
            for (int e = 0; e < TD; e++)
                st->o[i][e] = mad(lane(a[i / 4], i % 4), lane(b[e / 4], e % 4), st->o[i][e]);
    }
}

/* One key tile: the caller has filled the lists of slot and of next_slot (the next tile's,
 * unused here: each tile is loaded as it is used) and synchronised. q_pos0 is the absolute
 * position of the tile's first query, used by the causal test. aligned: see bf16_load_raw4.
 * scale_log2 is the softmax scale times log2(e). The maximum is taken on the raw scores and the
 * scale multiplies their difference inside the exponent, exp2((s - m) * scale_log2): every
 * logit fp32 holds works, since no scaled score is ever formed. */
inline void tile_keys_with(__local flash_local *shm, int slot, flash_state *st,
                           __global const q_storage_t *q, head_view qv, int q_rows, int q_pos0,
                           __global const kv_storage_t *k, head_view kv,
                           __global const kv_storage_t *v, head_view vv, float scale_log2,
                           bool aligned)
{
    __local const int *key_row = shm->key_row[slot], *key_pos = shm->key_pos[slot];
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
    float s[TM][TN];
    flash_scores_with(shm, key_row, s, q, qv, q_rows, k, kv, aligned);
    /* Start the first V loads now; the softmax below hides their latency. */
    kv_raw4 vr[V_QUADS];
    fetch_v_chunk(key_row, vr, v, vv, 0, aligned);

    /* Mask, and the work-item's share of each row's maximum. */
#pragma unroll
    for (int i = 0; i < TM; i++) {
        float local_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            int n = tx * TN + j;
            bool valid = key_row[n] >= 0;
#if CAUSAL
            valid = valid && key_pos[n] <= q_pos0 + ty * TM + i;
#endif
            s[i][j] = valid ? s[i][j] : -INFINITY;
            local_max = fmax(local_max, s[i][j]);
        }
        shm->row_max[partial_index(i, ty, tx)] = local_max;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float alpha[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) {
        float tile_max = reduce_partials(shm->row_max, i, ty, true);
        float m_new = fmax(st->m[i], tile_max);
        /* A row that has seen no valid key yet keeps m = -inf; use 0 so no inf - inf appears. */
        float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[i] = exp2((st->m[i] - m_use) * scale_log2);
        st->m[i] = m_new;
        float partial = 0.0f;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            s[i][j] = exp2((s[i][j] - m_use) * scale_log2);
            partial += s[i][j];
        }
        shm->row_sum[partial_index(i, ty, tx)] = partial;
    }
    /* P as float4 columns of 4 rows. V chunk 0 is staged before the same barrier (its stage
     * buffer was last read before the row-max barrier) and chunk 1's loads start. */
#pragma unroll
    for (int j = 0; j < TN; j++)
#pragma unroll
        for (int g = 0; g < TM / 4; g++)
            vstore4((float4)(s[4 * g][j], s[4 * g + 1][j], s[4 * g + 2][j], s[4 * g + 3][j]), 0,
                    shm->p + (tx * TN + j) * PS_PITCH + ty * TM + 4 * g);
    store_v_chunk(shm->stage[0], vr, key_row, 0);
    if (BLOCK_N / VCHUNK > 1)
        fetch_v_chunk(key_row, vr, v, vv, VCHUNK, aligned);
    barrier(CLK_LOCAL_MEM_FENCE);

#pragma unroll
    for (int i = 0; i < TM; i++) {
        float sum = reduce_partials(shm->row_sum, i, ty, false);
        st->l[i] = st->l[i] * alpha[i] + sum;
#pragma unroll
        for (int e = 0; e < TD; e++)
            st->o[i][e] *= alpha[i];
    }

    /* P.V in chunks of VCHUNK keys staged in local memory, double-buffered (chunk 0 is). */
    for (int c = 0; c < BLOCK_N / VCHUNK; c++) {
        __local float *vs = shm->stage[c & 1];
        if (c > 0) {
            store_v_chunk(vs, vr, key_row, c * VCHUNK);
            barrier(CLK_LOCAL_MEM_FENCE);
            if (c + 1 < BLOCK_N / VCHUNK)
                fetch_v_chunk(key_row, vr, v, vv, (c + 1) * VCHUNK, aligned);
        }
        pv_chunk(shm, vs, st, c * VCHUNK);
    }
    /* No barrier needed here: this slot's lists are not read after the last chunk's barrier
     * (the caller may rewrite them at once), and the next tile's first local writes follow the
     * caller's barrier. */
}

/* One key tile (see tile_keys_with): one inlined copy for 8-byte aligned bf16 rows (the usual
 * case) and one for the others, so that neither holds the other's loads in registers. */
inline void tile_keys(__local flash_local *shm, int slot, int next_slot, flash_state *st,
                      __global const q_storage_t *q, head_view qv, int q_rows, int q_pos0,
                      __global const kv_storage_t *k, head_view kv, __global const kv_storage_t *v,
                      head_view vv, float scale_log2)
{
    (void)next_slot;
    if (q_raw_aligned(qv) && kv_raw_aligned(kv) && kv_raw_aligned(vv))
        tile_keys_with(shm, slot, st, q, qv, q_rows, q_pos0, k, kv, v, vv, scale_log2, true);
    else
        tile_keys_with(shm, slot, st, q, qv, q_rows, q_pos0, k, kv, v, vv, scale_log2, false);
}

/* Writes O = o / l for the work-item's rows and dims; a row that saw no key gets zeros. Unless
 * lse is NULL, the first column of work-items also writes each row's log-sum-exp at
 * lse[lse_row0 + row] (every column holds the whole l). This tile has nothing left in shm. */
inline void tile_store(__local tile_local *shm, flash_state *st, __global o_storage_t *o,
                       head_view ov, int q_rows, __global float *lse, ulong lse_row0,
                       float scale_log2)
{
    (void)shm;
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
#pragma unroll
    for (int i = 0; i < TM; i++) {
        int r = ty * TM + i;
        if (r >= q_rows)
            continue;
        if (lse && tx == 0)
            lse[lse_row0 + r] = row_lse(st->m[i], st->l[i], scale_log2);
        float inv = st->l[i] > 0.0f ? 1.0f / st->l[i] : 0.0f;
#pragma unroll
        for (int e = 0; e < TD; e++)
            store_o(o, ov.base + (ulong)r * ov.stride_seq + dim_base(tx, e / 4) + e % 4,
                    st->o[i][e] * inv);
    }
}
