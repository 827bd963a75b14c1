/* pbsa-tune: finds the fastest configuration of the flash kernels, and of the tensor-core kernels
 * where the device runs them, for one device and writes a tuning file that pbsattn reads at
 * context creation.
 *
 * For every key (kernel, dtype, head dim, PBS block, causal) it starts from the library's
 * heuristic default and tries the neighbours the search space declares (src/tuning/space.c; for
 * the tensor-core kernels, the whole space with --full and, with --quick, the points one
 * parameter step from the default): each candidate is first checked against the float64 CPU
 * reference on a small case, then timed through the public call (pbsa_dense_attention() or
 * pbsa_sparse_attention()) with the candidate forced on the context, by profiling events after
 * warm-up, median of the repeats, inputs rotating over several sets. The best few are timed
 * again, interleaved, and near-ties go to the default, then to the earlier candidate, so that
 * reruns pick the same winner. The flash kernels are timed on a context forced portable, the
 * tensor-core kernels on a context of the defaults. */
#include "pbsattn.h"
#include "timing.h"
#include "tune_case.h"
#include "tuning/tuning.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char PROGRAM[] = "pbsa-tune";

enum {
    MAX_LIST = 8,         /* values per list option */
    MAX_CANDIDATES = 256, /* per key */
    MAX_KEYS = 64,
    FINALISTS = 3, /* re-timed besides the default */
    RETIME_ROUNDS = 3,
    FULL_ROUNDS = 6, /* hill-climbing rounds of --full */
};
static const double TIE_MARGIN = 0.01;    /* within 1%: a tie */
static const double GIVE_UP_FACTOR = 3.0; /* a first run 3x slower than the best is not timed */

/* ---------------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------------- */

typedef struct options {
    const char *device;
    const char *preset;
    int heads, kv_heads, head_dim;
    pbsa_dtype dtypes[MAX_LIST];
    int dtype_count;
    pbsa_kernel_kind kinds[MAX_LIST];
    int kind_count;
    bool kinds_given; /* --kernels: report the kinds that cannot be tuned here */
    int blocks[MAX_LIST], block_count;
    int causals[2], causal_count;
    int lengths[MAX_LIST], length_count;
    bool full;
    double budget;
    int candidates, repeats, warmup;
    const char *output;
    bool fresh, resume;
    unsigned long long seed;
} options;

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-tune [options]\n"
            "Tunes the configuration of pbsattn's flash kernels, and of its NVIDIA tensor-core\n"
            "kernels where the device runs them, for one OpenCL device and writes a tuning file,\n"
            "which pbsattn then uses on that device.\n"
            "\n"
            "  --device SELECTOR  'P:D', a device index or a name substring (see pbsa-info);\n"
            "                     default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --preset NAME      llama3-8b (heads 32, kv-heads 8, head-dim 128; the default) or\n"
            "                     qwen2.5-7b (heads 28, kv-heads 4, head-dim 128)\n"
            "  --heads N, --kv-heads N, --head-dim N\n"
            "                     an explicit shape (override the preset's values)\n"
            "  --dtype LIST       f32, f16, bf16, comma-separated (default bf16)\n"
            "  --kernels LIST     dense, sparse, dense_mma, sparse_mma, scores_method (default\n"
            "                     dense,sparse,scores_method, and dense_mma,sparse_mma where the\n"
            "                     device runs the tensor-core kernels: f16/bf16, head dim 64 to\n"
            "                     192, blocks 64 and 128); scores_method times the fused\n"
            "                     permutation scores against CLBlast's GEMM and keeps the faster\n"
            "  --blocks LIST      PBS logical blocks for the sparse kernel (default 128)\n"
            "  --causal LIST      0, 1 (default 1)\n"
            "  --lengths LIST     sequence lengths timed (default --quick: 8192 on a GPU, 1024\n"
            "                     otherwise; --full: 4096,16384 on a GPU, 512,2048 otherwise)\n"
            "  --quick            the default configuration and its nearest neighbours, one\n"
            "                     length (the default mode; under a minute on an H100)\n"
            "  --full             hill-climbing from the default over the whole search space\n"
            "  --budget SECONDS   stop searching after this long, keeping the best so far\n"
            "                     (default 50 for --quick, 1800 for --full)\n"
            "  --candidates N     at most N configurations per key, the default included\n"
            "                     (default 10 for --quick, %d for --full)\n"
            "  --repeats N        timed runs per candidate, median used (default 5; 10 --full)\n"
            "  --warmup N         untimed runs first (default 1; 2 --full)\n"
            "  --output PATH      the tuning file to write (default: the user's tuning file of\n"
            "                     the device, $XDG_CONFIG_HOME/pbsattn/tuning/DEVICE.txt or\n"
            "                     ~/.config/pbsattn/tuning/DEVICE.txt); a new regular file or an\n"
            "                     existing one, replaced atomically; anything else is refused,\n"
            "                     symbolic links included (give the path they point to)\n"
            "  --fresh            drop the entries already in the output file (default: keep\n"
            "                     those of other keys)\n"
            "  --resume           skip the keys the output file already has\n"
            "  --seed N           seed of the random inputs (default 1)\n"
            "  --help             this text\n"
            "\n"
            "dense and sparse are the portable kernels, timed with the tensor cores off (on\n"
            "devices that have them, their tiles serve PBSA_FORCE_PORTABLE=1, f32, head dim 256\n"
            "and small blocks); dense_mma and sparse_mma are the tensor-core kernels (warps,\n"
            "groups of query rows per warp, keys per tile and pipeline stages): --quick tries\n"
            "the default and the configurations one step from it in one of them, --full all 24\n"
            "points of their space.\n"
            "Progress and the reasons for skipped candidates go to stderr, the result table to\n"
            "stdout. The file is written (atomically) after each key; Ctrl-C stops the search and\n"
            "writes what was tuned so far. Set PBSA_TUNING=off to run without any tuning data.\n"
            "Exit status: 0 when every key was tuned, 1 when some key failed, 2 on bad arguments,\n"
            "no device or an unwritable file, 130 after Ctrl-C.\n",
            MAX_CANDIDATES);
}

