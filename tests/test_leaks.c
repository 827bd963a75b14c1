/* Leaks and failure paths. Every public operation, run in a loop of context creation and release,
 * must give back every host block and OpenCL reference it took; so must every way it can fail:
 * bad arguments, kernels that do not compile (PBSA_KERNEL_DIR), and each host allocation and each
 * OpenCL call failing in turn (injected through tests/fault_hooks.c). A failing call must leave
 * the caller's buffers as they were (unless an enqueue itself failed, which the header allows),
 * pass OpenCL errors through unchanged, and a call that succeeds despite an injected failure of
 * an optional query must still give the right result. */
#include "device.h"
#include "fault_hooks.h"
#include "launch/kernel_source.h"

#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <clblast_c.h>

/* Dense: q [1, 2, 64, 64], k and v [1, 1, 64, 64]. PBS: q [1, 2, 192, 64], k and v
 * [1, 1, 192, 64], block 32, segment 64: three segments, so every PBS kernel runs. */
enum { HQ = 2, HKV = 1, D = 64, S_DENSE = 64, S_PBS = 192, BLOCK = 32, SEGMENT = 64 };
enum { NQB = S_PBS / BLOCK, NKB = S_PBS / BLOCK };
enum { PI_COUNT = HQ * S_PBS, ROWS = HQ * NQB };

static support_device fixture;

typedef struct buffer {
    cl_mem mem;
    size_t bytes;
} buffer;

/* Inputs (never written by the library) and outputs (poisoned before every call). */
static struct {
    buffer q, k, v, pi_in, counts_in, blocks_in;
    buffer o, pi_out, counts_out, blocks_out, workspace;
    unsigned char host[4 * ROWS * NKB]; /* pbsa_workspace_read's destination */
    size_t workspace_bytes;
} io;

static pbsa_params pbs_params(void)
{
    pbsa_params p = pbsa_params_default();
    p.block_size = BLOCK;
    p.segment_size = SEGMENT;
    return p;
}

static pbsa_tensor tensor(const buffer *b, int heads, int seq)
{
    return pbsa_tensor_bhsd(b->mem, PBSA_DTYPE_F32, 1, heads, seq, D);
}

/* ---- the operations -------------------------------------------------------------------------- */

/* Waits for and releases the event a successful call returned. */
static int settle(int status, cl_event event)
{
    if (status == PBSA_SUCCESS && event) {
        assert_int_equal(clWaitForEvents(1, &event), CL_SUCCESS);
        clReleaseEvent(event);
    }
    assert_true(status == PBSA_SUCCESS || event == NULL);
    return status;
}

static int op_dense(pbsa_context *ctx)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_DENSE), k = tensor(&io.k, HKV, S_DENSE),
                v = tensor(&io.v, HKV, S_DENSE), o = tensor(&io.o, HQ, S_DENSE);
    pbsa_dense_params params = {.causal = 1};
    cl_event event = NULL;
    int status = pbsa_dense_attention(ctx, fixture.queue, &q, &k, &v, &o, &params, &event);
    return settle(status, event);
}

static int attention(pbsa_context *ctx, cl_mem workspace)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS),
                v = tensor(&io.v, HKV, S_PBS), o = tensor(&io.o, HQ, S_PBS);
    pbsa_params p = pbs_params();
    cl_event event = NULL;
    int status = pbsa_attention(ctx, fixture.queue, &q, &k, &v, &o, &p, workspace, &event);
    return settle(status, event);
}

static int op_attention(pbsa_context *ctx) { return attention(ctx, io.workspace.mem); }
static int op_attention_own_workspace(pbsa_context *ctx) { return attention(ctx, NULL); }

static int op_permutation(pbsa_context *ctx)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS);
    pbsa_params p = pbs_params();
    cl_event event = NULL;
    int status = pbsa_permutation(ctx, fixture.queue, &q, &k, &p, io.pi_out.mem, 0, NULL,
                                   &event);
    return settle(status, event);
}

