/* pbsa-bench-pbs: PBS attention against dense attention on one OpenCL device, speed and
 * accuracy, on synthetic LLM-like heads (workload.h).
 *
 * Per sequence length, on the same inputs and in the same run: dense attention
 * (pbsa_dense_attention), the whole PBS pipeline (pbsa_attention with a pre-allocated
 * workspace) and its three stages called one by one (pbsa_permutation, pbsa_block_selection,
 * pbsa_sparse_attention), timed in interleaved rounds with OpenCL profiling events after
 * warm-up (median of the timed rounds, input sets rotating; bench_util.h says what is timed).
 * Then, on input set 0: the block density with the permutation (from the workspace) and without
 * it (block selection over the identity permutation); the relative L2 error of the PBS output
 * against the dense output on two whole heads; and the attention recall of sampled query rows:
 * the share of the exact softmax mass (float64 on the host, from the stored inputs) that falls on
 * the keys the selected blocks cover. */
#include "bench_util.h"
#include "pbsattn.h"
#include "workload.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PROGRAM[] = "pbsa-bench-pbs";

enum {
    MAX_INPUT_SETS = 2,
    MIN_TIMED_RUNS = 3,
    SAMPLED_HEADS = 2,  /* whole heads compared with dense attention */
    RECALL_ROWS = 16,   /* query rows per sampled head for the recall */
    OP_COUNT = 5,       /* dense, PBS, and the three stages */
};

enum { OP_DENSE, OP_PBS, OP_PERMUTATION, OP_SELECTION, OP_SPARSE };
static const char *const op_names[OP_COUNT] = {"dense", "pbs", "permutation", "selection",
                                               "sparse"};

/* Share of the device memory the inputs, outputs and workspaces of one length may take. */
static const double MEMORY_SHARE = 0.6;

typedef struct pbs_options {
    bench_common_options c;
    workload w;
    pbsa_params params;
} pbs_options;

typedef struct length_result {
    int64_t seq;
    int sets, runs;
    bool fallback; /* seq <= segment: pbsa_attention is dense attention */
    double ms_median[OP_COUNT], ms_min[OP_COUNT];
    double speedup;
    double density, density_identity; /* mean over the query heads */
    double pattern_density[WORKLOAD_PATTERN_COUNT], pattern_density_identity[WORKLOAD_PATTERN_COUNT];
    int pattern_heads[WORKLOAD_PATTERN_COUNT];
    int sampled[SAMPLED_HEADS], sampled_count;
    double head_rel_l2[SAMPLED_HEADS], head_recall[SAMPLED_HEADS];
    double head_recall_identity[SAMPLED_HEADS];
    double rel_l2, recall, recall_min, recall_identity;
    long non_finite; /* NaN or Inf in the read-back heads of the PBS output */
    bool measured;   /* the accuracy pass ran */
    char error[512];
} length_result;

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-bench-pbs [options]\n"
            "PBS attention (pbsa_attention) against dense attention on the same synthetic\n"
            "LLM-like inputs: time, speedup, stage times, block density, and accuracy.\n"
            "  --device SELECTOR   'P:D', a device index or a name substring (see pbsa-info);\n"
            "                      default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --lengths L1,L2,..  sequence lengths (default: 8192,16384,32768 on a GPU,\n"
            "                      1024,2048 on other devices)\n"
            "  --dtype T           f32, f16 or bf16 (default: bf16 on a GPU, else f32)\n"
            "  --heads N           query heads (default: 32 on a GPU, else 4)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default: 8 on a GPU and\n"
            "                      1 elsewhere when --heads is not given, else --heads)\n"
            "  --head-dim N        64, 96, 128 or 256 (default: 128 on a GPU, else 64)\n"
            "  --workload W        sink-local, vertical, vertical-slash, topics, random or mixed\n"
            "                      (default mixed; bench/workload.h describes them)\n"
            "  --block N           PBS block size: 16, 32, 64 or 128 (default 128)\n"
            "  --segment N         permutation segment, a multiple of --block (default 256)\n"
            "  --threshold T       attention mass the block selection keeps (default 0.9)\n"
            "  --gqa MODE          per-head (one permutation per query head, the default) or\n"
            "                      shared (one per key/value head)\n"
            "  --repeats N         timed rounds per length, median reported (default: 3 off a\n"
            "                      GPU; on a GPU 10, 5 above 16384 tokens)\n"
            "  --warmup N          untimed rounds first, kernel builds included (default: 2 on\n"
            "                      a GPU, else 1)\n"
            "  --max-seconds S     stop timing a length after S s, keeping at least %d rounds\n"
            "                      (default 20)\n"
            "  --json PATH         also write the results as JSON to PATH\n"
            "  --seed N            seed of the inputs (default 1)\n"
            "  --portable          force the portable kernels\n"
            "  --help              this text\n"
            "A round times, one after another on the same inputs: dense attention, the whole\n"
            "PBS pipeline, and its three stages. Columns: times in ms (medians); speedup =\n"
            "dense / PBS; density = selected key blocks over the causal blocks (mean over heads),\n"
            "with and without the permutation; rel_l2 = ||O_pbs - O_dense|| / ||O_dense|| over\n"
            "%d whole heads; recall = share of the exact softmax mass on the keys that the\n"
            "selected blocks cover, mean over %d rows of each of those heads.\n"
            "Exit status: 0 on success, 1 when a length failed or produced NaN/Inf, 2 on bad\n"
            "arguments or no device.\n",
            MIN_TIMED_RUNS, SAMPLED_HEADS, RECALL_ROWS);
}

