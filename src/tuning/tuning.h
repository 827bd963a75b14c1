/* Per-device tuning data of a context: the tuning files read at context creation and the lookup
 * of a kernel kind's configuration. src/launch/dispatch.c asks it for the family a call runs on. */
#ifndef PBSA_TUNING_H
#define PBSA_TUNING_H

#include "tuning/file.h"

/* A tuning file compiled into the library: name (as in the repository's tuning/ folder) and its
 * NUL-terminated text. */
typedef struct pbsa_tuning_text {
    const char *name;
    const char *text;
} pbsa_tuning_text;

/* The files of tuning/, embedded by src/embed_files.py. */
extern const pbsa_tuning_text pbsa_builtin_tuning[];
extern const size_t pbsa_builtin_tuning_count;

/* Reads the tuning data of ctx's device into ctx->tuning (replacing what was there), in lookup
 * order: the file named by PBSA_TUNING_FILE, the user's tuning file of the device, then those
 * of builtin (pbsa_builtin_tuning for contexts; tests pass their own) that are for this device.
 * Nothing is read when PBSA_TUNING is "off", "0", "no" or "none". A file that cannot be read or
 * parsed, is of another device or of another format version is ignored with a warning through
 * the log callback, as is every entry that does not fit the device. Never fails: without memory
 * the context runs on the heuristic defaults. Not to be called while ctx is in use. */
void pbsa_tuning_load(pbsa_context *ctx, const pbsa_tuning_text *builtin, size_t builtin_count);
void pbsa_tuning_release(pbsa_context *ctx);

/* Forces config (the member of kind) on every later call of kind on ctx, above every other
 * source, where it is usable (NULL: no longer). For pbsa-tune, which times candidates through
 * the public calls; not to be called while other threads use ctx. False when out of memory or
 * kind is unknown. */
bool pbsa_tuning_force(pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_kernel_config *config);

/* The configuration of key on ctx (the member of key->kind) and its source: the first usable one
 * of the forced configuration, the environment variable of the kind's space (PBSA_FLASH_CONFIG,
 * PBSA_MMA_CONFIG, read when ctx was created), the tuning files in lookup order, else the heuristic
 * (which may not be usable: check it). block is ignored for the dense kinds and causal for the
 * scores kind. origin (may be NULL when capacity is 0) receives where it came from ("user tuning
 * file PATH, line N"); source may be NULL. Thread-safe. */
pbsa_kernel_config pbsa_tuning_lookup(const pbsa_context *ctx, const pbsa_tuning_key *key,
                                      pbsa_config_source *source, char *origin, size_t capacity);

/* The platform name of ctx's device as tuning files key it (normalised). */
const char *pbsa_tuning_platform(const pbsa_context *ctx);

/* ---- the file system (src/tuning/store.c) ---- */

/* The user's tuning file of device: $XDG_CONFIG_HOME/pbsattn/tuning/NAME, else
 * $HOME/.config/pbsattn/tuning/NAME, NAME from pbsa_tuning_file_name(). False when neither
 * variable is set to an absolute path or the path does not fit. */
bool pbsa_tuning_user_path(const char *device, char *out, size_t capacity);

/* Reads a regular file of at most PBSA_TUNING_MAX_BYTES into *text (NUL-terminated, to free()).
 * Returns 0, or an errno value (EFBIG for a larger file, EINVAL for one that is not a regular
 * file). */
int pbsa_tuning_read_file(const char *path, char **text, size_t *length);

/* Writes text to path atomically: into a new temporary file next to it, flushed to disk, then
 * renamed over path; missing parent folders are created. Returns 0 or an errno value. */
int pbsa_tuning_write_file(const char *path, const char *text);

#endif
