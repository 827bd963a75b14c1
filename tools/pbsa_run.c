/* pbsa-run: runs dense or PBS attention once on a chosen OpenCL device, from Q, K and V in .npy
 * files; writes the output (and, for PBS, the permutation and the selected block mask) as .npy
 * files and prints one JSON line of statistics, with device times from OpenCL profiling. */
#include "json_writer.h"
#include "npy.h"
#include "timing.h"
#include "pbsattn.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Exit statuses. */
enum { EXIT_RUN_FAILED = 1, EXIT_BAD_INPUT = 2, EXIT_NO_DEVICE = 3 };

static void usage(FILE *to)
{
    fprintf(
        to,
        "usage: pbsa-run [options] Q.npy K.npy V.npy\n"
        "Runs dense or PBS attention on one OpenCL device and writes its outputs as .npy files.\n"
        "\n"
        "Inputs: Q [B, Hq, Sq, D], K and V [B, Hkv, Skv, D], C order, all of one dtype:\n"
        "  float32 ('<f4'), float16 ('<f2'), or bfloat16 bits stored as uint16 ('<u2') with\n"
        "  --bf16. Hq must be a multiple of Hkv (grouped-query attention), Sq <= Skv (the\n"
        "  queries are the last Sq positions), D one of 64, 80, 96, 112, 128, 192, 256.\n"
        "\n"
        "Options:\n"
        "  --device SELECTOR  'P:D', a device index or a name substring (see pbsa-info);\n"
        "                     default: $PBSA_DEVICE, else the first GPU, else any device\n"
        "  --mode dense|pbs   the attention to run (default pbs)\n"
        "  --block N          PBS block size: 16, 32, 64 or 128 (default 128)\n"
        "  --segment N        PBS permutation segment, a multiple of the block (default 256)\n"
        "  --threshold X      PBS cumulative attention mass to keep, > 0; >= 1 keeps every\n"
        "                     block (default 0.9)\n"
        "  --causal 0|1       causal attention (default 1)\n"
        "  --sink 0|1         PBS: always keep the block holding key 0 (default 1)\n"
        "  --gqa per-head|shared\n"
        "                     PBS: one permutation per query head, or one per KV head from\n"
        "                     the scores of its query heads (default per-head)\n"
        "  --scale X          softmax scale; 0 means 1/sqrt(D) (default 0)\n"
        "  --bf16             the '<u2' inputs hold bfloat16 bits; O is written the same way\n"
        "  --out-dir DIR      where the outputs go, created if missing (default .)\n"
        "  --warmup N         untimed runs before the timed ones (default 1)\n"
        "  --repeat N         timed runs; the JSON reports the median (default 1)\n"
        "  --portable         force the portable kernels\n"
        "  --help             this text\n"
        "\n"
        "Outputs in DIR: O.npy [B, Hq, Sq, D] in the input dtype; for PBS also pi.npy ('<i4'\n"
        "[B, Hp, Skv], the original key index at each permuted position, Hp = Hq per head or\n"
        "Hkv shared) and mask.npy ('|b1' [B, Hq, nqb, nkb], the key blocks each query block\n"
        "attended, nqb = ceil(Sq / block), nkb = ceil(Skv / block)).\n"
        "\n"
        "PBS runs its three stages as separate calls (pbsa_permutation, pbsa_block_selection,\n"
        "pbsa_sparse_attention) on a caller workspace, so that each can be timed. Stage times\n"
        "are device times from OpenCL profiling events: from the end of the previous stage (or\n"
        "of a marker enqueued first) to the end of the stage's last kernel. With Skv <= segment\n"
        "pbsa_attention() would run dense attention instead (\"fallback\" in the JSON); the\n"
        "stages then select every block, which gives the same result.\n"
        "\n"
        "Standard output: one JSON line with the mode, shapes, dtype, device, parameters, the\n"
        "times in ms (per stage and total), the host wall time of the timed run, and for PBS\n"
        "the block density (selected over causally visible blocks, pbsa_block_density) per\n"
        "query head averaged over the batch, and its mean.\n"
        "\n"
        "Exit status: 0 on success, 1 when the run fails, 2 on a usage error, a bad input\n"
        "file, or shapes or parameters the library rejects or does not support, 3 when there\n"
        "is no OpenCL device.\n");
}

