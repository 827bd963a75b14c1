/* The sequences of a call: where the rows of sequence b of the grid live. An ordinary batch has
 * sequence b in batch b of every tensor, all of one length. A variable-length batch (varlen) has
 * its sequences packed along the rows of q, o (and k, v) from their offsets; with a paged cache
 * (page_size > 0) key j of sequence b is row page_table[b][j / page_size] * page_size +
 * j % page_size of the pools k and v, whose pages are consecutive rows. Stands alone: every
 * program that addresses query or key rows starts with it (after common.cl where that is used).
 * Kernels take SEQUENCE_PARAMS as their last parameters (src/launch/kernel_args.c,
 * pbsa_arg_sequences()); absent buffers are NULL and never read. */

#define SEQUENCE_PARAMS                                                                            \
    __global const int *q_offsets, ulong q_offsets_offset, __global const int *kv_offsets,         \
        ulong kv_offsets_offset, __global const int *page_table, ulong page_table_offset,          \
        int max_pages, int page_size, int varlen
#define SEQUENCE_ARGS                                                                              \
    q_offsets, q_offsets_offset, kv_offsets, kv_offsets_offset, page_table, page_table_offset,     \
        max_pages, page_size, varlen

typedef struct sequence {
    int batch;            /* batch index of its rows in the tensors (0 when packed) */
    int q_start, q_len;   /* its query rows in q and o: q_start .. q_start + q_len - 1 */
    int kv_start, kv_len; /* its key rows in k and v (kv_start 0 when paged) */
    __global const int *pages; /* its row of the page table, when page_size > 0 */
    int page_size;
} sequence;

/* Sequence b; q_len and kv_len are the call's (the longest sequence's when varlen). */
inline sequence sequence_of(int b, int q_len, int kv_len, SEQUENCE_PARAMS)
{
    sequence s = {b, 0, q_len, 0, kv_len, 0, 0};
    if (varlen) {
        s.batch = 0;
        s.q_start = q_offsets[q_offsets_offset + b];
        s.q_len = q_offsets[q_offsets_offset + b + 1] - s.q_start;
        s.kv_start = kv_offsets[kv_offsets_offset + b];
        s.kv_len = kv_offsets[kv_offsets_offset + b + 1] - s.kv_start;
    }
    if (page_size > 0) {
        s.kv_start = 0;
        s.pages = page_table + page_table_offset + (ulong)b * max_pages;
        s.page_size = page_size;
    }
    return s;
}

/* The row of k and v (from sequence_kv_base()) that holds key j of s. */
inline int sequence_key_row(const sequence *s, int j)
{
    if (s->page_size > 0)
        return s->pages[j / s->page_size] * s->page_size + j % s->page_size;
    return j;
}

/* Element index of row 0 of s's keys in KV head head (paged: of the pool's row 0). */
inline ulong sequence_kv_base(const sequence *s, ulong offset, ulong stride_batch,
                              ulong stride_head, ulong stride_seq, int head)
{
    return offset + (ulong)s->batch * stride_batch + (ulong)head * stride_head +
           (ulong)s->kv_start * stride_seq;
}

/* Element index of s's query row row (0 .. q_len - 1) of head head, in q or o. */
inline ulong sequence_q_base(const sequence *s, ulong offset, ulong stride_batch,
                             ulong stride_head, ulong stride_seq, int head, int row)
{
    return offset + (ulong)s->batch * stride_batch + (ulong)head * stride_head +
           (ulong)(s->q_start + row) * stride_seq;
}
