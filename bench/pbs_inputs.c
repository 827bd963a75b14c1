/* pbsa-bench-pbs: real inputs from .npy files, and the dump of generated inputs to .npy files
 * (see bench_pbs.h). The files are pbsa-run's: Q [1, Hq, S, D], K and V [1, Hkv, S, D], C order,
 * float32 ('<f4'), float16 ('<f2') or bfloat16 bits ('<u2'). */
#include "bench_pbs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const input_names[3] = {"Q", "K", "V"};
static const char *const file_names[3] = {"q.npy", "k.npy", "v.npy"};

static bool dtype_of(npy_dtype t, pbsa_dtype *out)
{
    switch (t) {
    case NPY_FLOAT32: *out = PBSA_DTYPE_F32; return true;
    case NPY_FLOAT16: *out = PBSA_DTYPE_F16; return true;
    case NPY_UINT16: *out = PBSA_DTYPE_BF16; return true;
    default: return false;
    }
}

/* Sets *value to from_file, or checks that the option given agrees. */
static bool agree(const char *program, const char *option, int *value, uint64_t from_file)
{
    if (*value && (uint64_t)*value != from_file) {
        fprintf(stderr, "%s: %s %d disagrees with the .npy inputs (%llu)\n", program, option,
                *value, (unsigned long long)from_file);
        return false;
    }
    *value = (int)from_file;
    return true;
}

