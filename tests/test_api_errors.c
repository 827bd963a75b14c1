/* Argument checking of the public API: every bad input gets its status and a message naming the
 * bad argument (also sent to the log callback), and leaves the caller's buffers and queue as they
 * were. Also covers the failure path of the kernel build cache. */
#include "device.h"
#include "core/internal.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The valid call every case starts from: GQA with 2 query heads per KV head, Sq < Skv. */
enum { B = 1, HQ = 2, HKV = 1, SQ = 16, SKV = 32, D = 64 };
enum { Q_ELEMENTS = B * HQ * SQ * D, KV_ELEMENTS = B * HKV * SKV * D };

typedef struct dense_args {
    pbsa_tensor q, k, v, o;
    pbsa_dense_params params;
} dense_args;

/* A caller buffer and the bytes it must still hold after every failing call. */
typedef struct tracked_buffer {
    cl_mem mem;
    size_t bytes;
    unsigned char *expected;
} tracked_buffer;

enum { BUFFER_Q, BUFFER_K, BUFFER_V, BUFFER_O, BUFFER_SHARED, BUFFER_LSE, BUFFER_COUNT };

static support_device fixture;
static tracked_buffer buffers[BUFFER_COUNT];
static cl_context foreign_ctx;
static cl_command_queue foreign_queue;
static cl_mem foreign_buffer;

/* The last message the log callback received. */
static struct {
    int count;
    pbsa_log_level level;
    char text[1024];
} logged;

static void log_callback(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    logged.count++;
    logged.level = level;
    snprintf(logged.text, sizeof logged.text, "%s", message);
}

static int create_tracked(tracked_buffer *b, size_t bytes, unsigned char fill_seed, bool poison)
{
    cl_int err;
    b->bytes = bytes;
    b->expected = malloc(bytes);
    if (!b->expected)
        return 1;
    for (size_t i = 0; i < bytes; i++)
        b->expected[i] = poison ? 0xff : (unsigned char)((i * 7u + fill_seed) & 0x3f);
    b->mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                            b->expected, &err);
    return err != CL_SUCCESS;
}

/* Restores the expected contents (after a call that was meant to succeed). */
static void restore_buffers(void)
{
    for (int i = 0; i < BUFFER_COUNT; i++)
        assert_int_equal(clEnqueueWriteBuffer(fixture.queue, buffers[i].mem, CL_TRUE, 0,
                                              buffers[i].bytes, buffers[i].expected, 0, NULL,
                                              NULL),
                         CL_SUCCESS);
}

static void assert_buffers_untouched(const char *what)
{
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    for (int i = 0; i < BUFFER_COUNT; i++) {
        unsigned char *now = malloc(buffers[i].bytes);
        assert_non_null(now);
        assert_int_equal(clEnqueueReadBuffer(fixture.queue, buffers[i].mem, CL_TRUE, 0,
                                             buffers[i].bytes, now, 0, NULL, NULL),
                         CL_SUCCESS);
        int differs = memcmp(now, buffers[i].expected, buffers[i].bytes);
        free(now);
        if (differs)
            fail_msg("%s: buffer %d was written by a failing call", what, i);
    }
}

static dense_args valid_args(void)
{
    dense_args a;
    a.q = pbsa_tensor_bhsd(buffers[BUFFER_Q].mem, PBSA_DTYPE_F32, B, HQ, SQ, D);
    a.k = pbsa_tensor_bhsd(buffers[BUFFER_K].mem, PBSA_DTYPE_F32, B, HKV, SKV, D);
    a.v = pbsa_tensor_bhsd(buffers[BUFFER_V].mem, PBSA_DTYPE_F32, B, HKV, SKV, D);
    a.o = pbsa_tensor_bhsd(buffers[BUFFER_O].mem, PBSA_DTYPE_F32, B, HQ, SQ, D);
    a.params = (pbsa_dense_params){.causal = 1, .scale = 0.0f};
    return a;
}

/* Checks a failed call: its status, the message of ctx's last error (which must contain needle
 * and must also have reached the log callback), no event, and untouched buffers. */
static void check_failure(const char *what, int got, int expected, const pbsa_context *ctx,
                          const char *needle, int log_count_before, cl_event event)
{
    const char *message = pbsa_context_last_error(ctx);
    if (got != expected)
        fail_msg("%s: status %d (%s), expected %d (%s); message \"%s\"", what, got,
                 pbsa_status_string(got), expected, pbsa_status_string(expected), message);
    if (!strstr(message, needle))
        fail_msg("%s: message \"%s\" does not name \"%s\"", what, message, needle);
    if (logged.count != log_count_before + 1 || logged.level != PBSA_LOG_ERROR ||
        strcmp(logged.text, message) != 0)
        fail_msg("%s: the log callback got \"%s\" (%d calls), not the error \"%s\"", what,
                 logged.text, logged.count - log_count_before, message);
    if (event)
        fail_msg("%s: a failing call returned an event", what);
    assert_buffers_untouched(what);
}

