/* The PBS stages against the reference (see pbs_checks.h). Where float32 rounding can flip a
 * near tie, the checks test properties that any correct answer has rather than equality with the
 * reference's choice. */
#include "pbs_checks.h"
#include "conformance.h"
#include "pbsattn_ref.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define LOG(r, ...) ((r)->log ? fprintf((r)->log, __VA_ARGS__) : 0)

static cl_context context_of(cl_command_queue queue)
{
    cl_context cl_ctx = NULL;
    clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof cl_ctx, &cl_ctx, NULL);
    return cl_ctx;
}

static int expect_ok(const char *what, pbsa_context *ctx, int status, pbs_report *r)
{
    if (status != PBSA_SUCCESS)
        pbs_fail(r, "%s: status %d (%s): %s", what, status, pbsa_status_string(status),
                 pbsa_context_last_error(ctx));
    return status != PBSA_SUCCESS;
}

/* Waits for the event a call handed back, which it must have. */
static int wait_done(const char *what, cl_event done, pbs_report *r)
{
    if (!done) {
        pbs_fail(r, "%s: no event handed back", what);
        return 1;
    }
    cl_int err = clWaitForEvents(1, &done);
    clReleaseEvent(done);
    if (err != CL_SUCCESS)
        pbs_fail(r, "%s: waiting for its event failed (%d)", what, err);
    return err != CL_SUCCESS;
}

/* Zeroed host memory of bytes (at least 1), or NULL after pbs_fail(). */
static void *alloc(size_t bytes, pbs_report *r)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p)
        pbs_fail(r, "out of host memory");
    return p;
}

int pbs_check_output(const char *what, const tensor_dtypes *dtypes, host_tensor *o,
                     cl_command_queue queue, const double *ref, pbs_report *r)
{
    if (tensor_download(o, queue) != CL_SUCCESS) {
        pbs_fail(r, "%s: reading the output back failed", what);
        return 1;
    }
    tensor_error e = tensor_compare(o, ref);
    double limit = conformance_limit(dtypes);
    LOG(r, "  %-44s rel_l2 %.3e (limit %.0e) max_abs %.3e\n", what, e.rel_l2, limit, e.max_abs);
    r->rel_l2 = fmax(r->rel_l2, e.rel_l2);
    if (e.nonfinite || e.guard_damage || !(e.rel_l2 <= limit)) {
        pbs_fail(r, "%s: rel_l2 %.3e (limit %.0e), %ld elements unwritten or non-finite, %ld "
                 "bytes outside the output changed", what, e.rel_l2, limit, e.nonfinite,
                 e.guard_damage);
        return 1;
    }
    return 0;
}

int pbs_check_lse(const char *what, const lse_buffer *lse, const tensor_dtypes *dtypes,
                  cl_command_queue queue, const double *ref, pbs_report *r)
{
    lse_error e;
    if (lse_buffer_compare(lse, queue, ref, &e) != CL_SUCCESS) {
        pbs_fail(r, "%s: reading the log-sum-exp back failed", what);
        return 1;
    }
    const double limit = lse_tolerance(dtypes);
    LOG(r, "  %-44s lse max_abs %.3e (limit %.0e)\n", what, e.max_abs, limit);
    if (!lse_error_ok(&e, limit)) {
        pbs_fail(r,
                 "%s: log-sum-exp max_abs %.3e (limit %.0e), %ld unwritten, %ld written "
                 "outside the rows, %ld guard values changed",
                 what, e.max_abs, limit, e.unwritten, e.stray, e.guard_damage);
        return 1;
    }
    return 0;
}

int pbs_dense_reference(const pbs_inputs *in, double *ref, double *lse, pbs_report *r)
{
    pbsa_dense_params dense = {.causal = in->params.causal, .scale = in->params.scale};
    return expect_ok("pbsa_ref_dense_attention", NULL,
                     pbsa_ref_dense_attention_lse(&in->hq, &in->hk, &in->hv, &dense, ref, lse), r);
}

