/* Storage types, conversions and head views shared by every kernel. Prepended to each program.
 * Arithmetic is fp32. Each dtype, named f32, f16 or bf16, has its element type <name>_storage
 * and its conversions <name>_load, <name>_load4 (4 consecutive elements; only element
 * alignment is needed) and <name>_store. Q_DTYPE, KV_DTYPE (k and v) and O_DTYPE name the
 * dtypes of the attention tensors, which may differ. */

typedef float f32_storage;
inline float f32_load(__global const float *base, ulong index) { return base[index]; }
inline float4 f32_load4(__global const float *base, ulong index) { return vload4(0, base + index); }
inline void f32_store(__global float *base, ulong index, float value) { base[index] = value; }

/* half is a storage-only type without cl_khr_fp16: vload_half/vstore_half convert. */
typedef half f16_storage;
inline float f16_load(__global const half *base, ulong index) { return vload_half(index, base); }
inline float4 f16_load4(__global const half *base, ulong index)
{
    return vload_half4(0, base + index);
}
inline void f16_store(__global half *base, ulong index, float value)
{
    vstore_half_rte(value, index, base);
}

/* bfloat16 as its raw 16 bits: the high half of an IEEE float. */
typedef ushort bf16_storage;
inline float bf16_load(__global const ushort *base, ulong index)
{
    return as_float((uint)base[index] << 16);
}
inline float4 bf16_load4(__global const ushort *base, ulong index)
{
    return as_float4(convert_uint4(vload4(0, base + index)) << 16);
}
inline void bf16_store(__global ushort *base, ulong index, float value)
{
    uint bits = as_uint(value);
    if (isnan(value))
        bits = (bits | 0x00400000u); /* keep it a (quiet) NaN after truncation */
    else
        bits += 0x7fffu + ((bits >> 16) & 1u); /* round to nearest even */
    base[index] = (ushort)(bits >> 16);
}

/* Element index of a tensor whose dtype is a kernel argument (a pbsa_dtype: 0 f32, 1 f16,
 * 2 bf16), for the kernels that read q and k alike; the branch is the same in every work-item. */
inline float load_element_as(__global const void *base, int dtype, ulong index)
{
    return dtype == 0 ? f32_load(base, index)
                      : dtype == 1 ? f16_load(base, index) : bf16_load(base, index);
}

/* The attention tensors' storage: q_storage_t, load_q(), load_q4(), kv_storage_t (whose loads
 * are the tiles' own), o_storage_t and store_o(). Programs whose kernels take the dtype as an
 * argument define no dtypes. */
#define DTYPE_NAME_(dtype, name) dtype##_##name
#define DTYPE_NAME(dtype, name) DTYPE_NAME_(dtype, name)
#ifdef KV_DTYPE
typedef DTYPE_NAME(Q_DTYPE, storage) q_storage_t;
typedef DTYPE_NAME(KV_DTYPE, storage) kv_storage_t;
typedef DTYPE_NAME(O_DTYPE, storage) o_storage_t;
#define load_q DTYPE_NAME(Q_DTYPE, load)
#define load_q4 DTYPE_NAME(Q_DTYPE, load4)
#define store_o DTYPE_NAME(O_DTYPE, store)
/* Codes for preprocessor tests (Q_CODE == KV_CODE: q needs no conversion to k's type). */
#define f32_CODE 0
#define f16_CODE 1
#define bf16_CODE 2
#define Q_CODE DTYPE_NAME(Q_DTYPE, CODE)
#define KV_CODE DTYPE_NAME(KV_DTYPE, CODE)
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
