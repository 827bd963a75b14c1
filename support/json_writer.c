/* Streaming JSON writer (see json_writer.h). */
#include "json_writer.h"

#include <math.h>

void json_init(json_writer *w, FILE *file)
{
    w->file = file;
    w->depth = 0;
    w->overflow = 0;
    w->one_line = 0;
    for (int i = 0; i < JSON_MAX_DEPTH; i++)
        w->count[i] = 0;
}

void json_init_line(json_writer *w, FILE *file)
{
    json_init(w, file);
    w->one_line = 1;
}

/* A line break and the indentation of the current depth (nothing on one line). */
static void new_line(json_writer *w)
{
    if (w->one_line)
        return;
    fputc('\n', w->file);
    for (int i = 0; i < w->depth; i++)
        fputs("  ", w->file);
}

static void write_escaped(FILE *file, const char *text)
{
    fputc('"', file);
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        switch (*c) {
        case '"': fputs("\\\"", file); break;
        case '\\': fputs("\\\\", file); break;
        case '\n': fputs("\\n", file); break;
        case '\r': fputs("\\r", file); break;
        case '\t': fputs("\\t", file); break;
        default:
            if (*c < 0x20)
                fprintf(file, "\\u%04x", *c);
            else if (*c >= 0x80)
                fputc('?', file);
            else
                fputc(*c, file);
        }
    }
    fputc('"', file);
}

/* The separator, the indentation and the member name that come before every value. */
static void prefix(json_writer *w, const char *key)
{
    if (w->depth > 0) {
        if (w->count[w->depth] > 0)
            fputc(',', w->file);
        new_line(w);
    }
    w->count[w->depth]++;
    if (key) {
        write_escaped(w->file, key);
        fputs(w->one_line ? ":" : ": ", w->file);
    }
}

static void open_scope(json_writer *w, const char *key, char bracket)
{
    prefix(w, key);
    fputc(bracket, w->file);
    if (w->depth + 1 >= JSON_MAX_DEPTH) {
        w->overflow = 1;
        return;
    }
    w->depth++;
    w->count[w->depth] = 0;
}

static void close_scope(json_writer *w, char bracket)
{
    if (w->depth == 0) {
        w->overflow = 1;
        return;
    }
    int had_values = w->count[w->depth] > 0;
    w->depth--;
    if (had_values)
        new_line(w);
    fputc(bracket, w->file);
}

void json_object_begin(json_writer *w, const char *key) { open_scope(w, key, '{'); }
void json_object_end(json_writer *w) { close_scope(w, '}'); }
void json_array_begin(json_writer *w, const char *key) { open_scope(w, key, '['); }
void json_array_end(json_writer *w) { close_scope(w, ']'); }

void json_string(json_writer *w, const char *key, const char *value)
{
    prefix(w, key);
    if (value)
        write_escaped(w->file, value);
    else
        fputs("null", w->file);
}

void json_number(json_writer *w, const char *key, double value)
{
    prefix(w, key);
    if (isfinite(value))
        fprintf(w->file, "%.*g", w->one_line ? 6 : 10, value);
    else
        fputs("null", w->file);
}

void json_int(json_writer *w, const char *key, long long value)
{
    prefix(w, key);
    fprintf(w->file, "%lld", value);
}

void json_bool(json_writer *w, const char *key, int value)
{
    prefix(w, key);
    fputs(value ? "true" : "false", w->file);
}

void json_null(json_writer *w, const char *key)
{
    prefix(w, key);
    fputs("null", w->file);
}

int json_finish(json_writer *w)
{
    fputc('\n', w->file);
    return w->depth == 0 && !w->overflow && !ferror(w->file) ? 0 : -1;
}
