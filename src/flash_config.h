/* Tile configurations of the flash-attention kernels (cl/flash_tile.cl). */
#ifndef PBSA_FLASH_CONFIG_H
#define PBSA_FLASH_CONFIG_H

#include "internal.h"

typedef struct pbsa_flash_config {
    int block_m;  /* queries per work-group */
    int block_n;  /* keys per tile */
    int wg_rows;  /* work-items along queries */
    int wg_cols;  /* work-items along keys / head dims */
    int kchunk;   /* head dims staged per Q.K^T step */
    int vchunk;   /* keys staged per P.V step */
} pbsa_flash_config;

/* Local memory (bytes) the kernel declares for config and head_dim. */
size_t pbsa_flash_local_bytes(const pbsa_flash_config *config, int head_dim);
/* Whether config satisfies the kernel's shape rules for head_dim and fits the device. */
bool pbsa_flash_config_valid(const pbsa_flash_config *config, int head_dim,
                             const pbsa_device_info *info);
/* The default configuration for this device and head dim whose tiles divide max_tile (the logical
 * block of the sparse kernel; 0 for no limit). Check the result with pbsa_flash_config_valid(). */
pbsa_flash_config pbsa_flash_config_default(const pbsa_device_info *info, int head_dim,
                                            int max_tile);
/* Writes the build options of a flash kernel variant (dtype, head dim, causal and tiles). */
bool pbsa_flash_options(char *options, size_t capacity, pbsa_dtype dtype, int head_dim, int causal,
                        const pbsa_flash_config *config);

#endif
