/* What per-device tuning covers, declared once: the keys a tuned configuration is stored under,
 * the parameters of the flash kernels (cl/flash_tile.cl) and of the tensor-core kernels
 * (cl/mma_tile.cl) with their names in tuning files and the values pbsa-tune tries, and the
 * neighbourhoods the tuner searches. Pure: no OpenCL calls, no environment. */
#ifndef PBSA_TUNING_SPACE_H
#define PBSA_TUNING_SPACE_H

#include "tiles/flash_tile.h"
#include "tiles/mma_tile.h"

/* Version of the tuning file format and of the meaning of its parameters. Raise it when a
 * parameter changes meaning (a kernel rewrite that makes old tiles meaningless, say): files of an
 * older version are then ignored with a warning until they are tuned again. New kinds and
 * parameters are additions that leave older files valid (the tensor-core kinds came so), so they
 * keep the version. */
enum { PBSA_TUNING_SCHEMA = 1 };

/* What one tuned configuration is for. dtype: that of K and V (a call whose q or o has another
 * dtype uses the entry of its K/V dtype: K and V are most of the bytes a tile loads, and the
 * tensor cores compute in their type); block: the PBS logical block (0 for the dense kernels);
 * causal: 0 or 1 (always 0 for the scores kernel, which has no mask). */
typedef struct pbsa_tuning_key {
    pbsa_kernel_kind kind;
    pbsa_dtype dtype;
    int head_dim;
    int block;
    int causal;
} pbsa_tuning_key;

enum { PBSA_KERNEL_KIND_COUNT = 8 };

/* "dense", "sparse", "scores", "dense_mma", "sparse_mma", "scores_method", "dense_wgmma",
 * "sparse_wgmma"; NULL for an unknown kind. */
const char *pbsa_kernel_kind_name(pbsa_kernel_kind kind);
/* Whether kind is a kernel of the tensor-core tiles (dense_mma, sparse_mma and their wgmma
 * variants, which share their parameters). */
bool pbsa_kernel_kind_is_mma(pbsa_kernel_kind kind);
/* Whether kind is a kernel of the tensor-core tiles' wgmma variant (dense_wgmma, sparse_wgmma). */
bool pbsa_kernel_kind_is_wgmma(pbsa_kernel_kind kind);
/* Whether kind is a block-sparse attention kernel (sparse, sparse_mma, sparse_wgmma). */
bool pbsa_kernel_kind_is_sparse(pbsa_kernel_kind kind);
/* Whether kind is a choice of method rather than a kernel's tiles (scores_method). */
bool pbsa_kernel_kind_is_method(pbsa_kernel_kind kind);
/* Whether key names a variant the library has: a known kind and dtype, a supported head dim, a
 * block of 16, 32, 64 or 128 for the PBS kernels and 0 for the dense one, causal 0 or 1 (0 for
 * the scores kernel); the tensor-core kinds take f16 and bf16, the head dims of
 * pbsa_mma_config_head_dim() (the wgmma kinds 64 and 128), and
 * (sparse_mma) blocks 64 and 128, the only ones their tiles divide. */
bool pbsa_tuning_key_valid(const pbsa_tuning_key *key);
bool pbsa_tuning_key_equal(const pbsa_tuning_key *a, const pbsa_tuning_key *b);
/* The largest tile the kernel of key accepts (pbsa_flash_config_fits(), pbsa_mma_config_fits()):
 * the block for the sparse kernels, 0 (no limit) otherwise. */
int pbsa_tuning_key_max_tile(const pbsa_tuning_key *key);

/* The PBS methods measured on the device rather than derived (the scores_method kind). */
typedef struct pbsa_method_config {
    int clblast; /* the permutation scores through CLBlast (src/pbs/scores_clblast.c) */
} pbsa_method_config;

/* A configuration of one kernel kind: flash for the kinds of cl/flash_tile.cl (dense, sparse,
 * scores), mma for those of cl/mma_tile.cl (pbsa_kernel_kind_is_mma()), method for the
 * scores_method kind. The key says which. */
typedef union pbsa_kernel_config {
    pbsa_flash_config flash;
    pbsa_mma_config mma;
    pbsa_method_config method;
} pbsa_kernel_config;

