/* NumPy .npy reader and writer (see npy.h). The header grammar accepted here is the subset of
 * Python literal syntax that NumPy writes:
 *   header := ws '{' ws [ item { ws ',' ws item } ws [','] ] ws '}' ws
 *   item   := string ws ':' ws ( string | 'True' | 'False' | tuple )
 *   tuple  := '(' ws ')' | '(' ws int ws ',' ws ')' | '(' ws int { ws ',' ws int } ws [','] ws ')'
 * with strings in single or double quotes (no escapes) and ws any of space, tab, CR, LF. */
#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    npy_dtype dtype;
    const char *descr;
    size_t item_size;
} dtypes[] = {
    {NPY_FLOAT32, "<f4", 4},
    {NPY_FLOAT16, "<f2", 2},
    {NPY_UINT16, "<u2", 2},
    {NPY_INT32, "<i4", 4},
    {NPY_BOOL, "|b1", 1},
};
enum { DTYPE_COUNT = sizeof dtypes / sizeof dtypes[0] };

static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

const char *npy_dtype_descr(npy_dtype dtype)
{
    for (int i = 0; i < DTYPE_COUNT; i++)
        if (dtypes[i].dtype == dtype)
            return dtypes[i].descr;
    return NULL;
}

/* Writes the message into err; bytes other than printable ASCII (messages quote header bytes)
 * are written as \xNN, so that no raw byte of a file reaches a terminal. */
static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    if (err && err_size > 0) {
        char raw[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(raw, sizeof raw, fmt, ap);
        va_end(ap);
        size_t n = 0;
        for (const unsigned char *c = (const unsigned char *)raw; *c && n + 5 <= err_size; c++) {
            if (*c >= 0x20 && *c < 0x7f)
                err[n++] = (char)*c;
            else
                n += (size_t)snprintf(err + n, err_size - n, "\\x%02x", *c);
        }
        err[n] = '\0';
    }
    return -1;
}

/* ---- header dict ----------------------------------------------------------------------------- */

/* A cursor over the header text [at, end). */
typedef struct scanner {
    const unsigned char *at, *end;
} scanner;

static void skip_space(scanner *s)
{
    while (s->at < s->end && (*s->at == ' ' || *s->at == '\t' || *s->at == '\n' || *s->at == '\r'))
        s->at++;
}

static bool accept(scanner *s, char c)
{
    skip_space(s);
    if (s->at < s->end && *s->at == (unsigned char)c) {
        s->at++;
        return true;
    }
    return false;
}

static bool accept_word(scanner *s, const char *word)
{
    skip_space(s);
    size_t n = strlen(word);
    if ((size_t)(s->end - s->at) >= n && memcmp(s->at, word, n) == 0) {
        s->at += n;
        return true;
    }
    return false;
}

/* A quoted string without escapes; *text and *len point into the header. */
static bool scan_string(scanner *s, const unsigned char **text, size_t *len)
{
    skip_space(s);
    if (s->at >= s->end || (*s->at != '\'' && *s->at != '"'))
        return false;
    unsigned char quote = *s->at++;
    const unsigned char *start = s->at;
    while (s->at < s->end && *s->at != quote) {
        if (*s->at == '\\' || *s->at < 0x20)
            return false;
        s->at++;
    }
    if (s->at >= s->end)
        return false;
    *text = start;
    *len = (size_t)(s->at - start);
    s->at++;
    return true;
}

