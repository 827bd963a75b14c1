/* Variable-length batches and paged K/V caches: their descriptors checked against the tensors of
 * a call, and the spans of their device copies. */
#include "core/internal.h"

#include <inttypes.h>

int pbsa_sequence_q_len(const pbsa_sequences *s, int b)
{
    return s->varlen ? s->varlen->q_offsets[b + 1] - s->varlen->q_offsets[b] : s->q_len;
}

int pbsa_sequence_kv_len(const pbsa_sequences *s, int b)
{
    return s->varlen ? s->varlen->kv_offsets[b + 1] - s->varlen->kv_offsets[b] : s->kv_len;
}

/* Offsets of B + 1 sequences: from 0 or more, non-decreasing, the last at most rows (rows < 0:
 * no bound, for the key offsets of a paged cache, which give lengths only). */
static int check_offsets(const pbsa_context *ctx, const char *fn, const char *name,
                         const int32_t *offsets, int batch, int64_t rows, const char *tensor)
{
    if (!offsets)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: varlen->%s is NULL", fn, name);
    if (offsets[0] < 0)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: varlen->%s[0] = %d is negative", fn,
                         name, (int)offsets[0]);
    for (int b = 0; b < batch; b++)
        if (offsets[b + 1] < offsets[b])
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                             "%s: varlen->%s[%d] = %d is below varlen->%s[%d] = %d (offsets must "
                             "not decrease)",
                             fn, name, b + 1, (int)offsets[b + 1], name, b, (int)offsets[b]);
    if (rows >= 0 && offsets[batch] > rows)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: varlen->%s[%d] = %d exceeds %s.seq = %" PRId64
                         " (the packed rows)",
                         fn, name, batch, (int)offsets[batch], tensor, rows);
    return PBSA_SUCCESS;
}

int pbsa_check_pages_consecutive(const pbsa_context *ctx, const char *fn, const char *name,
                                 const pbsa_tensor *t)
{
    /* Kernels address key j of a page by its row in the pool: page x page_size + j. */
    if ((uint64_t)t->stride_batch != (uint64_t)t->seq * (uint64_t)t->stride_seq)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: %s.stride_batch = %" PRId64 " must be %s.seq x %s.stride_seq = "
                         "%" PRIu64 " in a paged cache (each page a run of consecutive rows)",
                         fn, name, t->stride_batch, name, name,
                         (uint64_t)t->seq * (uint64_t)t->stride_seq);
    if ((uint64_t)t->batch * (uint64_t)t->seq > INT32_MAX)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: %s.batch x %s.seq = %" PRIu64 " rows of pages exceed %d", fn, name,
                         name, (uint64_t)t->batch * (uint64_t)t->seq, INT32_MAX);
    return PBSA_SUCCESS;
}

/* A device copy of a host array: count cl_ints from offset of buffer, which a query may leave
 * NULL (not made yet). */
static int check_copy(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                      const char *name, cl_mem buffer, uint64_t offset, uint64_t count)
{
    if (!buffer && mode == PBSA_CHECK_QUERY)
        return PBSA_SUCCESS;
    return pbsa_check_int_buffer(ctx, fn, name, buffer, offset, count);
}

/* The page table: long enough for every sequence, every page it uses inside the pool. */
static int check_pages(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                       const pbsa_tensor *k, const pbsa_paged_kv *paged, const pbsa_sequences *s)
{
    if (paged->max_pages < 1)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: paged_kv->max_pages = %d must be >= 1",
                         fn, (int)paged->max_pages);
    if (!paged->page_table)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: paged_kv->page_table is NULL", fn);
    int status = pbsa_check_pages_consecutive(ctx, fn, "k", k);
    if (status != PBSA_SUCCESS)
        return status;
    for (int b = 0; b < s->batch; b++) {
        const int64_t keys = pbsa_sequence_kv_len(s, b);
        const int64_t used = (keys + s->page_size - 1) / s->page_size;
        if (used > paged->max_pages)
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                             "%s: paged_kv->page_table is too short: sequence %d has %" PRId64
                             " keys, more than paged_kv->max_pages = %d pages of k.seq = %d",
                             fn, b, keys, (int)paged->max_pages, s->page_size);
        const int32_t *row = paged->page_table + (int64_t)b * paged->max_pages;
        for (int64_t j = 0; j < used; j++)
            if (row[j] < 0 || row[j] >= k->batch)
                return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                                 "%s: paged_kv->page_table[%d * max_pages + %" PRId64
                                 "] = %d is not a page of k (0 .. k.batch - 1 = %" PRId64 ")",
                                 fn, b, j, (int)row[j], k->batch - 1);
    }
    return check_copy(ctx, fn, mode, "paged_kv->page_table_buffer", paged->page_table_buffer,
                      paged->page_table_offset, (uint64_t)s->batch * (uint64_t)paged->max_pages);
}