typedef struct options {
    const char *paths[3];
    const char *device;
    const char *out_dir;
    bool pbs;
    bool bf16;
    bool portable;
    int warmup, repeat;
    pbsa_params params;
} options;

/* ---- command line ---------------------------------------------------------------------------- */

static bool parse_int(const char *text, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

/* A number a float holds: one that would round to 0 or to infinity is refused, not changed. */
static bool parse_float(const char *text, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end)
        return false;
    float f = (float)v;
    if ((v != 0.0 && f == 0.0f) || (isfinite(v) && !isfinite(f)))
        return false;
    *out = f;
    return true;
}

static bool parse_flag(const char *text, int *out)
{
    if (strcmp(text, "0") != 0 && strcmp(text, "1") != 0)
        return false;
    *out = text[0] == '1';
    return true;
}

/* Returns -1 to go on, else the exit status. */
static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->out_dir = ".";
    o->pbs = true;
    o->warmup = 1;
    o->repeat = 1;
    o->params = pbsa_params_default();
    int inputs = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--bf16") == 0) {
            o->bf16 = true;
            continue;
        }
        if (strcmp(arg, "--portable") == 0) {
            o->portable = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (inputs == 3) {
                fprintf(stderr, "pbsa-run: unexpected argument '%s' (three inputs already)\n",
                        arg);
                return EXIT_BAD_INPUT;
            }
            o->paths[inputs++] = arg;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pbsa-run: %s needs a value (see --help)\n", arg);
            return EXIT_BAD_INPUT;
        }
        const char *value = argv[++i];
        bool ok = true;
        pbsa_params *p = &o->params;
        if (strcmp(arg, "--device") == 0) {
            o->device = value;
        } else if (strcmp(arg, "--out-dir") == 0) {
            o->out_dir = value;
        } else if (strcmp(arg, "--mode") == 0) {
            ok = strcmp(value, "dense") == 0 || strcmp(value, "pbs") == 0;
            o->pbs = strcmp(value, "pbs") == 0;
        } else if (strcmp(arg, "--block") == 0) {
            ok = parse_int(value, 1, 1 << 20, &p->block_size);
        } else if (strcmp(arg, "--segment") == 0) {
            ok = parse_int(value, 1, 1 << 30, &p->segment_size);
        } else if (strcmp(arg, "--threshold") == 0) {
            ok = parse_float(value, &p->threshold);
        } else if (strcmp(arg, "--scale") == 0) {
            ok = parse_float(value, &p->scale);
        } else if (strcmp(arg, "--causal") == 0) {
            ok = parse_flag(value, &p->causal);
        } else if (strcmp(arg, "--sink") == 0) {
            ok = parse_flag(value, &p->force_first_block);
        } else if (strcmp(arg, "--gqa") == 0) {
            ok = strcmp(value, "per-head") == 0 || strcmp(value, "shared") == 0;
            p->gqa_mode = strcmp(value, "shared") == 0 ? PBSA_GQA_SHARED_PER_KV_GROUP
                                                       : PBSA_GQA_PER_QUERY_HEAD;
        } else if (strcmp(arg, "--warmup") == 0) {
            ok = parse_int(value, 0, 1000, &o->warmup);
        } else if (strcmp(arg, "--repeat") == 0) {
            ok = parse_int(value, 1, 1000, &o->repeat);
        } else {
            fprintf(stderr, "pbsa-run: unknown option '%s' (see --help)\n", arg);
            return EXIT_BAD_INPUT;
        }
        if (!ok) {
            fprintf(stderr, "pbsa-run: bad value '%s' for %s (see --help)\n", value, arg);
            return EXIT_BAD_INPUT;
        }
    }
    if (inputs != 3) {
        fprintf(stderr, "pbsa-run: needs Q.npy K.npy V.npy (see --help)\n");
        return EXIT_BAD_INPUT;
    }
    return -1;
}

