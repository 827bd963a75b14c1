/* Memory shared between the arguments of a call: every public call that writes device memory
 * refuses an output that shares bytes with one of its inputs or another of its outputs, however
 * the caller reaches that memory (one buffer with element offsets, sub-buffers of one buffer, a
 * sub-buffer and its parent, or two buffers on the same host memory), with a status and a message
 * naming both, and writes nothing; the same arguments laid out side by side in the same ways are
 * accepted. */
#include "device.h"
#include "splitmix.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;

/* PBS shapes: 2 query heads on 1 KV head, 128 positions (blocks of 32, segments of 64: the
 * pipeline runs, not the short-sequence fallback), head dim 64, f32. */
enum { HQ = 2, HKV = 1, S = 128, D = 64, BLOCK = 32, NB = S / BLOCK };
enum { MAX_ARGS = 8 };

typedef enum arg_kind { ARG_Q, ARG_KV, ARG_O, ARG_PI, ARG_COUNTS, ARG_BLOCKS, ARG_WORKSPACE } arg_kind;

static const size_t kind_bytes[] = {
    [ARG_Q] = HQ * S * D * 4,  [ARG_KV] = HKV * S * D * 4, [ARG_O] = HQ * S * D * 4,
    [ARG_PI] = HQ * S * 4,     [ARG_COUNTS] = HQ * NB * 4, [ARG_BLOCKS] = HQ * NB * NB * 4,
};
static size_t workspace_bytes;

/* One public call: its arguments (outputs first) and how to make it. */
typedef struct call {
    const char *fn;
    int arg_count, output_count;
    const char *names[MAX_ARGS];
    arg_kind kinds[MAX_ARGS];
} call;

static const call calls[] = {
    {"pbsa_dense_attention", 4, 1, {"o", "q", "k", "v"}, {ARG_O, ARG_Q, ARG_KV, ARG_KV}},
    {"pbsa_attention", 5, 2, {"o", "workspace", "q", "k", "v"},
     {ARG_O, ARG_WORKSPACE, ARG_Q, ARG_KV, ARG_KV}},
    {"pbsa_permutation", 4, 2, {"pi", "workspace", "q", "k"},
     {ARG_PI, ARG_WORKSPACE, ARG_Q, ARG_KV}},
    {"pbsa_block_selection", 6, 3, {"out.counts", "out.blocks", "workspace", "q", "k", "pi"},
     {ARG_COUNTS, ARG_BLOCKS, ARG_WORKSPACE, ARG_Q, ARG_KV, ARG_PI}},
    {"pbsa_sparse_attention", 7, 1, {"o", "q", "k", "v", "pi", "blocks.counts", "blocks.blocks"},
     {ARG_O, ARG_Q, ARG_KV, ARG_KV, ARG_PI, ARG_COUNTS, ARG_BLOCKS}},
};

static size_t bytes_of(arg_kind kind)
{
    return kind == ARG_WORKSPACE ? workspace_bytes : kind_bytes[kind];
}

/* How the arguments reach the arena's memory. */
typedef enum mode {
    MODE_OFFSETS,     /* the arena itself, with element offsets */
    MODE_SUB_BUFFERS, /* a sub-buffer of the arena each */
    MODE_PARENT,      /* argument `first` a sub-buffer, the others the arena with offsets */
    MODE_HOST,        /* a buffer of its own each, on the arena's host memory */
    MODE_COUNT
} mode;
static const char *const mode_names[MODE_COUNT] = {"one buffer", "sub-buffers",
                                                   "a sub-buffer and its parent", "host memory"};

static size_t align;
static size_t arena_bytes;
static unsigned char *host;     /* the arena's memory (CL_MEM_USE_HOST_PTR) */
static unsigned char *contents; /* what the arena holds before each call */
static cl_mem arena;

static size_t round_up(size_t x)
{
    return (x + align - 1) / align * align;
}

/* Valid contents for every kind of argument at its origin: random tensors, identity permutations,
 * block lists of one block. */
