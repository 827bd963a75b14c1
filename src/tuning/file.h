/* Tuning files: the text format pbsa-tune writes and the library reads, as pure functions over
 * buffers (no file system, no OpenCL, no global state: safe to fuzz and to call from any thread).
 *
 * Format (version PBSA_TUNING_SCHEMA), UTF-8 text, one statement per line; blank lines and lines
 * starting with '#' are ignored, trailing spaces and CR are dropped, tabs count as spaces:
 *
 *     pbsattn-tuning 1
 *     platform NVIDIA CUDA
 *     device NVIDIA H100 80GB HBM3
 *     driver 550.54.15
 *     generator pbsa-tune 0.1.0 --quick --preset llama3-8b --dtype bf16
 *     date 2026-01-31T12:00:00Z
 *     entry kernel=dense dtype=bf16 head_dim=128 block=0 causal=1 block_m=64 block_n=64 wg_rows=8
 *         wg_cols=16 kchunk=16 vchunk=16 unroll_qk=16 unroll_pv=16 ms=21.5 default_ms=22.9 ...
 *     entry kernel=sparse_mma dtype=bf16 head_dim=128 block=128 causal=1 warps=4 groups=1
 *         keys=64 stages=2 ms=12.1 default_ms=12.6 ...
 *
 * (an entry is one line). The first statement is the version line. platform and device are
 * required and key the file (compared after pbsa_tuning_normalise_name(), ignoring case); driver,
 * generator and date are metadata, each statement at most once. An entry names its key (kernel
 * dense, sparse, scores, dense_mma or sparse_mma; dtype f32, f16 or bf16; head_dim; block, 0 or
 * absent for the dense kernels; causal 0 or 1; pbsa_tuning_key_valid()) and the parameters of its
 * kernel's space in src/tuning/space.c, no others (flash kinds: block_m .. unroll_pv, where
 * unroll_qk and unroll_pv may be absent or 0: full; tensor-core kinds: warps, groups, keys,
 * stages); ms, default_ms (decimal), seq, heads and kv_heads are metadata of the tuning run. A
 * later entry with the same key replaces an earlier one. Anything else makes the whole file
 * corrupt. */
#ifndef PBSA_TUNING_FILE_H
#define PBSA_TUNING_FILE_H

#include "tuning/space.h"

enum {
    PBSA_TUNING_MAX_BYTES = 1 << 20, /* larger files are rejected unread */
    PBSA_TUNING_MAX_ENTRIES = 4096,
    PBSA_TUNING_TEXT = 256, /* capacity of each header text, NUL included */
};

typedef struct pbsa_tuning_entry {
    pbsa_tuning_key key;
    pbsa_kernel_config config; /* the member of key.kind */
    double ms, default_ms;    /* metadata: tuned and default time; negative when absent */
    int seq, heads, kv_heads; /* metadata: the shape tuned on; 0 when absent */
    int line;                 /* line number in the file it was read from; 0 when not read */
} pbsa_tuning_entry;

typedef struct pbsa_tuning_file {
    int schema;
    char platform[PBSA_TUNING_TEXT];
    char device[PBSA_TUNING_TEXT];
    char driver[PBSA_TUNING_TEXT];
    char generator[PBSA_TUNING_TEXT];
    char date[PBSA_TUNING_TEXT];
    pbsa_tuning_entry *entries; /* owned; free with pbsa_tuning_file_free() */
    size_t count, capacity;
} pbsa_tuning_file;

typedef enum pbsa_tuning_result {
    PBSA_TUNING_OK = 0,
    PBSA_TUNING_CORRUPT,  /* not a tuning file, or a malformed statement */
    PBSA_TUNING_OUTDATED, /* an older version of the format: tune again */
    PBSA_TUNING_NEWER,    /* a newer version than this library reads */
    PBSA_TUNING_NO_MEMORY,
} pbsa_tuning_result;

/* Parses length bytes of text into *out (which the caller frees with pbsa_tuning_file_free()
 * whatever the result). On anything but PBSA_TUNING_OK, out holds no entries and error (capacity
 * bytes, may be NULL when capacity is 0) says why, with the line number. */
pbsa_tuning_result pbsa_tuning_parse(const char *text, size_t length, pbsa_tuning_file *out,
                                     char *error, size_t error_capacity);
void pbsa_tuning_file_free(pbsa_tuning_file *file);

/* Adds entry, replacing an entry of the same key. False when out of memory or full. */
bool pbsa_tuning_file_put(pbsa_tuning_file *file, const pbsa_tuning_entry *entry);
/* The entry of key, or NULL. */
const pbsa_tuning_entry *pbsa_tuning_file_find(const pbsa_tuning_file *file,
                                               const pbsa_tuning_key *key);

/* The text of file (header texts sanitised to one line each), NUL-terminated, to free(); NULL
 * when out of memory. Parsing it gives the same header and entries back. */
char *pbsa_tuning_format(const pbsa_tuning_file *file);

/* A device or platform name as tuning files key it: surrounding white space trimmed, inner runs
 * of white space and control characters collapsed to one space, and AMD feature suffixes
 * (":sramecc+:xnack-") removed. Truncated to capacity - 1 bytes. */
void pbsa_tuning_normalise_name(const char *name, char *out, size_t capacity);
/* Whether file was tuned on this platform and device (normalised names, case ignored). */
bool pbsa_tuning_same_device(const pbsa_tuning_file *file, const char *platform,
                             const char *device);
/* The file name of a device's user tuning file: the normalised name with every character
 * outside [A-Za-z0-9._-] replaced by '_', at most 120 of them, then ".txt". */
void pbsa_tuning_file_name(const char *device, char *out, size_t capacity);

#endif
