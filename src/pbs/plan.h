/* The derived sizes of one PBS attention call and the layout of its workspace. */
#ifndef PBSA_PBS_PLAN_H
#define PBSA_PBS_PLAN_H

#include "launch/dispatch.h"
#include "launch/launch_chain.h"

/* Regions of the workspace, in this order; each starts on a 4 KiB boundary. Regions of a method
 * the plan does not use are empty, so the workspace grows only for the chosen methods. Kernels
 * take the workspace and a region's offset (pbsa_arg_region()). */
typedef enum pbsa_pbs_region {
    /* CLBlast scores, per chunk unit: float [group * last_rows, key_count]. First, at offset 0:
     * CLBlast (1.5.3 to 1.7.0) ignores a matrix's offset in its strided-batched GEMM when the
     * matrix needs no temporary copy. */
    PBSA_REGION_LOGITS,
    PBSA_REGION_PI,       /* cl_int [B, Hp, Skv] */
    PBSA_REGION_SCORES,   /* float [B, Hp, key_count] */
    PBSA_REGION_PARTIALS, /* fused scores: float2 [B, Hq, last_rows, score_tiles] */
    PBSA_REGION_STATS,    /* float2 [B, Hq, last_rows] */
    /* CLBlast scores, per chunk unit, rows padded by PBSA_GEMM_LD_PAD elements so that CLBlast
     * copies these two matrices, honouring their offsets: */
    PBSA_REGION_GEMM_Q,   /* float [D, group * last_rows + 1] */
    PBSA_REGION_GEMM_K,   /* float [D, key_count + 1] */
    PBSA_REGION_SINK,     /* cl_int [B, Hp] */
    PBSA_REGION_Q_MEANS,  /* float [B, Hq, nqb, D] */
    PBSA_REGION_K_MEANS,  /* float [B, Hp, D, nkb] */
    PBSA_REGION_K_PERM,   /* materialised K' = K[pi]: K's dtype [B, Hp, Skv, D] */
    PBSA_REGION_V_PERM,   /* materialised V' = V[pi]: V's dtype [B, Hp, Skv, D] */
    PBSA_REGION_COUNTS,   /* cl_int [B, Hq, nqb] */
    PBSA_REGION_BLOCKS,   /* cl_int [B, Hq, nqb, nkb] */
    PBSA_REGION_COUNT
} pbsa_pbs_region;

/* Padding of the rows of the GEMM_Q and GEMM_K regions, in elements. */
enum { PBSA_GEMM_LD_PAD = 1 };

typedef struct pbsa_pbs_layout {
    uint64_t start[PBSA_REGION_COUNT]; /* in 4-byte elements from the workspace's start */
    uint64_t count[PBSA_REGION_COUNT]; /* the region's size, in 4-byte elements */
    uint64_t total;
} pbsa_pbs_layout;

typedef struct pbsa_pbs_plan {
    pbsa_params params;
    pbsa_sequences seqs; /* batch, q_len and kv_len below are its (the longest sequence's) */
    float scale;
    pbsa_dtypes dtypes; /* o = q in the stage calls that have no o */
    int batch, q_heads, kv_heads, perm_heads, q_len, kv_len, head_dim;
    int block, segment;
    int q_blocks, k_blocks, segments;
    int last_rows; /* rows of the last query block used for the scores */
    int key_count; /* keys of the complete segments */
    bool identity; /* the permutation is the identity */
    bool fallback; /* Skv <= segment: dense attention */
    pbsa_dispatch scores;        /* family and tiles of the fused score kernels */
    pbsa_dispatch scores_reduce; /* the portable scores, whose program holds their reduction */
    pbsa_dispatch sparse;        /* family and tiles of the sparse attention, reading k and v */
    int score_tiles;             /* key tiles of the fused score kernels */
    int sort_size;   /* power of two >= segment */
    int select_size; /* power of two >= k_blocks */
    int select_wg;   /* work-group size of the selection kernel */
    pbsa_score_method score_method; /* FUSED or CLBLAST */
    pbsa_kv_method kv_method;       /* GATHER or MATERIALISED (pbsa_attention() only) */
    /* CLBlast scores: KV rows (unit = batch x KV head) per chunk, so the chunk's regions stay
     * within 256 MiB (at least one unit, however large), and the kernels' work-group sizes.
     * CLBlast also allocates, at each call, temporary copies of qt and kt (and of the logits
     * when the sizes do not fit its tiles). */
    int gemm_units, gemm_tile, gemm_stats_wg;
    pbsa_pbs_layout layout;
} pbsa_pbs_plan;

