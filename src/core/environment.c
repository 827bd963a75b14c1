/* The PBSA_* environment variables, read once when a context is created. */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Copies the variable's value into out (empty when unset); returns whether it is set. */
static bool read_text(const char *name, char *out, size_t capacity)
{
    const char *text = getenv(name);
    snprintf(out, capacity, "%s", text ? text : "");
    return text != NULL;
}

/* Whether the variable is set to anything but "" or "0". */
static bool read_switch(const char *name)
{
    const char *text = getenv(name);
    return text && *text && strcmp(text, "0") != 0;
}

/* The method the variable names (its index in names, plus one), else 0: automatic. */
static int read_method(const char *name, const char *const names[2])
{
    const char *text = getenv(name);
    for (int m = 0; text && m < 2; m++)
        if (strcmp(text, names[m]) == 0)
            return m + 1;
    return 0;
}

void pbsa_environment_read(pbsa_environment *env)
{
    memset(env, 0, sizeof *env);
    read_text("PBSA_KERNEL_DIR", env->kernel_dir, sizeof env->kernel_dir);
    env->log_builds =
        read_text("PBSA_BUILD_OPTIONS", env->build_options, sizeof env->build_options);
    env->force_portable = read_switch("PBSA_FORCE_PORTABLE");
    const char *wgmma = getenv("PBSA_WGMMA");
    env->no_wgmma = wgmma && strcmp(wgmma, "0") == 0;
    const char *cache = getenv("PBSA_KERNEL_CACHE");
    if (cache && (strcmp(cache, "off") == 0 || strcmp(cache, "0") == 0))
        env->kernel_cache = -1;
    else if (cache && (strcmp(cache, "on") == 0 || strcmp(cache, "1") == 0))
        env->kernel_cache = 1;
    const char *tuning = getenv("PBSA_TUNING");
    env->tuning_off = tuning && (strcasecmp(tuning, "off") == 0 || strcmp(tuning, "0") == 0 ||
                                 strcasecmp(tuning, "no") == 0 || strcasecmp(tuning, "none") == 0);
    read_text("PBSA_TUNING_FILE", env->tuning_file, sizeof env->tuning_file);
    env->has_tile_config[0] =
        read_text("PBSA_FLASH_CONFIG", env->tile_config[0], sizeof env->tile_config[0]);
    env->has_tile_config[1] =
        read_text("PBSA_MMA_CONFIG", env->tile_config[1], sizeof env->tile_config[1]);
    static const char *const score_names[2] = {"fused", "clblast"};
    static const char *const kv_names[2] = {"gather", "materialised"};
    env->score_method = (pbsa_score_method)read_method("PBSA_SCORE_METHOD", score_names);
    env->kv_method = (pbsa_kv_method)read_method("PBSA_KV_METHOD", kv_names);
}
