/* Block selection (PBS stage 2): block means of queries and permuted keys, the masked block
 * softmax, the threshold selection, and the final block lists. Needs common.cl first. The sink
 * and the means are regions of the workspace, at offsets given in 4-byte words. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef SELECT_SIZE
#define SELECT_SIZE 256 /* a power of two >= the number of key blocks */
#endif
#ifndef SELECT_WG
#define SELECT_WG 256
#endif
#ifndef CAUSAL
#define CAUSAL 1
#endif

/* sink[bp] = the key block holding original key 0 in permutation bp (segment 0 holds it).
 * One work-group of SELECT_WG per permutation head. */
__kernel void pbs_find_sink(__global const int *pi, ulong pi_offset, int kv_len, int segment,
                            int block, __global int *sink, ulong sink_offset)
{
    sink += sink_offset;
    const int bp = get_group_id(0);
    __global const int *row = pi + pi_offset + (ulong)bp * kv_len;
    const int span = min(segment, kv_len);
    for (int p = get_local_id(0); p < span; p += get_local_size(0))
        if (row[p] == 0)
            sink[bp] = p / block;
}

/* Mean of each block of rows (zero rows pad a partial block): one work-item per (block, dim).
 * Keys are read through pi when given; grid dimension 1 = batch x heads of the output. */
__kernel void pbs_block_means(__global const storage_t *x, ulong offset, ulong stride_batch,
                              ulong stride_head, ulong stride_seq, int out_heads, int heads_per_in,
                              int seq, int block, int blocks,
                              __global const int *pi, ulong pi_offset, int use_pi,
                              __global float *means, ulong means_offset)
{
    means += means_offset;
    const int gid = get_global_id(0);
    if (gid >= blocks * HEAD_DIM)
        return;
    const int j = gid / HEAD_DIM, d = gid % HEAD_DIM;
    const int bh = get_group_id(1);
    const int batch = bh / out_heads, head = bh % out_heads;
    const int in_head = head / heads_per_in;
    const ulong base = offset + batch * stride_batch + in_head * stride_head + d;
    __global const int *perm = pi + pi_offset + (ulong)bh * seq;
    float sum = 0.0f;
    for (int r = 0; r < block; r++) {
        int p = j * block + r;
        if (p >= seq)
            break;
        int row = use_pi ? perm[p] : p;
        sum += load_element(x, base + (ulong)row * stride_seq);
    }
    means[((ulong)bh * blocks + j) * HEAD_DIM + d] = sum / (float)block;
}

