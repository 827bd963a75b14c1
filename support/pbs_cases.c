/* The PBS conformance cases and their inputs (see pbs_cases.h). */
#include "pbs_cases.h"
#include "splitmix.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define PER PBSA_GQA_PER_QUERY_HEAD
#define SHARED PBSA_GQA_SHARED_PER_KV_GROUP

/* Segment counts 0, 1 (with and without a tail), 2 and many; lengths that are not a multiple of
 * the block; GQA 4:1 in both modes; batch 2; chunked prefill; every dtype and mixed ones; every
 * head dim.
 * The last case uses exactly pbsa_params_default(), so it also runs with params NULL. */
const pbs_case pbs_cases[] = {
    /* name                  dtypes B Hq Hkv  Sq  Skv    D   b  seg   tau causal sink mode bshd */
    {"f32_nseg0_fallback",     ALL_F32, 1, 2, 2,  50,  50,  64, 16,  64, 0.9f, 1, 1, PER, 0},
    {"f32_nseg1_exact",        ALL_F32, 1, 2, 1,  64,  64,  64, 16,  64, 0.9f, 1, 1, SHARED, 0},
    {"f32_nseg1_tail",         ALL_F32, 1, 2, 2, 100, 100,  64, 16,  64, 0.8f, 1, 1, PER, 0},
    {"f32_nseg2_partial",      ALL_F32, 1, 2, 2, 150, 150,  64, 32,  64, 0.9f, 1, 1, PER, 0},
    {"f32_many_gqa_per_head",  ALL_F32, 1, 4, 1, 700, 700,  64, 32,  64, 0.9f, 1, 1, PER, 0},
    {"f32_many_gqa_shared",    ALL_F32, 1, 4, 1, 700, 700,  64, 32,  64, 0.9f, 1, 1, SHARED, 0},
    {"f16_batch2_d128",        ALL_F16, 2, 2, 2, 333, 333, 128, 16,  64, 0.9f, 1, 1, PER, 0},
    {"bf16_chunked_gqa",      ALL_BF16, 1, 4, 2, 200, 520,  64, 32, 128, 0.9f, 1, 1, PER, 0},
    {"f32_chunked_short_q",    ALL_F32, 1, 2, 1,  20, 340,  64, 32,  64, 0.9f, 1, 1, SHARED, 0},
    {"f32_noncausal_d96",      ALL_F32, 1, 2, 1, 400, 400,  96, 16,  64, 0.7f, 0, 1, SHARED, 0},
    {"f16_d256_nosink",        ALL_F16, 1, 1, 1, 300, 300, 256, 32,  64, 0.9f, 1, 0, PER, 0},
    {"bf16_bshd_d128",        ALL_BF16, 1, 2, 1, 257, 257, 128, 16,  32, 0.95f, 1, 1, PER, 1},
    /* Mixed dtypes (q, k and v, o) and head dims 80, 112 and 192. */
    {"f32qo_f16kv_d80", {F32, F16, F32}, 1, 2, 1, 300, 300, 80, 32, 64, 0.9f, 1, 1, PER, 0},
    {"bf16q_f32o_d112_shared_bshd", {BF16, BF16, F32}, 1, 4, 2, 260, 260, 112, 16, 64, 0.9f, 1, 1,
     SHARED, 1},
    {"f16q_f32kv_bf16o_d192_chunked", {F16, F32, BF16}, 1, 2, 1, 128, 320, 192, 32, 64, 0.9f, 1,
     1, PER, 0},
    {"bf16q_f16kv_f32o_fallback", {BF16, F16, F32}, 1, 2, 2, 50, 50, 64, 16, 64, 0.9f, 0, 1, PER,
     0},
    {"f16_defaults",           ALL_F16, 1, 2, 2, 600, 600, 128, 128, 256, 0.9f, 1, 1, PER, 0},
};
const int pbs_case_count = (int)(sizeof pbs_cases / sizeof pbs_cases[0]);

/* Over a block count that is not a power of two, chunked and non-causal, and over more than
 * 2048 blocks. */
const pbs_case pbs_tie_cases[] = {
    {"f32_ties_132_blocks", ALL_F32, 1, 2, 1, 2100, 2100, 64, 16, 32, 0.9f, 1, 1, PER, 0},
    {"f32_ties_chunked_noncausal", ALL_F32, 1, 2, 1, 700, 1100, 64, 16, 64, 0.7f, 0, 0, PER, 0},
    {"f32_ties_2063_blocks", ALL_F32, 1, 2, 1, 33000, 33000, 64, 16, 64, 0.9f, 1, 1, PER, 0},
};
const int pbs_tie_case_count = (int)(sizeof pbs_tie_cases / sizeof pbs_tie_cases[0]);

