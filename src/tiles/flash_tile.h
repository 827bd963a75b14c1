/* The portable tile family (cl/flash_tile.cl): its configurations, their rules, local-memory need,
 * heuristic defaults and -D options. src/launch/dispatch.c decides when a call runs on it. */
#ifndef PBSA_FLASH_TILE_H
#define PBSA_FLASH_TILE_H

#include "core/internal.h"

/* The tuning parameters of cl/flash_tile.cl, passed to it as -D options. src/tuning/space.c
 * declares them (names in tuning files, value ranges, values the tuner tries). */
typedef struct pbsa_flash_config {
    int block_m;  /* queries per work-group */
    int block_n;  /* keys per tile */
    int wg_rows;  /* work-items along queries */
    int wg_cols;  /* work-items along keys / head dims */
    int kchunk;   /* head dims staged per Q.K^T step */
    int vchunk;   /* keys staged per P.V step */
    int unroll_qk; /* unrolling of the Q.K^T loop over kchunk; 0 means full (kchunk) */
    int unroll_pv; /* unrolling of the P.V loop over vchunk; 0 means full (vchunk) */
} pbsa_flash_config;

/* Local memory (bytes) the kernel declares for config and head_dim. */
size_t pbsa_flash_local_bytes(const pbsa_flash_config *config, int head_dim);
/* Whether config satisfies the kernel's shape rules for head_dim and fits the device. */
bool pbsa_flash_config_valid(const pbsa_flash_config *config, int head_dim,
                             const pbsa_device_info *info);
/* Whether the tiles of config divide max_tile (the logical block of the sparse kernel; 0: no
 * limit). */
bool pbsa_flash_config_fits(const pbsa_flash_config *config, int max_tile);
/* Two configurations that build the same kernel (unrolling 0 and full compare equal). */
bool pbsa_flash_config_equal(const pbsa_flash_config *a, const pbsa_flash_config *b);
/* The per-device-class list of configurations, largest first: the heuristic's candidates and the
 * rungs a call steps down through when the compiled kernel allows fewer work-items. Sets *list and
 * returns its length. */
size_t pbsa_flash_ladder(const pbsa_device_info *info, const pbsa_flash_config **list);
/* The built-in rule: the first valid configuration of pbsa_flash_ladder() whose tiles divide
 * max_tile. Check the result with pbsa_flash_config_valid() (a tiny device may have none). */
pbsa_flash_config pbsa_flash_config_heuristic(const pbsa_device_info *info, int head_dim,
                                              int max_tile);
/* Writes the build options of a flash kernel variant (dtypes, head dim, causal, tiles and
 * unrolling). */
bool pbsa_flash_options(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                        int causal, const pbsa_flash_config *config);

#endif
