/* pbsa-bench-dense: throughput of pbsa_dense_attention() over a list of sequence lengths on one
 * OpenCL device, next to the fp32 FMA peak measured in the same run, with a correctness
 * spot-check of every length against the float64 CPU reference.
 *
 * Timing: OpenCL profiling events of the kernel only, after warm-up runs (which also compile the
 * kernels); the median of the timed runs, whose inputs rotate over several input sets so that no
 * run finds its inputs in cache from the run before. */
#include "bench_util.h"
#include "fma_peak.h"
#include "pbsattn.h"
#include "pbsattn_ref.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MIN_INPUT_SETS = 2,
    MAX_INPUT_SETS = 4,
    CHECK_ROWS = 8,           /* sampled query rows per checked head */
    MIN_TIMED_RUNS = 3,       /* kept even when the time budget of a length runs out */
    DEFAULT_CHECK_LIMIT = 2048,
};

typedef enum check_mode { CHECK_AUTO, CHECK_ALWAYS, CHECK_NEVER } check_mode;

typedef struct bench_options {
    bench_common_options c;
    int64_t q_len; /* 0: the queries span the whole sequence */
    int batch, causal;
    check_mode check;
} bench_options;

typedef struct length_result {
    int64_t seq, q_len;
    int sets, runs;
    double flops, ms_median, ms_min, tflops, fraction;
    int checked;
    double rel_l2;
    long non_finite; /* NaN or Inf elements in the read-back heads of the output */
    int check_ok;
    char error[512];
} length_result;

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-bench-dense [options]\n"
            "Times pbsa_dense_attention() per sequence length with OpenCL profiling events and\n"
            "reports TFLOP/s next to the fp32 FMA peak measured in the same run.\n"
            "  --device SELECTOR   'P:D', a device index or a name substring (see pbsa-info);\n"
            "                      default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --lengths L1,L2,..  key sequence lengths (default 1024,4096,16384,32768)\n"
            "  --q-len N           queries are the last N positions (chunked prefill);\n"
            "                      default: as many as the keys\n"
            "  --dtype T           f32, f16 or bf16, of Q and O (and K and V) (default bf16)\n"
            "  --kv-dtype T        f32, f16 or bf16, of K and V (default: --dtype)\n"
            "  --heads N           query heads (default 32)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default: --heads)\n"
            "  --head-dim N        64, 80, 96, 112, 128, 192 or 256 (default 128)\n"
            "  --batch N           batch size (default 1)\n"
            "  --causal 0|1        causal mask (default 1)\n"
            "  --repeats N         timed runs per length, median reported (default 10)\n"
            "  --warmup N          untimed runs first, kernel build included (default 2)\n"
            "  --max-seconds S     stop timing a length after S s, keeping at least %d runs\n"
            "                      (default 3)\n"
            "  --check MODE        auto (lengths <= %d), always or never: compare %d sampled\n"
            "                      rows of the first and the last head with the CPU reference\n"
            "  --json PATH         also write the results as JSON to PATH\n"
            "  --seed N            seed of the random inputs (default 1)\n"
            "  --portable          force the portable kernels\n"
            "  --help              this text\n"
            "FLOPs: 4*B*Hq*Sq*Skv*D; causal with Sq == Skv counts half of that, causal with\n"
            "Sq < Skv counts the exact number of visible (query, key) pairs times 4*D.\n"
            "Exit status: 0 on success, 1 when a length failed or its check found NaN/Inf or an\n"
            "error above the dtype's limit, 2 on bad arguments or no device.\n",
            MIN_TIMED_RUNS, DEFAULT_CHECK_LIMIT, CHECK_ROWS);
}

/* Returns 0 when the options are usable, 2 otherwise (after a message), -1 after --help. */
/* bench_own_option: the options of this program. */
static int dense_option(const char *arg, const char *value, void *data)
{
    bench_options *o = data;
    long long n = 0;
    bool ok = true;
    if (strcmp(arg, "--q-len") == 0) {
        ok = bench_parse_int(value, 0, INT32_MAX, &n);
        o->q_len = n;
    } else if (strcmp(arg, "--batch") == 0) {
        ok = bench_parse_int(value, 1, 65536, &n);
        o->batch = (int)n;
    } else if (strcmp(arg, "--causal") == 0) {
        ok = bench_parse_int(value, 0, 1, &n);
        o->causal = (int)n;
    } else if (strcmp(arg, "--check") == 0) {
        if (strcmp(value, "auto") == 0)
            o->check = CHECK_AUTO;
        else if (strcmp(value, "always") == 0)
            o->check = CHECK_ALWAYS;
        else if (strcmp(value, "never") == 0)
            o->check = CHECK_NEVER;
        else
            ok = false;
    } else {
        return 0;
    }
    return ok ? 1 : -1;
}

