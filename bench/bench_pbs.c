/* pbsa-bench-pbs: PBS attention against dense attention on one OpenCL device, speed and
 * accuracy, on synthetic LLM-like heads (workload.h), one or several workloads per run, or on
 * captured activations from .npy files (pbs_inputs.c).
 *
 * Per workload and sequence length, on the same inputs and in the same run: dense attention
 * (pbsa_dense_attention), the whole PBS pipeline (pbsa_attention with a pre-allocated
 * workspace) and its three stages called one by one (pbsa_permutation, pbsa_block_selection,
 * pbsa_sparse_attention), timed in interleaved rounds with OpenCL profiling events after
 * warm-up (median of the timed rounds, input sets rotating; bench_util.h says what is timed).
 * Then, on input set 0: the block density with the permutation (from the workspace) and without
 * it (block selection over the identity permutation); the relative L2 error of the PBS output
 * against the dense output on two whole heads; and the attention recall of sampled query rows:
 * the share of the exact softmax mass (float64 on the host, from the stored inputs) that falls on
 * the keys the selected blocks cover. The results go to a table on stdout with the issue's
 * targets checked at the end, and to JSON and CSV files (pbs_output.c). */
#include "bench_pbs.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PROGRAM[] = "pbsa-bench-pbs";

enum {
    MAX_INPUT_SETS = PBS_MAX_INPUT_SETS,
    MIN_TIMED_RUNS = 3,
    SAMPLED_HEADS = PBS_SAMPLED_HEADS,
    RECALL_ROWS = PBS_RECALL_ROWS,
    OP_COUNT = PBS_OP_COUNT,
    EXIT_NO_DEVICE = 3,
};

const char *const pbs_op_names[PBS_OP_COUNT] = {"dense", "pbs", "permutation", "selection",
                                                "sparse"};

/* Shapes of attention layers of known models (query heads, key/value heads, head dim). */
static const struct {
    const char *name;
    int heads, kv_heads, head_dim;
} presets[] = {
    {"llama3-8b", 32, 8, 128},  /* Llama-3.1-8B */
    {"qwen2.5-7b", 28, 4, 128}, /* Qwen2.5-7B */
};
enum { PRESET_COUNT = sizeof presets / sizeof presets[0] };

