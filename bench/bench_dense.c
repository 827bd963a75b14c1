/* pbsa-bench-dense: throughput of pbsa_dense_attention() over a list of sequence lengths on one
 * OpenCL device, next to the fp32 FMA peak measured in the same run, with a correctness
 * spot-check of every length against the float64 CPU reference.
 *
 * Timing: OpenCL profiling events of the kernel only, after warm-up runs (which also compile the
 * kernels); the median of the timed runs, whose inputs rotate over several input sets so that no
 * run finds its inputs in cache from the run before. */
#include "internal.h" /* pbsa_get_kernel(): the FMA probe is built from the embedded sources */
#include "json_writer.h"
#include "pbsattn.h"
#include "pbsattn_ref.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    MAX_LENGTHS = 64,
    MIN_INPUT_SETS = 2,
    MAX_INPUT_SETS = 4,
    CHECK_ROWS = 8,           /* sampled query rows per checked head */
    FMA_CHAINS = 8,           /* cl/fma_peak.cl's default: independent float4 chains per item */
    FMA_ITEMS_PER_CU = 2048,
    FMA_LAUNCHES = 5,
    FMA_MAX_ITERATIONS = 1 << 24,
    MIN_TIMED_RUNS = 3,       /* kept even when the time budget of a length runs out */
    DEFAULT_CHECK_LIMIT = 2048,
};

static const double FMA_TARGET_MS = 8.0; /* calibrated launch time, at least 5 ms */
static const double FMA_MIN_MS = 5.0;

typedef enum check_mode { CHECK_AUTO, CHECK_ALWAYS, CHECK_NEVER } check_mode;

typedef struct bench_options {
    const char *device;
    int64_t lengths[MAX_LENGTHS];
    int length_count;
    int64_t q_len; /* 0: the queries span the whole sequence */
    pbsa_dtype dtype;
    int heads, kv_heads, head_dim, batch, causal;
    int repeats, warmup;
    double max_seconds;
    check_mode check;
    const char *json_path;
    unsigned long long seed;
    int portable;
} bench_options;

typedef struct fma_result {
    double tflops;
    double ms;
    size_t work_items;
    int iterations;
} fma_result;

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
            "  --dtype T           f32, f16 or bf16 (default bf16)\n"
            "  --heads N           query heads (default 32)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default: --heads)\n"
            "  --head-dim N        64, 96, 128 or 256 (default 128)\n"
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

static bool parse_int(const char *text, long long min, long long max, long long *out)
{
    char *end;
    long long value = strtoll(text, &end, 10);
    if (end == text || *end || value < min || value > max)
        return false;
    *out = value;
    return true;
}

static bool parse_lengths(const char *text, bench_options *o)
{
    o->length_count = 0;
    const char *at = text;
    while (*at) {
        char item[32];
        size_t n = strcspn(at, ",");
        if (n == 0 || n >= sizeof item || o->length_count == MAX_LENGTHS)
            return false;
        memcpy(item, at, n);
        item[n] = '\0';
        long long value;
        if (!parse_int(item, 1, INT32_MAX, &value))
            return false;
        o->lengths[o->length_count++] = value;
        at += n;
        if (*at == ',')
            at++;
    }
    return o->length_count > 0;
}

static const char *dtype_name(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return "f32";
    case PBSA_DTYPE_F16: return "f16";
    case PBSA_DTYPE_BF16: return "bf16";
    }
    return "?";
}

