/*
 * pbsattn: portable OpenCL kernels for dense and Permuted Block-Sparse Attention.
 *
 * The library runs on the caller's OpenCL context, device, queue and buffers. It never creates
 * an OpenCL context of its own unless asked through pbsa_helper_create_cl_context().
 *
 * General rules for every function below, unless its comment says otherwise:
 *  - Ownership: the caller owns every cl_context, cl_device_id, cl_command_queue and cl_mem it
 *    passes in; the library retains the context and device of a pbsa_context for its lifetime and
 *    never retains buffers or queues beyond the call. Host pointers passed in are only read during
 *    the call.
 *  - Errors: a function returns PBSA_SUCCESS or a status code. On error nothing has been enqueued,
 *    no caller buffer has been written and nothing has been leaked; the one exception is an
 *    OpenCL enqueue that fails in the middle of a multi-kernel call (pbsa_attention(), the PBS
 *    stages), where the kernels enqueued before it stay enqueued. The text of the last error,
 *    naming the bad argument, is kept per context (pbsa_context_last_error()) and also sent to the
 *    log callback.
 *  - Numerics: every result is accumulated in fp32. A NaN or infinity in Q or K reaches exactly
 *    the output rows that see that key; one in V can also reach other rows of the same tile of
 *    queries (a hidden key's weight 0 times NaN is NaN), so keep V finite.
 *  - Memory: no output of a call may share a byte with one of its inputs or another of its outputs
 *    (PBSA_ERROR_INVALID_VALUE, naming both). That holds for the same cl_mem, for sub-buffers of
 *    one buffer and a buffer and its sub-buffers (compared through parent and origin), and for
 *    buffers made with CL_MEM_USE_HOST_PTR on the same host memory. A tensor covers the bytes
 *    from its first element to its last, a list its count of cl_ints from its offset, a caller's
 *    workspace its first pbsa_workspace_size() bytes: two tensors whose spans interleave (q on
 *    the even rows of a buffer, o on the odd ones) are refused even though no element is shared.
 *    Inputs may share memory with each other. Buffers reached in other ways (two cl_mem made by
 *    another API over the same memory) cannot be seen and are the caller's to keep apart.
 *  - Thread safety: one pbsa_context may be used from several threads at once, each with its own
 *    command queue; pbsa_context_last_error() then reports the last error of the calling thread.
 *    Creating and releasing a context must not race with other calls on the same context.
 */
#ifndef PBSATTN_H
#define PBSATTN_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PBSA_API __declspec(dllexport)
#elif defined(__GNUC__)
#define PBSA_API __attribute__((visibility("default")))
#else
#define PBSA_API
#endif

/* ---------------------------------------------------------------------------------------------
 * Tier 1: core calls. Versions, status codes, tensors, contexts, dense attention and the whole
 * PBS pipeline (pbsa_attention()): all an inference engine needs.
 * ------------------------------------------------------------------------------------------- */

#define PBSA_VERSION_MAJOR 0
#define PBSA_VERSION_MINOR 1
#define PBSA_VERSION_PATCH 0
#define PBSA_VERSION_NUMBER (PBSA_VERSION_MAJOR * 10000 + PBSA_VERSION_MINOR * 100 + PBSA_VERSION_PATCH)

/* Version of the library actually linked, to catch a header/library mismatch. Thread-safe. */
PBSA_API unsigned pbsa_version_number(void);
PBSA_API const char *pbsa_version_string(void);

/*
 * Status codes. OpenCL errors (negative values) are passed through unchanged; the library's own
 * codes are positive and grouped in ranges.
 */
typedef enum pbsa_status {
    PBSA_SUCCESS = 0,

    /* 1000-1999: the caller passed something invalid. */
    PBSA_ERROR_NULL_ARGUMENT = 1000,
    PBSA_ERROR_INVALID_VALUE = 1001,     /* a size, flag or parameter out of its range */
    PBSA_ERROR_SHAPE_MISMATCH = 1002,    /* tensors that must agree do not */
    PBSA_ERROR_DTYPE_MISMATCH = 1003,    /* tensors that must share a dtype do not (k and v) */
    PBSA_ERROR_BUFFER_TOO_SMALL = 1004,  /* a cl_mem smaller than the tensor it describes */
    PBSA_ERROR_SIZE_OVERFLOW = 1005,     /* a size computation overflows 64 bits */
    PBSA_ERROR_WRONG_DEVICE = 1006,      /* a queue or buffer of another context or device */

    /* 2000-2999: valid, but not supported by this library or device. */
    PBSA_ERROR_UNSUPPORTED_HEAD_DIM = 2000,
    PBSA_ERROR_UNSUPPORTED_DTYPE = 2001,
    PBSA_ERROR_UNSUPPORTED_DEVICE = 2002,

    /* 3000-3999: failures of the device, compiler or host. */
    PBSA_ERROR_BUILD_FAILED = 3000,      /* kernel compilation failed: see pbsa_context_build_log() */
    PBSA_ERROR_OUT_OF_HOST_MEMORY = 3001,
    PBSA_ERROR_NO_DEVICE = 3002,         /* no OpenCL platform or device matches */
} pbsa_status;

/* Static English text for a status code, never NULL. Thread-safe. */
PBSA_API const char *pbsa_status_string(int status);

/* Storage type of tensor elements. Arithmetic is always fp32 or wider. The tensors of a call
 * need not share one: q and o may each be f32, f16 or bf16, and k and v any of the three as long
 * as they share it (llama.cpp's f32 q and o with f16 K/V, say); see pbsa_dense_attention(). */
typedef enum pbsa_dtype {
    PBSA_DTYPE_F32 = 0,
    PBSA_DTYPE_F16 = 1,  /* IEEE binary16 */
    PBSA_DTYPE_BF16 = 2, /* bfloat16, stored as its 16 raw bits */
} pbsa_dtype;

/* Size in bytes of one element of dtype, 0 for an unknown dtype. Thread-safe. */
PBSA_API size_t pbsa_dtype_size(pbsa_dtype dtype);