static int parse_options(int argc, char **argv, bench_options *o)
{
    static const char program[] = "pbsa-bench-dense";
    static const int64_t default_lengths[] = {1024, 4096, 16384, 32768};
    memset(o, 0, sizeof *o);
    o->batch = 1;
    o->causal = 1;
    o->check = CHECK_AUTO;
    int status = bench_parse_options(program, argc, argv, usage, &o->c, dense_option, o);
    if (status != 0)
        return status;
    bench_common_options *c = &o->c;
    if (c->length_count == 0) {
        c->length_count = (int)(sizeof default_lengths / sizeof default_lengths[0]);
        memcpy(c->lengths, default_lengths, sizeof default_lengths);
    }
    if (!c->dtype_given)
        c->dtype = PBSA_DTYPE_BF16;
    if (!c->kv_dtype_given)
        c->kv_dtype = c->dtype;
    c->heads = c->heads ? c->heads : 32;
    c->head_dim = c->head_dim ? c->head_dim : 128;
    c->repeats = c->repeats ? c->repeats : 10;
    c->warmup = c->warmup ? c->warmup : 2;
    c->max_seconds = c->max_seconds > 0.0 ? c->max_seconds : 3.0;
    c->seed = c->seed_given ? c->seed : 1;
    if (!bench_check_common_options(program, c))
        return 2;
    for (int i = 0; i < c->length_count; i++)
        if (o->q_len > c->lengths[i]) {
            fprintf(stderr, "%s: --q-len %lld exceeds the length %lld\n", program,
                    (long long)o->q_len, (long long)c->lengths[i]);
            return 2;
        }
    return 0;
}

/* The rel_l2 limit of the spot-check: output rounding of the storage type plus fp32
 * accumulation over long rows, with room to spare (a 5% error in the softmax scale already
 * exceeds it in every dtype). */
static double check_limit(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return 1e-4;
    case PBSA_DTYPE_F16: return 2e-3;
    case PBSA_DTYPE_BF16: return 1e-2;
    }
    return 0.0;
}

/* The limit of a call with Q and O in o's dtype and K/V in another: the looser (Q is rounded to
 * K/V's type on the tensor cores). */
static double call_limit(const bench_options *o)
{
    return fmax(check_limit(o->c.dtype), check_limit(o->c.kv_dtype));
}

/* FLOPs of one forward pass: QK^T and PV, 2 FLOPs per multiply-add each, 4*D per (query, key)
 * pair. Causal with Sq == Skv counts half of the full product (the usual convention); with
 * Sq < Skv, query i sits at position i + Skv - Sq and sees that many keys plus one. */
static double attention_flops(const bench_options *o, int64_t sq, int64_t skv)
{
    double per_pair = 4.0 * o->batch * o->c.heads * o->c.head_dim;
    if (!o->causal)
        return per_pair * (double)sq * (double)skv;
    if (sq == skv)
        return per_pair * (double)sq * (double)skv / 2.0;
    return per_pair * ((double)sq * (double)(skv - sq) + (double)sq * (double)(sq + 1) / 2.0);
}

/* ---------------------------------------------------------------------------------------------
 * Dense attention at one length
 * ------------------------------------------------------------------------------------------- */

typedef struct input_set {
    cl_mem q, k, v;
} input_set;

/* Compares CHECK_ROWS sampled rows of the first head (batch 0) and of the last head (last batch)
 * with the reference computed on the slice those rows depend on, and counts NaN/Inf in both
 * heads of the output. Returns 0, or an OpenCL/library status. */