static bool parse_int(const char *text, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < min || value > max)
        return false;
    *out = (int)value;
    return true;
}

/* "a,b,c" into ints in [min, max]. */
static bool parse_int_list(const char *text, long min, long max, int *out, int *count)
{
    char buffer[256];
    if (snprintf(buffer, sizeof buffer, "%s", text) >= (int)sizeof buffer)
        return false;
    *count = 0;
    for (char *save = NULL, *item = strtok_r(buffer, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        if (*count == MAX_LIST || !parse_int(item, min, max, &out[*count]))
            return false;
        ++*count;
    }
    return *count > 0;
}

static bool parse_words(const char *text, const char *const *names, int name_count, int *out,
                        int *count)
{
    char buffer[256];
    if (snprintf(buffer, sizeof buffer, "%s", text) >= (int)sizeof buffer)
        return false;
    *count = 0;
    for (char *save = NULL, *item = strtok_r(buffer, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int i = 0; i < name_count; i++)
            if (strcmp(item, names[i]) == 0)
                found = i;
        if (found < 0 || *count == MAX_LIST)
            return false;
        for (int i = 0; i < *count; i++)
            if (out[i] == found)
                found = -2; /* given twice: once is enough */
        if (found >= 0)
            out[(*count)++] = found;
    }
    return *count > 0;
}

/* Returns 0 when usable, 2 after a message, -1 after --help. */
static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->budget = -1.0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        bool ok = true, flag = true;
        if (strcmp(arg, "--quick") == 0)
            o->full = false;
        else if (strcmp(arg, "--full") == 0)
            o->full = true;
        else if (strcmp(arg, "--fresh") == 0)
            o->fresh = true;
        else if (strcmp(arg, "--resume") == 0)
            o->resume = true;
        else
            flag = false;
        if (flag)
            continue;
        if (!value) {
            fprintf(stderr, "%s: unknown argument or missing value: '%s' (see --help)\n", PROGRAM,
                    arg);
            return 2;
        }
        i++;
        int n = 0;
        if (strcmp(arg, "--device") == 0) {
            o->device = value;
        } else if (strcmp(arg, "--preset") == 0) {
            o->preset = value;
            ok = strcmp(value, "llama3-8b") == 0 || strcmp(value, "qwen2.5-7b") == 0;
        } else if (strcmp(arg, "--heads") == 0) {
            ok = parse_int(value, 1, 4096, &o->heads);
        } else if (strcmp(arg, "--kv-heads") == 0) {
            ok = parse_int(value, 1, 4096, &o->kv_heads);
        } else if (strcmp(arg, "--head-dim") == 0) {
            ok = parse_int(value, 1, 4096, &o->head_dim) && pbsa_head_dim_supported(o->head_dim);
        } else if (strcmp(arg, "--dtype") == 0) {
            static const char *const names[] = {"f32", "f16", "bf16"};
            static const pbsa_dtype dtypes[] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
            int picked[MAX_LIST];
            ok = parse_words(value, names, 3, picked, &o->dtype_count);
            for (int d = 0; ok && d < o->dtype_count; d++)
                o->dtypes[d] = dtypes[picked[d]];
        } else if (strcmp(arg, "--kernels") == 0) {
            static const char *const names[] = {"dense",         "sparse",      "dense_mma",
                                                "sparse_mma",    "dense_wgmma", "sparse_wgmma",
                                                "scores_method"};
            static const pbsa_kernel_kind kinds[] = {
                PBSA_KERNEL_DENSE,       PBSA_KERNEL_SPARSE,       PBSA_KERNEL_DENSE_MMA,
                PBSA_KERNEL_SPARSE_MMA,  PBSA_KERNEL_DENSE_WGMMA, PBSA_KERNEL_SPARSE_WGMMA,
                PBSA_KERNEL_SCORES_METHOD};
            int picked[MAX_LIST];
            ok = parse_words(value, names, 7, picked, &o->kind_count);
            for (int k = 0; ok && k < o->kind_count; k++)
                o->kinds[k] = kinds[picked[k]];
            o->kinds_given = ok;
        } else if (strcmp(arg, "--blocks") == 0) {
            ok = parse_int_list(value, 16, 128, o->blocks, &o->block_count);
            for (int b = 0; ok && b < o->block_count; b++)
                ok = (o->blocks[b] & (o->blocks[b] - 1)) == 0;
        } else if (strcmp(arg, "--causal") == 0) {
            int list[MAX_LIST];
            ok = parse_int_list(value, 0, 1, list, &n) && n <= 2 && (n == 1 || list[0] != list[1]);
            for (int c = 0; ok && c < n; c++)
                o->causals[c] = list[c];
            o->causal_count = ok ? n : 0;
        } else if (strcmp(arg, "--lengths") == 0) {
            ok = parse_int_list(value, 16, 1 << 20, o->lengths, &o->length_count);
        } else if (strcmp(arg, "--budget") == 0) {
            char *end;
            o->budget = strtod(value, &end);
            ok = end != value && !*end && o->budget > 0.0 && o->budget < 1e7;
        } else if (strcmp(arg, "--candidates") == 0) {
            ok = parse_int(value, 1, MAX_CANDIDATES, &o->candidates);
        } else if (strcmp(arg, "--repeats") == 0) {
            ok = parse_int(value, 1, 1000, &o->repeats);
        } else if (strcmp(arg, "--warmup") == 0) {
            ok = parse_int(value, 1, 100, &o->warmup);
        } else if (strcmp(arg, "--output") == 0) {
            o->output = value;
            ok = value[0] != '\0';
        } else if (strcmp(arg, "--seed") == 0) {
            char *end;
            errno = 0;
            o->seed = strtoull(value, &end, 10);
            ok = !errno && end != value && !*end;
        } else {
            fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", PROGRAM, arg);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "%s: bad value '%s' for %s (see --help)\n", PROGRAM, value, arg);
            return 2;
        }
    }
    bool qwen = o->preset && strcmp(o->preset, "qwen2.5-7b") == 0;
    o->heads = o->heads ? o->heads : qwen ? 28 : 32;
    o->kv_heads = o->kv_heads ? o->kv_heads : qwen ? 4 : 8;
    o->head_dim = o->head_dim ? o->head_dim : 128;
    if (o->kv_heads > o->heads || o->heads % o->kv_heads) {
        fprintf(stderr, "%s: --kv-heads %d must divide --heads %d\n", PROGRAM, o->kv_heads,
                o->heads);
        return 2;
    }
    if (!o->dtype_count)
        o->dtypes[o->dtype_count++] = PBSA_DTYPE_BF16;
    if (!o->kind_count) { /* the tensor-core kinds only where they run (main()) */
        o->kinds[o->kind_count++] = PBSA_KERNEL_DENSE;
        o->kinds[o->kind_count++] = PBSA_KERNEL_SPARSE;
        o->kinds[o->kind_count++] = PBSA_KERNEL_DENSE_MMA;
        o->kinds[o->kind_count++] = PBSA_KERNEL_SPARSE_MMA;
        o->kinds[o->kind_count++] = PBSA_KERNEL_DENSE_WGMMA;
        o->kinds[o->kind_count++] = PBSA_KERNEL_SPARSE_WGMMA;
        o->kinds[o->kind_count++] = PBSA_KERNEL_SCORES_METHOD;
    }
    if (!o->block_count)
        o->blocks[o->block_count++] = 128;
    if (!o->causal_count)
        o->causals[o->causal_count++] = 1;
    o->budget = o->budget > 0.0 ? o->budget : o->full ? 1800.0 : 50.0;
    o->candidates = o->candidates ? o->candidates : o->full ? MAX_CANDIDATES : 10;
    o->repeats = o->repeats ? o->repeats : o->full ? 10 : 5;
    o->warmup = o->warmup ? o->warmup : o->full ? 2 : 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Progress on stderr
 * ------------------------------------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_sigint(int signal_number)
{
    (void)signal_number;
    interrupted = 1;
}

