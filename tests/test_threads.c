/* Thread safety as include/pbsattn.h documents it: one pbsa_context shared by threads that each
 * use their own command queue. Every thread runs dense attention, PBS attention and the stage
 * calls at once, over and over, and must get bit for bit what a single thread got first. Threads
 * that meet a kernel variant for the first time build it together; each thread reads its own last
 * error while the others fail in other ways. */
#include "device.h"
#include "pbsattn_ref.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

enum { THREADS = 4, ROUNDS = 3 };

typedef enum job_kind {
    JOB_DENSE,
    JOB_PBS,         /* pbsa_attention, the library's own workspace */
    JOB_PBS_STAGES,  /* pbsa_permutation, pbsa_block_selection, pbsa_sparse_attention */
} job_kind;

typedef struct job {
    const char *name;
    job_kind kind;
    pbsa_dtype dtype;
    int q_heads, kv_heads, seq, head_dim;
    int causal;
    pbsa_gqa_mode mode;
} job;

static const job jobs[] = {
    {"dense f32 d64", JOB_DENSE, PBSA_DTYPE_F32, 4, 2, 200, 64, 1, PBSA_GQA_PER_QUERY_HEAD},
    {"dense f16 d128 non-causal", JOB_DENSE, PBSA_DTYPE_F16, 2, 1, 130, 128, 0,
     PBSA_GQA_PER_QUERY_HEAD},
    {"pbs f32 d64", JOB_PBS, PBSA_DTYPE_F32, 4, 2, 256, 64, 1, PBSA_GQA_PER_QUERY_HEAD},
    {"pbs bf16 d64 shared", JOB_PBS, PBSA_DTYPE_BF16, 4, 1, 192, 64, 1,
     PBSA_GQA_SHARED_PER_KV_GROUP},
    {"pbs stages f32 d64", JOB_PBS_STAGES, PBSA_DTYPE_F32, 2, 2, 256, 64, 1,
     PBSA_GQA_PER_QUERY_HEAD},
};
enum { JOB_COUNT = sizeof jobs / sizeof jobs[0] };

static support_device fixture;

/* The inputs of each job (shared, only read) and what one thread computed. */
static struct {
    cl_mem q, k, v;
    size_t q_bytes, kv_bytes;
    unsigned char *expected;
} data[JOB_COUNT];

static pbsa_params params_of(const job *j)
{
    pbsa_params p = pbsa_params_default();
    p.block_size = 32;
    p.segment_size = 64;
    p.causal = j->causal;
    p.gqa_mode = j->mode;
    return p;
}

static pbsa_tensor tensor_of(cl_mem buffer, const job *j, int heads)
{
    return pbsa_tensor_bhsd(buffer, j->dtype, 1, heads, j->seq, j->head_dim);
}

