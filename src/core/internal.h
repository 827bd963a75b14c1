/* Library internals shared by the host source files. Not installed. */
#ifndef PBSA_INTERNAL_H
#define PBSA_INTERNAL_H

#include "pbsattn.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>

typedef struct pbsa_program_entry pbsa_program_entry;
typedef struct pbsa_error_table pbsa_error_table;
typedef struct pbsa_fit_entry pbsa_fit_entry;

/* How PBS attention computes the permutation scores and reads the permuted keys and values
 * (src/pbs/plan.c). AUTO: the environment (PBSA_SCORE_METHOD, PBSA_KV_METHOD), then for the
 * scores the tuned choice, else the default. */
typedef enum pbsa_score_method {
    PBSA_SCORE_AUTO = 0,
    PBSA_SCORE_FUSED,   /* flash-tile kernels, cl/pbs_scores.cl (default) */
    PBSA_SCORE_CLBLAST, /* CLBlast GEMM into logits, cl/pbs_scores_clblast.cl */
} pbsa_score_method;
typedef enum pbsa_kv_method {
    PBSA_KV_AUTO = 0,
    PBSA_KV_GATHER,       /* the sparse kernel reads K and V through pi (default) */
    PBSA_KV_MATERIALISED, /* K' = K[pi], V' = V[pi] copied first, cl/pbs_gather.cl */
} pbsa_kv_method;
/* Methods forced on a context (tests and experiments); zero members are automatic. */
typedef struct pbsa_pbs_methods {
    pbsa_score_method score;
    pbsa_kv_method kv;
    uint64_t gemm_chunk_bytes; /* CLBlast scores: workspace share of one chunk (0: 256 MiB) */
} pbsa_pbs_methods;

enum { PBSA_TILE_CONFIG_VARIABLES = 2 };

/* The PBSA_* environment variables, read once by pbsa_context_create() (src/core/environment.c).
 * Users set none of them; they serve kernel development and experiments (README.md, "Environment
 * variables"). */
typedef struct pbsa_environment {
    char kernel_dir[4096];     /* PBSA_KERNEL_DIR: read kernel sources from this folder */
    char build_options[1024];  /* PBSA_BUILD_OPTIONS: added to every program's build options */
    bool log_builds;           /* PBSA_BUILD_OPTIONS is set: log every build */
    bool force_portable;       /* PBSA_FORCE_PORTABLE set and not "0": no tensor-core kernels */
    bool no_wgmma;             /* PBSA_WGMMA=0: mma.sync instead of the wgmma tiles on Hopper */
    int kernel_cache;          /* PBSA_KERNEL_CACHE: -1 off or 0, 1 on or 1, else 0 (default) */
    bool tuning_off;           /* PBSA_TUNING = off, 0, no or none: no tuning files */
    char tuning_file[4096];    /* PBSA_TUNING_FILE: a tuning file read first */
    /* PBSA_FLASH_CONFIG, PBSA_MMA_CONFIG: a configuration for every call of the tuning space
     * (src/tuning/space.c), in the order of the spaces. */
    char tile_config[PBSA_TILE_CONFIG_VARIABLES][256];
    bool has_tile_config[PBSA_TILE_CONFIG_VARIABLES];
    pbsa_score_method score_method; /* PBSA_SCORE_METHOD = fused | clblast, else AUTO */
    pbsa_kv_method kv_method;       /* PBSA_KV_METHOD = gather | materialised, else AUTO */
} pbsa_environment;

/* Reads the variables into env. */
void pbsa_environment_read(pbsa_environment *env);

struct pbsa_context {
    cl_context cl_ctx;
    cl_device_id device;
    pbsa_device_info info;
    pbsa_context_options options;
    pbsa_environment env; /* read at creation */
    bool use_tensor_cores; /* the mma.sync kernels passed their probe (src/tiles/mma_probe.c) */
    bool use_wgmma;        /* and the Hopper (wgmma) tiles passed theirs */
    pthread_mutex_t lock; /* guards programs, build_log and fits */
    pbsa_program_entry *programs;
    pbsa_fit_entry *fits; /* fitted answers (src/launch/kernel_fit.c) */
    const char *build_log; /* log of the last failed build, owned by its cache entry */
    pbsa_pbs_methods pbs_methods; /* set by pbsa_pbs_force_methods() */
    struct pbsa_tuning *tuning;   /* tuning data of the device (src/tuning/tuning.c), may be NULL */
    pbsa_error_table *errors;     /* each thread's last error on the context (src/core/errors.c) */
};

/* ---- the NVIDIA tensor-core path (src/tiles/mma_probe.c; the kernels: src/tiles/mma_tile.h) ---- */

