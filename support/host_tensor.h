/* Host copies of device tensors for the tools, benchmarks and tests: elements converted to and
 * from the storage types, a whole buffer of poison (0xff bytes, NaN in every dtype) around a
 * tensor laid out with gaps or not, random fill, upload and read-back, and the comparison of a
 * device output with a float64 reference (error, unwritten elements, bytes written outside). */
#ifndef PBSA_SUPPORT_HOST_TENSOR_H
#define PBSA_SUPPORT_HOST_TENSOR_H

#include "pbsattn.h"
#include "pbsattn_ref.h"

#include <stddef.h>
#include <stdint.h>

/* Stores value rounded to dtype as element index of data / loads element index as a double. */
void tensor_store(void *data, pbsa_dtype dtype, size_t index, float value);
double tensor_load(const void *data, pbsa_dtype dtype, size_t index);
/* count elements of dtype from data on, uniform in [-amplitude, amplitude) (splitmix.h). */
void tensor_random(void *data, pbsa_dtype dtype, size_t count, float amplitude, uint64_t *rng);

/* The dtypes of a case's tensors: q, k and v (which share one), and o. */
typedef struct tensor_dtypes {
    pbsa_dtype q, kv, o;
} tensor_dtypes;
/* Short dtype names for the case tables, and every tensor in one dtype. */
#define F32 PBSA_DTYPE_F32
#define F16 PBSA_DTYPE_F16
#define BF16 PBSA_DTYPE_BF16
#define ALL_F32 {F32, F32, F32}
#define ALL_F16 {F16, F16, F16}
#define ALL_BF16 {BF16, BF16, BF16}

typedef enum tensor_layout {
    TENSOR_BHSD,   /* contiguous, after `guard` poison elements and followed by as many */
    TENSOR_BSHD,   /* [batch, seq, heads, head_dim] in memory, with the same guards */
    TENSOR_PADDED, /* BHSD with gaps between rows, heads and batches as well */
} tensor_layout;

/* A tensor and a host copy of its whole buffer. The caller owns it and releases it with
 * tensor_free(); no function here is thread-safe on the same tensor. */
typedef struct host_tensor {
    pbsa_tensor desc; /* desc.buffer is set by tensor_upload() */
    unsigned char *bytes;
    size_t size;
} host_tensor;

/* Lays out a tensor with guard poison elements on both sides, all bytes 0xff. bytes is NULL
 * when the host memory could not be allocated. */
void tensor_init(host_tensor *t, pbsa_dtype dtype, int batch, int heads, int seq, int head_dim,
                 tensor_layout layout, int guard);
/* Every element slot of the buffer (guards and gaps too) uniform in [-amplitude, amplitude). */
void tensor_fill_random(host_tensor *t, uint64_t *rng, float amplitude);
void tensor_set(host_tensor *t, int b, int h, int s, int d, float value);
double tensor_get(const host_tensor *t, int b, int h, int s, int d);
/* Creates the device buffer from the host bytes (0 on success, else the OpenCL error). */
int tensor_upload(host_tensor *t, cl_context cl_ctx);
/* Writes the host bytes to the existing device buffer again (blocking). */
int tensor_rewrite(host_tensor *t, cl_command_queue queue);
/* Reads the whole device buffer back into the host bytes (blocking). */
int tensor_download(host_tensor *t, cl_command_queue queue);
void tensor_free(host_tensor *t);
pbsa_host_tensor tensor_host_view(const host_tensor *t);
/* Bytes of the buffer outside the tensor's elements that are no longer 0xff (-1: no memory). */
long tensor_guard_damage(const host_tensor *t);

/* A device output against a float64 reference. */
typedef struct tensor_error {
    double rel_l2;      /* ||out - ref|| / ||ref||, over the elements where both are finite */
    double max_abs;     /* max |out - ref| over the same elements */
    long nonfinite;     /* elements of out not finite where ref is (unwritten, poison = NaN) */
    long guard_damage;  /* as tensor_guard_damage() */
} tensor_error;

/* Compares t's host bytes with ref (BHSD doubles, as the reference writes them). */
tensor_error tensor_compare(const host_tensor *t, const double *ref);

#endif
