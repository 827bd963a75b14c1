/* What the per-stage PBS tests share (see pbs_test.h). */
#include "pbs_test.h"
#include "pbs/plan.h"

#include <stdio.h>
#include <stdlib.h>

support_device fixture;
unsigned long long run_seed;

pbs_report pbs_test_report(void)
{
    return (pbs_report){.log = stdout};
}

void pbs_test_expect(int failed, const pbs_report *r)
{
    if (failed)
        fail_msg("%s", r->message);
}

void pbs_test_inputs(pbs_inputs *in, const pbs_case *c)
{
    pbs_report r = pbs_test_report();
    if (pbs_inputs_make(in, c, run_seed, fixture.cl_ctx, &r)) {
        pbs_inputs_free(in);
        fail_msg("%s", r.message);
    }
}

void pbs_test_output(host_tensor *o, const pbs_inputs *in)
{
    pbs_report r = pbs_test_report();
    if (pbs_output_make(o, in, fixture.cl_ctx, &r))
        fail_msg("%s", r.message);
}

pbs_int_buffer pbs_test_int_buffer(size_t count)
{
    pbs_report r = pbs_test_report();
    pbs_int_buffer b;
    if (pbs_int_buffer_make(&b, fixture.cl_ctx, count, NULL, &r))
        fail_msg("%s", r.message);
    return b;
}

void *test_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    assert_non_null(p);
    return p;
}

void expect_ok(const char *what, int status)
{
    if (status != PBSA_SUCCESS)
        fail_msg("%s: status %d (%s): %s", what, status, pbsa_status_string(status),
                 pbsa_context_last_error(fixture.ctx));
}

int use_clblast_in_small_chunks(void **state)
{
    (void)state;
    const pbsa_pbs_methods methods = {.score = PBSA_SCORE_CLBLAST, .gemm_chunk_bytes = 1};
    pbsa_pbs_force_methods(fixture.ctx, &methods);
    return 0;
}

int use_clblast_and_materialised(void **state)
{
    (void)state;
    const pbsa_pbs_methods methods = {.score = PBSA_SCORE_CLBLAST, .kv = PBSA_KV_MATERIALISED};
    pbsa_pbs_force_methods(fixture.ctx, &methods);
    return 0;
}

int use_automatic_methods(void **state)
{
    (void)state;
    pbsa_pbs_force_methods(fixture.ctx, NULL);
    return 0;
}

enum { MAX_TESTS = 64, NAME_SIZE = 80 };

int pbs_test_main(const char *group, const pbs_stage *stages, size_t stage_count,
                  const struct CMUnitTest *others, size_t other_count)
{
    static char names[MAX_TESTS][NAME_SIZE];
    static struct CMUnitTest tests[MAX_TESTS];
    if (stage_count * (size_t)pbs_case_count + other_count > MAX_TESTS) {
        fprintf(stderr, "%s: more than %d tests\n", group, MAX_TESTS);
        return 1;
    }
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    run_seed = support_test_seed();

    size_t count = 0;
    for (size_t s = 0; s < stage_count; s++)
        for (int i = 0; i < pbs_case_count; i++) {
            snprintf(names[count], NAME_SIZE, "%s/%s", stages[s].name, pbs_cases[i].name);
            tests[count] = (struct CMUnitTest){names[count], stages[s].fn, stages[s].setup,
                                               stages[s].setup ? use_automatic_methods : NULL,
                                               (void *)&pbs_cases[i]};
            count++;
        }
    for (size_t i = 0; i < other_count; i++)
        tests[count++] = others[i];
    int failed = _cmocka_run_group_tests(group, tests, count, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