/* ---- permutation ----------------------------------------------------------------------------- */

static bool permutation_is_identity(const pbs_inputs *in)
{
    return in->nseg == 0 || (in->nseg == 1 && in->c->kv_len % in->c->segment == 0);
}

/* Every row of pi is a permutation that keeps each key in its segment, the identity on the tail
 * and everywhere when there is nothing to sort. */
static int check_pi_structure(const char *what, const pbs_inputs *in, const cl_int *pi,
                              pbs_report *r)
{
    const int skv = in->c->kv_len, seg = in->c->segment;
    uint8_t *seen = alloc((size_t)skv, r);
    for (size_t row = 0; seen && !r->failed && row < in->pi_count / (size_t)skv; row++) {
        const cl_int *p_row = pi + row * (size_t)skv;
        memset(seen, 0, (size_t)skv);
        for (int p = 0; p < skv && !r->failed; p++) {
            cl_int key = p_row[p];
            if (key < 0 || key >= skv || seen[key]) {
                pbs_fail(r, "%s: row %zu is not a permutation (position %d holds %d)", what, row,
                         p, key);
                break;
            }
            seen[key] = 1;
            if (p >= in->key_count || permutation_is_identity(in)) {
                if (key != p)
                    pbs_fail(r, "%s: row %zu, position %d holds %d, expected the identity", what,
                             row, p, key);
            } else if (key / seg != p / seg) {
                pbs_fail(r, "%s: row %zu moves key %d out of its segment to position %d", what,
                         row, key, p);
            }
        }
    }
    free(seen);
    return r->failed;
}

/* How far the device's scores may stray from the reference's (a fraction of the row's largest):
 * fp32 arithmetic on the same stored inputs, except that the tensor cores round a q of another
 * dtype than k's to k's 16-bit type (2^-9 relative for bf16). */
static double permutation_eps(const tensor_dtypes *dtypes)
{
    if (dtypes->q != dtypes->kv && dtypes->kv != PBSA_DTYPE_F32)
        return 4e-3;
    return dtypes->q == PBSA_DTYPE_F32 && dtypes->kv == PBSA_DTYPE_F32 ? 2e-6 : 1e-5;
}

/* Along pi inside each segment, the reference scores must not increase by more than
 * eps x (the largest score of the row). */
static int check_pi_order(const char *what, const pbs_inputs *in, const cl_int *pi,
                          const double *scores, double eps, pbs_report *r)
{
    const int skv = in->c->kv_len, seg = in->c->segment, len = in->key_count;
    double worst = 0.0;
    for (size_t row = 0; !r->failed && row < in->pi_count / (size_t)skv; row++) {
        const cl_int *p_row = pi + row * (size_t)skv;
        const double *s = scores + row * (size_t)len;
        double top = 0.0;
        for (int j = 0; j < len; j++)
            top = fmax(top, s[j]);
        for (int p = 1; p < len; p++) {
            if (p % seg == 0)
                continue;
            double rise = (s[p_row[p]] - s[p_row[p - 1]]) / top;
            worst = fmax(worst, rise);
            if (rise > eps) {
                pbs_fail(r, "%s: row %zu, positions %d and %d: score rises from %.9g to %.9g "
                         "(%.2e of the row's maximum, limit %.0e)", what, row, p - 1, p,
                         s[p_row[p - 1]], s[p_row[p]], rise, eps);
                break;
            }
        }
    }
    LOG(r, "  %-44s largest score rise along pi %.2e (limit %.0e)\n", what, worst, eps);
    return r->failed;
}

/* A workspace of the size pbsa_workspace_size() asks for the inputs; NULL after a failure. */
static cl_mem workspace_make(pbsa_context *ctx, cl_context cl_ctx, const pbs_inputs *in,
                             pbs_report *r)
{
    size_t bytes;
    if (expect_ok("pbsa_workspace_size", ctx,
                  pbsa_workspace_size(ctx, &in->q.desc, &in->k.desc, &in->params, &bytes), r))
        return NULL;
    cl_int err;
    cl_mem workspace = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS) {
        pbs_fail(r, "cannot create the workspace (%d)", err);
        return NULL;
    }
    return workspace;
}

