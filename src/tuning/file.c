/* Tuning files: parser, writer and device-name normalisation (see file.h). */
#include "tuning/file.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char MAGIC[] = "pbsattn-tuning";

/* ---- names ---- */

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Whether text ends with ":feature+" or ":feature-" starting at *start. */
static bool feature_suffix(const char *text, size_t length, size_t *start)
{
    if (length < 3 || (text[length - 1] != '+' && text[length - 1] != '-'))
        return false;
    size_t i = length - 1;
    while (i > 0) {
        unsigned char c = (unsigned char)text[i - 1];
        if (c == ':') {
            if (i == length - 1) /* nothing between ':' and the sign */
                return false;
            *start = i - 1;
            return true;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
        i--;
    }
    return false;
}

void pbsa_tuning_normalise_name(const char *name, char *out, size_t capacity)
{
    if (capacity == 0)
        return;
    size_t used = 0;
    bool pending_space = false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (is_space(*p) || *p < 0x20 || *p == 0x7f) {
            pending_space = used > 0;
            continue;
        }
        if (used + (pending_space ? 2 : 1) >= capacity)
            break;
        if (pending_space)
            out[used++] = ' ';
        pending_space = false;
        out[used++] = (char)*p;
    }
    /* Trailing spaces and feature suffixes, until neither is left (so that normalising twice
     * changes nothing). */
    for (;;) {
        size_t start;
        while (used > 0 && out[used - 1] == ' ')
            used--;
        if (!feature_suffix(out, used, &start))
            break;
        used = start;
    }
    out[used] = '\0';
}

bool pbsa_tuning_same_device(const pbsa_tuning_file *file, const char *platform, const char *device)
{
    char a[PBSA_TUNING_TEXT], b[PBSA_TUNING_TEXT];
    pbsa_tuning_normalise_name(file->platform, a, sizeof a);
    pbsa_tuning_normalise_name(platform, b, sizeof b);
    if (strcasecmp(a, b) != 0)
        return false;
    pbsa_tuning_normalise_name(file->device, a, sizeof a);
    pbsa_tuning_normalise_name(device, b, sizeof b);
    return strcasecmp(a, b) == 0;
}

void pbsa_tuning_file_name(const char *device, char *out, size_t capacity)
{
    char name[PBSA_TUNING_TEXT];
    pbsa_tuning_normalise_name(device, name, sizeof name);
    if (!name[0])
        snprintf(name, sizeof name, "device");
    char safe[121];
    size_t used = 0;
    for (const char *p = name; *p && used < sizeof safe - 1; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && used > 0);
        safe[used++] = ok ? c : '_';
    }
    safe[used] = '\0';
    snprintf(out, capacity, "%s.txt", safe);
}

/* ---- entries ---- */

void pbsa_tuning_file_free(pbsa_tuning_file *file)
{
    free(file->entries);
    file->entries = NULL;
    file->count = file->capacity = 0;
}

const pbsa_tuning_entry *pbsa_tuning_file_find(const pbsa_tuning_file *file,
                                               const pbsa_tuning_key *key)
{
    for (size_t i = 0; i < file->count; i++)
        if (pbsa_tuning_key_equal(&file->entries[i].key, key))
            return &file->entries[i];
    return NULL;
}

bool pbsa_tuning_file_put(pbsa_tuning_file *file, const pbsa_tuning_entry *entry)
{
    for (size_t i = 0; i < file->count; i++)
        if (pbsa_tuning_key_equal(&file->entries[i].key, &entry->key)) {
            file->entries[i] = *entry;
            return true;
        }
    if (file->count >= PBSA_TUNING_MAX_ENTRIES)
        return false;
    if (file->count == file->capacity) {
        size_t capacity = file->capacity ? 2 * file->capacity : 16;
        pbsa_tuning_entry *grown = realloc(file->entries, capacity * sizeof *grown);
        if (!grown)
            return false;
        file->entries = grown;
        file->capacity = capacity;
    }
    file->entries[file->count++] = *entry;
    return true;
}

/* ---- parser ---- */

typedef struct parser {
    pbsa_tuning_file *out;
    char *error;
    size_t error_capacity;
    int line;
} parser;

static pbsa_tuning_result fail(parser *p, pbsa_tuning_result result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static pbsa_tuning_result fail(parser *p, pbsa_tuning_result result, const char *fmt, ...)
{
    if (p->error_capacity > 0) {
        int n = p->line > 0 ? snprintf(p->error, p->error_capacity, "line %d: ", p->line) : 0;
        if (n < 0 || (size_t)n >= p->error_capacity)
            n = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->error + n, p->error_capacity - (size_t)n, fmt, ap);
        va_end(ap);
    }
    pbsa_tuning_file_free(p->out);
    return result;
}

