/* Tuning data on a device: the lookup order (forced, PBSA_FLASH_CONFIG / PBSA_MMA_CONFIG,
 * PBSA_TUNING_FILE, the user's file, built-in data, heuristic) as pbsa_query_kernel_config()
 * reports it, files that are ignored with a warning (corrupt, foreign, outdated, unreadable,
 * entries that do not fit), PBSA_TUNING=off, correct results with tuned configurations, the
 * query's argument errors, and the tensor-core configurations: their lookup, their report, and
 * the fallback when a tuned one does not fit (the tensor-core path is switched on by hand, on
 * any device: nothing runs on it here).
 * Usage: test_tuning SCRATCH_DIR (files are written there; the environment is the test's own). */
#include "conformance.h"
#include "device.h"
#include "tune_case.h"
#include "launch/dispatch.h"
#include "pbs/plan.h"
#include "tuning/tuning.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static support_device fixture;
static pbsa_device_info info;
static char platform[PBSA_TUNING_TEXT];
static char scratch[1024];
static char user_path[2048];
static char named_path[2048];

/* Three configurations for dense f32 D64 and sparse f32 D64 b64, all different from the
 * heuristic's (checked in main). */
static const pbsa_flash_config A = {16, 16, 4, 4, 16, 16, 8, 8};
static const pbsa_flash_config B = {32, 32, 4, 8, 16, 16, 8, 16};
static const pbsa_flash_config C = {16, 32, 4, 8, 16, 8, 0, 0};
/* Three tensor-core configurations for dense_mma bf16 D128 and sparse_mma bf16 D128 b128, and the
 * heuristic's, all usable with 48 KiB of local memory (NVIDIA's) or more (checked in main). */
static const pbsa_mma_config MA = {8, 1, 64, 1};
static const pbsa_mma_config MB = {4, 2, 64, 1};
static const pbsa_mma_config MC = {2, 2, 32, 1};
static const pbsa_mma_config MH = {4, 2, 64, 2};

/* The log callback's messages since the last reset_log(). */
static struct {
    int warnings, infos;
    char text[8192];
} logged;

static void log_callback(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level == PBSA_LOG_WARNING)
        logged.warnings++;
    if (level == PBSA_LOG_INFO)
        logged.infos++;
    size_t used = strlen(logged.text);
    snprintf(logged.text + used, sizeof logged.text - used, "%s\n", message);
}

static void reset_log(void) { memset(&logged, 0, sizeof logged); }

/* Tuning file text for this device (or another) with entries, then extra. */
static char *entries_text(int schema, const char *device, const char *driver,
                          const pbsa_tuning_entry *entries, size_t count, const char *extra)
{
    pbsa_tuning_file f;
    memset(&f, 0, sizeof f);
    snprintf(f.platform, sizeof f.platform, "%s", platform);
    snprintf(f.device, sizeof f.device, "%s", device ? device : info.name);
    snprintf(f.driver, sizeof f.driver, "%s", driver ? driver : info.driver_version);
    for (size_t i = 0; i < count; i++)
        assert_true(pbsa_tuning_file_put(&f, &entries[i]));
    char *text = pbsa_tuning_format(&f);
    pbsa_tuning_file_free(&f);
    assert_non_null(text);
    if (schema != PBSA_TUNING_SCHEMA) {
        char *at = strstr(text, "pbsattn-tuning 1");
        assert_non_null(at);
        at[15] = (char)('0' + schema);
    }
    size_t length = strlen(text) + (extra ? strlen(extra) : 0) + 1;
    char *all = malloc(length);
    assert_non_null(all);
    snprintf(all, length, "%s%s", text, extra ? extra : "");
    free(text);
    return all;
}

/* Tuning file text with entries for cfg: dense f32 D64 causal and not, sparse f32 D64 b64. */
static char *tuning_text_driver(int schema, const char *device, const char *driver,
                                const pbsa_flash_config *cfg, const char *extra)
{
    pbsa_tuning_entry e[3] = {{.key = {PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0, 1},
                               .config.flash = *cfg,
                               .ms = -1,
                               .default_ms = -1}};
    e[1] = e[2] = e[0];
    e[1].key.causal = 0;
    e[2].key = (pbsa_tuning_key){PBSA_KERNEL_SPARSE, PBSA_DTYPE_F32, 64, 64, 1};
    return entries_text(schema, device, driver, e, 3, extra);
}

static char *tuning_text(int schema, const char *device, const pbsa_flash_config *cfg,
                         const char *extra)
{
    return tuning_text_driver(schema, device, NULL, cfg, extra);
}

static void write_text(const char *path, const char *text)
{
    assert_int_equal(pbsa_tuning_write_file(path, text), 0);
}

static void write_tuning(const char *path, const pbsa_flash_config *cfg)
{
    char *text = tuning_text(PBSA_TUNING_SCHEMA, NULL, cfg, NULL);
    write_text(path, text);
    free(text);
}

/* Tuning file text with entries for cfg: dense_mma bf16 D128 causal, sparse_mma bf16 D128 b128
 * causal. */
static char *mma_text(const pbsa_mma_config *cfg)
{
    pbsa_tuning_entry e[2] = {{.key = {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 128, 0, 1},
                               .config.mma = *cfg,
                               .ms = -1,
                               .default_ms = -1}};
    e[1] = e[0];
    e[1].key = (pbsa_tuning_key){PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_BF16, 128, 128, 1};
    return entries_text(PBSA_TUNING_SCHEMA, NULL, NULL, e, 2, NULL);
}

static void write_mma(const char *path, const pbsa_mma_config *cfg)
{
    char *text = mma_text(cfg);
    write_text(path, text);
    free(text);
}

/* A clean environment: no variable of ours, the user's folder inside the scratch folder. */
static int clean_environment(void **state)
{
    (void)state;
    unsetenv("PBSA_TUNING_FILE");
    unsetenv("PBSA_FLASH_CONFIG");
    unsetenv("PBSA_MMA_CONFIG");
    unsetenv("PBSA_TUNING");
    char config[1100];
    snprintf(config, sizeof config, "%s/config", scratch);
    setenv("XDG_CONFIG_HOME", config, 1);
    unlink(user_path);
    unlink(named_path);
    reset_log();
    return 0;
}

/* A new context on the fixture's device, its built-in data replaced by builtin (may be NULL). */
static pbsa_context *new_context(const char *builtin)
{
    pbsa_context *ctx = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx), PBSA_SUCCESS);
    pbsa_tuning_text text = {"test.txt", builtin};
    pbsa_tuning_load(ctx, &text, builtin ? 1 : 0);
    return ctx;
}

