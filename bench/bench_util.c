/* Shared parts of the benchmark programs (see bench_util.h). */
#include "bench_util.h"

#include "pbsattn_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * Command line
 * ------------------------------------------------------------------------------------------- */

bool bench_parse_int(const char *text, long long min, long long max, long long *out)
{
    char *end;
    long long value = strtoll(text, &end, 10);
    if (end == text || *end || value < min || value > max)
        return false;
    *out = value;
    return true;
}

bool bench_parse_double(const char *text, double min, double max, double *out)
{
    char *end;
    double value = strtod(text, &end);
    if (end == text || *end || !(value > min) || !(value <= max))
        return false;
    *out = value;
    return true;
}

bool bench_parse_lengths(const char *text, int64_t *lengths, int capacity, int *count)
{
    *count = 0;
    const char *at = text;
    while (*at) {
        char item[32];
        size_t n = strcspn(at, ",");
        if (n == 0 || n >= sizeof item || *count == capacity)
            return false;
        memcpy(item, at, n);
        item[n] = '\0';
        long long value;
        if (!bench_parse_int(item, 1, INT32_MAX, &value))
            return false;
        lengths[(*count)++] = value;
        at += n;
        if (*at == ',')
            at++;
    }
    return *count > 0;
}

bool bench_parse_dtype(const char *text, pbsa_dtype *out)
{
    static const pbsa_dtype all[] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(text, bench_dtype_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}

const char *bench_dtype_name(pbsa_dtype dtype)
{
    switch (dtype) {
    case PBSA_DTYPE_F32: return "f32";
    case PBSA_DTYPE_F16: return "f16";
    case PBSA_DTYPE_BF16: return "bf16";
    }
    return "?";
}

/* Tries arg as a common option. Returns 2 when arg and value were consumed, 1 when only arg was,
 * 0 when arg is not a common option, and -1 after a message about a bad or missing value. */
static int parse_common_option(const char *program, const char *arg, const char *value,
                               bench_common_options *o)
{
    static const char *const with_value[] = {
        "--device",   "--lengths", "--dtype",  "--kv-dtype",    "--heads", "--kv-heads",
        "--head-dim", "--repeats", "--warmup", "--max-seconds", "--json",  "--seed"};
    if (strcmp(arg, "--portable") == 0) {
        o->portable = 1;
        return 1;
    }
    size_t which = 0, count = sizeof with_value / sizeof with_value[0];
    while (which < count && strcmp(arg, with_value[which]) != 0)
        which++;
    if (which == count)
        return 0;
    if (!value) {
        fprintf(stderr, "%s: %s needs a value (see --help)\n", program, arg);
        return -1;
    }
    long long n = 0;
    bool ok = true;
    if (strcmp(arg, "--device") == 0) {
        o->device = value;
    } else if (strcmp(arg, "--lengths") == 0) {
        ok = bench_parse_lengths(value, o->lengths, BENCH_MAX_LENGTHS, &o->length_count);
    } else if (strcmp(arg, "--dtype") == 0) {
        ok = o->dtype_given = bench_parse_dtype(value, &o->dtype);
    } else if (strcmp(arg, "--kv-dtype") == 0) {
        ok = o->kv_dtype_given = bench_parse_dtype(value, &o->kv_dtype);
    } else if (strcmp(arg, "--heads") == 0) {
        ok = bench_parse_int(value, 1, 65536, &n);
        o->heads = (int)n;
    } else if (strcmp(arg, "--kv-heads") == 0) {
        ok = bench_parse_int(value, 1, 65536, &n);
        o->kv_heads = (int)n;
    } else if (strcmp(arg, "--head-dim") == 0) {
        ok = bench_parse_int(value, 1, 4096, &n);
        o->head_dim = (int)n;
    } else if (strcmp(arg, "--repeats") == 0) {
        ok = bench_parse_int(value, 1, 100000, &n);
        o->repeats = (int)n;
    } else if (strcmp(arg, "--warmup") == 0) {
        ok = bench_parse_int(value, 1, 1000, &n);
        o->warmup = (int)n;
    } else if (strcmp(arg, "--max-seconds") == 0) {
        ok = bench_parse_double(value, 0.0, 1e6, &o->max_seconds);
    } else if (strcmp(arg, "--json") == 0) {
        o->json_path = value;
    } else { /* --seed */
        char *end;
        o->seed = strtoull(value, &end, 0);
        ok = o->seed_given = end != value && !*end;
    }
    if (!ok) {
        fprintf(stderr, "%s: bad value '%s' for %s (see --help)\n", program, value, arg);
        return -1;
    }
    return 2;
}

int bench_parse_options(const char *program, int argc, char **argv, void (*usage)(FILE *),
                        bench_common_options *common, bench_own_option own, void *data)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        int used = parse_common_option(program, arg, value, common);
        if (used < 0)
            return 2;
        if (used > 0) {
            i += used - 1;
            continue;
        }
        if (!value) {
            fprintf(stderr, "%s: unknown argument or missing value: '%s'\n", program, arg);
            usage(stderr);
            return 2;
        }
        int taken = own(arg, value, data);
        if (taken == 0) {
            fprintf(stderr, "%s: unknown argument '%s'\n", program, arg);
            usage(stderr);
            return 2;
        }
        if (taken < 0) {
            fprintf(stderr, "%s: bad value '%s' for %s (see --help)\n", program, value, arg);
            return 2;
        }
        i++;
    }
    return 0;
}

