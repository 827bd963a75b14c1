/* Compiled programs kept on disk between processes, so that each kernel compiles once per device,
 * driver, kernel source and build options rather than once per process.
 *
 * One file per program, <dir>/<hash>.bin, where dir is $XDG_CACHE_HOME/pbsattn (else
 * ~/.cache/pbsattn) and hash is a 64-bit hash of everything the binary depends on. The file holds
 * that identity in full, so a hash collision or an entry of another driver is never used, and a
 * checksum of the binary, so a truncated or damaged file is ignored and replaced. Files are
 * written under a unique temporary name and renamed into place: readers in other threads or
 * processes see either no entry or a complete one. */
#include "core/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "PBSABIN1"
#define MAGIC_BYTES 8

/* The fixed-size part of an entry, after the magic; the identity text and the binary follow. */
typedef struct entry_header {
    uint64_t identity_bytes;
    uint64_t sources_hash;
    uint64_t sources_bytes;
    uint64_t binary_bytes;
    uint64_t binary_hash;
} entry_header;

/* What an entry depends on, computed once per lookup. */
typedef struct cache_key {
    char path[4096];
    char identity[2048]; /* platform, device, driver and build options */
    uint64_t sources_hash;
    uint64_t sources_bytes;
} cache_key;

/* FNV-1a, 64 bits: a checksum and a file name, not a defence against crafted files (the
 * identity inside the file is compared in full). */
static uint64_t fnv1a(uint64_t hash, const void *data, size_t size)
{
    const unsigned char *bytes = data;
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ bytes[i]) * 0x100000001b3ULL;
    return hash;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

/* PoCL keeps its own cache of compiled kernels (POCL_KERNEL_CACHE, on by default), which loads
 * as fast as ours, while asking it for a program's binary compiles every kernel of the program:
 * on PoCL the cache is used only when PBSA_KERNEL_CACHE=on asks for it (bench/NOTES.md). */
static bool driver_caches_itself(const pbsa_context *ctx)
{
    cl_platform_id platform = NULL;
    char name[256] = "";
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) !=
            CL_SUCCESS ||
        clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof name, name, NULL) != CL_SUCCESS)
        return false;
    name[sizeof name - 1] = '\0';
    return strstr(name, "Portable Computing Language") != NULL;
}

bool pbsa_binary_cache_enabled(const pbsa_context *ctx)
{
    if (ctx->options.disable_kernel_cache || ctx->env.kernel_cache < 0)
        return false;
    return ctx->env.kernel_cache > 0 || !driver_caches_itself(ctx);
}

/* mkdir -p for the cache folder (private to the user: binaries are code the library runs). */
static bool make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int ok = mkdir(path, 0700) == 0 || errno == EEXIST;
        *p = '/';
        if (!ok)
            return false;
    }
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

/* The cache folder, created when missing; false when there is none to use. */
static bool cache_dir(char *out, size_t capacity)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(out, capacity, "%s/pbsattn", xdg);
    else if (home && home[0] == '/')
        n = snprintf(out, capacity, "%s/.cache/pbsattn", home);
    else
        return false;
    return n > 0 && (size_t)n < capacity && make_dirs(out);
}

static void device_text(cl_device_id device, cl_device_info what, char *out, size_t capacity)
{
    out[0] = '\0';
    if (clGetDeviceInfo(device, what, capacity, out, NULL) != CL_SUCCESS)
        out[0] = '\0';
    out[capacity - 1] = '\0';
}

static bool make_key(const pbsa_context *ctx, const char *const *texts, size_t count,
                     const char *options, cache_key *key)
{
    char dir[3900];
    if (!cache_dir(dir, sizeof dir))
        return false;
    cl_platform_id platform = NULL;
    char platform_name[256] = "", platform_version[256] = "", device_version[256] = "";
    if (clGetDeviceInfo(ctx->device, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL) ==
        CL_SUCCESS) {
        clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof platform_name, platform_name, NULL);
        clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof platform_version,
                          platform_version, NULL);
        platform_name[sizeof platform_name - 1] = platform_version[sizeof platform_version - 1] =
            '\0';
    }
    device_text(ctx->device, CL_DEVICE_VERSION, device_version, sizeof device_version);
    int n = snprintf(key->identity, sizeof key->identity, "%s\n%s\n%s\n%s\n%s\n%s\n%s",
                     platform_name, platform_version, ctx->info.vendor, ctx->info.name,
                     device_version, ctx->info.driver_version, options);
    if (n < 0 || (size_t)n >= sizeof key->identity)
        return false;
    key->sources_hash = FNV_OFFSET;
    key->sources_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        size_t length = strlen(texts[i]) + 1; /* the NUL separates the files */
        key->sources_hash = fnv1a(key->sources_hash, texts[i], length);
        key->sources_bytes += length;
    }
    uint64_t name = fnv1a(FNV_OFFSET, key->identity, (size_t)n);
    name = fnv1a(name, &key->sources_hash, sizeof key->sources_hash);
    n = snprintf(key->path, sizeof key->path, "%s/%016llx.bin", dir, (unsigned long long)name);
    return n > 0 && (size_t)n < sizeof key->path;
}

