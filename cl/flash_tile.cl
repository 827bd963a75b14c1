/* Flash-attention forward for one tile of queries, shared by the dense and block-sparse kernels.
 *
 * A work-group of WG_ROWS x WG_COLS work-items owns BLOCK_M queries. Work-item (ty, tx) holds
 * the scores of rows ty*TM.. and keys tx*TN.. of each key tile, and the output of rows ty*TM..
 * and dims tx*TD... Key tiles of BLOCK_N keys are given as a list of source rows (so the sparse
 * kernel can gather through the permutation) and processed with an online softmax in fp32:
 * Q.K^T through local memory in chunks of KCHUNK dims, then P.V in chunks of VCHUNK keys.
 * Chunks are double-buffered: the global loads of chunk c+1 are in flight while chunk c is
 * computed, which hides their latency and needs one barrier per chunk. */

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
 * tile_key_positions, tile_begin, tile_fetch, tile_keys, tile_store, TILE_ROWS, TILE_KEYS and
 * TILE_WORK_ITEMS. The keys of tile i are listed in slot i % 2, so that the lists of the next
 * tile can be written while this one is used. */
#define TILE_ROWS BLOCK_M
#define TILE_KEYS BLOCK_N
#define TILE_WORK_ITEMS WG_SIZE
typedef flash_local tile_local;

inline __local int *tile_key_rows(__local flash_local *shm, int slot)
{
    return shm->key_row[slot];
}

inline __local int *tile_key_positions(__local flash_local *shm, int slot)
{
    return shm->key_pos[slot];
}

/* Nothing to start: tile_keys() loads each tile chunk by chunk. */
inline void tile_fetch(__local flash_local *shm, int slot, __global const storage_t *k,
                       head_view kv, __global const storage_t *v, head_view vv)
{
    (void)shm, (void)slot, (void)k, (void)kv, (void)v, (void)vv;
}

typedef struct flash_state {
    float o[TM][TD];
    float m[TM]; /* running max of the scaled scores (log2 units) */
    float l[TM]; /* running sum of exp2(score - m) */
} flash_state;
typedef flash_state tile_state;

inline void tile_begin(flash_state *st, __global const storage_t *q, head_view qv, int q_rows)
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

/* Component i of v; with a constant i (unrolled loops) this folds to a register. Loading into
 * float4 values rather than through vstore4 into private arrays keeps them out of memory. */
inline float lane(float4 v, int i)
{
    return i == 0 ? v.s0 : i == 1 ? v.s1 : i == 2 ? v.s2 : v.s3;
}

/* Global loads of one Q.K^T chunk (dims d0..d0+KCHUNK) into registers. */
inline void fetch_qk_chunk(__local const int *key_row, float4 qr[Q_QUADS], float4 kr[K_QUADS],
                           __global const storage_t *q, head_view qv, int q_rows,
                           __global const storage_t *k, head_view kv, int d0)
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < Q_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int r = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        bool ok = quad < BLOCK_M * KCHUNK / 4 && r < q_rows;
        qr[u] = ok ? load_element4(q, qv.base + (ulong)r * qv.stride_seq + d0 + c) : (float4)(0.0f);
    }
#pragma unroll
    for (int u = 0; u < K_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int n = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
        int row = quad < BLOCK_N * KCHUNK / 4 ? key_row[n] : -1;
        kr[u] = row >= 0 ? load_element4(k, kv.base + (ulong)row * kv.stride_seq + d0 + c)
                         : (float4)(0.0f);
    }
}

/* Writes a fetched Q.K^T chunk into a stage buffer, transposed: [dim][row] and [dim][key]. */
inline void store_qk_chunk(__local float *buffer, const float4 qr[Q_QUADS],
                           const float4 kr[K_QUADS])
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
#pragma unroll
        for (int t = 0; t < 4; t++)
            qs[(c + t) * QS_PITCH + r] = lane(qr[u], t);
    }
#pragma unroll
    for (int u = 0; u < K_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        if (quad >= BLOCK_N * KCHUNK / 4)
            break;
        int n = quad / (KCHUNK / 4), c = quad % (KCHUNK / 4) * 4;
#pragma unroll
        for (int t = 0; t < 4; t++)
            ks[(c + t) * KS_PITCH + n] = lane(kr[u], t);
    }
}

/* Q.K^T for the tile: s[i][j] = q(row ty*TM+i) . k(key tx*TN+j). The caller has filled
 * key_row and synchronised; on return the stage buffers may still be read by other work-items
 * until the caller's next barrier. */
inline void flash_scores(__local flash_local *shm, __local const int *key_row, float s[TM][TN],
                         __global const storage_t *q, head_view qv, int q_rows,
                         __global const storage_t *k, head_view kv)
{
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            s[i][j] = 0.0f;
    float4 qr[Q_QUADS], kr[K_QUADS];
    fetch_qk_chunk(key_row, qr, kr, q, qv, q_rows, k, kv, 0);
    for (int c = 0; c < HEAD_DIM / KCHUNK; c++) {
        __local float *buffer = shm->stage[c & 1];
        store_qk_chunk(buffer, qr, kr);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < HEAD_DIM / KCHUNK)
            fetch_qk_chunk(key_row, qr, kr, q, qv, q_rows, k, kv, (c + 1) * KCHUNK);
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

/* Global loads of one P.V chunk (keys n0..n0+VCHUNK of the tile) into registers. */
inline void fetch_v_chunk(__local const int *key_row, float4 vr[V_QUADS],
                          __global const storage_t *v, head_view vv, int n0)
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < V_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        int nn = quad / (HEAD_DIM / 4), d = quad % (HEAD_DIM / 4) * 4;
        int row = quad < VCHUNK * HEAD_DIM / 4 ? key_row[n0 + nn] : -1;
        vr[u] = row >= 0 ? load_element4(v, vv.base + (ulong)row * vv.stride_seq + d)
                         : (float4)(0.0f);
    }
}