void pbs_fail(pbs_report *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = 1;
    va_list args;
    va_start(args, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, args);
    va_end(args);
}

uint64_t pbs_case_seed(unsigned long long seed, const char *name)
{
    uint64_t h = seed ^ 0xcbf29ce484222325ull;
    for (const char *s = name; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

pbsa_params pbs_case_params(const pbs_case *c)
{
    pbsa_params p = pbsa_params_default();
    p.block_size = c->block;
    p.segment_size = c->segment;
    p.threshold = c->threshold;
    p.causal = c->causal;
    p.force_first_block = c->sink;
    p.gqa_mode = c->mode;
    return p;
}

static void layout(host_tensor *t, const pbs_case *c, pbsa_dtype dtype, int heads, int seq)
{
    tensor_init(t, dtype, c->batch, heads, seq, c->head_dim, c->bshd ? TENSOR_BSHD : TENSOR_BHSD,
                PBS_GUARD);
}

static int upload(host_tensor *t, cl_context cl_ctx, pbs_report *r)
{
    int err = t->bytes ? tensor_upload(t, cl_ctx) : CL_OUT_OF_HOST_MEMORY;
    if (err != CL_SUCCESS)
        pbs_fail(r, "cannot create a device buffer (%d)", err);
    return err != CL_SUCCESS;
}

/* Random inputs with structure, so that the permutation and the selection have work to do: some
 * keys carry a shared direction that every query leans towards (heavy hitters), the rest is
 * noise. Queries are larger than keys for sharper, more realistic attention rows. */
int pbs_inputs_make(pbs_inputs *in, const pbs_case *c, unsigned long long seed,
                    cl_context cl_ctx, pbs_report *r)
{
    memset(in, 0, sizeof *in);
    in->c = c;
    in->params = pbs_case_params(c);
    in->group = c->q_heads / c->kv_heads;
    in->perm_heads = c->mode == PER ? c->q_heads : c->kv_heads;
    in->nqb = (c->q_len + c->block - 1) / c->block;
    in->nkb = (c->kv_len + c->block - 1) / c->block;
    in->nseg = c->kv_len / c->segment;
    in->key_count = in->nseg * c->segment;
    in->pi_count = (size_t)c->batch * in->perm_heads * c->kv_len;
    in->rows = (size_t)c->batch * c->q_heads * in->nqb;
    in->out_count = (size_t)c->batch * c->q_heads * c->q_len * c->head_dim;

    uint64_t rng = pbs_case_seed(seed, c->name);
    float *direction = malloc((size_t)c->head_dim * sizeof *direction);
    layout(&in->q, c, c->dtypes.q, c->q_heads, c->q_len);
    layout(&in->k, c, c->dtypes.kv, c->kv_heads, c->kv_len);
    layout(&in->v, c, c->dtypes.kv, c->kv_heads, c->kv_len);
    if (!direction || !in->q.bytes || !in->k.bytes || !in->v.bytes) {
        free(direction);
        pbs_fail(r, "%s: out of host memory", c->name);
        return 1;
    }
    for (int d = 0; d < c->head_dim; d++)
        direction[d] = splitmix_signed(&rng) < 0.0f ? -1.0f : 1.0f;
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->q_heads; h++)
            for (int s = 0; s < c->q_len; s++)
                for (int d = 0; d < c->head_dim; d++)
                    tensor_set(&in->q, b, h, s, d,
                               1.5f * splitmix_signed(&rng) + 0.5f * direction[d]);
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->kv_heads; h++)
            for (int s = 0; s < c->kv_len; s++) {
                float heavy = splitmix_signed(&rng) > 0.6f ? 0.6f + 0.4f * splitmix_signed(&rng)
                                                           : 0.0f;
                for (int d = 0; d < c->head_dim; d++) {
                    tensor_set(&in->k, b, h, s, d, splitmix_signed(&rng) + heavy * direction[d]);
                    tensor_set(&in->v, b, h, s, d, splitmix_signed(&rng));
                }
            }
    free(direction);
    in->hq = tensor_host_view(&in->q);
    in->hk = tensor_host_view(&in->k);
    in->hv = tensor_host_view(&in->v);
    return upload(&in->q, cl_ctx, r) || upload(&in->k, cl_ctx, r) || upload(&in->v, cl_ctx, r);
}

