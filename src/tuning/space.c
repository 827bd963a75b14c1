/* The tuning spaces of the flash and tensor-core kernels: keys, parameters, and the tuner's
 * neighbourhoods. */
#include "tuning/space.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *pbsa_kernel_kind_name(pbsa_kernel_kind kind)
{
    switch (kind) {
    case PBSA_KERNEL_DENSE: return "dense";
    case PBSA_KERNEL_SPARSE: return "sparse";
    case PBSA_KERNEL_SCORES: return "scores";
    case PBSA_KERNEL_DENSE_MMA: return "dense_mma";
    case PBSA_KERNEL_SPARSE_MMA: return "sparse_mma";
    case PBSA_KERNEL_SCORES_METHOD: return "scores_method";
    case PBSA_KERNEL_DENSE_WGMMA: return "dense_wgmma";
    case PBSA_KERNEL_SPARSE_WGMMA: return "sparse_wgmma";
    }
    return NULL;
}

bool pbsa_kernel_kind_is_mma(pbsa_kernel_kind kind)
{
    return kind == PBSA_KERNEL_DENSE_MMA || kind == PBSA_KERNEL_SPARSE_MMA ||
           pbsa_kernel_kind_is_wgmma(kind);
}

bool pbsa_kernel_kind_is_wgmma(pbsa_kernel_kind kind)
{
    return kind == PBSA_KERNEL_DENSE_WGMMA || kind == PBSA_KERNEL_SPARSE_WGMMA;
}

bool pbsa_kernel_kind_is_sparse(pbsa_kernel_kind kind)
{
    return kind == PBSA_KERNEL_SPARSE || kind == PBSA_KERNEL_SPARSE_MMA ||
           kind == PBSA_KERNEL_SPARSE_WGMMA;
}

bool pbsa_kernel_kind_is_method(pbsa_kernel_kind kind)
{
    return kind == PBSA_KERNEL_SCORES_METHOD;
}

static bool block_supported(int block)
{
    return block == 16 || block == 32 || block == 64 || block == 128;
}

bool pbsa_tuning_key_valid(const pbsa_tuning_key *key)
{
    if (!pbsa_kernel_kind_name(key->kind) || !pbsa_dtype_name(key->dtype) ||
        !pbsa_head_dim_supported(key->head_dim) || (key->causal != 0 && key->causal != 1))
        return false;
    /* The tensor-core tiles: K and V in 16 bits (the key's dtype is theirs), their head dims. */
    if (pbsa_kernel_kind_is_mma(key->kind) &&
        (key->dtype == PBSA_DTYPE_F32 || !pbsa_mma_config_head_dim(key->head_dim)))
        return false;
    if (pbsa_kernel_kind_is_wgmma(key->kind) && key->head_dim != 64 && key->head_dim != 128)
        return false;
    switch (key->kind) {
    case PBSA_KERNEL_DENSE:
    case PBSA_KERNEL_DENSE_MMA:
    case PBSA_KERNEL_DENSE_WGMMA: return key->block == 0;
    case PBSA_KERNEL_SPARSE: return block_supported(key->block);
    case PBSA_KERNEL_SCORES:
    case PBSA_KERNEL_SCORES_METHOD: return block_supported(key->block) && key->causal == 0;
    case PBSA_KERNEL_SPARSE_MMA:
    case PBSA_KERNEL_SPARSE_WGMMA: return key->block == 64 || key->block == 128;
    }
    return false;
}

bool pbsa_tuning_key_equal(const pbsa_tuning_key *a, const pbsa_tuning_key *b)
{
    return a->kind == b->kind && a->dtype == b->dtype && a->head_dim == b->head_dim &&
           a->block == b->block && a->causal == b->causal;
}

int pbsa_tuning_key_max_tile(const pbsa_tuning_key *key)
{
    return pbsa_kernel_kind_is_sparse(key->kind) ? key->block : 0;
}

/* ---- parameters ---- */

static const int tile_steps[] = {2, 4, 8, 16, 32, 64, 128};
static const int chunk_steps[] = {4, 8, 16, 32, 64};
static const int unroll_steps[] = {1, 2, 4, 8, 16, 32, 64};
/* What cl/mma_tile.cl accepts, in its two variants (pbsa_mma_config_valid(),
 * pbsa_wgmma_config_valid()); the tuner skips the points a variant refuses. */
