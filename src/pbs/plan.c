/* PBS parameters, derived sizes and workspace layout. */
#include "pbs/plan.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

pbsa_params pbsa_params_default(void)
{
    pbsa_params p = {.struct_size = sizeof p, .block_size = 128, .segment_size = 256,
                     .threshold = 0.9f, .causal = 1, .force_first_block = 1,
                     .gqa_mode = PBSA_GQA_PER_QUERY_HEAD, .scale = 0.0f};
    return p;
}

static int check_params(pbsa_context *ctx, const char *fn, const pbsa_params *p)
{
    if (p->struct_size != 0 && p->struct_size != sizeof *p)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->struct_size is %zu, expected %zu", fn, p->struct_size,
                         sizeof *p);
    int b = p->block_size;
    if (b != 16 && b != 32 && b != 64 && b != 128)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->block_size = %d is not supported (16, 32, 64 or 128)", fn, b);
    if (p->segment_size <= 0 || p->segment_size % b != 0)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->segment_size = %d must be a positive multiple of "
                         "params->block_size = %d",
                         fn, p->segment_size, b);
    /* Segments are sorted in local memory: far below this bound on any device. */
    if (p->segment_size > (1 << 20))
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->segment_size = %d exceeds %d", fn, p->segment_size, 1 << 20);
    if (!(p->threshold > 0.0f) || isnan(p->threshold))
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->threshold = %g must be > 0 (>= 1 keeps every block)", fn,
                         (double)p->threshold);
    if (p->gqa_mode != PBSA_GQA_PER_QUERY_HEAD && p->gqa_mode != PBSA_GQA_SHARED_PER_KV_GROUP)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: params->gqa_mode = %d is not valid",
                         fn, (int)p->gqa_mode);
    if (!isfinite(p->scale) || p->scale < 0.0f)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: params->scale = %g must be finite and >= 0 (0: 1/sqrt(D))", fn,
                         (double)p->scale);
    return PBSA_SUCCESS;
}