/* Sets whether ctx may use the tensor-core kernels (use_tensor_cores): a capable device, not
 * forced portable (options or ctx->env.force_portable), and a probe kernel that compiles and
 * computes exactly; and whether their tiles use wgmma (use_wgmma): compute capability 9.0,
 * not turned off with PBSA_WGMMA=0 (ctx->env.no_wgmma), and its own probe. */
void pbsa_tensor_core_decide(pbsa_context *ctx);

/* ---- errors (src/core/errors.c) ---- */

/* Formats a message, stores it as the calling thread's last error on ctx (ctx may be NULL),
 * sends it to the log callback and returns status. */
int pbsa_fail(const pbsa_context *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sends a warning or info line to the log callback. */
void pbsa_log(pbsa_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears the calling thread's last error (start of every public call on ctx). */
void pbsa_clear_error(const pbsa_context *ctx);
/* Creates and frees the table of each thread's last error on ctx. */
bool pbsa_error_table_create(pbsa_context *ctx);
void pbsa_error_table_release(pbsa_context *ctx);

/* ---- argument checks (src/core/tensor_check.c) ---- */

/* The storage dtypes of a call's tensors: q, k and v (which share one) and o. Any combination
 * of f32, f16 and bf16 runs. A kernel that writes no o is built with o = q, so that every call
 * of the same q and k shares its program. */
typedef struct pbsa_dtypes {
    pbsa_dtype q, kv, o;
} pbsa_dtypes;

/* "f32", "f16", "bf16" (in kernel options, tuning files and messages); NULL for an unknown
 * dtype. */
const char *pbsa_dtype_name(pbsa_dtype dtype);

/* The bytes [begin, end) of buffer that an argument named name covers. */
typedef struct pbsa_span {
    const char *name;
    cl_mem buffer;
    uint64_t begin, end;
} pbsa_span;

/* What the argument checks serve: a call, whose every buffer and queue must be given, or a
 * support query (pbsa_query_dense_support(), pbsa_query_attention_support()), which has no
 * queue and takes NULL for the buffers not made yet; a buffer it is given is checked as in a
 * call. Both run the same checks otherwise, so they give the same status and message. */
typedef enum pbsa_check_mode {
    PBSA_CHECK_CALL,
    PBSA_CHECK_QUERY,
} pbsa_check_mode;

/* Checks one device tensor: non-NULL buffer of ctx's context (NULL passes in a query), valid
 * dtype, positive sizes, non-negative strides, every element inside the buffer (64-bit
 * overflow-checked). fn and name go into the error message ("pbsa_dense_attention: q.seq ..."). */
int pbsa_check_tensor(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                      const char *name, const pbsa_tensor *t);
/* Checks that buffer (of ctx) holds count 4-byte elements (cl_int or float) from element offset
 * (name goes into messages). */
int pbsa_check_int_buffer(const pbsa_context *ctx, const char *fn, const char *name,
                          cl_mem buffer, uint64_t offset, uint64_t count);
/* Checks the log-sum-exp output of a call on q (lse NULL: none wanted): a buffer of ctx with
 * room for q.batch x q.heads x q.seq floats from element offset; messages name params->lse. */
int pbsa_check_lse(const pbsa_context *ctx, const char *fn, const pbsa_tensor *q, cl_mem lse,
                   uint64_t offset);
/* Checks that the queue belongs to ctx's context and device. */
int pbsa_check_queue(const pbsa_context *ctx, const char *fn, cl_command_queue queue);
/* The sequences of a call, checked (src/core/sequences.c): an ordinary batch of equal lengths,
 * or a variable-length one (varlen), whose K and V may be paged. */
typedef struct pbsa_sequences {
    const pbsa_varlen *varlen;  /* NULL: an ordinary batch */
    const pbsa_paged_kv *paged; /* NULL: K and V in rows */
    int batch;                  /* sequences: q.batch, or varlen->batch */
    int q_len, kv_len;          /* q.seq and k.seq, or the longest sequence's lengths */
    int page_size;              /* k.seq when paged, else 0 */
} pbsa_sequences;

/* Sequence b's query and key lengths (host values). */
int pbsa_sequence_q_len(const pbsa_sequences *s, int b);
int pbsa_sequence_kv_len(const pbsa_sequences *s, int b);
/* Checks varlen and paged (either may be NULL; paged needs varlen, which
 * pbsa_check_query_key() checks first) against q and k, whose own checks passed, and
 * fills *out: offsets within the tensors and non-decreasing, every sequence's queries no more
 * than its keys, pages in range and enough of them, device copies large enough. */
int pbsa_check_sequences(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                         const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_varlen *varlen,
                         const pbsa_paged_kv *paged, pbsa_sequences *out);
/* Checks that a paged pool tensor's pages are consecutive runs of rows. */
int pbsa_check_pages_consecutive(const pbsa_context *ctx, const char *fn, const char *name,
                                 const pbsa_tensor *t);
/* Spans of the device copies of the offsets and page table (inputs of every call that has
 * them), written to out[0..3); returns their count. */
int pbsa_sequence_spans(const pbsa_sequences *s, pbsa_span *out);

/* Checks q [B,Hq,Sq,D] and k [B,Hkv,Skv,D] (each of any dtype): agreeing batch and head dim, a
 * supported head dim, Hq a multiple of Hkv, Sq <= Skv; or, with varlen and paged (either may be
 * NULL), their rules (pbsa_check_sequences()). Fills *seqs. */
int pbsa_check_query_key(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                         const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_varlen *varlen,
                         const pbsa_paged_kv *paged, pbsa_sequences *seqs);
/* Checks q [B,Hq,Sq,D], k and v [B,Hkv,Skv,D], o like q: agreeing shapes, k and v of one dtype
 * (q and o of any), Hq a multiple of Hkv, Sq <= Skv, supported head dim, no two elements of o at
 * one address; varlen and paged as pbsa_check_query_key() (v a pool of k's shape when paged).
 * Fills *seqs. */
int pbsa_check_attention_tensors(const pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                                 const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                                 const pbsa_tensor *o, const pbsa_varlen *varlen,
                                 const pbsa_paged_kv *paged, pbsa_sequences *seqs);
/* Whether head_dim is one the kernels are built for: those of PBSA_HEAD_DIMS. */
bool pbsa_head_dim_supported(int64_t head_dim);
#define PBSA_HEAD_DIMS "64, 80, 96, 112, 128, 192 or 256"

/* ---- memory shared between arguments (src/core/overlap.c) ---- */

/* The span of the log-sum-exp output of a call on q (checked by pbsa_check_lse(); lse NULL: a
 * span without a buffer). */
pbsa_span pbsa_lse_span(const pbsa_tensor *q, cl_mem lse, uint64_t offset);
/* The span of a checked tensor, first to last element. */
pbsa_span pbsa_tensor_span(const char *name, const pbsa_tensor *t);
/* The span of count cl_ints at element offset of buffer (checked by pbsa_check_int_buffer()). */
pbsa_span pbsa_int_span(const char *name, cl_mem buffer, uint64_t offset, uint64_t count);
/* Fails (PBSA_ERROR_INVALID_VALUE, naming both) when an output shares a byte with another output
 * or an input, through the same buffer, a sub-buffer of it, or the same host memory. A span
 * without a buffer (a support query's) meets nothing. At most 12 spans in all. */
int pbsa_check_disjoint(const pbsa_context *ctx, const char *fn, const pbsa_span *outputs,
                        int output_count, const pbsa_span *inputs, int input_count);

/* ---- programs (src/launch/program_cache.c) ---- */

/* Returns a new kernel (the caller releases it) named kernel_name from the program built from
 * the embedded sources listed in files (concatenated in order) with build options options.
 * Programs are compiled once per context and options and then reused; a failed build returns
 * PBSA_ERROR_BUILD_FAILED and keeps its log for pbsa_context_build_log(). */
int pbsa_get_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                    const char *options, const char *kernel_name, cl_kernel *out);
/* pbsa_get_kernel() for a program that uses cl/wgmma_ptx.cl: its PTX is rewritten for sm_90a
 * (src/launch/ptx_sm90a.h) and rebuilt from that text; cached apart from plain builds. NVIDIA only. */
int pbsa_get_sm90a_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                          const char *options, const char *kernel_name, cl_kernel *out);
/* Frees every cached program of ctx. */
void pbsa_program_cache_clear(pbsa_context *ctx);