static void expect_dense_ex(const char *what, pbsa_context *ctx, cl_command_queue queue,
                            const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                            const pbsa_tensor *o, const pbsa_dense_params *params, int expected,
                            const char *needle)
{
    cl_event event = NULL;
    int before = logged.count;
    int got = pbsa_dense_attention(ctx, queue, q, k, v, o, params, &event);
    if (got == PBSA_SUCCESS && event)
        clReleaseEvent(event);
    check_failure(what, got, expected, ctx, needle, before, event);
}

/* Calls with the tensors of a and checks the failure. */
static void expect_dense(const char *what, const dense_args *a, int expected, const char *needle)
{
    expect_dense_ex(what, fixture.ctx, fixture.queue, &a->q, &a->k, &a->v, &a->o, &a->params,
                    expected, needle);
}

static void test_valid_call_succeeds(void **state)
{
    (void)state;
    dense_args a = valid_args();
    cl_event event = NULL;
    int status = pbsa_dense_attention(fixture.ctx, fixture.queue, &a.q, &a.k, &a.v, &a.o,
                                      &a.params, &event);
    if (status != PBSA_SUCCESS)
        fail_msg("valid call: %d %s", status, pbsa_context_last_error(fixture.ctx));
    assert_non_null(event);
    assert_int_equal(clWaitForEvents(1, &event), CL_SUCCESS);
    clReleaseEvent(event);
    assert_string_equal(pbsa_context_last_error(fixture.ctx), "");

    /* q and o as disjoint views of one buffer are fine. */
    a.q.buffer = a.o.buffer = buffers[BUFFER_SHARED].mem;
    a.o.offset = Q_ELEMENTS;
    status = pbsa_dense_attention(fixture.ctx, fixture.queue, &a.q, &a.k, &a.v, &a.o, NULL, NULL);
    if (status != PBSA_SUCCESS)
        fail_msg("disjoint views: %d %s", status, pbsa_context_last_error(fixture.ctx));
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    restore_buffers();
}

static void test_null_arguments(void **state)
{
    (void)state;
    dense_args a = valid_args();
    pbsa_dense_params *p = &a.params;
    expect_dense_ex("ctx NULL", NULL, fixture.queue, &a.q, &a.k, &a.v, &a.o, p,
                    PBSA_ERROR_NULL_ARGUMENT, "ctx");
    expect_dense_ex("queue NULL", fixture.ctx, NULL, &a.q, &a.k, &a.v, &a.o, p,
                    PBSA_ERROR_NULL_ARGUMENT, "queue");
    expect_dense_ex("q NULL", fixture.ctx, fixture.queue, NULL, &a.k, &a.v, &a.o, p,
                    PBSA_ERROR_NULL_ARGUMENT, "q is NULL");
    expect_dense_ex("k NULL", fixture.ctx, fixture.queue, &a.q, NULL, &a.v, &a.o, p,
                    PBSA_ERROR_NULL_ARGUMENT, "k is NULL");
    expect_dense_ex("v NULL", fixture.ctx, fixture.queue, &a.q, &a.k, NULL, &a.o, p,
                    PBSA_ERROR_NULL_ARGUMENT, "v is NULL");
    expect_dense_ex("o NULL", fixture.ctx, fixture.queue, &a.q, &a.k, &a.v, NULL, p,
                    PBSA_ERROR_NULL_ARGUMENT, "o is NULL");

    const char *names[4] = {"q.buffer", "k.buffer", "v.buffer", "o.buffer"};
    for (int i = 0; i < 4; i++) {
        dense_args b = valid_args();
        pbsa_tensor *t[4] = {&b.q, &b.k, &b.v, &b.o};
        t[i]->buffer = NULL;
        expect_dense(names[i], &b, PBSA_ERROR_NULL_ARGUMENT, names[i]);
    }
}

/* q and o may each have any dtype, k and v share one: a v (or k) of another dtype than its
 * partner's is refused, naming both. */
static void test_dtypes(void **state)
{
    (void)state;
    const char *names[2] = {"k.dtype", "v.dtype"};
    for (int i = 0; i < 2; i++) {
        dense_args a = valid_args();
        pbsa_tensor *t[2] = {&a.k, &a.v};
        /* f16 halves the bytes, so the buffers stay large enough. */
        t[i]->dtype = PBSA_DTYPE_F16;
        expect_dense(names[i], &a, PBSA_ERROR_DTYPE_MISMATCH, "v.dtype = ");
        expect_dense(names[i], &a, PBSA_ERROR_DTYPE_MISMATCH, "k.dtype = ");
    }
    dense_args a = valid_args();
    a.q.dtype = a.o.dtype = PBSA_DTYPE_F16;
    a.k.dtype = PBSA_DTYPE_BF16;
    expect_dense("bf16 k with f32 v", &a, PBSA_ERROR_DTYPE_MISMATCH,
                 "v.dtype = f32 differs from k.dtype = bf16");

    const int bad[3] = {3, -1, 1000};
    for (int i = 0; i < 3; i++) {
        a = valid_args();
        a.q.dtype = (pbsa_dtype)bad[i];
        expect_dense("q.dtype invalid", &a, PBSA_ERROR_UNSUPPORTED_DTYPE, "q.dtype");
        a = valid_args();
        a.v.dtype = (pbsa_dtype)bad[i];
        expect_dense("v.dtype invalid", &a, PBSA_ERROR_UNSUPPORTED_DTYPE, "v.dtype");
    }
}

