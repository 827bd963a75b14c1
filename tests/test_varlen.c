/* Variable-length batches and paged K/V caches, dense and PBS: every case of the varlen table
 * (support/varlen_cases.c, as pbsa-conformance runs them) against the float64 reference, each
 * PBS sequence's permutation and block lists equal to that sequence run alone. */
#include "device.h"
#include "varlen_cases.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

static support_device fixture;
static unsigned long long run_seed;

static void run_case(void **state)
{
    pbs_report r = {.log = stdout};
    if (varlen_check(fixture.ctx, fixture.queue, *state, run_seed, &r))
        fail_msg("%s", r.message);
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
    int failed = _cmocka_run_group_tests("varlen", tests, (size_t)count, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