/*
 * A 4-D tensor [batch, heads, seq, head_dim] in a caller-owned cl_mem. Element (b, h, s, d) lives
 * at element index offset + b*stride_batch + h*stride_head + s*stride_seq + d (head_dim is
 * contiguous). BHSD and BSHD layouts are both expressible, as is a view into a larger buffer.
 * All counts and strides are in elements, not bytes.
 */
typedef struct pbsa_tensor {
    cl_mem buffer;
    uint64_t offset;
    pbsa_dtype dtype;
    int64_t batch;
    int64_t heads;
    int64_t seq;
    int64_t head_dim;
    int64_t stride_batch;
    int64_t stride_head;
    int64_t stride_seq;
} pbsa_tensor;

/* A contiguous BHSD descriptor (strides filled in from the sizes). Thread-safe. */
PBSA_API pbsa_tensor pbsa_tensor_bhsd(cl_mem buffer, pbsa_dtype dtype, int64_t batch, int64_t heads,
                                      int64_t seq, int64_t head_dim);
/* A contiguous BSHD descriptor ([batch, seq, heads, head_dim] in memory). Thread-safe. */
PBSA_API pbsa_tensor pbsa_tensor_bshd(cl_mem buffer, pbsa_dtype dtype, int64_t batch, int64_t heads,
                                      int64_t seq, int64_t head_dim);

typedef struct pbsa_context pbsa_context;

/* Severity of a message sent to the log callback. */
typedef enum pbsa_log_level {
    PBSA_LOG_ERROR = 0,
    PBSA_LOG_WARNING = 1,
    PBSA_LOG_INFO = 2,
} pbsa_log_level;

/*
 * Log callback: receives every error message and warning of every context. The library never
 * prints. The message is valid only during the call. Pass NULL to stop logging.
 * Thread safety: set it before creating contexts; the callback itself may be called from any
 * thread that calls into the library, concurrently.
 */
typedef void (*pbsa_log_fn)(pbsa_log_level level, const char *message, void *user_data);
PBSA_API void pbsa_set_log_callback(pbsa_log_fn fn, void *user_data);

/* Options for pbsa_context_create(); zero-initialised means defaults. */
typedef struct pbsa_context_options {
    /* Set to sizeof(pbsa_context_options), so the struct can grow without breaking callers;
     * 0 is accepted as the current size. */
    size_t struct_size;
    /* Non-zero: never use vendor-specific kernels (the NVIDIA tensor-core path), even where
     * they are available; PBSA_FORCE_PORTABLE does the same from the environment. */
    int force_portable;
    /* Non-zero: compile every kernel from source in this process and keep no binary on disk.
     * By default a compiled program is stored in $XDG_CACHE_HOME/pbsattn (else
     * ~/.cache/pbsattn), one file per device, driver, kernel source and build options, and later
     * contexts, in any process, load it instead of compiling again; damaged or stale files are
     * ignored and replaced, files are written atomically, and processes may share the folder.
     * PBSA_KERNEL_CACHE=off does the same from the environment. On PoCL, which caches compiled
     * kernels itself, the library's cache is used only with PBSA_KERNEL_CACHE=on. */
    int disable_kernel_cache;
} pbsa_context_options;

/*
 * Creates a library context on the caller's OpenCL context and device.
 * options may be NULL for the defaults. On success *out receives the new context, which the
 * caller releases with pbsa_context_release(); the library retains cl_ctx and device until then.
 * Errors: PBSA_ERROR_NULL_ARGUMENT (cl_ctx, device or out NULL), PBSA_ERROR_WRONG_DEVICE (device
 * not in cl_ctx), PBSA_ERROR_INVALID_VALUE (bad options), PBSA_ERROR_OUT_OF_HOST_MEMORY, or an
 * OpenCL error from querying the device. On error *out is set to NULL (when out is not NULL); the
 * message is sent to the log callback, since there is no context to hold it.
 * Thread safety: may be called from any thread.
 */
PBSA_API int pbsa_context_create(cl_context cl_ctx, cl_device_id device,
                                 const pbsa_context_options *options, pbsa_context **out);

/* Releases a context and every program it compiled. NULL is a no-op. The caller must make sure
 * no other thread uses the context during or after the call and that work it enqueued is done. */
PBSA_API void pbsa_context_release(pbsa_context *ctx);

/* Text of the last error of the calling thread's calls on ctx ("" if its last call on ctx
 * succeeded or it made none); errors on other contexts and of other threads never change it. Valid
 * until the thread's next call on ctx, or ctx's release. ctx NULL gives the calling thread's last
 * error of a call without a context: a failed pbsa_context_create(),
 * pbsa_helper_create_cl_context() or pbsa_query_device_info(), or a call passed ctx NULL; calls on
 * contexts never change it. A message that cannot be stored for want of host memory still goes to
 * the log callback. Thread-safe. */
PBSA_API const char *pbsa_context_last_error(const pbsa_context *ctx);

/* Compiler log of the last kernel build that failed on ctx ("" if none); valid until the next
 * failing build on ctx. Thread-safe to call; the text may be replaced by another thread's build. */
PBSA_API const char *pbsa_context_build_log(const pbsa_context *ctx);

/* What the library knows of a device, read once when a context is created. */
typedef struct pbsa_device_info {
    char name[256];
    char vendor[256];
    char driver_version[128];
    cl_uint vendor_id;
    cl_uint compute_units;
    cl_ulong local_mem_bytes;
    cl_ulong global_mem_bytes;
    cl_ulong max_alloc_bytes;
    size_t max_work_group_size;
    int is_gpu;
    int is_nvidia;
    int nv_compute_major; /* NVIDIA compute capability, 0 when not NVIDIA or not reported */
    int nv_compute_minor;
    int has_fp16_arithmetic; /* cl_khr_fp16; storage of f16 and bf16 works on every device */
    int tensor_core_capable; /* NVIDIA with compute capability 8.0 or more */
} pbsa_device_info;

