/* pbsa-bench-pbs: the text table, the targets report, and the JSON and CSV files (see
 * bench_pbs.h). Non-finite numbers are written as null in JSON and as empty fields in CSV. */
#include "bench_pbs.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Targets
 * ------------------------------------------------------------------------------------------- */

typedef enum target { TARGET_OVERHEAD, TARGET_STAGES_MS, TARGET_FASTER, TARGET_COUNT } target;

static const struct {
    const char *key;    /* JSON member */
    const char *column; /* CSV column */
    const char *text;   /* report line */
} targets[TARGET_COUNT] = {
    [TARGET_OVERHEAD] = {"overhead_at_most_5pct_from_32k", "target_overhead",
                         "permutation + selection <= 5% of dense from 32K"},
    [TARGET_STAGES_MS] = {"perm_select_under_1ms_at_8k", "target_perm_select_8k",
                          "permutation + selection < 1 ms at 8K"},
    [TARGET_FASTER] = {"pbs_faster_from_16k", "target_faster",
                       "PBS faster than dense from 16K"},
};

static double stages_ms(const length_result *r)
{
    return r->ms_median[OP_PERMUTATION] + r->ms_median[OP_SELECTION];
}

/* Whether target t applies to r; if so, writes "met (...)" or "target missed by X (...)" into
 * text and sets *met. */
static bool check_target(target t, const length_result *r, char *text, size_t size, bool *met)
{
    if (r->runs <= 0)
        return false;
    switch (t) {
    case TARGET_OVERHEAD:
        if (r->fallback || r->seq < PBS_TARGET_OVERHEAD_FROM || !isfinite(r->overhead))
            return false;
        *met = r->overhead <= PBS_TARGET_OVERHEAD;
        if (*met)
            snprintf(text, size, "met (%.2f%% of dense)", 100.0 * r->overhead);
        else
            snprintf(text, size, "target missed by %.2f points (%.2f%% of dense)",
                     100.0 * (r->overhead - PBS_TARGET_OVERHEAD), 100.0 * r->overhead);
        return true;
    case TARGET_STAGES_MS:
        if (r->fallback || r->seq != PBS_TARGET_STAGES_AT || !isfinite(stages_ms(r)))
            return false;
        *met = stages_ms(r) < PBS_TARGET_STAGES_MS;
        if (*met)
            snprintf(text, size, "met (%.3f ms)", stages_ms(r));
        else
            snprintf(text, size, "target missed by %.3f ms (%.3f ms)",
                     stages_ms(r) - PBS_TARGET_STAGES_MS, stages_ms(r));
        return true;
    case TARGET_FASTER:
        if (r->seq < PBS_TARGET_FASTER_FROM || !isfinite(r->speedup))
            return false;
        *met = r->speedup > 1.0;
        if (*met)
            snprintf(text, size, "met (%.2fx)", r->speedup);
        else
            snprintf(text, size, "target missed by %.3f ms (%.2fx: PBS %.3f ms, dense %.3f ms)",
                     r->ms_median[OP_PBS] - r->ms_median[OP_DENSE], r->speedup,
                     r->ms_median[OP_PBS], r->ms_median[OP_DENSE]);
        return true;
    case TARGET_COUNT: break;
    }
    return false;
}

static void length_label(int64_t seq, char *out, size_t size)
{
    if (seq % 1024 == 0)
        snprintf(out, size, "%lldK", (long long)(seq / 1024));
    else
        snprintf(out, size, "%lld", (long long)seq);
}

