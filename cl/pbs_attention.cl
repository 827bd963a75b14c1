/* Permuted block-sparse attention (PBS stage 3). Needs common.cl, sequence.cl and a tile file
 * first (flash_tile.cl or mma_tile.cl, as for dense_attention.cl).
 * Each query block attends to the key blocks of its list; key block j covers permuted positions
 * j*LOGICAL_BLOCK... By default K and V are read through pi (no permuted copy). MATERIALISED: k
 * and v are K' = K[pi] and V' = V[pi] with one head per permutation head (kv_heads = perm_heads),
 * read at the permuted position, and pi only gives the key's position for the causal test.
 * Grid: dimension 0 = query tiles x TILE_WORK_ITEMS (LOGICAL_BLOCK / TILE_ROWS tiles per query block),
 * dimension 1 = batch x heads. Each sequence (sequence.cl) attends over its own blocks; the grid
 * and the rows of pi and the lists are those of the longest (q_len and kv_len). */

#ifndef LOGICAL_BLOCK
#define LOGICAL_BLOCK 128
#endif
#ifndef HAS_PI
#define HAS_PI 1
#endif
#ifndef MATERIALISED
#define MATERIALISED 0
#endif
#if MATERIALISED && !HAS_PI
#error "materialised K' and V' need pi for the causal test"
#endif

#if LOGICAL_BLOCK % TILE_ROWS != 0 || LOGICAL_BLOCK % TILE_KEYS != 0
#error "the kernel tiles must divide the logical block"
#endif

/* Lists the keys of tile step of the query tile in its slot: tile step % (LOGICAL_BLOCK /
 * TILE_KEYS) of the step-th listed key block; no keys past the last step. *block is the block of
 * the current step (-1: skipped) and *highest the highest block attended so far, both carried
 * from step to step. A listed block that is not above every block attended before it is skipped,
 * so a repeated index counts once; a malformed entry yields no keys: never read outside the
 * tensors. */
inline void list_keys(__local tile_local *shm, int step, int steps, __global const int *list,
                      __global const int *perm_row, int k_blocks, int kv_len, int *block,
                      int *highest, const sequence *seq)
{
    const int tiles_per_block = LOGICAL_BLOCK / TILE_KEYS;
    if (step % tiles_per_block == 0) {
        const int listed = step < steps ? list[step / tiles_per_block] : -1;
        *block = listed > *highest && listed < k_blocks ? listed : -1;
        *highest = max(*highest, *block);
    }
    const int j = *block;
    const int p0 = j * LOGICAL_BLOCK + (step % tiles_per_block) * TILE_KEYS;
    const bool block_ok = j >= 0;
    __local int *rows = tile_key_rows(shm, step % TILE_LIST_SLOTS);
    __local int *positions = tile_key_positions(shm, step % TILE_LIST_SLOTS);
    for (int n = get_local_id(0); n < TILE_KEYS; n += TILE_WORK_ITEMS) {
        const int p = p0 + n;
        int key = -1;
        if (block_ok && p < kv_len) {
            key = HAS_PI ? perm_row[p] : p;
            key = key >= 0 && key < kv_len ? key : -1;
        }
        rows[n] = key < 0 ? -1 : MATERIALISED ? p : sequence_key_row(seq, key);
        positions[n] = key >= 0 ? key : INT_MAX;
    }
}