/* Copies the device information of ctx into *out. Errors: PBSA_ERROR_NULL_ARGUMENT. Thread-safe. */
PBSA_API int pbsa_context_device_info(const pbsa_context *ctx, pbsa_device_info *out);

/* 1 when ctx runs the NVIDIA tensor-core (mma.sync) kernels where they apply (dense and
 * block-sparse attention with f16 or bf16 K and V, head dims 64, 80, 96, 112, 128 and 192; see
 * pbsa_query_kernel_config()), 0
 * when it runs the portable kernels everywhere. Decided at context creation: the device must be
 * NVIDIA with compute capability 8.0 or more, a probe kernel must compile and compute exactly,
 * and neither options->force_portable nor the environment variable PBSA_FORCE_PORTABLE (any value
 * but "0") may be set. ctx NULL gives 0.
 * Thread-safe. */
PBSA_API int pbsa_context_uses_tensor_cores(const pbsa_context *ctx);

/* Which tensor-core instructions the tensor-core kernels of a context use. */
typedef enum pbsa_tensor_core_path {
    PBSA_TENSOR_CORES_NONE = 0,     /* the portable kernels everywhere */
    PBSA_TENSOR_CORES_MMA_SYNC = 1, /* warp-level mma.sync (compute capability 8.0 and up) */
    PBSA_TENSOR_CORES_WGMMA = 2,    /* Hopper's warpgroup wgmma (9.0) for the attention tiles
                                       that fit it (f16/bf16, head dim 128), mma.sync for the
                                       rest; the default there */
} pbsa_tensor_core_path;

/* The tensor-core path of ctx. WGMMA is chosen at context creation on compute capability 9.0
 * when a probe of the instructions (built by rewriting the compiler's PTX for sm_90a) computes
 * exactly, unless the environment variable PBSA_WGMMA is "0" (then MMA_SYNC). ctx NULL gives
 * PBSA_TENSOR_CORES_NONE. Thread-safe. */
PBSA_API pbsa_tensor_core_path pbsa_context_tensor_core_path(const pbsa_context *ctx);

/* Reads the information of any device without creating a context (used by pbsa-info).
 * Errors: PBSA_ERROR_NULL_ARGUMENT or an OpenCL error. Thread-safe. */
PBSA_API int pbsa_query_device_info(cl_device_id device, pbsa_device_info *out);

/*
 * Helper for programs that have no OpenCL context of their own (tools, tests, simple users):
 * picks a device and creates a context on it. selector: NULL or "" means the environment variable
 * PBSA_DEVICE if set, else the first GPU, else the first device of any type. Otherwise it is
 * "P:D" (platform and device indices, as pbsa-info lists them), "D" (device index over all
 * platforms), or a case-insensitive substring of the device or platform name.
 * On success the caller owns *cl_ctx_out and releases it with clReleaseContext(); *device_out
 * belongs to that context.
 * Errors: PBSA_ERROR_NULL_ARGUMENT, PBSA_ERROR_NO_DEVICE (no platform, or nothing matches the
 * selector; the message says which), or an OpenCL error. Messages go to the log callback and to
 * pbsa_context_last_error(NULL). Thread-safe.
 */
PBSA_API int pbsa_helper_create_cl_context(const char *selector, cl_context *cl_ctx_out,
                                           cl_device_id *device_out);

/*
 * A variable-length batch (pbsa_dense_params::varlen, pbsa_params::varlen): B sequences of their
 * own lengths packed into one call, as engines pass them (cu_seqlens / indptr). q, k, v and o
 * are then packed tensors: batch 1, seq = the rows of all sequences, [total, heads, D] in any
 * strides (pbsa_tensor_bshd(buffer, dtype, 1, heads, total, D) for the usual layout). Sequence b
 * holds query rows q_offsets[b] .. q_offsets[b+1]-1 of q and o, and key rows kv_offsets[b] ..
 * kv_offsets[b+1]-1 of k and v (with paged_kv: its keys 0 .. kv_offsets[b+1]-kv_offsets[b]-1
 * live in the pages of row b of the page table, and only the differences of kv_offsets count).
 * Its queries are its last positions (as in chunked prefill): query row r of sequence b sits at
 * key position r + Skv_b - Sq_b, so Sq_b <= Skv_b. Rows of q and o outside every sequence are
 * neither read nor written.
 * The offsets are given twice: as host arrays, which the call checks and plans with (non-
 * decreasing, from 0 or more, the last within the tensor), and as device buffers of cl_int that
 * the kernels read. Both must hold the same values: the device copies are not read back to be
 * compared, and the kernels trust them, so device values that differ from the checked host ones
 * are undefined behaviour (rows read or written outside the tensors included).
 * Ownership: everything stays the caller's; host arrays are read during the call only, device
 * buffers until the enqueued work completes (they must not be written before).
 */
typedef struct pbsa_varlen {
    int32_t batch;               /* B, the number of sequences, >= 1 */
    const int32_t *q_offsets;    /* host, B + 1 entries */
    const int32_t *kv_offsets;   /* host, B + 1 entries */
    cl_mem q_offsets_buffer;     /* device copy of q_offsets: cl_int from q_offsets_offset */
    uint64_t q_offsets_offset;   /* element offset */
    cl_mem kv_offsets_buffer;    /* device copy of kv_offsets */
    uint64_t kv_offsets_offset;
} pbsa_varlen;

