/* Segmented key sort (PBS stage 1b): inside every complete segment, keys ordered by score,
 * descending, ties by smaller original index; the tail keeps its order. Writes pi (the original
 * key index at each permuted position). One work-group per segment (plus one for the tail):
 * grid dimension 0 = (segments + tail) x SORT_WG, dimension 1 = batch x permutation heads. The
 * scores are a region of the workspace, at an offset given in 4-byte words. Needs sequence.cl
 * first: each sequence sorts its own segments (the grid and the rows of scores and pi are those
 * of the longest); one with no query gets the identity. */

#ifndef SORT_SIZE
#define SORT_SIZE 256 /* a power of two >= the segment size */
#endif
#ifndef SORT_WG
#define SORT_WG 256
#endif

/* Whether (ka, ia) goes before (kb, ib). */
inline bool sorts_before(float ka, int ia, float kb, int ib)
{
    return ka > kb || (ka == kb && ia < ib);
}

__kernel __attribute__((reqd_work_group_size(SORT_WG, 1, 1)))
void pbs_segment_sort(__global const float *scores, ulong scores_offset, __global int *pi,
                      ulong pi_offset,
                      int q_len, int kv_len, int segment, int segments, int identity,
                      int perm_heads, SEQUENCE_PARAMS)
{
    __local float key[SORT_SIZE];
    __local int index[SORT_SIZE];
    const int lid = get_local_id(0);
    const int seg = get_group_id(0);
    const int bp = get_group_id(1);
    const sequence s = sequence_of(bp / perm_heads, q_len, kv_len, SEQUENCE_ARGS);
    const int own_segments = s.kv_len / segment;
    identity = identity || s.q_len == 0 || own_segments == 0 ||
               (own_segments == 1 && s.kv_len == segment);
    const int start = seg * segment;
    const int length = min(segment, s.kv_len - start);
    __global int *out = pi + pi_offset + (ulong)bp * kv_len + start;

    if (identity || seg >= own_segments) {
        for (int t = lid; t < length; t += SORT_WG)
            out[t] = start + t;
        return;
    }
    __global const float *in = scores + scores_offset + (ulong)bp * segments * segment + start;
    for (int t = lid; t < SORT_SIZE; t += SORT_WG) {
        key[t] = t < segment ? in[t] : -INFINITY;
        index[t] = t < segment ? start + t : INT_MAX;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    /* Bitonic sort into the order of sorts_before(). */
    for (int size = 2; size <= SORT_SIZE; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = lid; t < SORT_SIZE / 2; t += SORT_WG) {
                int a = 2 * t - (t & (stride - 1));
                int b = a + stride;
                bool ascending_run = (a & size) == 0;
                bool swap = ascending_run ? sorts_before(key[b], index[b], key[a], index[a])
                                          : sorts_before(key[a], index[a], key[b], index[b]);
                if (swap) {
                    float tk = key[a];
                    key[a] = key[b];
                    key[b] = tk;
                    int ti = index[a];
                    index[a] = index[b];
                    index[b] = ti;
                }
            }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
    }
    for (int t = lid; t < segment; t += SORT_WG)
        out[t] = index[t];
}
