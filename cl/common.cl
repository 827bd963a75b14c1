/* Storage types, conversions and head views shared by every kernel. Prepended to each program.
 * load_element4 reads 4 consecutive elements (only element alignment is needed).
 * DTYPE_F32, DTYPE_F16 or DTYPE_BF16 selects how tensors are stored; arithmetic is fp32. */

#if defined(DTYPE_F32)
typedef float storage_t;
inline float load_element(__global const storage_t *base, ulong index) { return base[index]; }
inline void store_element(__global storage_t *base, ulong index, float value) { base[index] = value; }
inline float4 load_element4(__global const storage_t *base, ulong index) { return vload4(0, base + index); }
#elif defined(DTYPE_F16)
/* half is a storage-only type without cl_khr_fp16: vload_half/vstore_half convert. */
typedef half storage_t;
inline float load_element(__global const storage_t *base, ulong index) { return vload_half(index, base); }
inline void store_element(__global storage_t *base, ulong index, float value) { vstore_half_rte(value, index, base); }
inline float4 load_element4(__global const storage_t *base, ulong index) { return vload_half4(0, base + index); }
#elif defined(DTYPE_BF16)
/* bfloat16 as its raw 16 bits: the high half of an IEEE float. */
typedef ushort storage_t;
inline float load_element(__global const storage_t *base, ulong index)
{
    return as_float((uint)base[index] << 16);
}
inline float4 load_element4(__global const storage_t *base, ulong index)
{
    return as_float4(convert_uint4(vload4(0, base + index)) << 16);
}
inline void store_element(__global storage_t *base, ulong index, float value)
{
    uint bits = as_uint(value);
    if (isnan(value))
        bits = (bits | 0x00400000u); /* keep it a (quiet) NaN after truncation */
    else
        bits += 0x7fffu + ((bits >> 16) & 1u); /* round to nearest even */
    base[index] = (ushort)(bits >> 16);
}
#else
#error "define DTYPE_F32, DTYPE_F16 or DTYPE_BF16"
#endif

/* The natural log-sum-exp of a row's scaled logits, from the online softmax's running maximum m
 * of the raw scores and sum l of exp2((s - m) * scale_log2): ln(l) + m * scale. A row that saw
 * no key (l = 0) gets -INFINITY. */
inline float row_lse(float m, float l, float scale_log2)
{
    return l > 0.0f ? (m * scale_log2 + log2(l)) * M_LN2_F : -INFINITY;
}

/* Describes where one head's rows live: element (s, d) is at base + s*stride_seq + d. */
typedef struct head_view {
    ulong base;
    ulong stride_seq;
} head_view;

/* The query heads whose softmax rows make up the permutation scores of row bp of the grid
 * (batch x permutation heads): one query head per permutation head, or the whole KV group when
 * the permutation is shared per KV head. */
typedef struct score_heads {
    int batch, first, count, kv_head;
} score_heads;

inline score_heads score_heads_of(int bp, int q_heads, int kv_heads, int perm_heads)
{
    const int group = q_heads / kv_heads, perm_head = bp % perm_heads;
    score_heads h;
    h.batch = bp / perm_heads;
    h.count = perm_heads == q_heads ? 1 : group;
    h.first = perm_heads == q_heads ? perm_head : perm_head * group;
    h.kv_head = h.first / group;
    return h;
}