/* ---- inputs ---------------------------------------------------------------------------------- */

static const char *const input_names[3] = {"Q", "K", "V"};

/* Loads Q, K and V and checks that they form one attention problem. */
static int load_inputs(const options *o, npy_array arrays[3], pbsa_dtype *dtype)
{
    char err[256];
    for (int i = 0; i < 3; i++) {
        if (npy_load(o->paths[i], &arrays[i], err, sizeof err) != 0) {
            fprintf(stderr, "pbsa-run: %s (%s): %s\n", o->paths[i], input_names[i], err);
            return EXIT_BAD_INPUT;
        }
    }
    for (int i = 0; i < 3; i++) {
        const npy_header *h = &arrays[i].header;
        const char *name = input_names[i], *path = o->paths[i];
        if (h->ndim != 4) {
            fprintf(stderr, "pbsa-run: %s (%s): needs 4 dimensions [B, H, S, D], has %d\n",
                    path, name, h->ndim);
            return EXIT_BAD_INPUT;
        }
        for (int d = 0; d < 4; d++)
            if (h->shape[d] < 1 || h->shape[d] > INT32_MAX) {
                fprintf(stderr, "pbsa-run: %s (%s): dimension %d is %llu (1 .. %d allowed)\n",
                        path, name, d, (unsigned long long)h->shape[d], INT32_MAX);
                return EXIT_BAD_INPUT;
            }
        pbsa_dtype t;
        if (h->dtype == NPY_FLOAT32 && !o->bf16) {
            t = PBSA_DTYPE_F32;
        } else if (h->dtype == NPY_FLOAT16 && !o->bf16) {
            t = PBSA_DTYPE_F16;
        } else if (h->dtype == NPY_UINT16 && o->bf16) {
            t = PBSA_DTYPE_BF16;
        } else {
            fprintf(stderr, "pbsa-run: %s (%s): dtype '%s' %s\n", path, name,
                    npy_dtype_descr(h->dtype),
                    o->bf16 ? "is not bfloat16 bits: with --bf16 every input must be '<u2'"
                    : h->dtype == NPY_UINT16 ? "holds bfloat16 only with --bf16"
                                             : "is not supported ('<f4', '<f2', or '<u2' with "
                                               "--bf16)");
            return EXIT_BAD_INPUT;
        }
        if (i == 0)
            *dtype = t;
        else if (t != *dtype) {
            fprintf(stderr, "pbsa-run: %s (%s) is '%s' but Q is '%s': the inputs must share "
                    "one dtype\n",
                    path, name, npy_dtype_descr(h->dtype),
                    npy_dtype_descr(arrays[0].header.dtype));
            return EXIT_BAD_INPUT;
        }
    }
    const uint64_t *q = arrays[0].header.shape, *k = arrays[1].header.shape,
                   *v = arrays[2].header.shape;
    const char *problem = NULL;
    if (memcmp(k, v, 4 * sizeof *k) != 0)
        problem = "K and V must have the same shape";
    else if (q[0] != k[0])
        problem = "Q and K must have the same batch (dimension 0)";
    else if (q[3] != k[3])
        problem = "Q and K must have the same head dim (dimension 3)";
    else if (q[1] % k[1] != 0)
        problem = "Q's heads must be a multiple of K's heads (dimension 1)";
    else if (q[2] > k[2])
        problem = "Q's sequence may not be longer than K's (dimension 2)";
    if (problem) {
        fprintf(stderr,
                "pbsa-run: %s: Q is [%llu, %llu, %llu, %llu], K [%llu, %llu, %llu, %llu], "
                "V [%llu, %llu, %llu, %llu]\n",
                problem, (unsigned long long)q[0], (unsigned long long)q[1],
                (unsigned long long)q[2], (unsigned long long)q[3], (unsigned long long)k[0],
                (unsigned long long)k[1], (unsigned long long)k[2], (unsigned long long)k[3],
                (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
                (unsigned long long)v[3]);
        return EXIT_BAD_INPUT;
    }
    return -1;
}

/* ---- device ---------------------------------------------------------------------------------- */

typedef struct device {
    cl_context cl_ctx;
    cl_device_id id;
    cl_command_queue queue;
    pbsa_context *ctx;
    pbsa_device_info info;
} device;

static int open_device(const options *o, device *dev)
{
    memset(dev, 0, sizeof *dev);
    int status = pbsa_helper_create_cl_context(o->device, &dev->cl_ctx, &dev->id);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-run: %s\n", pbsa_context_last_error(NULL));
        return status == PBSA_ERROR_NO_DEVICE ? EXIT_NO_DEVICE : EXIT_RUN_FAILED;
    }
    cl_int err;
    dev->queue = clCreateCommandQueue(dev->cl_ctx, dev->id, CL_QUEUE_PROFILING_ENABLE, &err);
    if (err != CL_SUCCESS) {
        fprintf(stderr, "pbsa-run: clCreateCommandQueue failed (%d)\n", err);
        return EXIT_RUN_FAILED;
    }
    pbsa_context_options copts = {.struct_size = sizeof copts, .force_portable = o->portable};
    if (pbsa_context_create(dev->cl_ctx, dev->id, &copts, &dev->ctx) != PBSA_SUCCESS) {
        fprintf(stderr, "pbsa-run: %s\n", pbsa_context_last_error(NULL));
        return EXIT_RUN_FAILED;
    }
    pbsa_context_device_info(dev->ctx, &dev->info);
    return -1;
}

