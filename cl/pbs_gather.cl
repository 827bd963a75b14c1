/* Materialised permuted keys and values (PBS stage 3, materialised form): K'[p] = K[pi[p]] and
 * V'[p] = V[pi[p]] per permutation head, in K and V's dtype (copied bit for bit), so the sparse
 * kernel reads K' and V' contiguously. Stands alone (no common.cl): only the element width
 * matters. Grid: dimension 0 = Skv x HEAD_DIM / 4 (four elements per work-item, rounded up),
 * dimension 1 = batch x permutation heads. Outputs: [B, Hp, Skv, HEAD_DIM], contiguous, at
 * element offsets k_out_offset and v_out_offset of the buffer out. */

#ifndef HEAD_DIM
#define HEAD_DIM 128
#endif

#if ELEMENT_BYTES == 4
typedef uint bits_t;
#elif ELEMENT_BYTES == 2
typedef ushort bits_t;
#else
#error "define ELEMENT_BYTES, the size of K and V's elements: 4 or 2"
#endif

__kernel void pbs_gather_kv(__global const bits_t *k, __global const bits_t *v,
                            ulong k_offset, ulong k_stride_batch, ulong k_stride_head,
                            ulong k_stride_seq, ulong v_offset, ulong v_stride_batch,
                            ulong v_stride_head, ulong v_stride_seq, int q_heads, int kv_heads,
                            int perm_heads, int kv_len, __global const int *pi, ulong pi_offset,
                            __global bits_t *out, ulong k_out_offset, ulong v_out_offset)
{
    const ulong i = get_global_id(0);
    if (i >= (ulong)kv_len * (HEAD_DIM / 4))
        return;
    const int p = (int)(i / (HEAD_DIM / 4)), d = (int)(i % (HEAD_DIM / 4)) * 4;
    const int bp = get_global_id(1);
    const int batch = bp / perm_heads, perm = bp % perm_heads;
    /* Per query head, permutation head h reads KV head h / group; shared, it is the KV head. */
    const int kv_head = perm_heads == q_heads ? perm / (q_heads / kv_heads) : perm;
    /* pi comes from the permutation stage; clamped so that nothing is read out of bounds. */
    const int key = clamp(pi[pi_offset + (ulong)bp * kv_len + p], 0, kv_len - 1);
    const ulong at = ((ulong)bp * kv_len + p) * HEAD_DIM + d;
    vstore4(vload4(0, k + k_offset + batch * k_stride_batch + kv_head * k_stride_head +
                          (ulong)key * k_stride_seq + d),
            0, out + k_out_offset + at);
    vstore4(vload4(0, v + v_offset + batch * v_stride_batch + kv_head * v_stride_head +
                          (ulong)key * v_stride_seq + d),
            0, out + v_out_offset + at);
}
