/* CPU reference: Permuted Block-Sparse Attention in float64, stage by stage
 * (docs/pbs-algorithm.md: permutation, block selection, sparse attention). */
#include "pbsattn_ref.h"
#include "reference/reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sizes derived once from the tensors and the parameters. */
typedef struct pbs_shape {
    int64_t batch, q_heads, kv_heads, perm_heads, group; /* group = q_heads / kv_heads */
    int64_t sq, skv, dim;
    int64_t block, segment, blocks_per_segment;
    int64_t nseg;   /* whole segments: skv / segment */
    int64_t nqb, nkb;
    int64_t offset; /* nkb - nqb: query block i sits at key block i + offset */
    double scale;
    double threshold;
    int causal, sink;
    pbsa_gqa_mode mode;
} pbs_shape;

/* A value to sort descending, ties broken by the smaller index. */
typedef struct ranked {
    double value;
    int64_t index;
} ranked;

static int compare_ranked(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->value > b->value)
        return -1;
    if (a->value < b->value)
        return 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* ---- argument checks ------------------------------------------------------------------------ */

static int check_params(const pbsa_params *p)
{
    if (!p)
        return PBSA_ERROR_NULL_ARGUMENT;
    if (p->struct_size != 0 && p->struct_size != sizeof(pbsa_params))
        return PBSA_ERROR_INVALID_VALUE;
    if (p->block_size != 16 && p->block_size != 32 && p->block_size != 64 && p->block_size != 128)
        return PBSA_ERROR_INVALID_VALUE;
    if (p->segment_size <= 0 || p->segment_size % p->block_size != 0)
        return PBSA_ERROR_INVALID_VALUE;
    if (!(p->threshold > 0.0f)) /* also rejects NaN */
        return PBSA_ERROR_INVALID_VALUE;
    if (p->gqa_mode != PBSA_GQA_PER_QUERY_HEAD && p->gqa_mode != PBSA_GQA_SHARED_PER_KV_GROUP)
        return PBSA_ERROR_INVALID_VALUE;
    return PBSA_SUCCESS;
}

/* Checks q, k, v (v may be NULL for the stages that do not read it) and params, and derives the
 * sizes of every stage. */
static int get_shape(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                     const pbsa_host_tensor *v, const pbsa_params *params, pbs_shape *sh)
{
    int status = pbsa_ref_check_tensor(q);
    if (status == PBSA_SUCCESS)
        status = pbsa_ref_check_tensor(k);
    if (status == PBSA_SUCCESS && v)
        status = pbsa_ref_check_tensor(v);
    if (status == PBSA_SUCCESS)
        status = check_params(params);
    if (status != PBSA_SUCCESS)
        return status;
    /* Sequences of their own lengths: pbsa_ref_pbs_attention() alone takes them. */
    if (params->varlen || params->paged_kv)
        return PBSA_ERROR_INVALID_VALUE;
    if (k->batch != q->batch || k->head_dim != q->head_dim || q->heads % k->heads != 0 ||
        q->seq > k->seq)
        return PBSA_ERROR_SHAPE_MISMATCH;
    if (v && (v->batch != k->batch || v->heads != k->heads || v->seq != k->seq ||
              v->head_dim != k->head_dim))
        return PBSA_ERROR_SHAPE_MISMATCH;
    /* Chunked prefill: query blocks must line up with key blocks. */
    if ((k->seq - q->seq) % params->block_size != 0)
        return PBSA_ERROR_INVALID_VALUE;

    memset(sh, 0, sizeof *sh);
    sh->batch = q->batch;
    sh->q_heads = q->heads;
    sh->kv_heads = k->heads;
    sh->group = q->heads / k->heads;
    sh->mode = params->gqa_mode;
    sh->perm_heads = sh->mode == PBSA_GQA_PER_QUERY_HEAD ? sh->q_heads : sh->kv_heads;
    sh->sq = q->seq;
    sh->skv = k->seq;
    sh->dim = q->head_dim;
    sh->block = params->block_size;
    sh->segment = params->segment_size;
    sh->blocks_per_segment = sh->segment / sh->block;
    sh->nseg = sh->skv / sh->segment;
    sh->nqb = (sh->sq + sh->block - 1) / sh->block;
    sh->nkb = (sh->skv + sh->block - 1) / sh->block;
    sh->offset = sh->nkb - sh->nqb;
    sh->scale = params->scale != 0.0f ? (double)params->scale : 1.0 / sqrt((double)sh->dim);
    sh->threshold = (double)params->threshold;
    sh->causal = params->causal != 0;
    sh->sink = params->force_first_block != 0;
    return PBSA_SUCCESS;
}

