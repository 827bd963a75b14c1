/* Fuzz target: the argument checks of the public calls, on a real OpenCL context with small
 * buffers. The input decodes into four tensor descriptors (buffer, dtype, sizes, strides,
 * offset), PBS and dense parameters, int buffers and offsets for the stage calls, and a
 * workspace. Every call must return without crashing, reading or writing out of bounds; a call
 * that fails must leave a message and no event. To keep runs fast no kernel is launched: a call
 * that could pass its checks (as pbsa_workspace_size() and the library's own tensor checks
 * predict) is skipped; pbsa_workspace_size(), pbsa_workspace_read() (a plain read),
 * pbsa_block_density() (host only) and the support queries (which compile nothing) always run,
 * and where a call fails its checks with a queue and every buffer given, its support query must
 * have said the same status and message. Input format: see decode below;
 * tests/fuzz/make_seeds.py writes the seeds in it. */
#include "core/internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the device side, made once ----------------------------------------------------------- */

enum { BUFFER_CHOICES = 6 };

static struct {
    cl_context cl_ctx, foreign_ctx;
    cl_device_id device;
    cl_command_queue queue;
    pbsa_context *ctx;
    cl_mem buffers[BUFFER_CHOICES]; /* NULL, 256 B, 64 KiB, 1 MiB, another context's, a view */
} dev;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_params: %s: %s\n", what, pbsa_context_last_error(NULL));
    exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (pbsa_helper_create_cl_context(NULL, &dev.cl_ctx, &dev.device) != PBSA_SUCCESS)
        die("no OpenCL device");
    cl_int err;
    dev.queue = clCreateCommandQueue(dev.cl_ctx, dev.device, 0, &err);
    if (err != CL_SUCCESS || pbsa_context_create(dev.cl_ctx, dev.device, NULL, &dev.ctx))
        die("set-up");
    dev.foreign_ctx = clCreateContext(NULL, 1, &dev.device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        die("second context");
    const size_t sizes[4] = {0, 256, 64 << 10, 1 << 20};
    for (int i = 1; i < 4; i++) {
        dev.buffers[i] = clCreateBuffer(dev.cl_ctx, CL_MEM_READ_WRITE, sizes[i], NULL, &err);
        if (err != CL_SUCCESS)
            die("buffers");
        /* Any bytes: the values never matter, only sizes and ownership. */
        unsigned char *zeros = calloc(1, sizes[i]);
        if (!zeros || clEnqueueWriteBuffer(dev.queue, dev.buffers[i], CL_TRUE, 0, sizes[i], zeros,
                                           0, NULL, NULL) != CL_SUCCESS)
            die("buffer contents");
        free(zeros);
    }
    dev.buffers[4] = clCreateBuffer(dev.foreign_ctx, CL_MEM_READ_WRITE, 64 << 10, NULL, &err);
    cl_buffer_region region = {4096, 8192};
    dev.buffers[5] = clCreateSubBuffer(dev.buffers[2], CL_MEM_READ_WRITE,
                                       CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    if (err != CL_SUCCESS)
        die("views");
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *at, *end;
} reader;

static uint8_t byte(reader *r) { return r->at < r->end ? *r->at++ : 0; }

static uint64_t raw(reader *r, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)byte(r) << (8 * i);
    return v;
}

/* A selector byte: below the table's size, a value from the table; above, raw bytes follow. */
static const int64_t int_table[] = {
    0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 96, 100, 127, 128, 129, 192,
    255, 256, 257, 300, 511, 512, 513, 1000, 1024, 4096, 65536, 1 << 20, 1 << 24, 1 << 30,
    INT32_MAX - 1, INT32_MAX, (int64_t)INT32_MAX + 1, UINT32_MAX, (int64_t)1 << 40,
    INT64_MAX / 2, INT64_MAX - 1, INT64_MAX, -1, -2, -16, -64, INT32_MIN, INT64_MIN,
};
enum { INT_TABLE = sizeof int_table / sizeof int_table[0] };

static int64_t int_field(reader *r)
{
    uint8_t s = byte(r);
    return s < INT_TABLE ? int_table[s] : (int64_t)raw(r, s & 1 ? 4 : 8);
}

