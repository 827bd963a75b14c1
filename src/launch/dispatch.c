/* The tile families and the choice among them: which family, configuration and build options run
 * a call, and pbsa_query_kernel_config(), which reports that choice. */
#include "launch/dispatch.h"

#include <stdio.h>

enum { ORIGIN_CAPACITY = 4200, MAX_FILES = 8 };

/* ---- the portable flash tiles (cl/flash_tile.cl, src/tiles/flash_tile.c) ---- */

static const char *const flash_files[] = {"common.cl", "sequence.cl", "flash_tile.cl"};

static bool flash_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                          int causal, const pbsa_kernel_config *config)
{
    return pbsa_flash_options(options, capacity, dtypes, head_dim, causal, &config->flash);
}

static void flash_work_group(const pbsa_kernel_config *config, size_t *work_items, size_t *rows)
{
    *work_items = (size_t)config->flash.wg_rows * (size_t)config->flash.wg_cols;
    *rows = (size_t)config->flash.block_m;
}

static int flash_tile_keys(const pbsa_kernel_config *config) { return config->flash.block_n; }

static bool flash_rung(const pbsa_device_info *info, size_t index, pbsa_kernel_config *out)
{
    const pbsa_flash_config *list;
    if (index >= pbsa_flash_ladder(info, &list))
        return false;
    out->flash = list[index];
    return true;
}

const pbsa_tile_family pbsa_portable_family = {
    .name = "portable",
    .tile_files = flash_files,
    .tile_file_count = 3,
    .roles = {[PBSA_ROLE_DENSE] = {"dense_attention.cl", PBSA_KERNEL_DENSE, NULL},
              [PBSA_ROLE_SPARSE] = {"pbs_attention.cl", PBSA_KERNEL_SPARSE, NULL},
              [PBSA_ROLE_SCORES] = {"pbs_scores.cl", PBSA_KERNEL_SCORES, NULL}},
    .row_alignment = 1,
    .options = flash_options,
    .work_group = flash_work_group,
    .tile_keys = flash_tile_keys,
    .rung = flash_rung,
};

/* ---- the NVIDIA mma.sync tiles (cl/mma_tile.cl, src/tiles/mma_tile.c) ---- */

static const char *const mma_files[] = {"common.cl", "sequence.cl", "mma_ptx.cl", "mma_tile.cl"};

static bool mma_available(const pbsa_context *ctx) { return ctx->use_tensor_cores; }

static bool mma_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                        int causal, const pbsa_kernel_config *config)
{
    return pbsa_mma_options(options, capacity, dtypes, head_dim, causal, &config->mma);
}

static void mma_work_group(const pbsa_kernel_config *config, size_t *work_items, size_t *rows)
{
    *work_items = 32 * (size_t)config->mma.warps;
    *rows = 16 * (size_t)config->mma.warps * (size_t)config->mma.groups;
}

static int mma_tile_keys(const pbsa_kernel_config *config) { return config->mma.keys; }

static bool mma_list_rung(const pbsa_mma_config *list, size_t count, size_t index,
                          pbsa_kernel_config *out)
{
    if (index >= count)
        return false;
    out->mma = list[index];
    return true;
}

static bool mma_rung(const pbsa_device_info *info, size_t index, pbsa_kernel_config *out)
{
    (void)info;
    const pbsa_mma_config *list;
    size_t count = pbsa_mma_ladder(&list);
    return mma_list_rung(list, count, index, out);
}

static bool wgmma_rung(const pbsa_device_info *info, size_t index, pbsa_kernel_config *out)
{
    (void)info;
    const pbsa_mma_config *list;
    size_t count = pbsa_wgmma_ladder(&list);
    return mma_list_rung(list, count, index, out);
}

/* One query-row group per warp (the score kernels' rule); the tile count sizes the workspace, so
 * the configuration is fixed rather than tuned. */
static const pbsa_kernel_config mma_scores = {.mma = {4, 1, 64, 1}};

static const pbsa_tile_family mma_family = {
    .name = "mma.sync",
    .tile_files = mma_files,
    .tile_file_count = 4,
    .roles = {[PBSA_ROLE_DENSE] = {"dense_attention.cl", PBSA_KERNEL_DENSE_MMA, NULL},
              [PBSA_ROLE_SPARSE] = {"pbs_attention.cl", PBSA_KERNEL_SPARSE_MMA, NULL},
              [PBSA_ROLE_SCORES] = {"pbs_scores_mma.cl", PBSA_KERNEL_DENSE_MMA, &mma_scores}},
    .row_alignment = 8, /* 16 bytes of 16-bit elements */
    .kv_16bit = true,
    .available = mma_available,
    .options = mma_options,
    .work_group = mma_work_group,
    .tile_keys = mma_tile_keys,
    .rung = mma_rung,
};