static int64_t next_power_of_two(int64_t x)
{
    int64_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

/* Default workspace share of one chunk of the CLBlast scores (transposed Q and K, logits). */
#define GEMM_CHUNK_BYTES ((uint64_t)256 << 20)

/* a * b * c, false on overflow. */
static bool mul3(uint64_t a, uint64_t b, uint64_t c, uint64_t *out)
{
    return !__builtin_mul_overflow(a, b, out) && !__builtin_mul_overflow(*out, c, out);
}

/* Element counts of the regions (4-byte elements), then their starts: each region starts on a
 * 4 KiB boundary (aligned for any vector load). False on overflow. */
static bool make_layout(pbsa_pbs_plan *p)
{
    const uint64_t b = (uint64_t)p->batch, d = (uint64_t)p->head_dim, L = (uint64_t)p->last_rows;
    const uint64_t perm_rows = b * (uint64_t)p->perm_heads, q_rows = b * (uint64_t)p->q_heads;
    const uint64_t block_rows = q_rows * (uint64_t)p->q_blocks;
    const uint64_t keys = (uint64_t)p->key_count;
    const uint64_t unit_rows = L * (uint64_t)(p->q_heads / p->kv_heads);
    const uint64_t units = p->score_method == PBSA_SCORE_CLBLAST ? (uint64_t)p->gemm_units : 0;
    const uint64_t tiles = p->score_method == PBSA_SCORE_FUSED ? (uint64_t)p->score_tiles : 0;
    const uint64_t kv_copies =
        p->kv_method == PBSA_KV_MATERIALISED ? pbsa_dtype_size(p->dtypes.kv) : 0;
    uint64_t *count = p->layout.count;
    /* Factors are below 2^31, so a product of two fits; longer products are checked. */
    bool ok = mul3(q_rows, L, 2 * tiles, &count[PBSA_REGION_PARTIALS]) &&
              mul3(units, d, unit_rows + PBSA_GEMM_LD_PAD, &count[PBSA_REGION_GEMM_Q]) &&
              mul3(units, d, keys + PBSA_GEMM_LD_PAD, &count[PBSA_REGION_GEMM_K]) &&
              mul3(units, unit_rows, keys, &count[PBSA_REGION_LOGITS]) &&
              mul3(perm_rows, (uint64_t)p->k_blocks, d, &count[PBSA_REGION_K_MEANS]) &&
              mul3(block_rows, d, 1, &count[PBSA_REGION_Q_MEANS]) &&
              mul3(perm_rows * (uint64_t)p->kv_len, d, kv_copies, &count[PBSA_REGION_K_PERM]) &&
              mul3(block_rows, (uint64_t)p->k_blocks, 1, &count[PBSA_REGION_BLOCKS]);
    if (!ok)
        return false;
    count[PBSA_REGION_PI] = perm_rows * (uint64_t)p->kv_len;
    count[PBSA_REGION_SCORES] = perm_rows * keys;
    count[PBSA_REGION_STATS] = q_rows * L * 2;
    count[PBSA_REGION_SINK] = perm_rows;
    count[PBSA_REGION_K_PERM] /= 4; /* bytes to 4-byte elements (D is even) */
    count[PBSA_REGION_V_PERM] = count[PBSA_REGION_K_PERM];
    count[PBSA_REGION_COUNTS] = block_rows;
    uint64_t cursor = 0;
    for (int r = 0; r < PBSA_REGION_COUNT; r++) {
        p->layout.start[r] = cursor;
        if (__builtin_add_overflow(cursor, count[r], &cursor) ||
            __builtin_add_overflow(cursor, 1023, &cursor))
            return false;
        cursor &= ~(uint64_t)1023;
    }
    p->layout.total = cursor;
    return cursor < UINT64_MAX / 4;
}

int pbsa_pbs_check_pi(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan, cl_mem pi,
                      uint64_t pi_offset)
{
    return pbsa_check_int_buffer(ctx, fn, "pi", pi, pi_offset,
                                 plan->layout.count[PBSA_REGION_PI]);
}

void pbsa_pbs_force_methods(pbsa_context *ctx, const pbsa_pbs_methods *methods)
{
    ctx->pbs_methods = methods ? *methods : (pbsa_pbs_methods){0};
}

/* The method forced on ctx, else the one the environment named, else the default (1). */
static int method_of(int forced, int environment)
{
    return forced != 0 ? forced : environment != 0 ? environment : 1;
}

/* Chunk size and work-group sizes of the CLBlast scores. */
static void plan_gemm(const pbsa_context *ctx, pbsa_pbs_plan *p)
{
    const uint64_t d = (uint64_t)p->head_dim, keys = (uint64_t)p->key_count;
    const uint64_t rows = (uint64_t)p->last_rows * (uint64_t)(p->q_heads / p->kv_heads);
    const uint64_t pad = PBSA_GEMM_LD_PAD;
    const uint64_t unit_bytes = 4 * (d * (rows + pad) + d * (keys + pad) + rows * keys);
    const uint64_t units = (uint64_t)p->batch * (uint64_t)p->kv_heads;
    uint64_t cap = ctx->pbs_methods.gemm_chunk_bytes ? ctx->pbs_methods.gemm_chunk_bytes
                                                     : GEMM_CHUNK_BYTES;
    uint64_t per_chunk = cap / unit_bytes;
    p->gemm_units = (int)(per_chunk < 1 ? 1 : per_chunk > units ? units : per_chunk);
    p->gemm_tile = ctx->info.max_work_group_size >= 256 ? 16 : 8;
    p->gemm_stats_wg = 256;
    while ((size_t)p->gemm_stats_wg > ctx->info.max_work_group_size)
        p->gemm_stats_wg /= 2;
}

/* Whether a sequence of kv_len keys gets the identity permutation: no complete segment, or
 * one segment and nothing else. */
static bool sequence_identity(const pbsa_pbs_plan *p, int kv_len)
{
    const int segments = kv_len / p->segment;
    return segments == 0 || (segments == 1 && kv_len % p->segment == 0);
}

/* Chunked prefill, sequence by sequence: its queries start on a block of its keys. */
static int check_sequences(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *p)
{
    for (int b = 0; b < p->batch; b++) {
        const int q_len = pbsa_sequence_q_len(&p->seqs, b);
        const int kv_len = pbsa_sequence_kv_len(&p->seqs, b);
        if ((kv_len - q_len) % p->block == 0)
            continue;
        if (p->seqs.varlen)
            return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                             "%s: varlen: sequence %d has %d keys and %d queries; the difference "
                             "must be a multiple of params->block_size = %d (chunked prefill)",
                             fn, b, kv_len, q_len, p->block);
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: k.seq - q.seq = %d must be a multiple of params->block_size = %d "
                         "(chunked prefill)",
                         fn, kv_len - q_len, p->block);
    }
    return PBSA_SUCCESS;
}

/* Variable-length and paged calls run the fused scores and read K and V through pi: CLBlast's
 * GEMM and the materialised copies take one length per batch. A tuned choice of CLBlast gives
 * way to the fused kernels; a method forced by a variable or on the context is refused. */
