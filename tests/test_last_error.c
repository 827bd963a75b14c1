/* pbsa_context_last_error(): the calling thread's last error on that context. An error on one
 * context leaves another context's message alone, a thread's error leaves other threads' alone,
 * and the message of a failed pbsa_context_create() (ctx NULL) survives calls on contexts. */
#include "device.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;

/* A failing call on ctx: an unknown kernel kind, named in the message. */
static void fail_on(pbsa_context *ctx, int kind)
{
    char text[64];
    assert_int_equal(pbsa_query_kernel_config(ctx, (pbsa_kernel_kind)kind, PBSA_DTYPE_F32, 64, 64,
                                              0, text, sizeof text, NULL),
                     PBSA_ERROR_INVALID_VALUE);
}

/* A successful call on ctx. */
static void succeed_on(pbsa_context *ctx)
{
    char text[256];
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 64, 0,
                                              text, sizeof text, NULL),
                     PBSA_SUCCESS);
}

static void assert_mentions(const char *message, const char *what)
{
    if (!strstr(message, what))
        fail_msg("\"%s\" does not mention %s", message, what);
}

static void test_contexts_keep_their_own(void **state)
{
    (void)state;
    pbsa_context *a = fixture.ctx, *b = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &b), PBSA_SUCCESS);
    fail_on(a, 101);
    fail_on(b, 202);
    assert_mentions(pbsa_context_last_error(a), "101");
    assert_mentions(pbsa_context_last_error(b), "202");
    /* A successful call clears its own context's message only. */
    succeed_on(b);
    assert_string_equal(pbsa_context_last_error(b), "");
    assert_mentions(pbsa_context_last_error(a), "101");
    succeed_on(a);
    assert_string_equal(pbsa_context_last_error(a), "");
    pbsa_context_release(b);
}

static void test_failed_create_survives(void **state)
{
    (void)state;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, NULL, NULL, &(pbsa_context *){NULL}),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_mentions(pbsa_context_last_error(NULL), "device");
    fail_on(fixture.ctx, 303);
    succeed_on(fixture.ctx);
    assert_mentions(pbsa_context_last_error(NULL), "device");
    /* A context created and released meanwhile has no say either. */
    pbsa_context *other = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &other),
                     PBSA_SUCCESS);
    assert_string_equal(pbsa_context_last_error(NULL), "");
    pbsa_context_release(other);
}

/* Each thread fails with its own kind and checks its message after the other has failed too. */
static pthread_barrier_t both_failed;

static void *fail_in_thread(void *arg)
{
    int kind = (int)(intptr_t)arg;
    char expected[16];
    snprintf(expected, sizeof expected, "%d", kind);
    fail_on(fixture.ctx, kind);
    pthread_barrier_wait(&both_failed);
    const char *message = pbsa_context_last_error(fixture.ctx);
    return (void *)(intptr_t)(strstr(message, expected) != NULL);
}

static void test_threads_keep_their_own(void **state)
{
    (void)state;
    pthread_barrier_init(&both_failed, NULL, 2);
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, fail_in_thread,
                                        (void *)(intptr_t)(404 + 101 * i)),
                         0);
    for (int i = 0; i < 2; i++) {
        void *kept = NULL;
        assert_int_equal(pthread_join(threads[i], &kept), 0);
        assert_true(kept != NULL);
    }
    pthread_barrier_destroy(&both_failed);
    /* This thread made no failing call on the context. */
    assert_string_equal(pbsa_context_last_error(fixture.ctx), "");
}

int main(void)
{
    int status = support_device_open_test(&fixture);
    if (status != 0)
        return status;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_contexts_keep_their_own),
        cmocka_unit_test(test_failed_create_survives),
        cmocka_unit_test(test_threads_keep_their_own),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
