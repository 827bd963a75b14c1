/* The PBS calls' errors: every entry point fails with a status and a message naming the bad
 * parameter, a workspace or output too small, or a kernel that does not build, and writes
 * nothing and enqueues nothing. */
#include "pbs/plan.h"
#include "pbs_test.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- bad parameters -------------------------------------------------------------------------- */

/* Whole buffers read back, to prove that a failing call wrote nothing. */
static unsigned char *snapshot(cl_mem mem, size_t *size)
{
    assert_int_equal(clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof *size, size, NULL), CL_SUCCESS);
    unsigned char *bytes = test_alloc(*size);
    assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
    assert_int_equal(clEnqueueReadBuffer(fixture.queue, mem, CL_TRUE, 0, *size, bytes, 0, NULL,
                                         NULL),
                     CL_SUCCESS);
    return bytes;
}

static void expect_untouched(const char *what, cl_mem mem, const unsigned char *before)
{
    size_t size;
    unsigned char *now = snapshot(mem, &size);
    if (memcmp(now, before, size) != 0)
        fail_msg("%s: a failing call changed a caller buffer", what);
    free(now);
}

static void expect_failure(const char *what, int got, int expected, const char *needle)
{
    const char *message = pbsa_context_last_error(fixture.ctx);
    if (got != expected)
        fail_msg("%s: status %d (%s), expected %d (%s); message: %s", what, got,
                 pbsa_status_string(got), expected, pbsa_status_string(expected), message);
    if (needle && !strstr(message, needle))
        fail_msg("%s: message '%s' does not name '%s'", what, message, needle);
}

/* Every entry point, given one bad parameter set, fails with INVALID_VALUE naming it and leaves
 * every output buffer as it was. sparse: whether pbsa_sparse_attention reads that parameter. */
static void expect_bad_params(const char *what, const pbs_inputs *in, const pbsa_params *p,
                              const char *needle, bool sparse, cl_mem o, cl_mem pi,
                              const pbsa_block_list *list, cl_mem workspace)
{
    const int bad = PBSA_ERROR_INVALID_VALUE;
    const pbsa_tensor *q = &in->q.desc, *k = &in->k.desc, *v = &in->v.desc;
    pbsa_tensor out = pbsa_tensor_bhsd(o, q->dtype, q->batch, q->heads, q->seq, q->head_dim);
    size_t size_before[4];
    unsigned char *before[4] = {snapshot(o, &size_before[0]), snapshot(pi, &size_before[1]),
                                snapshot(list->counts, &size_before[2]),
                                snapshot(list->blocks, &size_before[3])};
    char label[160];
    size_t bytes = 12345;
    cl_event event = (cl_event)&bytes;

    snprintf(label, sizeof label, "%s: pbsa_attention", what);
    expect_failure(label, pbsa_attention(fixture.ctx, fixture.queue, q, k, v, &out, p, NULL,
                                         &event),
                   bad, needle);
    assert_null(event);
    snprintf(label, sizeof label, "%s: pbsa_attention with a workspace", what);
    expect_failure(label, pbsa_attention(fixture.ctx, fixture.queue, q, k, v, &out, p, workspace,
                                         NULL),
                   bad, needle);
    snprintf(label, sizeof label, "%s: pbsa_workspace_size", what);
    expect_failure(label, pbsa_workspace_size(fixture.ctx, q, k, p, &bytes), bad, needle);
    assert_int_equal(bytes, 12345);
    snprintf(label, sizeof label, "%s: pbsa_permutation", what);
    expect_failure(label, pbsa_permutation(fixture.ctx, fixture.queue, q, k, p, pi, 0, NULL, NULL),
                   bad, needle);
    snprintf(label, sizeof label, "%s: pbsa_block_selection", what);
    expect_failure(label, pbsa_block_selection(fixture.ctx, fixture.queue, q, k, p, pi, 0, list,
                                               NULL, NULL),
                   bad, needle);
    if (sparse) {
        snprintf(label, sizeof label, "%s: pbsa_sparse_attention", what);
        expect_failure(label, pbsa_sparse_attention(fixture.ctx, fixture.queue, q, k, v, &out, p,
                                                    pi, 0, list, NULL),
                       bad, needle);
    }
    snprintf(label, sizeof label, "%s: pbsa_workspace_read", what);
    cl_int host[4];
    expect_failure(label, pbsa_workspace_read(fixture.ctx, fixture.queue, q, k, p, workspace,
                                              PBSA_PART_BLOCK_COUNTS, host, sizeof host, NULL),
                   bad, needle);
    cl_mem all[4] = {o, pi, list->counts, list->blocks};
    for (int x = 0; x < 4; x++) {
        expect_untouched(what, all[x], before[x]);
        free(before[x]);
    }
}