/* pbsa_permutation with a workspace of the caller's size and without one (the same pi), its
 * structure, and its order against the reference scores. */
int pbs_check_permutation(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                          pbs_report *r)
{
    const pbs_case *c = in->c;
    cl_context cl_ctx = context_of(queue);
    pbs_int_buffer pi_buf = {0}, pi2_buf = {0};
    cl_mem workspace = NULL;
    cl_int *pi = NULL, *pi2 = NULL;
    int32_t *ref_pi = alloc(in->pi_count * sizeof *ref_pi, r);
    double *scores = alloc((size_t)c->batch * in->perm_heads * in->key_count * sizeof(double), r);
    if (!ref_pi || !scores || pbs_int_buffer_make(&pi_buf, cl_ctx, in->pi_count, NULL, r) ||
        pbs_int_buffer_make(&pi2_buf, cl_ctx, in->pi_count, NULL, r) ||
        !(workspace = workspace_make(ctx, cl_ctx, in, r)))
        goto done;
    cl_event done = NULL;
    if (expect_ok("pbsa_permutation", ctx,
                  pbsa_permutation(ctx, queue, &in->q.desc, &in->k.desc, &in->params, pi_buf.mem,
                                   PBS_GUARD, workspace, &done), r) ||
        wait_done("pbsa_permutation", done, r) ||
        !(pi = pbs_int_buffer_read("pbsa_permutation", &pi_buf, queue, r)) ||
        expect_ok("pbsa_ref_pbs_permutation", NULL,
                  pbsa_ref_pbs_permutation(&in->hq, &in->hk, &in->params, ref_pi, scores), r) ||
        check_pi_structure("permutation structure", in, pi, r))
        goto done;
    double eps = permutation_eps(&c->dtypes);
    if (!permutation_is_identity(in) && check_pi_order("permutation order", in, pi, scores, eps, r))
        goto done;
    size_t same = 0;
    for (size_t x = 0; x < in->pi_count; x++)
        same += pi[x] == ref_pi[x];
    LOG(r, "  %-44s %.1f%% of positions equal to the reference\n", "permutation",
        100.0 * (double)same / (double)in->pi_count);

    /* Without a workspace the library brings its own: the same permutation. */
    if (expect_ok("pbsa_permutation (workspace NULL)", ctx,
                  pbsa_permutation(ctx, queue, &in->q.desc, &in->k.desc, &in->params,
                                   pi2_buf.mem, PBS_GUARD, NULL, NULL), r) ||
        !(pi2 = pbs_int_buffer_read("pbsa_permutation (workspace NULL)", &pi2_buf, queue, r)))
        goto done;
    if (memcmp(pi, pi2, in->pi_count * sizeof *pi) != 0)
        pbs_fail(r, "pbsa_permutation without a workspace gives another permutation");
done:
    free(pi);
    free(pi2);
    free(ref_pi);
    free(scores);
    pbs_int_buffer_free(&pi_buf);
    pbs_int_buffer_free(&pi2_buf);
    if (workspace)
        clReleaseMemObject(workspace);
    return r->failed;
}

/* ---- selection ------------------------------------------------------------------------------- */

/* Block of the row of pi that holds original key 0. */
static int sink_block_of(const pbs_inputs *in, const cl_int *pi_row)
{
    for (int p = 0; p < in->c->kv_len; p++)
        if (pi_row[p] == 0)
            return p / in->c->block;
    return -1;
}

/* One row's list against the reference probabilities a of the same permutation: ascending and
 * in range; the own segment and the sink present; nothing else that is not allowed; the allowed
 * blocks kept reach tau; dropping the smallest kept block (the forced sink aside) falls below
 * tau; no block left out is clearly more probable than one kept. Marks chosen[] from the list. */
