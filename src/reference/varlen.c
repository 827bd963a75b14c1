/* CPU reference of variable-length batches and paged K/V caches: every sequence is cut out of
 * the packed (or paged) tensors and run alone through the ordinary reference, which is what the
 * library promises a varlen call computes. */
#include "pbsattn_ref.h"
#include "reference/reference.h"

#include <stdlib.h>
#include <string.h>

/* Checks the host parts of varlen and paged against q and k (as the library does) and returns the
 * longest sequence's query and key lengths. */
static int check_sequences(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                           const pbsa_varlen *varlen, const pbsa_paged_kv *paged,
                           int64_t *max_q, int64_t *max_kv)
{
    if (!varlen->q_offsets || !varlen->kv_offsets || (paged && !paged->page_table))
        return PBSA_ERROR_NULL_ARGUMENT;
    if (varlen->batch < 1 || q->batch != 1 || (!paged && k->batch != 1) ||
        (paged && paged->max_pages < 1))
        return PBSA_ERROR_INVALID_VALUE;
    const int32_t *qo = varlen->q_offsets, *ko = varlen->kv_offsets;
    if (qo[0] < 0 || ko[0] < 0 || qo[varlen->batch] > q->seq ||
        (!paged && ko[varlen->batch] > k->seq))
        return PBSA_ERROR_INVALID_VALUE;
    *max_q = *max_kv = 0;
    for (int32_t b = 0; b < varlen->batch; b++) {
        const int64_t q_len = qo[b + 1] - qo[b], kv_len = ko[b + 1] - ko[b];
        if (q_len < 0 || kv_len < 0)
            return PBSA_ERROR_INVALID_VALUE;
        if (q_len > kv_len)
            return PBSA_ERROR_SHAPE_MISMATCH;
        if (paged) {
            const int64_t pages = (kv_len + k->seq - 1) / k->seq;
            if (pages > paged->max_pages)
                return PBSA_ERROR_INVALID_VALUE;
            for (int64_t j = 0; j < pages; j++) {
                const int32_t page = paged->page_table[b * paged->max_pages + j];
                if (page < 0 || page >= k->batch)
                    return PBSA_ERROR_INVALID_VALUE;
            }
        }
        *max_q = q_len > *max_q ? q_len : *max_q;
        *max_kv = kv_len > *max_kv ? kv_len : *max_kv;
    }
    return *max_q > 0 ? PBSA_SUCCESS : PBSA_ERROR_INVALID_VALUE;
}

/* Rows first .. first + count - 1 of a packed tensor t (batch 1), as a tensor of its own. */
static pbsa_host_tensor packed_rows(const pbsa_host_tensor *t, int64_t first, int64_t count)
{
    pbsa_host_tensor view = *t;
    view.data = (const char *)t->data + first * t->stride_seq * pbsa_dtype_size(t->dtype);
    view.seq = count;
    return view;
}

/* Sequence b's keys 0 .. count - 1 of the page pool t, copied into *copy as a contiguous
 * [1, heads, count, D] tensor (the caller frees *copy). */
static int paged_rows(const pbsa_host_tensor *t, const pbsa_paged_kv *paged, int32_t b,
                      int64_t count, void **copy, pbsa_host_tensor *out)
{
    const size_t size = pbsa_dtype_size(t->dtype), row = (size_t)t->head_dim * size;
    char *data = malloc((size_t)(count > 0 ? count : 1) * (size_t)t->heads * row);
    if (!data)
        return PBSA_ERROR_OUT_OF_HOST_MEMORY;
    for (int64_t h = 0; h < t->heads; h++)
        for (int64_t j = 0; j < count; j++) {
            const int64_t page = paged->page_table[b * paged->max_pages + j / t->seq];
            const int64_t at = page * t->stride_batch + h * t->stride_head +
                               (j % t->seq) * t->stride_seq;
            memcpy(data + (size_t)(h * count + j) * row, (const char *)t->data + at * size, row);
        }
    *copy = data;
    *out = (pbsa_host_tensor){data, t->dtype, 1, t->heads, count, t->head_dim,
                              t->heads * count * t->head_dim, count * t->head_dim, t->head_dim};
    return PBSA_SUCCESS;
}