static cl_mem poisoned_buffer(size_t bytes)
{
    unsigned char *host = test_alloc(bytes);
    memset(host, 0xff, bytes);
    cl_int err;
    cl_mem mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR, bytes,
                                host,
                                &err);
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return mem;
}

/* Poisoned outputs of every call on one set of inputs, large enough for any block size down to
 * 16: o, pi, the block lists and a workspace. */
typedef struct call_outputs {
    cl_mem o, pi, workspace;
    pbsa_block_list list;
} call_outputs;

static call_outputs outputs_make(const pbs_inputs *in)
{
    const size_t big = 4 * (in->out_count + in->pi_count + 64 * 64 * 8);
    call_outputs b = {poisoned_buffer(big), poisoned_buffer(big), poisoned_buffer(16 << 20),
                      {poisoned_buffer(big), poisoned_buffer(big), 0, 0}};
    return b;
}

static void outputs_free(call_outputs *b)
{
    clReleaseMemObject(b->o);
    clReleaseMemObject(b->pi);
    clReleaseMemObject(b->workspace);
    clReleaseMemObject(b->list.counts);
    clReleaseMemObject(b->list.blocks);
}

static void test_bad_params(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_bad_params", ALL_F32, 1, 2, 1, 150, 150, 64, 32, 64,
                                   0.9f, 1, 1, PER, 0};
    pbs_inputs in;
    pbs_test_inputs(&in, &shape);
    /* Outputs large enough for any of the parameter sets below (block 16 at most). */
    call_outputs b = outputs_make(&in);
    cl_mem o = b.o, pi = b.pi, workspace = b.workspace;
    pbsa_block_list list = b.list;

    pbsa_params p = in.params;
    p.segment_size = 48; /* not a multiple of the block (32) */
    expect_bad_params("segment 48, block 32", &in, &p, "params->segment_size", false, o, pi,
                      &list, workspace);
    p = in.params;
    p.segment_size = 0;
    expect_bad_params("segment 0", &in, &p, "params->segment_size", false, o, pi, &list,
                      workspace);
    p = in.params;
    p.block_size = 48;
    p.segment_size = 96;
    expect_bad_params("block 48", &in, &p, "params->block_size", true, o, pi, &list, workspace);
    p = in.params;
    p.block_size = 0;
    expect_bad_params("block 0", &in, &p, "params->block_size", true, o, pi, &list, workspace);
    float bad_thresholds[3] = {0.0f, -0.5f, NAN};
    for (int t = 0; t < 3; t++) {
        p = in.params;
        p.threshold = bad_thresholds[t];
        char what[64];
        snprintf(what, sizeof what, "threshold %g", (double)bad_thresholds[t]);
        expect_bad_params(what, &in, &p, "params->threshold", false, o, pi, &list, workspace);
    }
    p = in.params;
    p.gqa_mode = (pbsa_gqa_mode)7;
    expect_bad_params("gqa_mode 7", &in, &p, "params->gqa_mode", true, o, pi, &list, workspace);
    p = in.params;
    p.struct_size = 3;
    expect_bad_params("struct_size 3", &in, &p, "params->struct_size", true, o, pi, &list,
                      workspace);

    /* Chunked prefill whose offset (150 - 100) is not a multiple of the block. */
    pbs_inputs_free(&in);
    static const pbs_case chunked = {"f32_bad_chunk", ALL_F32, 1, 2, 1, 100, 150, 64, 32, 64,
                                     0.9f, 1, 1, PER, 0};
    pbs_test_inputs(&in, &chunked);
    expect_bad_params("chunked offset 50, block 32", &in, &in.params, "k.seq", true, o, pi, &list,
                      workspace);

    outputs_free(&b);
    pbs_inputs_free(&in);
}

/* K and V of different dtypes (q and o may have any): the calls that read v refuse them,
 * naming both, and write nothing. */