/* A span of the input: not NUL-terminated. */
typedef struct span {
    const char *at;
    size_t length;
} span;

static bool span_is(span s, const char *word)
{
    size_t n = strlen(word);
    return s.length == n && memcmp(s.at, word, n) == 0;
}

/* Splits off the first word of *s (words are separated by spaces). */
static span next_word(span *s)
{
    size_t i = 0;
    while (i < s->length && s->at[i] == ' ')
        i++;
    size_t start = i;
    while (i < s->length && s->at[i] != ' ')
        i++;
    span word = {s->at + start, i - start};
    s->at += i;
    s->length -= i;
    return word;
}

static span trim(span s)
{
    while (s.length > 0 && s.at[0] == ' ')
        s.at++, s.length--;
    while (s.length > 0 && s.at[s.length - 1] == ' ')
        s.length--;
    return s;
}

/* A decimal integer of 1 to 9 digits, no sign. */
static bool parse_int(span s, int *out)
{
    if (s.length == 0 || s.length > 9)
        return false;
    int value = 0;
    for (size_t i = 0; i < s.length; i++) {
        if (s.at[i] < '0' || s.at[i] > '9')
            return false;
        value = value * 10 + (s.at[i] - '0');
    }
    *out = value;
    return true;
}

/* A non-negative decimal "123" or "123.456" (at most 9 digits each side), without the locale. */
static bool parse_decimal(span s, double *out)
{
    size_t dot = 0;
    while (dot < s.length && s.at[dot] != '.')
        dot++;
    int whole = 0, fraction = 0;
    span left = {s.at, dot};
    if (!parse_int(left, &whole))
        return false;
    double value = whole;
    if (dot < s.length) {
        span right = {s.at + dot + 1, s.length - dot - 1};
        if (!parse_int(right, &fraction))
            return false;
        value += fraction / pow(10.0, (double)right.length);
    }
    *out = value;
    return true;
}

/* Copies a header text, which must be non-empty and fit; names (platform, device) are stored
 * normalised and must not normalise to nothing. */
static pbsa_tuning_result header_text(parser *p, span keyword, span value, char *out, bool *seen,
                                      bool name)
{
    if (*seen)
        return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' given twice", (int)keyword.length, keyword.at);
    if (value.length == 0)
        return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' without a value", (int)keyword.length,
                    keyword.at);
    if (value.length >= PBSA_TUNING_TEXT)
        return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' is longer than %d bytes", (int)keyword.length,
                    keyword.at, PBSA_TUNING_TEXT - 1);
    memcpy(out, value.at, value.length);
    out[value.length] = '\0';
    if (name) {
        char normal[PBSA_TUNING_TEXT];
        pbsa_tuning_normalise_name(out, normal, sizeof normal);
        if (!normal[0])
            return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' is empty once normalised",
                        (int)keyword.length, keyword.at);
        memcpy(out, normal, strlen(normal) + 1);
    }
    *seen = true;
    return PBSA_TUNING_OK;
}

/* Names an entry may give besides the tuning parameters; each at most once. */
enum entry_field {
    FIELD_KERNEL,
    FIELD_DTYPE,
    FIELD_HEAD_DIM,
    FIELD_BLOCK,
    FIELD_CAUSAL,
    FIELD_MS,
    FIELD_DEFAULT_MS,
    FIELD_SEQ,
    FIELD_HEADS,
    FIELD_KV_HEADS,
    FIELD_COUNT
};
static const char *const field_names[FIELD_COUNT] = {
    "kernel", "dtype",      "head_dim", "block", "causal",
    "ms",     "default_ms", "seq",      "heads", "kv_heads",
};

