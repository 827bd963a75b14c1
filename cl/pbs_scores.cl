/* Permutation scores (PBS stage 1a): for the last L queries of a head, the softmax over the keys
 * of the complete segments, averaged over those L rows. Needs common.cl, sequence.cl and
 * flash_tile.cl first. Sequence by sequence (sequence.cl): L = min(block, its queries), its own
 * complete segments; the grid and the workspace rows are those of the longest (key_count keys,
 * last_rows rows), and a sequence's key tiles beyond its own keys have partials (-inf, 0).
 * Three kernels: per key tile row statistics, their reduction, then the averaged probabilities.
 * Row statistics are (max of the raw scores q.k, sum of exp2((score - max) * scale_log2)), as in
 * the tiles: no scaled score is formed, so every logit fp32 holds works.
 * Grid of the tile kernels: dimension 0 = key tiles x WG_SIZE, dimension 1 = batch x heads.
 * partials, stats and scores are regions of the workspace, at offsets given in 4-byte words. */

/* Fills the tile's key list: keys k0.. of seq below key_count, -1 beyond. */
inline void score_tile_keys(__local flash_local *shm, int k0, int key_count, const sequence *seq)
{
    for (int n = get_local_id(0); n < BLOCK_N; n += WG_SIZE) {
        shm->key_row[0][n] = k0 + n < key_count ? sequence_key_row(seq, k0 + n) : -1;
        shm->key_pos[0][n] = k0 + n < key_count ? k0 + n : INT_MAX;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Partial statistics of every one of the L rows over one key tile. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1)))