static void test_kv_dtypes(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_kv_dtypes", ALL_F32, 1, 2, 1, 150, 150, 64, 32, 64,
                                   0.9f, 1, 1, PER, 0};
    pbs_inputs in;
    pbs_test_inputs(&in, &shape);
    call_outputs b = outputs_make(&in);
    cl_mem o = b.o, pi = b.pi, counts = b.list.counts;
    const pbsa_tensor *q = &in.q.desc, *k = &in.k.desc;
    pbsa_tensor v = in.v.desc; /* f16 halves the bytes: the buffer stays large enough */
    v.dtype = PBSA_DTYPE_F16;
    pbsa_tensor out = pbsa_tensor_bhsd(o, PBSA_DTYPE_BF16, q->batch, q->heads, q->seq, q->head_dim);
    const char *needle = "v.dtype = f16 differs from k.dtype = f32";
    size_t sizes[3];
    unsigned char *before[3] = {snapshot(o, &sizes[0]), snapshot(pi, &sizes[1]),
                                snapshot(counts, &sizes[2])};
    const int mismatch = PBSA_ERROR_DTYPE_MISMATCH;
    expect_failure("pbsa_attention",
                   pbsa_attention(fixture.ctx, fixture.queue, q, k, &v, &out, &in.params, NULL,
                                  NULL),
                   mismatch, needle);
    expect_failure("pbsa_attention with a workspace",
                   pbsa_attention(fixture.ctx, fixture.queue, q, k, &v, &out, &in.params,
                                  b.workspace, NULL),
                   mismatch, needle);
    expect_failure("pbsa_sparse_attention",
                   pbsa_sparse_attention(fixture.ctx, fixture.queue, q, k, &v, &out, &in.params,
                                         pi, 0, &b.list, NULL),
                   mismatch, needle);
    cl_mem all[3] = {o, pi, counts};
    for (int x = 0; x < 3; x++) {
        expect_untouched("a call with k and v of different dtypes", all[x], before[x]);
        free(before[x]);
    }
    outputs_free(&b);
    pbs_inputs_free(&in);
}

/* A workspace one element short fails with BUFFER_TOO_SMALL and nothing is written. */
static void test_small_workspace(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_small_workspace", ALL_F32, 1, 2, 2, 200, 200, 64, 16, 64,
                                   0.9f, 1, 1, PER, 0};
    pbs_inputs in;
    pbs_test_inputs(&in, &shape);
    size_t ws_bytes;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes));
    assert_true(ws_bytes > 4);
    cl_mem small = poisoned_buffer(ws_bytes - 4);
    host_tensor o;
    pbs_test_output(&o, &in);
    pbs_int_buffer pi_buf = pbs_test_int_buffer(in.pi_count);
    pbs_int_buffer counts_buf = pbs_test_int_buffer(in.rows);
    pbs_int_buffer blocks_buf = pbs_test_int_buffer(in.rows * (size_t)in.nkb);
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, PBS_GUARD, PBS_GUARD};
    size_t sizes[5];
    cl_mem all[5] = {o.desc.buffer, pi_buf.mem, counts_buf.mem, blocks_buf.mem, small};
    unsigned char *before[5];
    for (int x = 0; x < 5; x++)
        before[x] = snapshot(all[x], &sizes[x]);

    const int too_small = PBSA_ERROR_BUFFER_TOO_SMALL;
    expect_failure("pbsa_attention, small workspace",
                   pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                  &o.desc, &in.params, small, NULL),
                   too_small, "workspace");
    expect_failure("pbsa_permutation, small workspace",
                   pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                    &in.params, pi_buf.mem, PBS_GUARD, small, NULL),
                   too_small, "workspace");
    expect_failure("pbsa_block_selection, small workspace",
                   pbsa_block_selection(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                        &in.params, pi_buf.mem, PBS_GUARD, &list, small, NULL),
                   too_small, "workspace");
    cl_int host[8];
    expect_failure("pbsa_workspace_read, small workspace",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, small, PBSA_PART_BLOCK_COUNTS, host,
                                       sizeof host, NULL),
                   too_small, "workspace");
    /* Output buffers too small for their parts. */
    expect_failure("pbsa_permutation, pi one element short",
                   pbsa_permutation(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                    &in.params, pi_buf.mem, 2 * PBS_GUARD + 1, NULL, NULL),
                   too_small, "pi");
    pbsa_block_list short_list = {counts_buf.mem, blocks_buf.mem, PBS_GUARD, 2 * PBS_GUARD + 1};
    expect_failure("pbsa_block_selection, blocks one element short",
                   pbsa_block_selection(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                        &in.params, pi_buf.mem, PBS_GUARD, &short_list, NULL, NULL),
                   too_small, "blocks");
    for (int x = 0; x < 5; x++) {
        expect_untouched("small workspace", all[x], before[x]);
        free(before[x]);
    }

    /* pbsa_workspace_read: capacity below the part, and a part that does not exist. */
    size_t ws_full;
    expect_ok("pbsa_workspace_size",
              pbsa_workspace_size(fixture.ctx, &in.q.desc, &in.k.desc, &in.params, &ws_full));
    cl_mem workspace = poisoned_buffer(ws_full);
    size_t part_size = 0;
    expect_failure("pbsa_workspace_read, capacity too small",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, workspace, PBSA_PART_BLOCK_COUNTS, host,
                                       sizeof host, &part_size),
                   PBSA_ERROR_INVALID_VALUE, "capacity");
    assert_int_equal(part_size, in.rows * sizeof(cl_int));
    expect_failure("pbsa_workspace_read, bad part",
                   pbsa_workspace_read(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                       &in.params, workspace, (pbsa_workspace_part)9, host,
                                       sizeof host, NULL),
                   PBSA_ERROR_INVALID_VALUE, "part");

    clReleaseMemObject(small);
    clReleaseMemObject(workspace);
    tensor_free(&o);
    pbs_int_buffer_free(&pi_buf);
    pbs_int_buffer_free(&counts_buf);
    pbs_int_buffer_free(&blocks_buf);
    pbs_inputs_free(&in);
}

