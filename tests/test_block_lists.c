/* Block lists as callers give them:
 *  - pbsa_sparse_attention() attends each block once: a list that repeats indices gives what the
 *    list without the repeats gives, and in a list that is not ascending an index below an
 *    earlier one is skipped, compared against the float64 reference with the matching mask;
 *  - pbsa_block_density() rejects counts outside 0..nkb and then writes nothing. */
#include "device.h"
#include "host_tensor.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;

/* Two query heads on one KV head, 160 positions, blocks of 32: 5 key blocks per query block. */
enum { HQ = 2, HKV = 1, S = 160, D = 64, BLOCK = 32, NKB = 5, ROWS = HQ * NKB, GUARD = 8 };

static cl_mem int_buffer(size_t count, const cl_int *values)
{
    cl_int err;
    cl_mem mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                count * sizeof(cl_int), (void *)values, &err);
    assert_int_equal(err, CL_SUCCESS);
    return mem;
}

/* Listed blocks of each query block i (entries of row (head, i) are the same for both heads):
 * with repeats and out of order, and the set each one means. */
static const int listed[NKB][6] = {
    {0, 0, 0, -1}, {1, 1, 0, 1, -1}, {0, 2, 2, 1, -1}, {3, 0, 3, 3, 1, -1}, {0, 2, 4, 4, -1}};
static const int meant[NKB][NKB] = {
    {1, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {1, 0, 1, 0, 0}, {0, 0, 0, 1, 0}, {1, 0, 1, 0, 1}};

static void test_repeated_blocks(void **state)
{
    (void)state;
    host_tensor q, k, v, o;
    host_tensor *inputs[3] = {&q, &k, &v};
    uint64_t seed = 0x5eedull;
    for (int i = 0; i < 3; i++) {
        int heads = i == 0 ? HQ : HKV;
        tensor_init(inputs[i], PBSA_DTYPE_F32, 1, heads, S, D, TENSOR_BHSD, GUARD);
        assert_non_null(inputs[i]->bytes);
        tensor_fill_random(inputs[i], &seed, 1.0f);
        assert_int_equal(tensor_upload(inputs[i], fixture.cl_ctx), CL_SUCCESS);
    }
    tensor_init(&o, PBSA_DTYPE_F32, 1, HQ, S, D, TENSOR_BHSD, GUARD);
    assert_non_null(o.bytes);
    assert_int_equal(tensor_upload(&o, fixture.cl_ctx), CL_SUCCESS);

    cl_int counts[ROWS], blocks[ROWS * NKB];
    uint8_t mask[ROWS * NKB];
    for (int r = 0; r < ROWS; r++) {
        const int i = r % NKB;
        counts[r] = 0;
        while (listed[i][counts[r]] >= 0) {
            blocks[r * NKB + counts[r]] = listed[i][counts[r]];
            counts[r]++;
        }
        for (int t = counts[r]; t < NKB; t++)
            blocks[r * NKB + t] = 0;
        for (int j = 0; j < NKB; j++)
            mask[r * NKB + j] = (uint8_t)meant[i][j];
    }
    /* Count 5 with repeats: more entries than blocks are only possible by repeating. */
    assert_int_equal(counts[3], 5);
    cl_mem counts_mem = int_buffer(ROWS, counts), blocks_mem = int_buffer(ROWS * NKB, blocks);
    pbsa_block_list list = {counts_mem, blocks_mem, 0, 0};
    pbsa_params params = pbsa_params_default();
    params.block_size = BLOCK;
    params.segment_size = 2 * BLOCK;
    params.causal = 0;
    assert_int_equal(pbsa_sparse_attention(fixture.ctx, fixture.queue, &q.desc, &k.desc, &v.desc,
                                           &o.desc, &params, NULL, 0, &list, NULL),
                     PBSA_SUCCESS);
    assert_int_equal(tensor_download(&o, fixture.queue), CL_SUCCESS);
    assert_int_equal(tensor_guard_damage(&o), 0);

    double *ref = malloc((size_t)HQ * S * D * sizeof *ref);
    int32_t identity[HQ * S]; /* pi of each query head */
    for (int s = 0; s < HQ * S; s++)
        identity[s] = s % S;
    assert_non_null(ref);
    pbsa_host_tensor hq = tensor_host_view(&q), hk = tensor_host_view(&k), hv = tensor_host_view(&v);
    assert_int_equal(
        pbsa_ref_pbs_sparse_attention(&hq, &hk, &hv, identity, mask, &params, ref), PBSA_SUCCESS);
    const tensor_error e = tensor_compare(&o, ref);
    const double rel = e.rel_l2;
    printf("  repeated and unordered block indices: rel_l2 %.2e against each block once\n", rel);
    assert_int_equal(e.nonfinite, 0);
    if (!(rel <= 1e-5))
        fail_msg("rel_l2 %.3e above 1e-5: a repeated or lower index was attended", rel);

    free(ref);
    clReleaseMemObject(counts_mem);
    clReleaseMemObject(blocks_mem);
    for (int i = 0; i < 3; i++)
        tensor_free(inputs[i]);
    tensor_free(&o);
}

static void test_density_counts(void **state)
{
    (void)state;
    pbsa_params p = pbsa_params_default();
    p.block_size = 32;
    /* 40 queries, 72 keys: 2 query blocks, 3 key blocks, 2 heads. */
    const cl_int bad[3] = {4, -1, 250};
    for (int b = 0; b < 3; b++) {
        cl_int counts[4] = {1, 3, 2, 3};
        counts[b + 1] = bad[b];
        double density[2] = {-7.0, -7.0};
        assert_int_equal(pbsa_block_density(1, 2, 40, 72, &p, counts, density),
                         PBSA_ERROR_INVALID_VALUE);
        char expected[32];
        snprintf(expected, sizeof expected, "counts[%d] = %d", b + 1, bad[b]);
        if (!strstr(pbsa_context_last_error(NULL), expected))
            fail_msg("message \"%s\" does not name %s", pbsa_context_last_error(NULL), expected);
        assert_true(density[0] == -7.0 && density[1] == -7.0);
    }
    cl_int counts[4] = {0, 3, 2, 3};
    double density[2];
    assert_int_equal(pbsa_block_density(1, 2, 40, 72, &p, counts, density), PBSA_SUCCESS);
    /* Causal: 2 + 3 blocks visited per head. */
    assert_true(fabs(density[0] - 3.0 / 5.0) < 1e-12 && fabs(density[1] - 5.0 / 5.0) < 1e-12);
}

int main(void)
{
    int status = support_device_open_test(&fixture);
    if (status != 0)
        return status;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_repeated_blocks),
        cmocka_unit_test(test_density_counts),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