int pbs_npy_load(const char *program, pbs_options *o)
{
    pbs_npy_inputs *in = &o->npy;
    char err[256];
    pbsa_dtype dtypes[3]; /* Q's, and K's, which V's must equal */
    for (int i = 0; i < 3; i++) {
        if (npy_load(in->path[i], &in->array[i], err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s (%s): %s\n", program, in->path[i], input_names[i], err);
            return 2;
        }
        const npy_header *h = &in->array[i].header;
        pbsa_dtype t;
        if (!dtype_of(h->dtype, &t)) {
            fprintf(stderr, "%s: %s (%s): dtype '%s' is not '<f4', '<f2' or '<u2' (bfloat16)\n",
                    program, in->path[i], input_names[i], npy_dtype_descr(h->dtype));
            return 2;
        }
        dtypes[i] = t;
        if (h->ndim != 4 || h->shape[0] != 1 || h->shape[1] < 1 || h->shape[1] > 65536 ||
            h->shape[2] < 1 || h->shape[2] > INT32_MAX || (i == 2 && t != dtypes[1])) {
            fprintf(stderr, "%s: %s (%s): needs [1, H, S, D]%s\n", program, in->path[i],
                    input_names[i], i == 2 ? " of K's dtype" : "");
            return 2;
        }
    }
    const uint64_t *q = in->array[0].header.shape, *k = in->array[1].header.shape,
                   *v = in->array[2].header.shape;
    if (memcmp(k, v, 4 * sizeof *k) != 0 || q[2] != k[2] || q[3] != k[3] || q[1] % k[1] != 0) {
        fprintf(stderr, "%s: the .npy inputs do not form one prefill: Q [1, %llu, %llu, %llu], "
                        "K [1, %llu, %llu, %llu], V [1, %llu, %llu, %llu] (needs K and V alike, "
                        "the same S and D as Q, and Q's heads a multiple of K's)\n",
                program, (unsigned long long)q[1], (unsigned long long)q[2],
                (unsigned long long)q[3], (unsigned long long)k[1], (unsigned long long)k[2],
                (unsigned long long)k[3], (unsigned long long)v[1], (unsigned long long)v[2],
                (unsigned long long)v[3]);
        return 2;
    }
    bench_common_options *c = &o->c;
    if ((c->dtype_given && c->dtype != dtypes[0]) ||
        (c->kv_dtype_given && c->kv_dtype != dtypes[1])) {
        fprintf(stderr, "%s: --dtype or --kv-dtype disagrees with the .npy inputs (Q %s, K/V %s)\n",
                program, bench_dtype_name(dtypes[0]), bench_dtype_name(dtypes[1]));
        return 2;
    }
    c->dtype = dtypes[0];
    c->kv_dtype = dtypes[1];
    c->dtype_given = c->kv_dtype_given = true;
    if (!agree(program, "--heads", &c->heads, q[1]) ||
        !agree(program, "--kv-heads", &c->kv_heads, k[1]) ||
        !agree(program, "--head-dim", &c->head_dim, q[3]))
        return 2;
    in->seq = (int64_t)q[2];
    if (c->length_count == 0) {
        c->lengths[0] = in->seq;
        c->length_count = 1;
    }
    for (int i = 0; i < c->length_count; i++)
        if (c->lengths[i] > in->seq) {
            fprintf(stderr, "%s: length %lld exceeds the .npy inputs' %lld positions (a length "
                            "below it takes the first positions)\n",
                    program, (long long)c->lengths[i], (long long)in->seq);
            return 2;
        }
    return 0;
}

void pbs_npy_free(pbs_npy_inputs *in)
{
    for (int i = 0; i < 3; i++)
        npy_free(&in->array[i]);
}

cl_int pbs_npy_upload(const pbs_options *o, cl_command_queue queue, int64_t seq, cl_mem q,
                      cl_mem k, cl_mem v)
{
    const cl_mem to[3] = {q, k, v};
    cl_int err = CL_SUCCESS;
    for (int i = 0; i < 3 && err == CL_SUCCESS; i++) {
        const size_t element = pbsa_dtype_size(i == 0 ? o->c.dtype : o->c.kv_dtype);
        const size_t row = (size_t)o->c.head_dim * element;
        const npy_array *a = &o->npy.array[i];
        const unsigned char *data = a->data;
        for (uint64_t h = 0; h < a->header.shape[1] && err == CL_SUCCESS; h++)
            err = clEnqueueWriteBuffer(queue, to[i], CL_TRUE, (size_t)h * (size_t)seq * row,
                                       (size_t)seq * row,
                                       data + (size_t)h * (size_t)o->npy.seq * row, 0, NULL,
                                       NULL);
    }
    return err;
}

static int write_metadata(const char *path, const pbs_options *o, const char *workload_name,
                          int64_t seq)
{
    json_writer w;
    FILE *file = bench_json_open("pbsa-bench-pbs", path, &w);
    if (!file)
        return 1;
    json_object_begin(&w, NULL);
    json_string(&w, "written_by", "pbsa-bench-pbs --dump-inputs");
    json_string(&w, "workload", workload_name);
    json_int(&w, "seed", (long long)o->c.seed);
    json_int(&w, "input_set", 0);
    json_string(&w, "dtype", bench_dtype_name(o->c.dtype));
    json_string(&w, "kv_dtype", bench_dtype_name(o->c.kv_dtype));
    json_string(&w, "npy_note",
                o->c.dtype == PBSA_DTYPE_BF16 || o->c.kv_dtype == PBSA_DTYPE_BF16
                    ? "'<u2' arrays hold bfloat16 bits"
                    : "plain floating-point arrays");
    json_int(&w, "batch", 1);
    json_int(&w, "heads", o->c.heads);
    json_int(&w, "kv_heads", o->c.kv_heads);
    json_int(&w, "seq", seq);
    json_int(&w, "head_dim", o->c.head_dim);
    json_string(&w, "layout", "[batch, heads, seq, head_dim], C order");
    json_object_end(&w);
    return bench_json_close("pbsa-bench-pbs", path, file, &w);
}

int pbs_dump_inputs(const pbs_options *o, const char *workload_name, cl_command_queue queue,
                    int64_t seq, cl_mem q, cl_mem k, cl_mem v, char *error, size_t error_size)
{
    /* Room for the file names after the folder in path[4096] below. */
    char dir[4000];
    if ((size_t)snprintf(dir, sizeof dir, "%s", o->dump_dir) >= sizeof dir) {
        snprintf(error, error_size, "the folder name is too long");
        return 1;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(error, error_size, "cannot create %s: %s", dir, strerror(errno));
        return 1;
    }
    if (o->dump_length == PBS_DUMP_ALL) {
        if ((size_t)snprintf(dir, sizeof dir, "%s/%lld", o->dump_dir, (long long)seq) >=
            sizeof dir) {
            snprintf(error, error_size, "the folder name is too long");
            return 1;
        }
        if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
            snprintf(error, error_size, "cannot create %s: %s", dir, strerror(errno));
            return 1;
        }
    }
    const cl_mem from[3] = {q, k, v};
    const int heads[3] = {o->c.heads, o->c.kv_heads, o->c.kv_heads};
    int status = 0;
    for (int i = 0; i < 3 && status == 0; i++) {
        const pbsa_dtype dtype = i == 0 ? o->c.dtype : o->c.kv_dtype;
        const npy_dtype npy = dtype == PBSA_DTYPE_F32   ? NPY_FLOAT32
                              : dtype == PBSA_DTYPE_F16 ? NPY_FLOAT16
                                                        : NPY_UINT16;
        const size_t element = pbsa_dtype_size(dtype);
        const uint64_t shape[4] = {1, (uint64_t)heads[i], (uint64_t)seq,
                                   (uint64_t)o->c.head_dim};
        const size_t count = (size_t)heads[i] * (size_t)seq * (size_t)o->c.head_dim;
        void *host = malloc(count * element);
        char path[4096], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, file_names[i]);
        if (!host) {
            snprintf(error, error_size, "out of host memory");
            status = 1;
        } else if (bench_read_elements(queue, from[i], element, 0, count, host) != CL_SUCCESS) {
            snprintf(error, error_size, "reading %s back failed", input_names[i]);
            status = 1;
        } else if (npy_save(path, npy, 4, shape, host, err, sizeof err) != 0) {
            snprintf(error, error_size, "%s: %s", path, err);
            status = 1;
        }
        free(host);
    }
    if (status == 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/inputs.json", dir);
        if (write_metadata(path, o, workload_name, seq) != 0) {
            snprintf(error, error_size, "writing %s failed", path);
            status = 1;
        }
    }
    return status;
}
