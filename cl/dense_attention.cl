/* Dense attention forward. Needs common.cl and a tile file first: flash_tile.cl (portable OpenCL
 * C 1.2) or mma_tile.cl (NVIDIA tensor cores).
 * Grid: dimension 0 = query tiles x TILE_WORK_ITEMS, dimension 1 = batch x query heads. */

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
    const int lid = get_local_id(0);
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
    tile_state st;
    tile_begin(&st, q, qv, q_rows);
    for (int k0 = 0; k0 < key_end; k0 += TILE_KEYS) {
        for (int n = lid; n < TILE_KEYS; n += TILE_WORK_ITEMS) {
            shm.key_row[n] = k0 + n < key_end ? k0 + n : -1;
            shm.key_pos[n] = k0 + n;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        tile_keys(&shm, &st, q, qv, q_rows, q_pos0, k, kv, v, vv, scale_log2);
    }
    tile_store(&st, o, ov, q_rows);
}
