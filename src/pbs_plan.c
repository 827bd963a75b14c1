/* PBS parameters, derived sizes and workspace layout. */
#include "pbs_plan.h"

#include <inttypes.h>
#include <math.h>

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

static int next_power_of_two(int x)
{
    int p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

/* Appends a region of count elements; regions start on 4 KiB boundaries, beyond any device's
 * sub-buffer alignment (CL_DEVICE_MEM_BASE_ADDR_ALIGN). False on overflow. */
static bool add_region(uint64_t *cursor, uint64_t *region, uint64_t count)
{
    *region = *cursor;
    uint64_t end;
    if (__builtin_add_overflow(*cursor, count, &end) || __builtin_add_overflow(end, 1023, &end))
        return false;
    *cursor = end & ~(uint64_t)1023;
    return true;
}

static bool make_layout(pbsa_pbs_plan *p)
{
    uint64_t b = (uint64_t)p->batch, d = (uint64_t)p->head_dim;
    uint64_t perm_rows = b * (uint64_t)p->perm_heads, q_rows = b * (uint64_t)p->q_heads;
    uint64_t block_rows = q_rows * (uint64_t)p->q_blocks;
    uint64_t cursor = 0;
    pbsa_pbs_layout *l = &p->layout;
    /* All factors are below 2^31, so each product of two fits; three-way products are checked. */
    uint64_t blocks_count, partial_count, kbar_count, qbar_count;
    if (__builtin_mul_overflow(block_rows, (uint64_t)p->k_blocks, &blocks_count) ||
        __builtin_mul_overflow(q_rows * (uint64_t)p->last_rows, 2 * (uint64_t)p->score_tiles,
                               &partial_count) ||
        __builtin_mul_overflow(perm_rows * (uint64_t)p->k_blocks, d, &kbar_count) ||
        __builtin_mul_overflow(block_rows, d, &qbar_count))
        return false;
    return add_region(&cursor, &l->pi, perm_rows * (uint64_t)p->kv_len) &&
           add_region(&cursor, &l->scores, perm_rows * (uint64_t)p->key_count) &&
           add_region(&cursor, &l->partials, partial_count) &&
           add_region(&cursor, &l->stats, q_rows * (uint64_t)p->last_rows * 2) &&
           add_region(&cursor, &l->sink, perm_rows) &&
           add_region(&cursor, &l->q_means, qbar_count) &&
           add_region(&cursor, &l->k_means, kbar_count) &&
           add_region(&cursor, &l->counts, block_rows) &&
           add_region(&cursor, &l->blocks, blocks_count) &&
           (l->total = cursor, cursor < (UINT64_MAX / 4));
}

int pbsa_pbs_plan_make(pbsa_context *ctx, const char *fn, const pbsa_tensor *q,
                       const pbsa_tensor *k, const pbsa_tensor *v, const pbsa_tensor *o,
                       const pbsa_params *params, pbsa_pbs_plan *plan)
{
    pbsa_params p = params ? *params : pbsa_params_default();
    int status = check_params(ctx, fn, &p);
    if (status != PBSA_SUCCESS)
        return status;
    /* The stage calls before the attention have no v and o. */
    status = v || o ? pbsa_check_attention_tensors(ctx, fn, q, k, v, o)
                    : pbsa_check_query_key(ctx, fn, q, k);
    if (status != PBSA_SUCCESS)
        return status;

    pbsa_pbs_plan pl = {0};
    pl.params = p;
    pl.scale = p.scale > 0.0f ? p.scale : 1.0f / sqrtf((float)q->head_dim);
    pl.dtype = q->dtype;
    pl.batch = (int)q->batch;
    pl.q_heads = (int)q->heads;
    pl.kv_heads = (int)k->heads;
    pl.perm_heads = p.gqa_mode == PBSA_GQA_PER_QUERY_HEAD ? pl.q_heads : pl.kv_heads;
    pl.q_len = (int)q->seq;
    pl.kv_len = (int)k->seq;
    pl.head_dim = (int)q->head_dim;
    pl.block = p.block_size;
    pl.segment = p.segment_size;
    if ((pl.kv_len - pl.q_len) % pl.block != 0)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: k.seq - q.seq = %d must be a multiple of params->block_size = %d "
                         "(chunked prefill)",
                         fn, pl.kv_len - pl.q_len, pl.block);
    if ((uint64_t)q->batch * (uint64_t)q->heads > INT32_MAX)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: q.batch x q.heads exceeds %d", fn,
                         INT32_MAX);
    pl.q_blocks = (pl.q_len + pl.block - 1) / pl.block;
    pl.k_blocks = (pl.kv_len + pl.block - 1) / pl.block;
    pl.segments = pl.kv_len / pl.segment;
    pl.fallback = pl.kv_len <= pl.segment;
    pl.identity = pl.segments == 0 || (pl.segments == 1 && pl.kv_len % pl.segment == 0);
    pl.last_rows = pl.q_len < pl.block ? pl.q_len : pl.block;
    pl.key_count = pl.segments * pl.segment;
    pl.scores_config = pbsa_flash_config_default(&ctx->info, pl.head_dim, 0);
    pl.sparse_config = pbsa_flash_config_default(&ctx->info, pl.head_dim, pl.block);
    if (!pbsa_flash_config_valid(&pl.scores_config, pl.head_dim, &ctx->info) ||
        !pbsa_flash_config_valid(&pl.sparse_config, pl.head_dim, &ctx->info))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: the device's local memory or work-group size is too small for "
                         "head_dim %d with block_size %d",
                         fn, pl.head_dim, pl.block);
    pl.score_tiles = (pl.key_count + pl.scores_config.block_n - 1) / pl.scores_config.block_n;
    pl.sort_size = next_power_of_two(pl.segment);
    pl.select_size = next_power_of_two(pl.k_blocks);
    uint64_t sort_bytes = 8 * (uint64_t)pl.sort_size;
    uint64_t select_bytes = 16 * (uint64_t)pl.select_size + 4 * 256 + 4 * (uint64_t)pl.head_dim;
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
    if (!make_layout(&pl))
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW, "%s: the workspace size overflows", fn);
    *plan = pl;
    return PBSA_SUCCESS;
}