/*
 * A paged KV cache (pbsa_dense_params::paged_kv, pbsa_params::paged_kv), as vLLM, SGLang, MLC and
 * FlashInfer keep it: k and v are page pools [num_pages, page_size, Hkv, D], described as tensors
 * with batch = num_pages, seq = page_size and heads = Hkv, whose pages are consecutive runs of
 * rows: stride_batch = page_size x stride_seq (the contiguous layout of that shape, any head
 * stride). k and v may be different pools of the same shape. Sequence b's key j is row j %
 * page_size of page page_table[b * max_pages + j / page_size]. Any page_size >= 1 works (16 to
 * 256 are checked); pages may come in any order and be shared between sequences.
 * A paged call is always a variable-length one: varlen must be set too, and gives each
 * sequence's key length (kv_offsets[b+1] - kv_offsets[b]: only the differences count, the
 * offsets must still be non-negative and non-decreasing).
 * The table is given twice, as for pbsa_varlen: the host copy is checked (every page a sequence
 * uses within 0 .. num_pages - 1, max_pages x page_size covering its keys), the device copy (cl_int
 * [B, max_pages] from page_table_offset) is read by the kernels; both must hold the same values.
 * PBS reads the keys through the permutation and the page table together: no gathered copy.
 */
typedef struct pbsa_paged_kv {
    int32_t max_pages;            /* entries per sequence in the page table, >= 1 */
    const int32_t *page_table;    /* host, B x max_pages entries */
    cl_mem page_table_buffer;     /* device copy */
    uint64_t page_table_offset;   /* element offset */
} pbsa_paged_kv;

/* Parameters of dense attention; zero-initialised means non-causal with the default scale. */
typedef struct pbsa_dense_params {
    int causal;  /* non-zero: query i (at position i + Skv - Sq) sees keys 0 .. i + Skv - Sq */
    float scale; /* softmax scale; 0 means 1/sqrt(head_dim) */
    const pbsa_varlen *varlen;     /* NULL: an ordinary batch of equal lengths */
    const pbsa_paged_kv *paged_kv; /* NULL: k and v hold the keys in rows; set: needs varlen */
    /* Optional output (NULL: not computed), last so that zero-initialised callers keep working:
     * each query row's log-sum-exp of its scaled logits in the natural log, ln(sum_j exp(scale x
     * q.k_j)) over the keys the row attends, as float from element lse_offset of the buffer:
     * [B, Hq, Sq], or [Hq, q.seq] for a variable-length call (one value per packed row of q;
     * rows outside every sequence are not written). A row that attends no key gets -INFINITY
     * (only a caller's block lists can give one: see pbsa_sparse_attention()). The buffer must
     * belong to ctx's context, hold lse_offset + q.batch x q.heads x q.seq floats, and share no
     * byte with the inputs or o (see Memory above); otherwise the call fails, naming
     * params->lse (PBSA_ERROR_BUFFER_TOO_SMALL, PBSA_ERROR_SIZE_OVERFLOW for an offset past
     * 64 bits, PBSA_ERROR_WRONG_DEVICE, PBSA_ERROR_INVALID_VALUE) and writes nothing. Every
     * kernel (portable and tensor-core) writes it; o is the same with or without it. */
    cl_mem lse;
    uint64_t lse_offset; /* in elements (floats) */
} pbsa_dense_params;

/*
 * Dense attention forward: O = softmax(Q K^T * scale [+ causal mask]) V, per batch and query head.
 * Shapes: q [B, Hq, Sq, D], k and v [B, Hkv, Skv, D], o [B, Hq, Sq, D], with Hq a multiple of Hkv
 * (grouped-query attention: query head h reads KV head h / (Hq / Hkv)), 1 <= Sq <= Skv (the
 * queries are the last Sq positions), D in {64, 80, 96, 112, 128, 192, 256}. o must not overlap
 * q, k, v or itself (see Memory above).
 * Dtypes: q and o each f32, f16 or bf16; k and v f32, f16 or bf16, the same for both (else
 * PBSA_ERROR_DTYPE_MISMATCH, naming v.dtype and k.dtype); all 27 such combinations run, on every
 * call of this header (the PBS stages and their fallback too). Each tensor is read or written in
 * its own dtype and arithmetic is fp32; the NVIDIA tensor-core kernels compute the products in
 * K/V's 16-bit type, converting q to it once as it is loaded (so an f32 q there is rounded to
 * f16 or bf16, as the probabilities are, and a q beyond f16's range meets f16 K/V as infinity),
 * and f32 K and V never run on them: they run on the portable kernels in fp32, whatever q and o
 * are.
 * params NULL means causal with the default scale. params->varlen and params->paged_kv: a
 * variable-length batch and a paged cache (see pbsa_varlen and pbsa_paged_kv); the grid is that of
 * the longest sequence. Their errors: PBSA_ERROR_NULL_ARGUMENT (a host array or device buffer
 * missing), PBSA_ERROR_INVALID_VALUE (offsets negative, decreasing or past the tensor, a page index
 * outside the pool, a page table too short for a sequence, pages that are not runs of rows,
 * paged_kv without varlen), PBSA_ERROR_SHAPE_MISMATCH (q.batch or, not paged, k.batch not 1; a
 * sequence with more queries than keys), PBSA_ERROR_BUFFER_TOO_SMALL (a device copy shorter than
 * its host array); the message names the argument, and nothing is enqueued.
 * The work is enqueued on queue, which must belong to the context and device of ctx. If event is
 * not NULL it receives an event of the enqueued work that the caller must release.
 * Errors: PBSA_ERROR_NULL_ARGUMENT, PBSA_ERROR_INVALID_VALUE, PBSA_ERROR_SHAPE_MISMATCH,
 * PBSA_ERROR_DTYPE_MISMATCH, PBSA_ERROR_UNSUPPORTED_HEAD_DIM, PBSA_ERROR_UNSUPPORTED_DTYPE,
 * PBSA_ERROR_BUFFER_TOO_SMALL, PBSA_ERROR_SIZE_OVERFLOW, PBSA_ERROR_WRONG_DEVICE,
 * PBSA_ERROR_BUILD_FAILED, or an OpenCL error from the enqueue.
 * Thread-safe as described at the top of this header.
 */
PBSA_API int pbsa_dense_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                                  const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                                  const pbsa_dense_params *params, cl_event *event);

