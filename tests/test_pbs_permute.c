/* The PBS permutation (pbsa_permutation) on the device against the float64 reference, on every
 * case of the PBS table: a permutation within each segment sorted by the reference scores up to
 * float32 rounding, the same without a workspace; again with its scores through CLBlast. */
#include "pbs_test.h"

static void test_permutation(void **state)
{
    pbs_inputs in;
    pbs_test_inputs(&in, *state);
    pbs_report r = pbs_test_report();
    int failed = pbs_check_permutation(fixture.ctx, fixture.queue, &in, &r);
    pbs_inputs_free(&in);
    pbs_test_expect(failed, &r);
}

int main(void)
{
    static const pbs_stage stages[] = {
        {"permutation", test_permutation, NULL},
        {"permutation_clblast", test_permutation, use_clblast_in_small_chunks},
    };
    return pbs_test_main("pbs_permute", stages, 2, NULL, 0);
}
