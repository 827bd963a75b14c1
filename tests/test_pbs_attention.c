/* The PBS sparse attention (pbsa_sparse_attention) on the device against the float64 reference
 * over given block lists: the reference's permutation and lists on every case of the PBS table,
 * and pi NULL (plain block-sparse attention) over random masks. */
#include "pbs_test.h"
#include "splitmix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_sparse(void **state)
{
    pbs_inputs in;
    pbs_test_inputs(&in, *state);
    pbs_report r = pbs_test_report();
    int failed = pbs_check_sparse(fixture.ctx, fixture.queue, &in, &r);
    pbs_inputs_free(&in);
    pbs_test_expect(failed, &r);
}

/* pi NULL over random masks, with rows that have no block or, when causal, no visible key
 * (those must come out as zeros). */
static void test_sparse_identity(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_identity_causal", ALL_F32, 1, 4, 2, 150, 278, 64, 16, 64, 0.9f, 1, 1,
         PBSA_GQA_SHARED_PER_KV_GROUP, 0},
        {"bf16_identity_noncausal", ALL_BF16, 2, 2, 1, 100, 100, 128, 32, 64, 0.9f, 0, 1,
         PBSA_GQA_PER_QUERY_HEAD, 0},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        pbs_inputs in;
        pbs_test_inputs(&in, &shapes[s]);
        uint64_t rng = pbs_case_seed(run_seed, "random mask") + s;
        size_t cells = in.rows * (size_t)in.nkb;
        uint8_t *mask = malloc(cells);
        assert_non_null(mask);
        for (size_t x = 0; x < cells; x++)
            mask[x] = splitmix_signed(&rng) < 0.0f;
        memset(mask, 0, (size_t)in.nkb); /* row 0: no block at all */
        if (in.rows > 2) {
            /* row 1: only blocks after the diagonal (nothing visible when causal) */
            memset(mask + in.nkb, 0, (size_t)in.nkb);
            mask[in.nkb + in.nkb - 1] = 1;
        }
        printf("%s\n", shapes[s].name);
        pbs_report r = pbs_test_report();
        int failed = pbs_check_sparse_over("sparse attention, pi NULL, random mask", fixture.ctx,
                                           fixture.queue, &in, NULL, mask, &r);
        free(mask);
        pbs_inputs_free(&in);
        pbs_test_expect(failed, &r);
    }
}

int main(void)
{
    static const pbs_stage stages[] = {{"sparse", test_sparse, NULL}};
    const struct CMUnitTest others[] = {cmocka_unit_test(test_sparse_identity)};
    return pbs_test_main("pbs_attention", stages, 1, others, 1);
}