static int check_output(const bench_options *o, cl_command_queue queue, const input_set *set,
                        cl_mem out, int64_t sq, int64_t skv, length_result *r)
{
    /* Q and O in dtype, K and V in kv_dtype. */
    const pbsa_dtype dtype = o->c.dtype, kv_dtype = o->c.kv_dtype;
    const size_t element = pbsa_dtype_size(dtype), kv_element = pbsa_dtype_size(kv_dtype);
    const int64_t d = o->c.head_dim;
    const int64_t group = o->c.heads / o->c.kv_heads;
    unsigned char *qh = malloc((size_t)(sq * d) * element);
    unsigned char *oh = malloc((size_t)(sq * d) * element);
    unsigned char *kh = malloc((size_t)(skv * d) * kv_element);
    unsigned char *vh = malloc((size_t)(skv * d) * kv_element);
    double ref[4096];
    double diff2 = 0.0, ref2 = 0.0;
    int status = PBSA_SUCCESS;
    if (!qh || !oh || !kh || !vh) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    const int64_t picks[2][2] = {{0, 0}, {o->batch - 1, o->c.heads - 1}};
    int pick_count = o->batch == 1 && o->c.heads == 1 ? 1 : 2;
    for (int p = 0; p < pick_count && status == PBSA_SUCCESS; p++) {
        int64_t b = picks[p][0], h = picks[p][1], kvh = h / group;
        size_t q_first = (size_t)(((b * o->c.heads + h) * sq) * d);
        size_t kv_first = (size_t)(((b * o->c.kv_heads + kvh) * skv) * d);
        status = bench_read_elements(queue, set->q, element, q_first, (size_t)(sq * d), qh);
        if (status == CL_SUCCESS)
            status = bench_read_elements(queue, out, element, q_first, (size_t)(sq * d), oh);
        if (status == CL_SUCCESS)
            status =
                bench_read_elements(queue, set->k, kv_element, kv_first, (size_t)(skv * d), kh);
        if (status == CL_SUCCESS)
            status =
                bench_read_elements(queue, set->v, kv_element, kv_first, (size_t)(skv * d), vh);
        if (status != CL_SUCCESS)
            break;
        for (size_t i = 0; i < (size_t)(sq * d); i++)
            if (!isfinite(tensor_load(oh, dtype, i)))
                r->non_finite++;
        int rows = sq < CHECK_ROWS ? (int)sq : CHECK_ROWS;
        for (int j = 0; j < rows && status == PBSA_SUCCESS; j++) {
            int64_t s = rows == 1 ? 0 : (int64_t)j * (sq - 1) / (rows - 1);
            /* A causal row at position s + skv - sq depends on keys 0 .. that position only: as
             * the single query of a causal problem over those keys it gets the same result. */
            int64_t keys = o->causal ? s + skv - sq + 1 : skv;
            pbsa_host_tensor hq = {qh + (size_t)(s * d) * element, dtype, 1, 1, 1, d, d, d, d};
            pbsa_host_tensor hk = {kh, kv_dtype, 1, 1, keys, d, keys * d, keys * d, d};
            pbsa_host_tensor hv = {vh, kv_dtype, 1, 1, keys, d, keys * d, keys * d, d};
            pbsa_dense_params params = {.causal = o->causal};
            status = pbsa_ref_dense_attention(&hq, &hk, &hv, &params, ref);
            for (int64_t c = 0; c < d && status == PBSA_SUCCESS; c++) {
                double got = tensor_load(oh, dtype, (size_t)(s * d + c));
                if (!isfinite(got))
                    continue; /* counted above */
                diff2 += (got - ref[c]) * (got - ref[c]);
                ref2 += ref[c] * ref[c];
            }
        }
    }
    if (status == PBSA_SUCCESS) {
        r->checked = 1;
        r->rel_l2 = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);
        r->check_ok = r->non_finite == 0 && r->rel_l2 <= call_limit(o);
    }
done:
    free(qh);
    free(oh);
    free(kh);
    free(vh);
    return status;
}

static void release_sets(input_set *sets, int count)
{
    for (int i = 0; i < count; i++) {
        bench_release_mem(&sets[i].q);
        bench_release_mem(&sets[i].k);
        bench_release_mem(&sets[i].v);
    }
}

static cl_mem create_filled(cl_context cl_ctx, cl_command_queue queue, size_t count,
                            pbsa_dtype dtype, float amplitude, void *staging, uint64_t *rng,
                            cl_int *err)
{
    size_t bytes = count * pbsa_dtype_size(dtype);
    tensor_random(staging, dtype, count, amplitude, rng);
    return bench_create_buffer(cl_ctx, queue, CL_MEM_READ_ONLY, bytes, staging, err);
}