static void fill(const call *c, const size_t origin[])
{
    uint64_t seed = 12345;
    for (size_t i = 0; i < arena_bytes / 4; i++) {
        const float x = splitmix_signed(&seed);
        memcpy(contents + 4 * i, &x, 4);
    }
    for (int a = 0; a < c->arg_count; a++) {
        cl_int *ints = (cl_int *)(contents + origin[a]);
        if (c->kinds[a] == ARG_PI)
            for (int i = 0; i < HQ * S; i++)
                ints[i] = i % S;
        if (c->kinds[a] == ARG_COUNTS)
            for (int i = 0; i < HQ * NB; i++)
                ints[i] = 1;
        if (c->kinds[a] == ARG_BLOCKS)
            for (int i = 0; i < HQ * NB * NB; i++)
                ints[i] = 0;
    }
    memcpy(host, contents, arena_bytes);
    assert_int_equal(clEnqueueWriteBuffer(fixture.queue, arena, CL_TRUE, 0, arena_bytes, host, 0,
                                          NULL, NULL),
                     CL_SUCCESS);
}

static cl_mem sub_buffer(cl_mem parent, size_t origin, size_t bytes)
{
    cl_buffer_region region = {origin, bytes};
    cl_int err;
    cl_mem mem = clCreateSubBuffer(parent, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                   &region, &err);
    assert_int_equal(err, CL_SUCCESS);
    return mem;
}

/* Makes call c with argument a at byte origin[a] of the arena, reached as m says. */
static int run(const call *c, const size_t origin[], mode m, int first)
{
    cl_mem mems[MAX_ARGS];
    uint64_t offsets[MAX_ARGS]; /* in 4-byte elements */
    bool own[MAX_ARGS];
    for (int a = 0; a < c->arg_count; a++) {
        const size_t bytes = bytes_of(c->kinds[a]);
        bool sub = m == MODE_SUB_BUFFERS || (m == MODE_PARENT && a == first) ||
                   (c->kinds[a] == ARG_WORKSPACE && origin[a] != 0 && m != MODE_HOST);
        own[a] = sub || m == MODE_HOST;
        offsets[a] = own[a] ? 0 : origin[a] / 4;
        if (m == MODE_HOST) {
            cl_int err;
            mems[a] = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR,
                                     bytes, host + origin[a], &err);
            assert_int_equal(err, CL_SUCCESS);
        } else {
            mems[a] = sub ? sub_buffer(arena, origin[a], bytes) : arena;
        }
    }
    pbsa_tensor t[MAX_ARGS];
    for (int a = 0; a < c->arg_count; a++) {
        const int heads = c->kinds[a] == ARG_KV ? HKV : HQ;
        t[a] = pbsa_tensor_bhsd(mems[a], PBSA_DTYPE_F32, 1, heads, S, D);
        t[a].offset = offsets[a];
    }
    pbsa_params p = pbsa_params_default();
    p.block_size = BLOCK;
    p.segment_size = 2 * BLOCK;
    int status = -1;
    const char *fn = c->fn;
    if (strcmp(fn, "pbsa_dense_attention") == 0) {
        status = pbsa_dense_attention(fixture.ctx, fixture.queue, &t[1], &t[2], &t[3], &t[0], NULL,
                                      NULL);
    } else if (strcmp(fn, "pbsa_attention") == 0) {
        status = pbsa_attention(fixture.ctx, fixture.queue, &t[2], &t[3], &t[4], &t[0], &p,
                                mems[1], NULL);
    } else if (strcmp(fn, "pbsa_permutation") == 0) {
        status = pbsa_permutation(fixture.ctx, fixture.queue, &t[2], &t[3], &p, mems[0],
                                  offsets[0], mems[1], NULL);
    } else if (strcmp(fn, "pbsa_block_selection") == 0) {
        pbsa_block_list out = {mems[0], mems[1], offsets[0], offsets[1]};
        status = pbsa_block_selection(fixture.ctx, fixture.queue, &t[3], &t[4], &p, mems[5],
                                      offsets[5], &out, mems[2], NULL);
    } else {
        pbsa_block_list list = {mems[5], mems[6], offsets[5], offsets[6]};
        status = pbsa_sparse_attention(fixture.ctx, fixture.queue, &t[1], &t[2], &t[3], &t[0], &p,
                                       mems[4], offsets[4], &list, NULL);
    }
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    for (int a = 0; a < c->arg_count; a++)
        if (own[a])
            clReleaseMemObject(mems[a]);
    return status;
}

/* Side by side: each argument in a slot of its own, the workspace (used from byte 0) first. A slot
 * holds twice the largest argument, so that one moved half-way into another's stays in its slot. */
static size_t slot_bytes;

static void side_by_side(const call *c, size_t origin[])
{
    size_t cursor = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int a = 0; a < c->arg_count; a++)
            if ((c->kinds[a] == ARG_WORKSPACE) == (pass == 0)) {
                origin[a] = cursor;
                cursor += slot_bytes;
            }
    assert_true(cursor <= arena_bytes);
}