static void check_row(const char *what, const pbs_inputs *in, size_t row, int i, int sink,
                      int n, const cl_int *list, const double *a, uint8_t *chosen, pbs_report *r)
{
    const pbs_case *c = in->c;
    const int nkb = in->nkb, bps = c->segment / c->block, offset = in->nkb - in->nqb;
    const double tau = (double)c->threshold;
    if (n < 1 || n > nkb) {
        pbs_fail(r, "%s: row %zu has %d blocks (1 .. %d expected)", what, row, n, nkb);
        return;
    }
    for (int t = 0; t < n; t++) {
        int j = list[t];
        if (j < 0 || j >= nkb || (t > 0 && j <= list[t - 1])) {
            pbs_fail(r, "%s: row %zu, entry %d = %d: not ascending within 0 .. %d", what, row, t,
                     j, nkb - 1);
            return;
        }
        chosen[j] = 1;
    }
    int own = (i + offset) / bps;
    double kept = 0.0, kept_free = 0.0, smallest_free = INFINITY, largest_left = 0.0;
    int allowed_count = 0, free_count = 0;
    for (int j = 0; j < nkb; j++) {
        bool allowed = j / bps != own && (!c->causal || j <= i + offset);
        bool forced = j / bps == own || (c->sink && j == sink);
        if (forced && !chosen[j])
            pbs_fail(r, "%s: row %zu lacks block %d (%s)", what, row, j,
                     j / bps == own ? "own segment" : "sink");
        if (!allowed) {
            if (chosen[j] && !forced)
                pbs_fail(r, "%s: row %zu holds block %d, which may not be selected", what, row,
                         j);
            continue;
        }
        allowed_count++;
        if (!chosen[j]) {
            largest_left = fmax(largest_left, a[j]);
            continue;
        }
        kept += a[j];
        if (!(c->sink && j == sink)) {
            kept_free += a[j];
            smallest_free = fmin(smallest_free, a[j]);
            free_count++;
        }
    }
    if (allowed_count == 0)
        return;
    if (tau >= 1.0) {
        if (largest_left > 1e-30)
            pbs_fail(r, "%s: row %zu, threshold %g leaves a block of mass %.3g out", what, row,
                     tau, largest_left);
        return;
    }
    if (kept < tau - 1e-4)
        pbs_fail(r, "%s: row %zu keeps mass %.6f < threshold %.6f", what, row, kept, tau);
    if (free_count > 0 && kept_free - smallest_free >= tau + 1e-4)
        pbs_fail(r, "%s: row %zu is not minimal: without its smallest block (%.3g) it still "
                 "keeps %.6f >= threshold %.6f", what, row, smallest_free,
                 kept_free - smallest_free, tau);
    if (free_count > 0 && largest_left > smallest_free + 1e-5)
        pbs_fail(r, "%s: row %zu leaves out a block of mass %.6f but keeps one of %.6f", what,
                 row, largest_left, smallest_free);
}

/* Checks block lists against the reference probabilities of the same permutation (check_row()).
 * Fills mask (B*Hq*nqb*nkb bytes) from the lists and r->rows, r->exact_rows. */