/* Exact ties. Keys are equal within each segment: +a, 0 or -a by segment (a a vector of +-1);
 * queries are zero (head 0) or 8a (head 1), so that block means and logits are exact. Head 0 has
 * every selectable block equally likely; in head 1 the +a blocks (else the 0 blocks) share all
 * the mass, the others hold about 1e-28 each or 0 in float, so the kept set ends inside a group
 * of ties and many blocks have tiny or no mass. No threshold is k/m for any count m of tied
 * blocks, so the float64 reference's choice is exact: the first ceil(tau m) of the tied blocks by
 * index. */
int pbs_inputs_make_ties(pbs_inputs *in, const pbs_case *c, unsigned long long seed,
                         cl_context cl_ctx, cl_command_queue queue, pbs_report *r)
{
    if (pbs_inputs_make(in, c, seed, cl_ctx, r))
        return 1;
    for (int s = 0; s < c->kv_len; s++) {
        int pattern = (s / c->segment * 7 + 3) % 5;
        float sign = pattern < 2 ? 1.0f : pattern == 2 ? 0.0f : -1.0f;
        for (int d = 0; d < c->head_dim; d++)
            tensor_set(&in->k, 0, 0, s, d, d % 3 ? sign : -sign);
    }
    for (int s = 0; s < c->q_len; s++)
        for (int d = 0; d < c->head_dim; d++) {
            tensor_set(&in->q, 0, 0, s, d, 0.0f);
            tensor_set(&in->q, 0, 1, s, d, d % 3 ? 8.0f : -8.0f);
        }
    if (tensor_rewrite(&in->q, queue) != CL_SUCCESS ||
        tensor_rewrite(&in->k, queue) != CL_SUCCESS) {
        pbs_fail(r, "%s: writing the tie inputs failed", c->name);
        return 1;
    }
    return 0;
}

void pbs_inputs_free(pbs_inputs *in)
{
    tensor_free(&in->q);
    tensor_free(&in->k);
    tensor_free(&in->v);
}

int pbs_output_make(host_tensor *o, const pbs_inputs *in, cl_context cl_ctx, pbs_report *r)
{
    layout(o, in->c, in->c->dtypes.o, in->c->q_heads, in->c->q_len);
    return upload(o, cl_ctx, r);
}

int pbs_int_buffer_make(pbs_int_buffer *b, cl_context cl_ctx, size_t count,
                        const cl_int *values, pbs_report *r)
{
    size_t total = count + 2 * PBS_GUARD;
    cl_int *host = malloc(total * sizeof *host);
    cl_int err = CL_OUT_OF_HOST_MEMORY;
    *b = (pbs_int_buffer){NULL, count};
    if (host) {
        for (size_t i = 0; i < total; i++)
            host[i] = -1;
        if (values)
            memcpy(host + PBS_GUARD, values, count * sizeof *host);
        b->mem = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE | CL_MEM_COPY_HOST_PTR,
                                total * sizeof *host, host, &err);
        free(host);
    }
    if (err != CL_SUCCESS)
        pbs_fail(r, "cannot create an int buffer (%d)", err);
    return err != CL_SUCCESS;
}

cl_int *pbs_int_buffer_read(const char *what, const pbs_int_buffer *b, cl_command_queue queue,
                            pbs_report *r)
{
    size_t total = b->count + 2 * PBS_GUARD;
    cl_int *host = malloc(total * sizeof *host);
    if (!host || clEnqueueReadBuffer(queue, b->mem, CL_TRUE, 0, total * sizeof *host, host, 0,
                                     NULL, NULL) != CL_SUCCESS) {
        pbs_fail(r, "%s: reading the buffer back failed", what);
        free(host);
        return NULL;
    }
    for (size_t i = 0; i < PBS_GUARD; i++)
        if (host[i] != -1 || host[PBS_GUARD + b->count + i] != -1) {
            pbs_fail(r, "%s: the call wrote outside its part of the buffer", what);
            free(host);
            return NULL;
        }
    memmove(host, host + PBS_GUARD, b->count * sizeof *host);
    return host;
}

void pbs_int_buffer_free(pbs_int_buffer *b)
{
    if (b->mem)
        clReleaseMemObject(b->mem);
    b->mem = NULL;
}
