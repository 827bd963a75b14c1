/* What per-device tuning covers, declared once: the keys a tuned configuration is stored under,
 * the parameters of the flash kernels (cl/flash_tile.cl) with their names in tuning files and the
 * values pbsa-tune tries, and the neighbourhoods the tuner searches. Pure: no OpenCL calls. */
#ifndef PBSA_TUNING_SPACE_H
#define PBSA_TUNING_SPACE_H

#include "flash_config.h"

/* Version of the tuning file format and of the meaning of its parameters. Raise it when a
 * parameter changes meaning (a kernel rewrite that makes old tiles meaningless, say): files of an
 * older version are then ignored with a warning until they are tuned again. */
enum { PBSA_TUNING_SCHEMA = 1 };

/* What one tuned configuration is for. block: the PBS logical block (0 for the dense kernel);
 * causal: 0 or 1 (always 0 for the scores kernel, which has no mask). */
typedef struct pbsa_tuning_key {
    pbsa_kernel_kind kind;
    pbsa_dtype dtype;
    int head_dim;
    int block;
    int causal;
} pbsa_tuning_key;

enum { PBSA_KERNEL_KIND_COUNT = 3 };

/* "dense", "sparse", "scores"; NULL for an unknown kind. */
const char *pbsa_kernel_kind_name(pbsa_kernel_kind kind);
/* "f32", "f16", "bf16"; NULL for an unknown dtype. */
const char *pbsa_tuning_dtype_name(pbsa_dtype dtype);
/* Whether key names a variant the library has: a known kind and dtype, a supported head dim, a
 * block of 16, 32, 64 or 128 for the PBS kernels and 0 for the dense one, causal 0 or 1 (0 for
 * the scores kernel). */
bool pbsa_tuning_key_valid(const pbsa_tuning_key *key);
bool pbsa_tuning_key_equal(const pbsa_tuning_key *a, const pbsa_tuning_key *b);
/* The largest tile the kernel of key accepts (pbsa_flash_config_fits()): the block for the
 * sparse kernel, 0 (no limit) otherwise. */
int pbsa_tuning_key_max_tile(const pbsa_tuning_key *key);

/*
 * The tuned parameters: int members of pbsa_flash_config, each with its name in tuning files and
 * descriptions, the range a file may hold (anything else marks the file corrupt) and the values
 * the tuner steps through, in increasing order.
 *
 * Extension point: parameters that are not tiles of the flash kernels (the PBS plan's methods:
 * sort variant, CLBlast scores, materialised K/V) join as a second table over their own struct,
 * with their names (symbolic values) in the same entry lines; the key, the file format and the
 * lookup order stay as they are.
 */
typedef struct pbsa_tuning_param {
    const char *name;
    size_t offset; /* of an int member of pbsa_flash_config */
    int min, max;  /* accepted in tuning files */
    const int *steps;
    int step_count;
} pbsa_tuning_param;

extern const pbsa_tuning_param pbsa_tuning_params[];
extern const int pbsa_tuning_param_count;

int pbsa_tuning_param_get(const pbsa_flash_config *config, const pbsa_tuning_param *param);
void pbsa_tuning_param_set(pbsa_flash_config *config, const pbsa_tuning_param *param, int value);

/* The configuration with every parameter explicit (unrolling 0 becomes the chunk it unrolls). */
pbsa_flash_config pbsa_tuning_explicit(const pbsa_flash_config *config);

/* Writes config as "block_m=64 block_n=64 ... unroll_pv=16" (explicit unrolling) into out;
 * returns false when it did not fit (out is still NUL-terminated when capacity > 0). */
bool pbsa_tuning_format_config(const pbsa_flash_config *config, char *out, size_t capacity);

/* Whether config is usable for key on the device: valid for the head dim and the device's limits
 * and fitting the key's logical block. */
bool pbsa_tuning_config_usable(const pbsa_flash_config *config, const pbsa_tuning_key *key,
                               const pbsa_device_info *info);

/*
 * The neighbours of from that the tuner tries next, in a fixed order: each parameter one step up
 * and down, and block_m with wg_rows, block_n with wg_cols one step together (which keeps each
 * work-item's tile). Only configurations usable for key on the device whose per-work-item
 * register tile stays moderate are returned, each once, from excluded. Writes at most capacity
 * of them to out and returns how many it wrote.
 */
size_t pbsa_tuning_neighbours(const pbsa_flash_config *from, const pbsa_tuning_key *key,
                              const pbsa_device_info *info, pbsa_flash_config *out,
                              size_t capacity);

#endif
