/* Sequential kernel-argument setting with one error check at the end, and build options. */
#include "core/internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

void pbsa_arg(pbsa_kernel_args *args, size_t size, const void *value)
{
    if (args->status == CL_SUCCESS)
        args->status = clSetKernelArg(args->kernel, args->next, size, value);
    args->next++;
}

void pbsa_arg_mem(pbsa_kernel_args *args, cl_mem buffer) { pbsa_arg(args, sizeof buffer, &buffer); }

void pbsa_arg_u64(pbsa_kernel_args *args, uint64_t value)
{
    cl_ulong v = value;
    pbsa_arg(args, sizeof v, &v);
}

void pbsa_arg_i32(pbsa_kernel_args *args, int32_t value)
{
    cl_int v = value;
    pbsa_arg(args, sizeof v, &v);
}

void pbsa_arg_f32(pbsa_kernel_args *args, float value)
{
    cl_float v = value;
    pbsa_arg(args, sizeof v, &v);
}

float pbsa_scale_log2(float scale)
{
    const double scaled = (double)scale * M_LOG2E;
    return scaled < FLT_MAX ? (float)scaled : FLT_MAX;
}

bool pbsa_append_option(char *buffer, size_t capacity, const char *fmt, ...)
{
    size_t used = strlen(buffer);
    va_list ap;
    va_start(ap, fmt);
    int written = vsnprintf(buffer + used, capacity - used, fmt, ap);
    va_end(ap);
    return written >= 0 && (size_t)written < capacity - used;
}

void pbsa_arg_tensor_layout(pbsa_kernel_args *args, const pbsa_tensor *t)
{
    pbsa_arg_u64(args, t->offset);
    pbsa_arg_u64(args, (uint64_t)t->stride_batch);
    pbsa_arg_u64(args, (uint64_t)t->stride_head);
    pbsa_arg_u64(args, (uint64_t)t->stride_seq);
}

void pbsa_arg_lse(pbsa_kernel_args *args, cl_mem lse, uint64_t offset, const pbsa_tensor *q)
{
    pbsa_arg_mem(args, lse); /* NULL: a NULL pointer, which the kernels test */
    pbsa_arg_u64(args, lse ? offset : 0);
    pbsa_arg_u64(args, (uint64_t)q->seq);
}

void pbsa_arg_sequences(pbsa_kernel_args *args, const pbsa_sequences *s)
{
    /* Absent buffers are NULL pointers in the kernel, which never reads them. */
    pbsa_arg_mem(args, s->varlen ? s->varlen->q_offsets_buffer : NULL);
    pbsa_arg_u64(args, s->varlen ? s->varlen->q_offsets_offset : 0);
    pbsa_arg_mem(args, s->varlen ? s->varlen->kv_offsets_buffer : NULL);
    pbsa_arg_u64(args, s->varlen ? s->varlen->kv_offsets_offset : 0);
    pbsa_arg_mem(args, s->paged ? s->paged->page_table_buffer : NULL);
    pbsa_arg_u64(args, s->paged ? s->paged->page_table_offset : 0);
    pbsa_arg_i32(args, s->paged ? s->paged->max_pages : 0);
    pbsa_arg_i32(args, s->page_size);
    pbsa_arg_i32(args, s->varlen ? 1 : 0);
}

bool pbsa_append_dtype_options(char *options, size_t capacity, const pbsa_dtypes *dtypes)
{
    return pbsa_append_option(options, capacity, " -DQ_DTYPE=%s -DKV_DTYPE=%s -DO_DTYPE=%s",
                              pbsa_dtype_name(dtypes->q), pbsa_dtype_name(dtypes->kv),
                              pbsa_dtype_name(dtypes->o));
}
