/* Which memory each argument of a call covers, and the check that no output shares memory with
 * an input or another output. A sub-buffer is resolved to its parent and origin, and buffers made
 * on the caller's host memory (CL_MEM_USE_HOST_PTR) to host addresses, so that two handles of the
 * same bytes are seen as such. A tensor covers the bytes from its first to its last element:
 * tensors that interleave without sharing an element still count as overlapping. */
#include "core/internal.h"

#include <stdbool.h>
#include <stdint.h>

pbsa_span pbsa_int_span(const char *name, cl_mem buffer, uint64_t offset, uint64_t count)
{
    /* Checked against the buffer's size by pbsa_check_int_buffer(). */
    return (pbsa_span){name, buffer, offset * 4, (offset + count) * 4};
}

/* Where the bytes of a span live: a root buffer and a range in it, or (root NULL) a range of host
 * addresses; nowhere (absent) for a span without a buffer. */
typedef struct placed_span {
    cl_mem root;
    uint64_t begin, end;
    bool absent;
} placed_span;

static cl_int place(const pbsa_span *s, placed_span *out)
{
    if (!s->buffer) {
        *out = (placed_span){.absent = true};
        return CL_SUCCESS;
    }
    cl_mem parent = NULL;
    size_t origin = 0;
    cl_int err = clGetMemObjectInfo(s->buffer, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent,
                                    &parent, NULL);
    if (err == CL_SUCCESS && parent)
        err = clGetMemObjectInfo(s->buffer, CL_MEM_OFFSET, sizeof origin, &origin, NULL);
    cl_mem root = parent ? parent : s->buffer;
    cl_mem_flags flags = 0;
    void *host = NULL;
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(root, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
    if (err == CL_SUCCESS && (flags & CL_MEM_USE_HOST_PTR))
        err = clGetMemObjectInfo(root, CL_MEM_HOST_PTR, sizeof host, &host, NULL);
    if (err != CL_SUCCESS)
        return err;
    const uint64_t base = origin + (host ? (uint64_t)(uintptr_t)host : 0);
    *out = (placed_span){host ? NULL : root, base + s->begin, base + s->end, false};
    return CL_SUCCESS;
}

static bool spans_meet(const placed_span *a, const placed_span *b)
{
    return !a->absent && !b->absent && a->root == b->root && a->begin < b->end && b->begin < a->end;
}

int pbsa_check_disjoint(const pbsa_context *ctx, const char *fn, const pbsa_span *outputs,
                        int output_count, const pbsa_span *inputs, int input_count)
{
    enum { MAX_SPANS = 12 };
    placed_span placed[MAX_SPANS];
    const int count = output_count + input_count;
    if (count > MAX_SPANS)
        return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE, "%s: too many arguments to check", fn);
    for (int i = 0; i < count; i++) {
        const pbsa_span *s = i < output_count ? &outputs[i] : &inputs[i - output_count];
        cl_int err = place(s, &placed[i]);
        if (err != CL_SUCCESS)
            return pbsa_fail(ctx, err, "%s: cannot query the buffer of %s (OpenCL error %d)", fn,
                             s->name, err);
    }
    /* Every output against every other output and every input. */
    for (int i = 0; i < output_count; i++)
        for (int j = i + 1; j < count; j++)
            if (spans_meet(&placed[i], &placed[j]))
                return pbsa_fail(ctx, PBSA_ERROR_INVALID_VALUE,
                                 "%s: %s overlaps %s (the same memory)", fn, outputs[i].name,
                                 j < output_count ? outputs[j].name : inputs[j - output_count].name);
    return PBSA_SUCCESS;
}