/* Returns 0 when the options are usable, 2 otherwise (after a message), -1 after --help. */
static int parse_options(int argc, char **argv, bench_options *o)
{
    static const int64_t default_lengths[] = {1024, 4096, 16384, 32768};
    memset(o, 0, sizeof *o);
    o->length_count = 4;
    memcpy(o->lengths, default_lengths, sizeof default_lengths);
    o->dtype = PBSA_DTYPE_BF16;
    o->heads = 32;
    o->kv_heads = 0;
    o->head_dim = 128;
    o->batch = 1;
    o->causal = 1;
    o->repeats = 10;
    o->warmup = 2;
    o->max_seconds = 3.0;
    o->check = CHECK_AUTO;
    o->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        long long n = 0;
        bool ok = true;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(arg, "--portable") == 0) {
            o->portable = 1;
            continue;
        } else if (!value) {
            fprintf(stderr, "pbsa-bench-dense: unknown argument or missing value: '%s'\n", arg);
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(arg, "--device") == 0) {
            o->device = value;
        } else if (strcmp(arg, "--lengths") == 0) {
            ok = parse_lengths(value, o);
        } else if (strcmp(arg, "--q-len") == 0) {
            ok = parse_int(value, 0, INT32_MAX, &n);
            o->q_len = n;
        } else if (strcmp(arg, "--dtype") == 0) {
            if (strcmp(value, "f32") == 0)
                o->dtype = PBSA_DTYPE_F32;
            else if (strcmp(value, "f16") == 0)
                o->dtype = PBSA_DTYPE_F16;
            else if (strcmp(value, "bf16") == 0)
                o->dtype = PBSA_DTYPE_BF16;
            else
                ok = false;
        } else if (strcmp(arg, "--heads") == 0) {
            ok = parse_int(value, 1, 65536, &n);
            o->heads = (int)n;
        } else if (strcmp(arg, "--kv-heads") == 0) {
            ok = parse_int(value, 1, 65536, &n);
            o->kv_heads = (int)n;
        } else if (strcmp(arg, "--head-dim") == 0) {
            ok = parse_int(value, 1, 4096, &n);
            o->head_dim = (int)n;
        } else if (strcmp(arg, "--batch") == 0) {
            ok = parse_int(value, 1, 65536, &n);
            o->batch = (int)n;
        } else if (strcmp(arg, "--causal") == 0) {
            ok = parse_int(value, 0, 1, &n);
            o->causal = (int)n;
        } else if (strcmp(arg, "--repeats") == 0) {
            ok = parse_int(value, 1, 100000, &n);
            o->repeats = (int)n;
        } else if (strcmp(arg, "--warmup") == 0) {
            ok = parse_int(value, 1, 1000, &n);
            o->warmup = (int)n;
        } else if (strcmp(arg, "--max-seconds") == 0) {
            char *end;
            o->max_seconds = strtod(value, &end);
            ok = end != value && !*end && o->max_seconds > 0.0 && o->max_seconds < 1e6;
        } else if (strcmp(arg, "--check") == 0) {
            if (strcmp(value, "auto") == 0)
                o->check = CHECK_AUTO;
            else if (strcmp(value, "always") == 0)
                o->check = CHECK_ALWAYS;
            else if (strcmp(value, "never") == 0)
                o->check = CHECK_NEVER;
            else
                ok = false;
        } else if (strcmp(arg, "--json") == 0) {
            o->json_path = value;
        } else if (strcmp(arg, "--seed") == 0) {
            char *end;
            o->seed = strtoull(value, &end, 0);
            ok = end != value && !*end;
        } else {
            fprintf(stderr, "pbsa-bench-dense: unknown argument '%s'\n", arg);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "pbsa-bench-dense: bad value '%s' for %s (see --help)\n", value, arg);
            return 2;
        }
    }
    if (o->kv_heads == 0)
        o->kv_heads = o->heads;
    if (o->heads % o->kv_heads != 0) {
        fprintf(stderr, "pbsa-bench-dense: --kv-heads %d does not divide --heads %d\n",
                o->kv_heads, o->heads);
        return 2;
    }
    for (int i = 0; i < o->length_count; i++)
        if (o->q_len > o->lengths[i]) {
            fprintf(stderr, "pbsa-bench-dense: --q-len %lld exceeds the length %lld\n",
                    (long long)o->q_len, (long long)o->lengths[i]);
            return 2;
        }
    return 0;
}

/* The command line as one string, arguments with unusual characters single-quoted. */
static void join_command_line(int argc, char **argv, char *out, size_t capacity)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < argc && used + 1 < capacity; i++) {
        const char *arg = argv[i];
        bool quote = *arg == '\0' || arg[strspn(arg, "abcdefghijklmnopqrstuvwxyz"
                                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                     "0123456789-_=.,:/+@%")] != '\0';
        int n = snprintf(out + used, capacity - used, "%s%s%s%s", i ? " " : "",
                         quote ? "'" : "", arg, quote ? "'" : "");
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Kernel time of a completed event, in milliseconds; negative on error. */
static double event_ms(cl_event event)
{
    cl_ulong start = 0, end = 0;
    if (clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL) !=
            CL_SUCCESS ||
        clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) !=
            CL_SUCCESS)
        return -1.0;
    return (double)(end - start) * 1e-6;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, compare_doubles);
    return count % 2 ? values[count / 2] : 0.5 * (values[count / 2 - 1] + values[count / 2]);
}

