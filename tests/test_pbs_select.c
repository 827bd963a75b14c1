/* The PBS block selection (pbsa_block_selection) on the device against the float64 reference,
 * over the device's own permutation: on every case of the PBS table, lists any correct answer
 * has (pbs_checks.h); on inputs with exact ties, the reference's lists in every row. */
#include "pbs_test.h"

static void test_selection(void **state)
{
    pbs_inputs in;
    pbs_test_inputs(&in, *state);
    pbs_report r = pbs_test_report();
    int failed = pbs_check_selection(fixture.ctx, fixture.queue, &in, 0, &r);
    pbs_inputs_free(&in);
    pbs_test_expect(failed, &r);
}

static void test_selection_ties(void **state)
{
    (void)state;
    for (int n = 0; n < pbs_tie_case_count; n++) {
        pbs_inputs in;
        pbs_report r = pbs_test_report();
        int failed = pbs_inputs_make_ties(&in, &pbs_tie_cases[n], run_seed, fixture.cl_ctx,
                                          fixture.queue, &r) ||
                     pbs_check_selection(fixture.ctx, fixture.queue, &in, 1, &r);
        pbs_inputs_free(&in);
        pbs_test_expect(failed, &r);
    }
}

int main(void)
{
    static const pbs_stage stages[] = {{"selection", test_selection, NULL}};
    const struct CMUnitTest others[] = {cmocka_unit_test(test_selection_ties)};
    return pbs_test_main("pbs_select", stages, 1, others, 1);
}