/*
 * The tuned parameters: int members of pbsa_flash_config or pbsa_mma_config, each with its name
 * in tuning files and descriptions (unique over both), the range a file may hold (anything else
 * marks the file corrupt) and the values the tuner steps through, in increasing order.
 *
 * Extension point: parameters that are not tiles of a kernel (the PBS plan's methods: sort
 * variant, CLBlast scores, materialised K/V) join as another space over their own struct and
 * kind, with their names (symbolic values) in the same entry lines; the key, the file format and
 * the lookup order stay as they are.
 */
typedef struct pbsa_tuning_param {
    const char *name;
    size_t offset; /* of an int member of the space's struct (a member of pbsa_kernel_config) */
    int min, max;  /* accepted in tuning files */
    const int *steps;
    int step_count;
} pbsa_tuning_param;

/* The parameters of one kernel family, in the order of its -D options and of its environment
 * variable, which overrides the configuration of every call of the family (for experiments):
 * PBSA_FLASH_CONFIG="block_m,block_n,wg_rows,wg_cols,kchunk,vchunk[,unroll_qk,unroll_pv]",
 * PBSA_MMA_CONFIG="warps,groups,keys,stages". The method space has no such variable (NULL):
 * PBSA_SCORE_METHOD names the method instead (src/pbs/plan.c). */
typedef struct pbsa_tuning_space {
    const char *environment;
    const pbsa_tuning_param *params;
    int param_count;
} pbsa_tuning_space;

enum { PBSA_TUNING_SPACE_COUNT = 3 };
/* The flash space, the tensor-core one, then the methods'. */
extern const pbsa_tuning_space pbsa_tuning_spaces[PBSA_TUNING_SPACE_COUNT];
/* The space of kind's configuration (the flash one for unknown kinds). Its index in
 * pbsa_tuning_spaces is the one of its environment variable in pbsa_environment. */
const pbsa_tuning_space *pbsa_tuning_space_of(pbsa_kernel_kind kind);

int pbsa_tuning_param_get(const pbsa_kernel_config *config, const pbsa_tuning_param *param);
void pbsa_tuning_param_set(pbsa_kernel_config *config, const pbsa_tuning_param *param, int value);

/* The flash configuration with every parameter explicit (unrolling 0 becomes the chunk it
 * unrolls). */
pbsa_flash_config pbsa_tuning_explicit(const pbsa_flash_config *config);

/* Writes config of kind as "block_m=64 block_n=64 ... unroll_pv=16" (explicit unrolling) or
 * "warps=4 groups=1 keys=64 stages=2" into out; returns false when it did not fit (out is still
 * NUL-terminated when capacity > 0). */
bool pbsa_tuning_format_config(pbsa_kernel_kind kind, const pbsa_kernel_config *config, char *out,
                               size_t capacity);
/* Reads "v1,v2,..." (the values of kind's parameters in their order; trailing parameters that
 * may be 0 may be left out, all or none) into *out; false when text is not that. */
bool pbsa_tuning_parse_values(pbsa_kernel_kind kind, const char *text, pbsa_kernel_config *out);
/* Whether two configurations of kind build the same kernel (unrolling 0 and full compare equal). */
bool pbsa_tuning_config_equal(pbsa_kernel_kind kind, const pbsa_kernel_config *a,
                              const pbsa_kernel_config *b);

/* Whether config is usable for key on the device: valid for the head dim and the device's limits
 * and fitting the key's logical block. */
bool pbsa_tuning_config_usable(const pbsa_kernel_config *config, const pbsa_tuning_key *key,
                               const pbsa_device_info *info);
/* The built-in rule's configuration for key (pbsa_flash_config_heuristic(),
 * pbsa_mma_config_heuristic()); check it with pbsa_tuning_config_usable(). */
pbsa_kernel_config pbsa_tuning_heuristic(const pbsa_tuning_key *key, const pbsa_device_info *info);

/*
 * The configurations the tuner tries next from from, in a fixed order. Flash kinds: each
 * parameter one step up and down, and block_m with wg_rows, block_n with wg_cols one step
 * together (which keeps each work-item's tile), where the per-work-item register tile stays
 * moderate. Tensor-core kinds: the whole space (24 points, in the order of the parameters'
 * steps; pbsa-tune --quick keeps those one parameter step from from). Only configurations usable
 * for key on the device are returned, each once, from excluded. Writes at most capacity of them
 * to out and returns how many it wrote.
 */
size_t pbsa_tuning_neighbours(const pbsa_kernel_config *from, const pbsa_tuning_key *key,
                              const pbsa_device_info *info, pbsa_kernel_config *out,
                              size_t capacity);

#endif
