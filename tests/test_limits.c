/* Bounds and resource limits:
 *  - every call writes only the elements of its outputs: poison around and between the elements
 *    (guards, gaps of padded layouts, a workspace larger than needed, offsets into larger int
 *    buffers) is still there afterwards, and the inputs are unchanged, byte for byte;
 *  - a PBS call whose own workspace would exceed the device's largest buffer
 *    (CL_DEVICE_MAX_MEM_ALLOC_SIZE) fails with a message that says so before any work starts, as
 *    does one with more key blocks than the device's local memory can select over, sequence
 *    lengths up to INT32_MAX included. */
#include "device.h"
#include "host_tensor.h"

#include <inttypes.h>
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

enum { GUARD = 40 };

/* ---- guards ---------------------------------------------------------------------------------- */

typedef struct inputs {
    host_tensor q, k, v;
    unsigned char *original[3];
} inputs;

static void inputs_make(inputs *in, pbsa_dtype dtype, int hq, int hkv, int sq, int skv, int d,
                        tensor_layout layout)
{
    host_tensor *t[3] = {&in->q, &in->k, &in->v};
    uint64_t seed = 99;
    for (int i = 0; i < 3; i++) {
        int heads = i == 0 ? hq : hkv, seq = i == 0 ? sq : skv;
        tensor_init(t[i], dtype, 1, heads, seq, d, layout, GUARD);
        assert_non_null(t[i]->bytes);
        for (int h = 0; h < heads; h++)
            for (int s = 0; s < seq; s++)
                for (int e = 0; e < d; e++) {
                    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                    tensor_set(t[i], 0, h, s, e, (float)((double)(seed >> 11) * 0x1.0p-52 - 1.0));
                }
        assert_int_equal(tensor_upload(t[i], fixture.cl_ctx), CL_SUCCESS);
        in->original[i] = malloc(t[i]->size);
        assert_non_null(in->original[i]);
        memcpy(in->original[i], t[i]->bytes, t[i]->size);
    }
}

/* The inputs, guards and gaps included, are as they were uploaded. */
static void inputs_check(const char *what, inputs *in)
{
    host_tensor *t[3] = {&in->q, &in->k, &in->v};
    const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tensor_download(t[i], fixture.queue), CL_SUCCESS);
        if (memcmp(t[i]->bytes, in->original[i], t[i]->size) != 0)
            fail_msg("%s: the buffer of %s changed", what, names[i]);
    }
}

static void inputs_free(inputs *in)
{
    tensor_free(&in->q);
    tensor_free(&in->k);
    tensor_free(&in->v);
    for (int i = 0; i < 3; i++)
        free(in->original[i]);
}

/* A buffer of poison (0xff) with a region of count cl_ints at element GUARD. */
typedef struct int_region {
    cl_mem mem;
    size_t count;
} int_region;

static int_region int_region_make(size_t count)
{
    size_t bytes = (count + 2 * GUARD) * sizeof(cl_int);
    unsigned char *host = malloc(bytes);
    assert_non_null(host);
    memset(host, 0xff, bytes);
    cl_int err;
    int_region r = {clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                   host, &err),
                    count};
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return r;
}

/* The guards on both sides of the region are still poison. */
static void int_region_check(const char *what, const int_region *r)
{
    size_t bytes = (r->count + 2 * GUARD) * sizeof(cl_int);
    unsigned char *host = malloc(bytes);
    assert_non_null(host);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, r->mem, CL_TRUE, 0, bytes, host, 0, NULL,
                                         NULL),
                     CL_SUCCESS);
    for (size_t i = 0; i < GUARD * sizeof(cl_int); i++)
        if (host[i] != 0xff || host[bytes - 1 - i] != 0xff)
            fail_msg("%s: a guard byte of an int buffer changed", what);
    free(host);
}

static void output_check(const char *what, host_tensor *o)
{
    assert_int_equal(tensor_download(o, fixture.queue), CL_SUCCESS);
    long damage = tensor_guard_damage(o);
    if (damage)
        fail_msg("%s: %ld bytes outside the output's elements changed", what, damage);
}

static void expect_ok(const char *what, int status)
{
    if (status != PBSA_SUCCESS)
        fail_msg("%s: %d (%s): %s", what, status, pbsa_status_string(status),
                 pbsa_context_last_error(fixture.ctx));
}