/* Asserts what ctx reports for dense f32 D64 causal (block 0) or sparse b64. */
static void expect(pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_flash_config *cfg,
                   pbsa_config_source want, const char *origin)
{
    char text[4400];
    pbsa_config_source source = (pbsa_config_source)-1;
    int block = kind == PBSA_KERNEL_DENSE ? 0 : 64;
    int status = pbsa_query_kernel_config(ctx, kind, PBSA_DTYPE_F32, 64, block, 1, text,
                                          sizeof text, &source);
    assert_int_equal(status, PBSA_SUCCESS);
    if (source != want || (origin && !strstr(text, origin)))
        fail_msg("source %d, expected %d; '%s' should mention '%s'", (int)source, (int)want, text,
                 origin ? origin : "");
    char config[256];
    pbsa_tuning_format_config(kind, &(pbsa_kernel_config){.flash = *cfg}, config, sizeof config);
    if (strncmp(text, config, strlen(config)) != 0)
        fail_msg("'%s' is not '%s'", text, config);
    /* The configuration the calls run with: what the dispatch answers. */
    pbsa_tile_role role = kind == PBSA_KERNEL_DENSE    ? PBSA_ROLE_DENSE
                          : kind == PBSA_KERNEL_SPARSE ? PBSA_ROLE_SPARSE
                                                       : PBSA_ROLE_SCORES;
    pbsa_dispatch used;
    const pbsa_dtypes f32 = {PBSA_DTYPE_F32, PBSA_DTYPE_F32, PBSA_DTYPE_F32};
    assert_true(pbsa_dispatch_pick(ctx, role, &f32, 64, block, 1, 8, &used));
    assert_ptr_equal(used.family, &pbsa_portable_family);
    assert_true(pbsa_flash_config_equal(&used.config.flash, cfg));
    assert_int_equal(used.source, want);
}

static pbsa_flash_config heuristic(pbsa_kernel_kind kind)
{
    return pbsa_flash_config_heuristic(&info, 64, kind == PBSA_KERNEL_SPARSE ? 64 : 0);
}

/* Sets (value NULL: unsets) a tile configuration variable and has ctx read the environment again,
 * as a context created now would. */
static void set_tile_env(pbsa_context *ctx, const char *name, const char *value)
{
    if (value)
        setenv(name, value, 1);
    else
        unsetenv(name);
    pbsa_environment_read(&ctx->env);
}

static void test_lookup_order(void **state)
{
    (void)state;
    char *builtin = tuning_text(PBSA_TUNING_SCHEMA, NULL, &C, NULL);
    write_tuning(user_path, &B);
    write_tuning(named_path, &A);
    setenv("PBSA_TUNING_FILE", named_path, 1);
    for (int kind = 0; kind < 2; kind++) {
        pbsa_kernel_kind k = kind ? PBSA_KERNEL_SPARSE : PBSA_KERNEL_DENSE;
        pbsa_context *ctx = new_context(builtin);
        expect(ctx, k, &A, PBSA_CONFIG_TUNING_FILE, "PBSA_TUNING_FILE");

        /* PBSA_FLASH_CONFIG is above every file. */
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", "32,32,4,8,16,16,8,16");
        expect(ctx, k, &B, PBSA_CONFIG_ENVIRONMENT, "PBSA_FLASH_CONFIG");
        /* One that does not fit is passed over. */
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", "16,16,4,4,12,16");
        expect(ctx, k, &A, PBSA_CONFIG_TUNING_FILE, named_path);
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", "32,32,4,8,16,16,8,16");
        /* The tuner's override is above everything, and can be lifted. */
        assert_true(pbsa_tuning_force(ctx, k, &(pbsa_kernel_config){.flash = C}));
        expect(ctx, k, &C, PBSA_CONFIG_FORCED, "forced");
        assert_true(pbsa_tuning_force(ctx, k, NULL));
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", NULL);
        expect(ctx, k, &A, PBSA_CONFIG_TUNING_FILE, named_path);
        pbsa_context_release(ctx);

        /* Files are read at context creation: later contexts see the change. */
        unsetenv("PBSA_TUNING_FILE");
        ctx = new_context(builtin);
        expect(ctx, k, &B, PBSA_CONFIG_USER_FILE, user_path);
        pbsa_context_release(ctx);

        unlink(user_path);
        ctx = new_context(builtin);
        expect(ctx, k, &C, PBSA_CONFIG_BUILTIN, "built-in tuning data tuning/test.txt, line ");
        pbsa_context_release(ctx);

        ctx = new_context(NULL);
        pbsa_flash_config h = heuristic(k);
        expect(ctx, k, &h, PBSA_CONFIG_HEURISTIC, "heuristic default");
        pbsa_context_release(ctx);

        /* Keys must match exactly: no entry for head dim 128 (f32: never the tensor cores). */
        write_tuning(user_path, &B);
        setenv("PBSA_TUNING_FILE", named_path, 1);
        ctx = new_context(builtin);
        char text[512];
        pbsa_config_source source;
        assert_int_equal(
            pbsa_query_kernel_config(ctx, k, PBSA_DTYPE_F32, 128, 64, 1, text, sizeof text, &source),
            PBSA_SUCCESS);
        assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
        pbsa_context_release(ctx);
    }
    free(builtin);
}

static void test_tuning_off(void **state)
{
    (void)state;
    char *builtin = tuning_text(PBSA_TUNING_SCHEMA, NULL, &C, NULL);
    write_tuning(user_path, &B);
    write_tuning(named_path, &A);
    setenv("PBSA_TUNING_FILE", named_path, 1);
    setenv("PBSA_TUNING", "off", 1);
    pbsa_context *ctx = new_context(builtin);
    pbsa_flash_config h = heuristic(PBSA_KERNEL_DENSE);
    expect(ctx, PBSA_KERNEL_DENSE, &h, PBSA_CONFIG_HEURISTIC, "PBSA_TUNING=off");
    /* PBSA_FLASH_CONFIG still applies: it is an experiment, not tuning data. */
    set_tile_env(ctx, "PBSA_FLASH_CONFIG", "16,16,4,4,16,16,8,8");
    expect(ctx, PBSA_KERNEL_DENSE, &A, PBSA_CONFIG_ENVIRONMENT, NULL);
    pbsa_context_release(ctx);
    free(builtin);
}

/* Runs one context creation with the user's file holding text; returns the context. */
static pbsa_context *with_user_text(const char *text, const char *builtin)
{
    write_text(user_path, text);
    reset_log();
    return new_context(builtin);
}

static void expect_warning(const char *needle)
{
    if (logged.warnings < 1 || !strstr(logged.text, needle))
        fail_msg("no warning with '%s'; the log has:\n%s", needle, logged.text);
}

