/* The whole PBS pipeline (pbsa_attention) on the device against the float64 reference on the
 * device's own permutation and block lists, on every case of the PBS table, again with CLBlast
 * scores and materialised K' and V' (the internal methods, forced on the context); its special
 * cases (a threshold of 1 or more, the short-sequence fallback: dense attention) and
 * pbsa_block_density(). */
#include "pbs_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void test_end_to_end(void **state)
{
    pbs_inputs in;
    pbs_test_inputs(&in, *state);
    pbs_report r = pbs_test_report();
    int failed = pbs_check_pipeline(fixture.ctx, fixture.queue, &in, &r);
    pbs_inputs_free(&in);
    pbs_test_expect(failed, &r);
}

/* The cases where pbsa_attention is dense attention: a threshold of 1 or more keeps every block
 * causality allows, and Skv <= segment takes the short-sequence fallback, whatever the threshold
 * (there the reference pipeline is dense attention too). */
static void test_dense_cases(void **state)
{
    (void)state;
    static const pbs_case shapes[] = {
        {"f32_tau1_causal_gqa", ALL_F32, 1, 4, 1, 300, 300, 64, 32, 64, 1.0f, 1, 1, SHARED, 0},
        {"f16_tau1.5_noncausal", ALL_F16, 1, 2, 2, 200, 200, 64, 16, 64, 1.5f, 0, 0, PER, 0},
        {"bf16_tau1_chunked", ALL_BF16, 1, 2, 2, 100, 260, 128, 32, 64, 1.0f, 1, 0, PER, 0},
        {"f32_fallback_one_segment", ALL_F32, 1, 2, 1, 128, 128, 64, 32, 128, 0.1f, 1, 1, PER, 0},
        {"f16_fallback_chunked", ALL_F16, 2, 2, 2, 16, 64, 64, 16, 64, 0.1f, 1, 1, SHARED, 0},
        {"bf16_fallback_noncausal", ALL_BF16, 1, 4, 2, 70, 70, 128, 16, 128, 0.1f, 0, 0, PER, 0},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        pbs_inputs in;
        pbs_test_inputs(&in, &shapes[s]);
        host_tensor o;
        pbs_test_output(&o, &in);
        expect_ok("pbsa_attention",
                  pbsa_attention(fixture.ctx, fixture.queue, &in.q.desc, &in.k.desc, &in.v.desc,
                                 &o.desc, &in.params, NULL, NULL));
        double *ref = test_alloc(in.out_count * sizeof *ref);
        printf("%s\n", shapes[s].name);
        pbs_report r = pbs_test_report();
        pbs_test_expect(pbs_dense_reference(&in, ref, NULL, &r) ||
                            pbs_check_output("pbsa_attention vs dense", &shapes[s].dtypes, &o,
                                             fixture.queue, ref, &r),
                        &r);
        if (shapes[s].kv_len <= shapes[s].segment) {
            double *pipeline = test_alloc(in.out_count * sizeof *pipeline);
            expect_ok("pbsa_ref_pbs_attention",
                      pbsa_ref_pbs_attention(&in.hq, &in.hk, &in.hv, &in.params, pipeline, NULL,
                                             NULL));
            for (size_t x = 0; x < in.out_count; x++)
                assert_true(fabs(pipeline[x] - ref[x]) <= 1e-12);
            free(pipeline);
        }
        free(ref);
        tensor_free(&o);
        pbs_inputs_free(&in);
    }
}

/* Density from counts, as documented: selected blocks over the blocks dense attention visits. */
static void test_block_density(void **state)
{
    (void)state;
    pbsa_params p = pbsa_params_default();
    p.block_size = 16;
    /* Sq 40, Skv 72: 3 query blocks at key blocks 2..4 of 5. */
    const cl_int counts[2 * 3] = {1, 2, 3, 3, 4, 5};
    double density[2];
    expect_ok("pbsa_block_density", pbsa_block_density(1, 2, 40, 72, &p, counts, density));
    assert_true(fabs(density[0] - 6.0 / 12.0) < 1e-15);
    assert_true(fabs(density[1] - 12.0 / 12.0) < 1e-15);
    p.causal = 0;
    expect_ok("pbsa_block_density", pbsa_block_density(1, 2, 40, 72, &p, counts, density));
    assert_true(fabs(density[0] - 6.0 / 15.0) < 1e-15);
    assert_int_equal(pbsa_block_density(1, 2, 40, 72, NULL, counts, density),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_int_equal(pbsa_block_density(1, 2, 80, 72, &p, counts, density),
                     PBSA_ERROR_INVALID_VALUE);
}

int main(void)
{
    static const pbs_stage stages[] = {
        {"end_to_end", test_end_to_end, NULL},
        {"end_to_end_clblast_materialised", test_end_to_end, use_clblast_and_materialised},
    };
    const struct CMUnitTest others[] = {
        cmocka_unit_test(test_dense_cases),
        cmocka_unit_test(test_block_density),
    };
    return pbs_test_main("pbs_pipeline", stages, 2, others, sizeof others / sizeof others[0]);
}
