/* CPU reference: dense attention in float64. */
#include "pbsattn_ref.h"
#include "reference/reference.h"

#include <math.h>
#include <stdlib.h>

/* q [B, Hq, Sq, D], k and v [B, Hkv, Skv, D], Hq a multiple of Hkv, Sq <= Skv. The dtypes may
 * differ: the reference reads every element through pbsa_ref_element(). */
static int check_shapes(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                        const pbsa_host_tensor *v)
{
    const pbsa_host_tensor *tensors[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        int status = pbsa_ref_check_tensor(tensors[i]);
        if (status != PBSA_SUCCESS)
            return status;
    }
    if (k->batch != q->batch || v->batch != q->batch || k->head_dim != q->head_dim ||
        v->head_dim != q->head_dim || v->heads != k->heads || v->seq != k->seq ||
        q->heads % k->heads != 0 || q->seq > k->seq)
        return PBSA_ERROR_SHAPE_MISMATCH;
    return PBSA_SUCCESS;
}

/* Copies rows [0, rows) of head (b, h) into dst as doubles, rows x D contiguous. */
static void load_rows(const pbsa_host_tensor *t, int64_t b, int64_t h, int64_t rows, double *dst)
{
    for (int64_t s = 0; s < rows; s++)
        for (int64_t d = 0; d < t->head_dim; d++)
            dst[s * t->head_dim + d] = pbsa_ref_element(t, b, h, s, d);
}

/* out[0..D) = softmax(q . k[j] * scale over j < count) weighted sum of v[j]; returns the
 * log-sum-exp of those logits. logits is scratch of at least count doubles. */
static double attend_prefix(const double *q_row, const double *k_rows, const double *v_rows,
                            int64_t count, int64_t dim, double scale, double *logits, double *out)
{
    double max_logit = -INFINITY;
    for (int64_t j = 0; j < count; j++) {
        double dot = 0.0;
        for (int64_t d = 0; d < dim; d++)
            dot += q_row[d] * k_rows[j * dim + d];
        logits[j] = dot * scale;
        if (logits[j] > max_logit)
            max_logit = logits[j];
    }
    for (int64_t d = 0; d < dim; d++)
        out[d] = 0.0;
    double sum = 0.0;
    for (int64_t j = 0; j < count; j++) {
        double p = exp(logits[j] - max_logit); /* stable: the largest term is exp(0) */
        sum += p;
        for (int64_t d = 0; d < dim; d++)
            out[d] += p * v_rows[j * dim + d];
    }
    for (int64_t d = 0; d < dim; d++)
        out[d] /= sum;
    return max_logit + log(sum);
}

int pbsa_ref_dense_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                             const pbsa_host_tensor *v, const pbsa_dense_params *params,
                             double *out)
{
    return pbsa_ref_dense_attention_lse(q, k, v, params, out, NULL);
}

int pbsa_ref_dense_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                 const pbsa_host_tensor *v, const pbsa_dense_params *params,
                                 double *out, double *lse)
{
    if (params && params->paged_kv && !params->varlen)
        return PBSA_ERROR_INVALID_VALUE;
    if (params && params->varlen) {
        int status = pbsa_ref_check_tensor(v);
        return status == PBSA_SUCCESS ? pbsa_ref_varlen_dense(q, k, v, params, out, lse) : status;
    }
    int status = check_shapes(q, k, v);
    if (status != PBSA_SUCCESS)
        return status;
    if (!out)
        return PBSA_ERROR_NULL_ARGUMENT;

    const int64_t dim = q->head_dim, sq = q->seq, skv = k->seq;
    const int64_t group = q->heads / k->heads;
    const int causal = params ? params->causal : 1;
    const double scale = (params && params->scale != 0.0f) ? (double)params->scale
                                                           : 1.0 / sqrt((double)dim);

    double *k_rows = malloc((size_t)(skv * dim) * sizeof *k_rows);
    double *v_rows = malloc((size_t)(skv * dim) * sizeof *v_rows);
    double *q_row = malloc((size_t)dim * sizeof *q_row);
    double *logits = malloc((size_t)skv * sizeof *logits);
    if (!k_rows || !v_rows || !q_row || !logits) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    for (int64_t b = 0; b < q->batch; b++) {
        for (int64_t kvh = 0; kvh < k->heads; kvh++) {
            load_rows(k, b, kvh, skv, k_rows);
            load_rows(v, b, kvh, skv, v_rows);
            for (int64_t h = kvh * group; h < (kvh + 1) * group; h++) {
                for (int64_t i = 0; i < sq; i++) {
                    /* Query i is at absolute position i + skv - sq. */
                    int64_t count = causal ? i + skv - sq + 1 : skv;
                    for (int64_t d = 0; d < dim; d++)
                        q_row[d] = pbsa_ref_element(q, b, h, i, d);
                    const int64_t row = (b * q->heads + h) * sq + i;
                    const double row_lse = attend_prefix(q_row, k_rows, v_rows, count, dim, scale,
                                                         logits, out + row * dim);
                    if (lse)
                        lse[row] = row_lse;
                }
            }
        }
    }

done:
    free(k_rows);
    free(v_rows);
    free(q_row);
    free(logits);
    return status;
}