void pbs_score_stats(__global const q_storage_t *q, __global const kv_storage_t *k,
                     ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                     ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                     int q_heads, int kv_heads, int q_len, int last_rows, int key_count,
                     int kv_len, int segment, float scale_log2, __global float2 *partials,
                     ulong partials_offset, SEQUENCE_PARAMS)
{
    partials += partials_offset / 2;
    __local flash_local shm;
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
    const int tile = get_group_id(0), tiles = get_num_groups(0);
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int kv_head = head / (q_heads / kv_heads);
    const sequence seq = sequence_of(batch, q_len, kv_len, SEQUENCE_ARGS);
    const int rows = min(seq.q_len, last_rows), keys = seq.kv_len / segment * segment;
    if (tile * BLOCK_N >= keys) {
        for (int r = lid; r < rows; r += WG_SIZE)
            partials[((ulong)bh * last_rows + r) * tiles + tile] = (float2)(-INFINITY, 0.0f);
        return;
    }
    head_view kv = {sequence_kv_base(&seq, k_offset, k_stride_batch, k_stride_head, k_stride_seq,
                                     kv_head),
                    k_stride_seq};
    score_tile_keys(&shm, tile * BLOCK_N, keys, &seq);

    for (int r0 = 0; r0 < rows; r0 += BLOCK_M) {
        head_view qv = {sequence_q_base(&seq, q_offset, q_stride_batch, q_stride_head,
                                        q_stride_seq, head, seq.q_len - rows + r0),
                        q_stride_seq};
        float s[TM][TN];
        flash_scores(&shm, shm.key_row[0], s, q, qv, min(BLOCK_M, rows - r0), k, kv);
#pragma unroll
        for (int i = 0; i < TM; i++) {
            float m = -INFINITY;
#pragma unroll
            for (int j = 0; j < TN; j++) {
                s[i][j] = shm.key_row[0][tx * TN + j] >= 0 ? s[i][j] : -INFINITY;
                m = fmax(m, s[i][j]);
            }
            shm.row_max[(ty * TM + i) * WG_COLS + tx] = m;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
        for (int i = 0; i < TM; i++) {
            float m = -INFINITY;
            for (int t = 0; t < WG_COLS; t++)
                m = fmax(m, shm.row_max[(ty * TM + i) * WG_COLS + t]);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < TN; j++)
                sum += m == -INFINITY ? 0.0f : exp2((s[i][j] - m) * scale_log2);
            shm.row_sum[(ty * TM + i) * WG_COLS + tx] = sum;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (tx == 0) {
#pragma unroll
            for (int i = 0; i < TM; i++) {
                int r = r0 + ty * TM + i;
                if (r >= rows)
                    continue;
                float m = -INFINITY, sum = 0.0f;
                for (int t = 0; t < WG_COLS; t++) {
                    m = fmax(m, shm.row_max[(ty * TM + i) * WG_COLS + t]);
                    sum += shm.row_sum[(ty * TM + i) * WG_COLS + t];
                }
                partials[((ulong)bh * last_rows + r) * tiles + tile] = (float2)(m, sum);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Combines the per-tile statistics of each row into stats[row]. */
__kernel void pbs_score_stats_reduce(__global const float2 *partials, ulong partials_offset,
                                     int tiles, int rows, float scale_log2,
                                     __global float2 *stats, ulong stats_offset)
{
    partials += partials_offset / 2;
    stats += stats_offset / 2;
    const int row = get_global_id(0);
    if (row >= rows)
        return;
    float m = -INFINITY, sum = 0.0f;
    for (int t = 0; t < tiles; t++) {
        float2 p = partials[(ulong)row * tiles + t];
        if (p.x == -INFINITY)
            continue;
        float m_new = fmax(m, p.x);
        sum = sum * exp2((m - m_new) * scale_log2) + p.y * exp2((p.x - m_new) * scale_log2);
        m = m_new;
    }
    stats[row] = (float2)(m, sum);
}

/* score[key] = mean over the L rows (and, shared per KV group, over the group's query heads) of
 * the softmax probability of the key. Dimension 1 of the grid: batch x permutation heads. */
__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1)))
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
    __local flash_local shm;
    const int lid = get_local_id(0);
    const int ty = lid / WG_COLS, tx = lid % WG_COLS;
    const int tile = get_group_id(0);
    const int bp = get_group_id(1);
    const score_heads heads = score_heads_of(bp, q_heads, kv_heads, perm_heads);
    const sequence seq = sequence_of(heads.batch, q_len, kv_len, SEQUENCE_ARGS);
    const int rows = min(seq.q_len, last_rows), keys = seq.kv_len / segment * segment;
    if (tile * BLOCK_N >= keys || rows == 0)
        return;
    head_view kv = {sequence_kv_base(&seq, k_offset, k_stride_batch, k_stride_head, k_stride_seq,
                                     heads.kv_head),
                    k_stride_seq};
    score_tile_keys(&shm, tile * BLOCK_N, keys, &seq);

    float column[TN];
#pragma unroll
    for (int j = 0; j < TN; j++)
        column[j] = 0.0f;
    for (int g = 0; g < heads.count; g++) {
        const int head = heads.first + g;
        const ulong stats_row0 = ((ulong)heads.batch * q_heads + head) * last_rows;
        for (int r0 = 0; r0 < rows; r0 += BLOCK_M) {
            head_view qv = {sequence_q_base(&seq, q_offset, q_stride_batch, q_stride_head,
                                            q_stride_seq, head, seq.q_len - rows + r0),
                            q_stride_seq};
            float s[TM][TN];
            flash_scores(&shm, shm.key_row[0], s, q, qv, min(BLOCK_M, rows - r0), k, kv);
#pragma unroll
            for (int i = 0; i < TM; i++) {
                int r = r0 + ty * TM + i;
                if (r >= rows)
                    continue;
                float2 st = stats[stats_row0 + r];
                float inv = 1.0f / st.y;
#pragma unroll
                for (int j = 0; j < TN; j++)
                    if (shm.key_row[0][tx * TN + j] >= 0)
                        column[j] += exp2((s[i][j] - st.x) * scale_log2) * inv;
            }
        }
    }
    /* Sum the columns over the WG_ROWS work-items that share them (p is free here). */
#pragma unroll
    for (int j = 0; j < TN; j++)
        shm.p[(tx * TN + j) * PS_PITCH + ty] = column[j];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int n = lid; n < BLOCK_N; n += WG_SIZE) {
        int key = tile * BLOCK_N + n;
        if (key >= keys)
            continue;
        float total = 0.0f;
        for (int t = 0; t < WG_ROWS; t++)
            total += shm.p[n * PS_PITCH + t];
        scores[(ulong)bp * key_count + key] = total / (float)(rows * heads.count);
    }
}