static const int warp_steps[] = {2, 4, 8, 12};
static const int group_steps[] = {1, 2};
static const int key_steps[] = {32, 64};
static const int stage_steps[] = {1, 2, 3, 4, 5, 6};
static const int choice_steps[] = {0, 1};

#define STEPS(array) array, (int)(sizeof array / sizeof array[0])
#define PARAM(type, member, min, steps) {#member, offsetof(type, member), min, 4096, STEPS(steps)}

/* In the order of the -D options; unrolling 0 in a file means full. */
static const pbsa_tuning_param flash_params[] = {
    PARAM(pbsa_flash_config, block_m, 1, tile_steps),
    PARAM(pbsa_flash_config, block_n, 1, tile_steps),
    PARAM(pbsa_flash_config, wg_rows, 1, tile_steps),
    PARAM(pbsa_flash_config, wg_cols, 1, tile_steps),
    PARAM(pbsa_flash_config, kchunk, 1, chunk_steps),
    PARAM(pbsa_flash_config, vchunk, 1, chunk_steps),
    PARAM(pbsa_flash_config, unroll_qk, 0, unroll_steps),
    PARAM(pbsa_flash_config, unroll_pv, 0, unroll_steps),
};
/* A choice between two methods: 0 or 1. */
static const pbsa_tuning_param method_params[] = {
    {"clblast", offsetof(pbsa_method_config, clblast), 0, 1, STEPS(choice_steps)},
};
static const pbsa_tuning_param mma_params[] = {
    PARAM(pbsa_mma_config, warps, 1, warp_steps),
    PARAM(pbsa_mma_config, groups, 1, group_steps),
    PARAM(pbsa_mma_config, keys, 1, key_steps),
    PARAM(pbsa_mma_config, stages, 1, stage_steps),
};

#define SPACE(environment, params) {environment, params, (int)(sizeof params / sizeof params[0])}
const pbsa_tuning_space pbsa_tuning_spaces[PBSA_TUNING_SPACE_COUNT] = {
    SPACE("PBSA_FLASH_CONFIG", flash_params),
    SPACE("PBSA_MMA_CONFIG", mma_params),
    SPACE(NULL, method_params),
};

const pbsa_tuning_space *pbsa_tuning_space_of(pbsa_kernel_kind kind)
{
    return &pbsa_tuning_spaces[pbsa_kernel_kind_is_mma(kind)      ? 1
                               : pbsa_kernel_kind_is_method(kind) ? 2
                                                                  : 0];
}

int pbsa_tuning_param_get(const pbsa_kernel_config *config, const pbsa_tuning_param *param)
{
    int value;
    memcpy(&value, (const char *)config + param->offset, sizeof value);
    return value;
}

void pbsa_tuning_param_set(pbsa_kernel_config *config, const pbsa_tuning_param *param, int value)
{
    memcpy((char *)config + param->offset, &value, sizeof value);
}

pbsa_flash_config pbsa_tuning_explicit(const pbsa_flash_config *config)
{
    pbsa_flash_config c = *config;
    if (c.unroll_qk == 0)
        c.unroll_qk = c.kchunk;
    if (c.unroll_pv == 0)
        c.unroll_pv = c.vchunk;
    return c;
}

/* config of kind with every parameter explicit. */
static pbsa_kernel_config explicit_config(pbsa_kernel_kind kind, const pbsa_kernel_config *config)
{
    pbsa_kernel_config c = *config;
    if (!pbsa_kernel_kind_is_mma(kind) && !pbsa_kernel_kind_is_method(kind))
        c.flash = pbsa_tuning_explicit(&config->flash);
    return c;
}

bool pbsa_tuning_format_config(pbsa_kernel_kind kind, const pbsa_kernel_config *config, char *out,
                               size_t capacity)
{
    const pbsa_tuning_space *space = pbsa_tuning_space_of(kind);
    pbsa_kernel_config c = explicit_config(kind, config);
    size_t used = 0;
    if (capacity > 0)
        out[0] = '\0';
    for (int i = 0; i < space->param_count; i++) {
        const pbsa_tuning_param *p = &space->params[i];
        int n = snprintf(out + used, capacity - used, "%s%s=%d", i ? " " : "", p->name,
                         pbsa_tuning_param_get(&c, p));
        if (n < 0 || (size_t)n >= capacity - used)
            return false;
        used += (size_t)n;
    }
    return true;
}

