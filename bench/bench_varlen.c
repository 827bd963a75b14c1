/* pbsa-bench-varlen: what engines' calling conventions cost. Times one variable-length call over
 * a batch of mixed sequence lengths against the same sequences called one by one, and the same
 * variable-length call with K and V in a paged cache (each page size given) against packed K/V,
 * for PBS (pbsa_attention()) or dense attention. Every sequence is a whole prefill (as many
 * queries as keys).
 *
 * Timing: the whole call (every kernel of it, and for the sequences one by one every call),
 * between markers, after warm-up runs that compile the kernels; the median of the timed runs.
 * One input set: the correctness of these calls is the conformance suite's (tests/test_varlen.c),
 * not checked here. */
#include "bench_util.h"
#include "varlen_cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MIN_TIMED_RUNS = 3, MAX_PAGE_SIZES = 8, MAX_OPS = 2 + MAX_PAGE_SIZES };

typedef struct bench_options {
    bench_common_options c;
    int pbs; /* 1: pbsa_attention(), 0: pbsa_dense_attention() */
    int64_t page_sizes[MAX_PAGE_SIZES];
    int page_size_count;
    int block, segment;
    double threshold;
} bench_options;

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-bench-varlen [options]\n"
            "Times one variable-length call over sequences of mixed lengths against the same\n"
            "sequences one by one, and paged K/V against packed K/V.\n"
            "  --device SELECTOR   'P:D', a device index or a name substring (see pbsa-info)\n"
            "  --lengths L1,L2,..  the sequences' lengths, at most %d (default\n"
            "                      8192,512,3000,16384,1000,256,6000,2048)\n"
            "  --attention A       pbs or dense (default pbs)\n"
            "  --page-sizes P,..   page sizes of the paged runs (default 16,64,256)\n"
            "  --block N           PBS block size (default 128)\n"
            "  --segment N         PBS segment size (default 256)\n"
            "  --threshold T       PBS threshold (default 0.9)\n"
            "  --dtype T           f32, f16 or bf16 (default bf16)\n"
            "  --heads N           query heads (default 32)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default 8)\n"
            "  --head-dim N        64, 80, 96, 112, 128, 192 or 256 (default 128)\n"
            "  --repeats N         timed runs, median reported (default 10)\n"
            "  --warmup N          untimed runs first, kernel builds included (default 2)\n"
            "  --max-seconds S     stop timing after S s, keeping at least %d runs (default 5)\n"
            "  --json PATH         also write the results as JSON to PATH\n"
            "  --seed N            seed of the random inputs (default 1)\n"
            "  --portable          force the portable kernels\n"
            "  --help              this text\n",
            VARLEN_MAX_SEQUENCES, MIN_TIMED_RUNS);
}

static int own_option(const char *arg, const char *value, void *data)
{
    bench_options *o = data;
    long long n;
    if (strcmp(arg, "--attention") == 0) {
        if (strcmp(value, "pbs") != 0 && strcmp(value, "dense") != 0)
            return -1;
        o->pbs = strcmp(value, "pbs") == 0;
        return 1;
    }
    if (strcmp(arg, "--page-sizes") == 0)
        return bench_parse_lengths(value, o->page_sizes, MAX_PAGE_SIZES, &o->page_size_count)
                   ? 1
                   : -1;
    if (strcmp(arg, "--block") == 0 || strcmp(arg, "--segment") == 0) {
        if (!bench_parse_int(value, 1, 1 << 20, &n))
            return -1;
        *(strcmp(arg, "--block") == 0 ? &o->block : &o->segment) = (int)n;
        return 1;
    }
    if (strcmp(arg, "--threshold") == 0)
        return bench_parse_double(value, 0.0, 1e9, &o->threshold) ? 1 : -1;
    return 0;
}

