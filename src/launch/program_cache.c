/* Compiles each program variant once per context and keeps it (and any failure) for reuse. */
#include "core/internal.h"
#include "launch/kernel_source.h"
#include "launch/ptx_sm90a.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pbsa_program_entry {
    char *key;          /* file names and build options */
    cl_program program; /* NULL when the build failed */
    char *log;          /* the build log of a failed build */
    pbsa_program_entry *next;
};

/* Reads a kernel file from PBSA_KERNEL_DIR when set (for kernel development), else returns the
 * embedded copy. *owned is set when the text was allocated here. */
static const char *kernel_text(const pbsa_context *ctx, const char *name, char **owned)
{
    *owned = NULL;
    const char *dir = ctx->env.kernel_dir;
    if (*dir) {
        char path[sizeof ctx->env.kernel_dir + 256];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        FILE *file = fopen(path, "rb");
        if (file) {
            char *text = NULL;
            if (fseek(file, 0, SEEK_END) == 0) {
                long size = ftell(file);
                if (size >= 0 && fseek(file, 0, SEEK_SET) == 0 && (text = malloc((size_t)size + 1))) {
                    size_t got = fread(text, 1, (size_t)size, file);
                    text[got] = '\0';
                }
            }
            fclose(file);
            if (text) {
                *owned = text;
                return text;
            }
        }
    }
    for (size_t i = 0; i < pbsa_kernel_sources_count; i++)
        if (strcmp(pbsa_kernel_sources[i].name, name) == 0)
            return pbsa_kernel_sources[i].text;
    return NULL;
}

static char *make_key(const char *const *files, size_t file_count, const char *options,
                      bool sm90a)
{
    size_t length = strlen(options) + 8;
    for (size_t i = 0; i < file_count; i++)
        length += strlen(files[i]) + 1;
    char *key = malloc(length);
    if (!key)
        return NULL;
    key[0] = '\0';
    for (size_t i = 0; i < file_count; i++) {
        strcat(key, files[i]);
        strcat(key, "+");
    }
    strcat(key, sm90a ? "|sm90a|" : "|");
    strcat(key, options);
    return key;
}

static char *read_build_log(cl_program program, cl_device_id device)
{
    size_t size = 0;
    clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, NULL, &size);
    char *log = malloc(size + 1);
    if (!log)
        return NULL;
    log[0] = '\0';
    if (size > 0 && clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log, NULL) ==
                        CL_SUCCESS)
        log[size] = '\0';
    return log;
}

/* The PTX of program, a source build for NVIDIA's driver, rewritten for sm_90a and built
 * again from that text (src/ptx_sm90a.h). Returns the new program, or NULL with *log set to
 * why. */
static cl_program rebuild_sm90a(pbsa_context *ctx, cl_program program, const char *options,
                                char **log)
{
    *log = NULL;
    size_t size = 0;
    cl_int err = clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof size, &size, NULL);
    char *ptx = err == CL_SUCCESS && size > 0 ? calloc(size + 1, 1) : NULL;
    if (ptx)
        err = clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof ptx, &ptx, NULL);
    size_t markers = 0;
    char *patched = ptx && err == CL_SUCCESS ? pbsa_ptx_sm90a(ptx, &markers) : NULL;
    free(ptx);
    if (!patched || markers == 0) {
        free(patched);
        *log = strdup("the compiler's output is not sm_90 PTX with sm_90a markers");
        return NULL;
    }
    size_t length = strlen(patched);
    const unsigned char *text = (const unsigned char *)patched;
    cl_int binary_status;
    cl_program rebuilt = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &length, &text,
                                                   &binary_status, &err);
    free(patched);
    if (err != CL_SUCCESS) {
        *log = strdup("clCreateProgramWithBinary refused the sm_90a PTX");
        return NULL;
    }
    err = clBuildProgram(rebuilt, 1, &ctx->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        *log = read_build_log(rebuilt, ctx->device);
        clReleaseProgram(rebuilt);
        return NULL;
    }
    return rebuilt;
}

/* Builds the program for key (for sm_90a when sm90a); on failure entry->program stays NULL and
 * entry->log is set. */