/* Returns 0 when the options are usable, 2 otherwise (after a message), -1 after --help. */
static int parse_options(int argc, char **argv, pbs_options *o)
{
    memset(o, 0, sizeof *o);
    o->params = pbsa_params_default();
    workload_parse("mixed", &o->w);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        int used = bench_parse_common_option(PROGRAM, arg, value, &o->c);
        if (used < 0)
            return 2;
        if (used > 0) {
            i += used - 1;
            continue;
        }
        if (!value) {
            fprintf(stderr, "%s: unknown argument or missing value: '%s'\n", PROGRAM, arg);
            usage(stderr);
            return 2;
        }
        i++;
        long long n = 0;
        double x = 0.0;
        bool ok = true;
        if (strcmp(arg, "--workload") == 0) {
            ok = workload_parse(value, &o->w);
        } else if (strcmp(arg, "--block") == 0) {
            ok = bench_parse_int(value, 16, 128, &n) && (n & (n - 1)) == 0;
            o->params.block_size = (int)n;
        } else if (strcmp(arg, "--segment") == 0) {
            ok = bench_parse_int(value, 16, 1 << 20, &n);
            o->params.segment_size = (int)n;
        } else if (strcmp(arg, "--threshold") == 0) {
            ok = bench_parse_double(value, 0.0, 1.0, &x);
            o->params.threshold = (float)x;
        } else if (strcmp(arg, "--gqa") == 0) {
            if (strcmp(value, "per-head") == 0)
                o->params.gqa_mode = PBSA_GQA_PER_QUERY_HEAD;
            else if (strcmp(value, "shared") == 0)
                o->params.gqa_mode = PBSA_GQA_SHARED_PER_KV_GROUP;
            else
                ok = false;
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", PROGRAM, arg);
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad value '%s' for %s (see --help)\n", PROGRAM, value, arg);
            return 2;
        }
    }
    if (o->params.segment_size % o->params.block_size != 0) {
        fprintf(stderr, "%s: --segment %d is not a multiple of --block %d\n", PROGRAM,
                o->params.segment_size, o->params.block_size);
        return 2;
    }
    if (o->c.head_dim && o->c.head_dim != 64 && o->c.head_dim != 96 && o->c.head_dim != 128 &&
        o->c.head_dim != 256) {
        fprintf(stderr, "%s: --head-dim must be 64, 96, 128 or 256\n", PROGRAM);
        return 2;
    }
    return 0;
}

/* Fills in what was not given: an LLM's shape on a GPU (Llama-3.1-8B: 32 query heads, 8
 * key/value heads, head_dim 128, bf16, 8K-32K tokens), a small problem elsewhere (a CPU runs it
 * in seconds). Returns false after a message. */
static bool apply_defaults(pbs_options *o, bool gpu)
{
    static const int64_t gpu_lengths[] = {8192, 16384, 32768};
    static const int64_t cpu_lengths[] = {1024, 2048};
    bench_common_options *c = &o->c;
    if (c->length_count == 0) {
        const int64_t *from = gpu ? gpu_lengths : cpu_lengths;
        c->length_count = gpu ? 3 : 2;
        memcpy(c->lengths, from, (size_t)c->length_count * sizeof *from);
    }
    if (!c->dtype_given)
        c->dtype = gpu ? PBSA_DTYPE_BF16 : PBSA_DTYPE_F32;
    if (c->heads == 0) {
        c->heads = gpu ? 32 : 4;
        if (c->kv_heads == 0)
            c->kv_heads = gpu ? 8 : 1;
    }
    c->head_dim = c->head_dim ? c->head_dim : gpu ? 128 : 64;
    c->warmup = c->warmup ? c->warmup : gpu ? 2 : 1;
    c->max_seconds = c->max_seconds > 0.0 ? c->max_seconds : 20.0;
    c->seed = c->seed_given ? c->seed : 1;
    return bench_check_common_options(PROGRAM, c);
}

static int repeats_for(const pbs_options *o, bool gpu, int64_t seq)
{
    if (o->c.repeats)
        return o->c.repeats;
    if (!gpu)
        return 3;
    return seq > 16384 ? 5 : 10;
}

/* ---------------------------------------------------------------------------------------------
 * One length: buffers and the timed operations
 * ------------------------------------------------------------------------------------------- */

typedef struct input_set {
    cl_mem q, k, v;
    pbsa_tensor tq, tk, tv;
} input_set;

typedef struct length_state {
    pbsa_context *ctx;
    int64_t seq;
    int perm_heads; /* Hp: rows of the permutation */
    input_set set[MAX_INPUT_SETS];
    int sets;
    cl_mem o_dense, o_pbs;
    pbsa_tensor to_dense, to_pbs;
    pbsa_params params;
    pbsa_dense_params dense_params;
    cl_mem workspace;       /* pbsa_attention's */
    cl_mem stage_workspace; /* the stage calls' */
    cl_mem pi_stage, pi_identity;
    pbsa_block_list stage_list;
} length_state;

static int enqueue_dense(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const length_state *s = user;
    const input_set *in = &s->set[run % s->sets];
    return pbsa_dense_attention(s->ctx, queue, &in->tq, &in->tk, &in->tv, &s->to_dense,
                                &s->dense_params, last);
}

static int enqueue_pbs(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const length_state *s = user;
    const input_set *in = &s->set[run % s->sets];
    return pbsa_attention(s->ctx, queue, &in->tq, &in->tk, &in->tv, &s->to_pbs, &s->params,
                          s->workspace, last);
}