/* Runs job j on queue into o (q_bytes); returns the status and a message in error. */
static int run_job(pbsa_context *ctx, cl_command_queue queue, int index, cl_mem o, char *error,
                   size_t error_size)
{
    const job *j = &jobs[index];
    pbsa_tensor q = tensor_of(data[index].q, j, j->q_heads),
                k = tensor_of(data[index].k, j, j->kv_heads),
                v = tensor_of(data[index].v, j, j->kv_heads), out = tensor_of(o, j, j->q_heads);
    pbsa_params p = params_of(j);
    cl_context cl_ctx = fixture.cl_ctx;
    int status = PBSA_SUCCESS;
    const char *step = "";
    switch (j->kind) {
    case JOB_DENSE: {
        pbsa_dense_params dense = {.causal = j->causal};
        step = "pbsa_dense_attention";
        status = pbsa_dense_attention(ctx, queue, &q, &k, &v, &out, &dense, NULL);
        break;
    }
    case JOB_PBS:
        step = "pbsa_attention";
        status = pbsa_attention(ctx, queue, &q, &k, &v, &out, &p, NULL, NULL);
        break;
    case JOB_PBS_STAGES: {
        int heads = j->mode == PBSA_GQA_PER_QUERY_HEAD ? j->q_heads : j->kv_heads;
        int blocks = (j->seq + p.block_size - 1) / p.block_size;
        size_t rows = (size_t)j->q_heads * blocks;
        cl_int err;
        cl_mem pi = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, (size_t)heads * j->seq * 4, NULL,
                                   &err);
        cl_mem counts = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, rows * 4, NULL, &err);
        cl_mem list = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, rows * blocks * 4, NULL, &err);
        pbsa_block_list blocks_list = {counts, list, 0, 0};
        if (!pi || !counts || !list) {
            status = CL_OUT_OF_RESOURCES;
            step = "clCreateBuffer";
        }
        if (status == PBSA_SUCCESS) {
            step = "pbsa_permutation";
            status = pbsa_permutation(ctx, queue, &q, &k, &p, pi, 0, NULL, NULL);
        }
        if (status == PBSA_SUCCESS) {
            step = "pbsa_block_selection";
            status = pbsa_block_selection(ctx, queue, &q, &k, &p, pi, 0, &blocks_list, NULL,
                                          NULL);
        }
        if (status == PBSA_SUCCESS) {
            step = "pbsa_sparse_attention";
            status = pbsa_sparse_attention(ctx, queue, &q, &k, &v, &out, &p, pi, 0, &blocks_list,
                                           NULL);
        }
        if (status == PBSA_SUCCESS)
            status = clFinish(queue);
        if (pi)
            clReleaseMemObject(pi);
        if (counts)
            clReleaseMemObject(counts);
        if (list)
            clReleaseMemObject(list);
        break;
    }
    }
    if (status != PBSA_SUCCESS)
        snprintf(error, error_size, "%s: %s: %d (%s): %s", j->name, step, status,
                 pbsa_status_string(status), pbsa_context_last_error(ctx));
    return status;
}

static cl_mem new_output(int index)
{
    cl_int err;
    cl_mem o = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE, data[index].q_bytes, NULL, &err);
    return err == CL_SUCCESS ? o : NULL;
}

/* Reads o and compares it with what the single thread got; false (and a message) if not equal. */
static bool same_as_expected(cl_command_queue queue, int index, cl_mem o, char *error,
                             size_t error_size)
{
    size_t bytes = data[index].q_bytes;
    unsigned char *got = malloc(bytes);
    bool same = got && clEnqueueReadBuffer(queue, o, CL_TRUE, 0, bytes, got, 0, NULL, NULL) ==
                           CL_SUCCESS;
    if (same && memcmp(got, data[index].expected, bytes) != 0) {
        size_t at = 0;
        while (got[at] == data[index].expected[at])
            at++;
        snprintf(error, error_size, "%s: the result differs from the single-threaded one at byte "
                                    "%zu",
                 jobs[index].name, at);
        same = false;
    } else if (!same) {
        snprintf(error, error_size, "%s: cannot read the result back", jobs[index].name);
    }
    free(got);
    return same;
}

/* ---- set-up ---------------------------------------------------------------------------------- */

static void fill(unsigned char *bytes, size_t count, pbsa_dtype dtype, uint64_t seed)
{
    for (size_t i = 0; i < count; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        float x = (float)((double)(seed >> 11) * 0x1.0p-53 * 4.0 - 2.0);
        uint16_t bits;
        switch (dtype) {
        case PBSA_DTYPE_F32: memcpy(bytes + 4 * i, &x, 4); continue;
        case PBSA_DTYPE_F16: bits = pbsa_ref_float_to_half(x); break;
        default: bits = pbsa_ref_float_to_bf16(x); break;
        }
        memcpy(bytes + 2 * i, &bits, 2);
    }
}