/* Sequence b of a call: its q, k and v as tensors of their own (k and v copied when paged). */
typedef struct sequence_tensors {
    pbsa_host_tensor q, k, v;
    void *k_copy, *v_copy;
} sequence_tensors;

static int sequence_tensors_make(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                 const pbsa_host_tensor *v, const pbsa_varlen *varlen,
                                 const pbsa_paged_kv *paged, int32_t b, sequence_tensors *s)
{
    const int32_t *qo = varlen->q_offsets, *ko = varlen->kv_offsets;
    const int64_t kv_len = ko[b + 1] - ko[b];
    *s = (sequence_tensors){.q = packed_rows(q, qo[b], qo[b + 1] - qo[b])};
    if (!paged) {
        s->k = packed_rows(k, ko[b], kv_len);
        s->v = packed_rows(v, ko[b], kv_len);
        return PBSA_SUCCESS;
    }
    int status = paged_rows(k, paged, b, kv_len, &s->k_copy, &s->k);
    if (status == PBSA_SUCCESS)
        status = paged_rows(v, paged, b, kv_len, &s->v_copy, &s->v);
    return status;
}

static void sequence_tensors_free(sequence_tensors *s)
{
    free(s->k_copy);
    free(s->v_copy);
}

/* Copies a sequence's output [1, Hq, q_len, D] into rows first.. of the packed output
 * [1, Hq, total, D] (D 1: its log-sum-exp). */
static void scatter_rows(const double *seq_out, int64_t heads, int64_t q_len, int64_t dim,
                         int64_t first, int64_t total, double *out)
{
    for (int64_t h = 0; h < heads; h++)
        memcpy(out + (h * total + first) * dim, seq_out + h * q_len * dim,
               (size_t)(q_len * dim) * sizeof *out);
}

int pbsa_ref_varlen_dense(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                          const pbsa_host_tensor *v, const pbsa_dense_params *params, double *out,
                          double *lse)
{
    int64_t max_q, max_kv;
    int status = pbsa_ref_check_tensor(q);
    if (status == PBSA_SUCCESS)
        status = pbsa_ref_check_tensor(k);
    if (status == PBSA_SUCCESS)
        status = check_sequences(q, k, params->varlen, params->paged_kv, &max_q, &max_kv);
    if (status != PBSA_SUCCESS)
        return status;
    if (!out)
        return PBSA_ERROR_NULL_ARGUMENT;
    double *seq_out = malloc((size_t)(q->heads * max_q * q->head_dim) * sizeof *seq_out);
    double *seq_lse = malloc((size_t)(q->heads * max_q) * sizeof *seq_lse);
    if (!seq_out || !seq_lse)
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
    pbsa_dense_params alone = {.causal = params->causal, .scale = params->scale};
    const pbsa_varlen *varlen = params->varlen;
    for (int32_t b = 0; b < varlen->batch && status == PBSA_SUCCESS; b++) {
        const int64_t q_len = varlen->q_offsets[b + 1] - varlen->q_offsets[b];
        if (q_len == 0)
            continue;
        sequence_tensors s;
        status = sequence_tensors_make(q, k, v, varlen, params->paged_kv, b, &s);
        if (status == PBSA_SUCCESS)
            status = pbsa_ref_dense_attention_lse(&s.q, &s.k, &s.v, &alone, seq_out, seq_lse);
        if (status == PBSA_SUCCESS) {
            scatter_rows(seq_out, q->heads, q_len, q->head_dim, varlen->q_offsets[b], q->seq, out);
            if (lse)
                scatter_rows(seq_lse, q->heads, q_len, 1, varlen->q_offsets[b], q->seq, lse);
        }
        sequence_tensors_free(&s);
    }
    free(seq_out);
    free(seq_lse);
    return status;
}

