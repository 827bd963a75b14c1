/* What the parts of pbsa-bench-pbs share: its options, the result of one (workload, length)
 * case, and the functions of its input (pbs_inputs.c) and output (pbs_output.c) files. */
#ifndef PBSA_BENCH_PBS_H
#define PBSA_BENCH_PBS_H

#include "bench_util.h"
#include "npy.h"
#include "pbsattn.h"
#include "workload.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    PBS_MAX_INPUT_SETS = 2,
    PBS_SAMPLED_HEADS = 2, /* whole heads compared with dense attention */
    PBS_RECALL_ROWS = 16,  /* query rows per sampled head for the recall */
    PBS_OP_COUNT = 5,      /* dense, PBS, and the three stages */
    /* Every synthetic workload once, or the .npy inputs. */
    PBS_MAX_WORKLOADS = WORKLOAD_PATTERN_COUNT + 1,
};

enum { OP_DENSE, OP_PBS, OP_PERMUTATION, OP_SELECTION, OP_SPARSE };
extern const char *const pbs_op_names[PBS_OP_COUNT];

/* The targets of the benchmark (issue 4), checked on every row they apply to. */
#define PBS_TARGET_OVERHEAD 0.05       /* (permutation + selection) / dense, from ... */
#define PBS_TARGET_OVERHEAD_FROM 32768 /* ... this length on */
#define PBS_TARGET_STAGES_MS 1.0       /* permutation + selection below this ... */
#define PBS_TARGET_STAGES_AT 8192      /* ... at this length */
#define PBS_TARGET_FASTER_FROM 16384   /* PBS faster than dense from this length on */

/* One source of inputs: a synthetic workload, or Q, K and V from .npy files. */
typedef struct pbs_workload {
    const char *name; /* "mixed", ..., or "npy" */
    bool from_npy;
    workload w; /* when !from_npy */
} pbs_workload;

typedef struct pbs_npy_inputs {
    const char *path[3]; /* Q, K, V */
    npy_array array[3];
    int64_t seq; /* of the files; the benchmark may use a prefix */
} pbs_npy_inputs;

enum { PBS_DUMP_ALL = -1 };

typedef struct pbs_options {
    bench_common_options c;
    pbs_workload workloads[PBS_MAX_WORKLOADS];
    int workload_count;
    bool workload_given;
    const char *preset; /* NULL, or the name of the shape preset */
    pbsa_params params;
    const char *csv_path;
    pbs_npy_inputs npy; /* used when workloads[0].from_npy */
    const char *dump_dir;
    int64_t dump_length; /* 0: the first length; PBS_DUMP_ALL: each to dump_dir/<length> */
} pbs_options;

typedef struct length_result {
    int workload; /* index into pbs_options.workloads */
    int64_t seq;
    int sets, runs;
    bool fallback; /* seq <= segment: pbsa_attention is dense attention */
    double ms_median[PBS_OP_COUNT], ms_min[PBS_OP_COUNT];
    double speedup;
    double overhead; /* (permutation + selection) / dense, medians */
    double density, density_identity; /* mean over the query heads */
    double pattern_density[WORKLOAD_PATTERN_COUNT];
    double pattern_density_identity[WORKLOAD_PATTERN_COUNT];
    int pattern_heads[WORKLOAD_PATTERN_COUNT];
    int sampled[PBS_SAMPLED_HEADS], sampled_count;
    double head_rel_l2[PBS_SAMPLED_HEADS], head_recall[PBS_SAMPLED_HEADS];
    double head_recall_identity[PBS_SAMPLED_HEADS];
    double rel_l2, recall, recall_min, recall_identity;
    long non_finite; /* NaN or Inf in the read-back heads of the PBS output */
    bool measured;   /* the accuracy pass ran */
    bool dumped;     /* the inputs of this case went to --dump-inputs */
    char error[512];
} length_result;

/* The pattern of query head h under workload w, or -1 for .npy inputs (no pattern). */
int pbs_head_pattern(const pbs_workload *w, int h);

/* ---- pbs_inputs.c ---------------------------------------------------------------------------- */

/* Loads --q/--k/--v and checks them against each other and against the options given (dtype
 * from Q, kv-dtype from K, which V shares, heads, kv-heads, head-dim, lengths); fills in what was
 * not given. Returns 0, or 2 after a
 * message. */
int pbs_npy_load(const char *program, pbs_options *o);
void pbs_npy_free(pbs_npy_inputs *in);

/* Uploads the first seq positions of every head of the .npy inputs into q, k and v (each
 * [1, H, seq, D] in the options' dtype, K and V in their kv_dtype). */
cl_int pbs_npy_upload(const pbs_options *o, cl_command_queue queue, int64_t seq, cl_mem q,
                      cl_mem k, cl_mem v);

/* Writes q.npy, k.npy, v.npy ([1, H, seq, D]; bf16 as '<u2' bits, as pbsa-run --bf16 reads them)
 * and inputs.json (where they came from) into dir, creating it if needed, from the device
 * buffers. Returns 0, or 1 with a message in error. */
int pbs_dump_inputs(const pbs_options *o, const char *workload_name, cl_command_queue queue,
                    int64_t seq, cl_mem q, cl_mem k, cl_mem v, char *error, size_t error_size);

/* ---- pbs_output.c ---------------------------------------------------------------------------- */

/* The text table on stdout: a header, one row per case, and the legend. */
void pbs_print_header(void);
void pbs_print_row(const pbs_options *o, const length_result *r);
void pbs_print_legend(const pbs_options *o);

/* Checks the targets on the rows and prints, per workload, whether each holds and by how much
 * it is missed. */
void pbs_print_targets(const pbs_options *o, const length_result *results, int count);

/* Write the results so far (count of planned); complete when every case ran. Written through a
 * temporary file and a rename, so a file on disk is always whole. Return 0, or 1 after a
 * message. */
int pbs_write_json(const char *program, const char *path, const pbs_options *o,
                   const bench_run_info *ri, const length_result *results, int count,
                   int planned);
int pbs_write_csv(const char *program, const char *path, const pbs_options *o,
                  const bench_run_info *ri, const length_result *results, int count);

#endif
