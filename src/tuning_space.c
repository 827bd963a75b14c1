/* The tuning space of the flash kernels: keys, parameters, and the tuner's neighbourhoods. */
#include "tuning_space.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

const char *pbsa_kernel_kind_name(pbsa_kernel_kind kind)
{
    switch (kind) {
    case PBSA_KERNEL_DENSE: return "dense";
    case PBSA_KERNEL_SPARSE: return "sparse";
    case PBSA_KERNEL_SCORES: return "scores";
    }
    return NULL;
}

const char *pbsa_tuning_dtype_name(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return "f32";
    case PBSA_DTYPE_F16: return "f16";
    case PBSA_DTYPE_BF16: return "bf16";
    }
    return NULL;
}

static bool block_supported(int block)
{
    return block == 16 || block == 32 || block == 64 || block == 128;
}

bool pbsa_tuning_key_valid(const pbsa_tuning_key *key)
{
    if (!pbsa_kernel_kind_name(key->kind) || !pbsa_tuning_dtype_name(key->dtype) ||
        !pbsa_head_dim_supported(key->head_dim) || (key->causal != 0 && key->causal != 1))
        return false;
    switch (key->kind) {
    case PBSA_KERNEL_DENSE: return key->block == 0;
    case PBSA_KERNEL_SPARSE: return block_supported(key->block);
    case PBSA_KERNEL_SCORES: return block_supported(key->block) && key->causal == 0;
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
    return key->kind == PBSA_KERNEL_SPARSE ? key->block : 0;
}

/* ---- parameters ---- */

static const int tile_steps[] = {2, 4, 8, 16, 32, 64, 128};
static const int chunk_steps[] = {4, 8, 16, 32, 64};
static const int unroll_steps[] = {1, 2, 4, 8, 16, 32, 64};

#define STEPS(array) array, (int)(sizeof array / sizeof array[0])
#define PARAM(member, min, steps)                                                                  \
    {                                                                                              \
#member, offsetof(pbsa_flash_config, member), min, 4096, STEPS(steps)                      \
    }

/* In the order of the -D options; unrolling 0 in a file means full. */
const pbsa_tuning_param pbsa_tuning_params[] = {
    PARAM(block_m, 1, tile_steps),     PARAM(block_n, 1, tile_steps),
    PARAM(wg_rows, 1, tile_steps),     PARAM(wg_cols, 1, tile_steps),
    PARAM(kchunk, 1, chunk_steps),     PARAM(vchunk, 1, chunk_steps),
    PARAM(unroll_qk, 0, unroll_steps), PARAM(unroll_pv, 0, unroll_steps),
};
const int pbsa_tuning_param_count = (int)(sizeof pbsa_tuning_params / sizeof pbsa_tuning_params[0]);

int pbsa_tuning_param_get(const pbsa_flash_config *config, const pbsa_tuning_param *param)
{
    int value;
    memcpy(&value, (const char *)config + param->offset, sizeof value);
    return value;
}

void pbsa_tuning_param_set(pbsa_flash_config *config, const pbsa_tuning_param *param, int value)
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

bool pbsa_tuning_format_config(const pbsa_flash_config *config, char *out, size_t capacity)
{
    pbsa_flash_config c = pbsa_tuning_explicit(config);
    size_t used = 0;
    if (capacity > 0)
        out[0] = '\0';
    for (int i = 0; i < pbsa_tuning_param_count; i++) {
        const pbsa_tuning_param *p = &pbsa_tuning_params[i];
        int n = snprintf(out + used, capacity - used, "%s%s=%d", i ? " " : "", p->name,
                         pbsa_tuning_param_get(&c, p));
        if (n < 0 || (size_t)n >= capacity - used)
            return false;
        used += (size_t)n;
    }
    return true;
}

bool pbsa_tuning_config_usable(const pbsa_flash_config *config, const pbsa_tuning_key *key,
                               const pbsa_device_info *info)
{
    return pbsa_flash_config_fits(config, pbsa_tuning_key_max_tile(key)) &&
           pbsa_flash_config_valid(config, key->head_dim, info);
}

/* ---- neighbourhoods ---- */

/* The tuner's pruning rule: the per-work-item score (TM x TN) and output (TM x TD) tiles live in
 * registers; beyond this many floats they spill on every GPU we know. */
enum { MAX_REGISTER_FLOATS = 192 };

static bool worth_trying(const pbsa_flash_config *c, int head_dim)
{
    int tm = c->block_m / c->wg_rows, tn = c->block_n / c->wg_cols, td = head_dim / c->wg_cols;
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

static const pbsa_tuning_param *param_named(const char *name)
{
    for (int i = 0; i < pbsa_tuning_param_count; i++)
        if (strcmp(pbsa_tuning_params[i].name, name) == 0)
            return &pbsa_tuning_params[i];
    return NULL;
}

typedef struct neighbour_list {
    const pbsa_flash_config *from;
    const pbsa_tuning_key *key;
    const pbsa_device_info *info;
    pbsa_flash_config *out;
    size_t capacity, count;
} neighbour_list;

static void offer(neighbour_list *list, pbsa_flash_config c)
{
    c = pbsa_tuning_explicit(&c);
    if (list->count >= list->capacity || pbsa_flash_config_equal(&c, list->from) ||
        !pbsa_tuning_config_usable(&c, list->key, list->info) ||
        !worth_trying(&c, list->key->head_dim))
        return;
    for (size_t i = 0; i < list->count; i++)
        if (pbsa_flash_config_equal(&c, &list->out[i]))
            return;
    list->out[list->count++] = c;
}

/* from with the named parameters (second may be NULL) one step in direction. */
static void offer_step(neighbour_list *list, const char *first, const char *second, int direction)
{
    pbsa_flash_config c = pbsa_tuning_explicit(list->from);
    const char *names[2] = {first, second};
    for (int i = 0; i < 2 && names[i]; i++) {
        const pbsa_tuning_param *p = param_named(names[i]);
        int value = step(p, pbsa_tuning_param_get(&c, p), direction);
        if (value == 0)
            return;
        pbsa_tuning_param_set(&c, p, value);
    }
    /* A full unrolling stays full when its chunk moves; a partial one may not exceed it. */
    if (strcmp(first, "kchunk") == 0 && list->from->unroll_qk == list->from->kchunk)
        c.unroll_qk = c.kchunk;
    if (strcmp(first, "vchunk") == 0 && list->from->unroll_pv == list->from->vchunk)
        c.unroll_pv = c.vchunk;
    if (c.unroll_qk > c.kchunk)
        c.unroll_qk = c.kchunk;
    if (c.unroll_pv > c.vchunk)
        c.unroll_pv = c.vchunk;
    offer(list, c);
}

size_t pbsa_tuning_neighbours(const pbsa_flash_config *from, const pbsa_tuning_key *key,
                              const pbsa_device_info *info, pbsa_flash_config *out, size_t capacity)
{
    pbsa_flash_config start = pbsa_tuning_explicit(from);
    neighbour_list list = {&start, key, info, out, capacity, 0};
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