/* Share of the device memory the inputs, outputs and workspaces of one length may take. */
static const double MEMORY_SHARE = 0.6;

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-bench-pbs [options]\n"
            "PBS attention (pbsa_attention) against dense attention on the same inputs,\n"
            "synthetic LLM-like heads or .npy files: time, speedup, stage times, block density,\n"
            "and accuracy, with the benchmark's targets checked at the end.\n"
            "  --device SELECTOR   'P:D', a device index or a name substring (see pbsa-info);\n"
            "                      default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --lengths L1,L2,..  sequence lengths (default: 8192,16384,32768 on a GPU,\n"
            "                      1024,2048 on other devices; with --q, the files' length)\n"
            "  --dtype T           f32, f16 or bf16, of Q and O (and K and V) (default: bf16\n"
            "                      on a GPU, else f32)\n"
            "  --kv-dtype T        f32, f16 or bf16, of K and V (default: --dtype)\n"
            "  --preset NAME       a model's attention shape: llama3-8b (32 query heads, 8\n"
            "                      key/value heads, head_dim 128) or qwen2.5-7b (28, 4, 128);\n"
            "                      --heads, --kv-heads and --head-dim override its values\n"
            "  --heads N           query heads (default: 32 on a GPU, else 4)\n"
            "  --kv-heads N        key/value heads, dividing --heads (default: 8 on a GPU and\n"
            "                      1 elsewhere when --heads is not given, else --heads)\n"
            "  --head-dim N        64, 80, 96, 112, 128, 192 or 256 (default: 128 on a GPU,\n"
            "                      else 64)\n"
            "  --workload W1,W2,.. synthetic workloads, each run over every length: sink-local,\n"
            "                      vertical, vertical-slash, topics, random or mixed (default\n"
            "                      mixed; bench/workload.h describes them)\n"
            "  --q, --k, --v PATH  captured activations instead: Q [1, Hq, S, D], K and V\n"
            "                      [1, Hkv, S, D] in pbsa-run's .npy format ('<f4', '<f2', or\n"
            "                      '<u2' holding bfloat16 bits); they set the shape and dtypes,\n"
            "                      and a length below S takes the first positions\n"
            "  --block N           PBS block size: 16, 32, 64 or 128 (default 128)\n"
            "  --segment N         permutation segment, a multiple of --block (default 256)\n"
            "  --threshold T       attention mass the block selection keeps (default 0.9)\n"
            "  --gqa MODE          per-head (one permutation per query head, the default) or\n"
            "                      shared (one per key/value head)\n"
            "  --repeats N         timed rounds per length, median reported (default: 3 off a\n"
            "                      GPU; on a GPU 10 up to 16384 tokens, 5 up to 32768, then 3)\n"
            "  --warmup N          untimed rounds first, kernel builds included (default: 2 on\n"
            "                      a GPU, else 1)\n"
            "  --max-seconds S     stop timing a length after S s, keeping at least %d rounds\n"
            "                      (default 20)\n"
            "  --json PATH         also write the results as JSON to PATH\n"
            "  --csv PATH          also write them as CSV, one row per (workload, length)\n"
            "  --dump-inputs DIR   write the inputs of the first workload at one length (input\n"
            "                      set 0) to DIR as q.npy, k.npy, v.npy and inputs.json, for\n"
            "                      --q/--k/--v, pbsa-run or bench/sdpa_anchor.py\n"
            "  --dump-length L     the length dumped, one of --lengths (default: the first),\n"
            "                      or 'all': every length, each to DIR/<length>/\n"
            "  --seed N            seed of the inputs (default 1)\n"
            "  --portable          force the portable kernels\n"
            "  --help              this text\n"
            "A round times, one after another on the same inputs: dense attention, the whole\n"
            "PBS pipeline, and its three stages. Columns: times in ms (medians); speedup =\n"
            "dense / PBS; overhead = (permutation + selection) / dense; density = selected key\n"
            "blocks over the causal blocks (mean over heads), with and without the permutation;\n"
            "rel_l2 = ||O_pbs - O_dense|| / ||O_dense|| over %d whole heads; recall = share of\n"
            "the exact softmax mass on the keys that the selected blocks cover, mean over %d rows\n"
            "of each of those heads.\n"
            "Targets: overhead at most %.0f%% of dense from %dK tokens, permutation + selection\n"
            "under %.0f ms at %dK, PBS faster than dense from %dK; each row says met or by how\n"
            "much it missed.\n"
            "Exit status: 0 on success, 1 when a length failed or produced NaN/Inf, 2 on bad\n"
            "arguments, 3 when there is no OpenCL device.\n",
            MIN_TIMED_RUNS, SAMPLED_HEADS, RECALL_ROWS, 100.0 * PBS_TARGET_OVERHEAD,
            PBS_TARGET_OVERHEAD_FROM / 1024, PBS_TARGET_STAGES_MS, PBS_TARGET_STAGES_AT / 1024,
            PBS_TARGET_FASTER_FROM / 1024);
}

int pbs_head_pattern(const pbs_workload *w, int h)
{
    return w->from_npy ? -1 : (int)workload_head_pattern(&w->w, h);
}

/* Parses "W1,W2,..." into o->workloads. */
static bool parse_workloads(const char *text, pbs_options *o)
{
    o->workload_count = 0;
    const char *at = text;
    while (*at) {
        char item[32];
        size_t n = strcspn(at, ",");
        if (n == 0 || n >= sizeof item || o->workload_count == WORKLOAD_PATTERN_COUNT + 1)
            return false;
        memcpy(item, at, n);
        item[n] = '\0';
        pbs_workload *w = &o->workloads[o->workload_count];
        if (!workload_parse(item, &w->w))
            return false;
        w->from_npy = false;
        w->name = workload_name(&w->w);
        for (int i = 0; i < o->workload_count; i++)
            if (strcmp(o->workloads[i].name, w->name) == 0)
                return false; /* twice */
        o->workload_count++;
        at += n;
        if (*at == ',')
            at++;
    }
    return o->workload_count > 0;
}

