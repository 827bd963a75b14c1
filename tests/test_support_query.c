/* pbsa_query_dense_support() and pbsa_query_attention_support(): yes for a call the library
 * runs, from descriptions without buffers too; for every unsupported call the status and message
 * the call itself gives; and nothing compiled (the context's program cache stays empty). */
#include "core/internal.h"
#include "device.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* A dense call: GQA with 2 query heads per KV head, Sq < Skv, f32. */
enum { B = 1, HQ = 2, HKV = 1, SQ = 32, SKV = 64, D = 64 };

static support_device fixture;
static cl_mem q_buf, k_buf, v_buf, o_buf, lse_buf;

typedef struct call_args {
    pbsa_tensor q, k, v, o;
    pbsa_dense_params dense;
    pbsa_params pbs;
} call_args;

/* The arguments of a valid call, on the buffers or (buffers false) described without them. */
static call_args valid_args(bool buffers)
{
    call_args a;
    a.q = pbsa_tensor_bhsd(buffers ? q_buf : NULL, PBSA_DTYPE_F32, B, HQ, SQ, D);
    a.k = pbsa_tensor_bhsd(buffers ? k_buf : NULL, PBSA_DTYPE_F32, B, HKV, SKV, D);
    a.v = pbsa_tensor_bhsd(buffers ? v_buf : NULL, PBSA_DTYPE_F32, B, HKV, SKV, D);
    a.o = pbsa_tensor_bhsd(buffers ? o_buf : NULL, PBSA_DTYPE_F32, B, HQ, SQ, D);
    a.dense = (pbsa_dense_params){.causal = 1, .lse = buffers ? lse_buf : NULL};
    a.pbs = pbsa_params_default();
    a.pbs.block_size = 16;
    a.pbs.segment_size = 32;
    a.pbs.lse = a.dense.lse;
    return a;
}

static char *copy_text(const char *text)
{
    char *copy = malloc(strlen(text) + 1);
    assert_non_null(copy);
    return strcpy(copy, text);
}

/* The query (on a, and on a's descriptions without buffers when described is true) and the call
 * fail alike: the same status and message, expected. */
static void expect_same(const char *what, const call_args *a, bool pbs, bool described,
                        int expected)
{
    pbsa_context *ctx = fixture.ctx;
    call_args bare = *a;
    bare.q.buffer = bare.k.buffer = bare.v.buffer = bare.o.buffer = NULL;
    bare.dense.lse = bare.pbs.lse = NULL;
    const call_args *queried[2] = {a, &bare};
    for (int i = 0; i < (described ? 2 : 1); i++) {
        const call_args *x = queried[i];
        int query = pbs ? pbsa_query_attention_support(ctx, &x->q, &x->k, &x->v, &x->o, &x->pbs)
                        : pbsa_query_dense_support(ctx, &x->q, &x->k, &x->v, &x->o, &x->dense);
        char *said = copy_text(pbsa_context_last_error(ctx));
        int call = pbs ? pbsa_attention(ctx, fixture.queue, &a->q, &a->k, &a->v, &a->o, &a->pbs,
                                        NULL, NULL)
                       : pbsa_dense_attention(ctx, fixture.queue, &a->q, &a->k, &a->v, &a->o,
                                              &a->dense, NULL);
        const char *message = pbsa_context_last_error(ctx);
        if (call != expected)
            fail_msg("%s: the call gave %d (%s), expected %d", what, call, message, expected);
        if (query != call || strcmp(said, message) != 0)
            fail_msg("%s%s: the query said %d \"%s\", the call %d \"%s\"", what,
                     i ? " (no buffers)" : "", query, said, call, message);
        free(said);
    }
}

/* Supported calls: with buffers, and described before any buffer exists (varlen's device copies
 * included). */
static void test_supported(void **state)
{
    (void)state;
    pbsa_context *ctx = fixture.ctx;
    for (int buffers = 0; buffers < 2; buffers++) {
        call_args a = valid_args(buffers);
        assert_int_equal(pbsa_query_dense_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.dense),
                         PBSA_SUCCESS);
        assert_string_equal(pbsa_context_last_error(ctx), "");
        assert_int_equal(pbsa_query_attention_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.pbs),
                         PBSA_SUCCESS);
        assert_int_equal(pbsa_query_dense_support(ctx, &a.q, &a.k, &a.v, &a.o, NULL), PBSA_SUCCESS);
        a.pbs.segment_size = 256; /* the short-sequence fallback: dense attention */
        assert_int_equal(pbsa_query_attention_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.pbs),
                         PBSA_SUCCESS);
    }
    /* A variable-length paged call described without any device buffer. */
    const int32_t q_offsets[3] = {0, 10, 32}, kv_offsets[3] = {0, 42, 64};
    const int32_t pages[4] = {1, 0, 3, 2};
    pbsa_varlen varlen = {2, q_offsets, kv_offsets, NULL, 0, NULL, 0};
    pbsa_paged_kv paged = {2, pages, NULL, 0};
    call_args a = valid_args(false);
    a.k = pbsa_tensor_bshd(NULL, PBSA_DTYPE_F32, 4, HKV, 32, D);
    a.v = a.k;
    a.dense.varlen = a.pbs.varlen = &varlen;
    a.dense.paged_kv = a.pbs.paged_kv = &paged;
    if (pbsa_query_dense_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.dense) != PBSA_SUCCESS ||
        pbsa_query_attention_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.pbs) != PBSA_SUCCESS)
        fail_msg("varlen, paged: %s", pbsa_context_last_error(ctx));
}