/* Returns 0 to run, -1 after --help, else the exit status. */
static int parse_options(int argc, char **argv, bench_options *o)
{
    memset(o, 0, sizeof *o);
    o->pbs = 1;
    o->block = 128;
    o->segment = 256;
    o->threshold = 0.9;
    int parsed = bench_parse_options("pbsa-bench-varlen", argc, argv, usage, &o->c, own_option, o);
    if (parsed != 0)
        return parsed;
    static const int64_t lengths[] = {8192, 512, 3000, 16384, 1000, 256, 6000, 2048};
    if (o->c.length_count == 0) {
        memcpy(o->c.lengths, lengths, sizeof lengths);
        o->c.length_count = (int)(sizeof lengths / sizeof lengths[0]);
    }
    if (o->page_size_count == 0) {
        o->page_sizes[0] = 16, o->page_sizes[1] = 64, o->page_sizes[2] = 256;
        o->page_size_count = 3;
    }
    if (!o->c.dtype_given)
        o->c.dtype = PBSA_DTYPE_BF16;
    o->c.heads = o->c.heads ? o->c.heads : 32;
    o->c.kv_heads = o->c.kv_heads ? o->c.kv_heads : 8;
    o->c.head_dim = o->c.head_dim ? o->c.head_dim : 128;
    o->c.repeats = o->c.repeats ? o->c.repeats : 10;
    o->c.warmup = o->c.warmup ? o->c.warmup : 2;
    o->c.max_seconds = o->c.max_seconds > 0 ? o->c.max_seconds : 5.0;
    o->c.seed = o->c.seed_given ? o->c.seed : 1;
    if (o->c.length_count > VARLEN_MAX_SEQUENCES) {
        fprintf(stderr, "pbsa-bench-varlen: at most %d sequences\n", VARLEN_MAX_SEQUENCES);
        return 2;
    }
    if (o->c.kv_dtype_given) {
        fprintf(stderr, "pbsa-bench-varlen: --kv-dtype is not taken here (--dtype sets all)\n");
        return 2;
    }
    return bench_check_common_options("pbsa-bench-varlen", &o->c) ? 0 : 2;
}

/* What one timed operation runs: a variable-length call, or each sequence alone. */
typedef struct op_data {
    pbsa_context *ctx;
    int pbs;
    varlen_inputs in;          /* the variable-length call (packed or paged K/V) */
    cl_mem workspace;          /* PBS */
    int alone_count;           /* > 0: the sequences one by one instead */
    host_tensor q[VARLEN_MAX_SEQUENCES], k[VARLEN_MAX_SEQUENCES], v[VARLEN_MAX_SEQUENCES],
        o[VARLEN_MAX_SEQUENCES];
    cl_mem workspaces[VARLEN_MAX_SEQUENCES];
    pbsa_params alone_params;
    pbsa_dense_params alone_dense;
} op_data;

static int call(op_data *x, cl_command_queue queue, const pbsa_tensor *q, const pbsa_tensor *k,
                const pbsa_tensor *v, const pbsa_tensor *o, const pbsa_params *params,
                const pbsa_dense_params *dense, cl_mem workspace, cl_event *event)
{
    return x->pbs ? pbsa_attention(x->ctx, queue, q, k, v, o, params, workspace, event)
                  : pbsa_dense_attention(x->ctx, queue, q, k, v, o, dense, event);
}

static int enqueue(void *user, cl_command_queue queue, int run, cl_event *last)
{
    (void)run; /* one input set */
    op_data *x = user;
    *last = NULL;
    if (x->alone_count == 0)
        return call(x, queue, &x->in.q.desc, &x->in.k.desc, &x->in.v.desc, &x->in.o.desc,
                    &x->in.params, &x->in.dense, x->workspace, last);
    for (int b = 0; b < x->alone_count; b++) {
        if (*last)
            clReleaseEvent(*last);
        *last = NULL;
        int status = call(x, queue, &x->q[b].desc, &x->k[b].desc, &x->v[b].desc, &x->o[b].desc,
                          &x->alone_params, &x->alone_dense, x->workspaces[b], last);
        if (status != PBSA_SUCCESS)
            return status;
    }
    return PBSA_SUCCESS;
}

static cl_mem workspace_for(op_data *x, cl_context cl_ctx, const pbsa_tensor *q,
                            const pbsa_tensor *k, const pbsa_params *params)
{
    size_t bytes = 0;
    cl_int err = pbsa_workspace_size(x->ctx, q, k, params, &bytes);
    if (err != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-bench-varlen: pbsa_workspace_size: %s\n",
                pbsa_context_last_error(x->ctx));
        return NULL;
    }
    cl_mem m = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &err);
    return err == CL_SUCCESS ? m : NULL;
}