int pbsa_ref_varlen_pbs(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                        const pbsa_host_tensor *v, const pbsa_params *params, double *out,
                        int32_t *pi_out, uint8_t *mask_out, double *lse)
{
    int64_t max_q, max_kv;
    int status = pbsa_ref_check_tensor(q);
    if (status == PBSA_SUCCESS)
        status = pbsa_ref_check_tensor(k);
    if (status == PBSA_SUCCESS)
        status = check_sequences(q, k, params->varlen, params->paged_kv, &max_q, &max_kv);
    if (status != PBSA_SUCCESS)
        return status;
    if (!out)
        return PBSA_ERROR_NULL_ARGUMENT;
    const pbsa_varlen *varlen = params->varlen;
    const int64_t block = params->block_size, heads = q->heads, dim = q->head_dim;
    const int64_t perm_heads = params->gqa_mode == PBSA_GQA_PER_QUERY_HEAD ? heads : k->heads;
    const int64_t nqb = (max_q + block - 1) / block, nkb = (max_kv + block - 1) / block;
    double *seq_out = malloc((size_t)(heads * max_q * dim) * sizeof *seq_out);
    int32_t *seq_pi = malloc((size_t)(perm_heads * max_kv) * sizeof *seq_pi);
    uint8_t *seq_mask = malloc((size_t)(heads * nqb * nkb));
    double *seq_lse = malloc((size_t)(heads * max_q) * sizeof *seq_lse);
    if (!seq_out || !seq_pi || !seq_mask || !seq_lse)
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
    if (status == PBSA_SUCCESS) {
        /* Entries past a sequence's own keys and blocks: -1 and 0. */
        if (pi_out)
            for (int64_t i = 0; i < varlen->batch * perm_heads * max_kv; i++)
                pi_out[i] = -1;
        if (mask_out)
            memset(mask_out, 0, (size_t)(varlen->batch * heads * nqb * nkb));
    }
    pbsa_params alone = *params;
    alone.varlen = NULL;
    alone.paged_kv = NULL;
    for (int32_t b = 0; b < varlen->batch && status == PBSA_SUCCESS; b++) {
        const int64_t q_len = varlen->q_offsets[b + 1] - varlen->q_offsets[b];
        const int64_t kv_len = varlen->kv_offsets[b + 1] - varlen->kv_offsets[b];
        if (q_len == 0)
            continue;
        sequence_tensors s;
        status = sequence_tensors_make(q, k, v, varlen, params->paged_kv, b, &s);
        if (status == PBSA_SUCCESS)
            status = pbsa_ref_pbs_attention_lse(&s.q, &s.k, &s.v, &alone, seq_out, seq_pi, seq_mask,
                                                seq_lse);
        sequence_tensors_free(&s);
        if (status != PBSA_SUCCESS)
            break;
        scatter_rows(seq_out, heads, q_len, dim, varlen->q_offsets[b], q->seq, out);
        if (lse)
            scatter_rows(seq_lse, heads, q_len, 1, varlen->q_offsets[b], q->seq, lse);
        const int64_t own_qb = (q_len + block - 1) / block, own_kb = (kv_len + block - 1) / block;
        /* In a varlen call a short sequence's fallback is its whole segment 0: every block. */
        const int fallback = kv_len <= params->segment_size;
        for (int64_t h = 0; pi_out && h < perm_heads; h++)
            memcpy(pi_out + (b * perm_heads + h) * max_kv, seq_pi + h * kv_len,
                   (size_t)kv_len * sizeof *pi_out);
        for (int64_t h = 0; mask_out && h < heads; h++)
            for (int64_t i = 0; i < own_qb; i++)
                for (int64_t j = 0; j < own_kb; j++)
                    mask_out[((b * heads + h) * nqb + i) * nkb + j] =
                        fallback || seq_mask[(h * own_qb + i) * own_kb + j];
    }
    free(seq_out);
    free(seq_pi);
    free(seq_mask);
    free(seq_lse);
    return status;
}