static int op_selection(pbsa_context *ctx)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS);
    pbsa_params p = pbs_params();
    pbsa_block_list out = {io.counts_out.mem, io.blocks_out.mem, 0, 0};
    cl_event event = NULL;
    int status = pbsa_block_selection(ctx, fixture.queue, &q, &k, &p, io.pi_in.mem, 0, &out,
                                       io.workspace.mem, &event);
    return settle(status, event);
}

static int sparse(pbsa_context *ctx, cl_mem pi)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS),
                v = tensor(&io.v, HKV, S_PBS), o = tensor(&io.o, HQ, S_PBS);
    pbsa_params p = pbs_params();
    pbsa_block_list list = {io.counts_in.mem, io.blocks_in.mem, 0, 0};
    cl_event event = NULL;
    int status = pbsa_sparse_attention(ctx, fixture.queue, &q, &k, &v, &o, &p, pi, 0, &list,
                                        &event);
    return settle(status, event);
}

static int op_sparse(pbsa_context *ctx) { return sparse(ctx, io.pi_in.mem); }
static int op_sparse_identity(pbsa_context *ctx) { return sparse(ctx, NULL); }

static int op_workspace_read(pbsa_context *ctx)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS);
    pbsa_params p = pbs_params();
    size_t size = 0;
    return pbsa_workspace_read(ctx, fixture.queue, &q, &k, &p, io.workspace.mem,
                               PBSA_PART_BLOCKS, io.host, sizeof io.host, &size);
}

static int op_workspace_size(pbsa_context *ctx)
{
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS);
    pbsa_params p = pbs_params();
    size_t bytes = 0;
    int status = pbsa_workspace_size(ctx, &q, &k, &p, &bytes);
    assert_true(status != PBSA_SUCCESS || bytes == io.workspace_bytes);
    return status;
}

/* Set by op_context_create when its context left the tensor-core path that the fixture's takes:
 * a failure inside a probe is documented to fall back, from wgmma to mma.sync and from mma.sync
 * to the portable kernels. */
static bool probe_fell_back;

static int op_context_create(pbsa_context *ctx)
{
    (void)ctx;
    pbsa_context *mine = (pbsa_context *)&fixture;
    int status = pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &mine);
    assert_true(status == PBSA_SUCCESS ? mine != NULL : mine == NULL);
    probe_fell_back = status == PBSA_SUCCESS && pbsa_context_tensor_core_path(mine) <
                                                    pbsa_context_tensor_core_path(fixture.ctx);
    pbsa_context_release(mine);
    return status;
}

static int op_helper_context(pbsa_context *ctx)
{
    (void)ctx;
    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    int status = pbsa_helper_create_cl_context(NULL, &cl_ctx, &device);
    if (status == PBSA_SUCCESS) {
        assert_non_null(cl_ctx);
        clReleaseContext(cl_ctx);
    } else {
        assert_null(cl_ctx);
    }
    return status;
}

typedef struct operation {
    const char *name;
    int (*run)(pbsa_context *ctx);
    buffer *outputs[3]; /* caller buffers the call writes (NULL-terminated) */
    bool writes_host;   /* io.host */
    bool builds;        /* compiles kernels */
} operation;

static const operation operations[] = {
    {"pbsa_dense_attention", op_dense, {&io.o}, false, true},
    {"pbsa_attention", op_attention, {&io.o, &io.workspace}, false, true},
    {"pbsa_attention (own workspace)", op_attention_own_workspace, {&io.o}, false, true},
    {"pbsa_permutation", op_permutation, {&io.pi_out}, false, true},
    {"pbsa_block_selection", op_selection, {&io.counts_out, &io.blocks_out, &io.workspace}, false,
     true},
    {"pbsa_sparse_attention", op_sparse, {&io.o}, false, true},
    {"pbsa_sparse_attention (pi NULL)", op_sparse_identity, {&io.o}, false, true},
    {"pbsa_workspace_read", op_workspace_read, {NULL}, true, false},
    {"pbsa_workspace_size", op_workspace_size, {NULL}, false, false},
    {"pbsa_context_create", op_context_create, {NULL}, false, false},
    {"pbsa_helper_create_cl_context", op_helper_context, {NULL}, false, false},
};
enum { OPERATION_COUNT = sizeof operations / sizeof operations[0] };

