/*
 * pbsattn CPU reference: the same operations as the device kernels, on host memory, accumulated
 * in float64. Slow and simple on purpose: it defines the expected results for conformance tests.
 *
 * Every function here only reads its inputs, writes only its outputs, allocates nothing that
 * outlives the call, and is thread-safe (no shared state).
 */
#ifndef PBSATTN_REF_H
#define PBSATTN_REF_H

#include "pbsattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 4-D tensor [batch, heads, seq, head_dim] in host memory; the same layout rules as
 * pbsa_tensor (element strides, head_dim contiguous), with data pointing at element 0. */
typedef struct pbsa_host_tensor {
    const void *data;
    pbsa_dtype dtype;
    int64_t batch;
    int64_t heads;
    int64_t seq;
    int64_t head_dim;
    int64_t stride_batch;
    int64_t stride_head;
    int64_t stride_seq;
} pbsa_host_tensor;

/* Element (b, h, s, d) of t, widened to double. No bounds checks; NaN for an unknown dtype. */
PBSA_API double pbsa_ref_element(const pbsa_host_tensor *t, int64_t b, int64_t h, int64_t s,
                                 int64_t d);

/* Conversions between float and the 16-bit storage formats: round to nearest even, overflow to
 * Inf, subnormals kept, NaN stays a (quiet) NaN with its sign. */
PBSA_API uint16_t pbsa_ref_float_to_half(float x);
PBSA_API float pbsa_ref_half_to_float(uint16_t h);
PBSA_API uint16_t pbsa_ref_float_to_bf16(float x);
PBSA_API float pbsa_ref_bf16_to_float(uint16_t b);

/*
 * Dense attention in float64, with the semantics of pbsa_dense_attention() (GQA, causal with the
 * queries being the last Sq positions, params NULL meaning causal with the default scale).
 * Any positive head_dim is accepted and q, k, v may have different dtypes (every element is read
 * through pbsa_ref_element()). out receives B*Hq*Sq*D doubles in BHSD order, contiguous.
 * Errors: PBSA_ERROR_NULL_ARGUMENT (a tensor, its data or out NULL), PBSA_ERROR_SHAPE_MISMATCH
 * (batch, head_dim, K/V shapes disagree, Hq not a multiple of Hkv, Sq > Skv),
 * PBSA_ERROR_INVALID_VALUE (unknown dtype, a size <= 0), PBSA_ERROR_OUT_OF_HOST_MEMORY; on error
 * out is not written.
 * params->varlen (and paged_kv): the host offsets and page table as pbsa_dense_params describes
 * them (their device buffers are not used); q, k, v packed (or k, v page pools). Every sequence
 * runs alone through this function; out is [1, Hq, q.seq, D] (BHSD of the packed q), of which
 * the rows outside every sequence are not written. Bad offsets or pages give
 * PBSA_ERROR_INVALID_VALUE (a sequence with more queries than keys PBSA_ERROR_SHAPE_MISMATCH),
 * after which out may be partly written.
 */
PBSA_API int pbsa_ref_dense_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                      const pbsa_host_tensor *v, const pbsa_dense_params *params,
                                      double *out);
/* pbsa_ref_dense_attention(), and each query row's log-sum-exp of its scaled logits in the
 * natural log into lse (when not NULL): B*Hq*Sq doubles, [B, Hq, Sq], or [Hq, q.seq] for a
 * variable-length call (rows outside every sequence not written), as pbsa_dense_params::lse
 * lays them out. params->lse and lse_offset are not read. */
PBSA_API int pbsa_ref_dense_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                          const pbsa_host_tensor *v,
                                          const pbsa_dense_params *params, double *out,
                                          double *lse);

/*
 * PBS-Attn reference, stage by stage, with the semantics of docs (the permutation, the block
 * selection and the attention over the selected blocks). Shapes as in pbsa_dense_attention().
 * Sizes: b = params->block_size, s = params->segment_size, nseg = Skv / s,
 * nqb = ceil(Sq / b), nkb = ceil(Skv / b), Hp = Hq (PBSA_GQA_PER_QUERY_HEAD) or Hkv
 * (PBSA_GQA_SHARED_PER_KV_GROUP). Query head h uses permutation head h (per query head) or
 * h / (Hq / Hkv) (shared). Chunked prefill (Sq < Skv) requires (Skv - Sq) % b == 0, else
 * PBSA_ERROR_INVALID_VALUE: query block i then sits at key block i + (nkb - nqb), in segment
 * (i + nkb - nqb) / (s / b).
 * params must not be NULL (start from pbsa_params_default()); struct_size 0 or
 * sizeof(pbsa_params), block_size in {16, 32, 64, 128}, segment_size a positive multiple of
 * block_size, threshold > 0 and gqa_mode valid, else PBSA_ERROR_INVALID_VALUE. A pi passed in must
 * hold a permutation of 0 .. Skv-1 in every row, else PBSA_ERROR_INVALID_VALUE.
 * All return PBSA_SUCCESS, or PBSA_ERROR_NULL_ARGUMENT / PBSA_ERROR_SHAPE_MISMATCH /
 * PBSA_ERROR_INVALID_VALUE / PBSA_ERROR_OUT_OF_HOST_MEMORY without writing any output.
 */