/* ---- Hopper's wgmma variant of the same tiles (WGMMA 1), rewritten for sm_90a ---- */

static const char *const wgmma_files[] = {"common.cl", "sequence.cl", "mma_ptx.cl", "wgmma_ptx.cl",
                                           "mma_tile.cl"};

/* The wgmma probe runs only after the mma.sync one passed; both must hold. */
static bool wgmma_available(const pbsa_context *ctx)
{
    return ctx->use_tensor_cores && ctx->use_wgmma;
}

static bool wgmma_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                          int causal, const pbsa_kernel_config *config)
{
    return mma_options(options, capacity, dtypes, head_dim, causal, config) &&
           pbsa_append_option(options, capacity, " -DWGMMA=1");
}

/* The permutation scores stay on mma.sync (no scores role here): their tiles keep 32-key
 * steps. */
static const pbsa_tile_family wgmma_family = {
    .name = "wgmma",
    .tile_files = wgmma_files,
    .tile_file_count = 5,
    .roles = {[PBSA_ROLE_DENSE] = {"dense_attention.cl", PBSA_KERNEL_DENSE_WGMMA, NULL},
              [PBSA_ROLE_SPARSE] = {"pbs_attention.cl", PBSA_KERNEL_SPARSE_WGMMA, NULL}},
    .row_alignment = 8,
    .kv_16bit = true,
    .available = wgmma_available,
    .options = wgmma_options,
    .work_group = mma_work_group,
    .tile_keys = mma_tile_keys,
    .rung = wgmma_rung,
    .build = pbsa_get_sm90a_kernel,
};

/* The families in the order they are tried: the first that runs a call wins. Their row
 * alignments do not grow along the table, so a call that one takes the later ones take too. */
static const pbsa_tile_family *const families[] = {&wgmma_family, &mma_family,
                                                   &pbsa_portable_family};
enum { FAMILY_COUNT = sizeof families / sizeof families[0] };

/* ---- the choice ---- */

static bool rows_aligned(const pbsa_tensor *t, int alignment)
{
    return t->offset % alignment == 0 && t->stride_batch % alignment == 0 &&
           t->stride_head % alignment == 0 && t->stride_seq % alignment == 0;
}

int pbsa_row_alignment(const pbsa_tensor *a, const pbsa_tensor *b)
{
    int alignment = 8;
    while (alignment > 1 && (!rows_aligned(a, alignment) || (b && !rows_aligned(b, alignment))))
        alignment /= 2;
    return alignment;
}

bool pbsa_dispatch_family(const pbsa_context *ctx, const pbsa_tile_family *family,
                          pbsa_tile_role role, const pbsa_dtypes *dtypes, int head_dim, int block,
                          int causal, int alignment, pbsa_dispatch *out, char *origin,
                          size_t capacity)
{
    const pbsa_family_role *r = &family->roles[role];
    /* f32 K and V never run on tiles that compute in 16 bits: the portable tiles take them, in
     * fp32, whatever the dtypes of q and o. */
    if (!r->kernel_file || (family->available && !family->available(ctx)) ||
        alignment < family->row_alignment || (family->kv_16bit && dtypes->kv == PBSA_DTYPE_F32))
        return false;
    /* A mixed call is keyed, tuned and looked up by its K/V dtype (pbsa_tuning_key). */
    pbsa_tuning_key key = {r->kind, dtypes->kv, head_dim, role == PBSA_ROLE_DENSE ? 0 : block,
                           role == PBSA_ROLE_SCORES || !causal ? 0 : 1};
    pbsa_dispatch d = {family, role, *dtypes, key, {{0}}, PBSA_CONFIG_HEURISTIC};
    if (role == PBSA_ROLE_SCORES)
        d.dtypes.o = d.dtypes.q;
    if (r->fixed) {
        /* Checked as a configuration of its space with no block to divide. */
        d.key.block = 0;
        if (!pbsa_tuning_key_valid(&d.key) ||
            !pbsa_tuning_config_usable(r->fixed, &d.key, &ctx->info))
            return false;
        d.config = *r->fixed;
        d.key.block = key.block;
        if (capacity > 0)
            snprintf(origin, capacity, "fixed");
    } else {
        /* The lookup passes over tuned entries that do not fit; the heuristic may not fit. */
        if (!pbsa_tuning_key_valid(&d.key))
            return false;
        d.config = pbsa_tuning_lookup(ctx, &d.key, &d.source, origin, capacity);
        if (!pbsa_tuning_config_usable(&d.config, &d.key, &ctx->info))
            return false;
    }
    *out = d;
    return true;
}