/* Each row of pi must be a permutation of 0 .. skv-1, or the later stages would read out of
 * bounds or count a key twice. */
static int check_permutation(const pbs_shape *sh, const int32_t *pi)
{
    if (!pi)
        return PBSA_ERROR_NULL_ARGUMENT;
    uint8_t *seen = malloc((size_t)sh->skv);
    if (!seen)
        return PBSA_ERROR_OUT_OF_HOST_MEMORY;
    int status = PBSA_SUCCESS;
    for (int64_t row = 0; row < sh->batch * sh->perm_heads && status == PBSA_SUCCESS; row++) {
        memset(seen, 0, (size_t)sh->skv);
        for (int64_t p = 0; p < sh->skv; p++) {
            int32_t key = pi[row * sh->skv + p];
            if (key < 0 || key >= sh->skv || seen[key]) {
                status = PBSA_ERROR_INVALID_VALUE;
                break;
            }
            seen[key] = 1;
        }
    }
    free(seen);
    return status;
}

/* ---- head and block bookkeeping ------------------------------------------------------------- */

static int64_t perm_head_of_query(const pbs_shape *sh, int64_t h)
{
    return sh->mode == PBSA_GQA_PER_QUERY_HEAD ? h : h / sh->group;
}

static int64_t kv_head_of_perm(const pbs_shape *sh, int64_t p)
{
    return sh->mode == PBSA_GQA_PER_QUERY_HEAD ? p / sh->group : p;
}

/* Segment of key block j; a query block i uses key_block_segment(i + offset). */
static int64_t key_block_segment(const pbs_shape *sh, int64_t j)
{
    return j / sh->blocks_per_segment;
}

/* M0: blocks that the mean-pooled scoring may select (off the query's own segment, causal). */
static int block_allowed(const pbs_shape *sh, int64_t i, int64_t j)
{
    if (key_block_segment(sh, j) == key_block_segment(sh, i + sh->offset))
        return 0;
    return !sh->causal || j <= i + sh->offset;
}

static int permutation_is_identity(const pbs_shape *sh)
{
    return sh->nseg == 0 || (sh->nseg == 1 && sh->skv % sh->segment == 0);
}

/* ---- small numeric helpers ------------------------------------------------------------------ */

static double dot(const double *a, const double *b, int64_t n)
{
    double sum = 0.0;
    for (int64_t d = 0; d < n; d++)
        sum += a[d] * b[d];
    return sum;
}

/* Row s of head (b, h) of t as doubles. */
static void load_row(const pbsa_host_tensor *t, int64_t b, int64_t h, int64_t s, double *dst)
{
    for (int64_t d = 0; d < t->head_dim; d++)
        dst[d] = pbsa_ref_element(t, b, h, s, d);
}

static void load_rows(const pbsa_host_tensor *t, int64_t b, int64_t h, int64_t rows, double *dst)
{
    for (int64_t s = 0; s < rows; s++)
        load_row(t, b, h, s, dst + s * t->head_dim);
}