typedef struct progress {
    bool tty;
    bool active; /* the search has started */
    bool bar_shown;
    double start, deadline;
    int done, total;
    char label[200];
} progress;

static progress bar;

static void clear_bar(void)
{
    if (bar.tty && bar.bar_shown)
        fputs("\r\033[K", stderr);
    bar.bar_shown = false;
}

/* "12/20 ETA 0:41": candidates done of those planned, and the time left at that pace (at most
 * what the budget leaves). */
static void progress_text(char *out, size_t capacity)
{
    int total = bar.total > bar.done ? bar.total : bar.done;
    double now = timing_now_seconds(), left = bar.deadline - now;
    double eta = bar.done > 0 ? (now - bar.start) / bar.done * (total - bar.done) : left;
    eta = eta < left ? eta : left;
    eta = eta > 0.0 ? eta : 0.0;
    snprintf(out, capacity, "%d/%d ETA %d:%02d", bar.done, total, (int)eta / 60, (int)eta % 60);
}

static void draw_bar(void)
{
    if (!bar.tty || !bar.active)
        return;
    enum { WIDTH = 24 };
    int total = bar.total > bar.done ? bar.total : bar.done;
    int filled = total > 0 ? (int)((double)WIDTH * bar.done / total) : 0;
    char cells[WIDTH + 1], text[64];
    for (int i = 0; i < WIDTH; i++)
        cells[i] = i < filled ? '#' : '.';
    cells[WIDTH] = '\0';
    progress_text(text, sizeof text);
    fprintf(stderr, "\r\033[K[%s] %s  %s", cells, text, bar.label);
    bar.bar_shown = true;
    fflush(stderr);
}

/* A message line on stderr, above the bar. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    clear_bar();
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", PROGRAM);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    draw_bar();
}

static void log_to_stderr(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level == PBSA_LOG_WARNING)
        note("warning: %s", message);
}

/* ---------------------------------------------------------------------------------------------
 * Tuning one key
 * ------------------------------------------------------------------------------------------- */

typedef struct candidate {
    pbsa_kernel_config config; /* the member of the key's kind */
    double ms[MAX_LIST]; /* median per length */
    double score;        /* geometric mean over the lengths; INFINITY when not timed */
    char skipped[240];   /* why it was not timed, or "" */
} candidate;

typedef struct key_result {
    pbsa_tuning_key key;
    int tried, skipped;
    candidate best, fallback; /* fallback: the default configuration */
    bool done;                /* best and fallback are meaningful */
    bool interrupted;
    char error[240];
} key_result;

typedef struct session {
    const options *o;
    pbsa_context *ctx;        /* forced portable: the flash kernels */
    pbsa_context *tensor_ctx; /* the defaults: the tensor-core kernels where the device runs them */
    cl_context cl_ctx;
    cl_device_id device;
    cl_command_queue queue;
    pbsa_device_info info;
    tune_case *cases[MAX_LIST]; /* one per length */
} session;