/* One dense attention call of the timing loop: run r uses input set r % sets. */
typedef struct dense_call {
    pbsa_context *ctx;
    const pbsa_tensor *q, *k, *v, *o;
    const pbsa_dense_params *params;
    int sets;
} dense_call;

static int enqueue_dense(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const dense_call *c = user;
    int s = run % c->sets;
    return pbsa_dense_attention(c->ctx, queue, &c->q[s], &c->k[s], &c->v[s], c->o, c->params,
                                last);
}

/* Runs, checks and times one length; fills r. Returns 0, or 1 when the length failed (r->error
 * says why). */
static int run_length(const bench_options *o, const support_device *d, bench_timer *timer,
                      const pbsa_device_info *info, int64_t skv, length_result *r)
{
    pbsa_context *ctx = d->ctx;
    cl_context cl_ctx = d->cl_ctx;
    cl_command_queue queue = d->queue;
    const int64_t sq = o->q_len > 0 ? o->q_len : skv;
    const size_t element = pbsa_dtype_size(o->c.dtype);
    const size_t kv_element = pbsa_dtype_size(o->c.kv_dtype);
    const size_t q_count = (size_t)o->batch * (size_t)o->c.heads * (size_t)sq * (size_t)o->c.head_dim;
    const size_t kv_count =
        (size_t)o->batch * (size_t)o->c.kv_heads * (size_t)skv * (size_t)o->c.head_dim;
    const uint64_t set_bytes = (uint64_t)q_count * element + (uint64_t)(2 * kv_count) * kv_element;
    memset(r, 0, sizeof *r);
    r->seq = skv;
    r->q_len = sq;
    r->rel_l2 = NAN;
    r->flops = attention_flops(o, sq, skv);

    /* As many input sets as fit in a quarter of the device memory, within [2, 4]. */
    const size_t largest =
        q_count * element > kv_count * kv_element ? q_count * element : kv_count * kv_element;
    uint64_t fit = set_bytes ? info->global_mem_bytes / 4 / set_bytes : MAX_INPUT_SETS;
    int sets = fit < MIN_INPUT_SETS   ? MIN_INPUT_SETS
               : fit > MAX_INPUT_SETS ? MAX_INPUT_SETS
                                      : (int)fit;
    uint64_t total = sets * set_bytes + (uint64_t)q_count * element;
    if (largest > info->max_alloc_bytes || total > info->global_mem_bytes) {
        snprintf(r->error, sizeof r->error,
                 "needs %.2f GB in buffers of up to %.2f GB; the device has %.2f GB, %.2f GB "
                 "per buffer",
                 (double)total * 1e-9, (double)largest * 1e-9,
                 (double)info->global_mem_bytes * 1e-9, (double)info->max_alloc_bytes * 1e-9);
        return 1;
    }
    r->sets = sets;

    fprintf(stderr, "pbsa-bench-dense: seq %lld: filling %d input sets (%.2f GB)\n",
            (long long)skv, sets, (double)(sets * set_bytes) * 1e-9);
    input_set set[MAX_INPUT_SETS];
    memset(set, 0, sizeof set);
    cl_mem out = NULL;
    void *staging = malloc(largest);
    uint64_t rng = o->c.seed * 0x9e3779b97f4a7c15ull + (uint64_t)skv;
    cl_int err = staging ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
    for (int i = 0; i < sets && err == CL_SUCCESS; i++) {
        /* Queries larger than keys give sharper, more realistic attention rows. */
        set[i].q = create_filled(cl_ctx, queue, q_count, o->c.dtype, 2.0f, staging, &rng, &err);
        if (err == CL_SUCCESS)
            set[i].k =
                create_filled(cl_ctx, queue, kv_count, o->c.kv_dtype, 1.0f, staging, &rng, &err);
        if (err == CL_SUCCESS)
            set[i].v =
                create_filled(cl_ctx, queue, kv_count, o->c.kv_dtype, 1.0f, staging, &rng, &err);
    }
    free(staging);
    if (err == CL_SUCCESS)
        out = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, q_count * element, NULL, &err);
    if (err == CL_SUCCESS) /* NaN, so that rows the kernel does not write are caught */
        err = bench_poison(queue, out, element, q_count * element);
    if (err == CL_SUCCESS)
        err = clFinish(queue);
    double *times = calloc((size_t)o->c.repeats, sizeof *times);
    if (err != CL_SUCCESS || !times) {
        snprintf(r->error, sizeof r->error, "setting up the inputs failed (%d)",
                 times ? err : CL_OUT_OF_HOST_MEMORY);
        goto fail;
    }

    pbsa_tensor tq[MAX_INPUT_SETS], tk[MAX_INPUT_SETS], tv[MAX_INPUT_SETS];
    for (int i = 0; i < sets; i++) {
        tq[i] = pbsa_tensor_bhsd(set[i].q, o->c.dtype, o->batch, o->c.heads, sq, o->c.head_dim);
        tk[i] =
            pbsa_tensor_bhsd(set[i].k, o->c.kv_dtype, o->batch, o->c.kv_heads, skv, o->c.head_dim);
        tv[i] =
            pbsa_tensor_bhsd(set[i].v, o->c.kv_dtype, o->batch, o->c.kv_heads, skv, o->c.head_dim);
    }
    pbsa_tensor to = pbsa_tensor_bhsd(out, o->c.dtype, o->batch, o->c.heads, sq, o->c.head_dim);
    pbsa_dense_params params = {.causal = o->causal};

    /* Warm-up (the first call builds the kernel; the last leaves set 0's output to check), then
     * timed runs, one input set after another. */
    fprintf(stderr, "pbsa-bench-dense: seq %lld: %d warm-up run(s), then up to %d timed\n",
            (long long)skv, o->c.warmup, o->c.repeats);
    dense_call call = {ctx, tq, tk, tv, &to, &params, sets};
    bench_op op = {"dense", enqueue_dense, &call, times};
    char label[64];
    snprintf(label, sizeof label, "seq %lld", (long long)skv);
    timer->label = label;
    timer->warmup = o->c.warmup;
    int runs = bench_run_ops(timer, &op, 1, r->error, sizeof r->error);
    if (runs < 0)
        goto fail;
    bool check = o->check == CHECK_ALWAYS ||
                 (o->check == CHECK_AUTO && skv <= DEFAULT_CHECK_LIMIT);
    if (check) {
        /* Set 0's output of the last warm-up run is gone: compute it again. */
        int status = enqueue_dense(&call, queue, 0, NULL);
        if (status == PBSA_SUCCESS)
            status = clFinish(queue);
        if (status == PBSA_SUCCESS)
            status = check_output(o, queue, &set[0], out, sq, skv, r);
        if (status != PBSA_SUCCESS) {
            snprintf(r->error, sizeof r->error, "the check failed to run (%d)", status);
            goto fail;
        }
    }
    r->runs = runs;
    r->ms_min = timing_min(times, runs);
    r->ms_median = timing_median(times, runs);
    r->tflops = r->flops / (r->ms_median * 1e-3) * 1e-12;
    free(times);
    release_sets(set, sets);
    bench_release_mem(&out);
    return r->checked && !r->check_ok ? 1 : 0;