/* Forces the methods of later plans on ctx (NULL or zero members: automatic, that is the
 * variables PBSA_SCORE_METHOD = fused | clblast and PBSA_KV_METHOD = gather | materialised as
 * read when ctx was created, then for the scores the tuned choice (pbsa_dispatch_score_method()),
 * else fused and gather). For tests and experiments; not to be changed while other threads use
 * ctx. */
void pbsa_pbs_force_methods(pbsa_context *ctx, const pbsa_pbs_methods *methods);

/* Validates params (NULL: defaults) and the shapes of q and k (v and o too when not NULL), and
 * fills plan, with the dispatch decisions. fn names the public function in error messages; mode
 * says whether buffers may be missing (a support query). */
int pbsa_pbs_plan_make(pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                       const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                       const pbsa_tensor *o, const pbsa_params *params, pbsa_pbs_plan *plan);

/* The common start of the public PBS calls and of pbsa_query_attention_support(): checks ctx and
 * (a call) queue, clears the calling thread's error and *event (either may be NULL), requires v
 * and o when the call reads values, then makes the plan as pbsa_pbs_plan_make() does. */
int pbsa_pbs_begin(pbsa_context *ctx, const char *fn, pbsa_check_mode mode, cl_command_queue queue,
                   cl_event *event, const pbsa_tensor *q, const pbsa_tensor *k, bool reads_values,
                   const pbsa_tensor *v, const pbsa_tensor *o, const pbsa_params *params,
                   pbsa_pbs_plan *plan);

/* Checks that workspace (not NULL) is a buffer of ctx with room for the plan's layout. */
int pbsa_pbs_check_workspace(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace);


/* The workspace of a call, retained (release it with clReleaseMemObject()): the caller's after
 * checking its size or, workspace NULL, a new one, which the work enqueued on it keeps alive.
 * Kernels reach its regions through the whole buffer and the region's offset, never through
 * sub-buffers: a sub-buffer made anew for every call costs time in proportion to its size when
 * first used on some drivers (NVIDIA's: about 10 ms for 32 MiB on an H100). */
int pbsa_pbs_workspace_acquire(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                               cl_mem workspace, cl_mem *out);
/* Sets two kernel arguments: the workspace and the offset of region in it, in 4-byte words. */
void pbsa_arg_region(pbsa_kernel_args *args, const pbsa_pbs_plan *plan, cl_mem workspace,
                     pbsa_pbs_region region);

/* Checks that pi (at pi_offset) holds the permutation of the plan's shapes. */
int pbsa_pbs_check_pi(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan, cl_mem pi,
                      uint64_t pi_offset);
/* Checks that list's buffers hold the counts and blocks of the plan's shapes. */
int pbsa_pbs_check_block_list(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                              const pbsa_block_list *list);

/* The stages, appended to chain as prepared steps (internal forms of the public stage calls;
 * arguments checked). Nothing is enqueued until pbsa_chain_enqueue(). */
int pbsa_pbs_prepare_permutation(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                 const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                                 uint64_t pi_offset, cl_mem workspace,
                                 pbsa_launch_chain *chain);
/* The scores of the permutation through CLBlast (src/pbs/scores_clblast.c). */
int pbsa_pbs_prepare_scores_clblast(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                    const pbsa_tensor *q, const pbsa_tensor *k,
                                    cl_mem workspace, pbsa_launch_chain *chain);
int pbsa_pbs_prepare_selection(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                               const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                               uint64_t pi_offset, const pbsa_block_list *out,
                               cl_mem workspace, pbsa_launch_chain *chain);
/* Materialises K' = K[pi] and V' = V[pi] into the workspace (src/pbs/gather.c) and describes
 * them in *k_perm and *v_perm ([B, Hp, Skv, D], K and V's dtype, in the workspace buffer). */
int pbsa_pbs_prepare_gather(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                            const pbsa_tensor *k, const pbsa_tensor *v, cl_mem pi,
                            uint64_t pi_offset, cl_mem workspace,
                            pbsa_tensor *k_perm, pbsa_tensor *v_perm, pbsa_launch_chain *chain);
/* The sparse attention. materialised: k and v are K' and V' of pbsa_pbs_prepare_gather(), read
 * at the permuted position, with pi giving the key index for the causal test; otherwise k and v
 * are read through pi (NULL: the identity). */
int pbsa_pbs_prepare_sparse(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                            const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                            const pbsa_tensor *o, cl_mem pi, uint64_t pi_offset,
                            const pbsa_block_list *blocks, bool materialised,
                            pbsa_launch_chain *chain);

#endif