bool pbsa_dispatch_pick(const pbsa_context *ctx, pbsa_tile_role role, const pbsa_dtypes *dtypes,
                        int head_dim, int block, int causal, int alignment, pbsa_dispatch *out)
{
    for (size_t i = 0; i < FAMILY_COUNT; i++)
        if (pbsa_dispatch_family(ctx, families[i], role, dtypes, head_dim, block, causal, alignment,
                                 out, NULL, 0))
            return true;
    return false;
}

pbsa_score_method pbsa_dispatch_score_method(const pbsa_context *ctx, pbsa_dtype dtype,
                                             int head_dim, int block, pbsa_config_source *source,
                                             char *origin, size_t capacity)
{
    pbsa_config_source found = PBSA_CONFIG_FORCED;
    pbsa_score_method method = ctx->pbs_methods.score;
    if (method != PBSA_SCORE_AUTO) {
        if (capacity > 0)
            snprintf(origin, capacity, "forced on the context");
    } else {
        pbsa_tuning_key key = {PBSA_KERNEL_SCORES_METHOD, dtype, head_dim, block, 0};
        pbsa_kernel_config c = pbsa_tuning_lookup(ctx, &key, &found, origin, capacity);
        method = c.method.clblast ? PBSA_SCORE_CLBLAST : PBSA_SCORE_FUSED;
        if (found != PBSA_CONFIG_FORCED && ctx->env.score_method != PBSA_SCORE_AUTO) {
            method = ctx->env.score_method;
            found = PBSA_CONFIG_ENVIRONMENT;
            if (capacity > 0)
                snprintf(origin, capacity, "PBSA_SCORE_METHOD");
        }
    }
    if (source)
        *source = found;
    return method;
}

void pbsa_sparse_options(char *options, size_t capacity, int block, bool has_pi,
                         bool materialised)
{
    pbsa_append_option(options, capacity, " -DLOGICAL_BLOCK=%d -DHAS_PI=%d -DMATERIALISED=%d",
                       block, has_pi ? 1 : 0, materialised ? 1 : 0);
}

int pbsa_dispatch_build(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                        const char *extra_options, cl_kernel *out)
{
    const pbsa_tile_family *f = d->family;
    const char *files[MAX_FILES];
    size_t count = 0;
    for (; count < f->tile_file_count; count++)
        files[count] = f->tile_files[count];
    files[count++] = f->roles[d->role].kernel_file;
    char options[512] = "";
    f->options(options, sizeof options, &d->dtypes, d->key.head_dim, d->key.causal, &d->config);
    pbsa_append_option(options, sizeof options, "%s", extra_options);
    return f->build ? f->build(ctx, files, count, options, kernel_name, out)
                    : pbsa_get_kernel(ctx, files, count, options, kernel_name, out);
}

static size_t work_items_of(const pbsa_dispatch *d)
{
    size_t items, rows;
    d->family->work_group(&d->config, &items, &rows);
    return items;
}

static size_t family_index(const pbsa_tile_family *family)
{
    size_t i = 0;
    while (i + 1 < FAMILY_COUNT && families[i] != family)
        i++;
    return i;
}

/* The configuration after cur that a call of d's shapes may step down to when cur's compiled
 * kernel allows limit work-items: in cur's family a later rung with fewer work-items, else in a
 * later family any rung; at most limit work-items, usable for the call on the device, and for the
 * scores with d's keys per tile. The family's and the rung's order make every step a step down,
 * so the search ends. */
static bool next_rung(const pbsa_context *ctx, const pbsa_dispatch *d, const pbsa_dispatch *cur,
                      size_t limit, pbsa_dispatch *out)
{
    const size_t below = work_items_of(cur);
    for (size_t i = family_index(cur->family); i < FAMILY_COUNT; i++) {
        const pbsa_tile_family *f = families[i];
        const pbsa_family_role *r = &f->roles[d->role];
        if (!r->kernel_file || r->fixed || (f->available && !f->available(ctx)))
            continue;
        pbsa_dispatch c = {f, d->role, d->dtypes, d->key, {{0}}, PBSA_CONFIG_HEURISTIC};
        c.key.kind = r->kind;
        if (!pbsa_tuning_key_valid(&c.key))
            continue;
        for (size_t n = 0; f->rung(&ctx->info, n, &c.config); n++) {
            const size_t items = work_items_of(&c);
            if (items <= limit && (f != cur->family || items < below) &&
                pbsa_tuning_config_usable(&c.config, &c.key, &ctx->info) &&
                (d->role != PBSA_ROLE_SCORES ||
                 f->tile_keys(&c.config) == d->family->tile_keys(&d->config))) {
                *out = c;
                return true;
            }
        }
    }
    return false;
}