fail:
    free(times);
    release_sets(set, sets);
    bench_release_mem(&out);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

static int write_json(const char *path, const bench_options *o, const bench_run_info *ri,
                      const fma_result *fma, const length_result *results, int count)
{
    static const char program[] = "pbsa-bench-dense";
    json_writer w;
    FILE *file = bench_json_open(program, path, &w);
    if (!file)
        return 1;
    json_object_begin(&w, NULL);
    bench_json_run_info(&w, "dense_attention", ri);
    json_bool(&w, "force_portable", o->c.portable);
    json_number(&w, "fma_peak_tflops", fma->tflops);
    json_object_begin(&w, "fma_peak");
    json_int(&w, "work_items", (long long)fma->work_items);
    json_int(&w, "iterations", fma->iterations);
    json_number(&w, "best_ms", fma->ms);
    json_object_end(&w);
    json_int(&w, "seed", (long long)o->c.seed);
    json_array_begin(&w, "results");
    for (int i = 0; i < count; i++) {
        const length_result *r = &results[i];
        bool timed = r->runs > 0;
        json_object_begin(&w, NULL);
        json_int(&w, "seq", r->seq);
        json_int(&w, "q_len", r->q_len);
        json_string(&w, "dtype", bench_dtype_name(o->c.dtype));
        json_string(&w, "kv_dtype", bench_dtype_name(o->c.kv_dtype));
        json_int(&w, "heads", o->c.heads);
        json_int(&w, "kv_heads", o->c.kv_heads);
        json_int(&w, "head_dim", o->c.head_dim);
        json_int(&w, "batch", o->batch);
        json_bool(&w, "causal", o->causal);
        json_number(&w, "flops", r->flops);
        json_int(&w, "input_sets", r->sets);
        json_int(&w, "runs", r->runs);
        json_number(&w, "ms_median", timed ? r->ms_median : NAN);
        json_number(&w, "ms_min", timed ? r->ms_min : NAN);
        json_number(&w, "tflops", timed ? r->tflops : NAN);
        json_number(&w, "fraction_of_fma_peak", timed ? r->tflops / fma->tflops : NAN);
        json_number(&w, "rel_l2_check", r->checked ? r->rel_l2 : NAN);
        if (r->checked) {
            json_int(&w, "non_finite_outputs", r->non_finite);
            json_number(&w, "rel_l2_limit", call_limit(o));
            json_bool(&w, "check_passed", r->check_ok);
        }
        if (r->error[0])
            json_string(&w, "error", r->error);
        json_object_end(&w);
    }
    json_array_end(&w);
    json_object_end(&w);
    return bench_json_close(program, path, file, &w);
}