static void test_guards(void **state)
{
    (void)state;
    const struct {
        pbsa_dtype dtype;
        tensor_layout layout;
        int hq, hkv, sq, skv, d;
    } shapes[] = {
        {PBSA_DTYPE_F32, TENSOR_PADDED, 4, 2, 190, 190, 64},
        {PBSA_DTYPE_F16, TENSOR_BSHD, 2, 1, 100, 228, 128},
        {PBSA_DTYPE_BF16, TENSOR_PADDED, 2, 2, 257, 257, 96},
    };
    const char *dtype_names[3] = {"f32", "f16", "bf16"};
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        inputs in;
        inputs_make(&in, shapes[c].dtype, shapes[c].hq, shapes[c].hkv, shapes[c].sq,
                    shapes[c].skv, shapes[c].d, shapes[c].layout);
        pbsa_params p = pbsa_params_default();
        p.block_size = 32;
        p.segment_size = 64;
        int nqb = (shapes[c].sq + 31) / 32, nkb = (shapes[c].skv + 31) / 32;
        size_t rows = (size_t)shapes[c].hq * nqb, pi_count = (size_t)shapes[c].hq * shapes[c].skv;
        char what[128];
        const char *name = dtype_names[shapes[c].dtype];

        host_tensor o;
        tensor_init(&o, shapes[c].dtype, 1, shapes[c].hq, shapes[c].sq, shapes[c].d,
                    shapes[c].layout, GUARD);
        assert_int_equal(tensor_upload(&o, fixture.cl_ctx), CL_SUCCESS);
        snprintf(what, sizeof what, "%s dense", name);
        expect_ok(what, pbsa_dense_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                             &in.v.desc, &o.desc, NULL, NULL));
        output_check(what, &o);
        inputs_check(what, &in);
        tensor_free(&o);

        /* The whole pipeline with the library's workspace, then with one of ours that is larger
         * than needed: the bytes past the needed size stay poison. */
        for (int own = 0; own < 2; own++) {
            size_t bytes = 0;
            expect_ok("pbsa_workspace_size",
                      pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &p, &bytes));
            size_t extra = 4096;
            unsigned char *poison = malloc(bytes + extra);
            assert_non_null(poison);
            memset(poison, 0xff, bytes + extra);
            cl_int err;
            cl_mem workspace = own ? clCreateBuffer(fixture.cl_ctx,
                                                    CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                                    bytes + extra, poison, &err)
                                   : NULL;
            assert_true(!own || err == CL_SUCCESS);
            tensor_init(&o, shapes[c].dtype, 1, shapes[c].hq, shapes[c].sq, shapes[c].d,
                        shapes[c].layout, GUARD);
            assert_int_equal(tensor_upload(&o, fixture.cl_ctx), CL_SUCCESS);
            snprintf(what, sizeof what, "%s pbsa_attention (%s workspace)", name,
                     own ? "caller's" : "library's");
            expect_ok(what, pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                           &in.v.desc, &o.desc, &p, workspace, NULL));
            output_check(what, &o);
            inputs_check(what, &in);
            if (own) {
                assert_int_equal(clEnqueueReadBuffer(fixture.queue, workspace, CL_TRUE, bytes,
                                                     extra, poison, 0, NULL, NULL),
                                 CL_SUCCESS);
                for (size_t i = 0; i < extra; i++)
                    if (poison[i] != 0xff)
                        fail_msg("%s: byte %zu past the workspace size changed", what, bytes + i);
                clReleaseMemObject(workspace);
            }
            free(poison);
            tensor_free(&o);
        }

        /* The stage calls, each writing a region in the middle of a larger buffer. */
        int_region pi = int_region_make(pi_count), counts = int_region_make(rows),
                   blocks = int_region_make(rows * (size_t)nkb);
        snprintf(what, sizeof what, "%s pbsa_permutation", name);
        expect_ok(what, pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &p,
                                         pi.mem, GUARD, NULL, NULL));
        int_region_check(what, &pi);
        inputs_check(what, &in);
        pbsa_block_list list = {counts.mem, blocks.mem, GUARD, GUARD};
        snprintf(what, sizeof what, "%s pbsa_block_selection", name);
        expect_ok(what, pbsa_block_selection(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                             &p, pi.mem, GUARD, &list, NULL, NULL));
        int_region_check(what, &counts);
        int_region_check(what, &blocks);
        int_region_check(what, &pi);
        inputs_check(what, &in);
        for (int with_pi = 0; with_pi < 2; with_pi++) {
            tensor_init(&o, shapes[c].dtype, 1, shapes[c].hq, shapes[c].sq, shapes[c].d,
                        shapes[c].layout, GUARD);
            assert_int_equal(tensor_upload(&o, fixture.cl_ctx), CL_SUCCESS);
            snprintf(what, sizeof what, "%s pbsa_sparse_attention%s", name,
                     with_pi ? "" : " (pi NULL)");
            expect_ok(what, pbsa_sparse_attention(fixture.ctx, fixture.queue, &in.q.desc,
                                                  &in.k.desc, &in.v.desc, &o.desc, &p,
                                                  with_pi ? pi.mem : NULL, with_pi ? GUARD : 0,
                                                  &list, NULL));
            output_check(what, &o);
            inputs_check(what, &in);
            int_region_check(what, &pi);
            int_region_check(what, &counts);
            int_region_check(what, &blocks);
            tensor_free(&o);
        }
        printf("  %-5s %s: no byte outside the outputs changed\n", name,
               shapes[c].layout == TENSOR_PADDED ? "padded" : "BSHD");
        clReleaseMemObject(pi.mem);
        clReleaseMemObject(counts.mem);
        clReleaseMemObject(blocks.mem);
        inputs_free(&in);
    }
}