static void expect_refused(const call *c, const size_t origin[], mode m, int first, int second)
{
    fill(c, origin);
    int status = run(c, origin, m, first);
    const char *message = pbsa_context_last_error(fixture.ctx);
    char a_b[96], b_a[96];
    snprintf(a_b, sizeof a_b, "%s overlaps %s", c->names[first], c->names[second]);
    snprintf(b_a, sizeof b_a, "%s overlaps %s", c->names[second], c->names[first]);
    if (status != PBSA_ERROR_INVALID_VALUE || (!strstr(message, a_b) && !strstr(message, b_a)))
        fail_msg("%s, %s and %s through %s: status %d, \"%s\"", c->fn, c->names[first],
                 c->names[second], mode_names[m], status, message);
    if (m != MODE_HOST) {
        assert_int_equal(clEnqueueReadBuffer(fixture.queue, arena, CL_TRUE, 0, arena_bytes, host,
                                             0, NULL, NULL),
                         CL_SUCCESS);
        if (memcmp(host, contents, arena_bytes) != 0)
            fail_msg("%s: a refused call changed memory", c->fn);
    }
}

static void test_overlaps(void **state)
{
    (void)state;
    int refused = 0;
    for (size_t ci = 0; ci < sizeof calls / sizeof calls[0]; ci++) {
        const call *c = &calls[ci];
        size_t origin[MAX_ARGS];
        side_by_side(c, origin);
        /* Side by side is accepted, however it is reached. */
        for (int m = 0; m < MODE_COUNT; m++) {
            fill(c, origin);
            int status = run(c, origin, (mode)m, 0);
            if (status != PBSA_SUCCESS)
                fail_msg("%s side by side through %s: %d %s", c->fn, mode_names[m], status,
                         pbsa_context_last_error(fixture.ctx));
        }
        /* Every output against every other argument: the second moved onto the first, half a
         * slot in where the first is large enough (the workspace, used from byte 0, stays). */
        for (int first = 0; first < c->output_count; first++) {
            for (int second = first + 1; second < c->arg_count; second++) {
                for (int m = 0; m < MODE_COUNT; m++) {
                    size_t moved[MAX_ARGS];
                    memcpy(moved, origin, sizeof moved);
                    int from = first, to = second;
                    if (c->kinds[second] == ARG_WORKSPACE && m != MODE_HOST) {
                        from = second;
                        to = first;
                    }
                    size_t shift = bytes_of(c->kinds[from]) / 2 / align * align;
                    moved[to] = origin[from] + shift;
                    expect_refused(c, moved, (mode)m, first, second);
                    refused++;
                }
            }
        }
        printf("  %s: every output against every other argument refused, four ways\n", c->fn);
    }
    printf("  %d overlapping calls refused\n", refused);
}

int main(void)
{
    int status = support_device_open_test(&fixture);
    if (status != 0)
        return status;
    cl_uint align_bits = 0;
    clGetDeviceInfo(fixture.device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits,
                    NULL);
    align = align_bits / 8 > 64 ? align_bits / 8 : 64;
    pbsa_params p = pbsa_params_default();
    p.block_size = BLOCK;
    p.segment_size = 2 * BLOCK;
    pbsa_tensor q = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_F32, 1, HQ, S, D);
    pbsa_tensor k = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_F32, 1, HKV, S, D);
    cl_int err;
    cl_mem scratch = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE, HQ * S * D * 4, NULL, &err);
    q.buffer = k.buffer = scratch;
    status = pbsa_workspace_size(fixture.ctx, &q, &k, &p, &workspace_bytes);
    clReleaseMemObject(scratch);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa_workspace_size: %s\n", pbsa_context_last_error(fixture.ctx));
        return 1;
    }
    slot_bytes = 2 * round_up(workspace_bytes > HQ * S * D * 4 ? workspace_bytes : HQ * S * D * 4);
    arena_bytes = MAX_ARGS * slot_bytes;
    host = aligned_alloc(4096, (arena_bytes + 4095) / 4096 * 4096);
    contents = malloc(arena_bytes);
    arena = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR, arena_bytes,
                           host, &err);
    if (!host || !contents || err != CL_SUCCESS) {
        fprintf(stderr, "cannot allocate the arena\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overlaps),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    clReleaseMemObject(arena);
    free(host);
    free(contents);
    support_device_close(&fixture);
    return failed;
}