static void close_device(device *dev)
{
    pbsa_context_release(dev->ctx);
    if (dev->queue)
        clReleaseCommandQueue(dev->queue);
    if (dev->cl_ctx)
        clReleaseContext(dev->cl_ctx);
}

static cl_mem create_buffer(const device *dev, size_t bytes, const void *init, cl_int *err)
{
    if (*err != CL_SUCCESS)
        return NULL;
    cl_mem_flags flags = CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0);
    return clCreateBuffer(dev->cl_ctx, flags, bytes ? bytes : 4, (void *)init, err);
}

static bool mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* ---- timing ---------------------------------------------------------------------------------- */

enum { MAX_STAGES = 3 };

/* Device times of one run: stage s lasted from marks[s] to marks[s + 1] (profiling END values). */
typedef struct run_times {
    cl_ulong marks[MAX_STAGES + 1];
    bool valid;
} run_times;

/* Reads the end times of events[0 .. count) into times (events released). */
static void collect_times(cl_event *events, int count, run_times *times)
{
    times->valid = true;
    for (int i = 0; i < count; i++) {
        if (!events[i] || clGetEventProfilingInfo(events[i], CL_PROFILING_COMMAND_END,
                                                  sizeof(cl_ulong), &times->marks[i],
                                                  NULL) != CL_SUCCESS)
            times->valid = false;
        if (events[i])
            clReleaseEvent(events[i]);
        events[i] = NULL;
    }
}

/* ---- the run --------------------------------------------------------------------------------- */

typedef struct problem {
    pbsa_dtype dtype;
    int batch, q_heads, kv_heads, q_len, kv_len, head_dim;
    int perm_heads, q_blocks, k_blocks;
    size_t pi_count, rows; /* B * Hp * Skv, B * Hq * nqb */
} problem;

static const char *dtype_name(pbsa_dtype t)
{
    return t == PBSA_DTYPE_F32 ? "f32" : t == PBSA_DTYPE_F16 ? "f16" : "bf16";
}

/* Reports a failed library call; the caller's mistakes (1000-1999) and requests the library or
 * device does not support (2000-2999) are bad input, the rest a failed run. */
static int fail_call(const device *dev, const char *what, int status)
{
    fprintf(stderr, "pbsa-run: %s failed: %s (%d): %s\n", what, pbsa_status_string(status),
            status, pbsa_context_last_error(dev->ctx));
    return status >= 1000 && status < 3000 ? EXIT_BAD_INPUT : EXIT_RUN_FAILED;
}