int pbsa_check_int_buffer(pbsa_context *ctx, const char *fn, const char *name, cl_mem buffer,
                          uint64_t offset, uint64_t count)
{
    if (!buffer)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn, name);
    cl_context owner = NULL;
    size_t size = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: %s is not a valid cl_mem (OpenCL error %d)", fn, name, err);
    if (owner != ctx->cl_ctx)
        return pbsa_fail(ctx, PBSA_ERROR_WRONG_DEVICE, "%s: %s belongs to another OpenCL context",
                         fn, name);
    uint64_t end;
    if (__builtin_add_overflow(offset, count, &end) || end > UINT64_MAX / 4)
        return pbsa_fail(ctx, PBSA_ERROR_SIZE_OVERFLOW, "%s: %s offset + size overflows", fn, name);
    if (end * 4 > size)
        return pbsa_fail(ctx, PBSA_ERROR_BUFFER_TOO_SMALL,
                         "%s: %s needs %" PRIu64 " bytes but has %zu", fn, name, end * 4, size);
    return PBSA_SUCCESS;
}

int pbsa_pbs_check_workspace(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace)
{
    return pbsa_check_int_buffer(ctx, fn, "workspace", workspace, 0, plan->layout.total);
}

static cl_mem region(cl_mem workspace, uint64_t start, uint64_t end, cl_int *err)
{
    if (*err != CL_SUCCESS)
        return NULL;
    cl_buffer_region r = {(size_t)start * 4, (size_t)(end - start) * 4};
    if (r.size == 0)
        r.size = 4; /* an empty region still needs a valid buffer to bind */
    return clCreateSubBuffer(workspace, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &r, err);
}

int pbsa_pbs_views_create(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                          cl_mem workspace, pbsa_pbs_views *views)
{
    const pbsa_pbs_layout *l = &plan->layout;
    cl_int err = CL_SUCCESS;
    pbsa_pbs_views v;
    v.pi = region(workspace, l->pi, l->scores, &err);
    v.scores = region(workspace, l->scores, l->partials, &err);
    v.partials = region(workspace, l->partials, l->stats, &err);
    v.stats = region(workspace, l->stats, l->sink, &err);
    v.sink = region(workspace, l->sink, l->q_means, &err);
    v.q_means = region(workspace, l->q_means, l->k_means, &err);
    v.k_means = region(workspace, l->k_means, l->counts, &err);
    v.counts = region(workspace, l->counts, l->blocks, &err);
    v.blocks = region(workspace, l->blocks, l->total, &err);
    *views = v;
    if (err != CL_SUCCESS) {
        pbsa_pbs_views_release(views);
        return pbsa_fail(ctx, err, "%s: cannot create workspace sub-buffers (OpenCL error %d)", fn,
                         err);
    }
    return PBSA_SUCCESS;
}

void pbsa_pbs_views_release(pbsa_pbs_views *views)
{
    cl_mem *all[] = {&views->pi, &views->scores, &views->partials, &views->stats, &views->sink,
                     &views->q_means, &views->k_means, &views->counts, &views->blocks};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (*all[i])
            clReleaseMemObject(*all[i]);
        *all[i] = NULL;
    }
}

int pbsa_pbs_workspace_views(pbsa_context *ctx, const char *fn, const pbsa_pbs_plan *plan,
                             cl_mem workspace, pbsa_pbs_views *views)
{
    if (workspace) {
        int status = pbsa_pbs_check_workspace(ctx, fn, plan, workspace);
        return status == PBSA_SUCCESS ? pbsa_pbs_views_create(ctx, fn, plan, workspace, views)
                                      : status;
    }
    uint64_t bytes = plan->layout.total * 4;
    if (bytes > ctx->info.max_alloc_bytes)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: the workspace needs %llu bytes, more than the device's largest "
                         "buffer (%llu)",
                         fn, (unsigned long long)bytes, (unsigned long long)ctx->info.max_alloc_bytes);
    cl_int err;
    cl_mem own = clCreateBuffer(ctx->cl_ctx, CL_MEM_READ_WRITE, (size_t)bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "%s: cannot allocate a %llu-byte workspace (OpenCL error %d)",
                         fn, (unsigned long long)bytes, err);
    /* The sub-buffers keep the storage alive until they and the work using them are done. */
    int status = pbsa_pbs_views_create(ctx, fn, plan, own, views);
    clReleaseMemObject(own);
    return status;
}

int pbsa_pbs_begin(pbsa_context *ctx, const char *fn, cl_command_queue queue, cl_event *event,
                   const pbsa_tensor *q, const pbsa_tensor *k, const pbsa_tensor *v,
                   const pbsa_tensor *o, const pbsa_params *params, pbsa_pbs_plan *plan)
{
    if (event)
        *event = NULL;
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    int status = pbsa_check_queue(ctx, fn, queue);
    return status == PBSA_SUCCESS ? pbsa_pbs_plan_make(ctx, fn, q, k, v, o, params, plan) : status;
}