/* Reads the binary of key's entry; NULL when there is none or it does not match in full. */
static unsigned char *read_entry(const cache_key *key, size_t *binary_bytes)
{
    FILE *file = fopen(key->path, "rb");
    if (!file)
        return NULL;
    char magic[MAGIC_BYTES];
    entry_header header;
    size_t identity_bytes = strlen(key->identity);
    char *identity = malloc(identity_bytes);
    unsigned char *binary = NULL;
    bool ok = identity && fread(magic, 1, MAGIC_BYTES, file) == MAGIC_BYTES &&
              memcmp(magic, CACHE_MAGIC, MAGIC_BYTES) == 0 &&
              fread(&header, sizeof header, 1, file) == 1 &&
              header.identity_bytes == identity_bytes &&
              header.sources_hash == key->sources_hash &&
              header.sources_bytes == key->sources_bytes && header.binary_bytes > 0 &&
              header.binary_bytes <= ((uint64_t)1 << 31) &&
              fread(identity, 1, identity_bytes, file) == identity_bytes &&
              memcmp(identity, key->identity, identity_bytes) == 0 &&
              (binary = malloc((size_t)header.binary_bytes)) &&
              fread(binary, 1, (size_t)header.binary_bytes, file) == header.binary_bytes &&
              fgetc(file) == EOF &&
              fnv1a(FNV_OFFSET, binary, (size_t)header.binary_bytes) == header.binary_hash;
    fclose(file);
    free(identity);
    if (!ok) {
        if (identity) /* not out of memory: the file is damaged or of another format */
            pbsa_log(PBSA_LOG_WARNING, "kernel cache: ignoring the damaged entry %s", key->path);
        free(binary);
        return NULL;
    }
    *binary_bytes = (size_t)header.binary_bytes;
    return binary;
}

cl_program pbsa_binary_cache_load(pbsa_context *ctx, const char *const *texts, size_t count,
                                  const char *options)
{
    cache_key key;
    if (!pbsa_binary_cache_enabled(ctx) || !make_key(ctx, texts, count, options, &key))
        return NULL;
    size_t bytes = 0;
    unsigned char *binary = read_entry(&key, &bytes);
    if (!binary)
        return NULL;
    const unsigned char *binaries[1] = {binary};
    cl_int binary_status = CL_SUCCESS, err;
    cl_program program = clCreateProgramWithBinary(ctx->cl_ctx, 1, &ctx->device, &bytes, binaries,
                                                   &binary_status, &err);
    free(binary);
    if (err == CL_SUCCESS && binary_status == CL_SUCCESS)
        err = clBuildProgram(program, 1, &ctx->device, options, NULL, NULL);
    else if (err == CL_SUCCESS)
        err = binary_status;
    if (err != CL_SUCCESS) {
        /* A binary the driver no longer accepts: compile from source and replace it. */
        pbsa_log(PBSA_LOG_WARNING, "kernel cache: the driver refused %s (%d); compiling again",
                 key.path, err);
        if (program)
            clReleaseProgram(program);
        return NULL;
    }
    pbsa_log(PBSA_LOG_INFO, "kernel cache: loaded %s", key.path);
    return program;
}

static bool write_entry(const cache_key *key, const unsigned char *binary, size_t bytes)
{
    char temp[4096 + 8];
    snprintf(temp, sizeof temp, "%s.XXXXXX", key->path);
    int fd = mkstemp(temp);
    if (fd < 0)
        return false;
    FILE *file = fdopen(fd, "wb");
    if (!file) {
        close(fd);
        unlink(temp);
        return false;
    }
    entry_header header = {
        .identity_bytes = strlen(key->identity),
        .sources_hash = key->sources_hash,
        .sources_bytes = key->sources_bytes,
        .binary_bytes = bytes,
        .binary_hash = fnv1a(FNV_OFFSET, binary, bytes),
    };
    bool ok = fwrite(CACHE_MAGIC, 1, MAGIC_BYTES, file) == MAGIC_BYTES &&
              fwrite(&header, sizeof header, 1, file) == 1 &&
              fwrite(key->identity, 1, header.identity_bytes, file) == header.identity_bytes &&
              fwrite(binary, 1, bytes, file) == bytes;
    ok = fclose(file) == 0 && ok;
    ok = ok && rename(temp, key->path) == 0;
    if (!ok)
        unlink(temp);
    return ok;
}

void pbsa_binary_cache_store(pbsa_context *ctx, cl_program program, const char *const *texts,
                             size_t count, const char *options)
{
    cache_key key;
    if (!pbsa_binary_cache_enabled(ctx) || !make_key(ctx, texts, count, options, &key))
        return;
    size_t bytes = 0;
    if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof bytes, &bytes, NULL) !=
            CL_SUCCESS ||
        bytes == 0)
        return;
    unsigned char *binary = malloc(bytes);
    unsigned char *binaries[1] = {binary};
    if (binary &&
        clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof binaries, binaries, NULL) ==
            CL_SUCCESS &&
        !write_entry(&key, binary, bytes))
        pbsa_log(PBSA_LOG_WARNING, "kernel cache: cannot write %s", key.path);
    free(binary);
}