/*
 * Whether pbsa_dense_attention() on ctx supports a call with these arguments, for an engine's
 * own dispatch (ggml's supports_op), before it has made any buffer: PBSA_SUCCESS when it does,
 * else the status and the message (pbsa_context_last_error(), naming pbsa_dense_attention and
 * the argument) that the call would give. It runs the call's own checks and kernel choice on
 * the descriptions alone: no queue, and in q, k, v, o, params->lse and the device copies of
 * params->varlen and params->paged_kv a NULL cl_mem stands for a buffer not made yet (a buffer
 * that is given is checked as the call checks it: context, size, overlap). The host offsets and
 * page table are read and checked as by the call. Nothing is compiled, enqueued, allocated or
 * written; the descriptions and host arrays are only read during the call, and buffers given
 * are only queried. Not foreseen: failures of the device or compiler at the call itself
 * (PBSA_ERROR_BUILD_FAILED, a compiled kernel's work-group limit, OpenCL errors of the enqueue).
 * Errors: those of pbsa_dense_attention()'s argument checks, also kept as the calling thread's
 * last error on ctx. Thread-safe as the call.
 */
PBSA_API int pbsa_query_dense_support(pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                                      const pbsa_tensor *v, const pbsa_tensor *o,
                                      const pbsa_dense_params *params);

/* ---------------------------------------------------------------------------------------------
 * Permuted Block-Sparse Attention (PBS-Attn)
 * ------------------------------------------------------------------------------------------- */

/* How grouped-query attention is permuted. */
typedef enum pbsa_gqa_mode {
    /* Every query head has its own key permutation (the reference's semantics), computed without
     * replicating K/V. */
    PBSA_GQA_PER_QUERY_HEAD = 0,
    /* One permutation per KV head, from scores averaged over the query heads of its group. */
    PBSA_GQA_SHARED_PER_KV_GROUP = 1,
} pbsa_gqa_mode;

/* Parameters of PBS attention. Start from pbsa_params_default() and change what you need. */
typedef struct pbsa_params {
    size_t struct_size;    /* sizeof(pbsa_params); 0 is accepted as the current size */
    int block_size;        /* logical block b: 16, 32, 64 or 128 (default 128) */
    int segment_size;      /* permutation segment s, a positive multiple of block_size (256) */
    float threshold;       /* cumulative attention mass tau to keep, > 0 (0.9); >= 1 keeps all */
    int causal;            /* non-zero for causal attention (default 1) */
    int force_first_block; /* non-zero: always keep the block that holds key 0 (default 1) */
    pbsa_gqa_mode gqa_mode; /* default PBSA_GQA_PER_QUERY_HEAD */
    float scale;           /* softmax scale; 0 means 1/sqrt(head_dim) */
    /* Variable-length batch (NULL: off). Every sequence gets its own permutation, segments and
     * block selection, from its own first key, exactly as if it ran alone; a sequence with
     * Skv_b <= segment_size gets dense attention, which in a varlen call is its whole segment 0
     * (identity permutation, every block listed; when every sequence is that short, the call is
     * dense attention and fills no workspace). Sequence by sequence, (Skv_b - Sq_b) must be a
     * multiple of block_size. Sizes in the PBS calls below are those of the longest sequences:
     * B = varlen->batch, Sq = max Sq_b, Skv = max Skv_b; sequence b uses the first nqb_b, nkb_b
     * and Skv_b entries of its rows (the rest are not written). */
    const pbsa_varlen *varlen;
    const pbsa_paged_kv *paged_kv; /* paged K/V cache (NULL: off; set: needs varlen) */
    /* Optional log-sum-exp output, as pbsa_dense_params::lse says (NULL: not computed), over the
     * keys each query row actually attends: those of its final blocks that the causal rule
     * keeps (the dense attention's keys at the short-sequence fallback). Written by
     * pbsa_attention() and pbsa_sparse_attention(); the other stage calls ignore it. */
    cl_mem lse;
    uint64_t lse_offset; /* in elements (floats) */
} pbsa_params;

/* The paper's defaults: block 128, segment 256, threshold 0.9, causal, sink block on, per query
 * head permutation, scale 1/sqrt(D). Thread-safe. */
PBSA_API pbsa_params pbsa_params_default(void);


/*
 * Sizes used below, for q [B, Hq, Sq, D] and k [B, Hkv, Skv, D] with b = block_size and
 * s = segment_size: nqb = ceil(Sq / b) query blocks, nkb = ceil(Skv / b) key blocks,
 * nseg = Skv / s complete segments, Hp = Hq (PBSA_GQA_PER_QUERY_HEAD) or Hkv (shared mode).
 * PBS attention needs Sq == Skv, or chunked prefill with (Skv - Sq) a multiple of b (query block i
 * then sits at key block i + nkb - nqb).
 *
 * Block lists: for row r = (batch * Hq + head) * nqb + i, counts[r] is the number of key blocks
 * query block i attends to and blocks[r * nkb + t], t < counts[r], are those key block indices
 * (ascending, each < nkb), as cl_int. Key block j covers permuted positions j*b .. j*b + b - 1.
 * Each block is attended at most once: an index that is not above every index attended before it
 * in its row is skipped, so a repeated index counts once (and in a list that is not ascending,
 * the indices below an earlier one are skipped). A variable-length call's lists are laid out as
 * pbsa_workspace_part says.
 */
typedef struct pbsa_block_list {
    cl_mem counts;          /* cl_int [B * Hq * nqb] */
    cl_mem blocks;          /* cl_int [B * Hq * nqb * nkb] */
    uint64_t counts_offset; /* element offsets into the two buffers */
    uint64_t blocks_offset;
} pbsa_block_list;

/*
 * Bytes of device workspace pbsa_attention() needs for these shapes and params (the permutation,
 * its scores, the block means and the block lists). Writes *bytes. Errors as pbsa_attention()'s
 * argument checks. Thread-safe.
 */
PBSA_API int pbsa_workspace_size(pbsa_context *ctx, const pbsa_tensor *q, const pbsa_tensor *k,
                                 const pbsa_params *params, size_t *bytes);