static void test_head_dim(void **state)
{
    (void)state;
    const int64_t dims[4] = {72, 32, 160, 512}; /* 80, 112 and 192 are supported */
    for (int i = 0; i < 4; i++) {
        dense_args a = valid_args();
        pbsa_tensor *t[4] = {&a.q, &a.k, &a.v, &a.o};
        for (int j = 0; j < 4; j++) {
            /* Rows of dims[i] elements in the same buffers; fewer rows where they would not fit. */
            int64_t seq = t[j]->seq * D / dims[i];
            if (seq > t[j]->seq)
                seq = t[j]->seq;
            *t[j] = pbsa_tensor_bhsd(t[j]->buffer, PBSA_DTYPE_F32, t[j]->batch, t[j]->heads,
                                     seq < 1 ? 1 : seq, dims[i]);
        }
        if (a.q.seq > a.k.seq)
            a.q.seq = a.o.seq = a.k.seq;
        expect_dense("head dim", &a, PBSA_ERROR_UNSUPPORTED_HEAD_DIM, "q.head_dim");
    }
    /* A supported but differing head dim of k, within its buffer. */
    dense_args a = valid_args();
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, HKV, SKV / 2, 2 * D);
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, HKV, SKV / 2, D);
    expect_dense("k.head_dim differs", &a, PBSA_ERROR_SHAPE_MISMATCH, "k.head_dim");
}

static void test_shape_mismatches(void **state)
{
    (void)state;
    dense_args a = valid_args();
    a.q = pbsa_tensor_bhsd(a.q.buffer, PBSA_DTYPE_F32, B, 3, SQ / 2, D);
    a.o = pbsa_tensor_bhsd(a.o.buffer, PBSA_DTYPE_F32, B, 3, SQ / 2, D);
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, 2, SKV / 2, D);
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, 2, SKV / 2, D);
    expect_dense("Hq not a multiple of Hkv", &a, PBSA_ERROR_SHAPE_MISMATCH, "k.heads");
    assert_non_null(strstr(pbsa_context_last_error(fixture.ctx), "q.heads"));

    a = valid_args();
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, HKV, SQ / 2, D);
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, HKV, SQ / 2, D);
    expect_dense("Sq > Skv", &a, PBSA_ERROR_SHAPE_MISMATCH, "q.seq");

    /* Batch mismatches: each tensor in turn claims two batches (within its buffer). */
    const char *batch_names[3] = {"k.batch", "v.batch", "o.batch"};
    for (int i = 0; i < 3; i++) {
        a = valid_args();
        pbsa_tensor *t[3] = {&a.k, &a.v, &a.o};
        *t[i] = pbsa_tensor_bhsd(t[i]->buffer, PBSA_DTYPE_F32, 2, t[i]->heads, t[i]->seq / 2, D);
        if (i < 2) {
            *t[1 - i] = pbsa_tensor_bhsd(t[1 - i]->buffer, PBSA_DTYPE_F32, B, HKV, SKV / 2, D);
        } else {
            a.q = pbsa_tensor_bhsd(a.q.buffer, PBSA_DTYPE_F32, B, HQ, SQ / 2, D);
        }
        expect_dense(batch_names[i], &a, PBSA_ERROR_SHAPE_MISMATCH, batch_names[i]);
    }

    a = valid_args();
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, HKV, SKV / 2, D);
    expect_dense("v.seq differs", &a, PBSA_ERROR_SHAPE_MISMATCH, "v.seq");
    a = valid_args();
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, 2, SKV / 2, D);
    a.v = pbsa_tensor_bhsd(a.v.buffer, PBSA_DTYPE_F32, B, 1, SKV / 2, D);
    expect_dense("v.heads differs", &a, PBSA_ERROR_SHAPE_MISMATCH, "v.heads");
    a = valid_args();
    a.o = pbsa_tensor_bhsd(a.o.buffer, PBSA_DTYPE_F32, B, 1, SQ, D);
    expect_dense("o.heads differs", &a, PBSA_ERROR_SHAPE_MISMATCH, "o.heads");
    a = valid_args();
    a.o = pbsa_tensor_bhsd(a.o.buffer, PBSA_DTYPE_F32, B, HQ, SQ / 2, D);
    expect_dense("o.seq differs", &a, PBSA_ERROR_SHAPE_MISMATCH, "o.seq");
}

