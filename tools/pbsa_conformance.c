/* pbsa-conformance: runs the library's conformance cases on a chosen OpenCL device against the
 * float64 CPU reference: the dense cases, every PBS stage and the whole pipeline on the PBS
 * case table, and the variable-length and paged cases of dense and PBS attention (the cases of
 * meson test). Prints a pass/fail table, optionally writes it as JSON.
 * Exit status 0 when every case run passes, 1 when one fails, 2 on bad arguments or no device. */
#include "conformance.h"
#include "device.h"
#include "json_writer.h"
#include "pbs_checks.h"
#include "varlen_cases.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-conformance [--device SELECTOR] [--seed N] [--portable] [--list]\n"
            "                        [--filter TEXT] [--json FILE]\n"
            "  --device SELECTOR  'P:D', a device index or a name substring (see pbsa-info);\n"
            "                     default: $PBSA_DEVICE, else the first GPU, else any device\n"
            "  --seed N           random seed of the inputs (default: the current time)\n"
            "  --portable         force the portable kernels\n"
            "  --list             print the case names and exit\n"
            "  --filter TEXT      run only the cases whose name contains TEXT; given again,\n"
            "                     those that contain any of them (at most 64)\n"
            "  --json FILE        also write the results to FILE\n");
}

/* The PBS checks, one per stage; "selection_ties" requires the reference's exact lists. */
enum stage {
    DENSE, PERMUTATION, SELECTION, SPARSE, PIPELINE, SELECTION_TIES, VARLEN, STAGE_COUNT
};
static const char *const stage_names[STAGE_COUNT] = {
    "dense", "pbs/permutation", "pbs/selection", "pbs/sparse", "pbs/pipeline",
    "pbs/selection_ties", "varlen"};

enum { MAX_FILTERS = 64 };

typedef struct run {
    support_device *dev;
    unsigned long long seed;
    const char *filters[MAX_FILTERS];
    int filter_count, list, count, failures;
    json_writer *json;
} run;

typedef struct outcome {
    int passed;
    double rel_l2, limit; /* NaN where the check has no output */
    char detail[512];
} outcome;

static void dense_case(run *x, const conformance_case *c, outcome *o)
{
    conformance_result r;
    int status = conformance_run_dense(x->dev->ctx, x->dev->queue, c, x->seed, &r);
    o->rel_l2 = r.rel_l2;
    o->limit = r.tolerance;
    o->passed = status == PBSA_SUCCESS && r.passed;
    if (status != PBSA_SUCCESS)
        snprintf(o->detail, sizeof o->detail, "status %d: %s", status,
                 pbsa_context_last_error(x->dev->ctx));
    else
        snprintf(o->detail, sizeof o->detail,
                 "max_abs %.3e, %ld unwritten, %ld guard bytes; lse max_abs %.1e (limit %.0e), "
                 "%ld unwritten, %ld guard",
                 r.max_abs, r.unwritten, r.guard_damage, r.lse.max_abs, r.lse_limit,
                 r.lse.unwritten, r.lse.guard_damage);
}

static void pbs_case_run(run *x, enum stage s, const pbs_case *c, outcome *o)
{
    pbs_report r = {0};
    pbs_inputs in;
    pbsa_context *ctx = x->dev->ctx;
    cl_command_queue q = x->dev->queue;
    int failed = s == SELECTION_TIES
                     ? pbs_inputs_make_ties(&in, c, x->seed, x->dev->cl_ctx, q, &r)
                     : pbs_inputs_make(&in, c, x->seed, x->dev->cl_ctx, &r);
    if (!failed) {
        switch (s) {
        case PERMUTATION: pbs_check_permutation(ctx, q, &in, &r); break;
        case SELECTION: pbs_check_selection(ctx, q, &in, 0, &r); break;
        case SELECTION_TIES: pbs_check_selection(ctx, q, &in, 1, &r); break;
        case SPARSE: pbs_check_sparse(ctx, q, &in, &r); break;
        default: pbs_check_pipeline(ctx, q, &in, &r); break;
        }
    }
    pbs_inputs_free(&in);
    o->passed = !r.failed;
    bool has_output = s == SPARSE || s == PIPELINE;
    o->rel_l2 = has_output ? r.rel_l2 : NAN;
    o->limit = has_output ? conformance_limit(&c->dtypes) : NAN;
    if (r.failed)
        snprintf(o->detail, sizeof o->detail, "%s", r.message);
    else if (r.rows)
        snprintf(o->detail, sizeof o->detail, "%zu of %zu block lists equal to the reference",
                 r.exact_rows, r.rows);
}

static void varlen_case_run(run *x, const varlen_case *c, outcome *o)
{
    pbs_report r = {0};
    varlen_check(x->dev->ctx, x->dev->queue, c, x->seed, &r);
    o->passed = !r.failed;
    o->rel_l2 = r.rel_l2;
    o->limit = conformance_tolerance(c->dtype);
    if (r.failed)
        snprintf(o->detail, sizeof o->detail, "%s", r.message);
    else if (c->pbs)
        snprintf(o->detail, sizeof o->detail, "lists equal to each sequence run alone");
}

/* Whether name contains one of the filters, or there is none. */
static bool matches(const run *x, const char *name)
{
    for (int i = 0; i < x->filter_count; i++)
        if (strstr(name, x->filters[i]))
            return true;
    return x->filter_count == 0;
}