static unsigned long long splitmix64(unsigned long long *state)
{
    unsigned long long z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* count random values uniform in [-amplitude, amplitude), stored in dtype. */
static void fill_random(void *data, pbsa_dtype dtype, size_t count, float amplitude,
                        unsigned long long *rng)
{
    const float unit = amplitude * 0x1.0p-31f;
    for (size_t i = 0; i < count; i += 2) {
        unsigned long long bits = splitmix64(rng);
        float pair[2] = {(float)((long long)(bits & 0xffffffffu) - 0x80000000ll) * unit,
                         (float)((long long)(bits >> 32) - 0x80000000ll) * unit};
        for (size_t j = 0; j < 2 && i + j < count; j++) {
            float *f32 = (float *)data + i + j;
            uint16_t *u16 = (uint16_t *)data + i + j;
            switch (dtype) {
            case PBSA_DTYPE_F32: *f32 = pair[j]; break;
            case PBSA_DTYPE_F16: *u16 = pbsa_ref_float_to_half(pair[j]); break;
            case PBSA_DTYPE_BF16: *u16 = pbsa_ref_float_to_bf16(pair[j]); break;
            }
        }
    }
}

static double load_element(const void *data, pbsa_dtype dtype, size_t index)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return ((const float *)data)[index];
    case PBSA_DTYPE_F16: return pbsa_ref_half_to_float(((const uint16_t *)data)[index]);
    case PBSA_DTYPE_BF16: return pbsa_ref_bf16_to_float(((const uint16_t *)data)[index]);
    }
    return NAN;
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

/* FLOPs of one forward pass: QK^T and PV, 2 FLOPs per multiply-add each, 4*D per (query, key)
 * pair. Causal with Sq == Skv counts half of the full product (the usual convention); with
 * Sq < Skv, query i sits at position i + Skv - Sq and sees that many keys plus one. */
static double attention_flops(const bench_options *o, int64_t sq, int64_t skv)
{
    double per_pair = 4.0 * o->batch * o->heads * o->head_dim;
    if (!o->causal)
        return per_pair * (double)sq * (double)skv;
    if (sq == skv)
        return per_pair * (double)sq * (double)skv / 2.0;
    return per_pair * ((double)sq * (double)(skv - sq) + (double)sq * (double)(sq + 1) / 2.0);
}

static void log_warnings(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level == PBSA_LOG_WARNING)
        fprintf(stderr, "pbsattn warning: %s\n", message);
}

/* ---------------------------------------------------------------------------------------------
 * fp32 FMA peak
 * ------------------------------------------------------------------------------------------- */

static int fma_launch(cl_command_queue queue, cl_kernel kernel, size_t global, size_t local,
                      int iterations, double *ms)
{
    cl_int err = clSetKernelArg(kernel, 1, sizeof iterations, &iterations);
    cl_event event = NULL;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(queue, kernel, 1, NULL, &global, &local, 0, NULL, &event);
    if (err == CL_SUCCESS)
        err = clWaitForEvents(1, &event);
    if (err == CL_SUCCESS) {
        *ms = event_ms(event);
        if (*ms < 0.0)
            err = CL_PROFILING_INFO_NOT_AVAILABLE;
    }
    if (event)
        clReleaseEvent(event);
    return err;
}