static pbsa_tuning_result parse_entry(parser *p, span rest)
{
    pbsa_tuning_entry e;
    memset(&e, 0, sizeof e);
    e.ms = e.default_ms = -1.0;
    e.line = p->line;
    bool seen_field[FIELD_COUNT] = {false};
    /* Parameter values go into one configuration per space: the kernel name, which says whose
     * they are, may come later in the line. */
    enum { MAX_PARAMS = 16 };
    bool seen_param[PBSA_TUNING_SPACE_COUNT][MAX_PARAMS] = {{false}};
    pbsa_kernel_config values[PBSA_TUNING_SPACE_COUNT];
    memset(values, 0, sizeof values);
    for (span word = next_word(&rest); word.length > 0; word = next_word(&rest)) {
        size_t eq = 0;
        while (eq < word.length && word.at[eq] != '=')
            eq++;
        if (eq == 0 || eq == word.length)
            return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' is not name=value", (int)word.length,
                        word.at);
        span name = {word.at, eq}, value = {word.at + eq + 1, word.length - eq - 1};
        int field = -1, space = -1, param = -1;
        for (int f = 0; f < FIELD_COUNT && field < 0; f++)
            if (span_is(name, field_names[f]))
                field = f;
        for (int sp = 0; sp < PBSA_TUNING_SPACE_COUNT && field < 0 && param < 0; sp++)
            for (int i = 0; i < pbsa_tuning_spaces[sp].param_count && param < 0; i++)
                if (span_is(name, pbsa_tuning_spaces[sp].params[i].name)) {
                    space = sp;
                    param = i;
                }
        if (field < 0 && param < 0)
            return fail(p, PBSA_TUNING_CORRUPT, "unknown name '%.*s'", (int)name.length, name.at);
        bool *seen = field >= 0 ? &seen_field[field] : &seen_param[space][param];
        if (*seen)
            return fail(p, PBSA_TUNING_CORRUPT, "'%.*s' given twice", (int)name.length, name.at);
        *seen = true;
        bool ok = true;
        int number = 0;
        if (param >= 0) {
            const pbsa_tuning_param *tp = &pbsa_tuning_spaces[space].params[param];
            ok = parse_int(value, &number) && number >= tp->min && number <= tp->max;
            if (ok)
                pbsa_tuning_param_set(&values[space], tp, number);
        } else if (field == FIELD_KERNEL) {
            ok = false;
            for (int k = 0; k < PBSA_KERNEL_KIND_COUNT && !ok; k++)
                if (span_is(value, pbsa_kernel_kind_name((pbsa_kernel_kind)k))) {
                    e.key.kind = (pbsa_kernel_kind)k;
                    ok = true;
                }
        } else if (field == FIELD_DTYPE) {
            static const pbsa_dtype dtypes[] = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_BF16};
            ok = false;
            for (int d = 0; d < 3 && !ok; d++)
                if (span_is(value, pbsa_dtype_name(dtypes[d]))) {
                    e.key.dtype = dtypes[d];
                    ok = true;
                }
        } else if (field == FIELD_MS || field == FIELD_DEFAULT_MS) {
            ok = parse_decimal(value, field == FIELD_MS ? &e.ms : &e.default_ms);
        } else {
            ok = parse_int(value, &number);
            int *targets[FIELD_COUNT] = {NULL};
            targets[FIELD_HEAD_DIM] = &e.key.head_dim;
            targets[FIELD_BLOCK] = &e.key.block;
            targets[FIELD_CAUSAL] = &e.key.causal;
            targets[FIELD_SEQ] = &e.seq;
            targets[FIELD_HEADS] = &e.heads;
            targets[FIELD_KV_HEADS] = &e.kv_heads;
            if (ok)
                *targets[field] = number;
        }
        if (!ok)
            return fail(p, PBSA_TUNING_CORRUPT, "bad value '%.*s' for '%.*s'", (int)value.length,
                        value.at, (int)name.length, name.at);
    }
    static const int required_fields[] = {FIELD_KERNEL, FIELD_DTYPE, FIELD_HEAD_DIM, FIELD_CAUSAL};
    for (size_t i = 0; i < sizeof required_fields / sizeof required_fields[0]; i++)
        if (!seen_field[required_fields[i]])
            return fail(p, PBSA_TUNING_CORRUPT, "entry without '%s'",
                        field_names[required_fields[i]]);
    const pbsa_tuning_space *own = pbsa_tuning_space_of(e.key.kind);
    for (int sp = 0; sp < PBSA_TUNING_SPACE_COUNT; sp++)
        for (int i = 0; i < pbsa_tuning_spaces[sp].param_count; i++) {
            const pbsa_tuning_param *tp = &pbsa_tuning_spaces[sp].params[i];
            if (&pbsa_tuning_spaces[sp] != own && seen_param[sp][i])
                return fail(p, PBSA_TUNING_CORRUPT, "'%s' is not a parameter of kernel %s",
                            tp->name, pbsa_kernel_kind_name(e.key.kind));
            if (&pbsa_tuning_spaces[sp] == own && !seen_param[sp][i] && tp->min > 0)
                return fail(p, PBSA_TUNING_CORRUPT, "entry without '%s'", tp->name);
        }
    e.config = values[own - pbsa_tuning_spaces];
    if (!pbsa_tuning_key_valid(&e.key))
        return fail(p, PBSA_TUNING_CORRUPT,
                    "no such kernel variant (kernel %s, head_dim %d, block %d, causal %d)",
                    pbsa_kernel_kind_name(e.key.kind), e.key.head_dim, e.key.block, e.key.causal);
    if (!pbsa_tuning_file_put(p->out, &e))
        return p->out->count >= PBSA_TUNING_MAX_ENTRIES
                   ? fail(p, PBSA_TUNING_CORRUPT, "more than %d entries", PBSA_TUNING_MAX_ENTRIES)
                   : fail(p, PBSA_TUNING_NO_MEMORY, "out of memory");
    return PBSA_TUNING_OK;
}