__kernel __attribute__((reqd_work_group_size(TILE_WORK_ITEMS, 1, 1)))
void pbs_attention(__global const q_storage_t *q, __global const kv_storage_t *k,
                   __global const kv_storage_t *v, __global o_storage_t *o,
                   ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                   ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                   ulong v_offset, ulong v_stride_batch, ulong v_stride_head, ulong v_stride_seq,
                   ulong o_offset, ulong o_stride_batch, ulong o_stride_head, ulong o_stride_seq,
                   int q_heads, int kv_heads, int perm_heads, int q_len, int kv_len,
                   float scale_log2, __global const int *pi, ulong pi_offset,
                   __global const int *counts, ulong counts_offset, __global const int *blocks,
                   ulong blocks_offset, __global float *lse, ulong lse_offset,
                   ulong lse_stride_head, SEQUENCE_PARAMS)
{
    __local tile_local shm;
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int kv_head = head / (q_heads / kv_heads);
    const int perm = perm_heads == q_heads ? head : head / (q_heads / perm_heads);
    /* The rows of pi and of the lists are the longest sequence's. */
    const int row_q_blocks = (q_len + LOGICAL_BLOCK - 1) / LOGICAL_BLOCK;
    const int row_k_blocks = (kv_len + LOGICAL_BLOCK - 1) / LOGICAL_BLOCK;
    const int row_keys = kv_len;
    const sequence seq = sequence_of(batch, q_len, kv_len, SEQUENCE_ARGS);
    const int own_q_len = seq.q_len, own_kv_len = seq.kv_len;
    /* Causal: later query tiles usually have the longest lists, so start them first. */
    const int tiles = (own_q_len + TILE_ROWS - 1) / TILE_ROWS;
    const int group = get_group_id(0);
    if (group >= tiles)
        return;
    const int tile = CAUSAL ? tiles - 1 - group : group;
    const int q0 = tile * TILE_ROWS;
    const int q_rows = min(TILE_ROWS, own_q_len - q0);
    const int q_pos0 = q0 + own_kv_len - own_q_len;
    const int k_blocks = (own_kv_len + LOGICAL_BLOCK - 1) / LOGICAL_BLOCK;
    const ulong row = (ulong)bh * row_q_blocks + q0 / LOGICAL_BLOCK;
    __global const int *perm_row = pi + pi_offset + ((ulong)batch * perm_heads + perm) * row_keys;
    __global const int *list = blocks + blocks_offset + row * row_k_blocks;
    const int count = clamp(counts[counts_offset + row], 0, k_blocks);

    head_view qv = {sequence_q_base(&seq, q_offset, q_stride_batch, q_stride_head, q_stride_seq,
                                    head, q0),
                    q_stride_seq};
    head_view ov = {sequence_q_base(&seq, o_offset, o_stride_batch, o_stride_head, o_stride_seq,
                                    head, q0),
                    o_stride_seq};
    head_view kv = {sequence_kv_base(&seq, k_offset, k_stride_batch, k_stride_head, k_stride_seq,
                                     kv_head),
                    k_stride_seq};
    head_view vv = {sequence_kv_base(&seq, v_offset, v_stride_batch, v_stride_head, v_stride_seq,
                                     kv_head),
                    v_stride_seq};

    const int steps = count * (LOGICAL_BLOCK / TILE_KEYS);
    tile_state st;
    tile_begin(&st, q, qv, q_rows);
    /* One flat loop over (listed block, key tile): barriers inside nested loops with early
     * exits are not handled by every OpenCL implementation. The lists of the next tile are
     * written while this one is used; tile_keys starts loading its keys as soon as it can. */
    int block = -1, highest = -1;
    list_keys(&shm, 0, steps, list, perm_row, k_blocks, own_kv_len, &block, &highest, &seq);
    barrier(CLK_LOCAL_MEM_FENCE);
    tile_fetch(&shm, 0, k, kv, v, vv);
    for (int step = 0; step < steps; step++) {
        list_keys(&shm, step + 1, steps, list, perm_row, k_blocks, own_kv_len, &block, &highest,
                  &seq);
        barrier(CLK_LOCAL_MEM_FENCE);
        tile_keys(&shm, step % TILE_LIST_SLOTS, (step + 1) % TILE_LIST_SLOTS, &st, q, qv, q_rows, q_pos0, k, kv, v, vv,
                  scale_log2);
    }
    /* The log-sum-exp (lse NULL: not wanted) is [batch, heads, rows of q]: q's packed rows
     * when varlen. */
    const ulong lse_row0 = lse_offset + ((ulong)seq.batch * q_heads + head) * lse_stride_head +
                           (ulong)seq.q_start + (ulong)q0;
    tile_store(&shm, &st, o, ov, q_rows, lse, lse_row0, scale_log2);
}