/* "dense bf16 D128 causal", "sparse_mma bf16 D128 b128 causal". */
static void key_label(const pbsa_tuning_key *key, char *out, size_t capacity)
{
    char block[16] = "";
    if (pbsa_tuning_key_max_tile(key))
        snprintf(block, sizeof block, " b%d", key->block);
    snprintf(out, capacity, "%s %s D%d%s %s", pbsa_kernel_kind_name(key->kind),
             pbsa_dtype_name(key->dtype), key->head_dim, block,
             key->causal ? "causal" : "non-causal");
}

/* The context whose calls run the kernel of key: the defaults' for the tensor-core kernels and
 * the methods (which compare whole stages as users run them). */
static pbsa_context *context_of(const session *s, const pbsa_tuning_key *key)
{
    return pbsa_kernel_kind_is_mma(key->kind) || pbsa_kernel_kind_is_method(key->kind)
               ? s->tensor_ctx
               : s->ctx;
}

/* Whether kind's configurations are flash tiles (whose unrolling 0 means full). */
static bool flash_kind(pbsa_kernel_kind kind)
{
    return !pbsa_kernel_kind_is_mma(kind) && !pbsa_kernel_kind_is_method(kind);
}

/* config as its environment variable spells it ("64,64,8,16,16,16,16,16", "4,1,64,2"). */
static void short_config(pbsa_kernel_kind kind, const pbsa_kernel_config *config, char *out,
                         size_t capacity)
{
    const pbsa_tuning_space *space = pbsa_tuning_space_of(kind);
    pbsa_kernel_config c = *config;
    if (flash_kind(kind))
        c.flash = pbsa_tuning_explicit(&config->flash);
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < space->param_count && used < capacity; i++)
        used += (size_t)snprintf(out + used, capacity - used, "%s%d", i ? "," : "",
                                 pbsa_tuning_param_get(&c, &space->params[i]));
}

static double geometric_mean(const double *values, int count)
{
    double sum = 0.0;
    for (int i = 0; i < count; i++)
        sum += log(values[i]);
    return exp(sum / count);
}

/* Checks and times one candidate (forced on the context); give_up: its first run may take at
 * most this factor of best's time at each length (best NULL: no limit). */
static void evaluate(session *s, const pbsa_tuning_key *key, candidate *c, const candidate *best,
                     double per_candidate_seconds)
{
    const options *o = s->o;
    c->score = INFINITY;
    c->skipped[0] = '\0';
    if (!pbsa_tuning_force(context_of(s, key), key->kind, &c->config)) {
        snprintf(c->skipped, sizeof c->skipped, "out of host memory");
        return;
    }
    if (tune_case_check(s->cases[0], c->skipped, sizeof c->skipped) != 0)
        return;
    for (int l = 0; l < o->length_count; l++) {
        double give_up = best && isfinite(best->score) ? GIVE_UP_FACTOR * best->ms[l] : 0.0;
        int r = tune_case_time(s->cases[l], o->warmup, o->repeats,
                               per_candidate_seconds / o->length_count, give_up, &interrupted,
                               &c->ms[l], c->skipped, sizeof c->skipped);
        if (r == 2)
            snprintf(c->skipped, sizeof c->skipped, "first run %.3f ms, over %.0fx the best",
                     c->ms[l], GIVE_UP_FACTOR);
        if (r == 3)
            snprintf(c->skipped, sizeof c->skipped, "interrupted");
        if (r != 0)
            return;
    }
    c->score = geometric_mean(c->ms, o->length_count);
}

static bool tried_before(pbsa_kernel_kind kind, const candidate *list, int count,
                         const pbsa_kernel_config *config)
{
    for (int i = 0; i < count; i++)
        if (pbsa_tuning_config_equal(kind, &list[i].config, config))
            return true;
    return false;
}

/* Times the finalists again, interleaved (also when the budget is spent: it is short), and
 * returns the index of the winner: the fastest, but the default (index 0) when it is within
 * TIE_MARGIN of it, else the earliest candidate within TIE_MARGIN. Scores are replaced by the
 * median of the rounds. */
static int pick_winner(session *s, const pbsa_tuning_key *key, candidate *list, int count)
{
    const options *o = s->o;
    int finalists[FINALISTS + 1], n = 0;
    if (isfinite(list[0].score))
        finalists[n++] = 0;
    for (int f = 0; f < FINALISTS; f++) { /* the fastest ones not picked yet */
        int pick = -1;
        for (int i = 1; i < count; i++) {
            bool taken = false;
            for (int j = 0; j < n; j++)
                taken = taken || finalists[j] == i;
            if (!taken && isfinite(list[i].score) && (pick < 0 || list[i].score < list[pick].score))
                pick = i;
        }
        if (pick >= 0)
            finalists[n++] = pick;
    }
    if (n > 1 && !interrupted) {
        double rounds[FINALISTS + 1][RETIME_ROUNDS][MAX_LIST];
        bool complete = true;
        for (int r = 0; r < RETIME_ROUNDS && complete && !interrupted; r++)
            for (int f = 0; f < n && complete; f++) {
                candidate *c = &list[finalists[f]];
                pbsa_tuning_force(context_of(s, key), key->kind, &c->config);
                for (int l = 0; l < o->length_count && complete; l++) {
                    char reason[240];
                    int repeats = o->repeats / 2 > 3 ? o->repeats / 2 : 3;
                    complete = tune_case_time(s->cases[l], 1, repeats, 1.0, 0.0, &interrupted,
                                              &rounds[f][r][l], reason, sizeof reason) == 0;
                }
            }
        if (complete && !interrupted)
            for (int f = 0; f < n; f++) {
                candidate *c = &list[finalists[f]];
                for (int l = 0; l < o->length_count; l++) {
                    double v[RETIME_ROUNDS];
                    for (int r = 0; r < RETIME_ROUNDS; r++)
                        v[r] = rounds[f][r][l];
                    for (int a = 0; a < RETIME_ROUNDS; a++) /* median of three */
                        for (int b = a + 1; b < RETIME_ROUNDS; b++)
                            if (v[b] < v[a]) {
                                double t = v[a];
                                v[a] = v[b];
                                v[b] = t;
                            }
                    c->ms[l] = v[RETIME_ROUNDS / 2];
                }
                c->score = geometric_mean(c->ms, o->length_count);
            }
    }
    int best = -1;
    for (int f = 0; f < n; f++)
        if (best < 0 || list[finalists[f]].score < list[best].score)
            best = finalists[f];
    if (best < 0)
        return -1;
    double limit = list[best].score * (1.0 + TIE_MARGIN);
    if (isfinite(list[0].score) && list[0].score <= limit)
        return 0;
    int earliest = best;
    for (int f = 0; f < n; f++)
        if (list[finalists[f]].score <= limit && finalists[f] < earliest)
            earliest = finalists[f];
    return earliest;
}