/* In place softmax of x[0..n), n >= 1, subtracting the maximum for stability. */
static void softmax(double *x, int64_t n)
{
    double max_value = x[0];
    for (int64_t j = 1; j < n; j++)
        if (x[j] > max_value)
            max_value = x[j];
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) {
        x[j] = exp(x[j] - max_value);
        sum += x[j];
    }
    for (int64_t j = 0; j < n; j++)
        x[j] /= sum;
}

/* ---- stage 1: segmented key permutation ------------------------------------------------------ */

typedef struct perm_scratch {
    double *k_rows; /* the nseg * segment keys of one KV head */
    double *q_row;
    double *probs;
    double *scores;
    ranked *order;
} perm_scratch;

/* scores[0..len) += weight * mean over the last min(block, sq) queries of query head h of the
 * softmax over the first len keys (no causal mask, as the reference). */
static void add_head_scores(const pbs_shape *sh, const pbsa_host_tensor *q, int64_t b, int64_t h,
                            int64_t len, double weight, perm_scratch *w)
{
    int64_t rows = sh->sq < sh->block ? sh->sq : sh->block;
    for (int64_t r = sh->sq - rows; r < sh->sq; r++) {
        load_row(q, b, h, r, w->q_row);
        for (int64_t j = 0; j < len; j++)
            w->probs[j] = dot(w->q_row, w->k_rows + j * sh->dim, sh->dim) * sh->scale;
        softmax(w->probs, len);
        for (int64_t j = 0; j < len; j++)
            w->scores[j] += weight * w->probs[j] / (double)rows;
    }
}

/* pi_row = identity, then each whole segment sorted by score, descending. */
static void sort_segments(const pbs_shape *sh, const double *scores, ranked *order,
                          int32_t *pi_row)
{
    for (int64_t p = 0; p < sh->skv; p++)
        pi_row[p] = (int32_t)p;
    if (permutation_is_identity(sh))
        return;
    for (int64_t seg = 0; seg < sh->nseg; seg++) {
        int64_t start = seg * sh->segment;
        for (int64_t t = 0; t < sh->segment; t++)
            order[t] = (ranked){scores[start + t], start + t};
        qsort(order, (size_t)sh->segment, sizeof *order, compare_ranked);
        for (int64_t t = 0; t < sh->segment; t++)
            pi_row[start + t] = (int32_t)order[t].index;
    }
}

int pbsa_ref_pbs_permutation(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                             const pbsa_params *params, int32_t *pi, double *scores)
{
    pbs_shape sh;
    int status = get_shape(q, k, NULL, params, &sh);
    if (status != PBSA_SUCCESS)
        return status;
    if (!pi)
        return PBSA_ERROR_NULL_ARGUMENT;

    const int64_t len = sh.nseg * sh.segment;
    const size_t n = len > 0 ? (size_t)len : 1; /* malloc(0) may return NULL */
    perm_scratch w = {
        .k_rows = malloc(n * (size_t)sh.dim * sizeof(double)),
        .q_row = malloc((size_t)sh.dim * sizeof(double)),
        .probs = malloc(n * sizeof(double)),
        .scores = malloc(n * sizeof(double)),
        .order = malloc((size_t)sh.segment * sizeof(ranked)),
    };
    if (!w.k_rows || !w.q_row || !w.probs || !w.scores || !w.order) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    /* Query heads whose scores are averaged into permutation head p: just p per query head,
     * the whole group of KV head p when shared. */
    const int64_t heads_per_perm = sh.mode == PBSA_GQA_PER_QUERY_HEAD ? 1 : sh.group;
    for (int64_t b = 0; b < sh.batch; b++) {
        for (int64_t p = 0; p < sh.perm_heads; p++) {
            int32_t *pi_row = pi + (b * sh.perm_heads + p) * sh.skv;
            for (int64_t j = 0; j < len; j++)
                w.scores[j] = 0.0;
            if (len > 0) {
                load_rows(k, b, kv_head_of_perm(&sh, p), len, w.k_rows);
                for (int64_t t = 0; t < heads_per_perm; t++)
                    add_head_scores(&sh, q, b, p * heads_per_perm + t, len,
                                    1.0 / (double)heads_per_perm, &w);
            }
            sort_segments(&sh, w.scores, w.order, pi_row);
            if (scores)
                memcpy(scores + (b * sh.perm_heads + p) * len, w.scores,
                       (size_t)len * sizeof(double));
        }
    }

done:
    free(w.k_rows);
    free(w.q_row);
    free(w.probs);
    free(w.scores);
    free(w.order);
    return status;
}