/* What each operation wrote on its first successful run, to compare later runs with. */
static struct {
    unsigned char *bytes[3];
    unsigned char host[sizeof io.host];
} expected[OPERATION_COUNT];

/* ---- buffers --------------------------------------------------------------------------------- */

static buffer make_buffer(size_t bytes, const void *data)
{
    cl_int err;
    buffer b = {clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | (data ? CL_MEM_COPY_HOST_PTR : 0),
                               bytes, (void *)data, &err),
                bytes};
    assert_int_equal(err, CL_SUCCESS);
    return b;
}

static unsigned char *read_buffer(const buffer *b)
{
    unsigned char *bytes = malloc(b->bytes);
    assert_non_null(bytes);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, b->mem, CL_TRUE, 0, b->bytes, bytes, 0,
                                         NULL, NULL),
                     CL_SUCCESS);
    return bytes;
}

/* Fills a buffer with 0xff bytes (NaN for every dtype, -1 for cl_int). */
static void poison(const buffer *b)
{
    unsigned char *bytes = malloc(b->bytes);
    assert_non_null(bytes);
    memset(bytes, 0xff, b->bytes);
    assert_int_equal(clEnqueueWriteBuffer(fixture.queue, b->mem, CL_TRUE, 0, b->bytes, bytes, 0,
                                          NULL, NULL),
                     CL_SUCCESS);
    free(bytes);
}

static void poison_outputs(const operation *op)
{
    for (int i = 0; i < 3 && op->outputs[i]; i++)
        poison(op->outputs[i]);
    memset(io.host, 0xff, sizeof io.host);
}

static bool is_poison(const unsigned char *bytes, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != 0xff)
            return false;
    return true;
}

/* After a call: its outputs still poison (untouched), or equal to what the first successful run
 * wrote (same). */
static void check_outputs(const char *what, const operation *op, bool untouched)
{
    size_t index = (size_t)(op - operations);
    for (int i = 0; i < 3 && op->outputs[i]; i++) {
        unsigned char *now = read_buffer(op->outputs[i]);
        size_t size = op->outputs[i]->bytes;
        if (untouched && !is_poison(now, size))
            fail_msg("%s: %s failed but wrote its output %d", what, op->name, i);
        if (!untouched && expected[index].bytes[i] &&
            memcmp(now, expected[index].bytes[i], size) != 0)
            fail_msg("%s: %s succeeded but output %d differs from the first run", what, op->name,
                     i);
        free(now);
    }
    if (op->writes_host) {
        if (untouched && !is_poison(io.host, sizeof io.host))
            fail_msg("%s: %s failed but wrote the host buffer", what, op->name);
        if (!untouched && memcmp(io.host, expected[index].host, sizeof io.host) != 0)
            fail_msg("%s: %s succeeded but read something else than the first run", what,
                     op->name);
    }
}

/* ---- counting -------------------------------------------------------------------------------- */

/* What must come back to where it was: the hooks' exact counts of host blocks and OpenCL
 * references, and the implementation's reference counts of the caller's context and buffers
 * (which every program, kernel and sub-buffer of theirs holds, whoever made it). The queue's own
 * count is left out: the implementation drops its references to finished commands at a time of
 * its choosing, and the events that would hold it are counted by the hooks. */
typedef struct counts {
    long allocations;
    long cl_references;
    cl_uint context_refs;
    cl_uint buffer_refs[16];
} counts;

static buffer *all_buffers[] = {&io.q, &io.k, &io.v, &io.pi_in, &io.counts_in, &io.blocks_in,
                                &io.o, &io.pi_out, &io.counts_out, &io.blocks_out,
                                &io.workspace};
enum { BUFFER_COUNT = sizeof all_buffers / sizeof all_buffers[0] };

static counts take_counts(void)
{
    counts c = {hooks_live_allocations(), hooks_live_cl_references(), 0, {0}};
    assert_int_equal(clGetContextInfo(fixture.cl_ctx, CL_CONTEXT_REFERENCE_COUNT,
                                      sizeof c.context_refs, &c.context_refs, NULL),
                     CL_SUCCESS);
    for (int i = 0; i < BUFFER_COUNT; i++)
        assert_int_equal(clGetMemObjectInfo(all_buffers[i]->mem, CL_MEM_REFERENCE_COUNT,
                                            sizeof c.buffer_refs[i], &c.buffer_refs[i], NULL),
                         CL_SUCCESS);
    return c;
}