/* Inputs of an operation: page_size 0 packed, else paged; alone: the sequences one by one. */
static int op_make(op_data *x, const varlen_case *c, const support_device *d, int alone,
                   unsigned long long seed)
{
    memset(x, 0, sizeof *x);
    x->ctx = d->ctx;
    x->pbs = c->pbs;
    pbs_report r = {0};
    if (varlen_inputs_make(&x->in, c, seed, d->cl_ctx, &r)) {
        fprintf(stderr, "pbsa-bench-varlen: %s\n", r.message);
        return 1;
    }
    if (!alone) {
        if (c->pbs && !(x->workspace = workspace_for(x, d->cl_ctx, &x->in.q.desc, &x->in.k.desc,
                                                     &x->in.params)))
            return 1;
        return 0;
    }
    x->alone_params = x->in.params;
    x->alone_params.varlen = NULL;
    x->alone_params.paged_kv = NULL;
    x->alone_dense = (pbsa_dense_params){.causal = c->causal};
    for (int b = 0; b < c->count; b++) {
        x->alone_count = b + 1;
        tensor_init(&x->o[b], c->dtype, 1, c->q_heads, c->q_lens[b], c->head_dim, TENSOR_BHSD, 0);
        if (varlen_sequence_alone(&x->in, b, &x->q[b], &x->k[b], &x->v[b], &r) ||
            tensor_upload(&x->q[b], d->cl_ctx) != CL_SUCCESS ||
            tensor_upload(&x->k[b], d->cl_ctx) != CL_SUCCESS ||
            tensor_upload(&x->v[b], d->cl_ctx) != CL_SUCCESS ||
            tensor_upload(&x->o[b], d->cl_ctx) != CL_SUCCESS) {
            fprintf(stderr, "pbsa-bench-varlen: cannot make sequence %d alone\n", b);
            return 1;
        }
        if (c->pbs && !(x->workspaces[b] = workspace_for(x, d->cl_ctx, &x->q[b].desc,
                                                          &x->k[b].desc, &x->alone_params)))
            return 1;
    }
    return 0;
}

static void op_free(op_data *x)
{
    for (int b = 0; b < x->alone_count; b++) {
        tensor_free(&x->q[b]);
        tensor_free(&x->k[b]);
        tensor_free(&x->v[b]);
        tensor_free(&x->o[b]);
        bench_release_mem(&x->workspaces[b]);
    }
    bench_release_mem(&x->workspace);
    varlen_inputs_free(&x->in);
}

static int write_json(const bench_options *o, const bench_run_info *ri, bench_op *ops,
                      int count, int runs)
{
    json_writer w;
    FILE *file = bench_json_open("pbsa-bench-varlen", o->c.json_path, &w);
    if (!file)
        return 1;
    json_object_begin(&w, NULL);
    bench_json_run_info(&w, "varlen", ri);
    json_string(&w, "attention", o->pbs ? "pbs" : "dense");
    json_string(&w, "dtype", bench_dtype_name(o->c.dtype));
    json_int(&w, "heads", o->c.heads);
    json_int(&w, "kv_heads", o->c.kv_heads);
    json_int(&w, "head_dim", o->c.head_dim);
    if (o->pbs) {
        json_int(&w, "block_size", o->block);
        json_int(&w, "segment_size", o->segment);
        json_number(&w, "threshold", o->threshold);
    }
    json_array_begin(&w, "lengths");
    for (int i = 0; i < o->c.length_count; i++)
        json_int(&w, NULL, (long long)o->c.lengths[i]);
    json_array_end(&w);
    json_int(&w, "runs", runs);
    json_array_begin(&w, "results");
    for (int i = 0; i < count; i++) {
        json_object_begin(&w, NULL);
        json_string(&w, "name", ops[i].name);
        json_number(&w, "ms_median", timing_median(ops[i].times, runs));
        json_number(&w, "ms_min", timing_min(ops[i].times, runs));
        json_object_end(&w);
    }
    json_array_end(&w);
    json_object_end(&w);
    return bench_json_close("pbsa-bench-varlen", o->c.json_path, file, &w);
}

