/* Device fit: configurations step down to what small devices and their compiled kernels allow,
 * and the calls on them still match the float64 reference. Small devices are simulated: their
 * limits written into the context's device info, and the kernels' work-group limit capped
 * through fault_hooks.c, as implementations whose compiled kernels allow 32 work-items report. */
#include "conformance.h"
#include "device.h"
#include "fault_hooks.h"
#include "pbs_checks.h"
#include "launch/dispatch.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static support_device fixture;
static unsigned long long run_seed;

/* Every flash configuration, stepped down against small device limits, ends valid on them. */
static void test_step_down_reaches_fit(void **state)
{
    (void)state;
    static const pbsa_flash_config starts[] = {
        {64, 64, 8, 16, 16, 16, 0, 0}, {64, 64, 16, 16, 16, 8, 0, 0},
        {64, 32, 16, 8, 16, 16, 4, 8}, {128, 128, 32, 32, 32, 32, 0, 0},
    };
    static const pbsa_device_info devices[] = {
        {.is_gpu = 1, .max_work_group_size = 32, .local_mem_bytes = 32768},
        {.is_gpu = 1, .max_work_group_size = 1024, .local_mem_bytes = 32768},
        {.is_gpu = 0, .max_work_group_size = 16, .local_mem_bytes = 16384},
    };
    static const pbsa_device_info unlimited = {.max_work_group_size = 1 << 20,
                                               .local_mem_bytes = 1 << 30};
    static const int head_dims[] = {64, 96, 128, 256};
    static const int max_tiles[] = {0, 32, 64, 128};
    for (size_t s = 0; s < sizeof starts / sizeof starts[0]; s++)
        for (size_t d = 0; d < sizeof devices / sizeof devices[0]; d++)
            for (size_t h = 0; h < sizeof head_dims / sizeof head_dims[0]; h++)
                for (size_t m = 0; m < sizeof max_tiles / sizeof max_tiles[0]; m++) {
                    const pbsa_device_info *info = &devices[d];
                    const int head_dim = head_dims[h], max_tile = max_tiles[m];
                    pbsa_flash_config c = starts[s];
                    if (!pbsa_flash_config_valid(&c, head_dim, &unlimited) ||
                        !pbsa_flash_config_fits(&c, max_tile))
                        continue; /* not a configuration of this key */
                    int steps = 0;
                    while (!pbsa_flash_config_valid(&c, head_dim, info)) {
                        pbsa_fit_limit limit =
                            (size_t)c.wg_rows * (size_t)c.wg_cols > info->max_work_group_size
                                ? PBSA_FIT_WORK_ITEMS
                                : PBSA_FIT_LOCAL_MEMORY;
                        if (!pbsa_flash_config_step_down(&c, head_dim, max_tile, limit))
                            fail_msg("config %zu, D %d, max tile %d, device %zu: stuck at "
                                     "%d,%d,%d,%d,%d,%d",
                                     s, head_dim, max_tile, d, c.block_m, c.block_n, c.wg_rows,
                                     c.wg_cols, c.kchunk, c.vchunk);
                        assert_true(++steps < 64);
                    }
                    assert_true(pbsa_flash_config_fits(&c, max_tile));
                }
    /* D 256 has built-in configurations for the OpenCL 1.2 minimum of 32 KiB. */
    for (int gpu = 0; gpu < 2; gpu++) {
        pbsa_device_info small = {.is_gpu = gpu, .max_work_group_size = 256,
                                  .local_mem_bytes = 32768};
        pbsa_flash_config c = pbsa_flash_config_heuristic(&small, 256, 32);
        assert_true(pbsa_flash_config_valid(&c, 256, &small));
        assert_int_equal(c.vchunk, 8);
    }
}

/* A fresh context on the fixture's device whose device info the caller may then shrink. */
static pbsa_context *fresh_context(void)
{
    pbsa_context *ctx = NULL;
    if (pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx) != PBSA_SUCCESS)
        fail_msg("pbsa_context_create: %s", pbsa_context_last_error(NULL));
    return ctx;
}

static void expect_dense(pbsa_context *ctx, const char *name)
{
    const conformance_case *c = NULL;
    for (int i = 0; i < conformance_dense_case_count; i++)
        if (strcmp(conformance_dense_cases[i].name, name) == 0)
            c = &conformance_dense_cases[i];
    assert_non_null(c);
    conformance_result r;
    int status = conformance_run_dense(ctx, fixture.queue, c, run_seed, &r);
    if (status != PBSA_SUCCESS)
        fail_msg("%s: status %d: %s", name, status, pbsa_context_last_error(ctx));
    printf("%-36s rel_l2 %.3e (limit %.0e) unwritten %ld guard %ld\n", name, r.rel_l2,
           r.tolerance, r.unwritten, r.guard_damage);
    assert_int_equal(r.unwritten, 0);
    assert_int_equal(r.guard_damage, 0);
    assert_true(r.rel_l2 <= r.tolerance);
}

