/* What the per-stage PBS tests share: the device, the run's seed, inputs made or the test
 * failed, the checks of support/pbs_checks.h turned into cmocka failures, the method variants
 * forced on the context, and a main that runs stages over the case table. */
#ifndef PBSA_PBS_TEST_H
#define PBSA_PBS_TEST_H

#include "device.h"
#include "pbs_checks.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

/* Short names for the case tables of the tests. */
#define PER PBSA_GQA_PER_QUERY_HEAD
#define SHARED PBSA_GQA_SHARED_PER_KV_GROUP

extern support_device fixture;
extern unsigned long long run_seed;

/* A report whose progress lines go to stdout. */
pbs_report pbs_test_report(void);
/* Fails the test with r's message when failed is non-zero. */
void pbs_test_expect(int failed, const pbs_report *r);
/* Inputs of c on the fixture (pbs_inputs_make()), or the test fails. */
void pbs_test_inputs(pbs_inputs *in, const pbs_case *c);

/* A poisoned output for in's queries on the fixture, or the test fails. */
void pbs_test_output(host_tensor *o, const pbs_inputs *in);
/* A poisoned int buffer of count values on the fixture, or the test fails. */
pbs_int_buffer pbs_test_int_buffer(size_t count);
/* Host memory of bytes (at least 1), or the test fails. */
void *test_alloc(size_t bytes);
/* Fails the test, naming what and the context's last error, unless status is PBSA_SUCCESS. */
void expect_ok(const char *what, int status);

/* Method variants of the stage tests (cmocka setups; the teardown restores the automatic
 * choice). The CLBlast permutation runs in chunks of one KV row, so that cases with several KV
 * rows run several chunks. */
int use_clblast_in_small_chunks(void **state);
int use_clblast_and_materialised(void **state);
int use_automatic_methods(void **state);

/* A test run over every case of pbs_cases, its state the case; setup may be NULL. */
typedef struct pbs_stage {
    const char *name;
    CMUnitTestFunction fn;
    CMFixtureFunction setup;
} pbs_stage;

/* Opens the device, picks the seed (PBSA_TEST_SEED, else the time; printed), runs every stage
 * over every case, then the others, and returns what cmocka returns. */
int pbs_test_main(const char *group, const pbs_stage *stages, size_t stage_count,
                  const struct CMUnitTest *others, size_t other_count);

#endif
