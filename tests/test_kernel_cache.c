/* Compiled programs on disk (src/binary_cache.c): a new context loads what an earlier one
 * compiled, damaged entries are ignored and replaced, the cache can be turned off, and processes
 * filling one folder at once leave only complete entries. Every run is checked against the
 * float64 reference, so a wrong program loaded from disk fails the test.
 * usage: test_kernel_cache WORK_DIR   (internally also: test_kernel_cache --child CACHE_DIR) */
#include "conformance.h"
#include "device.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static support_device fixture;
static unsigned long long run_seed;
static const char *work_dir;

/* One small dense case: a handful of programs, compiled in seconds on PoCL. */
static const conformance_case small_case = {"cache f32", ALL_F32, 1, 2, 1, 48, 64, 64, 1,
                                            TENSOR_BHSD};

/* What the log callback saw since the last reset. */
static struct {
    int loaded;
    int damaged;
} seen;

static void count_log(pbsa_log_level level, const char *message, void *user_data)
{
    (void)level;
    (void)user_data;
    seen.loaded += strstr(message, "kernel cache: loaded") != NULL;
    seen.damaged += strstr(message, "kernel cache: ignoring the damaged entry") != NULL;
}

/* Points the cache at a new empty folder (XDG_CACHE_HOME/pbsattn) and returns that folder. */
static const char *fresh_cache(const char *name)
{
    static char xdg[4096], dir[4200];
    snprintf(xdg, sizeof xdg, "%s/%s-%llu", work_dir, name, run_seed);
    snprintf(dir, sizeof dir, "%s/pbsattn", xdg);
    char command[8400];
    snprintf(command, sizeof command, "rm -rf '%s'", xdg);
    assert_int_equal(system(command), 0);
    setenv("XDG_CACHE_HOME", xdg, 1);
    return dir;
}

/* Counts complete entries (*.bin) and leftovers of interrupted writes (anything else). */
static void count_files(const char *dir, int *entries, int *others)
{
    *entries = *others = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".bin") == 0)
            (*entries)++;
        else
            (*others)++;
    }
    closedir(d);
}

/* Runs the small case on a new context with options; checks the result against the reference. */
static void run_on_new_context(const pbsa_context_options *options)
{
    pbsa_context *ctx = NULL;
    seen.loaded = seen.damaged = 0;
    assert_int_equal(pbsa_context_create(fixture.cl_ctx, fixture.device, options, &ctx),
                     PBSA_SUCCESS);
    conformance_result r;
    int status = conformance_run_dense(ctx, fixture.queue, &small_case, run_seed, &r);
    if (status != PBSA_SUCCESS)
        fail_msg("status %d: %s", status, pbsa_context_last_error(ctx));
    pbsa_context_release(ctx);
    assert_int_equal(r.unwritten, 0);
    assert_int_equal(r.guard_damage, 0);
    assert_true(r.rel_l2 <= r.tolerance);
}

static void miss_then_hit(void **state)
{
    (void)state;
    const char *dir = fresh_cache("hit");
    int entries, others;
    run_on_new_context(NULL);
    count_files(dir, &entries, &others);
    assert_int_equal(seen.loaded, 0);
    assert_true(entries > 0);
    assert_int_equal(others, 0);
    run_on_new_context(NULL);
    assert_int_equal(seen.loaded, entries);
    assert_int_equal(seen.damaged, 0);
}

/* Damages every entry in one way: cut in half, one byte of the binary changed, or one byte of
 * the identity (device, driver, options) changed, as an entry of another driver would be. */
static void damage_entries(const char *dir, int how)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size > 200);
        if (how == 0) {
            assert_int_equal(truncate(path, st.st_size / 2), 0);
            continue;
        }
        FILE *f = fopen(path, "r+b");
        assert_non_null(f);
        long at = how == 1 ? (long)st.st_size - 17 : 8 + 5 * 8 + 1;
        assert_int_equal(fseek(f, at, SEEK_SET), 0);
        int c = fgetc(f);
        assert_int_equal(fseek(f, at, SEEK_SET), 0);
        fputc(c ^ 0x5a, f);
        assert_int_equal(fclose(f), 0);
    }
    closedir(d);
}