static void test_ignored_files(void **state)
{
    (void)state;
    char *builtin = tuning_text(PBSA_TUNING_SCHEMA, NULL, &C, NULL);
    pbsa_flash_config h = heuristic(PBSA_KERNEL_DENSE);

    /* Corrupt: the next source is used. */
    char *text = tuning_text(PBSA_TUNING_SCHEMA, NULL, &A, "entry kernel=dense\n");
    pbsa_context *ctx = with_user_text(text, builtin);
    expect_warning("is corrupt and ignored");
    expect_warning(user_path);
    expect(ctx, PBSA_KERNEL_DENSE, &C, PBSA_CONFIG_BUILTIN, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* Truncated in the middle of an entry. */
    text = tuning_text(PBSA_TUNING_SCHEMA, NULL, &A, NULL);
    text[strlen(text) - 20] = '\0';
    ctx = with_user_text(text, NULL);
    expect_warning("corrupt");
    expect(ctx, PBSA_KERNEL_DENSE, &h, PBSA_CONFIG_HEURISTIC, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* Another device. */
    text = tuning_text(PBSA_TUNING_SCHEMA, "Some Other GPU", &A, NULL);
    ctx = with_user_text(text, NULL);
    expect_warning("it was tuned on 'Some Other GPU'");
    expect(ctx, PBSA_KERNEL_DENSE, &h, PBSA_CONFIG_HEURISTIC, NULL);
    pbsa_context_release(ctx);
    /* Built-in data of other devices is expected and not reported. */
    unlink(user_path);
    reset_log();
    ctx = new_context(text);
    assert_int_equal(logged.warnings, 0);
    expect(ctx, PBSA_KERNEL_DENSE, &h, PBSA_CONFIG_HEURISTIC, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* An older format. */
    text = tuning_text(0, NULL, &A, NULL);
    ctx = with_user_text(text, NULL);
    expect_warning("older than this library's");
    expect_warning("run pbsa-tune again");
    expect(ctx, PBSA_KERNEL_DENSE, &h, PBSA_CONFIG_HEURISTIC, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* Entries that do not fit the device are dropped, the others kept. */
    text = tuning_text(PBSA_TUNING_SCHEMA, NULL, &A,
                       "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=4096 "
                       "block_n=4096 wg_rows=64 wg_cols=64 kchunk=64 vchunk=64\n");
    ctx = with_user_text(text, builtin);
    expect_warning("1 entry of user tuning file");
    expect_warning("does not fit this device");
    expect(ctx, PBSA_KERNEL_DENSE, &C, PBSA_CONFIG_BUILTIN, NULL); /* the big one replaced A */
    expect(ctx, PBSA_KERNEL_SPARSE, &A, PBSA_CONFIG_USER_FILE, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* Another driver version: used, with a note (not a warning). */
    text = tuning_text_driver(PBSA_TUNING_SCHEMA, NULL, "0.0-other", &A, NULL);
    ctx = with_user_text(text, NULL);
    assert_int_equal(logged.warnings, 0);
    assert_non_null(strstr(logged.text, "was tuned with driver 0.0-other"));
    expect(ctx, PBSA_KERNEL_DENSE, &A, PBSA_CONFIG_USER_FILE, NULL);
    pbsa_context_release(ctx);
    free(text);

    /* PBSA_TUNING_FILE that cannot be read: a warning, then the user's file as usual. */
    write_tuning(user_path, &B);
    setenv("PBSA_TUNING_FILE", scratch, 1); /* a folder */
    reset_log();
    ctx = new_context(NULL);
    expect_warning("not a regular file");
    expect(ctx, PBSA_KERNEL_DENSE, &B, PBSA_CONFIG_USER_FILE, NULL);
    pbsa_context_release(ctx);
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/no-such-file.txt", scratch);
    setenv("PBSA_TUNING_FILE", missing, 1);
    reset_log();
    ctx = new_context(NULL);
    expect_warning("cannot read PBSA_TUNING_FILE");
    pbsa_context_release(ctx);
    /* A missing user file is normal: no warning. */
    unsetenv("PBSA_TUNING_FILE");
    unlink(user_path);
    reset_log();
    ctx = new_context(NULL);
    assert_int_equal(logged.warnings, 0);
    pbsa_context_release(ctx);
    free(builtin);
}

/* Tuned configurations give correct results through the public calls. */
static void test_tuned_results(void **state)
{
    (void)state;
    write_tuning(user_path, &A);
    pbsa_context *ctx = new_context(NULL);
    expect(ctx, PBSA_KERNEL_DENSE, &A, PBSA_CONFIG_USER_FILE, NULL);
    for (int causal = 0; causal < 2; causal++) {
        conformance_case c = {"tuned", ALL_F32, 1, 4, 2, 77, 150, 64, causal, TENSOR_PADDED};
        conformance_result r;
        assert_int_equal(conformance_run_dense(ctx, fixture.queue, &c, 7, &r), PBSA_SUCCESS);
        if (!r.passed)
            fail_msg("causal %d: rel_l2 %.3e, %ld unwritten, %ld guard", causal, r.rel_l2,
                     r.unwritten, r.guard_damage);
    }
    /* The sparse kernel, through pbsa-tune's own check (float64 reference). */
    cl_int err;
    cl_command_queue queue =
        clCreateCommandQueue(fixture.cl_ctx, fixture.device, CL_QUEUE_PROFILING_ENABLE, &err);
    assert_int_equal(err, CL_SUCCESS);
    pbsa_tuning_key key = {PBSA_KERNEL_SPARSE, PBSA_DTYPE_F32, 64, 64, 1};
    tune_shape shape = {2, 1, 256};
    tune_case *tc = NULL;
    char reason[512];
    if (tune_case_create(ctx, fixture.cl_ctx, queue, &key, &shape, 3, &tc, reason, sizeof reason) !=
        0)
        fail_msg("%s", reason);
    if (tune_case_check(tc, reason, sizeof reason) != 0)
        fail_msg("sparse with a tuned configuration: %s", reason);
    double ms = 0.0;
    assert_int_equal(tune_case_time(tc, 1, 3, 1.0, 0.0, NULL, &ms, reason, sizeof reason), 0);
    assert_true(ms > 0.0);
    tune_case_release(tc);
    clReleaseCommandQueue(queue);
    pbsa_context_release(ctx);
}

/* Asserts the tensor-core configuration that ctx looks up for kind (bf16 D128 causal, b128) and
 * what the query reports for it, with the tensor-core path switched on for the query: the _MMA
 * kind gives it with its source, the call's kind names it with PBSA_CONFIG_TENSOR_CORES. */
static void expect_mma(pbsa_context *ctx, pbsa_kernel_kind kind, const pbsa_mma_config *cfg,
                       pbsa_config_source want, const char *origin)
{
    const int block = kind == PBSA_KERNEL_SPARSE_MMA ? 128 : 0;
    pbsa_tuning_key key = {kind, PBSA_DTYPE_BF16, 128, block, 1};
    pbsa_config_source source;
    char where[4400];
    pbsa_kernel_config used = pbsa_tuning_lookup(ctx, &key, &source, where, sizeof where);
    if (!pbsa_mma_config_equal(&used.mma, cfg) || source != want ||
        (origin && !strstr(where, origin)))
        fail_msg("%s: warps %d groups %d keys %d stages %d from %d (%s); expected %d %d %d %d "
                 "from %d (%s)",
                 pbsa_kernel_kind_name(kind), used.mma.warps, used.mma.groups, used.mma.keys,
                 used.mma.stages, (int)source, where, cfg->warps, cfg->groups, cfg->keys,
                 cfg->stages, (int)want, origin ? origin : "");
    /* The mma.sync family, also on Hopper, where wgmma would come first. */
    const bool was = ctx->use_tensor_cores, was_wgmma = ctx->use_wgmma;
    ctx->use_tensor_cores = true;
    ctx->use_wgmma = false;
    char text[9000], config[64], expected[4600];
    pbsa_tuning_format_config(kind, &used, config, sizeof config);
    assert_int_equal(pbsa_query_kernel_config(ctx, kind, PBSA_DTYPE_BF16, 128, block, 1, text,
                                              sizeof text, &source),
                     PBSA_SUCCESS);
    assert_int_equal(source, want);
    snprintf(expected, sizeof expected, "%s (%s)", config, where);
    assert_string_equal(text, expected);
    pbsa_kernel_kind call = kind == PBSA_KERNEL_DENSE_MMA ? PBSA_KERNEL_DENSE : PBSA_KERNEL_SPARSE;
    assert_int_equal(pbsa_query_kernel_config(ctx, call, PBSA_DTYPE_BF16, 128, block, 1, text,
                                              sizeof text, &source),
                     PBSA_SUCCESS);
    assert_int_equal(source, PBSA_CONFIG_TENSOR_CORES);
    snprintf(expected, sizeof expected,
             "tensor-core kernel %s (%s); the portable kernel would use block_m=", config, where);
    if (strncmp(text, expected, strlen(expected)) != 0)
        fail_msg("'%s' does not start with '%s'", text, expected);
    ctx->use_tensor_cores = was;
    ctx->use_wgmma = was_wgmma;
}

static void test_mma_lookup_order(void **state)
{
    (void)state;
    char *builtin = mma_text(&MC);
    for (int kind = 0; kind < 2; kind++) {
        pbsa_kernel_kind k = kind ? PBSA_KERNEL_SPARSE_MMA : PBSA_KERNEL_DENSE_MMA;
        write_mma(user_path, &MB);
        write_mma(named_path, &MA);
        setenv("PBSA_TUNING_FILE", named_path, 1);
        pbsa_context *ctx = new_context(builtin);
        expect_mma(ctx, k, &MA, PBSA_CONFIG_TUNING_FILE, "PBSA_TUNING_FILE");

        /* Each family has its own variable, above every file. */
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", "16,16,4,4,16,16,8,8");
        expect_mma(ctx, k, &MA, PBSA_CONFIG_TUNING_FILE, named_path);
        set_tile_env(ctx, "PBSA_MMA_CONFIG", "4,2,64,1");
        expect_mma(ctx, k, &MB, PBSA_CONFIG_ENVIRONMENT, "PBSA_MMA_CONFIG");
        expect(ctx, PBSA_KERNEL_DENSE, &A, PBSA_CONFIG_ENVIRONMENT, "PBSA_FLASH_CONFIG");
        set_tile_env(ctx, "PBSA_FLASH_CONFIG", NULL);
        /* One that the kernel does not take is passed over, as is one that is not 4 values (the
         * old warps,keys,stages among them). */
        static const char *const passed_over[] = {"4,1,32,3", "4,3,32,2", "4,64,1", "4,2,64",
                                                  "4,2,64,1,1"};
        for (size_t i = 0; i < sizeof passed_over / sizeof passed_over[0]; i++) {
            set_tile_env(ctx, "PBSA_MMA_CONFIG", passed_over[i]);
            expect_mma(ctx, k, &MA, PBSA_CONFIG_TUNING_FILE, named_path);
        }
        set_tile_env(ctx, "PBSA_MMA_CONFIG", "4,2,64,1");
        /* The tuner's override is above everything, and can be lifted. */
        assert_true(pbsa_tuning_force(ctx, k, &(pbsa_kernel_config){.mma = MC}));
        expect_mma(ctx, k, &MC, PBSA_CONFIG_FORCED, "forced");
        assert_true(pbsa_tuning_force(ctx, k, NULL));
        set_tile_env(ctx, "PBSA_MMA_CONFIG", NULL);
        expect_mma(ctx, k, &MA, PBSA_CONFIG_TUNING_FILE, named_path);
        pbsa_context_release(ctx);

        unsetenv("PBSA_TUNING_FILE");
        ctx = new_context(builtin);
        expect_mma(ctx, k, &MB, PBSA_CONFIG_USER_FILE, user_path);
        pbsa_context_release(ctx);

        unlink(user_path);
        ctx = new_context(builtin);
        expect_mma(ctx, k, &MC, PBSA_CONFIG_BUILTIN, "built-in tuning data tuning/test.txt, line ");
        pbsa_context_release(ctx);

        ctx = new_context(NULL);
        expect_mma(ctx, k, &MH, PBSA_CONFIG_HEURISTIC, "heuristic default");
        pbsa_context_release(ctx);

        setenv("PBSA_TUNING", "off", 1);
        ctx = new_context(builtin);
        expect_mma(ctx, k, &MH, PBSA_CONFIG_HEURISTIC, "PBSA_TUNING=off");
        pbsa_context_release(ctx);
        unsetenv("PBSA_TUNING");
    }
    free(builtin);
}

/* The tensor-core kinds in the query: only for calls that run on them. */
static void test_mma_query(void **state)
{
    (void)state;
    pbsa_context *ctx = new_context(NULL);
    char text[512] = "x";
    pbsa_config_source source = (pbsa_config_source)99;
    ctx->use_tensor_cores = false; /* as on every device without tensor cores */
    ctx->use_wgmma = false;        /* the mma.sync family, also on Hopper */
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 128, 0,
                                              1, text, sizeof text, &source),
                     PBSA_ERROR_UNSUPPORTED_DEVICE);
    assert_non_null(strstr(pbsa_context_last_error(ctx), "tensor-core kernel dense_mma"));
    assert_string_equal(text, "");
    assert_int_equal(source, (pbsa_config_source)99);
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_BF16, 128, 0, 1,
                                              text, sizeof text, &source),
                     PBSA_SUCCESS);
    assert_true(source != PBSA_CONFIG_TENSOR_CORES);
    assert_int_equal(strncmp(text, "block_m=", 8), 0);

    ctx->use_tensor_cores = true;
    static const struct {
        pbsa_kernel_kind kind;
        pbsa_dtype dtype;
        int head_dim, block, status;
        const char *text;
    } cases[] = {
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F32, 128, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 256, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_F16, 128, 32, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_F16, 128, 48, PBSA_ERROR_INVALID_VALUE, NULL},
        {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_F16, 100, 64, PBSA_ERROR_UNSUPPORTED_HEAD_DIM, NULL},
        /* 64-row blocks: the heuristic's second choice, one row group per warp. */
        {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_F16, 64, 64, PBSA_SUCCESS,
         "warps=4 groups=1 keys=64 stages=2 (heuristic default)"},
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F16, 96, 48, PBSA_SUCCESS, /* dense: block ignored */
         "warps=4 groups=2 keys=64 stages=2 (heuristic default)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int status = pbsa_query_kernel_config(ctx, cases[i].kind, cases[i].dtype,
                                              cases[i].head_dim, cases[i].block, 0, text,
                                              sizeof text, &source);
        if (status != cases[i].status)
            fail_msg("case %zu: status %d, expected %d (%s)", i, status, cases[i].status,
                     pbsa_context_last_error(ctx));
        if (status == PBSA_SUCCESS) {
            assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
            assert_string_equal(text, cases[i].text);
        }
    }
    /* Calls the tensor-core kernels do not take keep the portable kernel and its source. */
    static const struct {
        pbsa_kernel_kind kind;
        pbsa_dtype dtype;
        int head_dim, block;
    } portable[] = {
        {PBSA_KERNEL_SPARSE, PBSA_DTYPE_BF16, 128, 32},
        {PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 128, 0},
        {PBSA_KERNEL_DENSE, PBSA_DTYPE_BF16, 256, 0},
        {PBSA_KERNEL_SCORES, PBSA_DTYPE_BF16, 128, 128},
    };
    for (size_t i = 0; i < sizeof portable / sizeof portable[0]; i++) {
        assert_int_equal(pbsa_query_kernel_config(ctx, portable[i].kind, portable[i].dtype,
                                                  portable[i].head_dim, portable[i].block, 1,
                                                  text, sizeof text, &source),
                         PBSA_SUCCESS);
        assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
        assert_int_equal(strncmp(text, "block_m=", 8), 0);
    }
    ctx->use_tensor_cores = false;
    pbsa_context_release(ctx);
}