/* The index of value in param's steps; -1 when it is not one of them. */
static int step_index(const pbsa_tuning_param *param, int value)
{
    for (int i = 0; i < param->step_count; i++)
        if (param->steps[i] == value)
            return i;
    return -1;
}

/* Whether b is one step from a in exactly one parameter of kind's space, the others equal. */
static bool one_step_apart(pbsa_kernel_kind kind, const pbsa_kernel_config *a,
                           const pbsa_kernel_config *b)
{
    const pbsa_tuning_space *space = pbsa_tuning_space_of(kind);
    int moved = 0;
    for (int i = 0; i < space->param_count; i++) {
        const pbsa_tuning_param *p = &space->params[i];
        int x = pbsa_tuning_param_get(a, p), y = pbsa_tuning_param_get(b, p);
        if (x == y)
            continue;
        int from = step_index(p, x), to = step_index(p, y);
        if (from < 0 || to < 0 || (to - from != 1 && from - to != 1))
            return false;
        moved++;
    }
    return moved == 1;
}

/* The configurations to try next from from (pbsa_tuning_neighbours()), at most capacity. The
 * tensor-core kinds' neighbourhood is their whole space (24 points): --full tries it all, --quick
 * those one step from from in one parameter (at most 5 of them). */
static int next_candidates(const session *s, const pbsa_tuning_key *key,
                           const pbsa_kernel_config *from, pbsa_kernel_config *out, int capacity)
{
    int n = (int)pbsa_tuning_neighbours(from, key, &s->info, out, (size_t)capacity);
    if (s->o->full || !pbsa_kernel_kind_is_mma(key->kind))
        return n;
    int kept = 0;
    for (int i = 0; i < n; i++)
        if (one_step_apart(key->kind, from, &out[i]))
            out[kept++] = out[i];
    return kept;
}

/* Candidates the first round of key will try: the default and its neighbours, at most
 * --candidates. */
static int planned_candidates(const session *s, const pbsa_tuning_key *key)
{
    pbsa_kernel_config start = pbsa_tuning_heuristic(key, &s->info);
    pbsa_kernel_config neighbours[64];
    int n = 1 + next_candidates(s, key, &start, neighbours, 64);
    return n < s->o->candidates ? n : s->o->candidates;
}

static void tune_key(session *s, const pbsa_tuning_key *key, double key_deadline, key_result *out)
{
    const options *o = s->o;
    char label[96];
    key_label(key, label, sizeof label);
    memset(out, 0, sizeof *out);
    out->key = *key;
    tune_shape shape = {o->heads, o->kv_heads, 0};
    for (int l = 0; l < o->length_count; l++) {
        shape.seq = o->lengths[l];
        if (tune_case_create(context_of(s, key), s->cl_ctx, s->queue, key, &shape, o->seed,
                             &s->cases[l], out->error, sizeof out->error) != 0) {
            note("%s: %s", label, out->error);
            return;
        }
    }
    /* Candidate 0 is the library's heuristic default, the baseline of the speedup. */
    static candidate list[MAX_CANDIDATES];
    memset(&list[0], 0, sizeof list[0]);
    list[0].config = pbsa_tuning_heuristic(key, &s->info);
    if (flash_kind(key->kind))
        list[0].config.flash = pbsa_tuning_explicit(&list[0].config.flash);
    int count = 1;
    if (!pbsa_tuning_config_usable(&list[0].config, key, &s->info)) {
        snprintf(out->error, sizeof out->error, "no configuration fits this device");
        note("%s: %s", label, out->error);
        return;
    }
    pbsa_kernel_config neighbours[64];
    double per_candidate = o->full ? 3.0 : 1.0;
    int best = -1, next = 0;
    for (int round = 0; round < (o->full ? FULL_ROUNDS : 1); round++) {
        const pbsa_kernel_config *from = best >= 0 ? &list[best].config : &list[0].config;
        int n = next_candidates(s, key, from, neighbours, 64);
        int added = 0;
        for (int i = 0; i < n && count < o->candidates && count < MAX_CANDIDATES; i++)
            if (!tried_before(key->kind, list, count, &neighbours[i])) {
                list[count++].config = neighbours[i];
                added++;
            }
        if (round > 0) {
            if (added == 0)
                break;
            bar.total += added;
        }
        int improved = 0;
        for (; next < count; next++) {
            if (interrupted || (next > 0 && timing_now_seconds() > key_deadline)) {
                count = next;
                break;
            }
            candidate *c = &list[next];
            char text[64];
            short_config(key->kind, &c->config, text, sizeof text);
            snprintf(bar.label, sizeof bar.label, "%s: %s%s", label, text,
                     next == 0 ? " (default)" : "");
            draw_bar();
            evaluate(s, key, c, best >= 0 ? &list[best] : NULL, per_candidate);
            bar.done++;
            if (interrupted && c->skipped[0]) { /* cut short: neither tried nor skipped */
                count = next;
                break;
            }
            out->tried++;
            char where[64] = ""; /* without the bar, each line tells the progress */
            if (!bar.tty) {
                where[0] = '[';
                progress_text(where + 1, sizeof where - 3);
                strcat(where, "] ");
            }
            if (c->skipped[0]) {
                out->skipped++;
                note("%s%s: %s%s skipped: %s", where, label, text, next == 0 ? " (default)" : "",
                     c->skipped);
                continue;
            }
            note("%s%s: %s%s: %.3f ms", where, label, text, next == 0 ? " (default)" : "",
                 c->score);
            if (best < 0 || c->score < list[best].score) {
                best = next;
                improved++;
            }
        }
        if (interrupted || timing_now_seconds() > key_deadline || (round > 0 && !improved) ||
            count >= o->candidates)
            break;
    }
    out->interrupted = interrupted;
    if (best < 0) {
        snprintf(out->error, sizeof out->error, "no candidate passed the check%s",
                 interrupted ? " before the interruption" : "");
        return;
    }
    snprintf(bar.label, sizeof bar.label, "%s: timing the fastest again, interleaved", label);
    draw_bar();
    int winner = pick_winner(s, key, list, count);
    pbsa_tuning_force(context_of(s, key), key->kind, NULL);
    if (winner < 0)
        return;
    out->best = list[winner];
    out->fallback = list[0];
    out->done = true;
}