static cl_mem upload_random(size_t count, pbsa_dtype dtype, uint64_t seed, size_t *bytes)
{
    *bytes = count * pbsa_dtype_size(dtype);
    unsigned char *host = malloc(*bytes);
    assert_non_null(host);
    fill(host, count, dtype, seed);
    cl_int err;
    cl_mem mem = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, *bytes,
                                host, &err);
    assert_int_equal(err, CL_SUCCESS);
    free(host);
    return mem;
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < JOB_COUNT; i++) {
        const job *j = &jobs[i];
        size_t kv_count = (size_t)j->kv_heads * j->seq * j->head_dim;
        data[i].q = upload_random((size_t)j->q_heads * j->seq * j->head_dim, j->dtype,
                                  100 + (uint64_t)i, &data[i].q_bytes);
        data[i].k = upload_random(kv_count, j->dtype, 200 + (uint64_t)i, &data[i].kv_bytes);
        data[i].v = upload_random(kv_count, j->dtype, 300 + (uint64_t)i, &data[i].kv_bytes);
        /* One thread first: the results every thread must reproduce. */
        cl_mem o = new_output(i);
        assert_non_null(o);
        char error[1200] = "";
        if (run_job(fixture.ctx, fixture.queue, i, o, error, sizeof error) != PBSA_SUCCESS)
            fail_msg("%s", error);
        data[i].expected = malloc(data[i].q_bytes);
        assert_non_null(data[i].expected);
        assert_int_equal(clEnqueueReadBuffer(fixture.queue, o, CL_TRUE, 0, data[i].q_bytes,
                                             data[i].expected, 0, NULL, NULL),
                         CL_SUCCESS);
        clReleaseMemObject(o);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < JOB_COUNT; i++) {
        clReleaseMemObject(data[i].q);
        clReleaseMemObject(data[i].k);
        clReleaseMemObject(data[i].v);
        free(data[i].expected);
    }
    return 0;
}

/* ---- threads --------------------------------------------------------------------------------- */

typedef struct worker {
    pthread_t thread;
    int id;
    pbsa_context *ctx;
    pthread_barrier_t *start;
    int only_job; /* -1: every job, in an order of the thread's own */
    int rounds;
    int done;     /* jobs that ran and matched */
    char error[1200];
} worker;

static void *worker_main(void *arg)
{
    worker *w = arg;
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(fixture.cl_ctx, fixture.device, 0, &err);
    cl_mem outputs[JOB_COUNT] = {NULL};
    for (int i = 0; i < JOB_COUNT && err == CL_SUCCESS; i++)
        if (!(outputs[i] = new_output(i)))
            err = CL_OUT_OF_RESOURCES;
    pthread_barrier_wait(w->start);
    if (err != CL_SUCCESS) {
        snprintf(w->error, sizeof w->error, "thread %d: set-up failed (%d)", w->id, err);
        goto done;
    }
    for (int round = 0; round < w->rounds && !w->error[0]; round++) {
        for (int n = 0; n < JOB_COUNT && !w->error[0]; n++) {
            int i = w->only_job >= 0 ? w->only_job : (n + w->id + round) % JOB_COUNT;
            if (run_job(w->ctx, queue, i, outputs[i], w->error, sizeof w->error) != PBSA_SUCCESS)
                break;
            if (!same_as_expected(queue, i, outputs[i], w->error, sizeof w->error))
                break;
            w->done++;
            if (w->only_job >= 0)
                break;
        }
    }
done:
    for (int i = 0; i < JOB_COUNT; i++)
        if (outputs[i])
            clReleaseMemObject(outputs[i]);
    if (queue)
        clReleaseCommandQueue(queue);
    return NULL;
}

/* Runs THREADS workers on ctx, started together; fails on the first thread's error. */
static void run_workers(pbsa_context *ctx, int only_job, int rounds, int expected_done)
{
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){.id = t, .ctx = ctx, .start = &start, .only_job = only_job,
                              .rounds = rounds};
        assert_int_equal(pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(workers[t].thread, NULL), 0);
    pthread_barrier_destroy(&start);
    for (int t = 0; t < THREADS; t++) {
        if (workers[t].error[0])
            fail_msg("thread %d: %s", t, workers[t].error);
        assert_int_equal(workers[t].done, expected_done);
    }
}

/* Every thread runs every job, ROUNDS times, in its own order, on the shared context whose
 * kernels are already built. */
static void test_shared_context(void **state)
{
    (void)state;
    run_workers(fixture.ctx, -1, ROUNDS, ROUNDS * JOB_COUNT);
}

