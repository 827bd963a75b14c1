/* Permutation scores through a GEMM (PBS stage 1a, CLBlast form): the kernels around the GEMM.
 * Needs common.cl first. Work is done in chunks of KV rows (unit u = batch * kv_heads + kv
 * head); for each unit the GEMM takes
 *   qt [D, group * L]:   the last L query rows of the group's query heads, transposed, fp32,
 *   kt [D, key_count]:   the keys of the complete segments, transposed, fp32
 * (rows padded to a leading dimension dst_ld), and writes logits [group * L, key_count]
 * (the raw scores q.k: scale_log2, the softmax scale times log2(e), multiplies their differences
 * inside the exponents, so that every logit fp32 holds works). Logit row g * L + r of a unit is row r of query head
 * kv_head * group + g, so the rows of a permutation head are contiguous in both GQA modes. Every
 * buffer but the inputs is a region of the workspace, at an offset given in 4-byte words. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif
#ifndef TILE
#define TILE 16 /* transpose tile; HEAD_DIM is a multiple of 16 */
#endif
#ifndef STATS_WG
#define STATS_WG 256 /* a power of two */
#endif

/* dst[unit][d][g * rows + r] = src(batch, head, first_row + r, d) as fp32 (src, q or k, of
 * dtype), rows of dst_ld elements (dst_ld >= heads_per_unit * rows), for the units first_unit..
 * of the chunk and their heads_per_unit heads g (head = unit's kv head * heads_per_unit + g).
 * Grid: dimension 0 = rows rounded up to TILE, dimension 1 = HEAD_DIM, dimension 2 = chunk
 * units x heads_per_unit; work-groups of TILE x TILE. */
__kernel __attribute__((reqd_work_group_size(TILE, TILE, 1)))
void pbs_gemm_transpose(__global const void *src, int dtype, ulong offset,
                        ulong stride_batch, ulong stride_head, ulong stride_seq, int kv_heads,
                        int heads_per_unit, int first_unit, int first_row, int rows,
                        __global float *dst, ulong dst_offset, int dst_ld)
{
    __local float tile[TILE][TILE + 1];
    const int lx = get_local_id(0), ly = get_local_id(1);
    const int r0 = get_group_id(0) * TILE, d0 = get_group_id(1) * TILE;
    const int z = get_global_id(2);
    const int unit_local = z / heads_per_unit, g = z % heads_per_unit;
    const int unit = first_unit + unit_local;
    const int batch = unit / kv_heads, head = (unit % kv_heads) * heads_per_unit + g;
    const ulong base = offset + batch * stride_batch + head * stride_head;
    /* Read along d (contiguous in the source), write along r (contiguous in dst). */
    const int r_in = r0 + ly;
    const ulong at = base + (ulong)(first_row + r_in) * stride_seq + d0 + lx;
    tile[ly][lx] = r_in < rows ? load_element_as(src, dtype, at) : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    const int r_out = r0 + lx;
    const ulong ld = dst_ld;
    if (r_out < rows)
        dst[dst_offset + (ulong)unit_local * HEAD_DIM * ld + (ulong)(d0 + ly) * ld +
            (ulong)g * rows + r_out] = tile[lx][ly];
}

/* stats[first_row + row] = (max, sum of exp2((x - max) * scale_log2)) over one logit row of
 * key_count values. One work-group of STATS_WG per row of the chunk. */
__kernel __attribute__((reqd_work_group_size(STATS_WG, 1, 1)))
void pbs_gemm_row_stats(__global const float *logits, ulong logits_offset, int key_count,
                        int first_row, float scale_log2, __global float2 *stats,
                        ulong stats_offset)
{
    stats += stats_offset / 2;
    __local float max_part[STATS_WG], sum_part[STATS_WG];
    const int lid = get_local_id(0);
    const int row = get_group_id(0);
    __global const float *x = logits + logits_offset + (ulong)row * key_count;
    /* Online (max, sum) per work-item, then a tree of pairwise merges. */
    float m = -INFINITY, sum = 0.0f;
    for (int j = lid; j < key_count; j += STATS_WG) {
        float v = x[j];
        float m_new = fmax(m, v);
        sum = sum * exp2((m - m_new) * scale_log2) + exp2((v - m_new) * scale_log2);
        m = m_new;
    }
    max_part[lid] = m;
    sum_part[lid] = sum;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int half_size = STATS_WG / 2; half_size > 0; half_size >>= 1) {
        if (lid < half_size) {
            float ma = max_part[lid], mb = max_part[lid + half_size];
            float m_new = fmax(ma, mb);
            float sa = ma == -INFINITY ? 0.0f : sum_part[lid] * exp2((ma - m_new) * scale_log2);
            float sb = mb == -INFINITY ? 0.0f
                                       : sum_part[lid + half_size] * exp2((mb - m_new) * scale_log2);
            max_part[lid] = m_new;
            sum_part[lid] = sa + sb;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        stats[(ulong)first_row + row] = (float2)(max_part[0], sum_part[0]);
}

/* score[key] = mean over the rows of a permutation head (L rows of one query head, or of each
 * query head of the group when shared) of the softmax probability of the key. Grid:
 * dimension 0 = keys (rounded up), dimension 1 = the chunk's permutation heads. */
__kernel void pbs_gemm_column_means(__global const float *logits, ulong logits_offset,
                                    __global const float2 *stats, ulong stats_offset,
                                    int q_heads, int perm_heads, int last_rows, int key_count,
                                    int first_perm, float scale_log2, __global float *scores,
                                    ulong scores_offset)
{
    stats += stats_offset / 2;
    scores += scores_offset;
    const int key = get_global_id(0);
    if (key >= key_count)
        return;
    const int perm_local = get_global_id(1);
    const int heads_in_perm = perm_heads == q_heads ? 1 : q_heads / perm_heads;
    const int rows = heads_in_perm * last_rows;
    const ulong row0 = (ulong)perm_local * rows;
    const ulong stats_row0 = (ulong)first_perm * rows + row0;
    __global const float *column = logits + logits_offset + row0 * key_count + key;
    float total = 0.0f;
    for (int r = 0; r < rows; r++) {
        float2 st = stats[stats_row0 + r];
        total += exp2((column[(ulong)r * key_count] - st.x) * scale_log2) * (1.0f / st.y);
    }
    scores[((ulong)first_perm + perm_local) * key_count + key] = total / (float)rows;
}