static void test_sizes_and_strides(void **state)
{
    (void)state;
    const char *tensor_names[4] = {"q", "k", "v", "o"};
    const char *size_names[4] = {"batch", "heads", "seq", "head_dim"};
    const int64_t bad_sizes[3] = {0, -1, (int64_t)INT32_MAX + 1};
    for (int ti = 0; ti < 4; ti++) {
        for (int si = 0; si < 4; si++) {
            for (int bi = 0; bi < 3; bi++) {
                dense_args a = valid_args();
                pbsa_tensor *t[4] = {&a.q, &a.k, &a.v, &a.o};
                int64_t *sizes[4] = {&t[ti]->batch, &t[ti]->heads, &t[ti]->seq, &t[ti]->head_dim};
                *sizes[si] = bad_sizes[bi];
                char name[32];
                snprintf(name, sizeof name, "%s.%s", tensor_names[ti], size_names[si]);
                expect_dense(name, &a, PBSA_ERROR_INVALID_VALUE, name);
            }
        }
    }
    const char *stride_names[3] = {"stride_batch", "stride_head", "stride_seq"};
    for (int ti = 0; ti < 4; ti++) {
        for (int si = 0; si < 3; si++) {
            dense_args a = valid_args();
            pbsa_tensor *t[4] = {&a.q, &a.k, &a.v, &a.o};
            int64_t *strides[3] = {&t[ti]->stride_batch, &t[ti]->stride_head, &t[ti]->stride_seq};
            *strides[si] = si == 0 ? INT64_MIN : -D;
            char name[32];
            snprintf(name, sizeof name, "%s.%s", tensor_names[ti], stride_names[si]);
            expect_dense(name, &a, PBSA_ERROR_INVALID_VALUE, name);
        }
    }
}

static void test_overflow(void **state)
{
    (void)state;
    dense_args a = valid_args();
    a.q.stride_head = INT64_MAX; /* (heads - 1) * stride fits; the byte count does not */
    expect_dense("q.stride_head huge", &a, PBSA_ERROR_SIZE_OVERFLOW, "q:");
    a = valid_args();
    a.k = pbsa_tensor_bhsd(a.k.buffer, PBSA_DTYPE_F32, B, HKV, INT32_MAX, D);
    a.k.stride_seq = INT64_MAX / 2;
    expect_dense("k.stride_seq x k.seq", &a, PBSA_ERROR_SIZE_OVERFLOW, "k:");
    a = valid_args();
    a.v.offset = UINT64_MAX - 10;
    expect_dense("v.offset", &a, PBSA_ERROR_SIZE_OVERFLOW, "v:");
    a = valid_args();
    a.o.offset = UINT64_MAX / 4; /* the element count fits, the bytes do not */
    expect_dense("o.offset bytes", &a, PBSA_ERROR_SIZE_OVERFLOW, "o:");
    a = valid_args();
    a.o.stride_batch = INT64_MAX;
    a.o.batch = INT32_MAX;
    a.q.batch = a.k.batch = a.v.batch = INT32_MAX;
    a.q.stride_batch = a.k.stride_batch = a.v.stride_batch = 0;
    expect_dense("o.stride_batch x o.batch", &a, PBSA_ERROR_SIZE_OVERFLOW, "o:");
}

static void test_buffer_too_small(void **state)
{
    (void)state;
    const char *names[4] = {"q.buffer", "k.buffer", "v.buffer", "o.buffer"};
    for (int i = 0; i < 4; i++) {
        dense_args a = valid_args();
        pbsa_tensor *t[4] = {&a.q, &a.k, &a.v, &a.o};
        t[i]->offset = 1; /* one element past the end */
        expect_dense(names[i], &a, PBSA_ERROR_BUFFER_TOO_SMALL, names[i]);
        /* One row more than the buffer holds (q and o, k and v change together; the first
         * of each pair is checked first). */
        a = valid_args();
        if (i == 0 || i == 3)
            a.q.seq = a.o.seq = SQ + 1;
        else
            a.k.seq = a.v.seq = SKV + 1;
        expect_dense(names[i], &a, PBSA_ERROR_BUFFER_TOO_SMALL,
                     i == 0 || i == 3 ? "q.buffer" : "k.buffer");
        /* Two batches, the others broadcast with stride 0; stride_batch 1 of tensor i reaches
         * one element past the end. */
        a = valid_args();
        a.q.batch = a.k.batch = a.v.batch = a.o.batch = 2;
        a.q.stride_batch = a.k.stride_batch = a.v.stride_batch = a.o.stride_batch = 0;
        t[i]->stride_batch = 1;
        expect_dense(names[i], &a, PBSA_ERROR_BUFFER_TOO_SMALL, names[i]);
    }
    /* An offset that puts the end of o one element past the end of a larger buffer. */
    dense_args a = valid_args();
    a.o.buffer = buffers[BUFFER_SHARED].mem;
    a.o.offset = Q_ELEMENTS + 1;
    expect_dense("o.offset past the end", &a, PBSA_ERROR_BUFFER_TOO_SMALL, "o.buffer");
}

static void test_overlap(void **state)
{
    (void)state;
    dense_args a = valid_args();
    a.o.buffer = a.q.buffer;
    expect_dense("o is q", &a, PBSA_ERROR_INVALID_VALUE, "o overlaps q");

    a = valid_args();
    a.q.buffer = a.o.buffer = buffers[BUFFER_SHARED].mem;
    a.o.offset = Q_ELEMENTS - 1; /* one element in common */
    expect_dense("o overlaps the end of q", &a, PBSA_ERROR_INVALID_VALUE, "o overlaps q");
    a.q.offset = Q_ELEMENTS;
    a.o.offset = 1;
    expect_dense("o overlaps the start of q", &a, PBSA_ERROR_INVALID_VALUE, "o overlaps q");

    a = valid_args();
    a.k.buffer = a.o.buffer = buffers[BUFFER_SHARED].mem;
    a.k.offset = Q_ELEMENTS / 2;
    expect_dense("o overlaps k", &a, PBSA_ERROR_INVALID_VALUE, "o overlaps k");
    a = valid_args();
    a.v.buffer = a.o.buffer;
    expect_dense("o overlaps v", &a, PBSA_ERROR_INVALID_VALUE, "o overlaps v");

    /* o overlapping itself: rows closer than head_dim, or a zero stride. */
    a = valid_args();
    a.o.stride_seq = D / 2;
    expect_dense("o rows overlap", &a, PBSA_ERROR_INVALID_VALUE, "o.stride_seq");
    a = valid_args();
    a.o.stride_head = 0;
    expect_dense("o heads alias", &a, PBSA_ERROR_INVALID_VALUE, "o.stride_head");
    a = valid_args();
    a.o.stride_head = D;
    a.o.stride_seq = D;
    expect_dense("o heads and rows interleave", &a, PBSA_ERROR_INVALID_VALUE, "o.stride_");
}

