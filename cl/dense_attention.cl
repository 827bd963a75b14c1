/* Dense attention forward. Needs common.cl, sequence.cl and a tile file first: flash_tile.cl
 * (portable OpenCL C 1.2) or mma_tile.cl (NVIDIA tensor cores).
 * Grid: dimension 0 = query tiles x TILE_WORK_ITEMS (of the longest sequence), dimension 1 =
 * sequences x query heads. */

/* Lists the keys of tile step (0, 1, ... of the keys below key_end) of sequence seq in its slot. */
inline void list_keys(__local tile_local *shm, int step, int key_end, const sequence *seq)
{
    __local int *rows = tile_key_rows(shm, step % TILE_LIST_SLOTS);
    __local int *positions = tile_key_positions(shm, step % TILE_LIST_SLOTS);
    for (int n = get_local_id(0); n < TILE_KEYS; n += TILE_WORK_ITEMS) {
        const int key = step * TILE_KEYS + n;
        rows[n] = key < key_end ? sequence_key_row(seq, key) : -1;
        positions[n] = key < key_end ? key : INT_MAX;
    }
}

__kernel __attribute__((reqd_work_group_size(TILE_WORK_ITEMS, 1, 1)))
void dense_attention(__global const q_storage_t *q, __global const kv_storage_t *k,
                     __global const kv_storage_t *v, __global o_storage_t *o,
                     ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                     ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                     ulong v_offset, ulong v_stride_batch, ulong v_stride_head, ulong v_stride_seq,
                     ulong o_offset, ulong o_stride_batch, ulong o_stride_head, ulong o_stride_seq,
                     int q_heads, int kv_heads, int max_q_len, int max_kv_len,
                     float scale_log2, __global float *lse, ulong lse_offset,
                     ulong lse_stride_head, SEQUENCE_PARAMS)
{
    __local tile_local shm;
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int kv_head = head / (q_heads / kv_heads);
    const sequence seq = sequence_of(batch, max_q_len, max_kv_len, SEQUENCE_ARGS);
    const int q_len = seq.q_len, kv_len = seq.kv_len;
    const int tiles = (q_len + TILE_ROWS - 1) / TILE_ROWS;
    /* Causal: the last query tiles have the most keys, so start them first. The grid is sized
     * for the longest sequence: the work-groups past a shorter one's tiles have nothing to do. */
    const int group = get_group_id(0);
    if (group >= tiles)
        return;
    const int tile = CAUSAL ? tiles - 1 - group : group;
    const int q0 = tile * TILE_ROWS;
    const int q_rows = min(TILE_ROWS, q_len - q0);
    const int q_pos0 = q0 + kv_len - q_len;

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

    const int key_end = CAUSAL ? min(kv_len, q_pos0 + q_rows) : kv_len;
    const int steps = (key_end + TILE_KEYS - 1) / TILE_KEYS;
    tile_state st;
    tile_begin(&st, q, qv, q_rows);
    /* The lists of the next tile are written while this one is used; tile_keys starts loading
     * its keys as soon as it can. */
    list_keys(&shm, 0, key_end, &seq);
    barrier(CLK_LOCAL_MEM_FENCE);
    tile_fetch(&shm, 0, k, kv, v, vv);
    for (int step = 0; step < steps; step++) {
        list_keys(&shm, step + 1, key_end, &seq);
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