static void expect_pipeline(pbsa_context *ctx, const pbs_case *c)
{
    pbs_report r = {.log = stdout};
    pbs_inputs in;
    if (pbs_inputs_make(&in, c, run_seed, fixture.cl_ctx, &r) != 0)
        fail_msg("%s", r.message);
    int failed = pbs_check_pipeline(ctx, fixture.queue, &in, &r);
    pbs_inputs_free(&in);
    if (failed)
        fail_msg("%s: %s (%s)", c->name, r.message, pbsa_context_last_error(ctx));
}

/* What pbsa_query_kernel_config() says of the portable dense kernel, which must contain want. */
static void expect_origin(pbsa_context *ctx, int head_dim, const char *want)
{
    char text[4300];
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, head_dim, 0,
                                              1, text, sizeof text, NULL),
                     PBSA_SUCCESS);
    printf("dense D%d: %s\n", head_dim, text);
    if (!strstr(text, want))
        fail_msg("\"%s\" lacks \"%s\"", text, want);
}

/* Kernels that allow 32 work-items (the device says more): every call steps down and runs. */
static void test_small_kernel_work_groups(void **state)
{
    (void)state;
    pbsa_context *ctx = fresh_context();
    hooks_limit_kernel_work_groups(32);
    if (ctx->info.max_work_group_size > 32)
        expect_origin(ctx, 64, "for the kernel's work-group limit (32)");
    expect_dense(ctx, "f32_d64_s7_gqa4");
    static const pbs_case pipeline = {"f32_nseg2_partial", PBSA_DTYPE_F32, 1, 2, 2, 150, 150,
                                      64, 32, 64, 0.9f, 1, 1, PBSA_GQA_PER_QUERY_HEAD, 0};
    expect_pipeline(ctx, &pipeline);
    hooks_limit_kernel_work_groups(0);
    pbsa_context_release(ctx);
}

/* A configuration forced through PBSA_FLASH_CONFIG that the kernels do not allow is stepped
 * down from, not refused. */
static void test_forced_configuration_steps_down(void **state)
{
    (void)state;
    setenv("PBSA_FLASH_CONFIG", "64,64,16,16,16,16,0,0", 1);
    pbsa_context *ctx = fresh_context();
    unsetenv("PBSA_FLASH_CONFIG");
    ctx->info.max_work_group_size = 256;
    ctx->info.local_mem_bytes = 65536;
    hooks_limit_kernel_work_groups(64);
    expect_origin(ctx, 64,
                  "(PBSA_FLASH_CONFIG; stepped down from block_m=64 block_n=64 wg_rows=16 "
                  "wg_cols=16 kchunk=16 vchunk=16 unroll_qk=16 unroll_pv=16 for the kernel's "
                  "work-group limit (64))");
    expect_dense(ctx, "f32_d64_s7_gqa4");
    hooks_limit_kernel_work_groups(0);
    pbsa_context_release(ctx);
}

/* Head dim 256 on a device with the OpenCL 1.2 minimum of 32 KiB of local memory. */
static void test_head_dim_256_in_32_kib(void **state)
{
    (void)state;
    pbsa_context *ctx = fresh_context();
    ctx->info.local_mem_bytes = 32768;
    pbsa_dispatch d;
    assert_int_equal(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, PBSA_DTYPE_F32, 256, 0, 1, 8, &d),
                     PBSA_SUCCESS);
    assert_true(pbsa_flash_local_bytes(&d.config.flash, 256) <= 32768);
    expect_dense(ctx, "f32_d256_s129_batch2");
    static const pbs_case pipeline = {"f32_d256_nosink", PBSA_DTYPE_F32, 1, 1, 1, 300, 300, 256,
                                      32, 64, 0.9f, 1, 0, PBSA_GQA_PER_QUERY_HEAD, 0};
    expect_pipeline(ctx, &pipeline);
    pbsa_context_release(ctx);
}

int main(void)
{
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    run_seed = support_test_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_down_reaches_fit),
        cmocka_unit_test(test_small_kernel_work_groups),
        cmocka_unit_test(test_forced_configuration_steps_down),
        cmocka_unit_test(test_head_dim_256_in_32_kib),
    };
    int failed = cmocka_run_group_tests_name("device_fit", tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