/* ---- stage 2: block selection ---------------------------------------------------------------- */

typedef struct mask_scratch {
    double *q_means; /* nqb x D */
    double *k_means; /* nkb x D, over the permuted keys */
    double *probs;   /* nkb */
    ranked *order;   /* nkb */
} mask_scratch;

/* Mean of each block of rows; a partial last block is zero padded, so the sum is divided by the
 * block size, not by the row count (as the reference pads before pooling). rows_of maps a
 * position to the row to read (the permutation for keys, NULL for queries). */
static void block_means(const pbs_shape *sh, const pbsa_host_tensor *t, int64_t b, int64_t h,
                        int64_t rows, const int32_t *rows_of, double *means)
{
    int64_t blocks = (rows + sh->block - 1) / sh->block;
    for (int64_t x = 0; x < blocks * sh->dim; x++)
        means[x] = 0.0;
    for (int64_t pos = 0; pos < rows; pos++) {
        int64_t row = rows_of ? rows_of[pos] : pos;
        double *mean = means + (pos / sh->block) * sh->dim;
        for (int64_t d = 0; d < sh->dim; d++)
            mean[d] += pbsa_ref_element(t, b, h, row, d) / (double)sh->block;
    }
}

/* probs[j] = softmax over the allowed blocks of query block i of Qbar . Kbar * scale, 0 elsewhere.
 * Returns the number of allowed blocks. */
static int64_t block_softmax(const pbs_shape *sh, int64_t i, const mask_scratch *w, double *probs)
{
    int64_t allowed = 0;
    double max_logit = -INFINITY;
    for (int64_t j = 0; j < sh->nkb; j++) {
        if (!block_allowed(sh, i, j))
            continue;
        probs[j] = dot(w->q_means + i * sh->dim, w->k_means + j * sh->dim, sh->dim) * sh->scale;
        if (probs[j] > max_logit)
            max_logit = probs[j];
        allowed++;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < sh->nkb; j++) {
        probs[j] = block_allowed(sh, i, j) ? exp(probs[j] - max_logit) : 0.0;
        sum += probs[j];
    }
    if (allowed > 0)
        for (int64_t j = 0; j < sh->nkb; j++)
            probs[j] /= sum;
    return allowed;
}

/* Marks in chosen the shortest prefix of the allowed blocks, by probability descending, whose
 * cumulative mass reaches the threshold (the crossing block included). A threshold >= 1 keeps
 * every allowed block without relying on a floating sum reaching 1; a row whose sum falls short
 * through rounding also ends up keeping every allowed block. */
static void select_blocks(const pbs_shape *sh, int64_t i, const double *probs, ranked *order,
                          uint8_t *chosen)
{
    int64_t count = 0;
    for (int64_t j = 0; j < sh->nkb; j++)
        if (block_allowed(sh, i, j))
            order[count++] = (ranked){probs[j], j};
    qsort(order, (size_t)count, sizeof *order, compare_ranked);
    double mass = 0.0;
    for (int64_t t = 0; t < count; t++) {
        chosen[order[t].index] = 1;
        mass += order[t].value;
        if (sh->threshold < 1.0 && mass >= sh->threshold)
            break;
    }
}

/* The key block holding original key 0. */
static int64_t sink_block(const pbs_shape *sh, const int32_t *pi_row)
{
    for (int64_t p = 0; p < sh->skv; p++)
        if (pi_row[p] == 0)
            return p / sh->block;
    return 0; /* unreachable: pi_row was checked to be a permutation */
}