pbsa_tuning_result pbsa_tuning_parse(const char *text, size_t length, pbsa_tuning_file *out,
                                     char *error, size_t error_capacity)
{
    memset(out, 0, sizeof *out);
    parser p = {out, error, error_capacity, 0};
    if (error_capacity > 0)
        error[0] = '\0';
    if (length > PBSA_TUNING_MAX_BYTES)
        return fail(&p, PBSA_TUNING_CORRUPT, "larger than %d bytes", PBSA_TUNING_MAX_BYTES);
    if (length >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) /* a UTF-8 byte order mark */
        text += 3, length -= 3;
    enum { HEADER_PLATFORM, HEADER_DEVICE, HEADER_DRIVER, HEADER_GENERATOR, HEADER_DATE, HEADERS };
    static const char *const header_names[HEADERS] = {"platform", "device", "driver", "generator",
                                                      "date"};
    char *header_out[HEADERS] = {out->platform, out->device, out->driver, out->generator,
                                 out->date};
    bool header_seen[HEADERS] = {false};
    bool versioned = false;
    char line[1024 * 4];
    size_t pos = 0;
    while (pos < length) {
        size_t end = pos;
        while (end < length && text[end] != '\n')
            end++;
        p.line++;
        /* Copy the line with tabs as spaces; reject control characters and NUL. */
        size_t n = end - pos;
        if (n >= sizeof line)
            return fail(&p, PBSA_TUNING_CORRUPT, "longer than %zu bytes", sizeof line - 1);
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)text[pos + i];
            if (c == '\t')
                c = ' ';
            else if (c == '\r' && i + 1 == n)
                c = ' ';
            else if (c < 0x20 || c == 0x7f)
                return fail(&p, PBSA_TUNING_CORRUPT, "control character 0x%02x", c);
            line[i] = (char)c;
        }
        pos = end < length ? end + 1 : end;
        span rest = trim((span){line, n});
        if (rest.length == 0 || rest.at[0] == '#')
            continue;
        span keyword = next_word(&rest);
        rest = trim(rest);
        if (!versioned) {
            int version = 0;
            if (!span_is(keyword, MAGIC) || !parse_int(rest, &version))
                return fail(&p, PBSA_TUNING_CORRUPT,
                            "not a pbsattn tuning file (the first statement must be '%s N')",
                            MAGIC);
            out->schema = version;
            if (version < PBSA_TUNING_SCHEMA)
                return fail(&p, PBSA_TUNING_OUTDATED,
                            "format version %d is older than this library's %d", version,
                            PBSA_TUNING_SCHEMA);
            if (version > PBSA_TUNING_SCHEMA)
                return fail(&p, PBSA_TUNING_NEWER,
                            "format version %d is newer than this library's %d", version,
                            PBSA_TUNING_SCHEMA);
            versioned = true;
            continue;
        }
        if (span_is(keyword, "entry")) {
            pbsa_tuning_result r = parse_entry(&p, rest);
            if (r != PBSA_TUNING_OK)
                return r;
            continue;
        }
        int h = 0;
        while (h < HEADERS && !span_is(keyword, header_names[h]))
            h++;
        if (h == HEADERS)
            return fail(&p, PBSA_TUNING_CORRUPT, "unknown statement '%.*s'",
                        (int)(keyword.length > 64 ? 64 : keyword.length), keyword.at);
        pbsa_tuning_result r = header_text(&p, keyword, rest, header_out[h], &header_seen[h],
                                           h == HEADER_PLATFORM || h == HEADER_DEVICE);
        if (r != PBSA_TUNING_OK)
            return r;
    }
    p.line = 0;
    if (!versioned)
        return fail(&p, PBSA_TUNING_CORRUPT, "empty: no '%s N' line", MAGIC);
    if (!header_seen[HEADER_PLATFORM] || !header_seen[HEADER_DEVICE])
        return fail(&p, PBSA_TUNING_CORRUPT, "no '%s' line",
                    header_seen[HEADER_PLATFORM] ? "device" : "platform");
    return PBSA_TUNING_OK;
}