static int build_program(pbsa_context *ctx, pbsa_program_entry *entry, const char *const *files,
                         size_t file_count, const char *options, bool sm90a)
{
    const char *texts[16];
    char *owned[16] = {0};
    int status = PBSA_SUCCESS;
    if (file_count > 16)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "internal: too many kernel files");
    for (size_t i = 0; i < file_count; i++) {
        texts[i] = kernel_text(ctx, files[i], &owned[i]);
        if (!texts[i]) {
            status = pbsa_fail(ctx, PBSA_ERROR_BUILD_FAILED, "kernel source %s is missing",
                               files[i]);
            goto done;
        }
    }
    /* PBSA_BUILD_OPTIONS adds compiler options for kernel development (e.g. -cl-nv-verbose);
     * the build log of every program is then sent to the log callback. */
    const char *extra = ctx->env.build_options;
    char full_options[2048];
    snprintf(full_options, sizeof full_options, "-cl-std=CL1.2 %s %s", options, extra);
    /* A program rewritten for sm_90a is kept as its rewritten text: loading it needs no rewrite. */
    entry->program = pbsa_binary_cache_load(ctx, texts, file_count, full_options);
    if (entry->program)
        goto done;
    cl_int err;
    cl_program program = clCreateProgramWithSource(ctx->cl_ctx, (cl_uint)file_count, texts, NULL,
                                                   &err);
    if (err != CL_SUCCESS) {
        status = pbsa_fail(ctx, err, "clCreateProgramWithSource failed (%d)", err);
        goto done;
    }
    err = clBuildProgram(program, 1, &ctx->device, full_options, NULL, NULL);
    if (err != CL_SUCCESS) {
        entry->log = read_build_log(program, ctx->device);
        clReleaseProgram(program);
        status = pbsa_fail(ctx, PBSA_ERROR_BUILD_FAILED,
                           "building %s with \"%s\" failed (%d); see pbsa_context_build_log()",
                           files[file_count - 1], options, err);
        goto done;
    }
    if (sm90a) {
        cl_program rebuilt = rebuild_sm90a(ctx, program, extra, &entry->log);
        clReleaseProgram(program);
        if (!rebuilt) {
            status = pbsa_fail(ctx, PBSA_ERROR_BUILD_FAILED,
                               "building %s with \"%s\" for sm_90a failed; see "
                               "pbsa_context_build_log()",
                               files[file_count - 1], options);
            goto done;
        }
        program = rebuilt;
    }
    if (ctx->env.log_builds) {
        char *log = read_build_log(program, ctx->device);
        if (log)
            pbsa_log(PBSA_LOG_INFO, "build log of %s with \"%s\":\n%s", files[file_count - 1],
                     full_options, log);
        free(log);
    }
    entry->program = program;
    pbsa_binary_cache_store(ctx, program, texts, file_count, full_options);
done:
    for (size_t i = 0; i < file_count; i++)
        free(owned[i]);
    return status;
}

static int get_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                      const char *options, bool sm90a, const char *kernel_name, cl_kernel *out)
{
    *out = NULL;
    char *key = make_key(files, file_count, options, sm90a);
    if (!key)
        return pbsa_fail(ctx, PBSA_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
    pthread_mutex_lock(&ctx->lock);
    pbsa_program_entry *entry = ctx->programs;
    while (entry && strcmp(entry->key, key) != 0)
        entry = entry->next;
    int status = PBSA_SUCCESS;
    if (entry) {
        free(key);
    } else {
        entry = calloc(1, sizeof *entry);
        if (!entry) {
            free(key);
            pthread_mutex_unlock(&ctx->lock);
            return pbsa_fail(ctx, PBSA_ERROR_OUT_OF_HOST_MEMORY, "out of host memory");
        }
        entry->key = key;
        status = build_program(ctx, entry, files, file_count, options, sm90a);
        if (status != PBSA_SUCCESS && status != PBSA_ERROR_BUILD_FAILED) {
            free(entry->key);
            free(entry->log);
            free(entry);
            pthread_mutex_unlock(&ctx->lock);
            return status;
        }
        entry->next = ctx->programs;
        ctx->programs = entry;
        if (entry->log)
            ctx->build_log = entry->log;
    }
    cl_program program = entry->program;
    pthread_mutex_unlock(&ctx->lock);
    if (!program) {
        if (status == PBSA_SUCCESS)
            status = pbsa_fail(ctx, PBSA_ERROR_BUILD_FAILED,
                               "kernel %s failed to build earlier; see pbsa_context_build_log()",
                               kernel_name);
        return status;
    }
    cl_int err;
    *out = clCreateKernel(program, kernel_name, &err);
    if (err != CL_SUCCESS)
        return pbsa_fail(ctx, err, "clCreateKernel(%s) failed (%d)", kernel_name, err);
    return PBSA_SUCCESS;
}

int pbsa_get_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                    const char *options, const char *kernel_name, cl_kernel *out)
{
    return get_kernel(ctx, files, file_count, options, false, kernel_name, out);
}

int pbsa_get_sm90a_kernel(pbsa_context *ctx, const char *const *files, size_t file_count,
                          const char *options, const char *kernel_name, cl_kernel *out)
{
    return get_kernel(ctx, files, file_count, options, true, kernel_name, out);
}

void pbsa_program_cache_clear(pbsa_context *ctx)
{
    pbsa_program_entry *entry = ctx->programs;
    while (entry) {
        pbsa_program_entry *next = entry->next;
        if (entry->program)
            clReleaseProgram(entry->program);
        free(entry->log);
        free(entry->key);
        free(entry);
        entry = next;
    }
    ctx->programs = NULL;
    ctx->build_log = NULL;
}
