/* Permutation scores (PBS stage 1a) on NVIDIA tensor cores: the kernels pbs_score_stats and
 * pbs_scores of cl/pbs_scores.cl, with the same arguments and results, their Q.K^T products on
 * mma.sync (tile_scores of cl/mma_tile.cl). Needs common.cl, sequence.cl, mma_ptx.cl and
 * mma_tile.cl first,
 * built with MMA_GROUPS 1. The statistics are reduced by pbs_score_stats_reduce of
 * cl/pbs_scores.cl. Grid: dimension 0 = key tiles of BN keys x TILE_WORK_ITEMS, dimension 1 as
 * in cl/pbs_scores.cl. */

#if MMA_GROUPS != 1 || TILE_ROWS != BN
#error "the score kernels take one row group per warp and as many query rows as keys"
#endif

/* Copies keys tile*BN.. of seq below key_count (zeros beyond) into shm->k and waits for them. */
inline void stage_score_keys(__local tile_local *shm, int tile, int key_count,
                             const sequence *seq, __global const kv_storage_t *k, head_view kv)
{
    for (int n = get_local_id(0); n < BN; n += TILE_WORK_ITEMS)
        shm->key_row[0][n] =
            tile * BN + n < key_count ? sequence_key_row(seq, tile * BN + n) : -1;
    barrier(CLK_LOCAL_MEM_FENCE);
    copy_rows(shm->k, shm->key_row[0], k, kv);
    COPY_ASYNC_WAIT(0);
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Stores rows of q (-1 for an absent one, which becomes zeros) into tile as copy_rows() lays out
 * K, converted to K's type: for a q of another dtype than k's. */
inline void convert_rows(__local uint4 *tile, __local const int *rows,
                         __global const q_storage_t *q, head_view qv)
{
    for (int i = get_local_id(0); i < BN * HEAD_DIM / 8; i += TILE_WORK_ITEMS) {
        const int n = i / (HEAD_DIM / 8), d = i % (HEAD_DIM / 8) * 8;
        const ulong at = qv.base + (ulong)max(rows[n], 0) * qv.stride_seq + d;
        const float4 lo = rows[n] >= 0 ? load_q4(q, at) : (float4)(0.0f);
        const float4 hi = rows[n] >= 0 ? load_q4(q, at + 4) : (float4)(0.0f);
        uint x, y, z, w;
        PACK2(x, lo.s0, lo.s1);
        PACK2(y, lo.s2, lo.s3);
        PACK2(z, hi.s0, hi.s1);
        PACK2(w, hi.s2, hi.s3);
        tile[(n * KP + d) / 8] = (uint4)(x, y, z, w);
    }
}

/* Loads the Q fragments of the lane's rows of qv (zeros from row rows on) through local memory
 * (shm->v, unused by these kernels, and the second list slot): one coalesced 16-byte copy per
 * piece of a row (converted on the way when q's dtype is not k's), then ldmatrix, where direct
 * fragment loads would read 2 bytes at a time. */
inline void stage_q(__local tile_local *shm, tile_state *st, __global const q_storage_t *q,
                    head_view qv, int rows)
{
    const int lid = get_local_id(0), lane = lid % 32, warp = lid / 32;
    for (int n = lid; n < TILE_ROWS; n += TILE_WORK_ITEMS)
        shm->key_row[1][n] = n < rows ? n : -1;
    barrier(CLK_LOCAL_MEM_FENCE);
#if Q_CODE == KV_CODE
    copy_rows(shm->v, shm->key_row[1], q, qv);
    COPY_ASYNC_WAIT(0);
#else
    convert_rows(shm->v, shm->key_row[1], q, qv);
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    /* Matrices (rows 0-7, 8-15 of the warp's 16) x (dims 0-7, 8-15 of each 16-dim step). */
    const uint q_lane = local_address(shm->v) + ((warp * 16 + lane % 16) * KP + lane / 16 * 8) * 2;
#pragma unroll
    for (int kb = 0; kb < HEAD_DIM / 16; kb++)
        LDMATRIX_X4(st->q[0][kb], q_lane + kb * 16 * 2);
    st->r0 = warp * 16 + lane / 4;
}

/* The raw scores q.k of the lane's rows of qv (rows of them exist) against the staged keys,
 * -inf for absent keys; st->r0 is the lane's first row. */
inline void score_rows(__local tile_local *shm, tile_state *st, __global const q_storage_t *q,
                       head_view qv, int rows, float s[BN / 8][4])
{
    stage_q(shm, st, q, qv, rows);
    float all[1][BN / 8][4];
#pragma unroll
    for (int part = 0; part < BN / PART_KEYS; part++)
        tile_scores(shm, st, part * PART_KEYS,
                    (float(*)[PART_KEYS / 8][4]) & all[0][part * PART_KEYS / 8]);
    const int t = get_local_id(0) % 4;
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            s[nb][e] = shm->key_row[0][nb * 8 + 2 * t + e % 2] >= 0 ? all[0][nb][e] : -INFINITY;
}

/* Sum of x over the 4 lanes that hold one row. */
inline float row_sum(float x)
{
    float other;
    SHFL_XOR(other, x, 1);
    x += other;
    SHFL_XOR(other, x, 2);
    return x + other;
}

/* Partial (max, sum of exp2) of every one of the L rows over one key tile, in log2 units. */
__kernel __attribute__((reqd_work_group_size(TILE_WORK_ITEMS, 1, 1)))
void pbs_score_stats(__global const q_storage_t *q, __global const kv_storage_t *k,
                     ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                     ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                     int q_heads, int kv_heads, int q_len, int last_rows, int key_count,
                     int kv_len, int segment, float scale_log2, __global float2 *partials,
                     ulong partials_offset, SEQUENCE_PARAMS)
{
    partials += partials_offset / 2;
    __local tile_local shm;
    const int tile = get_group_id(0), tiles = get_num_groups(0);
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int kv_head = head / (q_heads / kv_heads);
    const sequence seq = sequence_of(batch, q_len, kv_len, SEQUENCE_ARGS);
    const int rows = min(seq.q_len, last_rows), keys = seq.kv_len / segment * segment;
    if (tile * BN >= keys) {
        for (int r = get_local_id(0); r < rows; r += TILE_WORK_ITEMS)
            partials[((ulong)bh * last_rows + r) * tiles + tile] = (float2)(-INFINITY, 0.0f);
        return;
    }
    head_view kv = {sequence_kv_base(&seq, k_offset, k_stride_batch, k_stride_head, k_stride_seq,
                                     kv_head),
                    k_stride_seq};
    stage_score_keys(&shm, tile, keys, &seq, k, kv);

    for (int r0 = 0; r0 < rows; r0 += TILE_ROWS) {
        head_view qv = {sequence_q_base(&seq, q_offset, q_stride_batch, q_stride_head,
                                        q_stride_seq, head, seq.q_len - rows + r0),
                        q_stride_seq};
        tile_state st;
        float s[BN / 8][4];
        score_rows(&shm, &st, q, qv, min(TILE_ROWS, rows - r0), s);
        /* Rows r0 + st.r0 (elements 0, 1) and r0 + st.r0 + 8 (elements 2, 3). */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float m = -INFINITY;
#pragma unroll
            for (int nb = 0; nb < BN / 8; nb++)
                m = fmax(m, fmax(s[nb][2 * h], s[nb][2 * h + 1]));
            float other;
            SHFL_XOR(other, m, 1);
            m = fmax(m, other);
            SHFL_XOR(other, m, 2);
            m = fmax(m, other);
            float sum = 0.0f;
#pragma unroll
            for (int nb = 0; nb < BN / 8; nb++)
                sum += m == -INFINITY ? 0.0f
                                      : exp2_ftz((s[nb][2 * h] - m) * scale_log2) +
                                            exp2_ftz((s[nb][2 * h + 1] - m) * scale_log2);
            sum = row_sum(sum);
            const int r = r0 + st.r0 + 8 * h;
            if (get_local_id(0) % 4 == 0 && r < rows)
                partials[((ulong)bh * last_rows + r) * tiles + tile] = (float2)(m, sum);
        }
    }
}