static void test_params(void **state)
{
    (void)state;
    const float bad[4] = {NAN, -1.0f, INFINITY, -INFINITY};
    for (int i = 0; i < 4; i++) {
        dense_args a = valid_args();
        a.params.scale = bad[i];
        expect_dense("params->scale", &a, PBSA_ERROR_INVALID_VALUE, "params->scale");
    }
}

/* The log-sum-exp output: a buffer too small for its offset and extent, an offset past 64 bits,
 * a buffer of another context, memory shared with o or an input. */
static void test_lse(void **state)
{
    (void)state;
    dense_args a = valid_args();
    a.params.lse = buffers[BUFFER_LSE].mem;
    a.params.lse_offset = 1; /* the buffer holds B x HQ x SQ floats */
    expect_dense("lse one past the end", &a, PBSA_ERROR_BUFFER_TOO_SMALL, "params->lse");
    a.params.lse_offset = UINT64_MAX - 4;
    expect_dense("lse offset overflows", &a, PBSA_ERROR_SIZE_OVERFLOW, "params->lse");
    a = valid_args();
    a.params.lse = foreign_buffer;
    expect_dense("lse of another context", &a, PBSA_ERROR_WRONG_DEVICE, "params->lse");
    a.params.lse = a.o.buffer;
    expect_dense("lse in o", &a, PBSA_ERROR_INVALID_VALUE, "params->lse");
    a.params.lse = a.k.buffer;
    expect_dense("lse in k", &a, PBSA_ERROR_INVALID_VALUE, "params->lse overlaps k");
}

static void test_foreign_context(void **state)
{
    (void)state;
    dense_args a = valid_args();
    expect_dense_ex("queue of another context", fixture.ctx, foreign_queue, &a.q, &a.k, &a.v,
                    &a.o, &a.params, PBSA_ERROR_WRONG_DEVICE, "queue");
    const char *names[4] = {"q.buffer", "k.buffer", "v.buffer", "o.buffer"};
    for (int i = 0; i < 4; i++) {
        a = valid_args();
        pbsa_tensor *t[4] = {&a.q, &a.k, &a.v, &a.o};
        t[i]->buffer = foreign_buffer;
        expect_dense(names[i], &a, PBSA_ERROR_WRONG_DEVICE, names[i]);
    }
}

/* The error of one thread is not the error of another. */
static void *read_error_in_thread(void *arg)
{
    const char **out = arg;
    *out = pbsa_context_last_error(fixture.ctx);
    return NULL;
}

static void test_error_state(void **state)
{
    (void)state;
    dense_args a = valid_args();
    a.params.scale = -2.0f;
    expect_dense("params->scale", &a, PBSA_ERROR_INVALID_VALUE, "params->scale");
    const char *seen = NULL;
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, read_error_in_thread, &seen), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_non_null(seen);
    assert_string_equal(seen, "");
    assert_true(strlen(pbsa_context_last_error(fixture.ctx)) > 0);

    /* Without a callback nothing is logged, and the message is still kept. */
    pbsa_set_log_callback(NULL, NULL);
    int before = logged.count;
    assert_int_equal(pbsa_dense_attention(fixture.ctx, NULL, &a.q, &a.k, &a.v, &a.o, NULL, NULL),
                     PBSA_ERROR_NULL_ARGUMENT);
    pbsa_set_log_callback(log_callback, NULL);
    assert_int_equal(logged.count, before);
    assert_non_null(strstr(pbsa_context_last_error(fixture.ctx), "queue"));

    /* A successful call clears the last error. */
    a = valid_args();
    assert_int_equal(pbsa_dense_attention(fixture.ctx, fixture.queue, &a.q, &a.k, &a.v, &a.o,
                                          &a.params, NULL),
                     PBSA_SUCCESS);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_string_equal(pbsa_context_last_error(fixture.ctx), "");
    restore_buffers();
}