/* What pbsa_dispatch_fit() remembers. */
typedef struct fit_answer {
    pbsa_dispatch dispatch;
    char note[384];
} fit_answer;

int pbsa_dispatch_fit(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                      const char *extra_options, pbsa_dispatch *fitted, char *note,
                      size_t capacity, cl_kernel *out)
{
    if (out)
        *out = NULL;
    char key[1024], text[256];
    pbsa_tuning_format_config(d->key.kind, &d->config, text, sizeof text);
    /* Every dtype is part of the key: the kernel built, and so its limit, depends on each. */
    snprintf(key, sizeof key, "tiles|%s|%d|%d,%d,%d|%d|%d|%d|%s|%s|%s|%d", d->family->name,
             (int)d->role, (int)d->dtypes.q, (int)d->dtypes.kv, (int)d->dtypes.o, d->key.head_dim,
             d->key.block, d->key.causal, text, kernel_name, extra_options, (int)d->source);
    fit_answer a = {*d, ""};
    const bool known = pbsa_fit_recall(ctx, key, &a, sizeof a);
    for (;;) {
        cl_kernel kernel;
        int status = pbsa_dispatch_build(ctx, &a.dispatch, kernel_name, extra_options, &kernel);
        if (status != PBSA_SUCCESS)
            return status;
        const size_t items = work_items_of(&a.dispatch);
        const size_t limit = known ? items : pbsa_kernel_group_limit(ctx, kernel);
        if (items <= limit) {
            if (!known)
                pbsa_fit_remember(ctx, key, &a, sizeof a);
            *fitted = a.dispatch;
            if (capacity > 0)
                snprintf(note, capacity, "%s", a.note);
            if (out)
                *out = kernel;
            else
                clReleaseKernel(kernel);
            return PBSA_SUCCESS;
        }
        clReleaseKernel(kernel);
        pbsa_tuning_format_config(a.dispatch.key.kind, &a.dispatch.config, text, sizeof text);
        if (d->source == PBSA_CONFIG_FORCED || d->source == PBSA_CONFIG_ENVIRONMENT)
            return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                             "the configuration %s forced by %s has %zu work-items per group, "
                             "but kernel %s allows %zu on this device: force a smaller one",
                             text,
                             d->source == PBSA_CONFIG_FORCED ? "the tuner"
                                                             : pbsa_tuning_space_of(d->key.kind)
                                                                   ->environment,
                             items, kernel_name, limit);
        if (!a.note[0])
            snprintf(a.note, sizeof a.note,
                     "stepped down from %s: kernel %s allows %zu work-items per group", text,
                     kernel_name, limit);
        if (!next_rung(ctx, d, &a.dispatch, limit, &a.dispatch))
            return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                             "kernel %s allows %zu work-items per group on this device, fewer "
                             "than any configuration for head_dim %d has",
                             kernel_name, limit, d->key.head_dim);
    }
}

int pbsa_dispatch_kernel(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                         const char *extra_options, cl_kernel *out, size_t *work_items,
                         size_t *rows)
{
    pbsa_dispatch fitted;
    int status = pbsa_dispatch_fit(ctx, d, kernel_name, extra_options, &fitted, NULL, 0, out);
    if (status == PBSA_SUCCESS)
        fitted.family->work_group(&fitted.config, work_items, rows);
    return status;
}

/* ---- pbsa_query_kernel_config() ---- */

/* The family and role whose tuned configuration is of kind. */
static const pbsa_tile_family *family_of_kind(pbsa_kernel_kind kind, pbsa_tile_role *role)
{
    for (size_t i = 0; i < FAMILY_COUNT; i++)
        for (int r = 0; r < PBSA_ROLE_COUNT; r++)
            if (families[i]->roles[r].kernel_file && !families[i]->roles[r].fixed &&
                families[i]->roles[r].kind == kind) {
                *role = (pbsa_tile_role)r;
                return families[i];
            }
    return NULL;
}