/* ---- resource limits ------------------------------------------------------------------------- */

/* A K or V of any length in a buffer of one row: every stride 0 (inputs may alias). */
static pbsa_tensor broadcast(cl_mem row, int heads, int64_t seq, int d)
{
    pbsa_tensor t = pbsa_tensor_bhsd(row, PBSA_DTYPE_F16, 1, heads, seq, d);
    t.stride_batch = t.stride_head = t.stride_seq = 0;
    return t;
}

static cl_mem poisoned(size_t bytes)
{
    unsigned char *host = malloc(bytes);
    assert_non_null(host);
    memset(host, 0xff, bytes);
    cl_int err;
    cl_mem mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                host, &err);
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return mem;
}

static bool still_poisoned(cl_mem mem, size_t bytes)
{
    unsigned char *host = malloc(bytes);
    assert_non_null(host);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, mem, CL_TRUE, 0, bytes, host, 0, NULL,
                                         NULL),
                     CL_SUCCESS);
    bool all = true;
    for (size_t i = 0; i < bytes && all; i++)
        all = host[i] == 0xff;
    free(host);
    return all;
}

/* Chunked prefill of one query block over a long context: the workspace grows with the heads and
 * the context length, the tensors the caller allocates do not. */
static void test_workspace_beyond_max_alloc(void **state)
{
    (void)state;
    pbsa_device_info info;
    assert_int_equal(pbsa_context_device_info(fixture.ctx, &info), PBSA_SUCCESS);
    enum { D = 128, SQ = 128 };
    pbsa_params p = pbsa_params_default();
    cl_mem row = poisoned(D * 2);
    size_t bytes = 0;
    int64_t skv = (int64_t)1 << 22;
    int heads = 1;
    for (;;) {
        pbsa_tensor q = broadcast(row, heads, SQ, D), k = broadcast(row, heads, skv, D);
        int status = pbsa_workspace_size(fixture.ctx, &q, &k, &p, &bytes);
        if (status == PBSA_ERROR_UNSUPPORTED_DEVICE && skv > 4 * SQ) {
            skv /= 2; /* more key blocks than the device can select over */
            continue;
        }
        expect_ok("pbsa_workspace_size", status);
        if (bytes > info.max_alloc_bytes || heads >= 1 << 14)
            break;
        heads *= 2;
    }
    if (bytes <= info.max_alloc_bytes) {
        printf("skipped: no shape found whose workspace exceeds %" PRIu64 " bytes\n",
               (uint64_t)info.max_alloc_bytes);
        clReleaseMemObject(row);
        return;
    }
    printf("  %d heads, k.seq %" PRId64 ": workspace %zu bytes, largest buffer %" PRIu64 "\n",
           heads, skv, bytes, (uint64_t)info.max_alloc_bytes);
    size_t o_bytes = (size_t)heads * SQ * D * 2;
    cl_mem o_mem = poisoned(o_bytes);
    pbsa_tensor q = broadcast(row, heads, SQ, D), k = broadcast(row, heads, skv, D),
                v = broadcast(row, heads, skv, D);
    pbsa_tensor o = pbsa_tensor_bhsd(o_mem, PBSA_DTYPE_F16, 1, heads, SQ, D);
    cl_event event = (cl_event)&info;
    int status = pbsa_attention(fixture.ctx, fixture.queue, &q, &k, &v, &o, &p, NULL, &event);
    const char *message = pbsa_context_last_error(fixture.ctx);
    printf("  pbsa_attention: %d (%s): %s\n", status, pbsa_status_string(status), message);
    if (status != PBSA_ERROR_INVALID_VALUE && status != PBSA_ERROR_UNSUPPORTED_DEVICE)
        fail_msg("expected a clear failure, got status %d", status);
    char needed[32], largest[32];
    snprintf(needed, sizeof needed, "%zu", bytes);
    snprintf(largest, sizeof largest, "%" PRIu64, (uint64_t)info.max_alloc_bytes);
    if (!strstr(message, "workspace") || !strstr(message, needed) || !strstr(message, largest))
        fail_msg("the message does not give the workspace size %s and the limit %s: %s", needed,
                 largest, message);
    assert_null(event);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_true(still_poisoned(o_mem, o_bytes));
    clReleaseMemObject(o_mem);
    clReleaseMemObject(row);
}