/* Final set of query block i: the selected blocks, the sink block and the whole on-diagonal
 * segment. The on-diagonal blocks after the query block are kept even when causal: the
 * permutation may move keys earlier than the query into them (the reference scans the whole
 * segment with the token test). The sink lies in segment 0, so it is either before the query
 * block or in its own segment, and needs no causal test either. */
static void final_blocks(const pbs_shape *sh, int64_t i, int64_t sink, uint8_t *row)
{
    int64_t own_segment = key_block_segment(sh, i + sh->offset);
    for (int64_t j = 0; j < sh->nkb; j++)
        if (key_block_segment(sh, j) == own_segment)
            row[j] = 1;
    if (sh->sink)
        row[sink] = 1;
}

int pbsa_ref_pbs_block_mask(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                            const int32_t *pi, const pbsa_params *params, uint8_t *mask,
                            double *block_probs)
{
    pbs_shape sh;
    int status = get_shape(q, k, NULL, params, &sh);
    if (status != PBSA_SUCCESS)
        return status;
    if (!mask)
        return PBSA_ERROR_NULL_ARGUMENT;
    status = check_permutation(&sh, pi);
    if (status != PBSA_SUCCESS)
        return status;

    mask_scratch w = {
        .q_means = malloc((size_t)(sh.nqb * sh.dim) * sizeof(double)),
        .k_means = malloc((size_t)(sh.nkb * sh.dim) * sizeof(double)),
        .probs = malloc((size_t)sh.nkb * sizeof(double)),
        .order = malloc((size_t)sh.nkb * sizeof(ranked)),
    };
    if (!w.q_means || !w.k_means || !w.probs || !w.order) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    for (int64_t b = 0; b < sh.batch; b++) {
        for (int64_t h = 0; h < sh.q_heads; h++) {
            const int32_t *pi_row = pi + (b * sh.perm_heads + perm_head_of_query(&sh, h)) * sh.skv;
            block_means(&sh, q, b, h, sh.sq, NULL, w.q_means);
            block_means(&sh, k, b, h / sh.group, sh.skv, pi_row, w.k_means);
            int64_t sink = sink_block(&sh, pi_row);
            for (int64_t i = 0; i < sh.nqb; i++) {
                int64_t row_index = ((b * sh.q_heads + h) * sh.nqb + i) * sh.nkb;
                uint8_t *row = mask + row_index;
                memset(row, 0, (size_t)sh.nkb);
                if (block_softmax(&sh, i, &w, w.probs) > 0)
                    select_blocks(&sh, i, w.probs, w.order, row);
                final_blocks(&sh, i, sink, row);
                if (block_probs)
                    memcpy(block_probs + row_index, w.probs, (size_t)sh.nkb * sizeof(double));
            }
        }
    }

done:
    free(w.q_means);
    free(w.k_means);
    free(w.probs);
    free(w.order);
    return status;
}

/* ---- stage 3: attention over the selected blocks --------------------------------------------- */

typedef struct sparse_scratch {
    double *k_rows, *v_rows; /* skv x D, original order */
    double *q_row;
    double *logits;  /* skv */
    int64_t *keys;   /* skv: original indices of the keys one query attends */
} sparse_scratch;

/* Original indices of the keys that query qi attends: the keys of the blocks set in mask_row,
 * in permuted order. When causal, the token test pi[p] <= qa is applied to every key: keys of
 * off-diagonal blocks (earlier segments) always pass it, so this equals testing only the
 * query's own segment, and it stays correct for caller-supplied masks. */