static int check_block_lists(const char *what, const pbs_inputs *in, const cl_int *pi,
                             const cl_int *counts, const cl_int *blocks, uint8_t *mask,
                             pbs_report *r)
{
    const pbs_case *c = in->c;
    const int nkb = in->nkb, nqb = in->nqb;
    size_t cells = in->rows * (size_t)nkb;
    uint8_t *ref_mask = alloc(cells, r);
    double *probs = alloc(cells * sizeof *probs, r);
    int32_t *pi32 = alloc(in->pi_count * sizeof *pi32, r);
    if (!ref_mask || !probs || !pi32)
        goto done;
    for (size_t x = 0; x < in->pi_count; x++)
        pi32[x] = pi[x];
    if (expect_ok("pbsa_ref_pbs_block_mask", NULL,
                  pbsa_ref_pbs_block_mask(&in->hq, &in->hk, pi32, &in->params, ref_mask, probs),
                  r))
        goto done;
    memset(mask, 0, cells);
    size_t exact_rows = 0, selected = 0, ref_selected = 0;
    for (int b = 0; b < c->batch; b++)
        for (int h = 0; h < c->q_heads && !r->failed; h++) {
            int ph = c->mode == PBSA_GQA_PER_QUERY_HEAD ? h : h / in->group;
            int sink = sink_block_of(in, pi + ((size_t)b * in->perm_heads + ph) * c->kv_len);
            for (int i = 0; i < nqb && !r->failed; i++) {
                size_t row = ((size_t)b * c->q_heads + h) * nqb + i;
                check_row(what, in, row, i, sink, counts[row], blocks + row * nkb,
                          probs + row * nkb, mask + row * nkb, r);
                exact_rows += memcmp(mask + row * nkb, ref_mask + row * nkb, (size_t)nkb) == 0;
            }
        }
    for (size_t x = 0; x < cells; x++) {
        selected += mask[x];
        ref_selected += ref_mask[x];
    }
    LOG(r, "  %-44s %zu of %zu rows equal to the reference; %zu blocks kept (reference %zu) of "
        "%zu\n", what, exact_rows, in->rows, selected, ref_selected, cells);
    r->rows = in->rows;
    r->exact_rows = exact_rows;
done:
    free(ref_mask);
    free(probs);
    free(pi32);
    return r->failed;
}

int pbs_check_selection(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                        int exact, pbs_report *r)
{
    cl_context cl_ctx = context_of(queue);
    pbs_int_buffer pi_buf = {0}, counts_buf = {0}, blocks_buf = {0};
    cl_int *pi = NULL, *counts = NULL, *blocks = NULL;
    uint8_t *mask = alloc(in->rows * (size_t)in->nkb, r);
    if (!mask || pbs_int_buffer_make(&pi_buf, cl_ctx, in->pi_count, NULL, r) ||
        pbs_int_buffer_make(&counts_buf, cl_ctx, in->rows, NULL, r) ||
        pbs_int_buffer_make(&blocks_buf, cl_ctx, in->rows * (size_t)in->nkb, NULL, r) ||
        expect_ok("pbsa_permutation", ctx,
                  pbsa_permutation(ctx, queue, &in->q.desc, &in->k.desc, &in->params, pi_buf.mem,
                                   PBS_GUARD, NULL, NULL), r) ||
        !(pi = pbs_int_buffer_read("pbsa_permutation", &pi_buf, queue, r)) ||
        check_pi_structure("permutation structure", in, pi, r))
        goto done;
    /* The device's pi goes to both selections, so they work on identical inputs. */
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, PBS_GUARD, PBS_GUARD};
    cl_event done = NULL;
    if (expect_ok("pbsa_block_selection", ctx,
                  pbsa_block_selection(ctx, queue, &in->q.desc, &in->k.desc, &in->params,
                                       pi_buf.mem, PBS_GUARD, &list, NULL, &done), r) ||
        wait_done("pbsa_block_selection", done, r) ||
        !(counts = pbs_int_buffer_read("pbsa_block_selection counts", &counts_buf, queue, r)) ||
        !(blocks = pbs_int_buffer_read("pbsa_block_selection blocks", &blocks_buf, queue, r)) ||
        check_block_lists("selection", in, pi, counts, blocks, mask, r))
        goto done;
    if (exact && r->exact_rows != in->rows)
        pbs_fail(r, "%s: %zu of %zu rows differ from the reference", in->c->name,
                 in->rows - r->exact_rows, in->rows);
done:
    free(pi);
    free(counts);
    free(blocks);
    free(mask);
    pbs_int_buffer_free(&pi_buf);
    pbs_int_buffer_free(&counts_buf);
    pbs_int_buffer_free(&blocks_buf);
    return r->failed;
}

/* ---- sparse attention over given lists ------------------------------------------------------- */