static int check_sequence_methods(pbsa_context *ctx, const char *fn, pbsa_pbs_plan *p)
{
    if (!p->seqs.varlen)
        return PBSA_SUCCESS;
    if (p->kv_method == PBSA_KV_MATERIALISED)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: the materialised K/V method (PBSA_KV_METHOD) does not take "
                         "variable-length or paged calls",
                         fn);
    pbsa_config_source source;
    pbsa_score_method method =
        pbsa_dispatch_score_method(ctx, p->dtypes.kv, p->head_dim, p->block, &source, NULL, 0);
    if (method == PBSA_SCORE_CLBLAST &&
        (source == PBSA_CONFIG_FORCED || source == PBSA_CONFIG_ENVIRONMENT))
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: the CLBlast scores (PBSA_SCORE_METHOD) do not take variable-length "
                         "or paged calls",
                         fn);
    p->score_method = PBSA_SCORE_FUSED;
    return PBSA_SUCCESS;
}

int pbsa_pbs_plan_make(pbsa_context *ctx, const char *fn, pbsa_check_mode mode,
                       const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                       const pbsa_tensor *o, const pbsa_params *params, pbsa_pbs_plan *plan)
{
    pbsa_params p = params ? *params : pbsa_params_default();
    int status = check_params(ctx, fn, &p);
    if (status != PBSA_SUCCESS)
        return status;
    /* The stage calls before the attention have no v and o. */
    pbsa_pbs_plan pl = {0};
    status = v || o ? pbsa_check_attention_tensors(ctx, fn, mode, q, k, v, o, p.varlen, p.paged_kv,
                                                   &pl.seqs)
                    : pbsa_check_query_key(ctx, fn, mode, q, k, p.varlen, p.paged_kv, &pl.seqs);
    if (status != PBSA_SUCCESS)
        return status;

    pl.params = p;
    pl.scale = p.scale > 0.0f ? p.scale : 1.0f / sqrtf((float)q->head_dim);
    pl.dtypes = (pbsa_dtypes){q->dtype, k->dtype, o ? o->dtype : q->dtype};
    pl.batch = pl.seqs.batch;
    pl.q_heads = (int)q->heads;
    pl.kv_heads = (int)k->heads;
    pl.perm_heads = p.gqa_mode == PBSA_GQA_PER_QUERY_HEAD ? pl.q_heads : pl.kv_heads;
    pl.q_len = pl.seqs.q_len;
    pl.kv_len = pl.seqs.kv_len;
    pl.head_dim = (int)q->head_dim;
    pl.block = p.block_size;
    pl.segment = p.segment_size;
    status = check_sequences(ctx, fn, &pl);
    if (status != PBSA_SUCCESS)
        return status;
    if ((uint64_t)pl.batch * (uint64_t)q->heads > INT32_MAX)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: %s x q.heads exceeds %d", fn,
                         p.varlen ? "varlen->batch" : "q.batch", INT32_MAX);
    /* Sequence lengths reach INT32_MAX: round up in 64 bits. */
    pl.q_blocks = (int)(((int64_t)pl.q_len + pl.block - 1) / pl.block);
    pl.k_blocks = (int)(((int64_t)pl.kv_len + pl.block - 1) / pl.block);
    pl.segments = pl.kv_len / pl.segment;
    pl.fallback = pl.kv_len <= pl.segment;
    pl.identity = true;
    for (int b = 0; b < pl.batch && pl.identity; b++)
        pl.identity = sequence_identity(&pl, pbsa_sequence_kv_len(&pl.seqs, b));
    pl.last_rows = pl.q_len < pl.block ? pl.q_len : pl.block;
    pl.key_count = pl.segments * pl.segment;
    /* Q and K feed the scores, K and V (v NULL: K alone) the sparse attention. */
    const int qk_align = pbsa_row_alignment(q, k), kv_align = pbsa_row_alignment(k, v);
    bool found = pbsa_dispatch_pick(ctx, PBSA_ROLE_SCORES, &pl.dtypes, pl.head_dim, pl.block, 0,
                                    qk_align, &pl.scores);
    pl.scores_reduce = pl.scores;
    if (found && pl.scores.family != &pbsa_portable_family)
        found =
            pbsa_dispatch_family(ctx, &pbsa_portable_family, PBSA_ROLE_SCORES, &pl.dtypes,
                                 pl.head_dim, pl.block, 0, qk_align, &pl.scores_reduce, NULL, 0);
    if (!found || !pbsa_dispatch_pick(ctx, PBSA_ROLE_SPARSE, &pl.dtypes, pl.head_dim, pl.block,
                                      p.causal, kv_align, &pl.sparse))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: the device's local memory or work-group size is too small for "
                         "head_dim %d with block_size %d",
                         fn, pl.head_dim, pl.block);
    const int score_keys = pl.scores.family->tile_keys(&pl.scores.config);
    pl.score_tiles = (int)(((int64_t)pl.key_count + score_keys - 1) / score_keys);
    const int64_t sort_size = next_power_of_two(pl.segment);
    const int64_t select_size = next_power_of_two(pl.k_blocks);
    /* At most 16 key blocks per work-item (its registers) where the device allows. */
    pl.select_wg = 64;
    while (pl.select_wg * (int64_t)16 < select_size &&
           2 * (size_t)pl.select_wg <= ctx->info.max_work_group_size)
        pl.select_wg *= 2;
    uint64_t sort_bytes = 8 * (uint64_t)sort_size;
    /* pbs_select_blocks: a byte per slot (at least one per work-item); per work-item a float,
     * a ulong and an int, and an eighth of the first two for the partials; the query mean. */
    int64_t select_slots = select_size > pl.select_wg ? select_size : pl.select_wg;
    uint64_t select_bytes =
        (uint64_t)select_slots + 18 * (uint64_t)pl.select_wg + 4 * (uint64_t)pl.head_dim;
    if (sort_bytes > ctx->info.local_mem_bytes)
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: params->segment_size = %d needs %" PRIu64
                         " bytes of local memory to sort; the device has %llu",
                         fn, pl.segment, sort_bytes, (unsigned long long)ctx->info.local_mem_bytes);
    if (select_bytes > ctx->info.local_mem_bytes)
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: k.seq = %d gives %d key blocks, more than the device's local memory "
                         "can select over; use a larger params->block_size",
                         fn, pl.kv_len, pl.k_blocks);
    /* Both fit in local memory, so in an int. */
    pl.sort_size = (int)sort_size;
    pl.select_size = (int)select_size;
    pl.score_method =
        pbsa_dispatch_score_method(ctx, pl.dtypes.kv, pl.head_dim, pl.block, NULL, NULL, 0);
    pl.kv_method = (pbsa_kv_method)method_of(ctx->pbs_methods.kv, ctx->env.kv_method);
    status = check_sequence_methods(ctx, fn, &pl);
    if (status != PBSA_SUCCESS)
        return status;
    if (pl.identity)
        pl.score_method = PBSA_SCORE_FUSED; /* no scores: neither method runs */
    if (pl.score_method == PBSA_SCORE_CLBLAST)
        plan_gemm(ctx, &pl);
    if (!make_layout(&pl))
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW, "%s: the workspace size overflows", fn);
    *plan = pl;
    return PBSA_SUCCESS;
}

