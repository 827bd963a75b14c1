/* Host copies of device tensors for the robustness tests: a whole buffer of poison (0xff bytes)
 * around a tensor laid out with gaps or not, element access in float, upload and read-back, and a
 * count of the bytes outside the tensor's elements that changed. */
#ifndef PBSA_TENSOR_IO_H
#define PBSA_TENSOR_IO_H

#include "pbsattn.h"
#include "pbsattn_ref.h"

#include <stddef.h>
#include <stdint.h>

typedef enum tensor_layout {
    TENSOR_BHSD,   /* contiguous, after `guard` poison elements and followed by as many */
    TENSOR_BSHD,   /* [batch, seq, heads, head_dim] in memory, with the same guards */
    TENSOR_PADDED, /* BHSD with gaps between rows, heads and batches as well */
} tensor_layout;

typedef struct test_tensor {
    pbsa_tensor desc; /* desc.buffer is set by tensor_upload() */
    unsigned char *bytes;
    size_t size;
} test_tensor;

/* Lays out a tensor with guard poison elements on both sides, all bytes 0xff. */
void tensor_init(test_tensor *t, pbsa_dtype dtype, int batch, int heads, int seq, int head_dim,
                 tensor_layout layout, int guard);
void tensor_set(test_tensor *t, int b, int h, int s, int d, float value);
double tensor_get(const test_tensor *t, int b, int h, int s, int d);
/* Sets every element to a uniform value in [-1, 1), drawn from the generator state *seed. */
void tensor_fill_uniform(test_tensor *t, uint64_t *seed);
/* Creates the device buffer from the host bytes (0 on success, else the OpenCL error). */
int tensor_upload(test_tensor *t, cl_context cl_ctx);
int tensor_download(test_tensor *t, cl_command_queue queue);
void tensor_free(test_tensor *t);
pbsa_host_tensor tensor_host_view(const test_tensor *t);
/* Bytes of the buffer outside the tensor's elements that are no longer 0xff. */
long tensor_guard_damage(const test_tensor *t);

/* Relative L2 error of the device output t against ref (BHSD doubles, as the reference writes
 * them), over the elements where ref is finite. *nonfinite receives the number of elements of t
 * that are not finite where ref is. */
double tensor_rel_l2(const test_tensor *t, const double *ref, long *nonfinite);

#endif