static int64_t gather_keys(const pbs_shape *sh, int64_t qi, const int32_t *pi_row,
                           const uint8_t *mask_row, int64_t *keys)
{
    int64_t qa = qi + sh->skv - sh->sq;
    int64_t count = 0;
    for (int64_t j = 0; j < sh->nkb; j++) {
        if (!mask_row[j])
            continue;
        int64_t end = (j + 1) * sh->block < sh->skv ? (j + 1) * sh->block : sh->skv;
        for (int64_t p = j * sh->block; p < end; p++)
            if (!sh->causal || pi_row[p] <= qa)
                keys[count++] = pi_row[p];
    }
    return count;
}

/* out[0..D) = softmax-weighted sum of v over the given keys; 0 when there is no key. Returns
 * the log-sum-exp of their logits (-INFINITY for no key). */
static double attend_keys(const pbs_shape *sh, const sparse_scratch *w, int64_t count, double *out)
{
    for (int64_t d = 0; d < sh->dim; d++)
        out[d] = 0.0;
    if (count == 0)
        return -INFINITY;
    double max_logit = -INFINITY;
    for (int64_t t = 0; t < count; t++) {
        w->logits[t] = dot(w->q_row, w->k_rows + w->keys[t] * sh->dim, sh->dim) * sh->scale;
        max_logit = fmax(max_logit, w->logits[t]);
    }
    double sum = 0.0;
    for (int64_t t = 0; t < count; t++) {
        const double p = exp(w->logits[t] - max_logit); /* the largest term is exp(0) */
        const double *v_row = w->v_rows + w->keys[t] * sh->dim;
        sum += p;
        for (int64_t d = 0; d < sh->dim; d++)
            out[d] += p * v_row[d];
    }
    for (int64_t d = 0; d < sh->dim; d++)
        out[d] /= sum;
    return max_logit + log(sum);
}

int pbsa_ref_pbs_sparse_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                  const pbsa_host_tensor *v, const int32_t *pi,
                                  const uint8_t *mask, const pbsa_params *params, double *out)
{
    return pbsa_ref_pbs_sparse_attention_lse(q, k, v, pi, mask, params, out, NULL);
}

int pbsa_ref_pbs_sparse_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                                      const pbsa_host_tensor *v, const int32_t *pi,
                                      const uint8_t *mask, const pbsa_params *params, double *out,
                                      double *lse)
{
    pbs_shape sh;
    int status = get_shape(q, k, v, params, &sh);
    if (status != PBSA_SUCCESS)
        return status;
    if (!mask || !out)
        return PBSA_ERROR_NULL_ARGUMENT;
    status = check_permutation(&sh, pi);
    if (status != PBSA_SUCCESS)
        return status;

    sparse_scratch w = {
        .k_rows = malloc((size_t)(sh.skv * sh.dim) * sizeof(double)),
        .v_rows = malloc((size_t)(sh.skv * sh.dim) * sizeof(double)),
        .q_row = malloc((size_t)sh.dim * sizeof(double)),
        .logits = malloc((size_t)sh.skv * sizeof(double)),
        .keys = malloc((size_t)sh.skv * sizeof(int64_t)),
    };
    if (!w.k_rows || !w.v_rows || !w.q_row || !w.logits || !w.keys) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    for (int64_t b = 0; b < sh.batch; b++) {
        for (int64_t kvh = 0; kvh < sh.kv_heads; kvh++) {
            load_rows(k, b, kvh, sh.skv, w.k_rows);
            load_rows(v, b, kvh, sh.skv, w.v_rows);
            for (int64_t h = kvh * sh.group; h < (kvh + 1) * sh.group; h++) {
                const int32_t *pi_row =
                    pi + (b * sh.perm_heads + perm_head_of_query(&sh, h)) * sh.skv;
                for (int64_t qi = 0; qi < sh.sq; qi++) {
                    const uint8_t *mask_row =
                        mask + ((b * sh.q_heads + h) * sh.nqb + qi / sh.block) * sh.nkb;
                    int64_t count = gather_keys(&sh, qi, pi_row, mask_row, w.keys);
                    load_row(q, b, h, qi, w.q_row);
                    const int64_t row = (b * sh.q_heads + h) * sh.sq + qi;
                    const double row_lse = attend_keys(&sh, &w, count, out + row * sh.dim);
                    if (lse)
                        lse[row] = row_lse;
                }
            }
        }
    }

done:
    free(w.k_rows);
    free(w.v_rows);
    free(w.q_row);
    free(w.logits);
    free(w.keys);
    return status;
}

