/* Tuning files that are not readable regular files of sane size (a FIFO without a writer, a
 * directory, a character device, an unreadable or oversized file), named by PBSA_TUNING_FILE or
 * found as the user's tuning file: pbsa_context_create() never blocks on them and ignores each
 * with a warning that names it.
 * Usage: test_tuning_special_files SCRATCH_DIR (files are made there). */
#include "device.h"
#include "tuning/tuning.h"

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static support_device fixture;
static char scratch[1024];
static char user_path[2048];

/* The warnings of the last context creation, one after another. */
static char warnings[8192];

static void log_callback(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level == PBSA_LOG_WARNING && strlen(warnings) + strlen(message) + 2 < sizeof warnings) {
        strcat(warnings, message);
        strcat(warnings, "\n");
    }
}

/* Creates and releases a context; a creation that blocks is ended by the alarm (and fails). */
static void create_ignoring(const char *path, const char *why)
{
    warnings[0] = '\0';
    alarm(20);
    pbsa_context *ctx = NULL;
    int status = pbsa_context_create(fixture.cl_ctx, fixture.device, NULL, &ctx);
    alarm(0);
    assert_int_equal(status, PBSA_SUCCESS);
    pbsa_context_release(ctx);
    if (!strstr(warnings, path) || !strstr(warnings, why))
        fail_msg("%s: no warning naming it (%s); warnings:\n%s", path, why, warnings);
}

/* Makes path (a special file of kind) and returns the reason the warning gives, NULL where this
 * machine cannot make it (the case is then skipped). */
static const char *make_special(const char *path, const char *kind)
{
    unlink(path);
    rmdir(path);
    if (strcmp(kind, "fifo") == 0)
        return mkfifo(path, 0644) == 0 ? "not a regular file" : NULL;
    if (strcmp(kind, "directory") == 0)
        return mkdir(path, 0755) == 0 ? "not a regular file" : NULL;
    if (strcmp(kind, "device") == 0)
        return symlink("/dev/zero", path) == 0 ? "not a regular file" : NULL;
    FILE *f = fopen(path, "w");
    if (!f)
        return NULL;
    if (strcmp(kind, "oversized") == 0)
        for (int i = 0; i < (2 << 20) / 64; i++)
            fputs("# a comment line of sixty-four bytes, repeated past 1 MiB ....\n", f);
    fclose(f);
    if (strcmp(kind, "oversized") == 0)
        return "larger than 1 MiB";
    /* Unreadable: root reads it anyway. */
    return chmod(path, 0) == 0 && access(path, R_OK) != 0 ? "Permission denied" : NULL;
}

static const char *const kinds[] = {"fifo", "directory", "device", "oversized", "unreadable"};

static void test_named_file(void **state)
{
    (void)state;
    char path[2048];
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        snprintf(path, sizeof path, "%s/named-%s.txt", scratch, kinds[i]);
        const char *why = make_special(path, kinds[i]);
        if (!why) {
            assert_true(i >= 3); /* every machine makes FIFOs, folders and links */
            continue;
        }
        setenv("PBSA_TUNING_FILE", path, 1);
        create_ignoring(path, why);
        unsetenv("PBSA_TUNING_FILE");
    }
}

static void test_user_file(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *why = make_special(user_path, kinds[i]);
        assert_true(why || i >= 3);
        if (why)
            create_ignoring(user_path, why);
    }
    unlink(user_path);
    rmdir(user_path);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 1;
    }
    int status = support_device_open_test(&fixture);
    if (status != 0)
        return status;
    unsetenv("PBSA_TUNING");
    unsetenv("PBSA_TUNING_FILE");
    snprintf(scratch, sizeof scratch, "%s", argv[1]);
    char config[1100], folder[1200];
    snprintf(config, sizeof config, "%s/config", scratch);
    snprintf(folder, sizeof folder, "%s/pbsattn/tuning", config);
    mkdir(scratch, 0755);
    for (char *slash = folder + strlen(scratch) + 1;; slash++) {
        if (*slash == '/' || *slash == '\0') {
            char end = *slash;
            *slash = '\0';
            mkdir(folder, 0755);
            *slash = end;
            if (!end)
                break;
        }
    }
    setenv("XDG_CONFIG_HOME", config, 1);
    pbsa_device_info info;
    pbsa_context_device_info(fixture.ctx, &info);
    if (!pbsa_tuning_user_path(info.name, user_path, sizeof user_path)) {
        fprintf(stderr, "no user tuning path\n");
        return 1;
    }
    pbsa_set_log_callback(log_callback, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_named_file),
        cmocka_unit_test(test_user_file),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    pbsa_set_log_callback(NULL, NULL);
    support_device_close(&fixture);
    return failed;
}
