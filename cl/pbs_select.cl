/* Block selection (PBS stage 2): block means of queries and permuted keys, the masked block
 * softmax, the threshold selection, and the final block lists. Needs common.cl and sequence.cl
 * first. The sink and the means are regions of the workspace, at offsets given in 4-byte words.
 * Each sequence selects over its own blocks; the grids and the rows of pi, the means and the
 * lists are those of the longest (q_len and kv_len), of which a shorter one uses the first. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef SELECT_SIZE
#define SELECT_SIZE 256 /* a power of two >= the number of key blocks */
#endif
#ifndef SELECT_WG
#define SELECT_WG 64 /* a power of two >= 8 */
#endif
#ifndef CAUSAL
#define CAUSAL 1
#endif

/* sink[bp] = the key block holding original key 0 in permutation bp (segment 0 holds it).
 * One work-group per permutation head. */
__kernel void pbs_find_sink(__global const int *pi, ulong pi_offset, int q_len, int kv_len,
                            int segment, int block, int perm_heads, __global int *sink,
                            ulong sink_offset, SEQUENCE_PARAMS)
{
    sink += sink_offset;
    const int bp = get_group_id(0);
    const sequence s = sequence_of(bp / perm_heads, q_len, kv_len, SEQUENCE_ARGS);
    __global const int *row = pi + pi_offset + (ulong)bp * kv_len;
    const int span = min(segment, s.kv_len);
    for (int p = get_local_id(0); p < span; p += get_local_size(0))
        if (row[p] == 0)
            sink[bp] = p / block;
}

/* Mean of each block of rows (zero rows pad a partial block): one work-item per (block, dim);
 * grid dimension 1 = batch x heads of the output. Query means (keys 0) are stored
 * [head][block][dim]; key means (keys 1) are read through pi and stored [head][dim][block], so
 * that the selection's work-items, one per key block, read them coalesced. x is of dtype. */
__kernel void pbs_block_means(__global const void *x, int dtype, ulong offset,
                              ulong stride_batch, ulong stride_head, ulong stride_seq,
                              int out_heads, int heads_per_in, int q_len, int kv_len, int block,
                              int blocks,
                              __global const int *pi, ulong pi_offset, int keys,
                              __global float *means, ulong means_offset, SEQUENCE_PARAMS)
{
    means += means_offset;
    const int gid = get_global_id(0);
    const int bh = get_group_id(1);
    const int batch = bh / out_heads, head = bh % out_heads;
    const sequence s = sequence_of(batch, q_len, kv_len, SEQUENCE_ARGS);
    const int seq = keys ? s.kv_len : s.q_len;
    if (gid >= (seq + block - 1) / block * HEAD_DIM)
        return;
    const int j = gid / HEAD_DIM, d = gid % HEAD_DIM;
    const int in_head = head / heads_per_in;
    const ulong base =
        (keys ? sequence_kv_base(&s, offset, stride_batch, stride_head, stride_seq, in_head)
              : sequence_q_base(&s, offset, stride_batch, stride_head, stride_seq, in_head, 0)) +
        d;
    __global const int *perm = pi + pi_offset + (ulong)bh * kv_len;
    float sum = 0.0f;
    for (int r = 0; r < block; r++) {
        int p = j * block + r;
        if (p >= seq)
            break;
        int row = keys ? sequence_key_row(&s, perm[p]) : p;
        sum += load_element_as(x, dtype, base + (ulong)row * stride_seq);
    }
    const ulong at = keys ? (ulong)d * blocks + j : (ulong)j * HEAD_DIM + d;
    means[(ulong)bh * blocks * HEAD_DIM + at] = sum / (float)block;
}

/* Key blocks per work-item in pbs_select_blocks: work-item lid holds blocks lid + e * SELECT_WG. */
#define PER_ITEM (SELECT_SIZE > SELECT_WG ? SELECT_SIZE / SELECT_WG : 1)
#define SLOTS (PER_ITEM * SELECT_WG)

/* Maximum (group_max) or sum (group_sum) of v over the work-group, valid in every work-item:
 * SELECT_WG / 8 work-items combine 8 values each, then every work-item combines those partials.
 * Calls need no barrier in between: values are rewritten only after every work-item has passed
 * the barrier that follows their reading, and partials likewise. */
