/* The derived sizes of one PBS attention call and the layout of its workspace. */
#ifndef PBSA_PBS_PLAN_H
#define PBSA_PBS_PLAN_H

#include "flash_config.h"

/* Regions of the workspace, in 4-byte elements from its start. */
typedef struct pbsa_pbs_layout {
    uint64_t pi;       /* cl_int [B, Hp, Skv] */
    uint64_t scores;   /* float [B, Hp, key_count] */
    uint64_t partials; /* float2 [B, Hq, last_rows, score_tiles] */
    uint64_t stats;    /* float2 [B, Hq, last_rows] */
    uint64_t sink;     /* cl_int [B, Hp] */
    uint64_t q_means;  /* float [B, Hq, nqb, D] */
    uint64_t k_means;  /* float [B, Hp, nkb, D] */
    uint64_t counts;   /* cl_int [B, Hq, nqb] */
    uint64_t blocks;   /* cl_int [B, Hq, nqb, nkb] */
    uint64_t total;
} pbsa_pbs_layout;

typedef struct pbsa_pbs_plan {
    pbsa_params params;
    float scale;
    pbsa_dtype dtype;
    int batch, q_heads, kv_heads, perm_heads, q_len, kv_len, head_dim;
    int block, segment;
    int q_blocks, k_blocks, segments;
    int last_rows; /* rows of the last query block used for the scores */
    int key_count; /* keys of the complete segments */
    bool identity; /* the permutation is the identity */
    bool fallback; /* Skv <= segment: dense attention */
    pbsa_flash_config scores_config; /* tiles of the score kernels */
    pbsa_flash_config sparse_config; /* tiles of the sparse attention kernel */
    int score_tiles;
    int sort_size;   /* power of two >= segment */
    int select_size; /* power of two >= k_blocks */
    pbsa_pbs_layout layout;
} pbsa_pbs_plan;

/* Validates params (NULL: defaults) and the shapes of q and k (v and o too when not NULL), and
 * fills plan. fn names the public function in error messages. */
int pbsa_pbs_plan_make(pbsa_context *ctx, const char *fn, const pbsa_tensor *q,
                       const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                       const pbsa_params *params, pbsa_pbs_plan *plan);

/* The common start of the public PBS calls: checks ctx and queue, clears the calling thread's
 * error and *event (either may be NULL), then makes the plan as pbsa_pbs_plan_make() does. */
int pbsa_pbs_begin(pbsa_context *ctx, const char *fn, cl_command_queue queue, cl_event *event,
                   const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                   const pbsa_tensor *o, const pbsa_params *params, pbsa_pbs_plan *plan);

/* Checks that workspace (not NULL) is a buffer of ctx with room for the plan's layout. */
int pbsa_pbs_check_workspace(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace);

/* Checks that buffer holds count cl_ints from element offset (name goes into messages). */
int pbsa_check_int_buffer(pbsa_context *ctx, const char *fn, const char *name, cl_mem buffer,
                          uint64_t offset, uint64_t count);

/* Chains kernel launches: each waits for the previous one's event (for out-of-order queues). */
typedef struct pbsa_launch_chain {
    cl_command_queue queue;
    cl_event last;
} pbsa_launch_chain;

/* Enqueues kernel (then releases it) after the chain's last event. */
int pbsa_chain_enqueue(pbsa_context *ctx, const char *fn, pbsa_launch_chain *chain,
                       cl_kernel kernel, cl_uint dims, const size_t *global, const size_t *local);
/* Hands the last event to *event (or releases it when event is NULL). */
void pbsa_chain_finish(pbsa_launch_chain *chain, cl_event *event);

/* Sub-buffers of a workspace, one per region of the layout (NULL where unused). */
typedef struct pbsa_pbs_views {
    cl_mem pi, scores, partials, stats, sink, q_means, k_means, counts, blocks;
} pbsa_pbs_views;

/* Creates the sub-buffers of workspace for plan's layout. */
int pbsa_pbs_views_create(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                          cl_mem workspace, pbsa_pbs_views *views);
void pbsa_pbs_views_release(pbsa_pbs_views *views);
/* Views of the caller's workspace after checking its size, or, workspace NULL, of a new one that
 * lives until the views are released and the work using them is done. */
int pbsa_pbs_workspace_views(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace, pbsa_pbs_views *views);

/* Checks that list's buffers hold the counts and blocks of the plan's shapes. */
int pbsa_pbs_check_block_list(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                              const pbsa_block_list *list);

/* Enqueues the stages on chain (internal forms of the public stage calls; arguments checked). */
int pbsa_pbs_enqueue_permutation(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                                 const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                                 uint64_t pi_offset, const pbsa_pbs_views *views,
                                 pbsa_launch_chain *chain);
int pbsa_pbs_enqueue_selection(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                               const pbsa_tensor *q, const pbsa_tensor *k, cl_mem pi,
                               uint64_t pi_offset, const pbsa_block_list *out,
                               const pbsa_pbs_views *views, pbsa_launch_chain *chain);
int pbsa_pbs_enqueue_sparse(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                            const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                            const pbsa_tensor *o, cl_mem pi, uint64_t pi_offset,
                            const pbsa_block_list *blocks, pbsa_launch_chain *chain);

#endif