/* bench_own_option: the options of this program. */
static int pbs_option(const char *arg, const char *value, void *data)
{
    pbs_options *o = data;
    long long n = 0;
    double x = 0.0;
    bool ok = true;
    if (strcmp(arg, "--workload") == 0) {
        ok = o->workload_given = parse_workloads(value, o);
    } else if (strcmp(arg, "--preset") == 0) {
        ok = false;
        for (int p = 0; p < PRESET_COUNT; p++)
            if (strcmp(value, presets[p].name) == 0) {
                o->preset = presets[p].name;
                ok = true;
            }
    } else if (strcmp(arg, "--q") == 0 || strcmp(arg, "--k") == 0 ||
               strcmp(arg, "--v") == 0) {
        o->npy.path[arg[2] == 'q' ? 0 : arg[2] == 'k' ? 1 : 2] = value;
    } else if (strcmp(arg, "--csv") == 0) {
        o->csv_path = value;
    } else if (strcmp(arg, "--dump-inputs") == 0) {
        o->dump_dir = value;
    } else if (strcmp(arg, "--dump-length") == 0) {
        ok = strcmp(value, "all") == 0 || bench_parse_int(value, 1, INT32_MAX, &n);
        o->dump_length = strcmp(value, "all") == 0 ? PBS_DUMP_ALL : n;
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
        return 0;
    }
    return ok ? 1 : -1;
}