static bool write_output(const options *o, const char *name, npy_dtype dtype,
                         const uint64_t shape[4], const void *data)
{
    char path[4096], err[256];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", o->out_dir, name) >= sizeof path) {
        fprintf(stderr, "pbsa-run: the output path for %s is too long\n", name);
        return false;
    }
    if (npy_save(path, dtype, 4, shape, data, err, sizeof err) != 0) {
        fprintf(stderr, "pbsa-run: %s: %s\n", path, err);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    const uint16_t probe = 1;
    if (*(const unsigned char *)&probe != 1) {
        fprintf(stderr, "pbsa-run: .npy data is little-endian; this host is not\n");
        return EXIT_RUN_FAILED;
    }
    options o;
    int exit_status = parse_args(argc, argv, &o);
    if (exit_status >= 0)
        return exit_status;

    npy_array arrays[3];
    memset(arrays, 0, sizeof arrays);
    device dev = {0};
    cl_mem q_mem = NULL, k_mem = NULL, v_mem = NULL, o_mem = NULL, pi_mem = NULL,
           counts_mem = NULL, blocks_mem = NULL, workspace = NULL;
    void *out_host = NULL;
    cl_int *pi_host = NULL, *counts_host = NULL, *blocks_host = NULL;
    unsigned char *mask = NULL;
    double *density = NULL, *samples = NULL;
    run_times *times = NULL;
    problem pr = {0};

    exit_status = load_inputs(&o, arrays, &pr.dtype);
    if (exit_status >= 0)
        goto done;
    const uint64_t *qs = arrays[0].header.shape, *ks = arrays[1].header.shape;
    pr.batch = (int)qs[0];
    pr.q_heads = (int)qs[1];
    pr.q_len = (int)qs[2];
    pr.head_dim = (int)qs[3];
    pr.kv_heads = (int)ks[1];
    pr.kv_len = (int)ks[2];
    pbsa_params *params = &o.params;
    if (o.pbs) {
        /* Sizes of the PBS outputs; the library checks the parameters themselves. */
        int b = params->block_size;
        pr.perm_heads = params->gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? pr.kv_heads
                                                                         : pr.q_heads;
        pr.q_blocks = (pr.q_len + b - 1) / b;
        pr.k_blocks = (pr.kv_len + b - 1) / b;
        size_t cells;
        if (!mul_size((size_t)pr.batch * (size_t)pr.perm_heads, (size_t)pr.kv_len, &pr.pi_count) ||
            !mul_size((size_t)pr.batch * (size_t)pr.q_heads, (size_t)pr.q_blocks, &pr.rows) ||
            !mul_size(pr.rows, (size_t)pr.k_blocks, &cells) || cells > SIZE_MAX / 4) {
            fprintf(stderr, "pbsa-run: the block lists of these shapes overflow memory sizes\n");
            exit_status = EXIT_BAD_INPUT;
            goto done;
        }
    }
    if (mkdir(o.out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "pbsa-run: cannot create %s: %s\n", o.out_dir, strerror(errno));
        exit_status = EXIT_RUN_FAILED;
        goto done;
    }

    exit_status = open_device(&o, &dev);
    if (exit_status >= 0)
        goto done;
    exit_status = EXIT_RUN_FAILED;

    cl_int err = CL_SUCCESS;
    q_mem = create_buffer(&dev, arrays[0].header.data_bytes, arrays[0].data, &err);
    k_mem = create_buffer(&dev, arrays[1].header.data_bytes, arrays[1].data, &err);
    v_mem = create_buffer(&dev, arrays[2].header.data_bytes, arrays[2].data, &err);
    const size_t out_bytes = arrays[0].header.data_bytes;
    o_mem = create_buffer(&dev, out_bytes, NULL, &err);
    size_t workspace_bytes = 0, cells = pr.rows * (size_t)pr.k_blocks;
    pbsa_tensor q = pbsa_tensor_bhsd(q_mem, pr.dtype, pr.batch, pr.q_heads, pr.q_len, pr.head_dim);
    pbsa_tensor k = pbsa_tensor_bhsd(k_mem, pr.dtype, pr.batch, pr.kv_heads, pr.kv_len,
                                     pr.head_dim);
    pbsa_tensor v = pbsa_tensor_bhsd(v_mem, pr.dtype, pr.batch, pr.kv_heads, pr.kv_len,
                                     pr.head_dim);
    pbsa_tensor out = pbsa_tensor_bhsd(o_mem, pr.dtype, pr.batch, pr.q_heads, pr.q_len,
                                       pr.head_dim);
    if (o.pbs && err == CL_SUCCESS) {
        int status = pbsa_workspace_size(dev.ctx, &q, &k, params, &workspace_bytes);
        if (status != PBSA_SUCCESS) {
            exit_status = fail_call(&dev, "pbsa_workspace_size", status);
            goto done;
        }
        workspace = create_buffer(&dev, workspace_bytes, NULL, &err);
        pi_mem = create_buffer(&dev, pr.pi_count * 4, NULL, &err);
        counts_mem = create_buffer(&dev, pr.rows * 4, NULL, &err);
        blocks_mem = create_buffer(&dev, cells * 4, NULL, &err);
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "pbsa-run: cannot allocate device buffers (OpenCL error %d)\n", err);
        goto done;
    }
    pbsa_block_list list = {counts_mem, blocks_mem, 0, 0};
    pbsa_dense_params dense = {.causal = params->causal, .scale = params->scale};

    /* Warm-up runs, then timed runs: a marker, then each stage with its event. */
    const int stages = o.pbs ? 3 : 1;
    times = calloc((size_t)o.repeat, sizeof *times);
    samples = calloc((size_t)o.repeat, sizeof *samples);
    if (!times || !samples) {
        fprintf(stderr, "pbsa-run: out of memory\n");
        goto done;
    }
    double wall_ms = 0.0;
    for (int run = 0; run < o.warmup + o.repeat; run++) {
        cl_event events[MAX_STAGES + 1] = {NULL};
        if ((err = clFinish(dev.queue)) != CL_SUCCESS) {
            fprintf(stderr, "pbsa-run: clFinish failed (%d)\n", err);
            goto done;
        }
        double start = timing_now_seconds();
        err = clEnqueueMarkerWithWaitList(dev.queue, 0, NULL, &events[0]);
        if (err != CL_SUCCESS) {
            fprintf(stderr, "pbsa-run: clEnqueueMarkerWithWaitList failed (%d)\n", err);
            goto done;
        }
        int status;
        const char *what;
        if (!o.pbs) {
            what = "pbsa_dense_attention";
            status = pbsa_dense_attention(dev.ctx, dev.queue, &q, &k, &v, &out, &dense,
                                          &events[1]);
        } else {
            what = "pbsa_permutation";
            status = pbsa_permutation(dev.ctx, dev.queue, &q, &k, params, pi_mem, 0, workspace,
                                      &events[1]);
            if (status == PBSA_SUCCESS) {
                what = "pbsa_block_selection";
                status = pbsa_block_selection(dev.ctx, dev.queue, &q, &k, params, pi_mem, 0,
                                              &list, workspace, &events[2]);
            }
            if (status == PBSA_SUCCESS) {
                what = "pbsa_sparse_attention";
                status = pbsa_sparse_attention(dev.ctx, dev.queue, &q, &k, &v, &out, params,
                                               pi_mem, 0, &list, &events[3]);
            }
        }
        if (status == PBSA_SUCCESS && (err = clFinish(dev.queue)) != CL_SUCCESS)
            status = err;
        if (status != PBSA_SUCCESS) {
            for (int e = 0; e <= MAX_STAGES; e++)
                if (events[e])
                    clReleaseEvent(events[e]);
            exit_status = fail_call(&dev, what, status);
            goto done;
        }
        double elapsed = 1e3 * (timing_now_seconds() - start);
        if (run >= o.warmup) {
            samples[run - o.warmup] = elapsed;
            collect_times(events, stages + 1, &times[run - o.warmup]);
        } else {
            for (int e = 0; e <= stages; e++)
                clReleaseEvent(events[e]);
        }
    }
    wall_ms = timing_median(samples, o.repeat);

    /* Median device time of each stage and of the whole, over the timed runs. */
    double stage_ms[MAX_STAGES + 1];
    bool timed = true;
    for (int r = 0; r < o.repeat; r++)
        timed = timed && times[r].valid;
    for (int s = 0; s <= stages; s++) {
        stage_ms[s] = NAN;
        if (!timed)
            continue;
        for (int r = 0; r < o.repeat; r++) {
            const cl_ulong *m = times[r].marks;
            cl_ulong from = s < stages ? m[s] : m[0], to = s < stages ? m[s + 1] : m[stages];
            samples[r] = to >= from ? (double)(to - from) * 1e-6 : NAN;
        }
        stage_ms[s] = timing_median(samples, o.repeat);
    }

    /* Outputs. */
    out_host = malloc(out_bytes);
    if (!out_host) {
        fprintf(stderr, "pbsa-run: out of memory\n");
        goto done;
    }
    err = clEnqueueReadBuffer(dev.queue, o_mem, CL_TRUE, 0, out_bytes, out_host, 0, NULL, NULL);
    if (o.pbs && err == CL_SUCCESS) {
        pi_host = malloc(pr.pi_count * sizeof *pi_host);
        counts_host = malloc(pr.rows * sizeof *counts_host);
        blocks_host = malloc(cells * sizeof *blocks_host);
        mask = calloc(cells ? cells : 1, 1);
        density = malloc((size_t)pr.batch * (size_t)pr.q_heads * sizeof *density);
        if (!pi_host || !counts_host || !blocks_host || !mask || !density) {
            fprintf(stderr, "pbsa-run: out of memory\n");
            goto done;
        }
        err = clEnqueueReadBuffer(dev.queue, pi_mem, CL_TRUE, 0, pr.pi_count * 4, pi_host, 0,
                                  NULL, NULL);
        if (err == CL_SUCCESS)
            err = clEnqueueReadBuffer(dev.queue, counts_mem, CL_TRUE, 0, pr.rows * 4, counts_host,
                                      0, NULL, NULL);
        if (err == CL_SUCCESS)
            err = clEnqueueReadBuffer(dev.queue, blocks_mem, CL_TRUE, 0, cells * 4, blocks_host,
                                      0, NULL, NULL);
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "pbsa-run: reading the results failed (OpenCL error %d)\n", err);
        goto done;
    }
    const npy_dtype out_dtype = pr.dtype == PBSA_DTYPE_F32   ? NPY_FLOAT32
                                : pr.dtype == PBSA_DTYPE_F16 ? NPY_FLOAT16
                                                             : NPY_UINT16;
    if (!write_output(&o, "O.npy", out_dtype, qs, out_host))
        goto done;
    if (o.pbs) {
        for (size_t row = 0; row < pr.rows; row++) {
            int count = counts_host[row];
            if (count < 0 || count > pr.k_blocks) {
                fprintf(stderr, "pbsa-run: the device wrote a block count of %d (0 .. %d)\n",
                        count, pr.k_blocks);
                goto done;
            }
            for (int t = 0; t < count; t++) {
                cl_int j = blocks_host[row * (size_t)pr.k_blocks + (size_t)t];
                if (j < 0 || j >= pr.k_blocks) {
                    fprintf(stderr, "pbsa-run: the device wrote block index %d (0 .. %d)\n", j,
                            pr.k_blocks - 1);
                    goto done;
                }
                mask[row * (size_t)pr.k_blocks + (size_t)j] = 1;
            }
        }
        const uint64_t pi_shape[4] = {(uint64_t)pr.batch, (uint64_t)pr.perm_heads,
                                      (uint64_t)pr.kv_len, 0};
        const uint64_t mask_shape[4] = {(uint64_t)pr.batch, (uint64_t)pr.q_heads,
                                        (uint64_t)pr.q_blocks, (uint64_t)pr.k_blocks};
        char err_text[256];
        char path[4096];
        snprintf(path, sizeof path, "%s/pi.npy", o.out_dir);
        if (npy_save(path, NPY_INT32, 3, pi_shape, pi_host, err_text, sizeof err_text) != 0) {
            fprintf(stderr, "pbsa-run: %s: %s\n", path, err_text);
            goto done;
        }
        if (!write_output(&o, "mask.npy", NPY_BOOL, mask_shape, mask))
            goto done;
        int status = pbsa_block_density(pr.batch, pr.q_heads, pr.q_len, pr.kv_len, params,
                                        counts_host, density);
        if (status != PBSA_SUCCESS) {
            exit_status = fail_call(&dev, "pbsa_block_density", status);
            goto done;
        }
    }

    /* The JSON line. */
    float scale = params->scale > 0.0f ? params->scale : 1.0f / sqrtf((float)pr.head_dim);
    json_writer w;
    json_init_line(&w, stdout);
    json_object_begin(&w, NULL);
    json_string(&w, "mode", o.pbs ? "pbs" : "dense");
    json_string(&w, "device", dev.info.name);
    json_string(&w, "vendor", dev.info.vendor);
    json_string(&w, "dtype", dtype_name(pr.dtype));
    json_int(&w, "batch", pr.batch);
    json_int(&w, "q_heads", pr.q_heads);
    json_int(&w, "kv_heads", pr.kv_heads);
    json_int(&w, "q_len", pr.q_len);
    json_int(&w, "kv_len", pr.kv_len);
    json_int(&w, "head_dim", pr.head_dim);
    json_bool(&w, "causal", params->causal);
    json_number(&w, "scale", scale);
    if (o.pbs) {
        json_int(&w, "block", params->block_size);
        json_int(&w, "segment", params->segment_size);
        json_number(&w, "threshold", params->threshold);
        json_bool(&w, "sink", params->force_first_block);
        json_string(&w, "gqa", params->gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? "shared"
                                                                                : "per-head");
        json_bool(&w, "fallback", pr.kv_len <= params->segment_size);
        json_int(&w, "workspace_bytes", (long long)workspace_bytes);
    }
    json_int(&w, "warmup", o.warmup);
    json_int(&w, "repeat", o.repeat);
    json_object_begin(&w, "times_ms");
    if (o.pbs) {
        json_number(&w, "permutation", stage_ms[0]);
        json_number(&w, "selection", stage_ms[1]);
        json_number(&w, "sparse_attention", stage_ms[2]);
        json_number(&w, "total", stage_ms[3]);
    } else {
        json_number(&w, "attention", stage_ms[0]);
        json_number(&w, "total", stage_ms[1]);
    }
    json_object_end(&w);
    json_number(&w, "wall_ms", wall_ms);
    if (o.pbs) {
        double mean = 0.0;
        json_array_begin(&w, "density_per_head");
        for (int h = 0; h < pr.q_heads; h++) {
            double sum = 0.0;
            for (int b = 0; b < pr.batch; b++)
                sum += density[(size_t)b * pr.q_heads + h];
            mean += sum;
            json_number(&w, NULL, sum / pr.batch);
        }
        json_array_end(&w);
        json_number(&w, "density", mean / ((double)pr.batch * pr.q_heads));
    }
    json_array_begin(&w, "outputs");
    char path[4096];
    const char *names[3] = {"O.npy", "pi.npy", "mask.npy"};
    for (int i = 0; i < (o.pbs ? 3 : 1); i++) {
        snprintf(path, sizeof path, "%s/%s", o.out_dir, names[i]);
        json_string(&w, NULL, path);
    }
    json_array_end(&w);
    json_object_end(&w);
    exit_status = json_finish(&w) == 0 && fflush(stdout) == 0 ? 0 : EXIT_RUN_FAILED;

done:;
    cl_mem all[] = {q_mem, k_mem, v_mem, o_mem, pi_mem, counts_mem, blocks_mem, workspace};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i])
            clReleaseMemObject(all[i]);
    close_device(&dev);
    for (int i = 0; i < 3; i++)
        npy_free(&arrays[i]);
    free(out_host);
    free(pi_host);
    free(counts_host);
    free(blocks_host);
    free(mask);
    free(density);
    free(samples);
    free(times);
    return exit_status;
}