/* Another device than fixture.device: any other device, else a sub-device. NULL if none. */
static cl_device_id other_device(bool *is_sub_device)
{
    *is_sub_device = false;
    cl_platform_id platforms[16];
    cl_uint platform_count = 0;
    if (clGetPlatformIDs(16, platforms, &platform_count) != CL_SUCCESS)
        return NULL;
    for (cl_uint p = 0; p < platform_count && p < 16; p++) {
        cl_device_id devices[64];
        cl_uint count = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 64, devices, &count) != CL_SUCCESS)
            continue;
        for (cl_uint d = 0; d < count && d < 64; d++)
            if (devices[d] != fixture.device)
                return devices[d];
    }
    cl_uint units = 0;
    clGetDeviceInfo(fixture.device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units, &units, NULL);
    if (units < 2)
        return NULL;
    /* One sub-device of one compute unit. */
    const cl_device_partition_property properties[] = {
        CL_DEVICE_PARTITION_BY_COUNTS, 1, CL_DEVICE_PARTITION_BY_COUNTS_LIST_END, 0};
    cl_device_id sub = NULL;
    cl_uint made = 0;
    if (clCreateSubDevices(fixture.device, properties, 1, &sub, &made) != CL_SUCCESS || made != 1)
        return NULL;
    *is_sub_device = true;
    return sub;
}

static void expect_create_failure(const char *what, cl_context cl_ctx, cl_device_id device,
                                  const pbsa_context_options *options, bool with_out,
                                  int expected, const char *needle)
{
    pbsa_context *out = (pbsa_context *)&fixture; /* any non-NULL value, to see it reset */
    int before = logged.count;
    int got = pbsa_context_create(cl_ctx, device, options, with_out ? &out : NULL);
    if (got == PBSA_SUCCESS)
        pbsa_context_release(out);
    check_failure(what, got, expected, NULL, needle, before, NULL);
    if (with_out)
        assert_null(out);
}

static void test_context_create(void **state)
{
    (void)state;
    expect_create_failure("out NULL", fixture.cl_ctx, fixture.device, NULL, false,
                          PBSA_ERROR_NULL_ARGUMENT, "out");
    expect_create_failure("cl_ctx NULL", NULL, fixture.device, NULL, true,
                          PBSA_ERROR_NULL_ARGUMENT, "cl_ctx");
    expect_create_failure("device NULL", fixture.cl_ctx, NULL, NULL, true,
                          PBSA_ERROR_NULL_ARGUMENT, "device");
    const size_t bad_sizes[3] = {1, sizeof(pbsa_context_options) + 8, SIZE_MAX};
    for (int i = 0; i < 3; i++) {
        pbsa_context_options options = {.struct_size = bad_sizes[i]};
        expect_create_failure("options->struct_size", fixture.cl_ctx, fixture.device, &options,
                              true, PBSA_ERROR_INVALID_VALUE, "options->struct_size");
    }
    /* 0, the real size and the size of the first version (before disable_kernel_cache) are
     * accepted. */
    const size_t good_sizes[3] = {0, sizeof(pbsa_context_options),
                                  offsetof(pbsa_context_options, disable_kernel_cache)};
    for (int i = 0; i < 3; i++) {
        pbsa_context_options options = {.struct_size = good_sizes[i], .force_portable = 1};
        pbsa_context *ctx = NULL;
        assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, &options, &ctx),
                         PBSA_SUCCESS);
        assert_non_null(ctx);
        assert_string_equal(pbsa_context_last_error(NULL), "");
        pbsa_context_release(ctx);
    }

    bool is_sub_device;
    cl_device_id other = other_device(&is_sub_device);
    if (other) {
        expect_create_failure("device not in cl_ctx", fixture.cl_ctx, other, NULL, true,
                              PBSA_ERROR_WRONG_DEVICE, "device");
        if (is_sub_device)
            clReleaseDevice(other);
    } else {
        printf("device not in cl_ctx: skipped (only one device, which cannot be partitioned)\n");
    }

    pbsa_context_release(NULL);
}

static void test_other_entry_points(void **state)
{
    (void)state;
    pbsa_device_info info;
    int before = logged.count;
    int got = pbsa_context_device_info(NULL, &info);
    check_failure("device_info ctx NULL", got, PBSA_ERROR_NULL_ARGUMENT, NULL, "ctx", before,
                  NULL);
    before = logged.count;
    got = pbsa_context_device_info(fixture.ctx, NULL);
    check_failure("device_info out NULL", got, PBSA_ERROR_NULL_ARGUMENT, fixture.ctx, "out",
                  before, NULL);
    before = logged.count;
    got = pbsa_query_device_info(NULL, &info);
    check_failure("query_device_info device NULL", got, PBSA_ERROR_NULL_ARGUMENT, NULL, "device",
                  before, NULL);
    before = logged.count;
    got = pbsa_query_device_info(fixture.device, NULL);
    check_failure("query_device_info out NULL", got, PBSA_ERROR_NULL_ARGUMENT, NULL, "out",
                  before, NULL);
    assert_int_equal(pbsa_query_device_info(fixture.device, &info), PBSA_SUCCESS);
    assert_true(strlen(info.name) > 0);

    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    before = logged.count;
    got = pbsa_helper_create_cl_context(NULL, NULL, &device);
    check_failure("helper cl_ctx_out NULL", got, PBSA_ERROR_NULL_ARGUMENT, NULL, "cl_ctx_out",
                  before, NULL);
    before = logged.count;
    got = pbsa_helper_create_cl_context(NULL, &cl_ctx, NULL);
    check_failure("helper device_out NULL", got, PBSA_ERROR_NULL_ARGUMENT, NULL, "device_out",
                  before, NULL);
    const char *selectors[3] = {"no-such-device-name", "99:0", "4096"};
    for (int i = 0; i < 3; i++) {
        before = logged.count;
        got = pbsa_helper_create_cl_context(selectors[i], &cl_ctx, &device);
        check_failure("helper selector", got, PBSA_ERROR_NO_DEVICE, NULL, selectors[i], before,
                      NULL);
        assert_null(cl_ctx);
        assert_null(device);
    }

    assert_int_equal(pbsa_dtype_size(PBSA_DTYPE_F32), 4);
    assert_int_equal(pbsa_dtype_size(PBSA_DTYPE_F16), 2);
    assert_int_equal(pbsa_dtype_size(PBSA_DTYPE_BF16), 2);
    assert_int_equal(pbsa_dtype_size((pbsa_dtype)3), 0);
}