/* ---- kernels fitted to their compiled limits (src/launch/kernel_fit.c) ---- */

/* The work-group limit of kernel as compiled for ctx's device (CL_KERNEL_WORK_GROUP_SIZE), which
 * can be below the device's maximum (Rusticl on llvmpipe: 32 for every kernel); the device's
 * maximum when the query fails (the limit is advisory: the enqueue decides). Its local memory
 * (CL_KERNEL_LOCAL_MEM_SIZE) is not asked: Rusticl 22.3 reports about twice what a kernel
 * declares, so the tiles' own byte counts are checked instead. */
size_t pbsa_kernel_group_limit(const pbsa_context *ctx, cl_kernel kernel);
/* The largest power of two at most preferred that kernel allows (pbsa_kernel_group_limit()). */
size_t pbsa_fitted_group_size(const pbsa_context *ctx, cl_kernel kernel, size_t preferred);
/* A helper kernel with a work-group size of its own: kernel_name from files built with options,
 * and, size_define not NULL, " -D<size_define>=<size>" (for kernels that declare
 * reqd_work_group_size or local arrays of that size). The size is preferred, or where the
 * compiled kernel allows fewer work-items the largest power of two it allows, rebuilt with that
 * size where it is a build option; never below minimum (PBSA_ERROR_UNSUPPORTED_DEVICE). *wg
 * receives the size, *out the kernel (the caller releases it). The answer is remembered per
 * context, so later calls neither rebuild nor ask again. Thread-safe. */