/* The counts once the implementation has let go of the caller's buffers and the library of its
 * kernels: the implementation may keep references to finished commands, and through them to
 * their buffers, a little after clFinish() returns, and the library releases each kernel from
 * its launch's completion callback. Each caller buffer has the test's own reference alone when
 * idle; the rest must hold still for 3 ms. Waits up to two seconds. */
static counts settled_counts(void)
{
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    counts c = take_counts();
    for (int wait = 0, still = 0; wait < 2000 && still < 3; wait++) {
        usleep(1000);
        counts next = take_counts();
        bool idle = true;
        for (int i = 0; i < BUFFER_COUNT; i++)
            idle = idle && next.buffer_refs[i] == 1;
        still = idle && memcmp(&next, &c, sizeof c) == 0 ? still + 1 : 0;
        c = next;
    }
    return c;
}

static bool same_counts(const counts *a, const counts *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

/* Checks that everything is back to before. The implementation may drop its own references to
 * finished commands a little after clFinish() returns, so it waits up to two seconds. */
static void check_no_leak(const char *what, const counts *before)
{
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    counts now = take_counts();
    for (int wait = 0; wait < 200 && !same_counts(&now, before); wait++) {
        usleep(10000);
        now = take_counts();
    }
    if (same_counts(&now, before))
        return;
    fprintf(stderr, "%s: leak: host blocks %ld -> %ld, OpenCL references %ld -> %ld, context "
                    "references %u -> %u\n",
            what, before->allocations, now.allocations, before->cl_references, now.cl_references,
            before->context_refs, now.context_refs);
    for (int i = 0; i < BUFFER_COUNT; i++)
        if (now.buffer_refs[i] != before->buffer_refs[i])
            fprintf(stderr, "  caller buffer %d: references %u -> %u\n", i,
                    before->buffer_refs[i], now.buffer_refs[i]);
    hooks_print_live_cl(stderr);
    fail_msg("%s leaks", what);
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static float *random_floats(size_t count, uint64_t seed)
{
    float *x = malloc(count * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < count; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    }
    return x;
}

static int setup(void **state)
{
    (void)state;
    float *q = random_floats((size_t)HQ * S_PBS * D, 1), *k = random_floats((size_t)S_PBS * D, 2),
          *v = random_floats((size_t)S_PBS * D, 3);
    io.q = make_buffer((size_t)HQ * S_PBS * D * 4, q);
    io.k = make_buffer((size_t)S_PBS * D * 4, k);
    io.v = make_buffer((size_t)S_PBS * D * 4, v);
    free(q);
    free(k);
    free(v);
    io.o = make_buffer((size_t)HQ * S_PBS * D * 4, NULL);
    io.pi_out = make_buffer(PI_COUNT * 4, NULL);
    io.counts_out = make_buffer(ROWS * 4, NULL);
    io.blocks_out = make_buffer((size_t)ROWS * NKB * 4, NULL);
    pbsa_tensor tq = tensor(&io.q, HQ, S_PBS), tk = tensor(&io.k, HKV, S_PBS);
    pbsa_params p = pbs_params();
    assert_int_equal(pbsa_workspace_size(fixture.ctx, &tq, &tk, &p, &io.workspace_bytes),
                     PBSA_SUCCESS);
    io.workspace = make_buffer(io.workspace_bytes, NULL);

    /* The inputs of the later stages: a permutation and block lists of the device's own. */
    assert_int_equal(pbsa_permutation(fixture.ctx, fixture.queue, &tq, &tk, &p, io.pi_out.mem, 0,
                                      NULL, NULL),
                     PBSA_SUCCESS);
    unsigned char *pi = read_buffer(&io.pi_out);
    io.pi_in = make_buffer(PI_COUNT * 4, pi);
    free(pi);
    pbsa_block_list list = {io.counts_out.mem, io.blocks_out.mem, 0, 0};
    assert_int_equal(pbsa_block_selection(fixture.ctx, fixture.queue, &tq, &tk, &p, io.pi_in.mem,
                                          0, &list, NULL, NULL),
                     PBSA_SUCCESS);
    unsigned char *counts = read_buffer(&io.counts_out), *blocks = read_buffer(&io.blocks_out);
    io.counts_in = make_buffer(ROWS * 4, counts);
    io.blocks_in = make_buffer((size_t)ROWS * NKB * 4, blocks);
    free(counts);
    free(blocks);

    /* Every operation once, for the expected outputs (the workspace read follows the attention
     * that fills the workspace). */
    for (int i = 0; i < OPERATION_COUNT; i++) {
        const operation *op = &operations[i];
        if (op->run == op_workspace_read)
            assert_int_equal(op_attention(fixture.ctx), PBSA_SUCCESS);
        poison_outputs(op);
        int status = op->run(fixture.ctx);
        if (status != PBSA_SUCCESS)
            fail_msg("%s: %d (%s): %s", op->name, status, pbsa_status_string(status),
                     pbsa_context_last_error(fixture.ctx));
        for (int b = 0; b < 3 && op->outputs[b]; b++)
            expected[i].bytes[b] = read_buffer(op->outputs[b]);
        memcpy(expected[i].host, io.host, sizeof io.host);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < OPERATION_COUNT; i++)
        for (int b = 0; b < 3; b++)
            free(expected[i].bytes[b]);
    for (int i = 0; i < BUFFER_COUNT; i++)
        if (all_buffers[i]->mem)
            clReleaseMemObject(all_buffers[i]->mem);
    return 0;
}

/* ---- the tests ------------------------------------------------------------------------------- */

/* Host bytes in use by the whole process (malloc's own count), 0 when unknown (sanitizers replace
 * malloc). */
static size_t process_heap_bytes(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 0;
#else
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#endif
}

static void run_cycle(const char *label)
{
    pbsa_context *ctx = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                     PBSA_SUCCESS);
    for (int i = 0; i < OPERATION_COUNT; i++) {
        const operation *op = &operations[i];
        if (op->run == op_workspace_read)
            assert_int_equal(op_attention(ctx), PBSA_SUCCESS);
        poison_outputs(op);
        int status = op->run(ctx);
        if (status != PBSA_SUCCESS)
            fail_msg("%s, %s: %d (%s): %s", label, op->name, status, pbsa_status_string(status),
                     pbsa_context_last_error(ctx));
        assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
        check_outputs(label, op, false);
    }
    pbsa_context_release(ctx);
}

/* Contexts created, used by every operation and released, over and over. */
static void test_cycles(void **state)
{
    (void)state;
    run_cycle("warm-up");
    counts before = settled_counts();
    size_t heap_before = process_heap_bytes();
    enum { CYCLES = 4 };
    for (int cycle = 0; cycle < CYCLES; cycle++) {
        char label[32];
        snprintf(label, sizeof label, "cycle %d", cycle);
        run_cycle(label);
        check_no_leak(label, &before);
    }
    size_t heap_after = process_heap_bytes();
    if (heap_before) {
        /* The library's own blocks are counted exactly above; this bounds everything else,
         * the OpenCL implementation included (PoCL keeps some 30 KB per context), to a little
         * per cycle. */
        long growth = (long)heap_after - (long)heap_before;
        printf("process heap: %+ld bytes over %d cycles\n", growth, CYCLES);
        assert_true(growth < CYCLES * 256 * 1024);
    }

    /* The other PBS methods, where the library has them (chosen by environment variables). */
    static const char *const methods[][2] = {{"PBSA_SCORE_METHOD", "clblast"},
                                             {"PBSA_KV_METHOD", "materialised"}};
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        setenv(methods[m][0], methods[m][1], 1);
        char label[64];
        snprintf(label, sizeof label, "%s=%s", methods[m][0], methods[m][1]);
        before = settled_counts();
        pbsa_context *ctx = NULL;
        assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                         PBSA_SUCCESS);
        pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS);
        pbsa_params p = pbs_params();
        size_t bytes = 0;
        int status = pbsa_workspace_size(ctx, &q, &k, &p, &bytes);
        buffer workspace = {NULL, 0};
        if (status == PBSA_SUCCESS)
            workspace = make_buffer(bytes, NULL);
        for (int i = 0; i < 2 && status == PBSA_SUCCESS; i++) {
            poison(&io.o);
            status = attention(ctx, i ? workspace.mem : NULL);
        }
        char message[1024];
        snprintf(message, sizeof message, "%s", pbsa_context_last_error(ctx));
        if (workspace.mem)
            clReleaseMemObject(workspace.mem);
        pbsa_context_release(ctx);
        unsetenv(methods[m][0]);
        /* CLBlast keeps the programs it compiled, for every user of the process, until told. */
        CLBlastClearCache();
        if (status != PBSA_SUCCESS)
            fail_msg("%s: %d %s", label, status, message);
        check_no_leak(label, &before);
    }
}

