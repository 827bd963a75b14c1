/* A small streaming JSON writer for benchmark result files: one value per line, indented, with
 * the commas placed for the caller. Strings are escaped; bytes outside ASCII are written as '?'
 * so the file is always valid UTF-8; non-finite numbers are written as null. */
#ifndef PBSA_BENCH_JSON_WRITER_H
#define PBSA_BENCH_JSON_WRITER_H

#include <stdio.h>

enum { JSON_MAX_DEPTH = 16 };

typedef struct json_writer {
    FILE *file;
    int depth;
    int count[JSON_MAX_DEPTH]; /* values written so far inside each open object or array */
    int overflow;              /* set when nesting went deeper than JSON_MAX_DEPTH */
} json_writer;

/* Starts a document on file. Every other call takes key NULL for a value inside an array or for
 * the top-level value, and the member name inside an object. */
void json_init(json_writer *w, FILE *file);
void json_object_begin(json_writer *w, const char *key);
void json_object_end(json_writer *w);
void json_array_begin(json_writer *w, const char *key);
void json_array_end(json_writer *w);
void json_string(json_writer *w, const char *key, const char *value); /* NULL writes null */
void json_number(json_writer *w, const char *key, double value);
void json_int(json_writer *w, const char *key, long long value);
void json_bool(json_writer *w, const char *key, int value);
void json_null(json_writer *w, const char *key);
/* Ends the document with a newline; returns 0 when everything was written, -1 otherwise. */
int json_finish(json_writer *w);

#endif