static void print_row(const length_result *r, const fma_result *fma)
{
    char check[48] = "-";
    if (r->checked)
        snprintf(check, sizeof check, "%.2e%s", r->rel_l2,
                 r->non_finite ? " NaN!" : r->check_ok ? "" : " FAIL");
    if (r->runs == 0) {
        printf("%8lld  %-58s\n", (long long)r->seq, r->error[0] ? r->error : "failed");
    } else {
        printf("%8lld %12.3f %12.3f %9.2f %8.1f%% %14s %5d %4d%s%s\n", (long long)r->seq,
               r->ms_median, r->ms_min, r->tflops, 100.0 * r->tflops / fma->tflops, check,
               r->runs, r->sets, r->error[0] ? "  " : "", r->error);
    }
    fflush(stdout);
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
    if (bench_device_open("pbsa-bench-dense", o.c.device, o.c.portable, &d, &ri) != 0)
        return 2;
    bench_timer timer = {.program = "pbsa-bench-dense",
                         .repeats = o.c.repeats,
                         .min_runs = MIN_TIMED_RUNS,
                         .max_seconds = o.c.max_seconds};
    if (bench_timer_init(&timer, &d) != CL_SUCCESS) {
        fprintf(stderr, "pbsa-bench-dense: cannot create a buffer on the device\n");
        support_device_close(&d);
        return 2;
    }

    bench_print_device(&ri);
    printf("dense attention: %s (K/V %s), batch %d, heads %d, kv_heads %d, head_dim %d, %s%s\n",
           bench_dtype_name(o.c.dtype), bench_dtype_name(o.c.kv_dtype), o.batch, o.c.heads,
           o.c.kv_heads, o.c.head_dim, o.causal ? "causal" : "non-causal",
           o.c.portable ? ", portable kernels" : "");
    fflush(stdout);

    int exit_status = 0;
    fma_result fma = {NAN, NAN, 0, 0};
    fprintf(stderr, "pbsa-bench-dense: measuring the fp32 FMA peak\n");
    if (fma_peak_measure("pbsa-bench-dense", &d, &fma) != CL_SUCCESS)
        exit_status = 1;
    else
        printf("fp32 FMA peak: %.2f TFLOP/s (%zu work-items x %d iterations, best %.3f ms)\n",
               fma.tflops, fma.work_items, fma.iterations, fma.ms);
    if (o.q_len)
        printf("queries: the last %lld positions\n", (long long)o.q_len);
    printf("%8s %12s %12s %9s %9s %14s %5s %4s\n", "seq", "ms_median", "ms_min", "TFLOP/s",
           "%FMA", "rel_l2_check", "runs", "sets");
    fflush(stdout);

    static length_result results[BENCH_MAX_LENGTHS];
    for (int i = 0; i < o.c.length_count; i++) {
        if (run_length(&o, &d, &timer, &ri.device, o.c.lengths[i], &results[i]) != 0)
            exit_status = 1;
        print_row(&results[i], &fma);
    }
    if (o.c.json_path && write_json(o.c.json_path, &o, &ri, &fma, results, o.c.length_count) != 0)
        exit_status = 1;

    bench_timer_release(&timer);
    support_device_close(&d);
    return exit_status;
}