/*
 * PBS attention, the whole pipeline: segmented key permutation, block selection and block-sparse
 * attention through the permutation (no permuted copy of K or V is made). Same tensor rules as
 * pbsa_dense_attention(); params NULL means pbsa_params_default(). If Skv <= segment_size the
 * result is dense attention (the short-sequence fallback).
 * workspace: a caller-owned buffer of at least pbsa_workspace_size() bytes, used from byte 0
 * (those bytes must not overlap q, k, v or o; a sub-buffer of a larger buffer is fine); no
 * device memory is allocated by the call. NULL: the library allocates a workspace for the call
 * and releases it when the work completes. After the call completes, the permutation and block
 * lists can be read from the workspace with pbsa_workspace_read().
 * Two variants for measurements, chosen by environment variables read when ctx was created:
 * PBSA_KV_METHOD=materialised copies K' = K[pi] and V' = V[pi] into the (larger) workspace, and
 * PBSA_SCORE_METHOD=clblast computes the permutation scores with CLBlast, which allocates
 * temporary buffers of its own. The defaults (gather, fused) make no copy and no allocation.
 * Events: the call enqueues several kernels, each waiting for the one before (so it is also
 * correct on out-of-order queues); *event is the last one's, complete when all the work is. Its
 * profiling times cover that kernel only: time the whole call with a marker enqueued before it.
 * Errors: those of pbsa_dense_attention(), plus PBSA_ERROR_INVALID_VALUE for bad params (named),
 * PBSA_ERROR_BUFFER_TOO_SMALL for a small workspace.
 */
PBSA_API int pbsa_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                            const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                            const pbsa_params *params, cl_mem workspace, cl_event *event);

/*
 * Whether pbsa_attention() on ctx supports a call with these arguments, as
 * pbsa_query_dense_support() says for dense attention: the call's checks and dispatch decisions
 * (the plan of every stage, or at the short-sequence fallback those of the dense call it makes,
 * whose messages name pbsa_dense_attention), NULL cl_mem allowed for buffers not made yet, no
 * queue, and nothing compiled, enqueued, allocated or written. The workspace is not part of the
 * question: pbsa_workspace_size() gives its size, and the call checks the one it is given.
 * Errors: those of pbsa_attention()'s argument checks. Thread-safe as the call.
 */
PBSA_API int pbsa_query_attention_support(pbsa_context *ctx, const pbsa_tensor *q,
                                          const pbsa_tensor *k, const pbsa_tensor *v,
                                          const pbsa_tensor *o, const pbsa_params *params);

/* ---------------------------------------------------------------------------------------------
 * Tier 2: PBS stages. The pipeline's parts, for inspection, testing and engines that run stages
 * separately; pbsa_attention() runs them all.
 * ------------------------------------------------------------------------------------------- */

/* What pbsa_workspace_read() copies out. With params->varlen, B, Skv and nqb, nkb are those of
 * pbsa_params::varlen (the longest sequence's): sequence b's rows hold its own Skv_b, nqb_b and
 * nkb_b entries first, and their block indices count from its own first key. */
typedef enum pbsa_workspace_part {
    PBSA_PART_PERMUTATION = 0, /* cl_int [B, Hp, Skv]: pi, original key index at each position */
    PBSA_PART_BLOCK_COUNTS = 1, /* cl_int [B * Hq * nqb] */
    PBSA_PART_BLOCKS = 2,       /* cl_int [B * Hq * nqb * nkb], see pbsa_block_list */
} pbsa_workspace_part;

/*
 * Blocking read of one part of a workspace that pbsa_attention() filled for the same shapes and
 * params (not meaningful after the short-sequence fallback, which fills nothing). host must have
 * room for capacity bytes; the part's size is written to *size_out when not NULL.
 * Errors: PBSA_ERROR_NULL_ARGUMENT, PBSA_ERROR_INVALID_VALUE (bad part, capacity too small),
 * or an OpenCL error. Thread-safe.
 */
PBSA_API int pbsa_workspace_read(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                                 const pbsa_tensor *k, const pbsa_params *params, cl_mem workspace,
                                 pbsa_workspace_part part, void *host, size_t capacity,
                                 size_t *size_out);

/*
 * Density per query head: selected key blocks over the blocks that causal (or, non-causal, full)
 * attention would visit, from block counts read back by the caller. counts: B*Hq*nqb values,
 * each in 0..nkb; density: Hq*B doubles, written in (batch, head) order. Causal PBS visits the
 * whole of each query block's own segment (the permutation can move earlier keys into its later
 * blocks), so the ratio can exceed 1 for short sequences. Errors: PBSA_ERROR_NULL_ARGUMENT,
 * PBSA_ERROR_INVALID_VALUE (bad sizes, a count outside 0..nkb; nothing is written). Thread-safe
 * (host only). params->varlen is not read: for a variable-length call, pass each sequence's
 * sizes and its own counts.
 */
PBSA_API int pbsa_block_density(int64_t batch, int64_t q_heads, int64_t q_len, int64_t kv_len,
                                const pbsa_params *params, const cl_int *counts, double *density);

/*
 * Stage 1, the segmented key permutation: writes pi (cl_int [B, Hp, Skv], at element offset
 * pi_offset of the caller's buffer pi) for q, k and params; the tail and short inputs get the
 * identity. workspace as in pbsa_attention() (it holds the scores), or NULL. pi and the
 * workspace are outputs: neither may overlap q, k or the other (see Memory at the top).
 */
PBSA_API int pbsa_permutation(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                              const pbsa_tensor *k, const pbsa_params *params, cl_mem pi,
                              uint64_t pi_offset, cl_mem workspace, cl_event *event);

/*
 * Stage 2, block selection: from q, k and the permutation pi (as written by pbsa_permutation()),
 * writes the final block set of every query block (threshold selection, sink block and the
 * query's own segment) into out. workspace as in pbsa_attention() (it holds the block means), or
 * NULL. out's counts and blocks and the workspace are outputs: none may overlap q, k, pi or
 * another of them (see Memory at the top).
 */