/* More key blocks than the selection can hold in local memory: a clear status, not a launch
 * failure. */
static void test_too_many_key_blocks(void **state)
{
    (void)state;
    enum { D = 64, SQ = 16 };
    cl_mem row = poisoned(D * 2);
    cl_mem o_mem = poisoned(SQ * D * 2);
    pbsa_params p = pbsa_params_default();
    p.block_size = 16;
    p.segment_size = 64;
    pbsa_tensor q = broadcast(row, 1, SQ, D), k = broadcast(row, 1, (int64_t)1 << 30, D),
                v = k;
    pbsa_tensor o = pbsa_tensor_bhsd(o_mem, PBSA_DTYPE_F16, 1, 1, SQ, D);
    size_t bytes = 0;
    int status = pbsa_workspace_size(fixture.ctx, &q, &k, &p, &bytes);
    printf("  pbsa_workspace_size: %d (%s): %s\n", status, pbsa_status_string(status),
           pbsa_context_last_error(fixture.ctx));
    assert_int_equal(status, PBSA_ERROR_UNSUPPORTED_DEVICE);
    assert_non_null(strstr(pbsa_context_last_error(fixture.ctx), "k.seq"));
    status = pbsa_attention(fixture.ctx, fixture.queue, &q, &k, &v, &o, &p, NULL, NULL);
    assert_int_equal(status, PBSA_ERROR_UNSUPPORTED_DEVICE);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_true(still_poisoned(o_mem, SQ * D * 2));
    clReleaseMemObject(o_mem);
    clReleaseMemObject(row);
}

/* Sequence lengths up to INT32_MAX, for queries too (zero strides, one row of memory): the plan's
 * block counts are rounded up without overflowing (UndefinedBehaviorSanitizer checks it in CI),
 * and the status is the clear one of too many key blocks. */
static void test_lengths_near_int32_max(void **state)
{
    (void)state;
    enum { D = 64 };
    cl_mem row = poisoned(D * 2);
    const int64_t lengths[3] = {INT32_MAX, INT32_MAX - 1, ((int64_t)1 << 31) - 128};
    const int block_sizes[2] = {128, 16};
    for (int l = 0; l < 3; l++) {
        for (int b = 0; b < 2; b++) {
            pbsa_params p = pbsa_params_default();
            p.block_size = block_sizes[b];
            p.segment_size = 2 * block_sizes[b];
            pbsa_tensor q = broadcast(row, 1, lengths[l], D), k = q;
            size_t bytes = 0;
            int status = pbsa_workspace_size(fixture.ctx, &q, &k, &p, &bytes);
            const char *message = pbsa_context_last_error(fixture.ctx);
            printf("  seq %" PRId64 ", block %d: %d (%s): %s\n", lengths[l], p.block_size, status,
                   pbsa_status_string(status), message);
            assert_int_equal(status, PBSA_ERROR_UNSUPPORTED_DEVICE);
            assert_non_null(strstr(message, "key blocks"));
        }
    }
    clReleaseMemObject(row);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guards),
        cmocka_unit_test(test_workspace_beyond_max_alloc),
        cmocka_unit_test(test_too_many_key_blocks),
        cmocka_unit_test(test_lengths_near_int32_max),
    };
    int failed = cmocka_run_group_tests_name("limits", tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
