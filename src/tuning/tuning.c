/* Tuning data of a context: loading at context creation, the lookup order, and
 * pbsa_query_kernel_config(). */
#include "tuning/tuning.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { ORIGIN_CAPACITY = 4200 };

/* One source of tuning data that is for this device. */
typedef struct tuning_layer {
    pbsa_config_source source;
    char origin[ORIGIN_CAPACITY]; /* "user tuning file /path" */
    pbsa_tuning_file file;        /* only the entries usable on the device */
} tuning_layer;

struct pbsa_tuning {
    char platform[PBSA_TUNING_TEXT];
    bool disabled;        /* PBSA_TUNING=off */
    tuning_layer *layers; /* in lookup order */
    size_t layer_count;
    bool forced_set[PBSA_KERNEL_KIND_COUNT];
    pbsa_kernel_config forced[PBSA_KERNEL_KIND_COUNT];
};

static void read_platform_name(cl_device_id device, char *out, size_t capacity)
{
    cl_platform_id platform = NULL;
    char name[PBSA_TUNING_TEXT] = "";
    if (clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) ==
            CL_SUCCESS &&
        clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof name, name, NULL) == CL_SUCCESS)
        name[sizeof name - 1] = '\0';
    else
        name[0] = '\0';
    pbsa_tuning_normalise_name(name, out, capacity);
}

/* Parses text into a layer when it is for this device, keeping the entries that fit the device.
 * quiet_if_foreign: built-in data of other devices is expected and not reported. */
static void add_layer(struct pbsa_tuning *t, const pbsa_device_info *info,
                      pbsa_config_source source, const char *origin, const char *text,
                      size_t length, bool quiet_if_foreign)
{
    pbsa_tuning_file file;
    char error[512];
    pbsa_tuning_result result = pbsa_tuning_parse(text, length, &file, error, sizeof error);
    if (result == PBSA_TUNING_NO_MEMORY) {
        pbsa_log(PBSA_LOG_WARNING, "pbsa_context_create: out of memory reading %s; ignored",
                 origin);
        return;
    }
    if (result == PBSA_TUNING_OUTDATED || result == PBSA_TUNING_NEWER) {
        pbsa_log(PBSA_LOG_WARNING, "pbsa_context_create: %s is ignored: %s%s", origin, error,
                 result == PBSA_TUNING_OUTDATED ? "; run pbsa-tune again" : "");
        return;
    }
    if (result != PBSA_TUNING_OK) {
        pbsa_log(PBSA_LOG_WARNING, "pbsa_context_create: %s is corrupt and ignored: %s", origin,
                 error);
        return;
    }
    if (!pbsa_tuning_same_device(&file, t->platform, info->name)) {
        if (!quiet_if_foreign) {
            char device[PBSA_TUNING_TEXT];
            pbsa_tuning_normalise_name(info->name, device, sizeof device);
            pbsa_log(PBSA_LOG_WARNING,
                     "pbsa_context_create: %s is ignored: it was tuned on '%s' (platform '%s'), "
                     "not on this "
                     "device '%s' (platform '%s')",
                     origin, file.device, file.platform, device, t->platform);
        }
        pbsa_tuning_file_free(&file);
        return;
    }
    if (file.driver[0] && strcmp(file.driver, info->driver_version) != 0)
        pbsa_log(PBSA_LOG_INFO,
                 "pbsa_context_create: %s was tuned with driver %s; this device runs %s (pbsa-tune "
                 "again if "
                 "the speed changed)",
                 origin, file.driver, info->driver_version);
    /* Keep the entries that fit this device; report the others once. */
    size_t kept = 0, dropped = 0;
    int first_dropped = 0;
    for (size_t i = 0; i < file.count; i++) {
        if (pbsa_tuning_config_usable(&file.entries[i].config, &file.entries[i].key, info)) {
            file.entries[kept++] = file.entries[i];
        } else if (dropped++ == 0) {
            first_dropped = file.entries[i].line;
        }
    }
    file.count = kept;
    if (dropped)
        pbsa_log(PBSA_LOG_WARNING,
                 "pbsa_context_create: %zu entr%s of %s do%s not fit this device and %s ignored "
                 "(first at "
                 "line %d)",
                 dropped, dropped == 1 ? "y" : "ies", origin, dropped == 1 ? "es" : "",
                 dropped == 1 ? "is" : "are", first_dropped);
    tuning_layer *layer = &t->layers[t->layer_count++];
    layer->source = source;
    snprintf(layer->origin, sizeof layer->origin, "%s", origin);
    layer->file = file;
    pbsa_log(PBSA_LOG_INFO, "pbsa_context_create: using %s (%zu entr%s)", origin, kept,
             kept == 1 ? "y" : "ies");
}

/* Reads a file from disk into a layer; a missing file is reported only when required. */
static void add_file_layer(struct pbsa_tuning *t, const pbsa_device_info *info,
                           pbsa_config_source source, const char *label, const char *path,
                           bool required)
{
    char origin[ORIGIN_CAPACITY];
    snprintf(origin, sizeof origin, "%s %s", label, path);
    char *text = NULL;
    size_t length = 0;
    int err = pbsa_tuning_read_file(path, &text, &length);
    if (err == ENOENT && !required)
        return;
    if (err) {
        pbsa_log(PBSA_LOG_WARNING, "pbsa_context_create: cannot read %s (%s); ignored", origin,
                 err == EFBIG    ? "larger than 1 MiB"
                 : err == EINVAL ? "not a regular file"
                                 : strerror(err));
        return;
    }
    add_layer(t, info, source, origin, text, length, false);
    free(text);
}