/* ---- writer ---- */

typedef struct text_buffer {
    char *data;
    size_t length, capacity;
    bool failed;
} text_buffer;

static void append(text_buffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void append(text_buffer *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->length, b->capacity - b->length, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->capacity - b->length) {
            b->length += (size_t)n;
            return;
        }
        size_t capacity = 2 * b->capacity + (size_t)n + 1;
        char *grown = realloc(b->data, capacity);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->capacity = capacity;
    }
}

/* "12.3456" with four decimals, independent of the locale. */
static void append_decimal(text_buffer *b, const char *name, double value)
{
    /* What the parser reads back: at most 9 digits before the point. */
    if (!(value >= 0.0) || !(value < 1e9))
        return;
    long long scaled = llround(value * 10000.0);
    if (scaled / 10000 > 999999999)
        return;
    append(b, " %s=%lld.%04lld", name, scaled / 10000, scaled % 10000);
}

/* Header text on one line: names normalised, other texts with control characters and runs of
 * spaces collapsed to one space; truncated to what the parser accepts. */
static void append_header(text_buffer *b, const char *keyword, const char *value, bool name)
{
    char clean[PBSA_TUNING_TEXT];
    if (name) {
        pbsa_tuning_normalise_name(value, clean, sizeof clean);
    } else {
        size_t used = 0;
        for (const unsigned char *c = (const unsigned char *)value; *c && used < sizeof clean - 1;
             c++) {
            bool space = is_space(*c) || *c < 0x20 || *c == 0x7f;
            if (space && (used == 0 || clean[used - 1] == ' '))
                continue;
            clean[used++] = space ? ' ' : (char)*c;
        }
        while (used > 0 && clean[used - 1] == ' ')
            used--;
        clean[used] = '\0';
    }
    if (clean[0])
        append(b, "%s %s\n", keyword, clean);
}

char *pbsa_tuning_format(const pbsa_tuning_file *file)
{
    text_buffer b = {malloc(4096), 0, 4096, false};
    if (!b.data)
        return NULL;
    append(
        &b,
        "# pbsattn tuning file: tile configurations of the attention kernels for one\n"
        "# device, written by pbsa-tune. Format: src/tuning/file.h; the parameters are\n"
        "# cl/flash_tile.cl's BLOCK_M, BLOCK_N, WG_ROWS, WG_COLS, KCHUNK, VCHUNK, UNROLL_QK and\n"
        "# UNROLL_PV, and for the tensor-core kernels (dense_mma, sparse_mma) cl/mma_tile.cl's\n"
        "# MMA_WARPS, MMA_GROUPS, BN and MMA_STAGES. ms and default_ms: median kernel time of\n"
        "# the tuned and the default configuration on the shape tuned (seq, heads, kv_heads).\n");
    append(&b, "%s %d\n", MAGIC, PBSA_TUNING_SCHEMA);
    append_header(&b, "platform", file->platform, true);
    append_header(&b, "device", file->device, true);
    append_header(&b, "driver", file->driver, false);
    append_header(&b, "generator", file->generator, false);
    append_header(&b, "date", file->date, false);
    for (size_t i = 0; i < file->count; i++) {
        const pbsa_tuning_entry *e = &file->entries[i];
        char config[256];
        pbsa_tuning_format_config(e->key.kind, &e->config, config, sizeof config);
        append(&b, "entry kernel=%s dtype=%s head_dim=%d block=%d causal=%d %s",
               pbsa_kernel_kind_name(e->key.kind), pbsa_dtype_name(e->key.dtype), e->key.head_dim,
               e->key.block, e->key.causal, config);
        append_decimal(&b, "ms", e->ms);
        append_decimal(&b, "default_ms", e->default_ms);
        if (e->seq > 0)
            append(&b, " seq=%d", e->seq);
        if (e->heads > 0)
            append(&b, " heads=%d", e->heads);
        if (e->kv_heads > 0)
            append(&b, " kv_heads=%d", e->kv_heads);
        append(&b, "\n");
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}
