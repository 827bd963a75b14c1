/* Kernels fitted to their own compiled work-group limit. tests/fault_hooks.c caps what
 * CL_KERNEL_WORK_GROUP_SIZE reports at 32, as Rusticl on llvmpipe reports it for every kernel,
 * and the context gets 32 KiB of local memory (the OpenCL 1.2 minimum, Rusticl's and
 * Oclgrind's): dense attention at every head dim, 256 included, and the PBS pipeline, whose
 * helper kernels want 64 to 256 work-items, still run and match the float64 reference, with no
 * launch above 32 work-items (also with the CLBlast scores and materialised K and V);
 * pbsa_fit_kernel_config() says what a call stepped down from and why; a second call builds and
 * asks nothing again; a configuration forced by PBSA_FLASH_CONFIG that its kernel does not allow
 * is refused with a message naming it. */
#include "conformance.h"
#include "core/internal.h"
#include "fault_hooks.h"
#include "pbs_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CAP = 32, LOCAL_BYTES = 32768 };

/* A context on the fixture's device whose kernels allow CAP work-items and whose local memory is
 * LOCAL_BYTES. */
static int capped_context(void **state)
{
    (void)state;
    unsetenv("PBSA_FLASH_CONFIG");
    setenv("PBSA_TUNING", "off", 1); /* the heuristic's configurations, whatever is tuned here */
    pbsa_context *ctx = NULL;
    if (pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx) != PBSA_SUCCESS)
        return -1;
    ctx->info.local_mem_bytes = LOCAL_BYTES;
    fixture.ctx = ctx;
    hooks_cap_kernel_group_size(CAP);
    return 0;
}

static int release_context(void **state)
{
    (void)state;
    hooks_cap_kernel_group_size(0);
    unsetenv("PBSA_FLASH_CONFIG");
    pbsa_context_release(fixture.ctx);
    fixture.ctx = NULL;
    return 0;
}

static const conformance_case *dense_case(const char *name)
{
    for (int i = 0; i < conformance_dense_case_count; i++)
        if (strcmp(conformance_dense_cases[i].name, name) == 0)
            return &conformance_dense_cases[i];
    fail_msg("no dense case %s", name);
    return NULL;
}

static void run_dense(const char *name)
{
    const conformance_case *c = dense_case(name);
    conformance_result r;
    int status = conformance_run_dense(fixture.ctx, fixture.queue, c, run_seed, &r);
    if (status != PBSA_SUCCESS)
        fail_msg("%s: status %d: %s", name, status, pbsa_context_last_error(fixture.ctx));
    printf("%-36s rel_l2 %.3e (limit %.0e), largest work-group %zu\n", name, r.rel_l2,
           r.tolerance, hooks_largest_group());
    assert_int_equal(r.unwritten, 0);
    assert_int_equal(r.guard_damage, 0);
    assert_true(r.rel_l2 <= r.tolerance);
    assert_true(hooks_largest_group() <= CAP);
}

/* Head dims 64 to 256; 256 needs V chunks of 8 rows in 32 KiB. */
static void test_dense_steps_down(void **state)
{
    (void)state;
    run_dense("f32_d64_s7_gqa4");
    run_dense("bf16_d128_s200_noncausal_bshd");
    run_dense("f16_d256_q1_kv1000_padded");
}

static void run_pipeline(const char *name)
{
    const pbs_case *c = NULL;
    for (int i = 0; i < pbs_case_count && !c; i++)
        if (strcmp(pbs_cases[i].name, name) == 0)
            c = &pbs_cases[i];
    assert_non_null(c);
    pbs_inputs in;
    pbs_test_inputs(&in, c);
    pbs_report r = pbs_test_report();
    int failed = pbs_check_pipeline(fixture.ctx, fixture.queue, &in, &r);
    pbs_inputs_free(&in);
    pbs_test_expect(failed, &r);
    printf("%-36s largest work-group %zu\n", name, hooks_largest_group());
    assert_true(hooks_largest_group() <= CAP);
}

/* The sort (128 work-items for segments of 256), the selection (64), the means, the sink and
 * the scores' reduction (64) step down with the tiles. */
static void test_pipeline_steps_down(void **state)
{
    (void)state;
    run_pipeline("f16_defaults");
}

/* The variants' helpers too: gather (256), and the CLBlast scores' transposition (16 x 16), row
 * statistics (256) and column means (64). */
static void test_variants_step_down(void **state)
{
    (void)state;
    assert_int_equal(use_clblast_and_materialised(state), 0);
    run_pipeline("f16_defaults");
}