/* Runs (or lists) one case when its name passes the filters. */
static void one(run *x, enum stage s, const void *c, const char *case_name)
{
    char name[128];
    snprintf(name, sizeof name, "%s/%s", stage_names[s], case_name);
    if (!matches(x, name))
        return;
    x->count++;
    if (x->list) {
        printf("%s\n", name);
        return;
    }
    outcome o = {.rel_l2 = NAN, .limit = NAN};
    if (s == DENSE)
        dense_case(x, c, &o);
    else if (s == VARLEN)
        varlen_case_run(x, c, &o);
    else
        pbs_case_run(x, s, c, &o);
    x->failures += !o.passed;
    /* "-" where the check compares no output (permutations, block lists). */
    char rel_l2[16] = "-", limit[16] = "-";
    if (!isnan(o.rel_l2))
        snprintf(rel_l2, sizeof rel_l2, "%.3e", o.rel_l2);
    if (!isnan(o.limit))
        snprintf(limit, sizeof limit, "%.0e", o.limit);
    printf("%-58s %-6s %11s %9s  %s\n", name, o.passed ? "pass" : "FAIL", rel_l2, limit,
           o.detail);
    fflush(stdout);
    if (x->json) {
        json_object_begin(x->json, NULL);
        json_string(x->json, "name", name);
        json_bool(x->json, "passed", o.passed);
        json_number(x->json, "rel_l2", o.rel_l2);
        json_number(x->json, "limit", o.limit);
        json_string(x->json, "detail", o.detail);
        json_object_end(x->json);
    }
}

static void all_cases(run *x)
{
    for (int i = 0; i < conformance_dense_case_count; i++)
        one(x, DENSE, &conformance_dense_cases[i], conformance_dense_cases[i].name);
    for (enum stage s = PERMUTATION; s <= PIPELINE; s++)
        for (int i = 0; i < pbs_case_count; i++)
            one(x, s, &pbs_cases[i], pbs_cases[i].name);
    /* The last tie case (33000 keys) is for the test suite only: too long for a quick check. */
    for (int i = 0; i + 1 < pbs_tie_case_count; i++)
        one(x, SELECTION_TIES, &pbs_tie_cases[i], pbs_tie_cases[i].name);
    for (int i = 0; i < varlen_case_count; i++)
        one(x, VARLEN, &varlen_cases[i], varlen_cases[i].name);
}

/* Exit status 1 when the filter left no case to run or list. */
static int no_case(const run *x)
{
    fprintf(stderr, "pbsa-conformance: no case matches '%s'%s\n",
            x->filter_count ? x->filters[0] : "",
            x->filter_count > 1 ? " or the other filters" : "");
    return 1;
}

int main(int argc, char **argv)
{
    const char *selector = NULL, *json_path = NULL;
    run x = {.seed = (unsigned long long)time(NULL)};
    pbsa_context_options options = {.struct_size = sizeof options};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            selector = argv[++i];
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            char *end;
            x.seed = strtoull(argv[++i], &end, 0);
            if (*end || !*argv[i]) {
                fprintf(stderr, "pbsa-conformance: --seed needs a number, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) {
            if (x.filter_count == MAX_FILTERS) {
                fprintf(stderr, "pbsa-conformance: more than %d --filter\n", MAX_FILTERS);
                return 2;
            }
            x.filters[x.filter_count++] = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_path = argv[++i];
        } else if (strcmp(argv[i], "--portable") == 0) {
            options.force_portable = 1;
        } else if (strcmp(argv[i], "--list") == 0) {
            x.list = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pbsa-conformance: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (x.list) {
        all_cases(&x);
        return x.count == 0 ? no_case(&x) : 0;
    }

    support_device dev;
    if (support_device_open("pbsa-conformance", selector, 0, &options, &dev) != PBSA_SUCCESS)
        return 2;
    x.dev = &dev;
    FILE *json_file = NULL;
    json_writer w;
    if (json_path) {
        json_file = fopen(json_path, "w");
        if (!json_file) {
            fprintf(stderr, "pbsa-conformance: cannot write %s\n", json_path);
            support_device_close(&dev);
            return 2;
        }
        json_init(&w, json_file);
        x.json = &w;
        json_object_begin(&w, NULL);
        json_string(&w, "library_version", pbsa_version_string());
        json_string(&w, "device", dev.info.name);
        json_string(&w, "vendor", dev.info.vendor);
        json_string(&w, "driver", dev.info.driver_version);
        json_int(&w, "seed", (long long)x.seed);
        json_bool(&w, "portable", options.force_portable);
        json_array_begin(&w, "cases");
    }
    printf("device: %s | %s | driver %s | seed %llu | kernels: %s\n", dev.info.name,
           dev.info.vendor, dev.info.driver_version, x.seed,
           pbsa_context_uses_tensor_cores(dev.ctx) ? "tensor-core where it applies, else portable"
                                                   : "portable");
    printf("%-58s %-6s %11s %9s  %s\n", "case", "result", "rel_l2", "limit", "detail");
    all_cases(&x);
    printf("%d of %d cases passed\n", x.count - x.failures, x.count);
    int written_failed = 0;
    if (json_file) {
        json_array_end(&w);
        json_int(&w, "passed", x.count - x.failures);
        json_int(&w, "failed", x.failures);
        json_object_end(&w);
        written_failed = json_finish(&w) != 0;
        written_failed |= fclose(json_file) != 0;
        if (written_failed)
            fprintf(stderr, "pbsa-conformance: writing %s failed\n", json_path);
    }
    support_device_close(&dev);
    if (x.count == 0)
        return no_case(&x);
    return x.failures ? 1 : written_failed ? 2 : 0;
}