static int enqueue_permutation(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const length_state *s = user;
    const input_set *in = &s->set[run % s->sets];
    return pbsa_permutation(s->ctx, queue, &in->tq, &in->tk, &s->params, s->pi_stage, 0,
                            s->stage_workspace, last);
}

static int enqueue_selection(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const length_state *s = user;
    const input_set *in = &s->set[run % s->sets];
    return pbsa_block_selection(s->ctx, queue, &in->tq, &in->tk, &s->params, s->pi_stage, 0,
                                &s->stage_list, s->stage_workspace, last);
}

/* Writes into the PBS output too: the accuracy pass computes that again afterwards. */
static int enqueue_sparse(void *user, cl_command_queue queue, int run, cl_event *last)
{
    const length_state *s = user;
    const input_set *in = &s->set[run % s->sets];
    return pbsa_sparse_attention(s->ctx, queue, &in->tq, &in->tk, &in->tv, &s->to_pbs,
                                 &s->params, s->pi_stage, 0, &s->stage_list, last);
}

static void release_state(length_state *s)
{
    for (int i = 0; i < MAX_INPUT_SETS; i++) {
        bench_release_mem(&s->set[i].q);
        bench_release_mem(&s->set[i].k);
        bench_release_mem(&s->set[i].v);
    }
    bench_release_mem(&s->o_dense);
    bench_release_mem(&s->o_pbs);
    bench_release_mem(&s->workspace);
    bench_release_mem(&s->stage_workspace);
    bench_release_mem(&s->pi_stage);
    bench_release_mem(&s->pi_identity);
    bench_release_mem(&s->stage_list.counts);
    bench_release_mem(&s->stage_list.blocks);
}

/* Generates input set `index` head by head on the host and uploads it. */
static cl_int fill_set(const pbs_options *o, cl_command_queue queue, int64_t seq, int index,
                       input_set *in, void *staging)
{
    const int hq = o->c.heads, hkv = o->c.kv_heads, d = o->c.head_dim, group = hq / hkv;
    const size_t head_bytes = (size_t)seq * (size_t)d * pbsa_dtype_size(o->c.dtype);
    const workload_shape shape = {hq, hkv, d, seq, o->c.dtype};
    uint64_t seed_state = o->c.seed ^ ((uint64_t)seq << 20) ^ (uint64_t)index;
    const uint64_t seed = bench_splitmix64(&seed_state);
    cl_int err = CL_SUCCESS;
    for (int g = 0; g < hkv && err == CL_SUCCESS; g++) {
        workload_kv_head *h = workload_kv_head_create(&o->w, &shape, seed, g);
        if (!h)
            return CL_OUT_OF_HOST_MEMORY;
        workload_fill_k(h, staging);
        err = clEnqueueWriteBuffer(queue, in->k, CL_TRUE, (size_t)g * head_bytes, head_bytes,
                                   staging, 0, NULL, NULL);
        if (err == CL_SUCCESS) {
            workload_fill_v(h, staging);
            err = clEnqueueWriteBuffer(queue, in->v, CL_TRUE, (size_t)g * head_bytes, head_bytes,
                                       staging, 0, NULL, NULL);
        }
        for (int q = g * group; q < (g + 1) * group && err == CL_SUCCESS; q++) {
            workload_fill_q(h, q, staging);
            err = clEnqueueWriteBuffer(queue, in->q, CL_TRUE, (size_t)q * head_bytes, head_bytes,
                                       staging, 0, NULL, NULL);
        }
        workload_kv_head_free(h);
    }
    return err;
}

