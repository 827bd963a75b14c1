/* Dense attention conformance: every case of the shared list against the float64 reference. */
#include "conformance.h"
#include "device.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static support_device fixture;
static unsigned long long run_seed;

static void run_case(void **state)
{
    const conformance_case *c = *state;
    conformance_result r;
    int status = conformance_run_dense(fixture.ctx, fixture.queue, c, run_seed, &r);
    if (status != PBSA_SUCCESS)
        fail_msg("%s: status %d (%s): %s", c->name, status, pbsa_status_string(status),
                 pbsa_context_last_error(fixture.ctx));
    printf("%-36s rel_l2 %.3e (limit %.0e) max_abs %.3e unwritten %ld guard %ld | lse max_abs "
           "%.3e (limit %.0e) unwritten %ld guard %ld\n",
           c->name, r.rel_l2, r.tolerance, r.max_abs, r.unwritten, r.guard_damage, r.lse.max_abs,
           r.lse_limit, r.lse.unwritten, r.lse.guard_damage);
    assert_int_equal(r.unwritten, 0);
    assert_int_equal(r.guard_damage, 0);
    assert_true(r.rel_l2 <= r.tolerance);
    assert_int_equal(r.lse.unwritten, 0);
    assert_int_equal(r.lse.guard_damage, 0);
    assert_true(r.lse.max_abs <= r.lse_limit);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    run_seed = support_test_seed();

    struct CMUnitTest tests[64];
    int count = 0;
    for (int i = 0; i < conformance_dense_case_count && count < 64; i++) {
        struct CMUnitTest t = {conformance_dense_cases[i].name, run_case, NULL, NULL,
                               (void *)&conformance_dense_cases[i]};
        tests[count++] = t;
    }
    int failed = _cmocka_run_group_tests("dense", tests, (size_t)count, NULL, NULL);
    /* Where the tensor-core kernels are in use, the portable ones must pass the same cases. */
    if (pbsa_context_uses_tensor_cores(fixture.ctx)) {
        pbsa_context *accelerated = fixture.ctx;
        pbsa_context_options portable = {.struct_size = sizeof portable, .force_portable = 1};
        if (pbsa_context_create(fixture.cl_ctx, fixture.device, &portable, &fixture.ctx) !=
            PBSA_SUCCESS) {
            fprintf(stderr, "cannot create a portable context: %s\n",
                    pbsa_context_last_error(NULL));
            return 1;
        }
        failed += _cmocka_run_group_tests("dense_portable", tests, (size_t)count, NULL, NULL);
        pbsa_context_release(fixture.ctx);
        fixture.ctx = accelerated;
    }
    support_device_close(&fixture);
    return failed;
}