static int check_varlen(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                        const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_varlen *varlen,
                        bool paged, pbsa_sequences *s)
{
    if (varlen->batch < 1)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: varlen->batch = %d must be >= 1", fn,
                         (int)varlen->batch);
    if (q->batch != 1)
        return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                         "%s: q.batch = %" PRId64 " must be 1 in a variable-length call (the "
                         "sequences are packed along q.seq)",
                         fn, q->batch);
    if (!paged && k->batch != 1)
        return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                         "%s: k.batch = %" PRId64 " must be 1 in a variable-length call (the "
                         "sequences are packed along k.seq)",
                         fn, k->batch);
    const int batch = varlen->batch;
    int status = check_offsets(ctx, fn, "q_offsets", varlen->q_offsets, batch, q->seq, "q");
    if (status == PBSA_SUCCESS)
        status = check_offsets(ctx, fn, "kv_offsets", varlen->kv_offsets, batch,
                               paged ? -1 : k->seq, "k");
    if (status != PBSA_SUCCESS)
        return status;
    s->batch = batch;
    s->q_len = s->kv_len = 0;
    for (int b = 0; b < batch; b++) {
        const int q_len = pbsa_sequence_q_len(s, b), kv_len = pbsa_sequence_kv_len(s, b);
        if (q_len > kv_len)
            return pbsa_fail(ctx, PBSA_ERROR_SHAPE_MISMATCH,
                             "%s: varlen: sequence %d has %d queries but %d keys (its queries are "
                             "its last positions)",
                             fn, b, q_len, kv_len);
        s->q_len = q_len > s->q_len ? q_len : s->q_len;
        s->kv_len = kv_len > s->kv_len ? kv_len : s->kv_len;
    }
    if (s->q_len == 0)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: varlen: no sequence has a query", fn);
    const uint64_t entries = (uint64_t)batch + 1;
    status = check_copy(ctx, fn, mode, "varlen->q_offsets_buffer", varlen->q_offsets_buffer,
                        varlen->q_offsets_offset, entries);
    if (status == PBSA_SUCCESS)
        status = check_copy(ctx, fn, mode, "varlen->kv_offsets_buffer", varlen->kv_offsets_buffer,
                            varlen->kv_offsets_offset, entries);
    return status;
}

int pbsa_check_sequences(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                         const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_varlen *varlen,
                         const pbsa_paged_kv *paged, pbsa_sequences *out)
{
    pbsa_sequences s = {varlen, paged, (int)q->batch, (int)q->seq, (int)k->seq, 0};
    if (varlen) {
        if (paged)
            s.page_size = (int)k->seq;
        int status = check_varlen(ctx, fn, mode, q, k, varlen, paged != NULL, &s);
        if (status == PBSA_SUCCESS && paged)
            status = check_pages(ctx, fn, mode, k, paged, &s);
        if (status != PBSA_SUCCESS)
            return status;
    }
    *out = s;
    return PBSA_SUCCESS;
}

int pbsa_sequence_spans(const pbsa_sequences *s, pbsa_span *out)
{
    int count = 0;
    const uint64_t entries = (uint64_t)s->batch + 1;
    if (s->varlen) {
        out[count++] = pbsa_int_span("varlen->q_offsets_buffer", s->varlen->q_offsets_buffer,
                                     s->varlen->q_offsets_offset, entries);
        out[count++] = pbsa_int_span("varlen->kv_offsets_buffer", s->varlen->kv_offsets_buffer,
                                     s->varlen->kv_offsets_offset, entries);
    }
    if (s->paged)
        out[count++] = pbsa_int_span("paged_kv->page_table_buffer", s->paged->page_table_buffer,
                                     s->paged->page_table_offset,
                                     (uint64_t)s->batch * (uint64_t)s->paged->max_pages);
    return count;
}