static bool scan_uint(scanner *s, uint64_t *value)
{
    skip_space(s);
    if (s->at >= s->end || *s->at < '0' || *s->at > '9')
        return false;
    uint64_t v = 0;
    while (s->at < s->end && *s->at >= '0' && *s->at <= '9') {
        unsigned digit = (unsigned)(*s->at - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
        s->at++;
    }
    *value = v;
    return true;
}

/* A shape tuple. A single value needs its trailing comma: "(3)" is an int in Python. */
static int scan_shape(scanner *s, npy_header *h, char *err, size_t err_size)
{
    if (!accept(s, '('))
        return fail(err, err_size, "'shape' is not a tuple");
    h->ndim = 0;
    if (accept(s, ')'))
        return 0;
    for (;;) {
        uint64_t dim;
        if (!scan_uint(s, &dim))
            return fail(err, err_size, "'shape' holds something other than a non-negative "
                                       "integer that fits 64 bits");
        if (h->ndim == NPY_MAX_DIMS)
            return fail(err, err_size, "'shape' has more than %d dimensions", NPY_MAX_DIMS);
        h->shape[h->ndim++] = dim;
        bool comma = accept(s, ',');
        if (accept(s, ')')) {
            if (h->ndim == 1 && !comma)
                return fail(err, err_size, "'shape' is not a tuple (a 1-tuple needs a comma)");
            return 0;
        }
        if (!comma)
            return fail(err, err_size, "'shape' is not a well-formed tuple");
    }
}

static int parse_dict(scanner *s, npy_header *h, char *err, size_t err_size)
{
    bool have_descr = false, have_order = false, have_shape = false;
    if (!accept(s, '{'))
        return fail(err, err_size, "the header is not a Python dict literal");
    while (!accept(s, '}')) {
        const unsigned char *key;
        size_t key_len;
        if (!scan_string(s, &key, &key_len))
            return fail(err, err_size, "the header dict has a malformed key");
        if (!accept(s, ':'))
            return fail(err, err_size, "the header dict lacks a ':' after a key");
        if (key_len == 5 && memcmp(key, "descr", 5) == 0) {
            const unsigned char *value;
            size_t len;
            if (have_descr)
                return fail(err, err_size, "'descr' appears twice in the header");
            if (!scan_string(s, &value, &len))
                return fail(err, err_size, "'descr' is not a string (structured dtypes are not "
                                           "supported)");
            int found = -1;
            for (int i = 0; i < DTYPE_COUNT; i++)
                if (strlen(dtypes[i].descr) == len && memcmp(dtypes[i].descr, value, len) == 0)
                    found = i;
            if (found < 0)
                return fail(err, err_size,
                            "dtype '%.*s' is not supported (expected one of <f4, <f2, <u2, <i4, "
                            "|b1)",
                            (int)(len < 16 ? len : 16), (const char *)value);
            h->dtype = dtypes[found].dtype;
            h->item_size = dtypes[found].item_size;
            have_descr = true;
        } else if (key_len == 13 && memcmp(key, "fortran_order", 13) == 0) {
            if (have_order)
                return fail(err, err_size, "'fortran_order' appears twice in the header");
            if (accept_word(s, "True"))
                return fail(err, err_size, "fortran_order True is not supported (write the "
                                           "array in C order)");
            if (!accept_word(s, "False"))
                return fail(err, err_size, "'fortran_order' is not True or False");
            have_order = true;
        } else if (key_len == 5 && memcmp(key, "shape", 5) == 0) {
            if (have_shape)
                return fail(err, err_size, "'shape' appears twice in the header");
            if (scan_shape(s, h, err, err_size) != 0)
                return -1;
            have_shape = true;
        } else {
            return fail(err, err_size, "the header has an unexpected key '%.*s'",
                        (int)(key_len < 32 ? key_len : 32), (const char *)key);
        }
        if (!accept(s, ',')) {
            if (!accept(s, '}'))
                return fail(err, err_size, "the header dict lacks a ',' or '}'");
            break;
        }
    }
    skip_space(s);
    if (s->at != s->end)
        return fail(err, err_size, "the header has text after its dict");
    if (!have_descr || !have_order || !have_shape)
        return fail(err, err_size, "the header lacks '%s'",
                    !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return 0;
}

/* ---- parser ---------------------------------------------------------------------------------- */

int npy_parse(const void *bytes, size_t size, npy_header *out, char *err, size_t err_size)
{
    const unsigned char *b = bytes;
    if (!b && size > 0)
        return fail(err, err_size, "no data");
    if (size < 10)
        return fail(err, err_size, "too short for an .npy file (%zu bytes)", size);
    if (memcmp(b, magic, sizeof magic) != 0)
        return fail(err, err_size, "not an .npy file (bad magic string)");
    unsigned major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return fail(err, err_size, "unsupported .npy format version %u.%u", major, minor);
    size_t prefix = major == 1 ? 10 : 12;
    if (size < prefix)
        return fail(err, err_size, "truncated before the header length");
    uint64_t header_len = major == 1 ? (uint64_t)b[8] | (uint64_t)b[9] << 8
                                     : (uint64_t)b[8] | (uint64_t)b[9] << 8 |
                                           (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
    if (header_len == 0)
        return fail(err, err_size, "the header length is 0");
    if (header_len > size - prefix)
        return fail(err, err_size,
                    "the header length (%llu bytes) runs past the end of the file (%zu bytes)",
                    (unsigned long long)header_len, size);
    const unsigned char *header = b + prefix;
    if (header[header_len - 1] != '\n')
        return fail(err, err_size, "the header does not end with a newline (wrong header "
                                   "length?)");
    for (uint64_t i = 0; i < header_len; i++)
        if (header[i] == 0)
            return fail(err, err_size, "the header contains a NUL byte");

    npy_header h;
    memset(&h, 0, sizeof h);
    scanner s = {header, header + header_len};
    if (parse_dict(&s, &h, err, err_size) != 0)
        return -1;

    uint64_t count = 1;
    for (int d = 0; d < h.ndim; d++) {
        if (h.shape[d] != 0 && count > UINT64_MAX / h.shape[d])
            return fail(err, err_size, "the element count overflows 64 bits");
        count *= h.shape[d];
    }
    if (count > SIZE_MAX / h.item_size)
        return fail(err, err_size, "the data size overflows");
    h.count = count;
    h.data_offset = prefix + (size_t)header_len;
    h.data_bytes = (size_t)count * h.item_size;
    size_t available = size - h.data_offset;
    if (h.data_bytes != available)
        return fail(err, err_size,
                    "the shape needs %zu bytes of data but the file holds %zu (%s)",
                    h.data_bytes, available,
                    h.data_bytes > available ? "truncated" : "trailing bytes");
    *out = h;
    return 0;
}

/* ---- files ----------------------------------------------------------------------------------- */

int npy_load(const char *path, npy_array *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, err_size, "cannot open: %s", strerror(errno));
    size_t capacity = 1 << 16, size = 0;
    unsigned char *data = malloc(capacity);
    int status = 0;
    for (;;) {
        if (!data) {
            status = fail(err, err_size, "out of memory");
            break;
        }
        size += fread(data + size, 1, capacity - size, f);
        if (ferror(f)) {
            status = fail(err, err_size, "read error: %s", strerror(errno));
            break;
        }
        if (size < capacity)
            break; /* end of file */
        if (capacity > SIZE_MAX / 2) {
            status = fail(err, err_size, "the file is too large");
            break;
        }
        unsigned char *grown = realloc(data, capacity * 2);
        if (!grown)
            free(data);
        data = grown;
        capacity *= 2;
    }
    fclose(f);
    if (status == 0)
        status = npy_parse(data, size, &out->header, err, err_size);
    if (status != 0) {
        free(data);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->file = data;
    out->file_size = size;
    out->data = data + out->header.data_offset;
    return 0;
}

void npy_free(npy_array *a)
{
    if (!a)
        return;
    free(a->file);
    memset(a, 0, sizeof *a);
}

int npy_save(const char *path, npy_dtype dtype, int ndim, const uint64_t *shape, const void *data,
             char *err, size_t err_size)
{
    const char *descr = npy_dtype_descr(dtype);
    if (!descr || ndim < 0 || ndim > NPY_MAX_DIMS)
        return fail(err, err_size, "cannot write dtype %d with %d dimensions", (int)dtype, ndim);
    size_t item = dtype == NPY_FLOAT32 || dtype == NPY_INT32 ? 4 : dtype == NPY_BOOL ? 1 : 2;
    char dict[32 * 24 + 128];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     descr);
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%llu", d ? ", " : "",
                      (unsigned long long)shape[d]);
        if (shape[d] != 0 && count > UINT64_MAX / shape[d])
            return fail(err, err_size, "the element count overflows");
        count *= shape[d];
    }
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    if (count > SIZE_MAX / item)
        return fail(err, err_size, "the data size overflows");
    /* Version 1.0 (the dict is far below its 65535-byte limit), padded with spaces so that the
     * data starts on a multiple of 64 bytes, ending with a newline. */
    const size_t prefix = 10;
    size_t total = (prefix + (size_t)n + 1 + 63) / 64 * 64;
    size_t header_len = total - prefix;
    unsigned char head[sizeof dict + 128];
    memcpy(head, magic, sizeof magic);
    head[6] = 1;
    head[7] = 0;
    head[8] = (unsigned char)(header_len & 0xff);
    head[9] = (unsigned char)(header_len >> 8);
    memcpy(head + prefix, dict, (size_t)n);
    memset(head + prefix + n, ' ', header_len - (size_t)n - 1);
    head[total - 1] = '\n';

    /* A new or regular file is written under a temporary name and renamed over path, so that a
     * failed write (a full disk) leaves no truncated file and an old one intact. Anything else (a
     * device, a FIFO, a symbolic link) is written in place. */
    struct stat st;
    const bool replace = lstat(path, &st) != 0 ? errno == ENOENT : S_ISREG(st.st_mode);
    char temporary[4200];
    int length = snprintf(temporary, sizeof temporary, "%s.tmp.%ld", path, (long)getpid());
    if (replace && (length < 0 || (size_t)length >= sizeof temporary))
        return fail(err, err_size, "the path is too long");
    const char *target = replace ? temporary : path;
    FILE *f = fopen(target, "wb");
    if (!f)
        return fail(err, err_size, "cannot create: %s", strerror(errno));
    size_t bytes = (size_t)count * item;
    bool ok = fwrite(head, 1, total, f) == total &&
              (bytes == 0 || fwrite(data, 1, bytes, f) == bytes) && fflush(f) == 0 &&
              (!replace || fsync(fileno(f)) == 0);
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        saved = errno;
    }
    if (ok && replace && rename(temporary, path) != 0) {
        ok = false;
        saved = errno;
    }
    if (!ok) {
        if (replace)
            unlink(temporary);
        return fail(err, err_size, "write error: %s", strerror(saved));
    }
    return 0;
}