/* The checks that pbsa_query_kernel_config() and pbsa_fit_kernel_config() share: ctx and
 * description, a known kind (its family and role; NULL family for a method), dtype, head dim and
 * block. Clears the calling thread's error first. */
static int check_query(const pbsa_context *ctx, const char *fn, pbsa_kernel_kind kind,
                       pbsa_dtype dtype, int head_dim, int block_size, char *description,
                       size_t capacity, const pbsa_tile_family **family, pbsa_tile_role *role)
{
    if (description && capacity > 0)
        description[0] = '\0';
    if (!ctx)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: ctx is NULL", fn);
    pbsa_clear_error(ctx);
    if (!description && capacity > 0)
        return pbsa_fail(ctx, PBSA_ERROR_NULL_ARGUMENT,
                         "%s: description is NULL but capacity is %zu", fn, capacity);
    *role = PBSA_ROLE_SCORES;
    *family = family_of_kind(kind, role);
    if (!pbsa_kernel_kind_name(kind) || (!*family && !pbsa_kernel_kind_is_method(kind)))
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: kind = %d is not a pbsa_kernel_kind",
                         fn, (int)kind);
    if (!pbsa_dtype_name(dtype))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DTYPE, "%s: dtype = %d is not supported", fn,
                         (int)dtype);
    if (!pbsa_head_dim_supported(head_dim))
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_HEAD_DIM,
                         "%s: head_dim = %d is not supported (" PBSA_HEAD_DIMS ")", fn, head_dim);
    if (*role != PBSA_ROLE_DENSE && block_size != 16 && block_size != 32 && block_size != 64 &&
        block_size != 128)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: block_size = %d is not supported (16, 32, 64 or 128)", fn,
                         block_size);
    return PBSA_SUCCESS;
}

static int fail_too_small(const pbsa_context *ctx, const char *fn, int head_dim)
{
    return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                     "%s: the device's local memory (%llu bytes) or work-group size (%zu) is "
                     "too small for head_dim %d",
                     fn, (unsigned long long)ctx->info.local_mem_bytes,
                     ctx->info.max_work_group_size, head_dim);
}

int pbsa_query_kernel_config(const pbsa_context *ctx, pbsa_kernel_kind kind, pbsa_dtype dtype,
                             int head_dim, int block_size, int causal, char *description,
                             size_t capacity, pbsa_config_source *source)
{
    static const char fn[] = "pbsa_query_kernel_config";
    pbsa_tile_role role;
    const pbsa_tile_family *family;
    int status = check_query(ctx, fn, kind, dtype, head_dim, block_size, description, capacity,
                             &family, &role);
    if (status != PBSA_SUCCESS)
        return status;
    const char *name = pbsa_kernel_kind_name(kind);
    const bool method = pbsa_kernel_kind_is_method(kind);
    const bool dense = role == PBSA_ROLE_DENSE;
    /* A call of these dtypes throughout; a mixed call runs where its K/V dtype would. */
    const pbsa_dtypes dtypes = {dtype, dtype, dtype};
    if (method) {
        pbsa_config_source found;
        char origin[ORIGIN_CAPACITY];
        pbsa_score_method m = pbsa_dispatch_score_method(ctx, dtype, head_dim, block_size, &found,
                                                         origin, sizeof origin);
        if (capacity > 0)
            snprintf(description, capacity, "clblast=%d (%s)", m == PBSA_SCORE_CLBLAST ? 1 : 0,
                     origin);
        if (source)
            *source = found;
        return PBSA_SUCCESS;
    }
    /* Tensors whose rows are aligned for every family: the query is about the kernel. */
    const int aligned = 8;
    pbsa_dispatch d;
    char origin[ORIGIN_CAPACITY];
    /* A tensor-core kind answers for the calls that run on its family: none ahead takes them. */
    const pbsa_tile_family *ahead = NULL;
    for (size_t i = 0; family != &pbsa_portable_family && families[i] != family; i++)
        if (pbsa_dispatch_family(ctx, families[i], role, &dtypes, head_dim, block_size, causal,
                                 aligned, &d, NULL, 0)) {
            ahead = families[i];
            break;
        }
    if (ahead)
        return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                         "%s: the calls of %s run on the %s kernels on ctx (query that family's "
                         "kind)",
                         fn, name, ahead->name);
    if (!pbsa_dispatch_family(ctx, family, role, &dtypes, head_dim, block_size, causal, aligned, &d,
                              origin, sizeof origin)) {
        if (family != &pbsa_portable_family)
            return pbsa_fail(ctx, PBSA_ERROR_UNSUPPORTED_DEVICE,
                             "%s: the tensor-core kernel %s does not run this call on ctx (it "
                             "runs on contexts that use tensor cores%s, for f16 and bf16, head "
                             "dims %s%s, where a configuration fits the device)",
                             fn, name, family == &wgmma_family ? " through wgmma" : "",
                             family == &wgmma_family ? "128" : "64, 80, 96, 112, 128 and 192",
                             dense ? "" : ", block_size 64 and 128");
        return fail_too_small(ctx, fn, head_dim);
    }
    char text[256];
    pbsa_tuning_format_config(kind, &d.config, text, sizeof text);
    pbsa_config_source found = d.source;
    /* A portable kind whose calls run on a family ahead of it with a tuned configuration: that
     * family's configuration first. */
    pbsa_dispatch first = d;
    char first_origin[ORIGIN_CAPACITY];
    for (size_t i = 0; family == &pbsa_portable_family && families[i] != family; i++)
        if (!families[i]->roles[role].fixed &&
            pbsa_dispatch_family(ctx, families[i], role, &dtypes, head_dim, block_size, causal,
                                 aligned, &first, first_origin, sizeof first_origin))
            break;
    if (first.family != d.family) {
        char first_text[256];
        pbsa_tuning_format_config(first.key.kind, &first.config, first_text, sizeof first_text);
        found = PBSA_CONFIG_TENSOR_CORES;
        if (capacity > 0)
            snprintf(description, capacity,
                     "tensor-core kernel %s (%s); the portable kernel would use %s (%s)",
                     first_text, first_origin, text, origin);
    } else if (capacity > 0) {
        snprintf(description, capacity, "%s (%s)", text, origin);
    }
    if (source)
        *source = found;
    return PBSA_SUCCESS;
}

