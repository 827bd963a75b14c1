/* Dense attention forward. Needs common.cl and a tile file first: flash_tile.cl (portable OpenCL
 * C 1.2) or mma_tile.cl (NVIDIA tensor cores).
 * Grid: dimension 0 = query tiles x TILE_WORK_ITEMS, dimension 1 = batch x query heads. */

/* Lists the keys of tile step (0, 1, ... of the keys below key_end) in its slot. */
inline void list_keys(__local tile_local *shm, int step, int key_end)
{
    __local int *rows = tile_key_rows(shm, step % TILE_LIST_SLOTS);
    __local int *positions = tile_key_positions(shm, step % TILE_LIST_SLOTS);
    for (int n = get_local_id(0); n < TILE_KEYS; n += TILE_WORK_ITEMS) {
        const int key = step * TILE_KEYS + n;
        rows[n] = key < key_end ? key : -1;
        positions[n] = key < key_end ? key : INT_MAX;
    }
}

__kernel __attribute__((reqd_work_group_size(TILE_WORK_ITEMS, 1, 1)))
void dense_attention(__global const storage_t *q, __global const storage_t *k,
                     __global const storage_t *v, __global storage_t *o,
                     ulong q_offset, ulong q_stride_batch, ulong q_stride_head, ulong q_stride_seq,
                     ulong k_offset, ulong k_stride_batch, ulong k_stride_head, ulong k_stride_seq,
                     ulong v_offset, ulong v_stride_batch, ulong v_stride_head, ulong v_stride_seq,
                     ulong o_offset, ulong o_stride_batch, ulong o_stride_head, ulong o_stride_seq,
                     int q_heads, int kv_heads, int q_len, int kv_len, float scale_log2)
{
    __local tile_local shm;
    const int tiles = (q_len + TILE_ROWS - 1) / TILE_ROWS;
    /* Causal: the last query tiles have the most keys, so start them first. */
    const int tile = CAUSAL ? tiles - 1 - (int)get_group_id(0) : (int)get_group_id(0);
    const int bh = get_group_id(1);
    const int batch = bh / q_heads, head = bh % q_heads;
    const int kv_head = head / (q_heads / kv_heads);
    const int q0 = tile * TILE_ROWS;
    const int q_rows = min(TILE_ROWS, q_len - q0);
    const int q_pos0 = q0 + kv_len - q_len;

    head_view qv = {q_offset + batch * q_stride_batch + head * q_stride_head + (ulong)q0 * q_stride_seq,
                    q_stride_seq};
    head_view ov = {o_offset + batch * o_stride_batch + head * o_stride_head + (ulong)q0 * o_stride_seq,
                    o_stride_seq};
    head_view kv = {k_offset + batch * k_stride_batch + kv_head * k_stride_head, k_stride_seq};
    head_view vv = {v_offset + batch * v_stride_batch + kv_head * v_stride_head, v_stride_seq};

    const int key_end = CAUSAL ? min(kv_len, q_pos0 + q_rows) : kv_len;
    const int steps = (key_end + TILE_KEYS - 1) / TILE_KEYS;
    tile_state st;
    tile_begin(&st, q, qv, q_rows);
    /* The lists of the next tile are written while this one is used; tile_keys starts loading
     * its keys as soon as it can. */
    list_keys(&shm, 0, key_end);
    barrier(CLK_LOCAL_MEM_FENCE);
    tile_fetch(&shm, 0, k, kv, v, vv);
    for (int step = 0; step < steps; step++) {
        list_keys(&shm, step + 1, key_end);
        barrier(CLK_LOCAL_MEM_FENCE);
        tile_keys(&shm, step % TILE_LIST_SLOTS, (step + 1) % TILE_LIST_SLOTS, &st, q, qv, q_rows, q_pos0, k, kv, v, vv,
                  scale_log2);
    }
    tile_store(&st, o, ov, q_rows);
}