/* fp32 FMA throughput of cl/fma_peak.cl: 2 FLOPs per FMA, 4 lanes per float4 operation. */
static int measure_fma_peak(pbsa_context *ctx, cl_context cl_ctx, cl_command_queue queue,
                            const pbsa_device_info *info, fma_result *result)
{
    static const char *const files[] = {"fma_peak.cl"};
    cl_kernel kernel = NULL;
    cl_mem out = NULL;
    int status = pbsa_get_kernel(ctx, files, 1, "", "fma_peak", &kernel);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-bench-dense: fma_peak.cl: %s\n%s\n", pbsa_context_last_error(ctx),
                pbsa_context_build_log(ctx));
        return status;
    }
    size_t local = 256, kernel_wg = 0;
    clGetKernelWorkGroupInfo(kernel, ctx->device, CL_KERNEL_WORK_GROUP_SIZE, sizeof kernel_wg,
                             &kernel_wg, NULL);
    while (local > 1 && ((kernel_wg && local > kernel_wg) || local > info->max_work_group_size))
        local /= 2;
    size_t global = (size_t)(info->compute_units ? info->compute_units : 1) * FMA_ITEMS_PER_CU;
    global = (global + local - 1) / local * local;

    cl_int err;
    out = clCreateBuffer(cl_ctx, CL_MEM_WRITE_ONLY, global * sizeof(float), NULL, &err);
    float seed = 0.5f;
    if (err == CL_SUCCESS)
        err = clSetKernelArg(kernel, 0, sizeof out, &out);
    if (err == CL_SUCCESS)
        err = clSetKernelArg(kernel, 2, sizeof seed, &seed);

    /* Best of FMA_LAUNCHES launches; more iterations until that best takes FMA_MIN_MS. */
    int iterations = 64;
    double best = INFINITY;
    while (err == CL_SUCCESS) {
        best = INFINITY;
        for (int i = 0; i < FMA_LAUNCHES && err == CL_SUCCESS; i++) {
            double ms = 0.0;
            err = fma_launch(queue, kernel, global, local, iterations, &ms);
            best = ms < best ? ms : best;
        }
        if (err != CL_SUCCESS || best >= FMA_MIN_MS || iterations >= FMA_MAX_ITERATIONS)
            break;
        double scale = best > 0.01 ? FMA_TARGET_MS / best : 64.0;
        scale = scale > 64.0 ? 64.0 : scale < 1.5 ? 1.5 : scale;
        double next = iterations * scale;
        iterations = next > FMA_MAX_ITERATIONS ? FMA_MAX_ITERATIONS : (int)next;
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "pbsa-bench-dense: FMA peak launch failed (%d)\n", err);
        status = err;
    } else {
        double flops = (double)global * FMA_CHAINS * 4.0 * 2.0 * iterations;
        result->tflops = flops / (best * 1e-3) * 1e-12;
        result->ms = best;
        result->work_items = global;
        result->iterations = iterations;
    }
    if (out)
        clReleaseMemObject(out);
    clReleaseKernel(kernel);
    return status;
}

/* ---------------------------------------------------------------------------------------------
 * Dense attention at one length
 * ------------------------------------------------------------------------------------------- */

typedef struct input_set {
    cl_mem q, k, v;
} input_set;

/* Reads count elements starting at element first of buffer into host. */
static cl_int read_elements(cl_command_queue queue, cl_mem buffer, size_t element, size_t first,
                            size_t count, void *host)
{
    return clEnqueueReadBuffer(queue, buffer, CL_TRUE, first * element, count * element, host, 0,
                               NULL, NULL);
}

/* Compares CHECK_ROWS sampled rows of the first head (batch 0) and of the last head (last batch)
 * with the reference computed on the slice those rows depend on, and counts NaN/Inf in both
 * heads of the output. Returns 0, or an OpenCL/library status. */
