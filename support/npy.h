/* NumPy .npy files: a header parser that is a pure function over a byte buffer (it never reads
 * outside the buffer it is given, allocates nothing and keeps no state, so it can be fuzzed on
 * its own), a loader that reads a whole file and parses it, and a writer.
 *
 * Supported: format versions 1.0, 2.0 and 3.0; C order only; the little-endian dtypes below.
 * The data must follow the header exactly and fill the rest of the file. */
#ifndef PBSA_NPY_H
#define PBSA_NPY_H

#include <stddef.h>
#include <stdint.h>

/* NumPy's own limit on the number of dimensions. */
enum { NPY_MAX_DIMS = 32 };

typedef enum npy_dtype {
    NPY_FLOAT32 = 0, /* '<f4' */
    NPY_FLOAT16,     /* '<f2' */
    NPY_UINT16,      /* '<u2' (also the carrier of bfloat16 bits) */
    NPY_INT32,       /* '<i4' */
    NPY_BOOL,        /* '|b1' */
} npy_dtype;

typedef struct npy_header {
    npy_dtype dtype;
    size_t item_size;
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
    uint64_t count;     /* product of the shape (1 for a 0-d array) */
    size_t data_offset; /* bytes from the start of the file to the data */
    size_t data_bytes;  /* count * item_size, equal to the file size - data_offset */
} npy_header;

/* The descr string of dtype ("<f4", ...), or NULL for an unknown value. */
const char *npy_dtype_descr(npy_dtype dtype);

/*
 * Parses the .npy file held in bytes[0 .. size). Returns 0 and fills *out, or returns -1 and
 * writes a one-line message into err (when err_size > 0) for: a short buffer, a bad magic
 * string, an unsupported version, a header length that runs past the buffer, a header that is not
 * a Python dict literal with exactly the keys 'descr', 'fortran_order' and 'shape', an unsupported
 * dtype, fortran_order True, a shape that is not a tuple of non-negative integers (or has more
 * than NPY_MAX_DIMS of them), an element count or byte size that overflows, and data that does not
 * fill the rest of the buffer exactly. *out is only written on success.
 */
int npy_parse(const void *bytes, size_t size, npy_header *out, char *err, size_t err_size);

/* A loaded file: the whole file in memory, its header, and a pointer to its data. */
typedef struct npy_array {
    npy_header header;
    unsigned char *file;
    size_t file_size;
    const void *data; /* file + header.data_offset */
} npy_array;

/* Reads path and parses it. Returns 0, or -1 with a message in err (which names neither the path
 * nor the program; the caller adds them). On failure *out holds nothing to free. */
int npy_load(const char *path, npy_array *out, char *err, size_t err_size);
void npy_free(npy_array *a);

/* Writes a version 1.0 file, C order, header padded so that the data starts on a multiple of
 * 64 bytes. data holds the product of shape elements of dtype. A new or regular file is replaced
 * atomically (written as PATH.tmp.PID, then renamed): on failure path is as it was and no
 * temporary is left; anything else (a device, a FIFO, a symbolic link) is written in place.
 * Returns 0, or -1 with a message in err. */
int npy_save(const char *path, npy_dtype dtype, int ndim, const uint64_t *shape, const void *data,
             char *err, size_t err_size);

#endif