/* ---- the whole pipeline ---------------------------------------------------------------------- */

/* Short-sequence fallback: dense attention; identity permutation; every block causality
 * allows. */
static int dense_fallback(const pbs_shape *sh, const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                          const pbsa_host_tensor *v, const pbsa_params *params, double *out,
                          int32_t *pi, uint8_t *mask, double *lse)
{
    pbsa_dense_params dense = {.causal = sh->causal, .scale = params->scale};
    int status = pbsa_ref_dense_attention_lse(q, k, v, &dense, out, lse);
    if (status != PBSA_SUCCESS)
        return status;
    for (int64_t row = 0; row < sh->batch * sh->perm_heads; row++)
        for (int64_t p = 0; p < sh->skv; p++)
            pi[row * sh->skv + p] = (int32_t)p;
    for (int64_t row = 0; row < sh->batch * sh->q_heads; row++)
        for (int64_t i = 0; i < sh->nqb; i++)
            for (int64_t j = 0; j < sh->nkb; j++)
                mask[(row * sh->nqb + i) * sh->nkb + j] = !sh->causal || j <= i + sh->offset;
    return PBSA_SUCCESS;
}

int pbsa_ref_pbs_attention(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                           const pbsa_host_tensor *v, const pbsa_params *params, double *out,
                           int32_t *pi_out, uint8_t *mask_out)
{
    return pbsa_ref_pbs_attention_lse(q, k, v, params, out, pi_out, mask_out, NULL);
}

int pbsa_ref_pbs_attention_lse(const pbsa_host_tensor *q, const pbsa_host_tensor *k,
                               const pbsa_host_tensor *v, const pbsa_params *params, double *out,
                               int32_t *pi_out, uint8_t *mask_out, double *lse)
{
    if (params && params->varlen) {
        int status = check_params(params);
        if (status == PBSA_SUCCESS)
            status = pbsa_ref_check_tensor(v);
        return status == PBSA_SUCCESS
                   ? pbsa_ref_varlen_pbs(q, k, v, params, out, pi_out, mask_out, lse)
                   : status;
    }
    pbs_shape sh;
    int status = get_shape(q, k, v, params, &sh);
    if (status != PBSA_SUCCESS)
        return status;
    if (!out)
        return PBSA_ERROR_NULL_ARGUMENT;

    /* Private copies, so that pi_out and mask_out stay untouched unless every stage succeeds. */
    size_t pi_count = (size_t)(sh.batch * sh.perm_heads * sh.skv);
    size_t mask_count = (size_t)(sh.batch * sh.q_heads * sh.nqb * sh.nkb);
    int32_t *pi = malloc(pi_count * sizeof *pi);
    uint8_t *mask = malloc(mask_count);
    if (!pi || !mask) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    if (sh.skv <= sh.segment) {
        status = dense_fallback(&sh, q, k, v, params, out, pi, mask, lse);
    } else {
        status = pbsa_ref_pbs_permutation(q, k, params, pi, NULL);
        if (status == PBSA_SUCCESS)
            status = pbsa_ref_pbs_block_mask(q, k, pi, params, mask, NULL);
        if (status == PBSA_SUCCESS)
            status = pbsa_ref_pbs_sparse_attention_lse(q, k, v, pi, mask, params, out, lse);
    }
    if (status == PBSA_SUCCESS) {
        if (pi_out)
            memcpy(pi_out, pi, pi_count * sizeof *pi);
        if (mask_out)
            memcpy(mask_out, mask, mask_count);
    }

done:
    free(pi);
    free(mask);
    return status;
}