/* Completes the user event *arg a little later: the operations wait for their own events. */
static void *open_gate(void *arg)
{
    usleep(2000);
    clSetUserEventStatus(*(cl_event *)arg, CL_COMPLETE);
    return NULL;
}

/* Every enqueueing operation behind a user event, as callers gate work: once the event has
 * completed, the same results as ungated and nothing held (the library releases each kernel when
 * its launch has run: NVIDIA's OpenCL crashed on kernels released while their launch waited). */
static void test_gated_queue(void **state)
{
    (void)state;
    counts before = settled_counts();
    for (int i = 0; i < OPERATION_COUNT; i++) {
        const operation *op = &operations[i];
        if (!op->builds)
            continue;
        poison_outputs(op);
        cl_int err;
        cl_event gate = clCreateUserEvent(fixture.cl_ctx, &err);
        assert_int_equal(err, CL_SUCCESS);
        assert_int_equal(clEnqueueMarkerWithWaitList(fixture.queue, 1, &gate, NULL), CL_SUCCESS);
        pthread_t opener;
        assert_int_equal(pthread_create(&opener, NULL, open_gate, &gate), 0);
        int status = op->run(fixture.ctx);
        pthread_join(opener, NULL);
        clReleaseEvent(gate);
        if (status != PBSA_SUCCESS)
            fail_msg("gated %s: %d (%s): %s", op->name, status, pbsa_status_string(status),
                     pbsa_context_last_error(fixture.ctx));
        assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
        check_outputs("gated queue", op, false);
    }
    check_no_leak("gated queue", &before);
}