bool pbsa_tuning_parse_values(pbsa_kernel_kind kind, const char *text, pbsa_kernel_config *out)
{
    const pbsa_tuning_space *space = pbsa_tuning_space_of(kind);
    int required = 0;
    for (int i = 0; i < space->param_count; i++)
        required += space->params[i].min > 0;
    pbsa_kernel_config c;
    memset(&c, 0, sizeof c);
    int count = 0;
    const char *at = text;
    for (;;) {
        char *end;
        errno = 0;
        long value = strtol(at, &end, 10);
        if (end == at || errno || value < -4096 || value > 4096 || count == space->param_count)
            return false;
        pbsa_tuning_param_set(&c, &space->params[count++], (int)value);
        if (*end == '\0')
            break;
        if (*end != ',')
            return false;
        at = end + 1;
    }
    if (count != required && count != space->param_count)
        return false;
    *out = c;
    return true;
}

bool pbsa_tuning_config_equal(pbsa_kernel_kind kind, const pbsa_kernel_config *a,
                              const pbsa_kernel_config *b)
{
    if (pbsa_kernel_kind_is_method(kind))
        return a->method.clblast == b->method.clblast;
    return pbsa_kernel_kind_is_mma(kind) ? pbsa_mma_config_equal(&a->mma, &b->mma)
                                         : pbsa_flash_config_equal(&a->flash, &b->flash);
}

bool pbsa_tuning_config_usable(const pbsa_kernel_config *config, const pbsa_tuning_key *key,
                               const pbsa_device_info *info)
{
    int max_tile = pbsa_tuning_key_max_tile(key);
    if (pbsa_kernel_kind_is_method(key->kind))
        return config->method.clblast == 0 || config->method.clblast == 1;
    if (pbsa_kernel_kind_is_wgmma(key->kind))
        return pbsa_mma_config_fits(&config->mma, max_tile) &&
               pbsa_wgmma_config_valid(&config->mma, key->head_dim, info);
    if (pbsa_kernel_kind_is_mma(key->kind))
        return pbsa_mma_config_fits(&config->mma, max_tile) &&
               pbsa_mma_config_valid(&config->mma, key->head_dim, info);
    return pbsa_flash_config_fits(&config->flash, max_tile) &&
           pbsa_flash_config_valid(&config->flash, key->head_dim, info);
}

pbsa_kernel_config pbsa_tuning_heuristic(const pbsa_tuning_key *key, const pbsa_device_info *info)
{
    pbsa_kernel_config c;
    memset(&c, 0, sizeof c);
    int max_tile = pbsa_tuning_key_max_tile(key);
    if (pbsa_kernel_kind_is_method(key->kind))
        c.method.clblast = 0; /* the fused kernels: no extra memory, as fast on the H100 */
    else if (pbsa_kernel_kind_is_wgmma(key->kind))
        c.mma = pbsa_wgmma_config_heuristic(info, key->head_dim, max_tile);
    else if (pbsa_kernel_kind_is_mma(key->kind))
        c.mma = pbsa_mma_config_heuristic(info, key->head_dim, max_tile);
    else
        c.flash = pbsa_flash_config_heuristic(info, key->head_dim, max_tile);
    return c;
}

/* ---- neighbourhoods ---- */

/* The tuner's pruning rule: the per-work-item score (TM x TN) and output (TM x TD) tiles live in
 * registers; beyond this many floats they spill on every GPU we know. */
enum { MAX_REGISTER_FLOATS = 192 };

static bool worth_trying(const pbsa_kernel_config *config, const pbsa_tuning_key *key)
{
    /* The mma kernels' register tiles are fixed by the fragments; methods have no tiles. */
    if (pbsa_kernel_kind_is_mma(key->kind) || pbsa_kernel_kind_is_method(key->kind))
        return true;
    const pbsa_flash_config *c = &config->flash;
    int tm = c->block_m / c->wg_rows, tn = c->block_n / c->wg_cols;
    int td = key->head_dim / c->wg_cols;
    return tm * (tn + td) <= MAX_REGISTER_FLOATS;
}

/* The value one step up (direction 1) or down (-1) from value in param's steps; 0 when none. */
static int step(const pbsa_tuning_param *param, int value, int direction)
{
    for (int i = 0; i < param->step_count; i++)
        if (param->steps[i] == value) {
            int j = i + direction;
            return j >= 0 && j < param->step_count ? param->steps[j] : 0;
        }
    /* A value between the steps (from a hand-edited file): the nearest step that way. */
    if (direction > 0) {
        for (int i = 0; i < param->step_count; i++)
            if (param->steps[i] > value)
                return param->steps[i];
    } else {
        for (int i = param->step_count - 1; i >= 0; i--)
            if (param->steps[i] < value)
                return param->steps[i];
    }
    return 0;
}