/* Creates every buffer of one length and uploads the inputs. Returns 0, or 1 with r->error. */
static int setup_length(const pbs_options *o, const bench_device *d, const pbsa_device_info *info,
                        int64_t seq, length_state *s, length_result *r)
{
    const int hq = o->c.heads, hkv = o->c.kv_heads, dim = o->c.head_dim;
    const pbsa_dtype dtype = o->c.dtype;
    const size_t element = pbsa_dtype_size(dtype);
    const size_t q_bytes = (size_t)hq * (size_t)seq * (size_t)dim * element;
    const size_t kv_bytes = (size_t)hkv * (size_t)seq * (size_t)dim * element;
    const int b = o->params.block_size;
    const size_t q_blocks = (size_t)((seq + b - 1) / b);
    s->ctx = d->ctx;
    s->seq = seq;
    s->params = o->params;
    s->dense_params = (pbsa_dense_params){.causal = o->params.causal, .scale = o->params.scale};
    s->perm_heads = o->params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? hkv : hq;
    const size_t pi_bytes = (size_t)s->perm_heads * (size_t)seq * sizeof(cl_int);
    const size_t counts_bytes = (size_t)hq * q_blocks * sizeof(cl_int);
    const size_t blocks_bytes = counts_bytes * q_blocks;

    const double set_bytes = (double)(q_bytes + 2 * kv_bytes);
    const double budget = MEMORY_SHARE * (double)info->global_mem_bytes;
    double fixed = 2.0 * (double)q_bytes + 2.0 * (double)pi_bytes + (double)counts_bytes +
                   (double)blocks_bytes;
    size_t largest = q_bytes > blocks_bytes ? q_bytes : blocks_bytes;
    cl_int err = CL_SUCCESS;
    const cl_mem_flags rw = CL_MEM_READ_WRITE;
    size_t workspace_bytes = 0;
    for (int i = 0; i < MAX_INPUT_SETS; i++) {
        if (i == 0 || fixed + (i + 1) * set_bytes <= budget) {
            /* The first set always; the others when they fit. */
            if (i == 0 && (fixed + set_bytes > budget || largest > info->max_alloc_bytes))
                break;
            input_set *in = &s->set[i];
            in->q = bench_create_buffer(d->cl_ctx, d->queue, CL_MEM_READ_ONLY, q_bytes, NULL,
                                        &err);
            if (err == CL_SUCCESS)
                in->k = bench_create_buffer(d->cl_ctx, d->queue, CL_MEM_READ_ONLY, kv_bytes, NULL,
                                            &err);
            if (err == CL_SUCCESS)
                in->v = bench_create_buffer(d->cl_ctx, d->queue, CL_MEM_READ_ONLY, kv_bytes, NULL,
                                            &err);
            in->tq = pbsa_tensor_bhsd(in->q, dtype, 1, hq, seq, dim);
            in->tk = pbsa_tensor_bhsd(in->k, dtype, 1, hkv, seq, dim);
            in->tv = pbsa_tensor_bhsd(in->v, dtype, 1, hkv, seq, dim);
            if (err != CL_SUCCESS)
                break;
            s->sets = i + 1;
        }
        if (i == 0) {
            /* pbsa_workspace_size() checks the shapes and parameters on real buffers. */
            int status = pbsa_workspace_size(d->ctx, &s->set[0].tq, &s->set[0].tk, &s->params,
                                             &workspace_bytes);
            if (status != PBSA_SUCCESS) {
                snprintf(r->error, sizeof r->error, "pbsa_workspace_size: %s (%s)",
                         pbsa_status_string(status), pbsa_context_last_error(d->ctx));
                return 1;
            }
            fixed += 2.0 * (double)workspace_bytes;
            largest = largest > workspace_bytes ? largest : workspace_bytes;
        }
    }
    r->sets = s->sets;
    if (err != CL_SUCCESS) {
        snprintf(r->error, sizeof r->error, "creating the input buffers failed (%d)", err);
        return 1;
    }
    if (s->sets == 0 || fixed + s->sets * set_bytes > budget ||
        largest > info->max_alloc_bytes) {
        snprintf(r->error, sizeof r->error,
                 "needs %.2f GB in buffers of up to %.2f GB; %.0f%% of the device's memory is "
                 "%.2f GB, %.2f GB per buffer",
                 (fixed + set_bytes) * 1e-9, (double)largest * 1e-9, 100.0 * MEMORY_SHARE,
                 budget * 1e-9, (double)info->max_alloc_bytes * 1e-9);
        return 1;
    }

    fprintf(stderr, "%s: seq %lld: generating %d input set(s) of the '%s' workload (%.2f GB)\n",
            PROGRAM, (long long)seq, s->sets, workload_name(&o->w), s->sets * set_bytes * 1e-9);
    void *staging = malloc((size_t)seq * (size_t)dim * element);
    if (!staging)
        err = CL_OUT_OF_HOST_MEMORY;
    for (int i = 0; i < s->sets && err == CL_SUCCESS; i++)
        err = fill_set(o, d->queue, seq, i, &s->set[i], staging);
    free(staging);
    if (err == CL_SUCCESS)
        s->o_dense = bench_create_buffer(d->cl_ctx, d->queue, rw, q_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->o_pbs = bench_create_buffer(d->cl_ctx, d->queue, rw, q_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->workspace = bench_create_buffer(d->cl_ctx, d->queue, rw, workspace_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->stage_workspace =
            bench_create_buffer(d->cl_ctx, d->queue, rw, workspace_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->pi_stage = bench_create_buffer(d->cl_ctx, d->queue, rw, pi_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->stage_list.counts =
            bench_create_buffer(d->cl_ctx, d->queue, rw, counts_bytes, NULL, &err);
    if (err == CL_SUCCESS)
        s->stage_list.blocks =
            bench_create_buffer(d->cl_ctx, d->queue, rw, blocks_bytes, NULL, &err);
    if (err == CL_SUCCESS) {
        /* The identity permutation, for the block density without permutation. */
        cl_int *identity = malloc(pi_bytes);
        err = identity ? CL_SUCCESS : CL_OUT_OF_HOST_MEMORY;
        for (size_t i = 0; identity && i < (size_t)s->perm_heads * (size_t)seq; i++)
            identity[i] = (cl_int)(i % (size_t)seq);
        if (err == CL_SUCCESS)
            s->pi_identity = bench_create_buffer(d->cl_ctx, d->queue, CL_MEM_READ_ONLY, pi_bytes,
                                                 identity, &err);
        free(identity);
    }
    if (err == CL_SUCCESS) {
        /* NaN, so that rows PBS attention never writes show up. */
        err = bench_poison(d->queue, s->o_pbs, element, q_bytes);
        if (err == CL_SUCCESS)
            err = clFinish(d->queue);
    }
    s->to_dense = pbsa_tensor_bhsd(s->o_dense, dtype, 1, hq, seq, dim);
    s->to_pbs = pbsa_tensor_bhsd(s->o_pbs, dtype, 1, hq, seq, dim);
    if (err != CL_SUCCESS) {
        snprintf(r->error, sizeof r->error, "setting up the buffers and inputs failed (%d)", err);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Accuracy and density
 * ------------------------------------------------------------------------------------------- */

/* Mean density over the query heads, and per pattern, from block counts. */
static int densities(const pbs_options *o, int64_t seq, const cl_int *counts, double *mean,
                     double *per_pattern, int *pattern_heads)
{
    const int hq = o->c.heads;
    double *density = malloc((size_t)hq * sizeof *density);
    if (!density)
        return PBSA_ERROR_OUT_OF_HOST_MEMORY;
    int status = pbsa_block_density(1, hq, seq, seq, &o->params, counts, density);
    if (status == PBSA_SUCCESS) {
        *mean = 0.0;
        for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++) {
            per_pattern[p] = 0.0;
            pattern_heads[p] = 0;
        }
        for (int h = 0; h < hq; h++) {
            workload_pattern p = workload_head_pattern(&o->w, h);
            *mean += density[h] / hq;
            per_pattern[p] += density[h];
            pattern_heads[p]++;
        }
        for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++)
            per_pattern[p] = pattern_heads[p] ? per_pattern[p] / pattern_heads[p] : NAN;
    }
    free(density);
    return status;
}

/* Share of the exact softmax mass of query row `row` that falls on the keys of its selected
 * blocks. q: the head's query rows, k: its key head (both in dtype); pi: that head's
 * permutation; count and blocks: the block list row of the row's query block. covered: seq
 * bytes of scratch. */
static double row_recall(const pbs_options *o, int64_t seq, const void *q, const void *k,
                         int64_t row, const cl_int *pi, cl_int count, const cl_int *blocks,
                         unsigned char *covered, double *logits)
{
    const int d = o->c.head_dim, b = o->params.block_size;
    const pbsa_dtype dtype = o->c.dtype;
    const double scale = o->params.scale > 0.0f ? o->params.scale : 1.0 / sqrt((double)d);
    const int64_t keys = o->params.causal ? row + 1 : seq;
    double max = -INFINITY;
    for (int64_t j = 0; j < keys; j++) {
        double dot = 0.0;
        for (int c = 0; c < d; c++)
            dot += bench_load_element(q, dtype, (size_t)(row * d + c)) *
                   bench_load_element(k, dtype, (size_t)(j * d + c));
        logits[j] = dot * scale;
        max = logits[j] > max ? logits[j] : max;
    }
    memset(covered, 0, (size_t)seq);
    for (cl_int t = 0; t < count; t++) {
        int64_t first = (int64_t)blocks[t] * b;
        for (int64_t p = first; p < first + b && p < seq; p++) {
            int64_t key = pi ? pi[p] : p;
            if (key >= 0 && key < keys) /* the token causal rule: pi[p] <= row */
                covered[key] = 1;
        }
    }
    double total = 0.0, kept = 0.0;
    for (int64_t j = 0; j < keys; j++) {
        double e = exp(logits[j] - max);
        total += e;
        kept += covered[j] ? e : 0.0;
    }
    return kept / total;
}

/* Computes dense and PBS attention on input set 0 again and measures density, error and recall
 * (see the top of this file). Returns 0 or an OpenCL/library status. */
static int measure_accuracy(const pbs_options *o, const bench_device *d, length_state *s,
                            length_result *r)
{
    const int hq = o->c.heads, group = hq / o->c.kv_heads, dim = o->c.head_dim;
    const int b = o->params.block_size;
    const int64_t seq = s->seq, nqb = (seq + b - 1) / b, nkb = nqb; /* queries span the keys */
    const pbsa_dtype dtype = o->c.dtype;
    const size_t element = pbsa_dtype_size(dtype);
    const size_t head_elements = (size_t)seq * (size_t)dim;
    const input_set *in = &s->set[0];
    cl_command_queue queue = d->queue;

    int status = enqueue_dense(s, queue, 0, NULL);
    if (status == PBSA_SUCCESS)
        status = enqueue_pbs(s, queue, 0, NULL);
    if (status == PBSA_SUCCESS)
        status = clFinish(queue);
    if (status != PBSA_SUCCESS)
        return status;

    const size_t counts_bytes = (size_t)hq * (size_t)nqb * sizeof(cl_int);
    const size_t blocks_bytes = counts_bytes * (size_t)nkb;
    const size_t pi_bytes = (size_t)s->perm_heads * (size_t)seq * sizeof(cl_int);
    cl_int *counts = malloc(counts_bytes), *counts_id = malloc(counts_bytes);
    cl_int *blocks = malloc(blocks_bytes), *blocks_id = malloc(blocks_bytes);
    cl_int *pi = malloc(pi_bytes);
    unsigned char *oh_dense = malloc(head_elements * element), *oh_pbs = malloc(head_elements * element);
    unsigned char *qh = malloc(head_elements * element), *kh = malloc(head_elements * element);
    unsigned char *covered = malloc((size_t)seq);
    double *logits = malloc((size_t)seq * sizeof *logits);
    if (!counts || !counts_id || !blocks || !blocks_id || !pi || !oh_dense || !oh_pbs || !qh ||
        !kh || !covered || !logits) {
        status = PBSA_ERROR_OUT_OF_HOST_MEMORY;
        goto done;
    }

    if (r->fallback) {
        /* Dense attention: every causal block, every key. */
        r->density = r->density_identity = 1.0;
        for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++) {
            r->pattern_heads[p] = 0;
            r->pattern_density[p] = r->pattern_density_identity[p] = NAN;
        }
        for (int h = 0; h < hq; h++)
            r->pattern_heads[workload_head_pattern(&o->w, h)]++;
        for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++)
            if (r->pattern_heads[p])
                r->pattern_density[p] = r->pattern_density_identity[p] = 1.0;
    } else {
        /* What pbsa_attention selected, from its workspace. */
        status = pbsa_workspace_read(s->ctx, queue, &in->tq, &in->tk, &s->params, s->workspace,
                                     PBSA_PART_BLOCK_COUNTS, counts, counts_bytes, NULL);
        if (status == PBSA_SUCCESS)
            status = pbsa_workspace_read(s->ctx, queue, &in->tq, &in->tk, &s->params,
                                         s->workspace, PBSA_PART_BLOCKS, blocks, blocks_bytes,
                                         NULL);
        if (status == PBSA_SUCCESS)
            status = pbsa_workspace_read(s->ctx, queue, &in->tq, &in->tk, &s->params,
                                         s->workspace, PBSA_PART_PERMUTATION, pi, pi_bytes, NULL);
        /* The same selection over the identity permutation. */
        if (status == PBSA_SUCCESS)
            status = pbsa_block_selection(s->ctx, queue, &in->tq, &in->tk, &s->params,
                                          s->pi_identity, 0, &s->stage_list, s->stage_workspace,
                                          NULL);
        if (status == PBSA_SUCCESS)
            status = bench_read_elements(queue, s->stage_list.counts, 1, 0, counts_bytes,
                                         counts_id);
        if (status == PBSA_SUCCESS)
            status = bench_read_elements(queue, s->stage_list.blocks, 1, 0, blocks_bytes,
                                         blocks_id);
        if (status == PBSA_SUCCESS)
            status = densities(o, seq, counts, &r->density, r->pattern_density, r->pattern_heads);
        if (status == PBSA_SUCCESS)
            status = densities(o, seq, counts_id, &r->density_identity,
                               r->pattern_density_identity, r->pattern_heads);
        if (status != PBSA_SUCCESS)
            goto done;
    }

    /* Two whole heads: the first and the last (with the mixed workload, two patterns). */
    r->sampled_count = hq > 1 ? 2 : 1;
    r->sampled[0] = 0;
    r->sampled[1] = hq - 1;
    double diff2_all = 0.0, ref2_all = 0.0, recall_sum = 0.0, recall_id_sum = 0.0;
    r->recall_min = INFINITY;
    int rows = seq < RECALL_ROWS ? (int)seq : RECALL_ROWS;
    for (int i = 0; i < r->sampled_count && status == PBSA_SUCCESS; i++) {
        const int h = r->sampled[i];
        const size_t first = (size_t)h * head_elements;
        status = bench_read_elements(queue, s->o_dense, element, first, head_elements, oh_dense);
        if (status == CL_SUCCESS)
            status = bench_read_elements(queue, s->o_pbs, element, first, head_elements, oh_pbs);
        if (status == CL_SUCCESS)
            status = bench_read_elements(queue, in->q, element, first, head_elements, qh);
        if (status == CL_SUCCESS)
            status = bench_read_elements(queue, in->k, element, (size_t)(h / group) * head_elements,
                                         head_elements, kh);
        if (status != CL_SUCCESS)
            break;
        double diff2 = 0.0, ref2 = 0.0;
        for (size_t e = 0; e < head_elements; e++) {
            double want = bench_load_element(oh_dense, dtype, e);
            double got = bench_load_element(oh_pbs, dtype, e);
            if (!isfinite(got)) {
                r->non_finite++;
                continue;
            }
            diff2 += (got - want) * (got - want);
            ref2 += want * want;
        }
        diff2_all += diff2;
        ref2_all += ref2;
        r->head_rel_l2[i] = ref2 > 0.0 ? sqrt(diff2 / ref2) : sqrt(diff2);

        /* Recall on rows spread over the sequence. */
        double head_sum = 0.0, head_id_sum = 0.0;
        const int pi_row = o->params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? h / group : h;
        for (int j = 0; j < rows; j++) {
            int64_t row = (2 * (int64_t)j + 1) * seq / (2 * rows);
            double recall = 1.0, recall_id = 1.0;
            if (!r->fallback) {
                size_t list = (size_t)h * (size_t)nqb + (size_t)(row / b);
                recall = row_recall(o, seq, qh, kh, row, pi + (size_t)pi_row * (size_t)seq,
                                    counts[list], blocks + list * (size_t)nkb, covered, logits);
                recall_id = row_recall(o, seq, qh, kh, row, NULL, counts_id[list],
                                       blocks_id + list * (size_t)nkb, covered, logits);
            }
            head_sum += recall;
            head_id_sum += recall_id;
            r->recall_min = recall < r->recall_min ? recall : r->recall_min;
        }
        r->head_recall[i] = head_sum / rows;
        r->head_recall_identity[i] = head_id_sum / rows;
        recall_sum += head_sum;
        recall_id_sum += head_id_sum;
    }
    if (status == PBSA_SUCCESS) {
        r->rel_l2 = ref2_all > 0.0 ? sqrt(diff2_all / ref2_all) : sqrt(diff2_all);
        r->recall = recall_sum / (rows * r->sampled_count);
        r->recall_identity = recall_id_sum / (rows * r->sampled_count);
        r->measured = true;
    }

done:
    free(counts);
    free(counts_id);
    free(blocks);
    free(blocks_id);
    free(pi);
    free(oh_dense);
    free(oh_pbs);
    free(qh);
    free(kh);
    free(covered);
    free(logits);
    return status;
}

/* Sets up, times and measures one length; fills r. Returns 0, or 1 when the length failed. */
static int run_length(const pbs_options *o, const bench_device *d, bench_timer *timer,
                      const pbsa_device_info *info, int64_t seq, length_result *r)
{
    memset(r, 0, sizeof *r);
    r->seq = seq;
    r->rel_l2 = r->recall = r->recall_min = r->recall_identity = NAN;
    r->density = r->density_identity = r->speedup = NAN;
    for (int i = 0; i < OP_COUNT; i++)
        r->ms_median[i] = r->ms_min[i] = NAN;
    r->fallback = seq <= o->params.segment_size;

    length_state s;
    memset(&s, 0, sizeof s);
    double *times = NULL;
    if (setup_length(o, d, info, seq, &s, r) != 0)
        goto fail;

    timer->repeats = repeats_for(o, info->is_gpu, seq);
    times = calloc((size_t)OP_COUNT * (size_t)timer->repeats, sizeof *times);
    if (!times) {
        snprintf(r->error, sizeof r->error, "out of host memory");
        goto fail;
    }
    static const bench_enqueue_fn enqueue[OP_COUNT] = {enqueue_dense, enqueue_pbs,
                                                       enqueue_permutation, enqueue_selection,
                                                       enqueue_sparse};
    bench_op ops[OP_COUNT];
    /* The stages are not timed for the short-sequence fallback, which has none. */
    const int op_count = r->fallback ? 2 : OP_COUNT;
    for (int i = 0; i < op_count; i++)
        ops[i] = (bench_op){op_names[i], enqueue[i], &s, times + (size_t)i * timer->repeats};
    char label[64];
    snprintf(label, sizeof label, "seq %lld", (long long)seq);
    timer->label = label;
    fprintf(stderr, "%s: seq %lld: %d warm-up round(s), then up to %d timed\n", PROGRAM,
            (long long)seq, timer->warmup, timer->repeats);
    r->runs = bench_run_ops(timer, ops, op_count, r->error, sizeof r->error);
    if (r->runs < 0) {
        r->runs = 0;
        goto fail;
    }
    for (int i = 0; i < op_count; i++) {
        r->ms_min[i] = bench_min(ops[i].times, r->runs);
        r->ms_median[i] = bench_median(ops[i].times, r->runs);
    }
    r->speedup = r->ms_median[OP_DENSE] / r->ms_median[OP_PBS];

    fprintf(stderr, "%s: seq %lld: density and accuracy\n", PROGRAM, (long long)seq);
    int status = measure_accuracy(o, d, &s, r);
    if (status != PBSA_SUCCESS) {
        snprintf(r->error, sizeof r->error, "the accuracy pass failed: %s (%s)",
                 pbsa_status_string(status), pbsa_context_last_error(d->ctx));
        goto fail;
    }
    free(times);
    release_state(&s);
    return r->non_finite ? 1 : 0;

fail:
    clFinish(d->queue);
    free(times);
    release_state(&s);
    return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

static void print_header(void)
{
    printf("%7s %9s %9s %8s %8s %8s %8s %8s %8s %9s %7s\n", "seq", "dense_ms", "pbs_ms",
           "speedup", "perm_ms", "sel_ms", "sparse", "density", "no_perm", "rel_l2", "recall");
    fflush(stdout);
}

static void print_number(const char *format, const char *empty, double value)
{
    if (isfinite(value))
        printf(format, value);
    else
        printf("%s", empty);
}

static void print_row(const length_result *r)
{
    printf("%7lld", (long long)r->seq);
    if (r->runs > 0) {
        print_number(" %9.3f", " %9s", r->ms_median[OP_DENSE]);
        print_number(" %9.3f", "", r->ms_median[OP_PBS]);
        print_number(" %7.2fx", "", r->speedup);
        for (int i = OP_PERMUTATION; i <= OP_SPARSE; i++) {
            if (isfinite(r->ms_median[i]))
                printf(" %8.3f", r->ms_median[i]);
            else
                printf(" %8s", "-");
        }
    }
    if (r->measured) {
        printf(" %7.1f%% %7.1f%% %9.2e %6.1f%%", 100.0 * r->density, 100.0 * r->density_identity,
               r->rel_l2, 100.0 * r->recall);
        if (r->fallback)
            printf("  (seq <= segment: dense fallback)");
        if (r->non_finite)
            printf("  %ld NaN/Inf outputs!", r->non_finite);
    }
    if (r->error[0])
        printf("  error: %s", r->error);
    printf("\n");
    fflush(stdout);
}

static void json_ops(json_writer *w, const char *key, const double *values, const length_result *r)
{
    json_object_begin(w, key);
    for (int i = 0; i < OP_COUNT; i++)
        json_number(w, op_names[i], r->runs > 0 ? values[i] : NAN);
    json_object_end(w);
}

static void json_patterns(json_writer *w, const char *key, const double *values,
                          const length_result *r)
{
    json_object_begin(w, key);
    for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++)
        if (r->pattern_heads[p])
            json_number(w, workload_pattern_name((workload_pattern)p), values[p]);
    json_object_end(w);
}

static int write_json(const char *path, const pbs_options *o, const bench_run_info *ri,
                      const length_result *results, int count)
{
    json_writer w;
    FILE *file = bench_json_open(PROGRAM, path, &w);
    if (!file)
        return 1;
    json_object_begin(&w, NULL);
    bench_json_run_info(&w, "pbs_attention", ri);
    json_bool(&w, "force_portable", o->c.portable);
    json_string(&w, "timing", "OpenCL profiling events: device time from a marker before the "
                              "call to the end of its last kernel; median over timed rounds");
    json_string(&w, "workload", workload_name(&o->w));
    json_string(&w, "dtype", bench_dtype_name(o->c.dtype));
    json_int(&w, "batch", 1);
    json_int(&w, "heads", o->c.heads);
    json_int(&w, "kv_heads", o->c.kv_heads);
    json_int(&w, "head_dim", o->c.head_dim);
    json_array_begin(&w, "head_patterns");
    for (int h = 0; h < o->c.heads; h++)
        json_string(&w, NULL, workload_pattern_name(workload_head_pattern(&o->w, h)));
    json_array_end(&w);
    json_int(&w, "seed", (long long)o->c.seed);
    json_int(&w, "warmup_rounds", o->c.warmup);
    json_object_begin(&w, "params");
    json_int(&w, "block_size", o->params.block_size);
    json_int(&w, "segment_size", o->params.segment_size);
    json_number(&w, "threshold", round((double)o->params.threshold * 1e6) / 1e6);
    json_bool(&w, "causal", o->params.causal);
    json_bool(&w, "force_first_block", o->params.force_first_block);
    json_string(&w, "gqa_mode", o->params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP
                                    ? "shared_per_kv_group"
                                    : "per_query_head");
    json_number(&w, "scale", o->params.scale > 0.0f ? o->params.scale
                                                    : 1.0 / sqrt((double)o->c.head_dim));
    json_object_end(&w);
    json_array_begin(&w, "results");
    for (int i = 0; i < count; i++) {
        const length_result *r = &results[i];
        json_object_begin(&w, NULL);
        json_int(&w, "seq", r->seq);
        json_bool(&w, "dense_fallback", r->fallback);
        json_int(&w, "input_sets", r->sets);
        json_int(&w, "runs", r->runs);
        json_number(&w, "dense_ms", r->runs > 0 ? r->ms_median[OP_DENSE] : NAN);
        json_number(&w, "pbs_ms", r->runs > 0 ? r->ms_median[OP_PBS] : NAN);
        json_number(&w, "speedup", r->runs > 0 ? r->speedup : NAN);
        json_ops(&w, "ms_median", r->ms_median, r);
        json_ops(&w, "ms_min", r->ms_min, r);
        json_number(&w, "stages_ms_sum",
                    r->ms_median[OP_PERMUTATION] + r->ms_median[OP_SELECTION] +
                        r->ms_median[OP_SPARSE]);
        if (r->measured) {
            json_number(&w, "density", r->density);
            json_number(&w, "density_without_permutation", r->density_identity);
            json_patterns(&w, "density_by_pattern", r->pattern_density, r);
            json_patterns(&w, "density_without_permutation_by_pattern",
                          r->pattern_density_identity, r);
            json_number(&w, "rel_l2", r->rel_l2);
            json_number(&w, "recall", r->recall);
            json_number(&w, "recall_min", r->recall_min);
            json_number(&w, "recall_without_permutation", r->recall_identity);
            json_int(&w, "recall_rows_per_head", r->seq < RECALL_ROWS ? r->seq : RECALL_ROWS);
            json_array_begin(&w, "sampled_heads");
            for (int h = 0; h < r->sampled_count; h++) {
                json_object_begin(&w, NULL);
                json_int(&w, "head", r->sampled[h]);
                json_string(&w, "pattern",
                            workload_pattern_name(workload_head_pattern(&o->w, r->sampled[h])));
                json_number(&w, "rel_l2", r->head_rel_l2[h]);
                json_number(&w, "recall", r->head_recall[h]);
                json_number(&w, "recall_without_permutation", r->head_recall_identity[h]);
                json_object_end(&w);
            }
            json_array_end(&w);
            json_int(&w, "non_finite_outputs", r->non_finite);
        }
        if (r->error[0])
            json_string(&w, "error", r->error);
        json_object_end(&w);
    }
    json_array_end(&w);
    json_object_end(&w);
    return bench_json_close(PROGRAM, path, file, &w);
}

int main(int argc, char **argv)
{
    static pbs_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0)
        return parsed < 0 ? 0 : parsed;
    static bench_run_info ri;
    bench_run_info_init(&ri, argc, argv);
    bench_device d;
    if (bench_device_open(PROGRAM, o.c.device, o.c.portable, &d, &ri) != 0)
        return 2;
    if (!apply_defaults(&o, ri.device.is_gpu)) {
        bench_device_close(&d);
        return 2;
    }
    bench_timer timer = {.program = PROGRAM,
                         .warmup = o.c.warmup,
                         .min_runs = MIN_TIMED_RUNS,
                         .max_seconds = o.c.max_seconds};
    if (bench_timer_init(&timer, &d) != CL_SUCCESS) {
        fprintf(stderr, "%s: cannot create a buffer on the device\n", PROGRAM);
        bench_device_close(&d);
        return 2;
    }

    bench_print_device(&ri);
    printf("PBS vs dense attention: %s, heads %d, kv_heads %d, head_dim %d, causal; workload "
           "%s; block %d, segment %d, threshold %.2f, %s%s\n",
           bench_dtype_name(o.c.dtype), o.c.heads, o.c.kv_heads, o.c.head_dim,
           workload_name(&o.w), o.params.block_size, o.params.segment_size,
           (double)o.params.threshold,
           o.params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? "shared GQA permutation"
                                                             : "per-head permutation",
           o.c.portable ? ", portable kernels" : "");
    print_header();

    int exit_status = 0;
    static length_result results[BENCH_MAX_LENGTHS];
    for (int i = 0; i < o.c.length_count; i++) {
        if (run_length(&o, &d, &timer, &ri.device, o.c.lengths[i], &results[i]) != 0)
            exit_status = 1;
        print_row(&results[i]);
    }
    printf("times: medians in ms (device time, OpenCL events); speedup = dense/pbs; perm, sel, "
           "sparse: the stages called one by one;\ndensity: share of the causal key blocks "
           "computed, with and without the permutation; rel_l2: PBS vs dense output over heads "
           "0 and %d;\nrecall: share of the exact attention mass on the selected keys (%d rows "
           "per head)\n",
           o.c.heads - 1, RECALL_ROWS);
    if (o.c.json_path && write_json(o.c.json_path, &o, &ri, results, o.c.length_count) != 0)
        exit_status = 1;

    bench_timer_release(&timer);
    bench_device_close(&d);
    return exit_status;
}