static void test_fit_report(void **state)
{
    (void)state;
    char text[4400];
    pbsa_config_source source;
    assert_int_equal(pbsa_query_kernel_config(fixture.ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64,
                                              0, 1, text, sizeof text, &source),
                     PBSA_SUCCESS);
    assert_null(strstr(text, "stepped down"));
    /* The shapes of the tests above, whose kernels are built already. */
    static const struct {
        pbsa_kernel_kind kind;
        pbsa_dtype dtype;
        int head_dim, block;
    } calls[] = {{PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0},
                 {PBSA_KERNEL_SPARSE, PBSA_DTYPE_F16, 128, 128},
                 {PBSA_KERNEL_SCORES, PBSA_DTYPE_F16, 128, 128}};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        const int kind = (int)calls[i].kind;
        int status = pbsa_fit_kernel_config(fixture.ctx, calls[i].kind, calls[i].dtype,
                                            calls[i].head_dim, calls[i].block, 1, text,
                                            sizeof text, &source);
        if (status != PBSA_SUCCESS)
            fail_msg("kind %d: %s", kind, pbsa_context_last_error(fixture.ctx));
        printf("kind %d: %s\n", kind, text);
        /* From the portable tile, or on tensor-core devices from a tensor-core one. */
        if (!strstr(text, "stepped down from ") ||
            !strstr(text, "allows 32 work-items per group"))
            fail_msg("kind %d: '%s' does not say why it stepped down", kind, text);
        assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
        /* The configuration that runs has at most CAP work-items. */
        int block_m, block_n, wg_rows, wg_cols;
        assert_int_equal(sscanf(text, "block_m=%d block_n=%d wg_rows=%d wg_cols=%d", &block_m,
                                &block_n, &wg_rows, &wg_cols),
                         4);
        assert_true(wg_rows * wg_cols <= CAP);
    }
    assert_int_equal(pbsa_fit_kernel_config(fixture.ctx, PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F16, 64,
                                            0, 1, text, sizeof text, &source),
                     PBSA_ERROR_INVALID_VALUE);
}

/* The fitted answer is remembered: the same call again neither builds nor asks. */
static void test_fit_remembered(void **state)
{
    (void)state;
    run_dense("f32_d64_s7_gqa4");
    hooks_cap_kernel_group_size(CAP);
    run_dense("f32_d64_s7_gqa4");
    assert_int_equal(hooks_kernel_limit_queries(), 0);
}

/* A forced configuration is the caller's choice: refused, naming it, not replaced. */
static void test_forced_too_big(void **state)
{
    (void)state;
    setenv("PBSA_FLASH_CONFIG", "32,32,8,8,16,16", 1);
    pbsa_environment_read(&fixture.ctx->env);
    const conformance_case *c = dense_case("f32_d64_s7_gqa4");
    conformance_result r;
    assert_int_equal(conformance_run_dense(fixture.ctx, fixture.queue, c, run_seed, &r),
                     PBSA_ERROR_UNSUPPORTED_DEVICE);
    const char *message = pbsa_context_last_error(fixture.ctx);
    printf("%s\n", message);
    if (!strstr(message, "PBSA_FLASH_CONFIG") || !strstr(message, "block_m=32 block_n=32") ||
        !strstr(message, "allows 32"))
        fail_msg("'%s' does not name the forced configuration and the limit", message);
    char text[4400];
    assert_int_equal(pbsa_fit_kernel_config(fixture.ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0,
                                            1, text, sizeof text, NULL),
                     PBSA_ERROR_UNSUPPORTED_DEVICE);
    assert_string_equal(text, "");
    /* One that fits runs as forced. */
    setenv("PBSA_FLASH_CONFIG", "16,16,4,4,16,16", 1);
    pbsa_environment_read(&fixture.ctx->env);
    run_dense("f32_d64_s7_gqa4");
    pbsa_config_source source;
    assert_int_equal(pbsa_fit_kernel_config(fixture.ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0,
                                            1, text, sizeof text, &source),
                     PBSA_SUCCESS);
    assert_int_equal(source, PBSA_CONFIG_ENVIRONMENT);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    run_seed = support_test_seed();
    /* The fixture's own context is replaced by a capped one in every test. */
    pbsa_context *own = fixture.ctx;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dense_steps_down, capped_context, release_context),
        cmocka_unit_test_setup_teardown(test_pipeline_steps_down, capped_context,
                                        release_context),
        cmocka_unit_test_setup_teardown(test_variants_step_down, capped_context,
                                        release_context),
        cmocka_unit_test_setup_teardown(test_fit_report, capped_context, release_context),
        cmocka_unit_test_setup_teardown(test_fit_remembered, capped_context, release_context),
        cmocka_unit_test_setup_teardown(test_forced_too_big, capped_context, release_context),
    };
    int failed = cmocka_run_group_tests_name("fit", tests, NULL, NULL);
    fixture.ctx = own;
    support_device_close(&fixture);
    return failed;
}
