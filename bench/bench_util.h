/* What the benchmark programs share: command-line helpers, the device set-up, random inputs in
 * the storage types, run metadata for the JSON files, and the timing loop.
 *
 * Timing: every operation is timed by OpenCL profiling events as device time from the end of a
 * small marker command enqueued just before it to the end of its last command. While the
 * operation is enqueued, the queue is held back by a user event, so the host's enqueue time is
 * not counted, only what the device spends, gaps between the operation's kernels included. For a
 * single-kernel operation this is its kernel time plus one launch. */
#ifndef PBSA_BENCH_UTIL_H
#define PBSA_BENCH_UTIL_H

#include "device.h"
#include "host_tensor.h"
#include "json_writer.h"
#include "pbsattn.h"
#include "splitmix.h"
#include "timing.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { BENCH_MAX_LENGTHS = 64, BENCH_NO_DEVICE = 3 };

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */

/* Options every benchmark takes. Zero (or false) means "not given": the program fills in its
 * defaults after parsing, which may depend on the device. */
typedef struct bench_common_options {
    const char *device;
    int64_t lengths[BENCH_MAX_LENGTHS];
    int length_count;
    bool dtype_given;
    pbsa_dtype dtype;
    bool kv_dtype_given; /* --kv-dtype: K and V's, where a program takes it (else --dtype's) */
    pbsa_dtype kv_dtype;
    int heads, kv_heads, head_dim;
    int repeats, warmup;
    double max_seconds;
    const char *json_path;
    bool seed_given;
    unsigned long long seed;
    int portable;
} bench_common_options;

/* Parses a decimal integer in [min, max]. */
bool bench_parse_int(const char *text, long long min, long long max, long long *out);
/* Parses a floating-point number in (min, max]. */
bool bench_parse_double(const char *text, double min, double max, double *out);
/* Parses "L1,L2,..." (each 1 .. INT32_MAX, at most capacity of them). */
bool bench_parse_lengths(const char *text, int64_t *lengths, int capacity, int *count);
/* "f32", "f16", "bf16". */
bool bench_parse_dtype(const char *text, pbsa_dtype *out);
const char *bench_dtype_name(pbsa_dtype dtype);

/* A program's own option: arg with its value. Returns 1 when it took them, 0 when arg is not one
 * of its options and -1 when value is bad for it. */
typedef int (*bench_own_option)(const char *arg, const char *value, void *data);

/*
 * Parses the command line: --help or -h (usage to stdout, returns -1), the common options
 * --device, --lengths, --dtype, --kv-dtype, --heads, --kv-heads, --head-dim, --repeats, --warmup,
 * --max-seconds, --json, --seed (each with a value) and --portable into *common, and every other
 * "--name value" through own(arg, value, data). Returns 0, or 2 after a message naming the bad
 * or unknown argument (usage to stderr for an unknown one).
 */
int bench_parse_options(const char *program, int argc, char **argv, void (*usage)(FILE *),
                        bench_common_options *common, bench_own_option own, void *data);

/* Checks what depends on several options (--kv-heads divides --heads); sets kv_heads to heads
 * when it was not given. Returns false after printing a message. */
bool bench_check_common_options(const char *program, bench_common_options *o);

/* The command line as one string, arguments with unusual characters single-quoted. */
void bench_join_command_line(int argc, char **argv, char *out, size_t capacity);

/* ---------------------------------------------------------------------------------------------
 * Inputs and buffers
 * ------------------------------------------------------------------------------------------- */

/* A float uniform in [-1, 1), from a 32-bit half of a splitmix64 output. */
static inline float bench_unit_float(uint32_t bits)
{
    return (float)((int64_t)bits - 0x80000000ll) * 0x1.0p-31f;
}

/* Blocking read of count elements of element size from element first of buffer into host. */
cl_int bench_read_elements(cl_command_queue queue, cl_mem buffer, size_t element, size_t first,
                           size_t count, void *host);
/* Fills bytes of buffer (elements of element size) with all-ones bits, NaN in every dtype, so
 * that elements a kernel never writes show up in a check. Does not wait. */