/* Segmented key permutation. pi receives [B, Hp, Skv] int32: pi[p] = original index of the key at
 * permuted position p; inside each whole segment the keys are sorted by score, descending (ties:
 * smaller index first); identity on the tail, and everywhere when nseg == 0 or Skv == s.
 * scores, if not NULL, receives [B, Hp, nseg * s] doubles: the mean over the last min(b, Sq) query
 * rows of the softmax (no causal mask) over keys 0 .. nseg*s-1 (the quantity the keys are sorted
 * by; in the shared mode, the mean of that over the query heads of the group). */
PBSA_API int pbsa_ref_pbs_permutation(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                      const pbsa_params *params, int32_t *pi, double *scores);

/* Block selection from the permuted keys. mask receives [B, Hq, nqb, nkb] bytes, 1 for every
 * block of the final set, 0 elsewhere: the selected blocks (the shortest prefix of the allowed
 * blocks by A descending whose mass reaches threshold; all allowed blocks when threshold >= 1),
 * the sink block (force_first_block) and every block of the query block's own segment, also
 * those after the query block when causal (the permutation can move earlier keys into them).
 * block_probs, if not NULL, receives [B, Hq, nqb, nkb] doubles: the block-mean softmax A (0 where
 * not allowed; a row with no allowed block is all zeros). */
PBSA_API int pbsa_ref_pbs_block_mask(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                     const int32_t *pi, const pbsa_params *params, uint8_t *mask,
                                     double *block_probs);

/* Attention of every query over the keys of the blocks set (non-zero) in mask, taken through pi.
 * When causal, query q (absolute position q + Skv - Sq) keeps only keys with pi[p] <= that
 * position; applied to every block, which for a mask from pbsa_ref_pbs_block_mask() equals
 * applying it on the query's own segment only. A query with no key gets a zero output row.
 * Any mask is accepted. out: B*Hq*Sq*D doubles, BHSD. */
PBSA_API int pbsa_ref_pbs_sparse_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                           const pbsa_host_tensor *v, const int32_t *pi,
                                           const uint8_t *mask, const pbsa_params *params,
                                           double *out);
/* pbsa_ref_pbs_sparse_attention(), and the log-sum-exp of every query row over the keys it
 * attends into lse (when not NULL): B*Hq*Sq doubles, [B, Hq, Sq]; -INFINITY for a row that
 * attends no key. */
PBSA_API int pbsa_ref_pbs_sparse_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                               const pbsa_host_tensor *v, const int32_t *pi,
                                               const uint8_t *mask, const pbsa_params *params,
                                               double *out, double *lse);

/* The whole pipeline, including the short-sequence fallback (Skv <= s: dense attention, causal
 * as params says). pi_out ([B, Hp, Skv]) and mask_out ([B, Hq, nqb, nkb]) may be NULL; on the
 * fallback they receive the identity and every block causality allows (j <= i + nkb - nqb; all
 * blocks when not causal). out: B*Hq*Sq*D doubles, BHSD.
 * params->varlen (and paged_kv): every sequence runs alone through this function, as
 * pbsa_ref_dense_attention() describes; out is [1, Hq, q.seq, D]; pi_out [B, Hp, Skv] and
 * mask_out [B, Hq, nqb, nkb] with B = varlen->batch and Sq, Skv the longest sequence's lengths,
 * as pbsa_workspace_read() gives them: sequence b's entries first, -1 (pi) and 0 (mask) past its
 * own keys and blocks; a sequence at the fallback has the identity and every one of its blocks
 * (its whole segment, as the library lists it in a varlen call). The stage functions above take
 * no varlen or paged_kv (PBSA_ERROR_INVALID_VALUE). */
PBSA_API int pbsa_ref_pbs_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                    const pbsa_host_tensor *v, const pbsa_params *params,
                                    double *out, int32_t *pi_out, uint8_t *mask_out);
/* pbsa_ref_pbs_attention(), and each query row's log-sum-exp over the keys it attends into lse
 * (when not NULL), laid out as pbsa_ref_dense_attention_lse() says. */
PBSA_API int pbsa_ref_pbs_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                        const pbsa_host_tensor *v, const pbsa_params *params,
                                        double *out, int32_t *pi_out, uint8_t *mask_out,
                                        double *lse);

#ifdef __cplusplus
}
#endif

#endif /* PBSATTN_REF_H */