/* Bad arguments of every kind, each on every operation it applies to. */
static void test_invalid_arguments(void **state)
{
    (void)state;
    counts before = settled_counts();
    pbsa_tensor q = tensor(&io.q, HQ, S_PBS), k = tensor(&io.k, HKV, S_PBS),
                v = tensor(&io.v, HKV, S_PBS), o = tensor(&io.o, HQ, S_PBS);
    pbsa_params p = pbs_params();
    pbsa_block_list list = {io.counts_in.mem, io.blocks_in.mem, 0, 0};
    pbsa_tensor bad_dim = q, too_long = k, bad_dtype = v;
    bad_dim.head_dim = 80;
    too_long.seq = S_PBS * 4;
    bad_dtype.dtype = (pbsa_dtype)7;
    pbsa_params bad_threshold = p, bad_segment = p;
    bad_threshold.threshold = -1.0f;
    bad_segment.segment_size = 40;
    buffer small = make_buffer(64, NULL);
    /* The context keeps one message per thread that has failed a call on it, until released. */
    assert_int_equal(pbsa_attention(fixture.ctx, fixture.queue, &q, &k, &v, &o, &bad_threshold,
                                    NULL, NULL),
                     PBSA_ERROR_INVALID_VALUE);
    before = settled_counts();
    const cl_command_queue queue = fixture.queue;
    pbsa_context *ctx = fixture.ctx;
    size_t bytes;
    int statuses[] = {
        pbsa_dense_attention(ctx, queue, &bad_dim, &k, &v, &o, NULL, NULL),
        pbsa_dense_attention(ctx, queue, &q, &too_long, &v, &o, NULL, NULL),
        pbsa_dense_attention(ctx, NULL, &q, &k, &v, &o, NULL, NULL),
        pbsa_attention(ctx, queue, &q, &k, &bad_dtype, &o, &p, NULL, NULL),
        pbsa_attention(ctx, queue, &q, &k, &v, &o, &bad_threshold, NULL, NULL),
        pbsa_attention(ctx, queue, &q, &k, &v, &o, &p, small.mem, NULL),
        pbsa_attention(ctx, queue, &q, &k, &v, &q, &p, NULL, NULL),
        pbsa_workspace_size(ctx, &q, &k, &bad_segment, &bytes),
        pbsa_permutation(ctx, queue, &q, &k, &p, small.mem, 0, NULL, NULL),
        pbsa_permutation(ctx, queue, &q, &k, &p, io.pi_out.mem, 0, small.mem, NULL),
        pbsa_block_selection(ctx, queue, &q, &k, &p, io.pi_in.mem, 0, NULL, NULL, NULL),
        pbsa_sparse_attention(ctx, queue, &q, &k, &v, &o, &p, io.pi_in.mem, PI_COUNT, &list,
                              NULL),
        pbsa_workspace_read(ctx, queue, &q, &k, &p, io.workspace.mem, (pbsa_workspace_part)5,
                            io.host, sizeof io.host, NULL),
        pbsa_workspace_read(ctx, queue, &q, &k, &p, io.workspace.mem, PBSA_PART_PERMUTATION,
                            io.host, 4, NULL),
    };
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i] == PBSA_SUCCESS)
            fail_msg("bad call %zu succeeded", i);
    check_no_leak("bad arguments", &before);
    clReleaseMemObject(small.mem);
}