/* A tuned tensor-core configuration that does not fit the device or the call is passed over for
 * the heuristic one; where none fits, the call takes the portable kernel. The context has 32 KiB
 * of local memory, where 64 keys of D128 (35840 bytes) do not fit and the heuristic takes 32. */
/* Whether a causal call of role (block: the logical block) on q, k, v runs on the tensor-core
 * tiles, and with which configuration. */
static bool runs_mma(pbsa_context *ctx, pbsa_tile_role role, const pbsa_tensor *q,
                     const pbsa_tensor *k, const pbsa_tensor *v, int block, pbsa_mma_config *used)
{
    pbsa_dispatch d;
    const pbsa_dtypes dtypes = {q->dtype, k->dtype, q->dtype};
    if (!pbsa_dispatch_pick(ctx, role, &dtypes, (int)q->head_dim, block, 1,
                            pbsa_row_alignment(k, v), &d) ||
        d.family == &pbsa_portable_family)
        return false;
    *used = d.config.mma;
    return true;
}

static void test_mma_fallback(void **state)
{
    (void)state;
    const pbsa_mma_config small_h = {4, 1, 32, 2}; /* the heuristic's with 32 KiB at D128 */
    const pbsa_mma_config grouped = {4, 2, 32, 2}; /* 128 query rows: not a divisor of 64 */
    const pbsa_mma_config big = {4, 1, 64, 2};     /* 35840 bytes at D128 */
    const pbsa_mma_config wide = {8, 1, 32, 1};    /* 128 query rows, in 8 warps */
    pbsa_tuning_entry e[3] = {{.key = {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 128, 0, 1},
                               .config.mma = big,
                               .ms = -1,
                               .default_ms = -1}};
    e[1] = e[2] = e[0];
    e[1].key = (pbsa_tuning_key){PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_BF16, 128, 64, 1};
    e[1].config.mma = grouped;
    e[2].key.kind = PBSA_KERNEL_SPARSE_MMA;
    e[2].key.block = 128;
    e[2].config.mma = grouped;
    char *text = entries_text(PBSA_TUNING_SCHEMA, NULL, NULL, e, 3, NULL);
    write_text(user_path, text);
    free(text);
    pbsa_context *ctx = NULL;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx), PBSA_SUCCESS);
    ctx->info.local_mem_bytes = 32768;
    reset_log();
    pbsa_tuning_load(ctx, NULL, 0);
    expect_warning("2 entries of user tuning file");
    expect_warning("do not fit this device");
    expect_mma(ctx, PBSA_KERNEL_DENSE_MMA, &small_h, PBSA_CONFIG_HEURISTIC, "heuristic default");
    expect_mma(ctx, PBSA_KERNEL_SPARSE_MMA, &grouped, PBSA_CONFIG_USER_FILE, user_path);

    /* Forced and PBSA_MMA_CONFIG configurations that do not fit: the heuristic, not them. */
    pbsa_tuning_key b64 = {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_BF16, 128, 64, 1};
    pbsa_config_source source;
    assert_true(pbsa_tuning_force(ctx, PBSA_KERNEL_SPARSE_MMA, &(pbsa_kernel_config){.mma = wide}));
    pbsa_kernel_config c = pbsa_tuning_lookup(ctx, &b64, &source, NULL, 0);
    assert_true(pbsa_mma_config_equal(&c.mma, &small_h));
    assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
    expect_mma(ctx, PBSA_KERNEL_SPARSE_MMA, &wide, PBSA_CONFIG_FORCED, "forced");
    assert_true(pbsa_tuning_force(ctx, PBSA_KERNEL_SPARSE_MMA, &(pbsa_kernel_config){.mma = big}));
    expect_mma(ctx, PBSA_KERNEL_SPARSE_MMA, &grouped, PBSA_CONFIG_USER_FILE, user_path);
    assert_true(pbsa_tuning_force(ctx, PBSA_KERNEL_SPARSE_MMA, NULL));
    /* Local memory does not depend on groups or stages: none of these 64-key ones fits. */
    static const char *const too_big[] = {"4,1,64,2", "4,2,64,1", "2,1,64,1"};
    for (size_t i = 0; i < sizeof too_big / sizeof too_big[0]; i++) {
        set_tile_env(ctx, "PBSA_MMA_CONFIG", too_big[i]);
        expect_mma(ctx, PBSA_KERNEL_DENSE_MMA, &small_h, PBSA_CONFIG_HEURISTIC, NULL);
    }
    set_tile_env(ctx, "PBSA_MMA_CONFIG", "4,1,64,2");
    pbsa_tuning_key d64 = {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F16, 64, 0, 0};
    c = pbsa_tuning_lookup(ctx, &d64, &source, NULL, 0); /* 19456 bytes at D64: used */
    assert_true(pbsa_mma_config_equal(&c.mma, &big));
    assert_int_equal(source, PBSA_CONFIG_ENVIRONMENT);
    set_tile_env(ctx, "PBSA_MMA_CONFIG", NULL);

    /* The dispatch of the calls: the configuration that fits, or none (the portable kernel). The
     * mma.sync family, also on Hopper. */
    ctx->use_tensor_cores = true;
    ctx->use_wgmma = false;
    pbsa_tensor t = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_BF16, 1, 2, 256, 128);
    pbsa_mma_config used;
    assert_true(runs_mma(ctx, PBSA_ROLE_SPARSE, &t, &t, &t, 128, &used));
    assert_true(pbsa_mma_config_equal(&used, &grouped));
    assert_true(runs_mma(ctx, PBSA_ROLE_SPARSE, &t, &t, &t, 64, &used));
    assert_true(pbsa_mma_config_equal(&used, &small_h));
    assert_true(runs_mma(ctx, PBSA_ROLE_DENSE, &t, &t, &t, 0, &used));
    assert_true(pbsa_mma_config_equal(&used, &small_h));
    assert_false(runs_mma(ctx, PBSA_ROLE_SPARSE, &t, &t, &t, 32, &used));
    pbsa_tensor shifted = t;
    shifted.offset = 4; /* rows 8 bytes off a 16-byte boundary */
    assert_false(runs_mma(ctx, PBSA_ROLE_DENSE, &t, &shifted, &t, 0, &used));
    pbsa_tensor wide_rows = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_BF16, 1, 2, 256, 256);
    assert_false(runs_mma(ctx, PBSA_ROLE_DENSE, &wide_rows, &wide_rows, &wide_rows,
                                  0, &used));
    pbsa_tensor f32 = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_F32, 1, 2, 256, 128);
    assert_false(runs_mma(ctx, PBSA_ROLE_DENSE, &f32, &f32, &f32, 0, &used));
    ctx->info.local_mem_bytes = 10000; /* no tensor-core tile fits */
    assert_false(runs_mma(ctx, PBSA_ROLE_DENSE, &t, &t, &t, 0, &used));
    ctx->use_tensor_cores = false;
    assert_false(runs_mma(ctx, PBSA_ROLE_DENSE, &t, &t, &t, 0, &used));
    pbsa_context_release(ctx);
}

