/* A small streaming JSON writer for the result files of the benchmarks and the tools, and for
 * pbsa-run's statistics line: the commas placed for the caller. Strings are escaped; bytes
 * outside ASCII are written as '?' so the file is always valid UTF-8; non-finite numbers are
 * written as null. Thread-safety: one writer per thread. */
#ifndef PBSA_BENCH_JSON_WRITER_H
#define PBSA_BENCH_JSON_WRITER_H

#include <stdio.h>

enum { JSON_MAX_DEPTH = 16 };

typedef struct json_writer {
    FILE *file;
    int depth;
    int count[JSON_MAX_DEPTH]; /* values written so far inside each open object or array */
    int overflow;              /* set when nesting went deeper than JSON_MAX_DEPTH */
    int one_line;              /* json_init_line()'s style */
} json_writer;

/* Starts a document on file (which the caller keeps owning): one value per line, indented,
 * numbers with 10 significant digits. Every other call takes key NULL for a value inside an
 * array or for the top-level value, and the member name inside an object. */
void json_init(json_writer *w, FILE *file);
/* Starts a document written on one line without spaces, numbers with 6 significant digits. */
void json_init_line(json_writer *w, FILE *file);
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