/* Returns 0 when the options are usable, 2 otherwise (after a message), -1 after --help. */
static int parse_options(int argc, char **argv, pbs_options *o)
{
    memset(o, 0, sizeof *o);
    o->params = pbsa_params_default();
    parse_workloads("mixed", o);
    int status = bench_parse_options(PROGRAM, argc, argv, usage, &o->c, pbs_option, o);
    if (status != 0)
        return status;
    if (o->params.segment_size % o->params.block_size != 0) {
        fprintf(stderr, "%s: --segment %d is not a multiple of --block %d\n", PROGRAM,
                o->params.segment_size, o->params.block_size);
        return 2;
    }
    const int npy_paths = (o->npy.path[0] != NULL) + (o->npy.path[1] != NULL) +
                          (o->npy.path[2] != NULL);
    if (npy_paths) {
        if (npy_paths != 3 || o->workload_given || o->preset) {
            fprintf(stderr, "%s: .npy inputs need all of --q, --k and --v, and neither "
                            "--workload nor --preset\n", PROGRAM);
            return 2;
        }
        o->workload_count = 1;
        o->workloads[0] = (pbs_workload){.name = "npy", .from_npy = true};
        if (pbs_npy_load(PROGRAM, o) != 0)
            return 2;
    }
    for (int p = 0; p < PRESET_COUNT && o->preset; p++)
        if (strcmp(o->preset, presets[p].name) == 0) {
            /* What was given explicitly wins over the preset. */
            o->c.heads = o->c.heads ? o->c.heads : presets[p].heads;
            o->c.kv_heads = o->c.kv_heads ? o->c.kv_heads : presets[p].kv_heads;
            o->c.head_dim = o->c.head_dim ? o->c.head_dim : presets[p].head_dim;
        }
    static const int head_dims[] = {0, 64, 80, 96, 112, 128, 192, 256}; /* 0: not given */
    size_t h = 0;
    while (h < sizeof head_dims / sizeof head_dims[0] && head_dims[h] != o->c.head_dim)
        h++;
    if (h == sizeof head_dims / sizeof head_dims[0]) {
        fprintf(stderr, "%s: --head-dim must be 64, 80, 96, 112, 128, 192 or 256\n", PROGRAM);
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
    if (!c->kv_dtype_given)
        c->kv_dtype = c->dtype;
    if (c->heads == 0) {
        c->heads = gpu ? 32 : 4;
        if (c->kv_heads == 0)
            c->kv_heads = gpu ? 8 : 1;
    }
    c->head_dim = c->head_dim ? c->head_dim : gpu ? 128 : 64;
    c->warmup = c->warmup ? c->warmup : gpu ? 2 : 1;
    c->max_seconds = c->max_seconds > 0.0 ? c->max_seconds : 20.0;
    c->seed = c->seed_given ? c->seed : 1;
    if (o->dump_dir) {
        bool listed = o->dump_length == 0 || o->dump_length == PBS_DUMP_ALL;
        for (int i = 0; i < c->length_count; i++)
            listed = listed || c->lengths[i] == o->dump_length;
        if (!listed) {
            fprintf(stderr, "%s: --dump-length %lld is not one of --lengths\n", PROGRAM,
                    (long long)o->dump_length);
            return false;
        }
        o->dump_length = o->dump_length ? o->dump_length : c->lengths[0];
    }
    return bench_check_common_options(PROGRAM, c);
}

static int repeats_for(const pbs_options *o, bool gpu, int64_t seq)
{
    if (o->c.repeats)
        return o->c.repeats;
    if (!gpu)
        return 3;
    return seq <= 16384 ? 10 : seq <= 32768 ? 5 : 3;
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
    const pbs_workload *w;
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

/* Generates input set `index` of workload w head by head on the host and uploads it. */
static cl_int fill_set(const pbs_options *o, const workload *w, cl_command_queue queue,
                       int64_t seq, int index, input_set *in, void *staging)
{
    const int hq = o->c.heads, hkv = o->c.kv_heads, d = o->c.head_dim, group = hq / hkv;
    const size_t q_head_bytes = (size_t)seq * (size_t)d * pbsa_dtype_size(o->c.dtype);
    const size_t head_bytes = (size_t)seq * (size_t)d * pbsa_dtype_size(o->c.kv_dtype);
    const workload_shape shape = {hq, hkv, d, seq, o->c.dtype, o->c.kv_dtype};
    uint64_t seed_state = o->c.seed ^ ((uint64_t)seq << 20) ^ (uint64_t)index;
    const uint64_t seed = splitmix64(&seed_state);
    cl_int err = CL_SUCCESS;
    for (int g = 0; g < hkv && err == CL_SUCCESS; g++) {
        workload_kv_head *h = workload_kv_head_create(w, &shape, seed, g);
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
            err = clEnqueueWriteBuffer(queue, in->q, CL_TRUE, (size_t)q * q_head_bytes,
                                       q_head_bytes, staging, 0, NULL, NULL);
        }
        workload_kv_head_free(h);
    }
    return err;
}

/* Creates every buffer of one length and uploads the inputs. Returns 0, or 1 with r->error. */
static int setup_length(const pbs_options *o, const support_device *d, const pbsa_device_info *info,
                        const pbs_workload *w, int64_t seq, length_state *s, length_result *r)
{
    const int hq = o->c.heads, hkv = o->c.kv_heads, dim = o->c.head_dim;
    const pbsa_dtype dtype = o->c.dtype, kv_dtype = o->c.kv_dtype;
    const size_t element = pbsa_dtype_size(dtype), kv_element = pbsa_dtype_size(kv_dtype);
    const size_t q_bytes = (size_t)hq * (size_t)seq * (size_t)dim * element;
    const size_t kv_bytes = (size_t)hkv * (size_t)seq * (size_t)dim * kv_element;
    const int b = o->params.block_size;
    const size_t q_blocks = (size_t)((seq + b - 1) / b);
    s->ctx = d->ctx;
    s->w = w;
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
    /* .npy inputs are one set: the timed rounds reuse it. */
    const int max_sets = w->from_npy ? 1 : MAX_INPUT_SETS;
    for (int i = 0; i < max_sets; i++) {
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
            in->tk = pbsa_tensor_bhsd(in->k, kv_dtype, 1, hkv, seq, dim);
            in->tv = pbsa_tensor_bhsd(in->v, kv_dtype, 1, hkv, seq, dim);
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

    if (w->from_npy) {
        fprintf(stderr, "%s: seq %lld: uploading the .npy inputs (%.2f GB)\n", PROGRAM,
                (long long)seq, set_bytes * 1e-9);
        err = pbs_npy_upload(o, d->queue, seq, s->set[0].q, s->set[0].k, s->set[0].v);
    } else {
        fprintf(stderr,
                "%s: seq %lld: generating %d input set(s) of the '%s' workload (%.2f GB)\n",
                PROGRAM, (long long)seq, s->sets, w->name, s->sets * set_bytes * 1e-9);
        const size_t widest = element > kv_element ? element : kv_element;
        void *staging = malloc((size_t)seq * (size_t)dim * widest);
        if (!staging)
            err = CL_OUT_OF_HOST_MEMORY;
        for (int i = 0; i < s->sets && err == CL_SUCCESS; i++)
            err = fill_set(o, &w->w, d->queue, seq, i, &s->set[i], staging);
        free(staging);
    }
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
static int densities(const pbs_options *o, const pbs_workload *w, int64_t seq,
                     const cl_int *counts, double *mean, double *per_pattern, int *pattern_heads)
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
            int p = pbs_head_pattern(w, h);
            *mean += density[h] / hq;
            if (p >= 0) {
                per_pattern[p] += density[h];
                pattern_heads[p]++;
            }
        }
        for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++)
            per_pattern[p] = pattern_heads[p] ? per_pattern[p] / pattern_heads[p] : NAN;
    }
    free(density);
    return status;
}