/* Mixed dtypes and the head dims 80, 112 and 192 reach the families by K and V's dtype: f16 or
 * bf16 K/V run on mma.sync whatever q and o are, f32 K/V on the portable tiles; the key is K/V's
 * dtype, the scores (which write no o) are built with o = q, and the build options carry each
 * tensor's dtype. Nothing is compiled, so this runs on any device. */
static void test_mixed_dispatch(void **state)
{
    (void)state;
    pbsa_context *ctx = new_context(NULL);
    ctx->use_tensor_cores = true;
    ctx->use_wgmma = false;
    ctx->info.local_mem_bytes = 49152;
    const pbsa_dtypes llama = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_F32};
    const pbsa_dtypes f32_kv = {PBSA_DTYPE_F16, PBSA_DTYPE_F32, PBSA_DTYPE_BF16};
    pbsa_dispatch d;
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &llama, 128, 0, 1, 8, &d));
    assert_string_equal(d.family->name, "mma.sync");
    assert_int_equal(d.key.dtype, PBSA_DTYPE_F16);
    char options[512] = "";
    assert_true(d.family->options(options, sizeof options, &d.dtypes, d.key.head_dim,
                                  d.key.causal, &d.config));
    assert_non_null(strstr(options, "-DQ_DTYPE=f32 -DKV_DTYPE=f16 -DO_DTYPE=f32"));
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_SPARSE, &f32_kv, 128, 128, 1, 8, &d));
    assert_ptr_equal(d.family, &pbsa_portable_family);
    assert_int_equal(d.key.dtype, PBSA_DTYPE_F32);
    assert_int_equal(d.dtypes.o, PBSA_DTYPE_BF16);
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_SCORES, &f32_kv, 128, 64, 0, 8, &d));
    assert_int_equal(d.dtypes.o, PBSA_DTYPE_F16);
    /* Head dims 80 and 112 take two row groups, 192 one and 32 keys; 256 stays portable. */
    static const struct {
        int head_dim;
        pbsa_mma_config config;
    } dims[] = {{80, {4, 2, 64, 2}}, {112, {4, 2, 64, 2}}, {192, {4, 1, 32, 2}}};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &llama, dims[i].head_dim, 0, 1, 8,
                                       &d));
        assert_string_equal(d.family->name, "mma.sync");
        assert_true(pbsa_mma_config_equal(&d.config.mma, &dims[i].config));
    }
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &llama, 256, 0, 1, 8, &d));
    assert_ptr_equal(d.family, &pbsa_portable_family);
    pbsa_context_release(ctx);
}