/* Block lists (counts, then blocks with row stride nkb, -1 past each count) from a mask. */
static void mask_to_lists(const pbs_inputs *in, const uint8_t *mask, cl_int *counts,
                          cl_int *blocks)
{
    for (size_t row = 0; row < in->rows; row++) {
        int n = 0;
        for (int j = 0; j < in->nkb; j++) {
            blocks[row * in->nkb + j] = -1;
            if (mask[row * in->nkb + j])
                blocks[row * in->nkb + n++] = j;
        }
        counts[row] = n;
    }
}

int pbs_check_sparse_over(const char *what, pbsa_context *ctx, cl_command_queue queue,
                          const pbs_inputs *in, const int32_t *pi, const uint8_t *mask,
                          pbs_report *r)
{
    cl_context cl_ctx = context_of(queue);
    size_t cells = in->rows * (size_t)in->nkb;
    pbs_int_buffer counts_buf = {0}, blocks_buf = {0}, pi_buf = {0};
    host_tensor o = {0};
    lse_buffer lse = {0};
    const size_t rows = in->out_count / (size_t)in->c->head_dim;
    cl_int *counts = alloc(in->rows * sizeof *counts, r);
    cl_int *blocks = alloc(cells * sizeof *blocks, r);
    cl_int *counts_after = NULL, *blocks_after = NULL;
    int32_t *ref_pi = alloc(in->pi_count * sizeof *ref_pi, r);
    double *ref = alloc(in->out_count * sizeof *ref, r);
    double *ref_lse = alloc(rows * sizeof *ref_lse, r);
    if (!counts || !blocks || !ref_pi || !ref || !ref_lse)
        goto done;
    mask_to_lists(in, mask, counts, blocks);
    if (pi)
        memcpy(ref_pi, pi, in->pi_count * sizeof *ref_pi);
    else
        for (size_t x = 0; x < in->pi_count; x++)
            ref_pi[x] = (int32_t)(x % (size_t)in->c->kv_len);
    if (pbs_int_buffer_make(&counts_buf, cl_ctx, in->rows, counts, r) ||
        pbs_int_buffer_make(&blocks_buf, cl_ctx, cells, blocks, r) ||
        (pi && pbs_int_buffer_make(&pi_buf, cl_ctx, in->pi_count, pi, r)) ||
        pbs_output_make(&o, in, cl_ctx, r))
        goto done;
    if (lse_buffer_make(&lse, cl_ctx, rows) != CL_SUCCESS) {
        pbs_fail(r, "cannot create the log-sum-exp buffer");
        goto done;
    }
    pbsa_params params = in->params;
    params.lse = lse.mem;
    params.lse_offset = LSE_GUARD;
    pbsa_block_list list = {counts_buf.mem, blocks_buf.mem, PBS_GUARD, PBS_GUARD};
    cl_event done = NULL;
    if (expect_ok("pbsa_sparse_attention", ctx,
                  pbsa_sparse_attention(ctx, queue, &in->q.desc, &in->k.desc, &in->v.desc, &o.desc,
                                        &params, pi ? pi_buf.mem : NULL, pi ? PBS_GUARD : 0, &list,
                                        &done),
                  r) ||
        wait_done("pbsa_sparse_attention", done, r) ||
        expect_ok("pbsa_ref_pbs_sparse_attention", NULL,
                  pbsa_ref_pbs_sparse_attention_lse(&in->hq, &in->hk, &in->hv, ref_pi, mask,
                                                    &in->params, ref, ref_lse),
                  r) ||
        pbs_check_output(what, &in->c->dtypes, &o, queue, ref, r) ||
        pbs_check_lse(what, &lse, &in->c->dtypes, queue, ref_lse, r))
        goto done;
    /* The inputs of the call are left as they were. */
    if (!(counts_after = pbs_int_buffer_read("counts", &counts_buf, queue, r)) ||
        !(blocks_after = pbs_int_buffer_read("blocks", &blocks_buf, queue, r)))
        goto done;
    if (memcmp(counts_after, counts, in->rows * sizeof *counts) != 0 ||
        memcmp(blocks_after, blocks, cells * sizeof *blocks) != 0)
        pbs_fail(r, "%s: pbsa_sparse_attention changed its block lists", what);
done:
    free(counts_after);
    free(blocks_after);
    free(ref);
    free(ref_lse);
    lse_buffer_free(&lse);
    free(ref_pi);
    free(counts);
    free(blocks);
    tensor_free(&o);
    pbs_int_buffer_free(&counts_buf);
    pbs_int_buffer_free(&blocks_buf);
    pbs_int_buffer_free(&pi_buf);
    return r->failed;
}