/* Share of the exact softmax mass of query row `row` that falls on the keys of its selected
 * blocks. q: the head's query rows (in dtype), k: its key head (in kv_dtype); pi: that head's
 * permutation; count and blocks: the block list row of the row's query block. covered: seq
 * bytes of scratch. */
static double row_recall(const pbs_options *o, int64_t seq, const void *q, const void *k,
                         int64_t row, const cl_int *pi, cl_int count, const cl_int *blocks,
                         unsigned char *covered, double *logits)
{
    const int d = o->c.head_dim, b = o->params.block_size;
    const double scale = o->params.scale > 0.0f ? o->params.scale : 1.0 / sqrt((double)d);
    const int64_t keys = o->params.causal ? row + 1 : seq;
    double max = -INFINITY;
    for (int64_t j = 0; j < keys; j++) {
        double dot = 0.0;
        for (int c = 0; c < d; c++)
            dot += tensor_load(q, o->c.dtype, (size_t)(row * d + c)) *
                   tensor_load(k, o->c.kv_dtype, (size_t)(j * d + c));
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
static int measure_accuracy(const pbs_options *o, const support_device *d, length_state *s,
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
    const size_t kv_element = pbsa_dtype_size(o->c.kv_dtype);
    unsigned char *qh = malloc(head_elements * element), *kh = malloc(head_elements * kv_element);
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
            if (pbs_head_pattern(s->w, h) >= 0)
                r->pattern_heads[pbs_head_pattern(s->w, h)]++;
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
            status = densities(o, s->w, seq, counts, &r->density, r->pattern_density,
                               r->pattern_heads);
        if (status == PBSA_SUCCESS)
            status = densities(o, s->w, seq, counts_id, &r->density_identity,
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
            status = bench_read_elements(queue, in->k, kv_element,
                                         (size_t)(h / group) * head_elements, head_elements, kh);
        if (status != CL_SUCCESS)
            break;
        double diff2 = 0.0, ref2 = 0.0;
        for (size_t e = 0; e < head_elements; e++) {
            double want = tensor_load(oh_dense, dtype, e);
            double got = tensor_load(oh_pbs, dtype, e);
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

/* Sets up, times and measures one length of workload `workload`; fills r. Returns 0, or 1 when
 * the length failed. */
static int run_length(const pbs_options *o, const support_device *d, bench_timer *timer,
                      const pbsa_device_info *info, int workload, int64_t seq, length_result *r)
{
    const pbs_workload *w = &o->workloads[workload];
    memset(r, 0, sizeof *r);
    r->workload = workload;
    r->seq = seq;
    r->rel_l2 = r->recall = r->recall_min = r->recall_identity = NAN;
    r->density = r->density_identity = r->speedup = r->overhead = NAN;
    for (int i = 0; i < OP_COUNT; i++)
        r->ms_median[i] = r->ms_min[i] = NAN;
    r->fallback = seq <= o->params.segment_size;

    length_state s;
    memset(&s, 0, sizeof s);
    double *times = NULL;
    char label[96];
    snprintf(label, sizeof label, "%s, seq %lld", w->name, (long long)seq);
    if (setup_length(o, d, info, w, seq, &s, r) != 0)
        goto fail;
    if (o->dump_dir && workload == 0 &&
        (seq == o->dump_length || o->dump_length == PBS_DUMP_ALL)) {
        char error[sizeof r->error - 32];
        if (pbs_dump_inputs(o, w->name, d->queue, seq, s.set[0].q, s.set[0].k, s.set[0].v,
                            error, sizeof error) != 0) {
            snprintf(r->error, sizeof r->error, "--dump-inputs: %s", error);
            goto fail;
        }
        r->dumped = true;
        fprintf(stderr, "%s: %s: inputs written to %s\n", PROGRAM, label, o->dump_dir);
    }

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
        ops[i] = (bench_op){pbs_op_names[i], enqueue[i], &s, times + (size_t)i * timer->repeats};
    timer->label = label;
    fprintf(stderr, "%s: %s: %d warm-up round(s), then up to %d timed\n", PROGRAM, label,
            timer->warmup, timer->repeats);
    r->runs = bench_run_ops(timer, ops, op_count, r->error, sizeof r->error);
    if (r->runs < 0) {
        r->runs = 0;
        goto fail;
    }
    for (int i = 0; i < op_count; i++) {
        r->ms_min[i] = timing_min(ops[i].times, r->runs);
        r->ms_median[i] = timing_median(ops[i].times, r->runs);
    }
    r->speedup = r->ms_median[OP_DENSE] / r->ms_median[OP_PBS];
    if (!r->fallback)
        r->overhead = (r->ms_median[OP_PERMUTATION] + r->ms_median[OP_SELECTION]) /
                      r->ms_median[OP_DENSE];

    fprintf(stderr, "%s: %s: density and accuracy\n", PROGRAM, label);
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

/* Writes the files asked for with the results so far. Returns 0, or 1 after a message. */
static int write_files(const pbs_options *o, const bench_run_info *ri,
                       const length_result *results, int count, int planned)
{
    int failed = 0;
    if (o->c.json_path)
        failed |= pbs_write_json(PROGRAM, o->c.json_path, o, ri, results, count, planned);
    if (o->csv_path)
        failed |= pbs_write_csv(PROGRAM, o->csv_path, o, ri, results, count);
    return failed;
}

int main(int argc, char **argv)
{
    static pbs_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0) {
        pbs_npy_free(&o.npy);
        return parsed < 0 ? 0 : parsed;
    }
    static bench_run_info ri;
    bench_run_info_init(&ri, argc, argv);
    support_device d;
    int opened = bench_device_open(PROGRAM, o.c.device, o.c.portable, &d, &ri);
    if (opened != 0) {
        pbs_npy_free(&o.npy);
        return opened == BENCH_NO_DEVICE ? EXIT_NO_DEVICE : 2;
    }
    if (!apply_defaults(&o, ri.device.is_gpu)) {
        support_device_close(&d);
        pbs_npy_free(&o.npy);
        return 2;
    }
    bench_timer timer = {.program = PROGRAM,
                         .warmup = o.c.warmup,
                         .min_runs = MIN_TIMED_RUNS,
                         .max_seconds = o.c.max_seconds};
    if (bench_timer_init(&timer, &d) != CL_SUCCESS) {
        fprintf(stderr, "%s: cannot create a buffer on the device\n", PROGRAM);
        support_device_close(&d);
        pbs_npy_free(&o.npy);
        return 2;
    }

    bench_print_device(&ri);
    char shape[96] = "";
    if (o.preset)
        snprintf(shape, sizeof shape, " (preset %s)", o.preset);
    printf("PBS vs dense attention: %s (K/V %s), heads %d, kv_heads %d, head_dim %d%s, causal; "
           "%s; block %d, segment %d, threshold %.2f, %s%s\n",
           bench_dtype_name(o.c.dtype), bench_dtype_name(o.c.kv_dtype), o.c.heads, o.c.kv_heads,
           o.c.head_dim, shape,
           o.workloads[0].from_npy ? "inputs from .npy files" : "synthetic workloads",
           o.params.block_size, o.params.segment_size, (double)o.params.threshold,
           o.params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? "shared GQA permutation"
                                                             : "per-head permutation",
           o.c.portable ? ", portable kernels" : "");
    pbs_print_header();

    int exit_status = 0;
    static length_result results[PBS_MAX_WORKLOADS * BENCH_MAX_LENGTHS];
    const int planned = o.workload_count * o.c.length_count;
    int count = 0;
    for (int wi = 0; wi < o.workload_count; wi++)
        for (int i = 0; i < o.c.length_count; i++, count++) {
            if (run_length(&o, &d, &timer, &ri.device, wi, o.c.lengths[i], &results[count]) != 0)
                exit_status = 1;
            pbs_print_row(&o, &results[count]);
            /* The files hold every finished row, so an interrupted run keeps them. */
            if (count + 1 < planned)
                write_files(&o, &ri, results, count + 1, planned);
        }
    pbs_print_legend(&o);
    pbs_print_targets(&o, results, count);
    if (write_files(&o, &ri, results, count, planned) != 0)
        exit_status = 1;

    bench_timer_release(&timer);
    support_device_close(&d);
    pbs_npy_free(&o.npy);
    return exit_status;
}