static void test_unsupported_dense(void **state)
{
    (void)state;
    call_args a = valid_args(true);
    a.q.head_dim = a.k.head_dim = a.v.head_dim = a.o.head_dim = 72;
    a.q.seq = a.o.seq = SQ / 2; /* rows of 72 within the buffers */
    a.k.seq = a.v.seq = SKV / 2;
    a.q = pbsa_tensor_bhsd(a.q.buffer, PBSA_DTYPE_F32, B, HQ, a.q.seq, 72);
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, HKV, a.k.seq, 72);
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, HKV, a.v.seq, 72);
    a.o = pbsa_tensor_bhsd(a.o.buffer, PBSA_DTYPE_F32, B, HQ, a.o.seq, 72);
    expect_same("head dim 72", &a, false, true, PBSA_ERROR_UNSUPPORTED_HEAD_DIM);
    expect_same("head dim 72, PBS", &a, true, true, PBSA_ERROR_UNSUPPORTED_HEAD_DIM);

    a = valid_args(true);
    a.k.dtype = PBSA_DTYPE_F16;
    a.v.dtype = PBSA_DTYPE_BF16;
    expect_same("f16 k with bf16 v", &a, false, true, PBSA_ERROR_DTYPE_MISMATCH);
    expect_same("f16 k with bf16 v, PBS", &a, true, true, PBSA_ERROR_DTYPE_MISMATCH);
    a = valid_args(true);
    a.q.dtype = a.k.dtype = a.v.dtype = a.o.dtype = (pbsa_dtype)7;
    expect_same("dtype 7", &a, false, true, PBSA_ERROR_UNSUPPORTED_DTYPE);

    a = valid_args(true);
    a.k.seq = a.v.seq = SQ - 1;
    expect_same("more queries than keys", &a, false, true, PBSA_ERROR_SHAPE_MISMATCH);
    a = valid_args(true);
    a.dense.scale = -1.0f;
    expect_same("negative scale", &a, false, true, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.o.buffer = a.q.buffer;
    expect_same("o in q", &a, false, false, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.dense.lse_offset = 1;
    expect_same("lse one element short", &a, false, false, PBSA_ERROR_BUFFER_TOO_SMALL);
    a = valid_args(true);
    a.o.offset = 1;
    expect_same("o one element short", &a, false, false, PBSA_ERROR_BUFFER_TOO_SMALL);
}

static void test_unsupported_pbs(void **state)
{
    (void)state;
    call_args a = valid_args(true);
    a.pbs.block_size = 48;
    expect_same("block 48", &a, true, true, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.pbs.segment_size = 40;
    expect_same("segment 40", &a, true, true, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.q.seq = a.o.seq = SQ - 8; /* Skv - Sq = 40, not a multiple of the block (16) */
    expect_same("chunked offset 40", &a, true, true, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.pbs.threshold = 0.0f;
    expect_same("threshold 0", &a, true, true, PBSA_ERROR_INVALID_VALUE);
    a = valid_args(true);
    a.pbs.lse_offset = UINT64_MAX - 1;
    expect_same("lse offset overflows", &a, true, false, PBSA_ERROR_SIZE_OVERFLOW);
    a.pbs.segment_size = 256;
    expect_same("lse offset overflows, fallback", &a, true, false, PBSA_ERROR_SIZE_OVERFLOW);
}

/* Offsets and pages the host checks refuse, with and without the device copies. */
static void test_unsupported_varlen(void **state)
{
    (void)state;
    cl_int err;
    const int32_t good[3] = {0, 10, 32}, decreasing[3] = {0, 20, 10}, past[3] = {0, 10, 33};
    cl_mem offsets = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                    sizeof good, (void *)good, &err);
    assert_int_equal(err, CL_SUCCESS);
    pbsa_varlen varlen = {2, good, good, offsets, 0, offsets, 0};
    call_args a = valid_args(true);
    a.q.seq = a.o.seq = a.k.seq = a.v.seq = SQ;
    a.dense.varlen = a.pbs.varlen = &varlen;
    varlen.q_offsets = decreasing;
    expect_same("decreasing q offsets", &a, false, true, PBSA_ERROR_INVALID_VALUE);
    expect_same("decreasing q offsets, PBS", &a, true, true, PBSA_ERROR_INVALID_VALUE);
    varlen.q_offsets = good;
    varlen.kv_offsets = past;
    expect_same("key offsets past k", &a, false, true, PBSA_ERROR_INVALID_VALUE);
    varlen.kv_offsets = good;
    varlen.q_offsets_offset = 1;
    expect_same("device offsets one short", &a, false, false, PBSA_ERROR_BUFFER_TOO_SMALL);
    varlen.q_offsets_offset = 0;
    const int32_t pages[2] = {0, 5};
    pbsa_paged_kv paged = {1, pages, offsets, 0};
    a.k = pbsa_tensor_bshd(k_buf, PBSA_DTYPE_F32, 2, HKV, 32, D);
    a.v = pbsa_tensor_bshd(v_buf, PBSA_DTYPE_F32, 2, HKV, 32, D);
    a.dense.paged_kv = a.pbs.paged_kv = &paged;
    expect_same("page outside the pool", &a, false, true, PBSA_ERROR_INVALID_VALUE);
    clReleaseMemObject(offsets);
}

/* The device's limits as the dispatch sees them: too little local memory for any tile. */
static void test_local_memory(void **state)
{
    (void)state;
    pbsa_context *ctx = fixture.ctx;
    const cl_ulong local = ctx->info.local_mem_bytes;
    ctx->info.local_mem_bytes = 1024;
    call_args a = valid_args(true);
    expect_same("1 KiB of local memory", &a, false, true, PBSA_ERROR_UNSUPPORTED_DEVICE);
    expect_same("1 KiB of local memory, PBS", &a, true, true, PBSA_ERROR_UNSUPPORTED_DEVICE);
    a.pbs.segment_size = 256;
    expect_same("1 KiB of local memory, fallback", &a, true, true, PBSA_ERROR_UNSUPPORTED_DEVICE);
    ctx->info.local_mem_bytes = local;
}

/* Queries compile nothing: a new context's program cache (which holds the tensor-core probe's
 * program on NVIDIA GPUs, nothing elsewhere) gains no entry through supported and unsupported
 * queries, and the call adds one. New entries go at the head of the list. */
static void test_nothing_compiled(void **state)
{
    (void)state;
    pbsa_context *ctx;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx), PBSA_SUCCESS);
    const void *created = ctx->programs;
    for (int buffers = 0; buffers < 2; buffers++) {
        call_args a = valid_args(buffers);
        assert_int_equal(pbsa_query_dense_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.dense),
                         PBSA_SUCCESS);
        assert_int_equal(pbsa_query_attention_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.pbs),
                         PBSA_SUCCESS);
        a.pbs.block_size = 48;
        assert_int_equal(pbsa_query_attention_support(ctx, &a.q, &a.k, &a.v, &a.o, &a.pbs),
                         PBSA_ERROR_INVALID_VALUE);
    }
    assert_ptr_equal(ctx->programs, created);
    call_args a = valid_args(true);
    assert_int_equal(
        pbsa_dense_attention(ctx, fixture.queue, &a.q, &a.k, &a.v, &a.o, &a.dense, NULL),
        PBSA_SUCCESS);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_non_null(ctx->programs);
    assert_ptr_not_equal(ctx->programs, created);
    pbsa_context_release(ctx);
}

static cl_mem buffer(size_t floats)
{
    cl_int err;
    cl_mem mem =
        clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE, floats * sizeof(float), NULL, &err);
    return err == CL_SUCCESS ? mem : NULL;
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    q_buf = buffer(B * HQ * SQ * D);
    k_buf = buffer(B * HKV * SKV * D);
    v_buf = buffer(B * HKV * SKV * D);
    o_buf = buffer(B * HQ * SQ * D);
    lse_buf = buffer(B * HQ * SQ);
    int result = 1;
    if (q_buf && k_buf && v_buf && o_buf && lse_buf) {
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_supported),       cmocka_unit_test(test_unsupported_dense),
            cmocka_unit_test(test_unsupported_pbs), cmocka_unit_test(test_unsupported_varlen),
            cmocka_unit_test(test_local_memory),    cmocka_unit_test(test_nothing_compiled),
        };
        result = cmocka_run_group_tests_name("support_query", tests, NULL, NULL);
    }
    cl_mem all[5] = {q_buf, k_buf, v_buf, o_buf, lse_buf};
    for (int i = 0; i < 5; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    support_device_close(&fixture);
    return result;
}