/* score[key] = mean over the L rows (and, shared per KV group, over the group's query heads) of
 * the softmax probability of the key. Dimension 1 of the grid: batch x permutation heads. */
__kernel __attribute__((reqd_work_group_size(TILE_WORK_ITEMS, 1, 1)))
void pbs_scores(__global const q_storage_t *q, __global const kv_storage_t *k,
                ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                int q_heads, int kv_heads, int q_len, int last_rows, int key_count,
                int kv_len, int segment, float scale_log2, int perm_heads,
                __global const float2 *stats, ulong stats_offset, __global float *scores,
                ulong scores_offset, SEQUENCE_PARAMS)
{
    stats += stats_offset / 2;
    scores += scores_offset;
    __local tile_local shm;
    const int lid = get_local_id(0), lane = lid % 32, warp = lid / 32;
    const int tile = get_group_id(0);
    const int bp = get_group_id(1);
    const score_heads heads = score_heads_of(bp, q_heads, kv_heads, perm_heads);
    const sequence seq = sequence_of(heads.batch, q_len, kv_len, SEQUENCE_ARGS);
    const int rows = min(seq.q_len, last_rows), keys = seq.kv_len / segment * segment;
    if (tile * BN >= keys || rows == 0)
        return;
    head_view kv = {sequence_kv_base(&seq, k_offset, k_stride_batch, k_stride_head, k_stride_seq,
                                     heads.kv_head),
                    k_stride_seq};
    stage_score_keys(&shm, tile, keys, &seq, k, kv);

    /* The lane's share of columns nb*8 + 2*(lane % 4) and the next one. */
    float column[BN / 8][2];
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++)
        column[nb][0] = column[nb][1] = 0.0f;
    for (int g = 0; g < heads.count; g++) {
        const int head = heads.first + g;
        const ulong stats_row0 = ((ulong)heads.batch * q_heads + head) * last_rows;
        for (int r0 = 0; r0 < rows; r0 += TILE_ROWS) {
            head_view qv = {sequence_q_base(&seq, q_offset, q_stride_batch, q_stride_head,
                                            q_stride_seq, head, seq.q_len - rows + r0),
                            q_stride_seq};
            tile_state st;
            float s[BN / 8][4];
            score_rows(&shm, &st, q, qv, min(TILE_ROWS, rows - r0), s);
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = r0 + st.r0 + 8 * h;
                if (r >= rows)
                    continue;
                const float2 row = stats[stats_row0 + r];
                const float inverse = 1.0f / row.y;
#pragma unroll
                for (int nb = 0; nb < BN / 8; nb++) {
                    column[nb][0] += exp2_ftz((s[nb][2 * h] - row.x) * scale_log2) * inverse;
                    column[nb][1] += exp2_ftz((s[nb][2 * h + 1] - row.x) * scale_log2) * inverse;
                }
            }
        }
    }
    /* Sum the columns over the 8 row lanes of each warp, then over the warps (through the
     * local memory of Q, once every warp is done with it). */
    barrier(CLK_LOCAL_MEM_FENCE);
    __local float *warp_columns = (__local float *)shm.v;
#pragma unroll
    for (int nb = 0; nb < BN / 8; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float x = column[nb][e], other;
            SHFL_XOR(other, x, 4);
            x += other;
            SHFL_XOR(other, x, 8);
            x += other;
            SHFL_XOR(other, x, 16);
            x += other;
            if (lane < 4)
                warp_columns[warp * BN + nb * 8 + 2 * lane + e] = x;
        }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int n = lid; n < BN; n += TILE_WORK_ITEMS) {
        const int key = tile * BN + n;
        if (key >= keys)
            continue;
        float total = 0.0f;
        for (int w = 0; w < MMA_WARPS; w++)
            total += warp_columns[w * BN + n];
        scores[(ulong)bp * key_count + key] = total / (float)(rows * heads.count);
    }
}