/* ---- pbsa_fit_kernel_config() ---- */

int pbsa_fit_kernel_config(pbsa_context *ctx, pbsa_kernel_kind kind, pbsa_dtype dtype,
                           int head_dim, int block_size, int causal, char *description,
                           size_t capacity, pbsa_config_source *source)
{
    static const char fn[] = "pbsa_fit_kernel_config";
    pbsa_tile_role role;
    const pbsa_tile_family *family;
    int status = check_query(ctx, fn, kind, dtype, head_dim, block_size, description, capacity,
                             &family, &role);
    if (status != PBSA_SUCCESS)
        return status;
    if (family != &pbsa_portable_family)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                         "%s: kind = %s is not a call's kind (dense, sparse or scores)", fn,
                         pbsa_kernel_kind_name(kind));
    /* The first family that takes the call, as pbsa_dispatch_pick() finds it, with its origin;
     * a call of these dtypes throughout. */
    const pbsa_dtypes dtypes = {dtype, dtype, dtype};
    pbsa_dispatch d;
    char origin[ORIGIN_CAPACITY];
    size_t i = 0;
    while (i < FAMILY_COUNT && !pbsa_dispatch_family(ctx, families[i], role, &dtypes, head_dim,
                                                     block_size, causal, 8, &d, origin,
                                                     sizeof origin))
        i++;
    if (i == FAMILY_COUNT)
        return fail_too_small(ctx, fn, head_dim);
    static const char *const kernels[PBSA_ROLE_COUNT] = {"dense_attention", "pbs_attention",
                                                         "pbs_score_stats"};
    char extra[128] = "", note[512];
    if (role == PBSA_ROLE_SPARSE)
        pbsa_sparse_options(extra, sizeof extra, block_size, true, false);
    pbsa_dispatch fitted;
    status = pbsa_dispatch_fit(ctx, &d, kernels[role], extra, &fitted, note, sizeof note, NULL);
    if (status != PBSA_SUCCESS)
        return status;
    char text[256];
    pbsa_tuning_format_config(fitted.key.kind, &fitted.config, text, sizeof text);
    if (capacity > 0)
        snprintf(description, capacity, "%s%s (%s%s%s)",
                 fitted.family == &pbsa_portable_family ? "" : "tensor-core kernel ", text,
                 origin, note[0] ? "; " : "", note);
    if (source)
        *source = fitted.family != &pbsa_portable_family ? PBSA_CONFIG_TENSOR_CORES
                  : note[0]                              ? PBSA_CONFIG_HEURISTIC
                                                         : fitted.source;
    return PBSA_SUCCESS;
}