int pbs_check_sparse(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                     pbs_report *r)
{
    int32_t *pi = alloc(in->pi_count * sizeof *pi, r);
    uint8_t *mask = alloc(in->rows * (size_t)in->nkb, r);
    if (pi && mask &&
        !expect_ok("pbsa_ref_pbs_permutation", NULL,
                   pbsa_ref_pbs_permutation(&in->hq, &in->hk, &in->params, pi, NULL), r) &&
        !expect_ok("pbsa_ref_pbs_block_mask", NULL,
                   pbsa_ref_pbs_block_mask(&in->hq, &in->hk, pi, &in->params, mask, NULL), r))
        pbs_check_sparse_over("sparse attention, reference pi and mask", ctx, queue, in, pi, mask,
                              r);
    free(pi);
    free(mask);
    return r->failed;
}

/* ---- the whole pipeline ---------------------------------------------------------------------- */

static cl_int *workspace_read(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                              cl_mem workspace, pbsa_workspace_part part, size_t count,
                              pbs_report *r)
{
    cl_int *host = alloc(count * sizeof *host, r);
    size_t size = 0;
    if (!host || expect_ok("pbsa_workspace_read", ctx,
                           pbsa_workspace_read(ctx, queue, &in->q.desc, &in->k.desc, &in->params,
                                               workspace, part, host, count * sizeof *host,
                                               &size), r)) {
        free(host);
        return NULL;
    }
    if (size != count * sizeof *host)
        pbs_fail(r, "pbsa_workspace_read: part %d has %zu bytes, expected %zu", (int)part, size,
                 count * sizeof *host);
    return host;
}

static bool params_are_default(const pbsa_params *p)
{
    pbsa_params d = pbsa_params_default();
    return p->block_size == d.block_size && p->segment_size == d.segment_size &&
           p->threshold == d.threshold && p->causal == d.causal &&
           p->force_first_block == d.force_first_block && p->gqa_mode == d.gqa_mode &&
           p->scale == d.scale;
}

/* The reference on the device's own permutation and block lists, so that a near tie that
 * float32 broke the other way does not matter; and the density of those lists. */
static int pipeline_reference(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                              cl_mem workspace, double *ref, double *ref_lse, pbs_report *r)
{
    const pbs_case *c = in->c;
    size_t cells = in->rows * (size_t)in->nkb;
    cl_int *pi = workspace_read(ctx, queue, in, workspace, PBSA_PART_PERMUTATION, in->pi_count, r);
    cl_int *counts = workspace_read(ctx, queue, in, workspace, PBSA_PART_BLOCK_COUNTS, in->rows, r);
    cl_int *blocks = workspace_read(ctx, queue, in, workspace, PBSA_PART_BLOCKS, cells, r);
    uint8_t *mask = alloc(cells, r);
    int32_t *pi32 = alloc(in->pi_count * sizeof *pi32, r);
    double *density = alloc((size_t)c->batch * c->q_heads * sizeof *density, r);
    if (r->failed || check_pi_structure("workspace permutation", in, pi, r) ||
        check_block_lists("workspace block lists", in, pi, counts, blocks, mask, r))
        goto done;
    for (size_t x = 0; x < in->pi_count; x++)
        pi32[x] = pi[x];
    if (expect_ok("pbsa_ref_pbs_sparse_attention", NULL,
                  pbsa_ref_pbs_sparse_attention_lse(&in->hq, &in->hk, &in->hv, pi32, mask,
                                                    &in->params, ref, ref_lse),
                  r) ||
        expect_ok("pbsa_block_density", NULL,
                  pbsa_block_density(c->batch, c->q_heads, c->q_len, c->kv_len, &in->params, counts,
                                     density),
                  r))
        goto done;
    double mean = 0.0;
    for (int x = 0; x < c->batch * c->q_heads; x++) {
        if (!(density[x] > 0.0 && isfinite(density[x])) || (!c->causal && density[x] > 1.0))
            pbs_fail(r, "pbsa_block_density: head %d has density %g", x, density[x]);
        mean += density[x] / (c->batch * c->q_heads);
    }
    LOG(r, "  %-44s mean density %.3f\n", "pbsa_block_density", mean);
done:
    free(density);
    free(pi);
    free(pi32);
    free(counts);
    free(blocks);
    free(mask);
    return r->failed;
}