/* Hopper's wgmma family comes first where it runs: 16-bit, head dim 128 (64 computed wrong
 * results on the H200), configurations of whole warpgroups. Head dims 64 and 96 and the contexts
 * without wgmma keep mma.sync. The queries
 * compile nothing, so the family's choice is checked on any device. */
static void test_wgmma_dispatch(void **state)
{
    (void)state;
    pbsa_context *ctx = new_context(NULL);
    ctx->use_tensor_cores = true;
    ctx->use_wgmma = true;
    char text[512];
    pbsa_config_source source;
    static const struct {
        pbsa_kernel_kind kind;
        pbsa_dtype dtype;
        int head_dim, block, status;
        const char *text; /* the start of the description */
    } cases[] = {
        {PBSA_KERNEL_DENSE_WGMMA, PBSA_DTYPE_BF16, 128, 0, PBSA_SUCCESS,
         "warps=8 groups=1 keys=64 stages=6 (heuristic default)"},
        /* 64-row blocks: one warpgroup per work-group. */
        {PBSA_KERNEL_SPARSE_WGMMA, PBSA_DTYPE_F16, 128, 64, PBSA_SUCCESS,
         "warps=4 groups=1 keys=64 stages=2 (heuristic default)"},
        {PBSA_KERNEL_DENSE_WGMMA, PBSA_DTYPE_BF16, 64, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_DENSE, PBSA_DTYPE_BF16, 128, 0, PBSA_SUCCESS,
         "tensor-core kernel warps=8 groups=1 keys=64 stages=6 (heuristic default)"},
        {PBSA_KERNEL_DENSE_WGMMA, PBSA_DTYPE_BF16, 96, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_DENSE_WGMMA, PBSA_DTYPE_F32, 128, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        {PBSA_KERNEL_SPARSE_WGMMA, PBSA_DTYPE_BF16, 128, 32, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        /* The calls that run on wgmma are not mma.sync's to answer for... */
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 128, 0, PBSA_ERROR_UNSUPPORTED_DEVICE, NULL},
        /* ...but head dims 64 and 96 are. */
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_BF16, 96, 0, PBSA_SUCCESS,
         "warps=4 groups=2 keys=64 stages=2 (heuristic default)"},
        {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F16, 64, 0, PBSA_SUCCESS,
         "warps=4 groups=2 keys=64 stages=2 (heuristic default)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int status = pbsa_query_kernel_config(ctx, cases[i].kind, cases[i].dtype,
                                              cases[i].head_dim, cases[i].block, 1, text,
                                              sizeof text, &source);
        if (status != cases[i].status)
            fail_msg("case %zu: status %d, expected %d (%s)", i, status, cases[i].status,
                     pbsa_context_last_error(ctx));
        if (cases[i].text && strncmp(text, cases[i].text, strlen(cases[i].text)) != 0)
            fail_msg("case %zu: '%s' does not start with '%s'", i, text, cases[i].text);
    }
    /* PBSA_MMA_CONFIG reaches the wgmma kinds too; one that wgmma cannot take is passed over
     * there, as a tuned entry that does not fit is: its heuristic configuration runs. */
    set_tile_env(ctx, "PBSA_MMA_CONFIG", "4,2,64,2");
    pbsa_tensor t = pbsa_tensor_bhsd(NULL, PBSA_DTYPE_BF16, 1, 2, 256, 128);
    const pbsa_dtypes bf16 = {t.dtype, t.dtype, t.dtype};
    pbsa_dispatch d;
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &bf16, 128, 0, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_string_equal(d.family->name, "wgmma");
    assert_int_equal(d.config.mma.warps, 8);
    assert_int_equal(d.source, PBSA_CONFIG_HEURISTIC);
    set_tile_env(ctx, "PBSA_MMA_CONFIG", "4,1,64,1");
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_SPARSE, &bf16, 128, 128, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_string_equal(d.family->name, "wgmma");
    assert_int_equal(d.config.mma.warps, 4);
    assert_int_equal(d.config.mma.stages, 1);
    /* Double-buffered 32-key tiles with three warpgroups: wgmma's alone (mma.sync passes over
     * them), dense only (192 rows divide no block). */
    set_tile_env(ctx, "PBSA_MMA_CONFIG", "12,1,32,3");
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &bf16, 128, 0, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_string_equal(d.family->name, "wgmma");
    assert_int_equal(d.config.mma.warps, 12);
    assert_int_equal(d.config.mma.keys, 32);
    assert_int_equal(d.config.mma.stages, 3);
    assert_int_equal(d.source, PBSA_CONFIG_ENVIRONMENT);
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_SPARSE, &bf16, 128, 128, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_int_equal(d.config.mma.warps, 8);
    assert_int_equal(d.source, PBSA_CONFIG_HEURISTIC);
    set_tile_env(ctx, "PBSA_MMA_CONFIG", NULL);
    /* Without wgmma (PBSA_WGMMA=0, or no probe passed), mma.sync runs the call. */
    ctx->use_wgmma = false;
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &bf16, 128, 0, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_string_equal(d.family->name, "mma.sync");
    ctx->use_tensor_cores = false;
    ctx->use_wgmma = true; /* never without the mma.sync probe */
    assert_true(pbsa_dispatch_pick(ctx, PBSA_ROLE_DENSE, &bf16, 128, 0, 1,
                                   pbsa_row_alignment(&t, &t), &d));
    assert_string_equal(d.family->name, "portable");
    pbsa_context_release(ctx);
}