int pbsa_pbs_check_workspace(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace)
{
    return pbsa_check_int_buffer(ctx, fn, "workspace", workspace, 0, plan->layout.total);
}

void pbsa_arg_region(pbsa_kernel_args *args, const pbsa_pbs_plan *plan, cl_mem workspace,
                     pbsa_pbs_region region)
{
    pbsa_arg_mem(args, workspace);
    pbsa_arg_u64(args, plan->layout.start[region]);
}

int pbsa_pbs_workspace_acquire(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                               cl_mem workspace, cl_mem *out)
{
    *out = NULL;
    if (workspace) {
        int status = pbsa_pbs_check_workspace(ctx, fn, plan, workspace);
        if (status != PBSA_SUCCESS)
            return status;
        clRetainMemObject(workspace);
        *out = workspace;
        return PBSA_SUCCESS;
    }
    uint64_t bytes = plan->layout.total * 4;
    if (bytes > ctx->info.max_alloc_bytes)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: the workspace needs %llu bytes, more than the device's largest "
                         "buffer (%llu)",
                         fn, (unsigned long long)bytes,
                         (unsigned long long)ctx->info.max_alloc_bytes);
    cl_int err;
    *out = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, (size_t)bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: cannot allocate a %llu-byte workspace (OpenCL error %d)",
                         fn, (unsigned long long)bytes, err);
    return PBSA_SUCCESS;
}

int pbsa_pbs_begin(pbsa_context *ctx, const char *fn, pbsa_check_mode mode, cl_command_queue queue,
                   cl_event *event, const pbsa_tensor *q, const pbsa_tensor *k, bool reads_values,
                   const pbsa_tensor *v, const pbsa_tensor *o, const pbsa_params *params,
                   pbsa_pbs_plan *plan)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    if (reads_values && (!v || !o))
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn, v ? "o" : "v");
    int status = mode == PBSA_CHECK_CALL ? pbsa_check_queue(ctx, fn, queue) : PBSA_SUCCESS;
    return status == PBSA_SUCCESS ? pbsa_pbs_plan_make(ctx, fn, mode, q, k, v, o, params, plan)
                                  : status;
}