static void test_status_strings_and_version(void **state)
{
    (void)state;
    const int codes[] = {
        PBSA_SUCCESS,
        PBSA_ERROR_NULL_ARGUMENT,
        PBSA_ERROR_INVALID_VALUE,
        PBSA_ERROR_SHAPE_MISMATCH,
        PBSA_ERROR_DTYPE_MISMATCH,
        PBSA_ERROR_BUFFER_TOO_SMALL,
        PBSA_ERROR_SIZE_OVERFLOW,
        PBSA_ERROR_WRONG_DEVICE,
        PBSA_ERROR_UNSUPPORTED_HEAD_DIM,
        PBSA_ERROR_UNSUPPORTED_DTYPE,
        PBSA_ERROR_UNSUPPORTED_DEVICE,
        PBSA_ERROR_BUILD_FAILED,
        PBSA_ERROR_OUT_OF_HOST_MEMORY,
        PBSA_ERROR_NO_DEVICE,
    };
    const size_t count = sizeof codes / sizeof codes[0];
    const char *unknown = pbsa_status_string(123456);
    assert_non_null(unknown);
    assert_string_equal(unknown, "unknown status");
    for (size_t i = 0; i < count; i++) {
        const char *text = pbsa_status_string(codes[i]);
        assert_non_null(text);
        assert_true(strlen(text) > 0);
        if (strcmp(text, unknown) == 0)
            fail_msg("status %d has no text of its own", codes[i]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(text, pbsa_status_string(codes[j])) == 0)
                fail_msg("statuses %d and %d share the text \"%s\"", codes[i], codes[j], text);
    }
    /* OpenCL errors pass through with a text of their own. */
    const char *opencl = pbsa_status_string(CL_OUT_OF_RESOURCES);
    assert_non_null(opencl);
    assert_true(strlen(opencl) > 0);
    assert_string_not_equal(opencl, unknown);
    assert_non_null(pbsa_status_string(-1));
    assert_non_null(pbsa_status_string(INT32_MIN));
    assert_non_null(pbsa_status_string(INT32_MAX));

    assert_int_equal(pbsa_version_number(), PBSA_VERSION_NUMBER);
    char expected[32];
    snprintf(expected, sizeof expected, "%d.%d.%d", PBSA_VERSION_MAJOR, PBSA_VERSION_MINOR,
             PBSA_VERSION_PATCH);
    assert_string_equal(pbsa_version_string(), expected);
}

/* A failed build returns PBSA_ERROR_BUILD_FAILED with its log, and is remembered: the same
 * request fails again at once, without compiling. */
static void test_build_failures(void **state)
{
    (void)state;
    pbsa_context *ctx = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                     PBSA_SUCCESS);
    assert_string_equal(pbsa_context_build_log(ctx), "");
    assert_string_equal(pbsa_context_build_log(NULL), "");

    static const char *const missing[] = {"no_such_kernel.cl"};
    cl_kernel kernel = (cl_kernel)&fixture;
    int before = logged.count;
    int got = pbsa_get_kernel(ctx, missing, 1, "", "anything", &kernel);
    check_failure("missing source", got, PBSA_ERROR_BUILD_FAILED, ctx, "no_such_kernel.cl",
                  before, NULL);
    assert_null(kernel);
    before = logged.count;
    got = pbsa_get_kernel(ctx, missing, 1, "", "anything", &kernel);
    check_failure("missing source again", got, PBSA_ERROR_BUILD_FAILED, ctx, "earlier", before,
                  NULL);

    /* common.cl does not build for dtypes it has no storage for. */
    static const char *const common[] = {"common.cl"};
    static const char unknown[] = "-DQ_DTYPE=f64 -DKV_DTYPE=f64 -DO_DTYPE=f64";
    before = logged.count;
    got = pbsa_get_kernel(ctx, common, 1, unknown, "anything", &kernel);
    check_failure("unknown dtype", got, PBSA_ERROR_BUILD_FAILED, ctx, "pbsa_context_build_log",
                  before, NULL);
    assert_null(kernel);
    const char *log = pbsa_context_build_log(ctx);
    assert_true(strlen(log) > 0);
    printf("build log of the failed build: %.200s\n", log);
    before = logged.count;
    got = pbsa_get_kernel(ctx, common, 1, unknown, "anything", &kernel);
    check_failure("unknown dtype again", got, PBSA_ERROR_BUILD_FAILED, ctx, "earlier", before,
                  NULL);
    assert_null(kernel);
    assert_ptr_equal(pbsa_context_build_log(ctx), log);

    /* The same source with valid options builds; a missing kernel name is an OpenCL error. */
    before = logged.count;
    got = pbsa_get_kernel(ctx, common, 1, "-DQ_DTYPE=f32 -DKV_DTYPE=f16 -DO_DTYPE=bf16",
                          "no_such_kernel", &kernel);
    check_failure("missing kernel name", got, CL_INVALID_KERNEL_NAME, ctx, "no_such_kernel",
                  before, NULL);
    assert_null(kernel);
    pbsa_context_release(ctx);
}