static void test_query_errors(void **state)
{
    (void)state;
    pbsa_context *ctx = new_context(NULL);
    char text[64] = "x";
    pbsa_config_source source = (pbsa_config_source)99;
    assert_int_equal(pbsa_query_kernel_config(NULL, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0, 1,
                                              text, sizeof text, &source),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_string_equal(text, "");
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64, 0, 1,
                                              NULL, 8, &source),
                     PBSA_ERROR_NULL_ARGUMENT);
    assert_non_null(strstr(pbsa_context_last_error(ctx), "description"));
    assert_int_equal(pbsa_query_kernel_config(ctx, (pbsa_kernel_kind)8, PBSA_DTYPE_F32, 64, 0, 1,
                                              text, sizeof text, &source),
                     PBSA_ERROR_INVALID_VALUE);
    assert_non_null(strstr(pbsa_context_last_error(ctx), "kind"));
    /* The wgmma kinds answer only on contexts whose wgmma probe passed. */
    if (pbsa_context_tensor_core_path(ctx) != PBSA_TENSOR_CORES_WGMMA) {
        assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_SPARSE_WGMMA, PBSA_DTYPE_BF16,
                                                  128, 128, 1, text, sizeof text, &source),
                         PBSA_ERROR_UNSUPPORTED_DEVICE);
        assert_non_null(strstr(pbsa_context_last_error(ctx), "wgmma"));
    }
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, (pbsa_dtype)9, 64, 0, 1, text,
                                              sizeof text, &source),
                     PBSA_ERROR_UNSUPPORTED_DTYPE);
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 100, 0, 1,
                                              text, sizeof text, &source),
                     PBSA_ERROR_UNSUPPORTED_HEAD_DIM);
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_SPARSE, PBSA_DTYPE_F32, 64, 48, 1,
                                              text, sizeof text, &source),
                     PBSA_ERROR_INVALID_VALUE);
    assert_non_null(strstr(pbsa_context_last_error(ctx), "block_size"));
    assert_int_equal(source, (pbsa_config_source)99); /* not written on error */
    /* Dense ignores the block; no description and no source are fine. */
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_DENSE, PBSA_DTYPE_BF16, 128, 48, 0,
                                              NULL, 0, NULL),
                     PBSA_SUCCESS);
    /* Truncated, NUL-terminated. */
    char small[10];
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_SCORES, PBSA_DTYPE_F16, 256, 32, 1,
                                              small, sizeof small, &source),
                     PBSA_SUCCESS);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_int_equal(strncmp(small, "block_m=", 8), 0);
    assert_int_equal(source, PBSA_CONFIG_HEURISTIC);
    assert_string_equal(pbsa_context_last_error(ctx), "");
    pbsa_context_release(ctx);
}

/* Asserts what ctx reports for the permutation scores' method of f32 D64 b64. */
static void expect_method(pbsa_context *ctx, int clblast, pbsa_config_source want,
                          const char *origin)
{
    char text[4400], expected[32];
    pbsa_config_source source = (pbsa_config_source)-1;
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_SCORES_METHOD, PBSA_DTYPE_F32, 64,
                                              64, 0, text, sizeof text, &source),
                     PBSA_SUCCESS);
    snprintf(expected, sizeof expected, "clblast=%d (", clblast);
    if (source != want || strncmp(text, expected, strlen(expected)) != 0 ||
        !strstr(text, origin))
        fail_msg("source %d, expected %d; '%s' should start with '%s' and mention '%s'",
                 (int)source, (int)want, text, expected, origin);
}

/* The workspace of a PBS call of f32 D64 b64 on ctx: larger with the CLBlast scores, whose GEMM
 * regions are empty otherwise. */