static void damaged_entries_are_replaced(void **state)
{
    (void)state;
    for (int how = 0; how < 3; how++) {
        const char *dir = fresh_cache("damaged");
        int entries, others;
        run_on_new_context(NULL);
        count_files(dir, &entries, &others);
        assert_true(entries > 0);
        damage_entries(dir, how);
        run_on_new_context(NULL);
        assert_int_equal(seen.loaded, 0);
        assert_int_equal(seen.damaged, entries);
        run_on_new_context(NULL); /* rewritten whole by the previous context */
        assert_int_equal(seen.loaded, entries);
        assert_int_equal(seen.damaged, 0);
    }
}

static void disabled(void **state)
{
    (void)state;
    int entries, others;
    const char *dir = fresh_cache("option");
    pbsa_context_options options = {.struct_size = sizeof options, .disable_kernel_cache = 1};
    run_on_new_context(&options);
    count_files(dir, &entries, &others);
    assert_int_equal(entries + others, 0);

    dir = fresh_cache("environment");
    setenv("PBSA_KERNEL_CACHE", "off", 1);
    run_on_new_context(NULL);
    setenv("PBSA_KERNEL_CACHE", "on", 1);
    count_files(dir, &entries, &others);
    assert_int_equal(entries + others, 0);
}

/* Two processes (this program with --child) compile into one empty folder at the same time. */
static void two_processes(void **state)
{
    (void)state;
    const char *dir = fresh_cache("processes");
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", run_seed);
    setenv("PBSA_TEST_SEED", seed, 1); /* before fork: the children only exec */
    pid_t children[2];
    for (int i = 0; i < 2; i++) {
        children[i] = fork();
        assert_true(children[i] >= 0);
        if (children[i] == 0) {
            execl("/proc/self/exe", "test_kernel_cache", "--child", (char *)NULL);
            _exit(127);
        }
    }
    for (int i = 0; i < 2; i++) {
        int wstatus = 0;
        assert_int_equal(waitpid(children[i], &wstatus, 0), children[i]);
        assert_true(WIFEXITED(wstatus));
        assert_int_equal(WEXITSTATUS(wstatus), 0);
    }
    int entries, others;
    count_files(dir, &entries, &others);
    assert_true(entries > 0);
    assert_int_equal(others, 0);
    run_on_new_context(NULL);
    assert_int_equal(seen.loaded, entries);
    assert_int_equal(seen.damaged, 0);
}

int main(int argc, char **argv)
{
    bool child = argc == 2 && strcmp(argv[1], "--child") == 0;
    if (!child && argc != 2) {
        fprintf(stderr, "usage: test_kernel_cache WORK_DIR\n");
        return 1;
    }
    /* The test's own choices, whatever the caller's environment says. */
    setenv("PBSA_KERNEL_CACHE", "on", 1);
    int opened = support_device_open_test(&fixture);
    if (opened != 0)
        return opened;
    const char *fixed = getenv("PBSA_TEST_SEED");
    run_seed = fixed ? strtoull(fixed, NULL, 0) : (unsigned long long)time(NULL);
    if (child) {
        conformance_result r;
        int status = conformance_run_dense(fixture.ctx, fixture.queue, &small_case, run_seed, &r);
        support_device_close(&fixture);
        return status == PBSA_SUCCESS && r.unwritten == 0 && r.guard_damage == 0 &&
                       r.rel_l2 <= r.tolerance
                   ? 0
                   : 1;
    }
    work_dir = argv[1];
    mkdir(work_dir, 0700);
    printf("PBSA_TEST_SEED=%llu\n", run_seed);
    pbsa_set_log_callback(count_log, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(miss_then_hit),
        cmocka_unit_test(damaged_entries_are_replaced),
        cmocka_unit_test(disabled),
        cmocka_unit_test(two_processes),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