/* Sum of v over the work-group (result valid in every work-item). */
inline float group_sum(__local float *scratch, float v)
{
    const int lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = SELECT_WG / 2; span > 0; span >>= 1) {
        if (lid < span)
            scratch[lid] += scratch[lid + span];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

inline float group_max(__local float *scratch, float v)
{
    const int lid = get_local_id(0);
    scratch[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int span = SELECT_WG / 2; span > 0; span >>= 1) {
        if (lid < span)
            scratch[lid] = fmax(scratch[lid], scratch[lid + span]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float total = scratch[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return total;
}

/* Inclusive prefix sum of values[0..SELECT_SIZE) in place (Hillis-Steele, double-buffered). */
inline void prefix_sum(__local float *values, __local float *scratch)
{
    const int lid = get_local_id(0);
    for (int offset = 1; offset < SELECT_SIZE; offset <<= 1) {
        for (int t = lid; t < SELECT_SIZE; t += SELECT_WG)
            scratch[t] = values[t] + (t >= offset ? values[t - offset] : 0.0f);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int t = lid; t < SELECT_SIZE; t += SELECT_WG)
            values[t] = scratch[t];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

inline bool sorts_before(float ka, int ia, float kb, int ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

/* One work-group of SELECT_WG per (query block, batch x query head). Writes the ascending list
 * of the final key blocks of the query block and their count. */
__kernel __attribute__((reqd_work_group_size(SELECT_WG, 1, 1)))
void pbs_select_blocks(__global const float *q_means, ulong q_means_offset,
                       __global const float *k_means, ulong k_means_offset,
                       __global const int *sink, ulong sink_offset, int q_heads, int perm_heads,
                       int q_blocks, int k_blocks, int blocks_per_segment, float scale,
                       float threshold, int force_first_block, __global int *counts,
                       ulong counts_offset, __global int *blocks, ulong blocks_offset)
{
    __local float prob[SELECT_SIZE];
    __local int index[SELECT_SIZE];
    __local float scratch[SELECT_SIZE > SELECT_WG ? SELECT_SIZE : SELECT_WG];
    __local int chosen[SELECT_SIZE];
    __local float qbar[HEAD_DIM];
    q_means += q_means_offset;
    k_means += k_means_offset;
    sink += sink_offset;
    const int lid = get_local_id(0);
    const int i = get_group_id(0);
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int perm = perm_heads == q_heads ? head : head / (q_heads / perm_heads);
    const int bp = batch * perm_heads + perm;
    const int diagonal = i + k_blocks - q_blocks; /* key block of this query block */
    const int own_segment = diagonal / blocks_per_segment;
    const ulong row = (ulong)bh * q_blocks + i;

    for (int d = lid; d < HEAD_DIM; d += SELECT_WG)
        qbar[d] = q_means[row * HEAD_DIM + d];
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Logits of the allowed blocks: other segments, and not after the diagonal when causal. */
    float local_max = -INFINITY;
    for (int j = lid; j < SELECT_SIZE; j += SELECT_WG) {
        bool allowed = j < k_blocks && j / blocks_per_segment != own_segment;
#if CAUSAL
        allowed = allowed && j <= diagonal;
#endif
        float logit = -INFINITY;
        if (allowed) {
            __global const float *kbar = k_means + ((ulong)bp * k_blocks + j) * HEAD_DIM;
            float dot = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                dot = mad(qbar[d], kbar[d], dot);
            logit = dot * scale;
        }
        prob[j] = logit;
        index[j] = j;
        local_max = fmax(local_max, logit);
    }
    const float row_max = group_max(scratch, local_max);
    float local_sum = 0.0f;
    for (int j = lid; j < SELECT_SIZE; j += SELECT_WG) {
        float e = row_max == -INFINITY || prob[j] == -INFINITY ? 0.0f : exp(prob[j] - row_max);
        prob[j] = e;
        local_sum += e;
    }
    const float row_sum = group_sum(scratch, local_sum);
    for (int j = lid; j < SELECT_SIZE; j += SELECT_WG) {
        prob[j] = row_sum > 0.0f ? prob[j] / row_sum : 0.0f;
        chosen[j] = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    if (threshold >= 1.0f) {
        /* Every allowed block, also those whose probability underflowed to zero. */
        for (int j = lid; j < k_blocks; j += SELECT_WG) {
            bool allowed = j / blocks_per_segment != own_segment;
#if CAUSAL
            allowed = allowed && j <= diagonal;
#endif
            chosen[j] = allowed;
        }
    } else {
        /* Sort by probability (descending, ties by smaller block), then keep the shortest prefix
         * whose sum reaches the threshold: element t is kept when the sum before it is short. */
        for (int size = 2; size <= SELECT_SIZE; size <<= 1) {
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int t = lid; t < SELECT_SIZE / 2; t += SELECT_WG) {
                    int a = 2 * t - (t & (stride - 1));
                    int b = a + stride;
                    bool first_run = (a & size) == 0;
                    bool swap = first_run ? sorts_before(prob[b], index[b], prob[a], index[a])
                                          : sorts_before(prob[a], index[a], prob[b], index[b]);
                    if (swap) {
                        float tp = prob[a];
                        prob[a] = prob[b];
                        prob[b] = tp;
                        int ti = index[a];
                        index[a] = index[b];
                        index[b] = ti;
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);
            }
        }
        /* Keep the sorted probabilities in scratch; prefix-sum a copy in prob. */
        float sorted_keep[SELECT_SIZE / SELECT_WG > 0 ? SELECT_SIZE / SELECT_WG : 1];
        int slot = 0;
        for (int t = lid; t < SELECT_SIZE; t += SELECT_WG)
            sorted_keep[slot++] = prob[t];
        __local float *sums = prob;
        prefix_sum(sums, scratch);
        slot = 0;
        for (int t = lid; t < SELECT_SIZE; t += SELECT_WG) {
            float p = sorted_keep[slot++];
            float before = sums[t] - p;
            if (p > 0.0f && before < threshold)
                chosen[index[t]] = 1;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* The sink block and the whole of the query's own segment: the permutation can move keys
     * before the query into later blocks of the segment; the token causal test sorts them out. */
    for (int j = lid; j < k_blocks; j += SELECT_WG)
        if (j / blocks_per_segment == own_segment || (force_first_block && j == sink[bp]))
            chosen[j] = 1;
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Compact the chosen blocks in ascending order. */
    __local float *positions = prob;
    for (int j = lid; j < SELECT_SIZE; j += SELECT_WG)
        positions[j] = (float)chosen[j];
    barrier(CLK_LOCAL_MEM_FENCE);
    prefix_sum(positions, scratch);
    for (int j = lid; j < k_blocks; j += SELECT_WG)
        if (chosen[j])
            blocks[blocks_offset + row * k_blocks + (int)positions[j] - 1] = j;
    if (lid == 0)
        counts[counts_offset + row] = (int)positions[SELECT_SIZE - 1];
}