/* On a new context, the threads all meet each kernel variant for the first time together: every
 * job, then all threads on one job at once. */
static void test_first_builds(void **state)
{
    (void)state;
    for (int i = -1; i < JOB_COUNT; i++) {
        pbsa_context *ctx = NULL;
        assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx),
                         PBSA_SUCCESS);
        run_workers(ctx, i, 1, i < 0 ? JOB_COUNT : 1);
        pbsa_context_release(ctx);
    }
}

/* The log callback may be called from every thread at once. */
static atomic_int logged;
static void count_log(pbsa_log_level level, const char *message, void *user_data)
{
    (void)level;
    (void)message;
    (void)user_data;
    atomic_fetch_add(&logged, 1);
}

typedef struct error_worker {
    pthread_t thread;
    int id;
    pthread_barrier_t *start;
    char error[1200];
} error_worker;

/* Each thread fails in a way of its own, with successful calls in between, and must always read
 * its own message. */
static void *error_main(void *arg)
{
    error_worker *w = arg;
    static const char *const names[THREADS] = {"q.head_dim", "params->threshold", "queue",
                                               "k.dtype"};
    const job *j = &jobs[0];
    pbsa_tensor q = tensor_of(data[0].q, j, j->q_heads), k = tensor_of(data[0].k, j, j->kv_heads),
                v = tensor_of(data[0].v, j, j->kv_heads);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(fixture.cl_ctx, fixture.device, 0, &err);
    cl_mem o_mem = new_output(0);
    pbsa_tensor o = tensor_of(o_mem, j, j->q_heads);
    pthread_barrier_wait(w->start);
    for (int n = 0; n < 50 && !w->error[0] && queue && o_mem; n++) {
        pbsa_tensor bad_q = q, bad_k = k;
        pbsa_params p = params_of(j);
        cl_command_queue use = queue;
        switch (w->id) {
        case 0: bad_q.head_dim = 32; break;
        case 1: p.threshold = -1.0f; break;
        case 2: use = NULL; break;
        default: bad_k.dtype = PBSA_DTYPE_BF16; break;
        }
        int status = pbsa_attention(fixture.ctx, use, &bad_q, &bad_k, &v, &o, &p, NULL, NULL);
        const char *message = pbsa_context_last_error(fixture.ctx);
        if (status == PBSA_SUCCESS || !strstr(message, names[w->id])) {
            snprintf(w->error, sizeof w->error, "status %d, message \"%s\" does not name %s",
                     status, message, names[w->id]);
            break;
        }
        if (n % 10 == 0) {
            pbsa_dense_params dense = {.causal = 1};
            status = pbsa_dense_attention(fixture.ctx, queue, &q, &k, &v, &o, &dense, NULL);
            if (status != PBSA_SUCCESS || pbsa_context_last_error(fixture.ctx)[0])
                snprintf(w->error, sizeof w->error, "a good call: %d, last error \"%s\"", status,
                         pbsa_context_last_error(fixture.ctx));
            clFinish(queue);
        }
    }
    if (o_mem)
        clReleaseMemObject(o_mem);
    if (queue)
        clReleaseCommandQueue(queue);
    return NULL;
}

static void test_errors_per_thread(void **state)
{
    (void)state;
    atomic_store(&logged, 0);
    pbsa_set_log_callback(count_log, NULL);
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    error_worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (error_worker){.id = t, .start = &start};
        assert_int_equal(pthread_create(&workers[t].thread, NULL, error_main, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_join(workers[t].thread, NULL), 0);
    pthread_barrier_destroy(&start);
    pbsa_set_log_callback(NULL, NULL);
    for (int t = 0; t < THREADS; t++)
        if (workers[t].error[0])
            fail_msg("thread %d: %s", t, workers[t].error);
    assert_int_equal(atomic_load(&logged), THREADS * 50);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_context),
        cmocka_unit_test(test_first_builds),
        cmocka_unit_test(test_errors_per_thread),
    };
    int failed = cmocka_run_group_tests_name("threads", tests, setup, teardown);
    support_device_close(&fixture);
    return failed;
}
