/* Variable-length batches and paged K/V caches, dense and PBS: every case of the varlen table
 * (support/varlen_cases.c, as pbsa-conformance runs them) against the float64 reference, each
 * PBS sequence's permutation and block lists equal to that sequence run alone; and bad
 * descriptors refused with a status and a message naming the argument, nothing written. */
#include "device.h"
#include "varlen_cases.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;
static unsigned long long run_seed;

static void run_case(void **state)
{
    pbs_report r = {.log = stdout};
    if (varlen_check(fixture.ctx, fixture.queue, *state, run_seed, &r))
        fail_msg("%s", r.message);
}

/* One bad descriptor: what it breaks, the status and a text the message must hold. */
typedef struct bad_case {
    const char *what;
    int status;
    const char *names;
} bad_case;

enum { BAD_Q_DECREASING, BAD_Q_PAST_END, BAD_KV_NEGATIVE, BAD_PAGE_OUT, BAD_PAGE_NEGATIVE,
       BAD_TABLE_SHORT, BAD_PAGED_ALONE, BAD_BUFFER_SHORT, BAD_MORE_QUERIES, BAD_COUNT };

static const bad_case bad_cases[BAD_COUNT] = {
    {"q offsets decreasing", PBSA_ERROR_INVALID_VALUE, "varlen->q_offsets[2]"},
    {"q offsets past q.seq", PBSA_ERROR_INVALID_VALUE, "exceeds q.seq"},
    {"kv offsets negative", PBSA_ERROR_INVALID_VALUE, "varlen->kv_offsets[0]"},
    {"a page past the pool", PBSA_ERROR_INVALID_VALUE, "paged_kv->page_table[1 * max_pages + 0]"},
    {"a negative page", PBSA_ERROR_INVALID_VALUE, "paged_kv->page_table[3 * max_pages + 2]"},
    {"a page table too short", PBSA_ERROR_INVALID_VALUE, "paged_kv->page_table is too short"},
    {"paged_kv without varlen", PBSA_ERROR_INVALID_VALUE, "paged_kv needs varlen"},
    {"a device copy too short", PBSA_ERROR_BUFFER_TOO_SMALL, "varlen->kv_offsets_buffer"},
    {"more queries than keys", PBSA_ERROR_SHAPE_MISMATCH, "sequence 1 has"},
};

/* Runs the call of in's case with descriptor mistake bad applied to copies of its descriptors. */
static int call_with(varlen_inputs *in, int bad, cl_mem one_int)
{
    int32_t q_offsets[VARLEN_MAX_SEQUENCES + 1], kv_offsets[VARLEN_MAX_SEQUENCES + 1];
    int32_t table[VARLEN_MAX_SEQUENCES * 64];
    memcpy(q_offsets, in->q_offsets, sizeof q_offsets);
    memcpy(kv_offsets, in->kv_offsets, sizeof kv_offsets);
    const int count = in->c->count;
    assert_true(count * in->paged.max_pages <= VARLEN_MAX_SEQUENCES * 64);
    memcpy(table, in->page_table, (size_t)(count * in->paged.max_pages) * sizeof *table);
    pbsa_varlen varlen = in->varlen;
    pbsa_paged_kv paged = in->paged;
    varlen.q_offsets = q_offsets;
    varlen.kv_offsets = kv_offsets;
    paged.page_table = table;
    const pbsa_varlen *use_varlen = &varlen;
    switch (bad) {
    case BAD_Q_DECREASING: q_offsets[2] = q_offsets[1] - 1; break;
    case BAD_Q_PAST_END: q_offsets[count] = (int32_t)in->q.desc.seq + 1; break;
    case BAD_KV_NEGATIVE: kv_offsets[0] = -1; break;
    case BAD_PAGE_OUT: table[1 * paged.max_pages] = (int32_t)in->k.desc.batch; break;
    case BAD_PAGE_NEGATIVE: table[3 * paged.max_pages + 2] = -5; break;
    case BAD_TABLE_SHORT: paged.max_pages = 1; break;
    case BAD_PAGED_ALONE: use_varlen = NULL; break;
    case BAD_BUFFER_SHORT: varlen.kv_offsets_buffer = one_int; break;
    case BAD_MORE_QUERIES: q_offsets[2] = q_offsets[1] + in->c->kv_lens[1] + 1; break;
    }
    if (in->c->pbs) {
        pbsa_params params = in->params;
        params.varlen = use_varlen;
        params.paged_kv = &paged;
        return pbsa_attention(fixture.ctx, fixture.queue, &in->q.desc, &in->k.desc, &in->v.desc,
                              &in->o.desc, &params, NULL, NULL);
    }
    pbsa_dense_params params = in->dense;
    params.varlen = use_varlen;
    params.paged_kv = &paged;
    return pbsa_dense_attention(fixture.ctx, fixture.queue, &in->q.desc, &in->k.desc,
                                &in->v.desc, &in->o.desc, &params, NULL);
}

/* Every mistake on a paged dense case and a paged PBS case of 4 sequences. */
static void test_errors(void **state)
{
    (void)state;
    const char *names[2] = {"dense_f16_d64_paged16_4seq", "pbs_f32_paged16_shuffled"};
    cl_int one = 0, err;
    cl_mem one_int = clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                    sizeof one, &one, &err);
    assert_int_equal(err, CL_SUCCESS);
    for (int n = 0; n < 2; n++) {
        const varlen_case *c = NULL;
        for (int i = 0; i < varlen_case_count; i++)
            if (strcmp(varlen_cases[i].name, names[n]) == 0)
                c = &varlen_cases[i];
        assert_non_null(c);
        assert_int_equal(c->count, 4);
        pbs_report r = {0};
        varlen_inputs in;
        if (varlen_inputs_make(&in, c, run_seed, fixture.cl_ctx, &r))
            fail_msg("%s", r.message);
        for (int bad = 0; bad < BAD_COUNT; bad++) {
            const int status = call_with(&in, bad, one_int);
            const char *message = pbsa_context_last_error(fixture.ctx);
            printf("%s, %s: %d \"%s\"\n", c->name, bad_cases[bad].what, status, message);
            assert_int_equal(status, bad_cases[bad].status);
            assert_non_null(strstr(message, bad_cases[bad].names));
        }
        /* Nothing written: the output is poison (0xff bytes) from end to end. */
        assert_int_equal(clFinish(fixture.queue), CL_SUCCESS);
        assert_int_equal(tensor_download(&in.o, fixture.queue), CL_SUCCESS);
        for (size_t i = 0; i < in.o.size; i++)
            assert_int_equal(in.o.bytes[i], 0xff);
        varlen_inputs_free(&in);
    }
    clReleaseMemObject(one_int);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    run_seed = support_test_seed();
    struct CMUnitTest tests[32];
    int count = 0;
    for (int i = 0; i < varlen_case_count && count < 32; i++) {
        struct CMUnitTest t = {varlen_cases[i].name, run_case, NULL, NULL,
                               (void *)&varlen_cases[i]};
        tests[count++] = t;
    }
    struct CMUnitTest errors = cmocka_unit_test(test_errors);
    tests[count++] = errors;
    int failed = _cmocka_run_group_tests("varlen", tests, (size_t)count, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