static size_t workspace_bytes(pbsa_context *ctx, cl_mem buffer)
{
    pbsa_tensor q = pbsa_tensor_bhsd(buffer, PBSA_DTYPE_F32, 1, 2, 1024, 64);
    pbsa_tensor k = pbsa_tensor_bhsd(buffer, PBSA_DTYPE_F32, 1, 1, 1024, 64);
    pbsa_params params = pbsa_params_default();
    params.block_size = 64;
    size_t bytes = 0;
    assert_int_equal(pbsa_workspace_size(ctx, &q, &k, &params, &bytes), PBSA_SUCCESS);
    return bytes;
}

/* The permutation scores' method: the heuristic's fused kernels, the measured choice of a tuning
 * file, PBSA_SCORE_METHOD above the file, the tuner's and a test's forcing above both; the calls
 * use what the query reports. */
static void test_scores_method(void **state)
{
    (void)state;
    cl_int err;
    cl_mem buffer =
        clCreateBuffer(fixture.cl_ctx, CL_MEM_READ_WRITE, 2 * 1024 * 64 * 4, NULL, &err);
    assert_int_equal(err, CL_SUCCESS);
    pbsa_context *ctx = new_context(NULL);
    expect_method(ctx, 0, PBSA_CONFIG_HEURISTIC, "heuristic default");
    const size_t fused = workspace_bytes(ctx, buffer);
    pbsa_context_release(ctx);

    pbsa_tuning_entry e = {.key = {PBSA_KERNEL_SCORES_METHOD, PBSA_DTYPE_F32, 64, 64, 0},
                           .config.method = {1},
                           .ms = -1,
                           .default_ms = -1};
    char *text = entries_text(PBSA_TUNING_SCHEMA, NULL, NULL, &e, 1, NULL);
    write_text(user_path, text);
    free(text);
    ctx = new_context(NULL);
    expect_method(ctx, 1, PBSA_CONFIG_USER_FILE, user_path);
    assert_true(workspace_bytes(ctx, buffer) > fused);
    /* Another key keeps the default. */
    char other[256];
    assert_int_equal(pbsa_query_kernel_config(ctx, PBSA_KERNEL_SCORES_METHOD, PBSA_DTYPE_F32, 64,
                                              128, 0, other, sizeof other, NULL),
                     PBSA_SUCCESS);
    assert_non_null(strstr(other, "clblast=0 (heuristic default)"));

    assert_true(
        pbsa_tuning_force(ctx, PBSA_KERNEL_SCORES_METHOD, &(pbsa_kernel_config){.method = {0}}));
    expect_method(ctx, 0, PBSA_CONFIG_FORCED, "forced by the tuner");
    assert_int_equal(workspace_bytes(ctx, buffer), fused);
    assert_true(pbsa_tuning_force(ctx, PBSA_KERNEL_SCORES_METHOD, NULL));

    setenv("PBSA_SCORE_METHOD", "fused", 1);
    pbsa_environment_read(&ctx->env);
    expect_method(ctx, 0, PBSA_CONFIG_ENVIRONMENT, "PBSA_SCORE_METHOD");
    assert_int_equal(workspace_bytes(ctx, buffer), fused);
    unsetenv("PBSA_SCORE_METHOD");
    pbsa_environment_read(&ctx->env);

    pbsa_pbs_force_methods(ctx, &(pbsa_pbs_methods){.score = PBSA_SCORE_FUSED});
    expect_method(ctx, 0, PBSA_CONFIG_FORCED, "forced on the context");
    assert_int_equal(workspace_bytes(ctx, buffer), fused);
    pbsa_context_release(ctx);
    clReleaseMemObject(buffer);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_tuning SCRATCH_DIR\n");
        return 1;
    }
    snprintf(scratch, sizeof scratch, "%s", argv[1]);
    mkdir(scratch, 0755);
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    pbsa_context_device_info(fixture.ctx, &info);
    snprintf(platform, sizeof platform, "%s", pbsa_tuning_platform(fixture.ctx));
    clean_environment(NULL);
    if (!pbsa_tuning_user_path(info.name, user_path, sizeof user_path)) {
        fprintf(stderr, "no user path\n");
        return 1;
    }
    snprintf(named_path, sizeof named_path, "%s/named.txt", scratch);
    /* The three configurations must be usable here and differ from the heuristic's. */
    const pbsa_flash_config *configs[3] = {&A, &B, &C};
    for (int kind = 0; kind < 2; kind++) {
        pbsa_tuning_key key = {kind ? PBSA_KERNEL_SPARSE : PBSA_KERNEL_DENSE, PBSA_DTYPE_F32, 64,
                               kind ? 64 : 0, 1};
        pbsa_flash_config h = heuristic(key.kind);
        for (int i = 0; i < 3; i++)
            if (!pbsa_tuning_config_usable(&(pbsa_kernel_config){.flash = *configs[i]}, &key,
                                           &info) ||
                pbsa_flash_config_equal(configs[i], &h)) {
                fprintf(stderr, "skipped: the test configurations do not suit this device\n");
                support_device_close(&fixture);
                return TEST_SKIP_EXIT;
            }
    }
    /* Likewise the tensor-core ones, and MH must be the heuristic's for both keys. */
    const pbsa_mma_config *mma_configs[3] = {&MA, &MB, &MC};
    for (int kind = 0; kind < 2; kind++) {
        pbsa_tuning_key key = {kind ? PBSA_KERNEL_SPARSE_MMA : PBSA_KERNEL_DENSE_MMA,
                               PBSA_DTYPE_BF16, 128, kind ? 128 : 0, 1};
        pbsa_kernel_config h = pbsa_tuning_heuristic(&key, &info);
        bool suits = pbsa_mma_config_equal(&h.mma, &MH);
        for (int i = 0; i < 3; i++)
            suits = suits &&
                    pbsa_tuning_config_usable(&(pbsa_kernel_config){.mma = *mma_configs[i]}, &key,
                                              &info) &&
                    !pbsa_mma_config_equal(mma_configs[i], &MH);
        if (!suits) {
            fprintf(stderr, "skipped: the tensor-core configurations do not suit this device\n");
            support_device_close(&fixture);
            return TEST_SKIP_EXIT;
        }
    }
    pbsa_set_log_callback(log_callback, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_lookup_order, clean_environment),
        cmocka_unit_test_setup(test_tuning_off, clean_environment),
        cmocka_unit_test_setup(test_ignored_files, clean_environment),
        cmocka_unit_test_setup(test_tuned_results, clean_environment),
        cmocka_unit_test_setup(test_query_errors, clean_environment),
        cmocka_unit_test_setup(test_mma_lookup_order, clean_environment),
        cmocka_unit_test_setup(test_mma_query, clean_environment),
        cmocka_unit_test_setup(test_mma_fallback, clean_environment),
        cmocka_unit_test_setup(test_wgmma_dispatch, clean_environment),
        cmocka_unit_test_setup(test_mixed_dispatch, clean_environment),
        cmocka_unit_test_setup(test_scores_method, clean_environment),
    };
    int failed = cmocka_run_group_tests_name("tuning", tests, NULL, NULL);
    pbsa_set_log_callback(NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