int pbs_check_pipeline(pbsa_context *ctx, cl_command_queue queue, const pbs_inputs *in,
                       pbs_report *r)
{
    const pbs_case *c = in->c;
    cl_context cl_ctx = context_of(queue);
    host_tensor o = {0}, o2 = {0};
    cl_mem workspace = NULL;
    lse_buffer lse = {0};
    const size_t rows = in->out_count / (size_t)c->head_dim;
    double *ref = alloc(in->out_count * sizeof *ref, r);
    double *ref_lse = alloc(rows * sizeof *ref_lse, r);
    if (!ref || !ref_lse || pbs_output_make(&o, in, cl_ctx, r) ||
        pbs_output_make(&o2, in, cl_ctx, r) || !(workspace = workspace_make(ctx, cl_ctx, in, r)))
        goto done;
    if (lse_buffer_make(&lse, cl_ctx, rows) != CL_SUCCESS) {
        pbs_fail(r, "cannot create the log-sum-exp buffer");
        goto done;
    }
    pbsa_params with_lse = in->params;
    with_lse.lse = lse.mem;
    with_lse.lse_offset = LSE_GUARD;
    cl_event done = NULL;
    if (expect_ok("pbsa_attention", ctx,
                  pbsa_attention(ctx, queue, &in->q.desc, &in->k.desc, &in->v.desc, &o.desc,
                                 &with_lse, workspace, &done),
                  r) ||
        wait_done("pbsa_attention", done, r))
        goto done;
    if (c->kv_len <= c->segment) {
        /* The short-sequence fallback is dense attention. */
        if (pbs_dense_reference(in, ref, ref_lse, r) ||
            pbs_check_output("pbsa_attention (fallback) vs dense", &c->dtypes, &o, queue, ref,
                             r) ||
            pbs_check_lse("pbsa_attention (fallback) vs dense", &lse, &c->dtypes, queue, ref_lse,
                          r))
            goto done;
    } else if (pipeline_reference(ctx, queue, in, workspace, ref, ref_lse, r) ||
               pbs_check_output("pbsa_attention vs reference on its lists", &c->dtypes, &o, queue,
                                ref, r) ||
               pbs_check_lse("pbsa_attention vs reference on its lists", &lse, &c->dtypes,
                             queue, ref_lse, r)) {
        goto done;
    }

    /* Again with a workspace of the library's own; with params NULL when they are the
     * defaults. */
    const pbsa_params *params = params_are_default(&in->params) ? NULL : &in->params;
    if (!expect_ok("pbsa_attention (workspace NULL)", ctx,
                   pbsa_attention(ctx, queue, &in->q.desc, &in->k.desc, &in->v.desc, &o2.desc,
                                  params, NULL, NULL), r))
        pbs_check_output(params ? "pbsa_attention, workspace NULL"
                                : "pbsa_attention, workspace NULL, params NULL",
                         &c->dtypes, &o2, queue, ref, r);
done:
    free(ref);
    free(ref_lse);
    lse_buffer_free(&lse);
    tensor_free(&o);
    tensor_free(&o2);
    if (workspace)
        clReleaseMemObject(workspace);
    return r->failed;
}