int pbsa_get_fitted_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                           const char *options, const char *size_define, const char *kernel_name,
                           size_t preferred, size_t minimum, cl_kernel *out, size_t *wg);
/* The memo of fitted answers: value (size bytes) remembered under key on ctx. recall copies it
 * out and says whether it was there; remember keeps the first answer for a key and drops the
 * value when out of memory (the next call fits again). Thread-safe. */
bool pbsa_fit_recall(pbsa_context *ctx, const char *key, void *value, size_t size);
void pbsa_fit_remember(pbsa_context *ctx, const char *key, const void *value, size_t size);
/* Forgets every answer (context release). */
void pbsa_fit_clear(pbsa_context *ctx);

/* ---- compiled programs on disk (src/launch/binary_cache.c) ---- */

/* Whether ctx keeps compiled programs on disk: not disable_kernel_cache, not PBSA_KERNEL_CACHE=off. */
bool pbsa_binary_cache_enabled(const pbsa_context *ctx);
/* The program built earlier from texts with options on ctx's device, loaded from the disk cache
 * and built; NULL when the cache is off or has no valid entry (never an error: the caller then
 * compiles from source). The caller releases the program. */
cl_program pbsa_binary_cache_load(pbsa_context *ctx, const char *const *texts, size_t count,
                                  const char *options);
/* Writes program's binary to the disk cache (atomically); failures are logged and ignored. */
void pbsa_binary_cache_store(pbsa_context *ctx, cl_program program, const char *const *texts,
                             size_t count, const char *options);

/* ---- kernel arguments (src/launch/kernel_args.c) ---- */

/* Sets a kernel's arguments one after another, keeping the first OpenCL error. */
typedef struct pbsa_kernel_args {
    cl_kernel kernel;
    cl_uint next;
    cl_int status;
} pbsa_kernel_args;

void pbsa_arg(pbsa_kernel_args *args, size_t size, const void *value);
void pbsa_arg_mem(pbsa_kernel_args *args, cl_mem buffer);
void pbsa_arg_u64(pbsa_kernel_args *args, uint64_t value);
void pbsa_arg_i32(pbsa_kernel_args *args, int32_t value);
void pbsa_arg_f32(pbsa_kernel_args *args, float value);
/* The softmax scale times log2(e), the kernels' scale_log2: it multiplies differences of raw
 * scores inside exp2(). Scales above FLT_MAX / log2(e) (about 2.36e38) give FLT_MAX, which
 * changes only the weights of keys whose raw score q.k is within about 1e-36 of their row's
 * maximum (all others get 0 either way). */
float pbsa_scale_log2(float scale);
/* What the kernels are told of the sequences (the parameters SEQUENCE_PARAMS of cl/sequence.cl):
 * the device offsets and page table (NULL buffers when absent), max_pages, page_size, varlen. */
void pbsa_arg_sequences(pbsa_kernel_args *args, const pbsa_sequences *s);
/* The log-sum-exp output of a call on q, as the attention kernels take it: the buffer (NULL:
 * not wanted), its element offset and the elements per query head (q.seq). */
void pbsa_arg_lse(pbsa_kernel_args *args, cl_mem lse, uint64_t offset, const pbsa_tensor *q);
/* The offset and the three strides of t, as four ulong arguments. */
void pbsa_arg_tensor_layout(pbsa_kernel_args *args, const pbsa_tensor *t);
/* Appends the -D options that select the storage of q, of k and v and of o in cl/common.cl
 * (" -DQ_DTYPE=f32 -DKV_DTYPE=f16 -DO_DTYPE=f32"); false when they do not fit. */
bool pbsa_append_dtype_options(char *options, size_t capacity, const pbsa_dtypes *dtypes);

/* Appends printf-style text to a fixed-size options buffer; returns false when it would not fit. */
bool pbsa_append_option(char *buffer, size_t capacity, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* PBSA_INTERNAL_H */