/* The log-sum-exp output of pbsa_attention() (the pipeline and the short-sequence fallback) and
 * pbsa_sparse_attention(): too small for its offset, an offset past 64 bits, a buffer of another
 * context, memory shared with o; each named params->lse, nothing written. */
static void test_lse_errors(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_lse_pipeline", ALL_F32, 1, 2, 1, 150, 150, 64, 32, 64, 0.9f, 1, 1, PER, 0},
        {"f32_lse_fallback", ALL_F32, 1, 2, 1, 50, 50, 64, 16, 64, 0.9f, 1, 1, PER, 0},
    };
    cl_int err;
    cl_context foreign = clCreateContext(NULL, 1, &fixture.device, NULL, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        pbs_inputs in;
        pbs_test_inputs(&in, &shapes[s]);
        const size_t rows = in.out_count / (size_t)shapes[s].head_dim;
        cl_mem lse = poisoned_buffer(rows * sizeof(float));
        cl_mem foreign_lse = clCreateBuffer(foreign, CL_MEM_READ_WRITE, rows * 4, NULL, &err);
        assert_int_equal(err, CL_SUCCESS);
        host_tensor o;
        pbs_test_output(&o, &in);
        pbs_int_buffer counts = pbs_test_int_buffer(in.rows);
        pbs_int_buffer blocks = pbs_test_int_buffer(in.rows * (size_t)in.nkb);
        pbsa_block_list list = {counts.mem, blocks.mem, PBS_GUARD, PBS_GUARD};
        size_t sizes[2];
        cl_mem outputs[2] = {o.desc.buffer, lse};
        unsigned char *before[2] = {snapshot(outputs[0], &sizes[0]),
                                    snapshot(outputs[1], &sizes[1])};
        const struct {
            const char *what;
            cl_mem buffer;
            uint64_t offset;
            int status;
        } bad[] = {
            {"lse one element short", lse, 1, PBSA_ERROR_BUFFER_TOO_SMALL},
            {"lse offset overflows", lse, UINT64_MAX - 4, PBSA_ERROR_SIZE_OVERFLOW},
            {"lse of another context", foreign_lse, 0, PBSA_ERROR_WRONG_DEVICE},
            {"lse in o", o.desc.buffer, 0, PBSA_ERROR_INVALID_VALUE},
        };
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            pbsa_params p = in.params;
            p.lse = bad[b].buffer;
            p.lse_offset = bad[b].offset;
            char what[128];
            snprintf(what, sizeof what, "%s: pbsa_attention, %s", shapes[s].name, bad[b].what);
            expect_failure(what,
                           pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                          &in.v.desc, &o.desc, &p, NULL, NULL),
                           bad[b].status, "params->lse");
            snprintf(what, sizeof what, "%s: pbsa_sparse_attention, %s", shapes[s].name,
                     bad[b].what);
            expect_failure(what,
                           pbsa_sparse_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc,
                                                 &in.v.desc, &o.desc, &p, NULL, 0, &list, NULL),
                           bad[b].status, "params->lse");
        }
        for (int x = 0; x < 2; x++) {
            expect_untouched(shapes[s].name, outputs[x], before[x]);
            free(before[x]);
        }
        clReleaseMemObject(lse);
        clReleaseMemObject(foreign_lse);
        tensor_free(&o);
        pbs_int_buffer_free(&counts);
        pbs_int_buffer_free(&blocks);
        pbs_inputs_free(&in);
    }
    clReleaseContext(foreign);
}