/* Runs op with failure n of target injected; returns whether a failure was delivered (false:
 * the operation made fewer calls than n + 1). Checks status, outputs and leaks. cold: the call
 * runs on a new context, so that it also compiles its kernels. */
static bool inject_one(const operation *op, hooks_target target, long n, bool cold, long *calls)
{
    pbsa_context *ctx = fixture.ctx;
    if (op->run == op_workspace_read)
        assert_int_equal(op_attention(ctx), PBSA_SUCCESS);
    poison_outputs(op);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    /* A cold run's context is released before the comparison, so it is counted out. */
    counts before = settled_counts();
    if (cold)
        assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                         PBSA_SUCCESS);
    hooks_arm(target, n);
    probe_fell_back = false;
    int status = op->run(ctx);
    bool delivered = hooks_disarm();
    *calls = hooks_calls();
    hooks_failure f = hooks_last_failure();
    char what[160];
    snprintf(what, sizeof what, "%s, %s %s failure %ld (%s)", op->name, cold ? "cold" : "warm",
             target == HOOKS_ALLOCATION ? "allocation" : "OpenCL", n,
             delivered ? f.function : "none");
    if (!delivered && status != PBSA_SUCCESS)
        fail_msg("%s: failed without an injected failure: %d %s", what, status,
                 pbsa_context_last_error(ctx));
    if (delivered && f.must_fail && status == PBSA_SUCCESS && !probe_fell_back)
        fail_msg("%s: succeeded although %s failed", what, f.function);
    if (status != PBSA_SUCCESS) {
        const char *message = pbsa_context_last_error(ctx);
        bool allowed;
        if (target == HOOKS_ALLOCATION)
            allowed = status == PBSA_ERROR_OUT_OF_HOST_MEMORY || status == CL_OUT_OF_HOST_MEMORY;
        else if (strcmp(f.function, "clBuildProgram") == 0)
            allowed = status == PBSA_ERROR_BUILD_FAILED;
        else
            allowed = status == f.code || (status == PBSA_ERROR_NO_DEVICE && !f.must_fail);
        if (!allowed)
            fail_msg("%s: status %d (%s), message \"%s\"", what, status,
                     pbsa_status_string(status), message);
    }
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    /* A failing enqueue may leave earlier commands of the operation enqueued (documented). */
    if (status != PBSA_SUCCESS && !f.enqueue)
        check_outputs(what, op, true);
    if (status == PBSA_SUCCESS)
        check_outputs(what, op, false);
    if (cold)
        pbsa_context_release(ctx);
    check_no_leak(what, &before);
    return delivered;
}