void pbsa_tuning_release(pbsa_context *ctx)
{
    struct pbsa_tuning *t = ctx->tuning;
    if (!t)
        return;
    for (size_t i = 0; i < t->layer_count; i++)
        pbsa_tuning_file_free(&t->layers[i].file);
    free(t->layers);
    free(t);
    ctx->tuning = NULL;
}

void pbsa_tuning_load(pbsa_context *ctx, const pbsa_tuning_text *builtin, size_t builtin_count)
{
    struct pbsa_tuning *previous = ctx->tuning;
    struct pbsa_tuning *t = calloc(1, sizeof *t);
    tuning_layer *layers = calloc(2 + builtin_count, sizeof *layers);
    if (!t || !layers) {
        free(t);
        free(layers);
        pbsa_log(PBSA_LOG_WARNING, "pbsa_context_create: out of memory: tuning data ignored");
        return;
    }
    if (previous) { /* keep what a tool forced */
        memcpy(t->forced_set, previous->forced_set, sizeof t->forced_set);
        memcpy(t->forced, previous->forced, sizeof t->forced);
        pbsa_tuning_release(ctx);
    }
    t->layers = layers;
    read_platform_name(ctx->device, t->platform, sizeof t->platform);
    ctx->tuning = t;
    t->disabled = ctx->env.tuning_off;
    if (t->disabled) {
        pbsa_log(PBSA_LOG_INFO, "pbsa_context_create: PBSA_TUNING=off: tuning data ignored");
        return;
    }
    const char *named = ctx->env.tuning_file;
    if (named[0])
        add_file_layer(t, &ctx->info, PBSA_CONFIG_TUNING_FILE, "PBSA_TUNING_FILE", named, true);
    char path[ORIGIN_CAPACITY - 64];
    if (pbsa_tuning_user_path(ctx->info.name, path, sizeof path))
        add_file_layer(t, &ctx->info, PBSA_CONFIG_USER_FILE, "user tuning file", path, false);
    for (size_t i = 0; i < builtin_count; i++) {
        char origin[ORIGIN_CAPACITY];
        snprintf(origin, sizeof origin, "built-in tuning data tuning/%s", builtin[i].name);
        add_layer(t, &ctx->info, PBSA_CONFIG_BUILTIN, origin, builtin[i].text,
                  strlen(builtin[i].text), true);
    }
}

bool pbsa_tuning_force(pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_kernel_config *config)
{
    if (!ctx->tuning) {
        ctx->tuning = calloc(1, sizeof *ctx->tuning);
        if (!ctx->tuning)
            return false;
    }
    if ((int)kind < 0 || (int)kind >= PBSA_KERNEL_KIND_COUNT)
        return false;
    ctx->tuning->forced_set[kind] = config != NULL;
    if (config)
        ctx->tuning->forced[kind] = *config;
    return true;
}

const char *pbsa_tuning_platform(const pbsa_context *ctx)
{
    return ctx->tuning ? ctx->tuning->platform : "";
}

/* "text" or "text, line N" into origin. */
static void set_origin(char *origin, size_t capacity, const char *text, int line)
{
    if (capacity == 0)
        return;
    if (line > 0)
        snprintf(origin, capacity, "%s, line %d", text, line);
    else
        snprintf(origin, capacity, "%s", text);
}

pbsa_kernel_config pbsa_tuning_lookup(const pbsa_context *ctx, const pbsa_tuning_key *key_in,
                                      pbsa_config_source *source, char *origin, size_t capacity)
{
    pbsa_tuning_key key = *key_in;
    if (key.kind == PBSA_KERNEL_DENSE || key.kind == PBSA_KERNEL_DENSE_MMA ||
        key.kind == PBSA_KERNEL_DENSE_WGMMA)
        key.block = 0;
    if (key.kind == PBSA_KERNEL_SCORES)
        key.causal = 0;
    key.causal = key.causal ? 1 : 0;
    const struct pbsa_tuning *t = ctx->tuning;
    const pbsa_device_info *info = &ctx->info;
    const pbsa_tuning_space *space = pbsa_tuning_space_of(key.kind);
    const int space_index = (int)(space - pbsa_tuning_spaces);
    const char *variable = space->environment;
    const char *text = space_index < PBSA_TILE_CONFIG_VARIABLES &&
                               ctx->env.has_tile_config[space_index]
                           ? ctx->env.tile_config[space_index]
                           : NULL;
    pbsa_config_source found = PBSA_CONFIG_HEURISTIC;
    pbsa_kernel_config config;
    bool have = false;
    if (t && (int)key.kind >= 0 && (int)key.kind < PBSA_KERNEL_KIND_COUNT &&
        t->forced_set[key.kind] && pbsa_tuning_config_usable(&t->forced[key.kind], &key, info)) {
        config = t->forced[key.kind];
        found = PBSA_CONFIG_FORCED;
        set_origin(origin, capacity, "forced by the tuner", 0);
        have = true;
    }
    if (!have && text && pbsa_tuning_parse_values(key.kind, text, &config) &&
        pbsa_tuning_config_usable(&config, &key, info)) {
        found = PBSA_CONFIG_ENVIRONMENT;
        set_origin(origin, capacity, variable, 0);
        have = true;
    }
    for (size_t i = 0; !have && t && !t->disabled && i < t->layer_count; i++) {
        const pbsa_tuning_entry *e = pbsa_tuning_file_find(&t->layers[i].file, &key);
        if (e && pbsa_tuning_config_usable(&e->config, &key, info)) {
            config = e->config;
            found = t->layers[i].source;
            set_origin(origin, capacity, t->layers[i].origin, e->line);
            have = true;
        }
    }
    if (!have) {
        config = pbsa_tuning_heuristic(&key, info);
        set_origin(origin, capacity,
                   t && t->disabled ? "heuristic default, PBSA_TUNING=off" : "heuristic default",
                   0);
    }
    if (source)
        *source = found;
    return config;
}