static int check_output(const bench_options *o, cl_command_queue queue, const input_set *set,
                        cl_mem out, int64_t sq, int64_t skv, length_result *r)
{
    const pbsa_dtype dtype = o->dtype;
    const size_t element = pbsa_dtype_size(dtype);
    const int64_t d = o->head_dim;
    const int64_t group = o->heads / o->kv_heads;
    unsigned char *qh = malloc((size_t)(sq * d) * element);
    unsigned char *oh = malloc((size_t)(sq * d) * element);
    unsigned char *kh = malloc((size_t)(skv * d) * element);
    unsigned char *vh = malloc((size_t)(skv * d) * element);
    double ref[4096];
    double diff2 = 0.0, ref2 = 0.0;
    int status = PBSA_SUCCESS;
    if (!qh || !oh || !kh || !vh) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }
    const int64_t picks[2][2] = {{0, 0}, {o->batch - 1, o->heads - 1}};
    int pick_count = o->batch == 1 && o->heads == 1 ? 1 : 2;
    for (int p = 0; p < pick_count && status == PBSA_SUCCESS; p++) {
        int64_t b = picks[p][0], h = picks[p][1], kvh = h / group;
        size_t q_first = (size_t)(((b * o->heads + h) * sq) * d);
        size_t kv_first = (size_t)(((b * o->kv_heads + kvh) * skv) * d);
        status = read_elements(queue, set->q, element, q_first, (size_t)(sq * d), qh);
        if (status == CL_SUCCESS)
            status = read_elements(queue, out, element, q_first, (size_t)(sq * d), oh);
        if (status == CL_SUCCESS)
            status = read_elements(queue, set->k, element, kv_first, (size_t)(skv * d), kh);
        if (status == CL_SUCCESS)
            status = read_elements(queue, set->v, element, kv_first, (size_t)(skv * d), vh);
        if (status != CL_SUCCESS)
            break;
        for (size_t i = 0; i < (size_t)(sq * d); i++)
            if (!isfinite(load_element(oh, dtype, i)))
                r->non_finite++;
        int rows = sq < CHECK_ROWS ? (int)sq : CHECK_ROWS;
        for (int j = 0; j < rows && status == PBSA_SUCCESS; j++) {
            int64_t s = rows == 1 ? 0 : (int64_t)j * (sq - 1) / (rows - 1);
            /* A causal row at position s + skv - sq depends on keys 0 .. that position only: as
             * the single query of a causal problem over those keys it gets the same result. */
            int64_t keys = o->causal ? s + skv - sq + 1 : skv;
            pbsa_host_tensor hq = {qh + (size_t)(s * d) * element, dtype, 1, 1, 1, d, d, d, d};
            pbsa_host_tensor hk = {kh, dtype, 1, 1, keys, d, keys * d, keys * d, d};
            pbsa_host_tensor hv = {vh, dtype, 1, 1, keys, d, keys * d, keys * d, d};
            pbsa_dense_params params = {.causal = o->causal};
            status = pbsa_ref_dense_attention(&hq, &hk, &hv, &params, ref);
            for (int64_t c = 0; c < d && status == PBSA_SUCCESS; c++) {
                double got = load_element(oh, dtype, (size_t)(s * d + c));
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
        r->check_ok = r->non_finite == 0 && r->rel_l2 <= check_limit(dtype);
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
        if (sets[i].q)
            clReleaseMemObject(sets[i].q);
        if (sets[i].k)
            clReleaseMemObject(sets[i].k);
        if (sets[i].v)
            clReleaseMemObject(sets[i].v);
    }
}

static cl_mem create_filled(cl_context cl_ctx, cl_command_queue queue, size_t count,
                            const bench_options *o, float amplitude, void *staging,
                            unsigned long long *rng, cl_int *err)
{
    size_t bytes = count * pbsa_dtype_size(o->dtype);
    cl_mem buffer = clCreateBuffer(cl_ctx, CL_MEM_READ_ONLY, bytes, NULL, err);
    if (*err != CL_SUCCESS)
        return NULL;
    fill_random(staging, o->dtype, count, amplitude, rng);
    *err = clEnqueueWriteBuffer(queue, buffer, CL_TRUE, 0, bytes, staging, 0, NULL, NULL);
    return buffer;
}

/* Runs, checks and times one length; fills r. Returns 0, or 1 when the length failed (r->error
 * says why). */
static int run_length(const bench_options *o, pbsa_context *ctx, cl_context cl_ctx,
                      cl_command_queue queue, const pbsa_device_info *info, int64_t skv,
                      length_result *r)
{
    const int64_t sq = o->q_len > 0 ? o->q_len : skv;
    const size_t element = pbsa_dtype_size(o->dtype);
    const size_t q_count = (size_t)o->batch * (size_t)o->heads * (size_t)sq * (size_t)o->head_dim;
    const size_t kv_count =
        (size_t)o->batch * (size_t)o->kv_heads * (size_t)skv * (size_t)o->head_dim;
    const uint64_t set_bytes = (uint64_t)(q_count + 2 * kv_count) * element;
    memset(r, 0, sizeof *r);
    r->seq = skv;
    r->q_len = sq;
    r->rel_l2 = NAN;
    r->flops = attention_flops(o, sq, skv);

    /* As many input sets as fit in a quarter of the device memory, within [2, 4]. */
    const size_t largest = (q_count > kv_count ? q_count : kv_count) * element;
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
    unsigned long long rng = o->seed * 0x9e3779b97f4a7c15ull + (unsigned long long)skv;
    cl_int err = staging ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
    for (int i = 0; i < sets && err == CL_SUCCESS; i++) {
        /* Queries larger than keys give sharper, more realistic attention rows. */
        set[i].q = create_filled(cl_ctx, queue, q_count, o, 2.0f, staging, &rng, &err);
        if (err == CL_SUCCESS)
            set[i].k = create_filled(cl_ctx, queue, kv_count, o, 1.0f, staging, &rng, &err);
        if (err == CL_SUCCESS)
            set[i].v = create_filled(cl_ctx, queue, kv_count, o, 1.0f, staging, &rng, &err);
    }
    free(staging);
    if (err == CL_SUCCESS)
        out = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, q_count * element, NULL, &err);
    if (err == CL_SUCCESS) {
        /* All ones bits: NaN in every dtype, so rows the kernel does not write are caught. */
        const unsigned char poison[4] = {0xff, 0xff, 0xff, 0xff};
        err = clEnqueueFillBuffer(queue, out, poison, element, 0, q_count * element, 0, NULL,
                                  NULL);
    }
    if (err == CL_SUCCESS)
        err = clFinish(queue);
    double *times = calloc((size_t)o->repeats, sizeof *times);
    if (err != CL_SUCCESS || !times) {
        snprintf(r->error, sizeof r->error, "setting up the inputs failed (%d)",
                 times ? err : CL_OUT_OF_HOST_MEMORY);
        goto fail;
    }

    pbsa_tensor tq[MAX_INPUT_SETS], tk[MAX_INPUT_SETS], tv[MAX_INPUT_SETS];
    for (int i = 0; i < sets; i++) {
        tq[i] = pbsa_tensor_bhsd(set[i].q, o->dtype, o->batch, o->heads, sq, o->head_dim);
        tk[i] = pbsa_tensor_bhsd(set[i].k, o->dtype, o->batch, o->kv_heads, skv, o->head_dim);
        tv[i] = pbsa_tensor_bhsd(set[i].v, o->dtype, o->batch, o->kv_heads, skv, o->head_dim);
    }
    pbsa_tensor to = pbsa_tensor_bhsd(out, o->dtype, o->batch, o->heads, sq, o->head_dim);
    pbsa_dense_params params = {.causal = o->causal};

    /* Warm-up: the first call builds the kernel; the last one leaves set 0's output to check. */
    fprintf(stderr, "pbsa-bench-dense: seq %lld: %d warm-up run(s)%s\n", (long long)skv,
            o->warmup, o->check == CHECK_NEVER ? "" : " and check");
    int status = PBSA_SUCCESS;
    for (int i = o->warmup - 1; i >= 0 && status == PBSA_SUCCESS; i--) {
        int s = i % sets;
        status = pbsa_dense_attention(ctx, queue, &tq[s], &tk[s], &tv[s], &to, &params, NULL);
        if (status == PBSA_SUCCESS)
            status = clFinish(queue);
    }
    if (status != PBSA_SUCCESS) {
        snprintf(r->error, sizeof r->error, "pbsa_dense_attention failed: %s (%s)",
                 pbsa_status_string(status), pbsa_context_last_error(ctx));
        if (status == PBSA_ERROR_BUILD_FAILED)
            fprintf(stderr, "%s\n", pbsa_context_build_log(ctx));
        goto fail;
    }
    bool check = o->check == CHECK_ALWAYS ||
                 (o->check == CHECK_AUTO && skv <= DEFAULT_CHECK_LIMIT);
    if (check) {
        status = check_output(o, queue, &set[0], out, sq, skv, r);
        if (status != PBSA_SUCCESS) {
            snprintf(r->error, sizeof r->error, "the check failed to run (%d)", status);
            goto fail;
        }
    }

    /* Timed runs, one input set after another. */
    double started = now_seconds(), last_report = started;
    int runs = 0;
    int min_runs = o->repeats < MIN_TIMED_RUNS ? o->repeats : MIN_TIMED_RUNS;
    while (runs < o->repeats && (runs < min_runs || now_seconds() - started < o->max_seconds)) {
        int s = runs % sets;
        cl_event event = NULL;
        status = pbsa_dense_attention(ctx, queue, &tq[s], &tk[s], &tv[s], &to, &params, &event);
        if (status == PBSA_SUCCESS)
            status = clWaitForEvents(1, &event);
        double ms = status == PBSA_SUCCESS ? event_ms(event) : -1.0;
        if (event)
            clReleaseEvent(event);
        if (status != PBSA_SUCCESS || ms < 0.0) {
            snprintf(r->error, sizeof r->error, "timed run %d failed: %s (%s)", runs,
                     status != PBSA_SUCCESS ? pbsa_status_string(status) : "no profiling data",
                     status != PBSA_SUCCESS ? pbsa_context_last_error(ctx) : "");
            goto fail;
        }
        times[runs++] = ms;
        double now = now_seconds();
        if (now - last_report > 1.0) {
            fprintf(stderr, "pbsa-bench-dense: seq %lld: %d/%d timed runs, last %.3f ms\n",
                    (long long)skv, runs, o->repeats, ms);
            last_report = now;
        }
    }
    r->runs = runs;
    r->ms_min = INFINITY;
    for (int i = 0; i < runs; i++)
        r->ms_min = times[i] < r->ms_min ? times[i] : r->ms_min;
    r->ms_median = median(times, runs);
    r->tflops = r->flops / (r->ms_median * 1e-3) * 1e-12;
    free(times);
    release_sets(set, sets);
    clReleaseMemObject(out);
    return r->checked && !r->check_ok ? 1 : 0;

fail:
    free(times);
    release_sets(set, sets);
    if (out)
        clReleaseMemObject(out);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

typedef struct run_info {
    char command_line[4096];
    char date[32];
    char platform_name[256];
    char platform_version[256];
    char device_version[256];
    pbsa_device_info device;
} run_info;

static int write_json(const char *path, const bench_options *o, const run_info *ri,
                      const fma_result *fma, const length_result *results, int count)
{
    char temp[4096];
    snprintf(temp, sizeof temp, "%s.tmp", path);
    FILE *file = fopen(temp, "w");
    if (!file) {
        fprintf(stderr, "pbsa-bench-dense: cannot write %s\n", temp);
        return 1;
    }
    json_writer w;
    json_init(&w, file);
    json_object_begin(&w, NULL);
    json_string(&w, "benchmark", "dense_attention");
    json_string(&w, "library_version", pbsa_version_string());
    json_string(&w, "date_utc", ri->date);
    json_string(&w, "command_line", ri->command_line);
    json_string(&w, "device_name", ri->device.name);
    json_string(&w, "device_vendor", ri->device.vendor);
    json_string(&w, "driver_version", ri->device.driver_version);
    json_string(&w, "device_opencl_version", ri->device_version);
    json_string(&w, "platform_name", ri->platform_name);
    json_string(&w, "platform_version", ri->platform_version);
    json_int(&w, "compute_units", ri->device.compute_units);
    json_int(&w, "global_mem_bytes", (long long)ri->device.global_mem_bytes);
    json_bool(&w, "force_portable", o->portable);
    json_number(&w, "fma_peak_tflops", fma->tflops);
    json_object_begin(&w, "fma_peak");
    json_int(&w, "work_items", (long long)fma->work_items);
    json_int(&w, "iterations", fma->iterations);
    json_number(&w, "best_ms", fma->ms);
    json_object_end(&w);
    json_int(&w, "seed", (long long)o->seed);
    json_array_begin(&w, "results");
    for (int i = 0; i < count; i++) {
        const length_result *r = &results[i];
        bool timed = r->runs > 0;
        json_object_begin(&w, NULL);
        json_int(&w, "seq", r->seq);
        json_int(&w, "q_len", r->q_len);
        json_string(&w, "dtype", dtype_name(o->dtype));
        json_int(&w, "heads", o->heads);
        json_int(&w, "kv_heads", o->kv_heads);
        json_int(&w, "head_dim", o->head_dim);
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
            json_number(&w, "rel_l2_limit", check_limit(o->dtype));
            json_bool(&w, "check_passed", r->check_ok);
        }
        if (r->error[0])
            json_string(&w, "error", r->error);
        json_object_end(&w);
    }
    json_array_end(&w);
    json_object_end(&w);
    int failed = json_finish(&w);
    if (fclose(file) != 0)
        failed = -1;
    if (failed || rename(temp, path) != 0) {
        fprintf(stderr, "pbsa-bench-dense: writing %s failed\n", path);
        remove(temp);
        return 1;
    }
    return 0;
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

static void read_platform_info(cl_device_id device, run_info *ri)
{
    cl_platform_id platform = NULL;
    clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof ri->platform_name, ri->platform_name,
                      NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof ri->platform_version,
                      ri->platform_version, NULL);
    clGetDeviceInfo(device, CL_DEVICE_VERSION, sizeof ri->device_version, ri->device_version,
                    NULL);
    ri->platform_name[sizeof ri->platform_name - 1] = '\0';
    ri->platform_version[sizeof ri->platform_version - 1] = '\0';
    ri->device_version[sizeof ri->device_version - 1] = '\0';
}