static void inject_all(hooks_target target, bool cold)
{
    long total = 0;
    for (int i = 0; i < OPERATION_COUNT; i++) {
        const operation *op = &operations[i];
        if (cold && !op->builds)
            continue;
        long calls = 0, n = 0;
        while (inject_one(op, target, n, cold, &calls) && n < 100000)
            n++;
        printf("%-36s %s %s: %ld calls, each failed in turn\n", op->name, cold ? "cold" : "warm",
               target == HOOKS_ALLOCATION ? "allocations" : "OpenCL calls", n);
        total += n;
    }
    assert_true(total > 0);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    inject_all(HOOKS_ALLOCATION, false);
}

static void test_allocation_failures_cold(void **state)
{
    (void)state;
    inject_all(HOOKS_ALLOCATION, true);
}

static void test_opencl_failures(void **state)
{
    (void)state;
    inject_all(HOOKS_OPENCL, false);
}

static void test_opencl_failures_cold(void **state)
{
    (void)state;
    inject_all(HOOKS_OPENCL, true);
}

/* Each kernel file in turn replaced by one that does not compile (through PBSA_KERNEL_DIR): every
 * operation that uses it fails with PBSA_ERROR_BUILD_FAILED, writes nothing and leaks nothing;
 * the others still work. */
static void test_broken_kernels(void **state)
{
    (void)state;
    char dir[] = "/tmp/pbsa-broken-kernels-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *previous = getenv("PBSA_KERNEL_DIR");
    char *saved = previous ? strdup(previous) : NULL;
    setenv("PBSA_KERNEL_DIR", dir, 1);
    for (size_t s = 0; s < pbsa_kernel_sources_count; s++) {
        char path[sizeof dir + 64];
        snprintf(path, sizeof path, "%s/%s", dir, pbsa_kernel_sources[s].name);
        FILE *file = fopen(path, "w");
        assert_non_null(file);
        fputs("#error this file is broken on purpose\n", file);
        fclose(file);
        int broken_ops = 0;
        for (int i = 0; i < OPERATION_COUNT; i++) {
            const operation *op = &operations[i];
            if (!op->builds)
                continue;
            counts before = settled_counts();
            pbsa_context *ctx = NULL;
            assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                             PBSA_SUCCESS);
            poison_outputs(op);
            int status = op->run(ctx);
            char what[160];
            snprintf(what, sizeof what, "%s with %s broken", op->name,
                     pbsa_kernel_sources[s].name);
            if (status != PBSA_SUCCESS && status != PBSA_ERROR_BUILD_FAILED)
                fail_msg("%s: status %d (%s): %s", what, status, pbsa_status_string(status),
                         pbsa_context_last_error(ctx));
            if (status == PBSA_ERROR_BUILD_FAILED) {
                broken_ops++;
                if (!strstr(pbsa_context_build_log(ctx), "broken on purpose"))
                    fail_msg("%s: the build log does not show the error: %.300s", what,
                             pbsa_context_build_log(ctx));
            }
            assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
            check_outputs(what, op, status != PBSA_SUCCESS);
            pbsa_context_release(ctx);
            check_no_leak(what, &before);
        }
        printf("%-24s broken: %d operations fail to build\n", pbsa_kernel_sources[s].name,
               broken_ops);
        remove(path);
    }
    rmdir(dir);
    if (saved)
        setenv("PBSA_KERNEL_DIR", saved, 1);
    else
        unsetenv("PBSA_KERNEL_DIR");
    free(saved);
}

int main(void)
{
    /* Every OpenCL failure injected here must fail the call; the disk cache would instead recover
     * from a refused binary by compiling from source (tests/test_kernel_cache.c covers it). */
    setenv("PBSA_KERNEL_CACHE", "off", 1);
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cycles),
        cmocka_unit_test(test_gated_queue),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_opencl_failures),
        cmocka_unit_test(test_allocation_failures_cold),
        cmocka_unit_test(test_opencl_failures_cold),
        cmocka_unit_test(test_broken_kernels),
    };
    int failed = cmocka_run_group_tests_name("leaks", tests, setup, teardown);
    support_device_close(&fixture);
    return failed;
}