bool bench_check_common_options(const char *program, bench_common_options *o)
{
    if (o->kv_heads == 0)
        o->kv_heads = o->heads;
    if (o->heads % o->kv_heads != 0) {
        fprintf(stderr, "%s: --kv-heads %d does not divide --heads %d\n", program, o->kv_heads,
                o->heads);
        return false;
    }
    return true;
}

void bench_join_command_line(int argc, char **argv, char *out, size_t capacity)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < argc && used + 1 < capacity; i++) {
        const char *arg = argv[i];
        bool quote = *arg == '\0' || arg[strspn(arg, "abcdefghijklmnopqrstuvwxyz"
                                                     "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                     "0123456789-_=.,:/+@%")] != '\0';
        int n = snprintf(out + used, capacity - used, "%s%s%s%s", i ? " " : "",
                         quote ? "'" : "", arg, quote ? "'" : "");
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Inputs and buffers
 * ------------------------------------------------------------------------------------------- */

cl_int bench_read_elements(cl_command_queue queue, cl_mem buffer, size_t element, size_t first,
                           size_t count, void *host)
{
    return clEnqueueReadBuffer(queue, buffer, CL_TRUE, first * element, count * element, host, 0,
                               NULL, NULL);
}

cl_int bench_poison(cl_command_queue queue, cl_mem buffer, size_t element, size_t bytes)
{
    const unsigned char ones[4] = {0xff, 0xff, 0xff, 0xff};
    return clEnqueueFillBuffer(queue, buffer, ones, element, 0, bytes, 0, NULL, NULL);
}

void bench_release_mem(cl_mem *m)
{
    if (*m)
        clReleaseMemObject(*m);
    *m = NULL;
}

cl_mem bench_create_buffer(cl_context cl_ctx, cl_command_queue queue, cl_mem_flags flags,
                           size_t bytes, const void *host, cl_int *err)
{
    cl_mem buffer = clCreateBuffer(cl_ctx, flags, bytes, NULL, err);
    if (*err != CL_SUCCESS)
        return NULL;
    if (host)
        *err = clEnqueueWriteBuffer(queue, buffer, CL_TRUE, 0, bytes, host, 0, NULL, NULL);
    if (*err != CL_SUCCESS) {
        clReleaseMemObject(buffer);
        return NULL;
    }
    return buffer;
}

/* ---------------------------------------------------------------------------------------------
 * Device and run metadata
 * ------------------------------------------------------------------------------------------- */

void bench_run_info_init(bench_run_info *ri, int argc, char **argv)
{
    memset(ri, 0, sizeof *ri);
    bench_join_command_line(argc, argv, ri->command_line, sizeof ri->command_line);
    time_t now = time(NULL);
    strftime(ri->date, sizeof ri->date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
}

static void log_messages(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level == PBSA_LOG_WARNING || (level == PBSA_LOG_INFO && getenv("PBSA_BUILD_OPTIONS")))
        fprintf(stderr, "pbsattn %s: %s\n", level == PBSA_LOG_INFO ? "info" : "warning", message);
}

static void read_platform_info(cl_device_id device, bench_run_info *ri)
{
    cl_platform_id platform = NULL;
    clGetDeviceInfo(device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof ri->platform_name, ri->platform_name,
                      NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof ri->platform_version,
                      ri->platform_version, NULL);
    clGetDeviceInfo(device, CL_DEVICE_VERSION, sizeof ri->device_version, ri->device_version,
                    NULL);
    ri->platform_name[sizeof ri->platform_name - 1] = '\0';
    ri->platform_version[sizeof ri->platform_version - 1] = '\0';
    ri->device_version[sizeof ri->device_version - 1] = '\0';
}

int bench_device_open(const char *program, const char *selector, int force_portable,
                      support_device *d, bench_run_info *ri)
{
    pbsa_set_log_callback(log_messages, NULL);
    pbsa_context_options options = {.struct_size = sizeof options,
                                    .force_portable = force_portable};
    int status = support_device_open(program, selector, CL_QUEUE_PROFILING_ENABLE, &options, d);
    if (status != PBSA_SUCCESS)
        return status == PBSA_ERROR_NO_DEVICE ? BENCH_NO_DEVICE : 2;
    ri->device = d->info;
    read_platform_info(d->device, ri);
    return 0;
}

void bench_print_device(const bench_run_info *ri)
{
    printf("device: %s | %s | driver %s | %s\n", ri->device.name, ri->device.vendor,
           ri->device.driver_version, ri->platform_version);
}

static void temp_path(const char *path, char *out, size_t capacity)
{
    snprintf(out, capacity, "%s.tmp", path);
}

FILE *bench_json_open(const char *program, const char *path, json_writer *w)
{
    char temp[4096];
    temp_path(path, temp, sizeof temp);
    FILE *file = fopen(temp, "w");
    if (!file) {
        fprintf(stderr, "%s: cannot write %s\n", program, temp);
        return NULL;
    }
    json_init(w, file);
    return file;
}

int bench_json_close(const char *program, const char *path, FILE *file, json_writer *w)
{
    char temp[4096];
    temp_path(path, temp, sizeof temp);
    int failed = json_finish(w);
    if (fclose(file) != 0)
        failed = -1;
    if (failed || rename(temp, path) != 0) {
        fprintf(stderr, "%s: writing %s failed\n", program, path);
        remove(temp);
        return 1;
    }
    return 0;
}

void bench_json_run_info(json_writer *w, const char *benchmark, const bench_run_info *ri)
{
    json_string(w, "benchmark", benchmark);
    json_string(w, "library_version", pbsa_version_string());
    json_string(w, "date_utc", ri->date);
    json_string(w, "command_line", ri->command_line);
    json_string(w, "device_name", ri->device.name);
    json_string(w, "device_vendor", ri->device.vendor);
    json_string(w, "driver_version", ri->device.driver_version);
    json_string(w, "device_opencl_version", ri->device_version);
    json_string(w, "platform_name", ri->platform_name);
    json_string(w, "platform_version", ri->platform_version);
    json_bool(w, "device_is_gpu", ri->device.is_gpu);
    json_int(w, "compute_units", ri->device.compute_units);
    json_int(w, "global_mem_bytes", (long long)ri->device.global_mem_bytes);
}

/* ---------------------------------------------------------------------------------------------
 * Timing
 * ------------------------------------------------------------------------------------------- */

double bench_event_ms(cl_event event)
{
    cl_ulong start = 0, end = 0;
    if (clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, sizeof start, &start, NULL) !=
            CL_SUCCESS ||
        clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, sizeof end, &end, NULL) !=
            CL_SUCCESS)
        return -1.0;
    return (double)(end - start) * 1e-6;
}

cl_int bench_timer_init(bench_timer *t, const support_device *d)
{
    cl_int err;
    t->ctx = d->ctx;
    t->cl_ctx = d->cl_ctx;
    t->queue = d->queue;
    t->mark = clCreateBuffer(d->cl_ctx, CL_MEM_READ_WRITE, 4, NULL, &err);
    return err;
}

void bench_timer_release(bench_timer *t)
{
    if (t->mark)
        clReleaseMemObject(t->mark);
    t->mark = NULL;
}

int bench_time_op(const bench_timer *t, const bench_op *op, int run, double *ms)
{
    *ms = -1.0;
    cl_int err;
    cl_event gate = clCreateUserEvent(t->cl_ctx, &err);
    if (err != CL_SUCCESS)
        return err;
    const cl_int zero = 0;
    cl_event mark = NULL, last = NULL;
    err = clEnqueueFillBuffer(t->queue, t->mark, &zero, sizeof zero, 0, sizeof zero, 1, &gate,
                              &mark);
    int status = err;
    if (err == CL_SUCCESS)
        status = op->enqueue(op->user, t->queue, run, &last);
    /* Releasing the gate is needed on every path: the queue would stall behind it. */
    clSetUserEventStatus(gate, CL_COMPLETE);
    clReleaseEvent(gate);
    if (status == PBSA_SUCCESS)
        status = clWaitForEvents(1, &last);
    if (status == PBSA_SUCCESS) {
        cl_ulong start = 0, end = 0;
        status = clGetEventProfilingInfo(mark, CL_PROFILING_COMMAND_END, sizeof start, &start,
                                         NULL);
        if (status == CL_SUCCESS)
            status = clGetEventProfilingInfo(last, CL_PROFILING_COMMAND_END, sizeof end, &end,
                                             NULL);
        if (status == CL_SUCCESS)
            *ms = end > start ? (double)(end - start) * 1e-6 : 0.0;
    }
    if (status != PBSA_SUCCESS)
        clFinish(t->queue);
    if (mark)
        clReleaseEvent(mark);
    if (last)
        clReleaseEvent(last);
    return status;
}

static void describe_failure(const bench_timer *t, const bench_op *op, const char *what, int run,
                             int status, char *error, size_t error_size)
{
    snprintf(error, error_size, "%s: %s run %d failed: %s%s%s%s", op->name, what, run,
             pbsa_status_string(status), t->ctx && *pbsa_context_last_error(t->ctx) ? " (" : "",
             t->ctx ? pbsa_context_last_error(t->ctx) : "",
             t->ctx && *pbsa_context_last_error(t->ctx) ? ")" : "");
    if (status == PBSA_ERROR_BUILD_FAILED && t->ctx)
        fprintf(stderr, "%s\n", pbsa_context_build_log(t->ctx));
}

int bench_run_ops(const bench_timer *t, bench_op *ops, int count, char *error, size_t error_size)
{
    for (int run = t->warmup - 1; run >= 0; run--)
        for (int i = 0; i < count; i++) {
            cl_event last = NULL;
            int status = ops[i].enqueue(ops[i].user, t->queue, run, &last);
            if (status == PBSA_SUCCESS)
                status = clWaitForEvents(1, &last);
            if (last)
                clReleaseEvent(last);
            if (status != PBSA_SUCCESS) {
                clFinish(t->queue);
                describe_failure(t, &ops[i], "warm-up", run, status, error, error_size);
                return -1;
            }
        }

    double started = timing_now_seconds(), last_report = started;
    int runs = 0;
    int min_runs = t->repeats < t->min_runs ? t->repeats : t->min_runs;
    while (runs < t->repeats &&
           (runs < min_runs || timing_now_seconds() - started < t->max_seconds)) {
        for (int i = 0; i < count; i++) {
            double ms;
            int status = bench_time_op(t, &ops[i], runs, &ms);
            if (status != PBSA_SUCCESS) {
                describe_failure(t, &ops[i], "timed", runs, status, error, error_size);
                return -1;
            }
            ops[i].times[runs] = ms;
        }
        runs++;
        double now = timing_now_seconds();
        if (now - last_report > 1.0 && runs < t->repeats) {
            fprintf(stderr, "%s: %s: %d/%d timed runs, last:", t->program, t->label, runs,
                    t->repeats);
            for (int i = 0; i < count; i++)
                fprintf(stderr, " %s %.3f ms", ops[i].name, ops[i].times[runs - 1]);
            fputc('\n', stderr);
            last_report = now;
        }
    }
    return runs;
}