inline float group_max(__local float *values, __local float *partials, float v)
{
    const int lid = get_local_id(0);
    values[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < SELECT_WG / 8) {
        float r = values[8 * lid];
        for (int t = 1; t < 8; t++)
            r = fmax(r, values[8 * lid + t]);
        partials[lid] = r;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float r = partials[0];
    for (int t = 1; t < SELECT_WG / 8; t++)
        r = fmax(r, partials[t]);
    return r;
}

inline ulong group_sum(__local ulong *values, __local ulong *partials, ulong v)
{
    const int lid = get_local_id(0);
    values[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < SELECT_WG / 8) {
        ulong r = values[8 * lid];
        for (int t = 1; t < 8; t++)
            r += values[8 * lid + t];
        partials[lid] = r;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    ulong r = partials[0];
    for (int t = 1; t < SELECT_WG / 8; t++)
        r += partials[t];
    return r;
}

/* Blocks that the threshold selection may pick: other segments, not after the diagonal if causal. */
inline bool selectable(int j, int k_blocks, int blocks_per_segment, int own_segment, int diagonal)
{
    bool allowed = j < k_blocks && j / blocks_per_segment != own_segment;
#if CAUSAL
    allowed = allowed && j <= diagonal;
#endif
    return allowed;
}

/* ceil(threshold * total), exactly, for 0 < threshold < 1: threshold = m 2^-s with m < 2^24 and
 * s >= 24, so the 128-bit product m * total (below 2^87) is shifted right by s, rounding up. */
inline ulong scaled_threshold(float threshold, ulong total)
{
    /* m and s from the bits (frexp's pointer argument trips Oclgrind's uninitialised-value
     * check): a normal float is (mantissa | 2^23) 2^(biased exponent - 150), a subnormal
     * mantissa 2^-149. */
    const uint bits = as_uint(threshold), biased = bits >> 23;
    const ulong m = biased ? (bits & 0x7fffffu) | 0x800000u : bits;
    const int s = biased ? 150 - (int)biased : 149;
    const ulong high = mul_hi(m, total), low = m * total;
    if (s >= 87)
        return 1;
    if (s >= 64)
        return (high >> (s - 64)) + ((high & (((ulong)1 << (s - 64)) - 1)) != 0 || low != 0);
    return (high << (64 - s) | low >> s) + ((low & (((ulong)1 << s) - 1)) != 0);
}

/* One work-group of SELECT_WG per (query block, batch x query head). Writes the ascending list
 * of the final key blocks of the query block and their count.
 *
 * The threshold selection keeps the shortest prefix of the blocks ordered by probability
 * (descending, ties by smaller block) whose sum reaches the threshold, without sorting: each block
 * gets a unique rank key, the bits of its exponential (ordered as the values, all >= 0) above its
 * reversed index, so that the order of the keys is the order of the prefix. The crossing block's
 * key is the largest cut such that the blocks with key >= cut hold at least the threshold; a
 * binary search finds it bit by bit, one work-group sum per bit, and the kept blocks are those
 * with key >= cut.
 *
 * The masses are the exponentials in fixed point (the largest, exp(0) = 1, is 2^(63 - index
 * bits), so that any sum fits 63 bits), compared with threshold x their total: the sums are
 * exact, so they depend neither on the order of their terms nor on the work-group size, no
 * rounding keeps or drops a block, and rows of exact ties (equal logits) select as the float64
 * reference does. */
__kernel __attribute__((reqd_work_group_size(SELECT_WG, 1, 1)))
void pbs_select_blocks(__global const float *q_means, ulong q_means_offset,
                       __global const float *k_means, ulong k_means_offset,
                       __global const int *sink, ulong sink_offset, int q_heads, int perm_heads,
                       int q_blocks, int k_blocks, int blocks_per_segment, float scale,
                       float threshold, int force_first_block, __global int *counts,
                       ulong counts_offset, __global int *blocks, ulong blocks_offset,
                       int q_len, int kv_len, int block, SEQUENCE_PARAMS)
{
    __local float qbar[HEAD_DIM];
    __local float max_values[SELECT_WG];
    __local float max_partials[SELECT_WG / 8];
    __local ulong sum_values[SELECT_WG];
    __local ulong sum_partials[SELECT_WG / 8];
    __local uchar chosen[SLOTS];
    __local int taken[SELECT_WG];
    q_means += q_means_offset;
    k_means += k_means_offset;
    const int lid = get_local_id(0);
    const int i = get_group_id(0);
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int perm = perm_heads == q_heads ? head : head / (q_heads / perm_heads);
    const int bp = batch * perm_heads + perm;
    /* The rows of the means and lists are the longest sequence's (q_blocks, k_blocks); this
     * sequence has its own counts of blocks, own_q_blocks and own_k_blocks. */
    const sequence s = sequence_of(batch, q_len, kv_len, SEQUENCE_ARGS);
    const int own_q_blocks = (s.q_len + block - 1) / block;
    const int own_k_blocks = (s.kv_len + block - 1) / block;
    if (i >= own_q_blocks)
        return;
    const int diagonal = i + own_k_blocks - own_q_blocks; /* key block of this query block */
    const int own_segment = diagonal / blocks_per_segment;
    const int sink_block = force_first_block ? sink[sink_offset + bp] : -1;
    const ulong row = (ulong)bh * q_blocks + i;

    for (int d = lid; d < HEAD_DIM; d += SELECT_WG)
        qbar[d] = q_means[row * HEAD_DIM + d];
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Raw scores of the selectable blocks, -inf elsewhere; the key means are [dim][block]. The
     * scale multiplies their differences from the maximum (no scaled score is formed, so every
     * logit fp32 holds works). */
    __global const float *kbar = k_means + (ulong)bp * HEAD_DIM * k_blocks;
    float weight[PER_ITEM];
    float local_max = -INFINITY;
#pragma unroll
    for (int e = 0; e < PER_ITEM; e++) {
        const int j = lid + e * SELECT_WG;
        float logit = -INFINITY;
        if (selectable(j, own_k_blocks, blocks_per_segment, own_segment, diagonal)) {
            float dot = 0.0f;
            for (int d = 0; d < HEAD_DIM; d++)
                dot = mad(qbar[d], kbar[(ulong)d * k_blocks + j], dot);
            logit = dot;
        }
        weight[e] = logit;
        local_max = fmax(local_max, logit);
    }
    const float row_max = group_max(max_values, max_partials, local_max);

    /* Exponentials (the softmax before its division), their rank keys and fixed-point masses. */
    const int index_bits = 31 - clz(SLOTS);
    const float unit = ldexp(1.0f, 63 - index_bits);
    ulong key[PER_ITEM], mass[PER_ITEM];
    ulong local_total = 0;
#pragma unroll
    for (int e = 0; e < PER_ITEM; e++) {
        const float w = row_max == -INFINITY || weight[e] == -INFINITY
                            ? 0.0f
                            : exp((weight[e] - row_max) * scale);
        key[e] = (ulong)as_uint(w) << index_bits | (uint)(SLOTS - 1 - lid - e * SELECT_WG);
        mass[e] = convert_ulong(w * unit);
        local_total += mass[e];
    }
    const ulong total = group_sum(sum_values, sum_partials, local_total);

    ulong cut = ULONG_MAX; /* no row with no mass keeps anything */
    if (threshold < 1.0f && total > 0) {
        const ulong target = scaled_threshold(threshold, total);
        cut = 0;
        /* Exponentials are at most 1.0f, whose bits are below 2^30. */
        for (int bit = 29 + index_bits; bit >= 0; bit--) {
            const ulong trial = cut | (ulong)1 << bit;
            ulong above = 0;
#pragma unroll
            for (int e = 0; e < PER_ITEM; e++)
                above += key[e] >= trial ? mass[e] : 0;
            if (group_sum(sum_values, sum_partials, above) >= target)
                cut = trial;
        }
    }

    /* The kept blocks (a threshold >= 1 keeps every selectable block, also those whose
     * probability underflowed to zero), the sink block and the whole of the query's own segment:
     * the permutation can move keys before the query into later blocks of the segment; the token
     * causal test sorts them out. */
#pragma unroll
    for (int e = 0; e < PER_ITEM; e++) {
        const int j = lid + e * SELECT_WG;
        const bool kept = threshold >= 1.0f
                              ? selectable(j, own_k_blocks, blocks_per_segment, own_segment,
                                           diagonal)
                              : key[e] >= cut;
        chosen[j] = j < own_k_blocks && (kept || j / blocks_per_segment == own_segment ||
                                         j == sink_block);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    /* Compact the chosen blocks in ascending order: work-item lid writes those of
     * [lid * PER_ITEM, (lid + 1) * PER_ITEM) after the ones of the work-items before it. */
    const int first = lid * PER_ITEM;
    int count = 0;
    for (int j = first; j < first + PER_ITEM; j++)
        count += chosen[j];
    taken[lid] = count;
    barrier(CLK_LOCAL_MEM_FENCE);
    int position = 0;
    for (int t = 0; t < lid; t++)
        position += taken[t];
    __global int *list = blocks + blocks_offset + row * k_blocks;
    for (int j = first; j < first + PER_ITEM; j++)
        if (chosen[j])
            list[position++] = j;
    if (lid == SELECT_WG - 1)
        counts[counts_offset + row] = position;
}