inline void store_v_chunk(__local float *buffer, const float4 vr[V_QUADS])
{
    const int lid = get_local_id(0);
#pragma unroll
    for (int u = 0; u < V_QUADS; u++) {
        int quad = lid + u * WG_SIZE;
        if (quad >= VCHUNK * HEAD_DIM / 4)
            break;
        int nn = quad / (HEAD_DIM / 4), d = quad % (HEAD_DIM / 4) * 4;
        vstore4(vr[u], 0, buffer + nn * VS_PITCH + d);
    }
}

/* One key tile: the caller has filled the lists of slot and of next_slot (the next tile's,
 * unused here: each tile is loaded as it is used) and synchronised. q_pos0 is the absolute
 * position of the tile's first query, used by the causal test. */
inline void tile_keys(__local flash_local *shm, int slot, int next_slot, flash_state *st,
                      __global const storage_t *q, head_view qv, int q_rows, int q_pos0,
                      __global const storage_t *k, head_view kv, __global const storage_t *v,
                      head_view vv, float scale_log2)
{
    (void)next_slot;
    __local const int *key_row = shm->key_row[slot], *key_pos = shm->key_pos[slot];
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
    float s[TM][TN];
    flash_scores(shm, key_row, s, q, qv, q_rows, k, kv);
    /* Start the first V loads now; the softmax below hides their latency. */
    float4 vr[V_QUADS];
    fetch_v_chunk(key_row, vr, v, vv, 0);

    /* Scale, mask, and the work-item's share of each row's maximum. */
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
            s[i][j] = valid ? s[i][j] * scale_log2 : -INFINITY;
            local_max = fmax(local_max, s[i][j]);
        }
        shm->row_max[(ty * TM + i) * WG_COLS + tx] = local_max;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    float alpha[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) {
        float tile_max = -INFINITY;
        for (int t = 0; t < WG_COLS; t++)
            tile_max = fmax(tile_max, shm->row_max[(ty * TM + i) * WG_COLS + t]);
        float m_new = fmax(st->m[i], tile_max);
        /* A row that has seen no valid key yet keeps m = -inf; use 0 so no inf - inf appears. */
        float m_use = m_new == -INFINITY ? 0.0f : m_new;
        alpha[i] = exp2(st->m[i] - m_use);
        st->m[i] = m_new;
        float partial = 0.0f;
#pragma unroll
        for (int j = 0; j < TN; j++) {
            float p = exp2(s[i][j] - m_use);
            partial += p;
            shm->p[(tx * TN + j) * PS_PITCH + ty * TM + i] = p;
        }
        shm->row_sum[(ty * TM + i) * WG_COLS + tx] = partial;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

#pragma unroll
    for (int i = 0; i < TM; i++) {
        float sum = 0.0f;
        for (int t = 0; t < WG_COLS; t++)
            sum += shm->row_sum[(ty * TM + i) * WG_COLS + t];
        st->l[i] = st->l[i] * alpha[i] + sum;
#pragma unroll
        for (int e = 0; e < TD; e++)
            st->o[i][e] *= alpha[i];
    }

    /* P.V in chunks of VCHUNK keys staged in local memory, double-buffered. */
    for (int c = 0; c < BLOCK_N / VCHUNK; c++) {
        __local float *vs = shm->stage[c & 1];
        store_v_chunk(vs, vr);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (c + 1 < BLOCK_N / VCHUNK)
            fetch_v_chunk(key_row, vr, v, vv, (c + 1) * VCHUNK);
        const int n0 = c * VCHUNK;
#pragma unroll UNROLL_PV
        for (int nn = 0; nn < VCHUNK; nn++) {
            float4 a[TM / 4], b[TD / 4];
#pragma unroll
            for (int g = 0; g < TM / 4; g++)
                a[g] = vload4(0, shm->p + (n0 + nn) * PS_PITCH + ty * TM + 4 * g);
#pragma unroll
            for (int g = 0; g < TD / 4; g++)
                b[g] = vload4(0, vs + nn * VS_PITCH + tx * TD + 4 * g);
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int e = 0; e < TD; e++)
                    st->o[i][e] = mad(lane(a[i / 4], i % 4), lane(b[e / 4], e % 4), st->o[i][e]);
        }
    }
    /* The next tile rewrites the key list and the stage buffers. */
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Writes O = o / l for the work-item's rows and dims; a row that saw no key gets zeros. */
inline void tile_store(flash_state *st, __global storage_t *o, head_view ov, int q_rows)
{
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
#pragma unroll
    for (int i = 0; i < TM; i++) {
        int r = ty * TM + i;
        if (r >= q_rows)
            continue;
        float inv = st->l[i] > 0.0f ? 1.0f / st->l[i] : 0.0f;
#pragma unroll
        for (int e = 0; e < TD; e++)
            store_element(o, ov.base + (ulong)r * ov.stride_seq + tx * TD + e, st->o[i][e] * inv);
    }
}