int main(int argc, char **argv)
{
    bench_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0)
        return parsed < 0 ? 0 : parsed;
    static run_info ri;
    join_command_line(argc, argv, ri.command_line, sizeof ri.command_line);
    time_t now = time(NULL);
    strftime(ri.date, sizeof ri.date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    pbsa_set_log_callback(log_warnings, NULL);

    cl_context cl_ctx;
    cl_device_id device;
    if (pbsa_helper_create_cl_context(o.device, &cl_ctx, &device) != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-bench-dense: %s\n", pbsa_context_last_error(NULL));
        return 2;
    }
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, device, CL_QUEUE_PROFILING_ENABLE, &err);
    pbsa_context_options ctx_options = {.struct_size = sizeof ctx_options,
                                        .force_portable = o.portable};
    pbsa_context *ctx = NULL;
    if (err != CL_SUCCESS ||
        pbsa_context_create(cl_ctx, device, &ctx_options, &ctx) != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-bench-dense: cannot set up the device: %s\n",
                err != CL_SUCCESS ? "clCreateCommandQueue failed" : pbsa_context_last_error(NULL));
        if (err == CL_SUCCESS)
            clReleaseCommandQueue(queue);
        clReleaseContext(cl_ctx);
        return 2;
    }
    pbsa_context_device_info(ctx, &ri.device);
    read_platform_info(device, &ri);

    printf("device: %s | %s | driver %s | %s\n", ri.device.name, ri.device.vendor,
           ri.device.driver_version, ri.platform_version);
    printf("dense attention: %s, batch %d, heads %d, kv_heads %d, head_dim %d, %s%s\n",
           dtype_name(o.dtype), o.batch, o.heads, o.kv_heads, o.head_dim,
           o.causal ? "causal" : "non-causal", o.portable ? ", portable kernels" : "");
    fflush(stdout);

    int exit_status = 0;
    fma_result fma = {NAN, NAN, 0, 0};
    fprintf(stderr, "pbsa-bench-dense: measuring the fp32 FMA peak\n");
    if (measure_fma_peak(ctx, cl_ctx, queue, &ri.device, &fma) != PBSA_SUCCESS)
        exit_status = 1;
    else
        printf("fp32 FMA peak: %.2f TFLOP/s (%zu work-items x %d iterations, best %.3f ms)\n",
               fma.tflops, fma.work_items, fma.iterations, fma.ms);
    if (o.q_len)
        printf("queries: the last %lld positions\n", (long long)o.q_len);
    printf("%8s %12s %12s %9s %9s %14s %5s %4s\n", "seq", "ms_median", "ms_min", "TFLOP/s",
           "%FMA", "rel_l2_check", "runs", "sets");
    fflush(stdout);

    static length_result results[MAX_LENGTHS];
    for (int i = 0; i < o.length_count; i++) {
        if (run_length(&o, ctx, cl_ctx, queue, &ri.device, o.lengths[i], &results[i]) != 0)
            exit_status = 1;
        print_row(&results[i], &fma);
    }
    if (o.json_path && write_json(o.json_path, &o, &ri, &fma, results, o.length_count) != 0)
        exit_status = 1;

    pbsa_context_release(ctx);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
    return exit_status;
}