/* The public path: a kernel that does not compile (loaded through PBSA_KERNEL_DIR) fails the call
 * with PBSA_ERROR_BUILD_FAILED and leaves every buffer as it was. */
static void test_build_failure_through_api(void **state)
{
    (void)state;
    char dir[] = "/tmp/pbsa-broken-kernels-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/dense_attention.cl", dir);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs("kernel void dense_attention(global float *x) { this does not compile; }\n", file);
    fclose(file);
    const char *previous = getenv("PBSA_KERNEL_DIR");
    char *saved = previous ? strdup(previous) : NULL;
    setenv("PBSA_KERNEL_DIR", dir, 1);

    /* A fresh context, so the good program compiled earlier is not reused. */
    pbsa_context *ctx = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                     PBSA_SUCCESS);
    dense_args a = valid_args();
    for (int attempt = 0; attempt < 2; attempt++)
        expect_dense_ex("broken kernel", ctx, fixture.queue, &a.q, &a.k, &a.v, &a.o, &a.params,
                        PBSA_ERROR_BUILD_FAILED, attempt == 0 ? "dense_attention.cl" : "earlier");
    assert_true(strlen(pbsa_context_build_log(ctx)) > 0);
    pbsa_context_release(ctx);

    if (saved)
        setenv("PBSA_KERNEL_DIR", saved, 1);
    else
        unsetenv("PBSA_KERNEL_DIR");
    free(saved);
    remove(path);
    rmdir(dir);
}

static int open_foreign_context(void)
{
    cl_platform_id platform;
    cl_int err = clGetDeviceInfo(fixture.device, CL_DEVICE_PLATFORM, sizeof platform, &platform,
                                 NULL);
    if (err != CL_SUCCESS)
        return 1;
    cl_context_properties properties[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)platform,
                                          0};
    foreign_ctx = clCreateContext(properties, 1, &fixture.device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return 1;
    foreign_queue = clCreateCommandQueue(foreign_ctx, fixture.device, 0, &err);
    if (err != CL_SUCCESS)
        return 1;
    /* Large enough for any of the four tensors, so only its context is wrong. */
    foreign_buffer = clCreateBuffer(foreign_ctx, CL_MEM_READ_WRITE,
                                    2 * (size_t)Q_ELEMENTS * sizeof(float), NULL, &err);
    return err != CL_SUCCESS;
}

static void close_all(void)
{
    for (int i = 0; i < BUFFER_COUNT; i++) {
        if (buffers[i].mem)
            clReleaseMemObject(buffers[i].mem);
        free(buffers[i].expected);
    }
    if (foreign_buffer)
        clReleaseMemObject(foreign_buffer);
    if (foreign_queue)
        clReleaseCommandQueue(foreign_queue);
    if (foreign_ctx)
        clReleaseContext(foreign_ctx);
    support_device_close(&fixture);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    pbsa_set_log_callback(log_callback, NULL);
    const size_t f = sizeof(float);
    int failed = create_tracked(&buffers[BUFFER_Q], Q_ELEMENTS * f, 1, false);
    failed |= create_tracked(&buffers[BUFFER_K], KV_ELEMENTS * f, 2, false);
    failed |= create_tracked(&buffers[BUFFER_V], KV_ELEMENTS * f, 3, false);
    failed |= create_tracked(&buffers[BUFFER_O], Q_ELEMENTS * f, 0, true);
    failed |= create_tracked(&buffers[BUFFER_SHARED], 2 * Q_ELEMENTS * f, 4, false);
    failed |= create_tracked(&buffers[BUFFER_LSE], B * HQ * SQ * f, 0, true);
    failed |= open_foreign_context();
    if (failed) {
        fprintf(stderr, "cannot create the test buffers\n");
        close_all();
        return 1;
    }

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_call_succeeds),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_head_dim),
        cmocka_unit_test(test_shape_mismatches),
        cmocka_unit_test(test_sizes_and_strides),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_buffer_too_small),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_lse),
        cmocka_unit_test(test_foreign_context),
        cmocka_unit_test(test_error_state),
        cmocka_unit_test(test_context_create),
        cmocka_unit_test(test_other_entry_points),
        cmocka_unit_test(test_status_strings_and_version),
        cmocka_unit_test(test_build_failures),
        cmocka_unit_test(test_build_failure_through_api),
    };
    int result = cmocka_run_group_tests_name("api_errors", tests, NULL, NULL);
    pbsa_set_log_callback(NULL, NULL);
    close_all();
    return result;
}