cl_int bench_poison(cl_command_queue queue, cl_mem buffer, size_t element, size_t bytes);
/* Releases *m when not NULL and sets it to NULL. */
void bench_release_mem(cl_mem *m);
/* Creates a buffer of bytes with flags and, when host is not NULL, writes host into it. */
cl_mem bench_create_buffer(cl_context cl_ctx, cl_command_queue queue, cl_mem_flags flags,
                           size_t bytes, const void *host, cl_int *err);

/* ---------------------------------------------------------------------------------------------
 * Device and run metadata
 * ------------------------------------------------------------------------------------------- */

typedef struct bench_run_info {
    char command_line[4096];
    char date[32];
    char platform_name[256];
    char platform_version[256];
    char device_version[256];
    pbsa_device_info device;
} bench_run_info;

/* Fills the command line and the date (UTC) of ri. */
void bench_run_info_init(bench_run_info *ri, int argc, char **argv);

/* Picks the device (selector as pbsa_helper_create_cl_context() takes it), creates a profiling
 * queue and a library context (portable kernels when force_portable), routes the library's
 * warnings to stderr, and reads the device and platform information into ri. Returns 0, or
 * after printing why BENCH_NO_DEVICE when there is no OpenCL device, 2 on other failures. */
int bench_device_open(const char *program, const char *selector, int force_portable,
                      support_device *d, bench_run_info *ri);
/* Prints the "device: ..." line of a result table. */
void bench_print_device(const bench_run_info *ri);

/* Opens path.tmp for a JSON document; the caller writes it through w, then calls
 * bench_json_close(), which renames it to path when everything was written. NULL on error
 * (after a message). */
FILE *bench_json_open(const char *program, const char *path, json_writer *w);
/* Returns 0 on success, 1 after a message. */
int bench_json_close(const char *program, const char *path, FILE *file, json_writer *w);
/* The members every result file starts with: the benchmark's name, library version, date,
 * command line, device, vendor, driver, OpenCL versions, platform, compute units, memory. */
void bench_json_run_info(json_writer *w, const char *benchmark, const bench_run_info *ri);

/* ---------------------------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------------------------- */

/* Kernel time of a completed event, in milliseconds; negative on error. */
double bench_event_ms(cl_event event);

/* Enqueues one run of an operation on queue, its inputs chosen by run (0, 1, 2, ...; the last
 * warm-up run is run 0), and hands back the event of its last command, which the caller
 * releases. Returns PBSA_SUCCESS or a status; *last is NULL on error. */
typedef int (*bench_enqueue_fn)(void *user, cl_command_queue queue, int run, cl_event *last);

typedef struct bench_op {
    const char *name;
    bench_enqueue_fn enqueue;
    void *user;
    double *times; /* room for the timed runs; written by bench_run_ops() */
} bench_op;

typedef struct bench_timer {
    const char *program; /* for messages */
    const char *label;   /* progress lines start with "program: label: " */
    pbsa_context *ctx;   /* for the text of errors */
    cl_context cl_ctx;
    cl_command_queue queue;
    cl_mem mark; /* the marker commands fill 4 bytes of it */
    int warmup;  /* untimed runs first (kernel builds happen there) */
    int repeats; /* timed runs at most */
    int min_runs; /* kept even when max_seconds has passed */
    double max_seconds;
} bench_timer;

/* Creates the marker buffer of t, whose other fields the caller sets. */
cl_int bench_timer_init(bench_timer *t, const support_device *d);
void bench_timer_release(bench_timer *t);

/* Device time of one run of op, in ms (see the top of this file). */
int bench_time_op(const bench_timer *t, const bench_op *op, int run, double *ms);

/*
 * t->warmup untimed rounds (runs t->warmup - 1 down to 0, so the last leaves the results of
 * run 0), then timed rounds 0, 1, ... until t->repeats, or until t->max_seconds have passed
 * and t->min_runs are done. A round runs every op once, in order, so that the ops are timed
 * under the same conditions. Progress lines go to stderr. Returns the number of timed rounds, or
 * -1 with the reason in error.
 */
int bench_run_ops(const bench_timer *t, bench_op *ops, int count, char *error,
                  size_t error_size);

#endif