void pbs_print_targets(const pbs_options *o, const length_result *results, int count)
{
    static const char *const needs[TARGET_COUNT] = {
        [TARGET_OVERHEAD] = "no PBS length >= 32K", [TARGET_STAGES_MS] = "no 8K length",
        [TARGET_FASTER] = "no length >= 16K"};
    printf("targets (median times; per workload, every length a target applies to):\n");
    for (int w = 0; w < o->workload_count; w++) {
        printf("  %s\n", o->workloads[w].name);
        for (int t = 0; t < TARGET_COUNT; t++) {
            char line[2048] = "";
            size_t used = 0;
            int applied = 0, missed = 0;
            for (int i = 0; i < count; i++) {
                const length_result *r = &results[i];
                char text[256], label[32];
                bool met = false;
                if (r->workload != w || !check_target((target)t, r, text, sizeof text, &met))
                    continue;
                length_label(r->seq, label, sizeof label);
                int n = snprintf(line + used, sizeof line - used, "%s%s: %s",
                                 applied ? "; " : "", label, text);
                if (n > 0 && (size_t)n < sizeof line - used)
                    used += (size_t)n;
                applied++;
                missed += !met;
            }
            if (applied == 0)
                printf("    %-49s not measured (%s)\n", targets[t].text, needs[t]);
            else
                printf("    %-49s %-6s %s\n", targets[t].text, missed ? "MISSED" : "met", line);
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Text table
 * ------------------------------------------------------------------------------------------- */

void pbs_print_header(void)
{
    printf("%-14s %7s %9s %9s %8s %8s %8s %8s %8s %8s %8s %9s %7s\n", "workload", "seq",
           "dense_ms", "pbs_ms", "speedup", "perm_ms", "sel_ms", "sparse", "overhead",
           "density", "no_perm", "rel_l2", "recall");
    fflush(stdout);
}

static void print_ms(double value, const char *format, int width)
{
    if (isfinite(value))
        printf(format, value);
    else
        printf(" %*s", width, "-");
}

void pbs_print_row(const pbs_options *o, const length_result *r)
{
    printf("%-14s %7lld", o->workloads[r->workload].name, (long long)r->seq);
    if (r->runs > 0) {
        print_ms(r->ms_median[OP_DENSE], " %9.3f", 9);
        print_ms(r->ms_median[OP_PBS], " %9.3f", 9);
        print_ms(r->speedup, " %7.2fx", 8);
        for (int i = OP_PERMUTATION; i <= OP_SPARSE; i++)
            print_ms(r->ms_median[i], " %8.3f", 8);
        print_ms(100.0 * r->overhead, " %7.2f%%", 8);
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

void pbs_print_legend(const pbs_options *o)
{
    printf("times: medians in ms (device time, OpenCL events); speedup = dense/pbs; perm, sel, "
           "sparse: the stages called one by one;\noverhead = (perm + sel) / dense; density: "
           "share of the causal key blocks computed, with and without the permutation;\n"
           "rel_l2: PBS vs dense output over head 0%s%.0d; recall: share of the exact "
           "attention mass on the selected keys (%d rows per head)\n",
           o->c.heads > 1 ? " and " : "", o->c.heads > 1 ? o->c.heads - 1 : 0, PBS_RECALL_ROWS);
}

/* ---------------------------------------------------------------------------------------------
 * JSON
 * ------------------------------------------------------------------------------------------- */

static void json_ops(json_writer *w, const char *key, const double *values, const length_result *r)
{
    json_object_begin(w, key);
    for (int i = 0; i < PBS_OP_COUNT; i++)
        json_number(w, pbs_op_names[i], r->runs > 0 ? values[i] : NAN);
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

static const char *pattern_name(const pbs_workload *w, int h)
{
    int p = pbs_head_pattern(w, h);
    return p < 0 ? NULL : workload_pattern_name((workload_pattern)p);
}

static void json_row(json_writer *w, const pbs_options *o, const length_result *r)
{
    const pbs_workload *wl = &o->workloads[r->workload];
    json_object_begin(w, NULL);
    json_string(w, "workload", wl->name);
    json_int(w, "seq", r->seq);
    json_bool(w, "dense_fallback", r->fallback);
    json_int(w, "input_sets", r->sets);
    json_int(w, "runs", r->runs);
    json_number(w, "dense_ms", r->runs > 0 ? r->ms_median[OP_DENSE] : NAN);
    json_number(w, "pbs_ms", r->runs > 0 ? r->ms_median[OP_PBS] : NAN);
    json_number(w, "speedup", r->runs > 0 ? r->speedup : NAN);
    json_ops(w, "ms_median", r->ms_median, r);
    json_ops(w, "ms_min", r->ms_min, r);
    json_number(w, "stages_ms_sum", r->ms_median[OP_PERMUTATION] + r->ms_median[OP_SELECTION] +
                                        r->ms_median[OP_SPARSE]);
    json_number(w, "perm_select_ms", stages_ms(r));
    json_number(w, "overhead", r->overhead);
    json_object_begin(w, "targets");
    for (int t = 0; t < TARGET_COUNT; t++) {
        char text[256];
        bool met;
        if (check_target((target)t, r, text, sizeof text, &met))
            json_string(w, targets[t].key, text);
        else
            json_null(w, targets[t].key);
    }
    json_object_end(w);
    if (r->measured) {
        json_number(w, "density", r->density);
        json_number(w, "density_without_permutation", r->density_identity);
        if (!wl->from_npy) {
            json_patterns(w, "density_by_pattern", r->pattern_density, r);
            json_patterns(w, "density_without_permutation_by_pattern",
                          r->pattern_density_identity, r);
        }
        json_number(w, "rel_l2", r->rel_l2);
        json_number(w, "recall", r->recall);
        json_number(w, "recall_min", r->recall_min);
        json_number(w, "recall_without_permutation", r->recall_identity);
        json_int(w, "recall_rows_per_head",
                 r->seq < PBS_RECALL_ROWS ? r->seq : PBS_RECALL_ROWS);
        json_array_begin(w, "sampled_heads");
        for (int h = 0; h < r->sampled_count; h++) {
            json_object_begin(w, NULL);
            json_int(w, "head", r->sampled[h]);
            json_string(w, "pattern", pattern_name(wl, r->sampled[h]));
            json_number(w, "rel_l2", r->head_rel_l2[h]);
            json_number(w, "recall", r->head_recall[h]);
            json_number(w, "recall_without_permutation", r->head_recall_identity[h]);
            json_object_end(w);
        }
        json_array_end(w);
        json_int(w, "non_finite_outputs", r->non_finite);
    }
    json_bool(w, "dumped_inputs", r->dumped);
    if (r->error[0])
        json_string(w, "error", r->error);
    json_object_end(w);
}

int pbs_write_json(const char *program, const char *path, const pbs_options *o,
                   const bench_run_info *ri, const length_result *results, int count,
                   int planned)
{
    json_writer w;
    FILE *file = bench_json_open(program, path, &w);
    if (!file)
        return 1;
    json_object_begin(&w, NULL);
    bench_json_run_info(&w, "pbs_attention", ri);
    json_bool(&w, "force_portable", o->c.portable);
    json_string(&w, "timing", "OpenCL profiling events: device time from a marker before the "
                              "call to the end of its last kernel; median over timed rounds");
    const bool npy = o->workloads[0].from_npy;
    json_string(&w, "input", npy ? "npy" : "synthetic");
    char names[256] = "";
    size_t used = 0;
    for (int i = 0; i < o->workload_count; i++) {
        int n = snprintf(names + used, sizeof names - used, "%s%s", i ? "," : "",
                         o->workloads[i].name);
        if (n > 0 && (size_t)n < sizeof names - used)
            used += (size_t)n;
    }
    json_string(&w, "workload", names);
    json_array_begin(&w, "workloads");
    for (int i = 0; i < o->workload_count; i++)
        json_string(&w, NULL, o->workloads[i].name);
    json_array_end(&w);
    if (npy) {
        json_object_begin(&w, "inputs");
        json_string(&w, "q", o->npy.path[0]);
        json_string(&w, "k", o->npy.path[1]);
        json_string(&w, "v", o->npy.path[2]);
        json_int(&w, "seq", o->npy.seq);
        json_object_end(&w);
    }
    json_string(&w, "preset", o->preset);
    json_string(&w, "dtype", bench_dtype_name(o->c.dtype));
    json_string(&w, "kv_dtype", bench_dtype_name(o->c.kv_dtype));
    json_int(&w, "batch", 1);
    json_int(&w, "heads", o->c.heads);
    json_int(&w, "kv_heads", o->c.kv_heads);
    json_int(&w, "head_dim", o->c.head_dim);
    if (!npy) {
        json_object_begin(&w, "head_patterns");
        for (int i = 0; i < o->workload_count; i++) {
            json_array_begin(&w, o->workloads[i].name);
            for (int h = 0; h < o->c.heads; h++)
                json_string(&w, NULL, pattern_name(&o->workloads[i], h));
            json_array_end(&w);
        }
        json_object_end(&w);
    }
    json_int(&w, "seed", (long long)o->c.seed);
    json_int(&w, "warmup_rounds", o->c.warmup);
    json_string(&w, "dumped_inputs_to", o->dump_dir);
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
    json_object_begin(&w, "target_definitions");
    for (int t = 0; t < TARGET_COUNT; t++)
        json_string(&w, targets[t].key, targets[t].text);
    json_object_end(&w);
    json_int(&w, "planned_rows", planned);
    json_bool(&w, "complete", count == planned);
    json_array_begin(&w, "results");
    for (int i = 0; i < count; i++)
        json_row(&w, o, &results[i]);
    json_array_end(&w);
    json_object_end(&w);
    return bench_json_close(program, path, file, &w);
}

/* ---------------------------------------------------------------------------------------------
 * CSV
 * ------------------------------------------------------------------------------------------- */

/* A text field, quoted when it holds a comma, a quote or a line break. */
static void csv_text(FILE *f, const char *text, bool last)
{
    text = text ? text : "";
    if (strpbrk(text, ",\"\r\n")) {
        fputc('"', f);
        for (const char *c = text; *c; c++) {
            if (*c == '"')
                fputc('"', f);
            fputc(*c, f);
        }
        fputc('"', f);
    } else {
        fputs(text, f);
    }
    fputc(last ? '\n' : ',', f);
}

static void csv_number(FILE *f, double value)
{
    if (isfinite(value))
        fprintf(f, "%.10g", value);
    fputc(',', f);
}

static void csv_int(FILE *f, long long value)
{
    fprintf(f, "%lld,", value);
}

static const char *const csv_columns[] = {
    "workload", "seq", "dtype", "heads", "kv_heads", "head_dim", "block", "segment",
    "threshold", "gqa", "dense_fallback", "input_sets", "runs", "dense_ms", "pbs_ms", "speedup",
    "perm_ms", "select_ms", "sparse_ms", "perm_select_ms", "overhead", "density",
    "density_without_permutation", "rel_l2", "recall", "recall_min",
    "recall_without_permutation", "non_finite_outputs", "target_overhead",
    "target_perm_select_8k", "target_faster", "device", "error"};

int pbs_write_csv(const char *program, const char *path, const pbs_options *o,
                  const bench_run_info *ri, const length_result *results, int count)
{
    char temp[4096];
    snprintf(temp, sizeof temp, "%s.tmp", path);
    FILE *f = fopen(temp, "w");
    if (!f) {
        fprintf(stderr, "%s: cannot write %s\n", program, temp);
        return 1;
    }
    const size_t columns = sizeof csv_columns / sizeof csv_columns[0];
    for (size_t i = 0; i < columns; i++)
        csv_text(f, csv_columns[i], i + 1 == columns);
    for (int i = 0; i < count; i++) {
        const length_result *r = &results[i];
        const bool timed = r->runs > 0, measured = r->measured;
        csv_text(f, o->workloads[r->workload].name, false);
        csv_int(f, r->seq);
        csv_text(f, bench_dtype_name(o->c.dtype), false);
        csv_int(f, o->c.heads);
        csv_int(f, o->c.kv_heads);
        csv_int(f, o->c.head_dim);
        csv_int(f, o->params.block_size);
        csv_int(f, o->params.segment_size);
        csv_number(f, round((double)o->params.threshold * 1e6) / 1e6);
        csv_text(f, o->params.gqa_mode == PBSA_GQA_SHARED_PER_KV_GROUP ? "shared" : "per-head",
                 false);
        csv_int(f, r->fallback);
        csv_int(f, r->sets);
        csv_int(f, r->runs);
        for (int op = OP_DENSE; op <= OP_PBS; op++)
            csv_number(f, timed ? r->ms_median[op] : NAN);
        csv_number(f, timed ? r->speedup : NAN);
        for (int op = OP_PERMUTATION; op <= OP_SPARSE; op++)
            csv_number(f, timed ? r->ms_median[op] : NAN);
        csv_number(f, timed ? stages_ms(r) : NAN);
        csv_number(f, timed ? r->overhead : NAN);
        csv_number(f, measured ? r->density : NAN);
        csv_number(f, measured ? r->density_identity : NAN);
        csv_number(f, measured ? r->rel_l2 : NAN);
        csv_number(f, measured ? r->recall : NAN);
        csv_number(f, measured ? r->recall_min : NAN);
        csv_number(f, measured ? r->recall_identity : NAN);
        csv_int(f, r->non_finite);
        for (int t = 0; t < TARGET_COUNT; t++) {
            char text[256] = "";
            bool met;
            check_target((target)t, r, text, sizeof text, &met);
            csv_text(f, text, false);
        }
        csv_text(f, ri->device.name, false);
        csv_text(f, r->error, true);
    }
    int failed = ferror(f);
    if (fclose(f) != 0)
        failed = 1;
    if (failed || rename(temp, path) != 0) {
        fprintf(stderr, "%s: writing %s failed\n", program, path);
        remove(temp);
        return 1;
    }
    return 0;
}