int main(int argc, char **argv)
{
    bench_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0)
        return parsed < 0 ? 0 : parsed;
    static bench_run_info ri;
    bench_run_info_init(&ri, argc, argv);
    support_device d;
    if (bench_device_open("pbsa-bench-varlen", o.c.device, o.c.portable, &d, &ri) != 0)
        return 2;
    bench_timer timer = {.program = "pbsa-bench-varlen",
                         .label = o.pbs ? "pbs" : "dense",
                         .warmup = o.c.warmup,
                         .repeats = o.c.repeats,
                         .min_runs = MIN_TIMED_RUNS,
                         .max_seconds = o.c.max_seconds};
    if (bench_timer_init(&timer, &d) != CL_SUCCESS) {
        fprintf(stderr, "pbsa-bench-varlen: cannot create a buffer on the device\n");
        support_device_close(&d);
        return 2;
    }
    varlen_case c = {.name = "bench", .pbs = o.pbs, .dtype = o.c.dtype, .q_heads = o.c.heads,
                     .kv_heads = o.c.kv_heads, .head_dim = o.c.head_dim,
                     .count = o.c.length_count, .causal = 1, .block = o.block,
                     .segment = o.segment, .threshold = (float)o.threshold,
                     .mode = PBSA_GQA_PER_QUERY_HEAD};
    for (int i = 0; i < c.count; i++)
        c.q_lens[i] = c.kv_lens[i] = (int)o.c.lengths[i];

    static op_data data[MAX_OPS];
    static char names[MAX_OPS][32];
    static double times[MAX_OPS][1024];
    bench_op ops[MAX_OPS];
    int count = 0, exit_status = 0;
    const int op_total = 2 + o.page_size_count;
    for (int i = 0; i < op_total && exit_status == 0; i++) {
        varlen_case oc = c;
        oc.page_size = i >= 2 ? (int)o.page_sizes[i - 2] : 0;
        if (i == 0)
            snprintf(names[i], sizeof names[i], "varlen");
        else if (i == 1)
            snprintf(names[i], sizeof names[i], "one_by_one");
        else
            snprintf(names[i], sizeof names[i], "varlen_paged_%d", oc.page_size);
        count = i + 1;
        if (op_make(&data[i], &oc, &d, i == 1, o.c.seed) != 0)
            exit_status = 1;
        ops[i] = (bench_op){names[i], enqueue, &data[i], times[i]};
    }
    bench_print_device(&ri);
    printf("%s attention, %s, heads %d, kv_heads %d, head_dim %d, causal, lengths",
           o.pbs ? "PBS" : "dense", bench_dtype_name(o.c.dtype), o.c.heads, o.c.kv_heads,
           o.c.head_dim);
    for (int i = 0; i < o.c.length_count; i++)
        printf("%s%lld", i ? "," : " ", (long long)o.c.lengths[i]);
    printf("\n");
    int runs = 0;
    if (exit_status == 0) {
        if (timer.repeats > 1024)
            timer.repeats = 1024;
        char error[512];
        runs = bench_run_ops(&timer, ops, count, error, sizeof error);
        if (runs < 0) {
            fprintf(stderr, "pbsa-bench-varlen: %s\n", error);
            exit_status = 1;
        }
    }
    if (runs > 0) {
        const double varlen_ms = timing_median(ops[0].times, runs);
        printf("%-20s %12s %12s %s\n", "call", "ms_median", "ms_min", "ratio");
        for (int i = 0; i < count; i++) {
            const double ms = timing_median(ops[i].times, runs);
            printf("%-20s %12.3f %12.3f %s%.3f\n", ops[i].name, ms,
                   timing_min(ops[i].times, runs),
                   i == 1 ? "one by one / varlen " : i >= 2 ? "paged / packed " : "",
                   i == 0 ? 1.0 : ms / varlen_ms);
        }
        if (o.c.json_path && write_json(&o, &ri, ops, count, runs) != 0)
            exit_status = 1;
    }
    for (int i = 0; i < count; i++)
        op_free(&data[i]);
    bench_timer_release(&timer);
    support_device_close(&d);
    return exit_status;
}