static void release_cases(session *s)
{
    for (int l = 0; l < MAX_LIST; l++) {
        tune_case_release(s->cases[l]);
        s->cases[l] = NULL;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

/* The entry of a tuned key: the winner, with the default's time as metadata. */
static pbsa_tuning_entry make_entry(const options *o, const key_result *r)
{
    pbsa_tuning_entry e;
    memset(&e, 0, sizeof e);
    e.key = r->key;
    e.config = r->best.config;
    int last = o->length_count - 1;
    e.ms = r->best.ms[last];
    e.default_ms = isfinite(r->fallback.score) ? r->fallback.ms[last] : -1.0;
    e.seq = o->lengths[last];
    e.heads = o->heads;
    e.kv_heads = o->kv_heads;
    return e;
}

static int write_tuning_file(const char *path, const pbsa_tuning_file *file)
{
    char *text = pbsa_tuning_format(file);
    if (!text) {
        note("cannot write %s: out of memory", path);
        return 1;
    }
    int err = pbsa_tuning_write_file(path, text);
    free(text);
    if (err) {
        note("cannot write %s: %s", path, strerror(err));
        return 1;
    }
    return 0;
}

static void print_table(const options *o, const key_result *results, int count)
{
    printf("\n%-10s %-5s %4s %5s %6s %6s %11s %10s %8s\n", "kernel", "dtype", "D", "block",
           "causal", "tried", "default_ms", "tuned_ms", "speedup");
    for (int i = 0; i < count; i++) {
        const key_result *r = &results[i];
        const pbsa_kernel_kind kind = r->key.kind;
        char block[16] = "-";
        if (pbsa_tuning_key_max_tile(&r->key))
            snprintf(block, sizeof block, "%d", r->key.block);
        printf("%-10s %-5s %4d %5s %6d %6d ", pbsa_kernel_kind_name(kind),
               pbsa_dtype_name(r->key.dtype), r->key.head_dim, block, r->key.causal, r->tried);
        if (!r->done) {
            printf("failed: %s\n", r->error[0] ? r->error : "not tuned");
            continue;
        }
        int last = o->length_count - 1;
        double d = r->fallback.ms[last], t = r->best.ms[last];
        printf("%11.3f %10.3f %7.2fx%s\n", d, t, isfinite(r->fallback.score) ? d / t : NAN,
               r->interrupted ? "  (interrupted)" : "");
        char text[256];
        pbsa_tuning_format_config(kind, &r->fallback.config, text, sizeof text);
        printf("    default: %s\n", text);
        pbsa_tuning_format_config(kind, &r->best.config, text, sizeof text);
        printf("    tuned:   %s%s\n", text,
               pbsa_tuning_config_equal(kind, &r->best.config, &r->fallback.config)
                   ? " (the default)"
                   : "");
    }
    printf("times: median kernel ms at seq %d (heads %d, kv_heads %d); speedup = default / "
           "tuned\n",
           o->lengths[o->length_count - 1], o->heads, o->kv_heads);
}

/* What a new context on the device does with the file: the loader's own parse of it, and the
 * configuration and source that pbsa_query_kernel_config() reports for each tuned key. */
static void report_new_context(const session *s, const char *path, const key_result *results,
                               int count, bool is_user_file)
{
    char *text = NULL;
    size_t length = 0;
    int err = pbsa_tuning_read_file(path, &text, &length);
    pbsa_tuning_file file;
    char error[512] = "";
    pbsa_tuning_result parsed =
        err ? PBSA_TUNING_CORRUPT : pbsa_tuning_parse(text, length, &file, error, sizeof error);
    free(text);
    if (err || parsed != PBSA_TUNING_OK) {
        printf("the file just written is not accepted: %s\n", err ? strerror(err) : error);
        if (!err)
            pbsa_tuning_file_free(&file);
        return;
    }
    size_t usable = 0;
    for (size_t i = 0; i < file.count; i++)
        usable +=
            pbsa_tuning_config_usable(&file.entries[i].config, &file.entries[i].key, &s->info);
    bool same = pbsa_tuning_same_device(&file, pbsa_tuning_platform(s->ctx), s->info.name);
    printf("%s: %zu entr%s, %zu usable on this device%s\n", path, file.count,
           file.count == 1 ? "y" : "ies", usable, same ? "" : " (NOT keyed to this device!)");
    pbsa_tuning_file_free(&file);

    pbsa_context *fresh = NULL;
    if (pbsa_context_create(s->cl_ctx, s->device, NULL, &fresh) != PBSA_SUCCESS)
        return;
    printf("a new context on this device uses:\n");
    for (int i = 0; i < count; i++) {
        const pbsa_tuning_key *k = &results[i].key;
        char label[96], description[9000]; /* two origins on the tensor-core path */
        pbsa_config_source source;
        key_label(k, label, sizeof label);
        if (pbsa_query_kernel_config(fresh, k->kind, k->dtype, k->head_dim, k->block, k->causal,
                                     description, sizeof description, &source) == PBSA_SUCCESS)
            printf("  %s: %s\n", label, description);
    }
    pbsa_context_release(fresh);
    if (!is_user_file)
        printf("to use %s: PBSA_TUNING_FILE=%s, or copy it to the user's tuning file of the device "
               "or into tuning/ of the source tree (built-in data)\n",
               path, path);
}

/* ---------------------------------------------------------------------------------------------
 * Main
 * ------------------------------------------------------------------------------------------- */

static void command_line(int argc, char **argv, char *out, size_t capacity)
{
    size_t used = (size_t)snprintf(out, capacity, "%s %s", PROGRAM, pbsa_version_string());
    for (int i = 1; i < argc && used < capacity; i++)
        used += (size_t)snprintf(out + used, capacity - used, " %s", argv[i]);
}

static int open_device(const options *o, session *s)
{
    int status = pbsa_helper_create_cl_context(o->device, &s->cl_ctx, &s->device);
    if (status != PBSA_SUCCESS) {
        fprintf(stderr, "%s: no device: %s\n", PROGRAM, pbsa_context_last_error(NULL));
        return 2;
    }
    cl_int err;
    s->queue = clCreateCommandQueue(s->cl_ctx, s->device, CL_QUEUE_PROFILING_ENABLE, &err);
    /* The portable kernels are timed on a context forced portable, also where the calls would
     * otherwise take the tensor-core kernel (main() says where); the tensor-core kernels on a
     * context of the defaults. */
    pbsa_context_options portable = {.struct_size = sizeof portable, .force_portable = 1};
    if (err == CL_SUCCESS)
        status = pbsa_context_create(s->cl_ctx, s->device, &portable, &s->ctx);
    if (err == CL_SUCCESS && status == PBSA_SUCCESS)
        status = pbsa_context_create(s->cl_ctx, s->device, NULL, &s->tensor_ctx);
    if (err != CL_SUCCESS || status != PBSA_SUCCESS) {
        fprintf(stderr, "%s: device set-up failed (%d): %s\n", PROGRAM,
                err != CL_SUCCESS ? err : status, pbsa_context_last_error(NULL));
        return 2;
    }
    pbsa_context_device_info(s->ctx, &s->info);
    return 0;
}

static void close_device(session *s)
{
    release_cases(s);
    pbsa_context_release(s->ctx);
    pbsa_context_release(s->tensor_ctx);
    if (s->queue)
        clReleaseCommandQueue(s->queue);
    if (s->cl_ctx)
        clReleaseContext(s->cl_ctx);
}

/* Why the output path cannot be written, or NULL: the new file is renamed over the old one, which
 * would replace a device, FIFO or socket by a regular file, and a symbolic link by the file
 * instead of writing where it points. */
static const char *output_refusal(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? NULL : strerror(errno);
    if (S_ISLNK(st.st_mode))
        return "is a symbolic link, which would be replaced by a regular file: give the path it "
               "points to";
    if (S_ISDIR(st.st_mode))
        return "is a directory";
    if (!S_ISREG(st.st_mode))
        return "is not a regular file (a device, FIFO or socket)";
    return NULL;
}

int main(int argc, char **argv)
{
    static options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed != 0)
        return parsed < 0 ? 0 : parsed;
    bar.tty = isatty(STDERR_FILENO);
    pbsa_set_log_callback(log_to_stderr, NULL);
    static session s;
    s.o = &o;
    if (open_device(&o, &s) != 0) {
        close_device(&s);
        return 2;
    }
    if (!o.length_count) {
        o.lengths[o.length_count++] =
            s.info.is_gpu ? (o.full ? 4096 : 8192) : (o.full ? 512 : 1024);
        if (o.full)
            o.lengths[o.length_count++] = s.info.is_gpu ? 16384 : 2048;
    }

    /* The output file, and what it holds already. */
    char path[4096];
    bool is_user_file = !o.output;
    if (o.output) {
        snprintf(path, sizeof path, "%s", o.output);
    } else if (!pbsa_tuning_user_path(s.info.name, path, sizeof path)) {
        fprintf(stderr, "%s: neither XDG_CONFIG_HOME nor HOME is set: give --output\n", PROGRAM);
        close_device(&s);
        return 2;
    }
    const char *refusal = output_refusal(path);
    if (refusal) {
        fprintf(stderr, "%s: %s %s; nothing written\n", PROGRAM, path, refusal);
        close_device(&s);
        return 2;
    }
    static pbsa_tuning_file file;
    {
        char *text = NULL;
        size_t length = 0;
        char error[512];
        int err = pbsa_tuning_read_file(path, &text, &length);
        if (!err && pbsa_tuning_parse(text, length, &file, error, sizeof error) == PBSA_TUNING_OK &&
            pbsa_tuning_same_device(&file, pbsa_tuning_platform(s.ctx), s.info.name)) {
            if (o.fresh)
                pbsa_tuning_file_free(&file);
            else if (file.count)
                note("%s: keeping its %zu entr%s of other keys", path, file.count,
                     file.count == 1 ? "y" : "ies");
        } else {
            pbsa_tuning_file_free(&file);
            if (!err)
                note("%s exists but is not a tuning file of this device (%s): it will be replaced",
                     path, error[0] ? error : "another device");
        }
        free(text);
    }
    snprintf(file.platform, sizeof file.platform, "%s", pbsa_tuning_platform(s.ctx));
    snprintf(file.device, sizeof file.device, "%s", s.info.name);
    snprintf(file.driver, sizeof file.driver, "%s", s.info.driver_version);
    command_line(argc, argv, file.generator, sizeof file.generator);
    time_t now = time(NULL);
    strftime(file.date, sizeof file.date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));

    /* The keys: the tensor-core kinds where the calls run on them (the query says so). */
    static pbsa_tuning_key keys[MAX_KEYS];
    int key_count = 0;
    for (int d = 0; d < o.dtype_count; d++)
        for (int k = 0; k < o.kind_count; k++) {
            const pbsa_kernel_kind kind = o.kinds[k];
            const bool method = pbsa_kernel_kind_is_method(kind);
            const bool blocked = method || pbsa_kernel_kind_is_sparse(kind);
            /* The methods' keys have no causality (the scores have no mask). */
            const int causal_count = method ? 1 : o.causal_count;
            for (int b = 0; b < (blocked ? o.block_count : 1); b++)
                for (int c = 0; c < causal_count && key_count < MAX_KEYS; c++) {
                    pbsa_tuning_key key = {kind, o.dtypes[d], o.head_dim,
                                           blocked ? o.blocks[b] : 0, method ? 0 : o.causals[c]};
                    char label[96];
                    key_label(&key, label, sizeof label);
                    if (pbsa_kernel_kind_is_mma(kind) &&
                        pbsa_query_kernel_config(s.tensor_ctx, kind, key.dtype, key.head_dim,
                                                 key.block, key.causal, NULL, 0,
                                                 NULL) != PBSA_SUCCESS) {
                        if (o.kinds_given)
                            note("%s: not tuned: %s", label,
                                 pbsa_context_last_error(s.tensor_ctx));
                        continue;
                    }
                    if (o.resume && pbsa_tuning_file_find(&file, &key)) {
                        note("%s: already in %s (--resume)", label, path);
                        continue;
                    }
                    keys[key_count++] = key;
                }
        }

    /* Where a context of the defaults runs the tensor-core kernel instead of the portable one. */
    for (int i = 0; i < key_count; i++) {
        char label[96];
        pbsa_config_source source;
        key_label(&keys[i], label, sizeof label);
        if (!pbsa_kernel_kind_is_mma(keys[i].kind) &&
            pbsa_query_kernel_config(s.tensor_ctx, keys[i].kind, keys[i].dtype, keys[i].head_dim,
                                     keys[i].block, keys[i].causal, NULL, 0,
                                     &source) == PBSA_SUCCESS &&
            source == PBSA_CONFIG_TENSOR_CORES)
            note("note: %s runs on a tensor-core kernel on this device (its _mma or _wgmma kind); "
                 "the portable tiles tuned here serve PBSA_FORCE_PORTABLE=1 and "
                 "pbsa_context_options.force_portable",
                 label);
    }

    char platform_line[600];
    snprintf(platform_line, sizeof platform_line, "%s (%s, driver %s)", s.info.name,
             pbsa_tuning_platform(s.ctx), s.info.driver_version);
    printf("%s: %s\n", PROGRAM, platform_line);
    printf("shape: heads %d, kv_heads %d, head_dim %d; lengths", o.heads, o.kv_heads, o.head_dim);
    for (int l = 0; l < o.length_count; l++)
        printf("%s%d", l ? "," : " ", o.lengths[l]);
    printf("; %s, budget %.0f s; output %s\n", o.full ? "full search" : "quick", o.budget, path);
    fflush(stdout);

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    action.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C ends the program at once */
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);

    bar.start = timing_now_seconds();
    bar.deadline = bar.start + o.budget;
    bar.active = true;
    int planned[MAX_KEYS];
    for (int i = 0; i < key_count; i++)
        bar.total += planned[i] = planned_candidates(&s, &keys[i]);
    static key_result results[MAX_KEYS];
    int done = 0, exit_status = 0;
    for (int i = 0; i < key_count && !interrupted; i++) {
        double left = bar.deadline - timing_now_seconds();
        double key_deadline = timing_now_seconds() + (left > 0.0 ? left : 0.0) / (key_count - i);
        int done_before = bar.done, total_before = bar.total;
        tune_key(&s, &keys[i], key_deadline, &results[i]);
        release_cases(&s);
        /* The key's share of the total: what it did, in place of what was planned. */
        bar.total = total_before - planned[i] + (bar.done - done_before);
        done = i + 1;
        if (!results[i].done) {
            exit_status = 1;
            continue;
        }
        pbsa_tuning_entry entry = make_entry(&o, &results[i]);
        if (!pbsa_tuning_file_put(&file, &entry) || write_tuning_file(path, &file) != 0) {
            exit_status = 2;
            break;
        }
    }
    clear_bar();
    if (interrupted)
        fprintf(stderr, "%s: interrupted: %d of %d keys tuned, the last one partly\n", PROGRAM,
                done, key_count);
    print_table(&o, results, done);
    if (exit_status != 2 && file.count > 0) {
        printf("\nwrote %s\n", path);
        report_new_context(&s, path, results, done, is_user_file);
    } else if (file.count == 0) {
        printf("\nnothing tuned: %s not written\n", path);
    }
    pbsa_tuning_file_free(&file);
    close_device(&s);
    if (interrupted)
        return 130;
    return exit_status;
}