static float float_field(reader *r)
{
    static const float table[] = {0.0f, 0.125f, 0.5f, 0.9f, 1.0f, 1.5f, 2.0f, -0.0f, -1.0f,
                                  1e-30f, 1e30f, 1e-45f, NAN, -NAN, INFINITY, -INFINITY};
    uint8_t s = byte(r);
    if (s < sizeof table / sizeof table[0])
        return table[s];
    uint32_t bits = (uint32_t)raw(r, 4);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static cl_mem buffer_field(reader *r) { return dev.buffers[byte(r) % BUFFER_CHOICES]; }

/* A tensor: buffer, dtype, four sizes, a layout (BHSD, BSHD or three raw strides), an offset. */
static void tensor_field(reader *r, pbsa_tensor *t)
{
    cl_mem buffer = buffer_field(r);
    pbsa_dtype dtype = (pbsa_dtype)((int)byte(r) - 1);
    int64_t b = int_field(r), h = int_field(r), s = int_field(r), d = int_field(r);
    uint8_t layout = byte(r) % 3;
    /* The constructors multiply the sizes in either order, as a caller would; use them only
     * where that cannot overflow (the harness would be the one at fault). */
    int64_t sd, hsd, hd, shd, sh, shd2;
    bool fits = !__builtin_mul_overflow(s, d, &sd) && !__builtin_mul_overflow(h, sd, &hsd) &&
                !__builtin_mul_overflow(h, d, &hd) && !__builtin_mul_overflow(s, hd, &shd) &&
                !__builtin_mul_overflow(s, h, &sh) && !__builtin_mul_overflow(sh, d, &shd2);
    if (layout == 0 && fits) {
        *t = pbsa_tensor_bhsd(buffer, dtype, b, h, s, d);
    } else if (layout == 1 && fits) {
        *t = pbsa_tensor_bshd(buffer, dtype, b, h, s, d);
    } else {
        *t = (pbsa_tensor){.buffer = buffer, .dtype = dtype, .batch = b, .heads = h, .seq = s,
                           .head_dim = d};
        t->stride_batch = int_field(r);
        t->stride_head = int_field(r);
        t->stride_seq = int_field(r);
    }
    t->offset = (uint64_t)int_field(r);
}

static void params_field(reader *r, pbsa_params *p)
{
    *p = pbsa_params_default();
    uint8_t s = byte(r);
    p->struct_size = s == 0 ? sizeof *p : s == 1 ? 0 : (size_t)int_field(r);
    p->block_size = (int)int_field(r);
    p->segment_size = (int)int_field(r);
    p->threshold = float_field(r);
    p->causal = byte(r) & 1;
    p->force_first_block = byte(r) & 1;
    p->gqa_mode = (pbsa_gqa_mode)(int)int_field(r);
    p->scale = float_field(r);
}

/* ---- checks --------------------------------------------------------------------------------- */

/* A support query's answer, kept to compare with the call's. */
typedef struct answer {
    int status;
    char message[1024];
} answer;

static answer query_answer(int status)
{
    answer a = {status, ""};
    snprintf(a.message, sizeof a.message, "%s", pbsa_context_last_error(dev.ctx));
    if (status != PBSA_SUCCESS && a.message[0] == '\0')
        abort();
    return a;
}

/* A failed call whose every buffer and queue were given answers as its support query did. */
static void expect_answer(int status, const answer *query, bool comparable, const char *call)
{
    if (comparable &&
        (status != query->status || strcmp(pbsa_context_last_error(dev.ctx), query->message))) {
        fprintf(stderr, "%s failed with %d (%s), its support query said %d (%s)\n", call, status,
                pbsa_context_last_error(dev.ctx), query->status, query->message);
        abort();
    }
}

/* A call that was expected to fail (or did fail) must leave a message and no event. */
static void expect_failed(int status, cl_event event, const char *call)
{
    if (status == PBSA_SUCCESS) {
        fprintf(stderr, "%s succeeded on arguments its checks should refuse\n", call);
        abort();
    }
    if (event || pbsa_context_last_error(dev.ctx)[0] == '\0') {
        fprintf(stderr, "%s failed (%d) without a message, or returned an event\n", call, status);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, data + size};
    pbsa_tensor q, k, v, o;
    tensor_field(&r, &q);
    tensor_field(&r, &k);
    tensor_field(&r, &v);
    tensor_field(&r, &o);
    pbsa_params params;
    params_field(&r, &params);
    pbsa_dense_params dense = {.causal = byte(&r) & 1, .scale = float_field(&r)};
    uint8_t nulls = byte(&r); /* which pointers to pass as NULL */
    cl_mem pi = buffer_field(&r), counts = buffer_field(&r), blocks = buffer_field(&r),
           workspace = buffer_field(&r);
    uint64_t pi_offset = (uint64_t)int_field(&r);
    pbsa_block_list list = {counts, blocks, (uint64_t)int_field(&r), (uint64_t)int_field(&r)};
    int part = (int)int_field(&r);
    size_t capacity = (size_t)(byte(&r) | byte(&r) << 8) * 4;

    const pbsa_tensor *qp = nulls & 1 ? NULL : &q, *kp = nulls & 2 ? NULL : &k,
                      *vp = nulls & 4 ? NULL : &v, *op = nulls & 8 ? NULL : &o;
    const pbsa_params *pp = nulls & 16 ? NULL : &params;
    const pbsa_block_list *lp = nulls & 32 ? NULL : &list;
    cl_command_queue queue = nulls & 64 ? NULL : dev.queue;

    /* What the checks predict: the PBS plan (q, k, params), the four tensors together. */
    size_t bytes = 0;
    int plan = pbsa_workspace_size(dev.ctx, qp, kp, pp, &bytes);
    if (plan != PBSA_SUCCESS && pbsa_context_last_error(dev.ctx)[0] == '\0')
        abort();
    pbsa_sequences seqs;
    int tensors = qp && kp && vp && op
                      ? pbsa_check_attention_tensors(dev.ctx, "fuzz", PBSA_CHECK_CALL, qp, kp, vp,
                                                     op, NULL, NULL, &seqs)
                      : PBSA_ERROR_NULL_ARGUMENT;
    bool queue_ok = queue != NULL;
    bool dense_scale_ok = isfinite(dense.scale) && dense.scale >= 0.0f;
    bool list_bad = !lp || !counts || !blocks || counts == dev.buffers[4] ||
                    blocks == dev.buffers[4];
    bool pi_bad = !pi || pi == dev.buffers[4];

    const answer dense_query =
        query_answer(pbsa_query_dense_support(dev.ctx, qp, kp, vp, op, &dense));
    const answer pbs_query =
        query_answer(pbsa_query_attention_support(dev.ctx, qp, kp, vp, op, pp));
    const bool comparable =
        queue_ok && qp && kp && vp && op && q.buffer && k.buffer && v.buffer && o.buffer;

    cl_event event = NULL;
    int status;
    if (!queue_ok || tensors != PBSA_SUCCESS || !dense_scale_ok) {
        status = pbsa_dense_attention(dev.ctx, queue, qp, kp, vp, op, &dense, &event);
        expect_failed(status, event, "pbsa_dense_attention");
        expect_answer(status, &dense_query, comparable, "pbsa_dense_attention");
    }
    bool attention_fails = !queue_ok || plan != PBSA_SUCCESS || tensors != PBSA_SUCCESS;
    if (attention_fails) {
        status = pbsa_attention(dev.ctx, queue, qp, kp, vp, op, pp, workspace, &event);
        expect_failed(status, event, "pbsa_attention");
        expect_answer(status, &pbs_query, comparable, "pbsa_attention");
        status = pbsa_sparse_attention(dev.ctx, queue, qp, kp, vp, op, pp, pi, pi_offset, lp,
                                       &event);
        expect_failed(status, event, "pbsa_sparse_attention");
    } else if (list_bad) {
        status = pbsa_sparse_attention(dev.ctx, queue, qp, kp, vp, op, pp, pi, pi_offset, lp,
                                       &event);
        expect_failed(status, event, "pbsa_sparse_attention");
    }
    if (!queue_ok || plan != PBSA_SUCCESS || pi_bad) {
        status = pbsa_permutation(dev.ctx, queue, qp, kp, pp, pi, pi_offset, workspace, &event);
        expect_failed(status, event, "pbsa_permutation");
    }
    if (!queue_ok || plan != PBSA_SUCCESS || pi_bad || list_bad) {
        status = pbsa_block_selection(dev.ctx, queue, qp, kp, pp, pi, pi_offset, lp, workspace,
                                      &event);
        expect_failed(status, event, "pbsa_block_selection");
    }

    /* A plain read: it may succeed. host has exactly capacity bytes. */
    void *host = malloc(capacity ? capacity : 1);
    if (host) {
        size_t part_size = 0;
        status = pbsa_workspace_read(dev.ctx, queue, qp, kp, pp, workspace,
                                     (pbsa_workspace_part)part, nulls & 128 ? NULL : host,
                                     capacity, &part_size);
        if (status != PBSA_SUCCESS && pbsa_context_last_error(dev.ctx)[0] == '\0')
            abort();
        if (status == PBSA_SUCCESS && part_size > capacity)
            abort();
        free(host);
    }

    /* Host only: counts and density of exactly the sizes the arguments imply. */
    int64_t nb = q.batch, nh = q.heads, sq = q.seq, skv = k.seq;
    int64_t block = pp ? pp->block_size : 0, rows = 0, heads = 0;
    int64_t q_blocks = block > 0 && sq > 0 ? sq / block + (sq % block != 0) : 0;
    bool small = nb > 0 && nh > 0 && sq > 0 && block > 0 && nb < 4096 && nh < 4096 &&
                 !__builtin_mul_overflow(nb, nh, &heads) && heads <= 4096 && q_blocks <= 4096 &&
                 !__builtin_mul_overflow(heads, q_blocks, &rows) && rows <= 1 << 16;
    cl_int *count_array = malloc(small && rows > 0 ? (size_t)rows * sizeof(cl_int) : 1);
    double *density = malloc(small ? (size_t)heads * sizeof(double) : 1);
    if (count_array && density) {
        if (small)
            for (int64_t i = 0; i < rows; i++)
                count_array[i] = (cl_int)(i % 7);
        /* Out-of-range arguments with tiny arrays: they must be refused before any read. */
        bool refused = !(nb > 0 && nh > 0 && sq > 0 && skv >= sq && block > 0);
        if (small || refused) {
            status = pbsa_block_density(nb, nh, sq, skv, pp, count_array, density);
            if (refused && status == PBSA_SUCCESS)
                abort();
        }
    }
    free(count_array);
    free(density);
    return 0;
}