PBSA_API int pbsa_block_selection(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                                  const pbsa_tensor *k, const pbsa_params *params, cl_mem pi,
                                  uint64_t pi_offset, const pbsa_block_list *out, cl_mem workspace,
                                  cl_event *event);

/*
 * Stage 3, block-sparse attention over any block list (ours or a caller's): query block i attends
 * to the keys at permuted positions of its listed blocks, key index pi[position], with the token
 * causal rule pi[position] <= query position when params->causal. pi NULL means the identity
 * (plain block-sparse attention). Uses block_size, causal, gqa_mode and scale of params; counts
 * over nkb and indices outside 0..nkb-1 are the caller's error and are clamped away by the kernel
 * (never read out of bounds); repeated indices count once (see pbsa_block_list). A query row whose
 * blocks hold no visible key gets zeros, and a log-sum-exp of -INFINITY when params->lse is set.
 */
PBSA_API int pbsa_sparse_attention(pbsa_context *ctx, cl_command_queue queue, const pbsa_tensor *q,
                                   const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                                   const pbsa_params *params, cl_mem pi, uint64_t pi_offset,
                                   const pbsa_block_list *blocks, cl_event *event);

/* ---------------------------------------------------------------------------------------------
 * Tier 3: tuning and queries. What the calls run with and why; for tools, tuning and reports. No
 * call needs them.
 *
 * Tuned kernel configurations
 *
 * The flash-attention kernels take a tile configuration (queries and keys per tile, work-group
 * shape, staging chunks, loop unrolling); the NVIDIA tensor-core kernels, where they run, take
 * theirs (warps per work-group, groups of 16 query rows per warp, keys per tile, pipeline
 * stages). A call uses, from the first that has one valid for the device and the call:
 * PBSA_FLASH_CONFIG ("block_m,block_n,wg_rows,wg_cols,kchunk,vchunk[,unroll_qk,unroll_pv]") or,
 * for the tensor-core kernels, PBSA_MMA_CONFIG ("warps,groups,keys,stages"), both for
 * experiments; the tuning file named by PBSA_TUNING_FILE, the user's tuning file of the device
 * ($XDG_CONFIG_HOME/pbsattn/tuning/<device>.txt, else ~/.config/pbsattn/tuning/<device>.txt, as
 * pbsa-tune writes it), the tuning data built into the library, then the library's heuristic.
 * Tuning files and PBSA_* variables are read once, by pbsa_context_create(); a file that is not
 * a readable regular file of at most 1 MiB (a FIFO, a device, a folder), is corrupt, of another
 * device or of an older format is ignored with a warning to the log callback, and none is ever
 * waited on (the path is checked before it is opened, and opened without blocking).
 * PBSA_TUNING=off at context creation ignores all tuning data
 * (heuristic defaults, to compare against tuned runs). Tuning changes speed only, never results.
 * ------------------------------------------------------------------------------------------- */

/* The kernels that take a tuned configuration. New kinds are appended (3 and 4 came with the
 * tunable tensor-core kernels, 6 and 7 with their wgmma variant): existing values keep their
 * meaning. */
typedef enum pbsa_kernel_kind {
    PBSA_KERNEL_DENSE = 0,  /* pbsa_dense_attention() */
    PBSA_KERNEL_SPARSE = 1, /* the block-sparse attention of pbsa_attention() and
                               pbsa_sparse_attention() */
    PBSA_KERNEL_SCORES = 2, /* the permutation scores of pbsa_attention() and pbsa_permutation() */
    PBSA_KERNEL_DENSE_MMA = 3,  /* the tensor-core kernel of pbsa_dense_attention() */
    PBSA_KERNEL_SPARSE_MMA = 4, /* the tensor-core kernel of the block-sparse attention */
    /* Not a kernel: how the permutation scores are computed, clblast=0 by the fused kernels,
     * clblast=1 through CLBlast's GEMM; pbsa-tune times both and keeps the faster (the
     * variable PBSA_SCORE_METHOD overrides it, for experiments). */
    PBSA_KERNEL_SCORES_METHOD = 5,
    /* Hopper's wgmma variant of the tensor-core kernels (pbsa_context_tensor_core_path()): the
     * same parameters as the _MMA kinds (and PBSA_MMA_CONFIG), 4, 8 or 12 warps of one row
     * group, 32- or 64-key tiles, stages 1 to 6 (3: double-buffered tiles; 4: each tile's P.V
     * overlaps the next tile's softmax; 5: the next tile staged through registers; 6: 5 with
     * the warpgroups taking turns, so that one's products overlap another's softmax), head dim
     * 128. */
    PBSA_KERNEL_DENSE_WGMMA = 6,
    PBSA_KERNEL_SPARSE_WGMMA = 7,
} pbsa_kernel_kind;

/* Where a configuration comes from. Of the first six, a higher value takes precedence over a
 * lower one; tensor cores, where they apply, replace the portable kernel and its configuration. */
typedef enum pbsa_config_source {
    PBSA_CONFIG_HEURISTIC = 0,   /* the library's built-in rule (no tuning data for the call) */
    PBSA_CONFIG_BUILTIN = 1,     /* tuning data compiled into the library */
    PBSA_CONFIG_USER_FILE = 2,   /* the user's tuning file of this device */
    PBSA_CONFIG_TUNING_FILE = 3, /* the file named by PBSA_TUNING_FILE */
    PBSA_CONFIG_ENVIRONMENT = 4, /* PBSA_FLASH_CONFIG, or PBSA_MMA_CONFIG for the _MMA and
                                    _WGMMA kinds */
    PBSA_CONFIG_FORCED = 5,      /* tuner only: forced on the context by pbsa-tune */
    /* For PBSA_KERNEL_DENSE and PBSA_KERNEL_SPARSE: the call runs the NVIDIA tensor-core kernel
     * (its configuration's own source: query PBSA_KERNEL_DENSE_MMA or PBSA_KERNEL_SPARSE_MMA). */
    PBSA_CONFIG_TENSOR_CORES = 6,
} pbsa_config_source;