/* ---- nothing enqueued on error --------------------------------------------------------------- */

/* A kernel of the last stage that fails to build leaves nothing enqueued: every kernel (and
 * CLBlast's GEMM program) is prepared before the first launch. A context of its own starts with
 * an empty program cache, and PBSA_KERNEL_DIR points it at a sparse kernel that cannot compile. */
static void test_build_failure_enqueues_nothing(void **state)
{
    (void)state;
    static const pbs_case shape = {"f32_build_failure", ALL_F32, 1, 2, 1, 300, 300, 64, 32, 64,
                                   0.9f, 1, 1, PER, 0};
    pbs_inputs in;
    pbs_test_inputs(&in, &shape);
    char dir[] = "/tmp/pbsa-broken-kernels-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[sizeof dir + 32];
    snprintf(path, sizeof path, "%s/pbs_attention.cl", dir);
    FILE *file = fopen(path, "w");
    assert_non_null(file);
    fputs("#error \"broken on purpose\"\n", file);
    fclose(file);
    const char *previous = getenv("PBSA_KERNEL_DIR");
    char *saved = previous ? strdup(previous) : NULL;
    /* Read when the context is created. */
    assert_int_equal(setenv("PBSA_KERNEL_DIR", dir, 1), 0);
    pbsa_context *ctx = NULL;
    expect_ok("pbsa_context_create",
              pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx));

    static const pbsa_pbs_methods methods[2] = {
        {PBSA_SCORE_FUSED, PBSA_KV_GATHER, 0},
        {PBSA_SCORE_CLBLAST, PBSA_KV_MATERIALISED, 0},
    };
    for (int m = 0; m < 2; m++) {
        pbsa_pbs_force_methods(ctx, &methods[m]);
        size_t ws_bytes;
        assert_int_equal(pbsa_workspace_size(ctx, &in.q.desc, &in.k.desc, &in.params, &ws_bytes),
                         PBSA_SUCCESS);
        cl_mem workspace = poisoned_buffer(ws_bytes);
        host_tensor o;
        pbs_test_output(&o, &in);
        size_t sizes[2];
        unsigned char *before[2] = {snapshot(workspace, &sizes[0]),
                                    snapshot(o.desc.buffer, &sizes[1])};
        cl_event event = (cl_event)&ws_bytes;
        int status = pbsa_attention(ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                    &o.desc, &in.params, workspace, &event);
        const char *message = pbsa_context_last_error(ctx);
        printf("  %s, %s: %s\n", m ? "clblast" : "fused", m ? "materialised" : "gather", message);
        if (status != PBSA_ERROR_BUILD_FAILED || !strstr(message, "pbs_attention.cl"))
            fail_msg("pbsa_attention with a broken sparse kernel: status %d (%s), message '%s'",
                     status, pbsa_status_string(status), message);
        assert_null(event);
        expect_untouched("workspace after a build failure", workspace, before[0]);
        expect_untouched("output after a build failure", o.desc.buffer, before[1]);
        free(before[0]);
        free(before[1]);
        clReleaseMemObject(workspace);
        tensor_free(&o);
    }

    if (saved)
        setenv("PBSA_KERNEL_DIR", saved, 1);
    else
        unsetenv("PBSA_KERNEL_DIR");
    free(saved);
    pbsa_context_release(ctx);
    remove(path);
    rmdir(dir);
    pbs_inputs_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_kv_dtypes),
        cmocka_unit_test(test_small_workspace),
        cmocka_unit_test(test_lse_errors),
        cmocka_unit_test(test_build_failure_enqueues_nothing),
    };
    return pbs_test_main("pbs_errors", NULL, 0, tests, sizeof tests / sizeof tests[0]);
}