static const pbsa_tuning_param *flash_param(const char *name)
{
    for (size_t i = 0; i < sizeof flash_params / sizeof flash_params[0]; i++)
        if (strcmp(flash_params[i].name, name) == 0)
            return &flash_params[i];
    return NULL;
}

typedef struct neighbour_list {
    const pbsa_kernel_config *from; /* explicit */
    const pbsa_tuning_key *key;
    const pbsa_device_info *info;
    pbsa_kernel_config *out;
    size_t capacity, count;
} neighbour_list;

static void offer(neighbour_list *list, pbsa_kernel_config c)
{
    const pbsa_kernel_kind kind = list->key->kind;
    c = explicit_config(kind, &c);
    if (list->count >= list->capacity || pbsa_tuning_config_equal(kind, &c, list->from) ||
        !pbsa_tuning_config_usable(&c, list->key, list->info) || !worth_trying(&c, list->key))
        return;
    for (size_t i = 0; i < list->count; i++)
        if (pbsa_tuning_config_equal(kind, &c, &list->out[i]))
            return;
    list->out[list->count++] = c;
}

/* from with the named flash parameters (second may be NULL) one step in direction. */
static void offer_step(neighbour_list *list, const char *first, const char *second, int direction)
{
    pbsa_kernel_config c = *list->from;
    const char *names[2] = {first, second};
    for (int i = 0; i < 2 && names[i]; i++) {
        const pbsa_tuning_param *p = flash_param(names[i]);
        int value = step(p, pbsa_tuning_param_get(&c, p), direction);
        if (value == 0)
            return;
        pbsa_tuning_param_set(&c, p, value);
    }
    /* A full unrolling stays full when its chunk moves; a partial one may not exceed it. */
    pbsa_flash_config *f = &c.flash;
    const pbsa_flash_config *from = &list->from->flash;
    if (strcmp(first, "kchunk") == 0 && from->unroll_qk == from->kchunk)
        f->unroll_qk = f->kchunk;
    if (strcmp(first, "vchunk") == 0 && from->unroll_pv == from->vchunk)
        f->unroll_pv = f->vchunk;
    if (f->unroll_qk > f->kchunk)
        f->unroll_qk = f->kchunk;
    if (f->unroll_pv > f->vchunk)
        f->unroll_pv = f->vchunk;
    offer(list, c);
}

/* Every point of the space of list's kind from the parameter at index on, the earlier ones as
 * in c, in the order of the parameters' steps. */
static void offer_all(neighbour_list *list, pbsa_kernel_config c, int index)
{
    const pbsa_tuning_space *space = pbsa_tuning_space_of(list->key->kind);
    if (index == space->param_count) {
        offer(list, c);
        return;
    }
    const pbsa_tuning_param *p = &space->params[index];
    for (int i = 0; i < p->step_count; i++) {
        pbsa_tuning_param_set(&c, p, p->steps[i]);
        offer_all(list, c, index + 1);
    }
}

size_t pbsa_tuning_neighbours(const pbsa_kernel_config *from, const pbsa_tuning_key *key,
                              const pbsa_device_info *info, pbsa_kernel_config *out,
                              size_t capacity)
{
    pbsa_kernel_config start = explicit_config(key->kind, from);
    neighbour_list list = {&start, key, info, out, capacity, 0};
    if (pbsa_kernel_kind_is_mma(key->kind) || pbsa_kernel_kind_is_method(key->kind)) {
        offer_all(&list, start, 0);
        return list.count;
    }
    /* Most promising first (the H100 sweeps): the work-group's query rows at a fixed register
     * tile, the register tile itself, then the staging chunks and the unrolling. */
    static const char *const moves[][2] = {
        {"block_m", "wg_rows"}, {"wg_rows", NULL},   {"block_n", "wg_cols"}, {"wg_cols", NULL},
        {"block_m", NULL},      {"block_n", NULL},   {"vchunk", NULL},       {"kchunk", NULL},
        {"unroll_pv", NULL},    {"unroll_qk", NULL},
    };
    for (size_t m = 0; m < sizeof moves / sizeof moves[0]; m++) {
        offer_step(&list, moves[m][0], moves[m][1], 1);
        offer_step(&list, moves[m][0], moves[m][1], -1);
    }
    return list.count;
}