/*
 * Which configuration a call of kernel kind on ctx uses for dtype, head_dim, block_size (the PBS
 * logical block; ignored for the dense kinds) and causal (ignored for PBSA_KERNEL_SCORES), and
 * where it comes from. dtype is that of K and V: a call whose q or o has another dtype runs,
 * and is tuned, as one of its K/V dtype throughout (tuning files key entries by it).
 * description (may be NULL when capacity is 0) receives a NUL-terminated text such as
 * "block_m=64 block_n=64 wg_rows=8 wg_cols=16 kchunk=16 vchunk=16 unroll_qk=16 unroll_pv=16
 * (user tuning file /home/me/.config/pbsattn/tuning/NVIDIA_H100.txt, line 9)", truncated to
 * capacity bytes. source (may be NULL) receives the source. Nothing is compiled or
 * enqueued. This is the configuration a call starts from: where its compiled kernel allows fewer
 * work-items, the call steps down to a smaller one (pbsa_fit_kernel_config() says which).
 * Tensor cores: where dense or sparse attention runs on the tensor-core kernel
 * (pbsa_context_uses_tensor_cores(); f16 and bf16, head dims 64, 80, 96, 112, 128 and 192,
 * sparse blocks 64 and 128, K and V rows assumed 16-byte aligned), PBSA_KERNEL_DENSE and
 * PBSA_KERNEL_SPARSE give the source PBSA_CONFIG_TENSOR_CORES and a text "tensor-core kernel
 * warps=4 groups=2 keys=64 stages=2 (heuristic default); the portable kernel would use
 * block_m=... (...)".
 * PBSA_KERNEL_DENSE_MMA and PBSA_KERNEL_SPARSE_MMA give the tensor-core configuration alone
 * ("warps=4 groups=2 keys=64 stages=2 (heuristic default)") with its own source, for calls that
 * run on it; PBSA_KERNEL_DENSE_WGMMA and PBSA_KERNEL_SPARSE_WGMMA likewise for contexts on the
 * wgmma path (head dim 128), where they run ahead of the _MMA kinds.
 * PBSA_KERNEL_SCORES_METHOD gives "clblast=0" or "clblast=1" and where it comes from
 * (PBSA_CONFIG_ENVIRONMENT: PBSA_SCORE_METHOD).
 * Errors: PBSA_ERROR_NULL_ARGUMENT (ctx NULL, or description NULL with capacity > 0),
 * PBSA_ERROR_INVALID_VALUE (kind unknown, block_size not 16, 32, 64 or 128 for the PBS kernels),
 * PBSA_ERROR_UNSUPPORTED_DTYPE, PBSA_ERROR_UNSUPPORTED_HEAD_DIM, PBSA_ERROR_UNSUPPORTED_DEVICE (no
 * configuration fits the device: the call itself would fail the same way; or, for the _MMA
 * kinds, the call does not run on the tensor-core kernel on ctx: no tensor cores, f32, head dim
 * 256, another block_size, or no configuration fits). On error description receives ""
 * (capacity > 0) and *source is not written.
 * Thread-safe; the answer stays the same for the life of ctx (the variables are read when it is
 * created).
 */
PBSA_API int pbsa_query_kernel_config(const pbsa_context *ctx, pbsa_kernel_kind kind,
                                      pbsa_dtype dtype, int head_dim, int block_size, int causal,
                                      char *description, size_t capacity,
                                      pbsa_config_source *source);

/*
 * The configuration a call of kind (PBSA_KERNEL_DENSE, PBSA_KERNEL_SPARSE or PBSA_KERNEL_SCORES)
 * on ctx runs with, fitted to the compiled kernel. pbsa_query_kernel_config() reports the
 * configuration a call starts from, checked against the device's limits; the kernel built from it
 * may allow fewer work-items per group than the device (CL_KERNEL_WORK_GROUP_SIZE: Rusticl on
 * llvmpipe allows 32 for every kernel), and the call then steps down through the library's
 * smaller configurations until one fits. Here description receives the fitted configuration, its
 * origin and, where it stepped down, from what and why: "block_m=16 block_n=32 wg_rows=4 wg_cols=8
 * ... (heuristic default; stepped down from block_m=32 block_n=32 wg_rows=8 wg_cols=8 ...: kernel
 * dense_attention allows 32 work-items per group)"; source receives the configuration's source,
 * PBSA_CONFIG_HEURISTIC for a stepped-down one, PBSA_CONFIG_TENSOR_CORES for the tensor-core
 * kernels. A configuration forced by PBSA_FLASH_CONFIG, PBSA_MMA_CONFIG or the tuner is never
 * replaced: one that its kernel does not allow fails, naming it.
 * This builds the kernel of each configuration it tries (the sparse kernel as pbsa_attention()
 * runs it), once per context; calls reuse the build and the answer. Nothing is enqueued.
 * pbsa_query_kernel_config(), pbsa_workspace_size() and the argument checks build nothing: a
 * stepped-down configuration of the permutation scores keeps their keys per tile, so the
 * workspace is the same.
 * Errors: those of pbsa_query_kernel_config() (PBSA_ERROR_INVALID_VALUE also for a kind that is
 * not a call's), PBSA_ERROR_BUILD_FAILED (pbsa_context_build_log()), and
 * PBSA_ERROR_UNSUPPORTED_DEVICE when no configuration fits the compiled kernel or a forced one
 * does not: the call itself would fail the same way. On error description receives "" (capacity
 * > 0) and *source is not written.
 * Thread-safe; the answer stays the same for the life of ctx.
 */
PBSA_API int pbsa_fit_kernel_config(pbsa_context *ctx, pbsa_kernel_kind kind, pbsa_dtype dtype,
                                    int head_dim, int block_size, int causal, char *description,
                                    size_t capacity, pbsa_config_source *source);

#ifdef __cplusplus
}
#endif

#endif /* PBSATTN_H */
