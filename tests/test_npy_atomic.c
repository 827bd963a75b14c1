/* npy_save() replaces a file atomically: a write that fails part-way (the process's file-size
 * limit stands in for a full disk) leaves the old file whole and no temporary file behind, and
 * a successful one replaces the old file. */
#include "npy.h"

#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char folder[] = "/tmp/test_npy_atomic.XXXXXX";

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Files in the folder, the output included. */
static int entries(void)
{
    DIR *d = opendir(folder);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_failed_write_keeps_old_file(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "%s/O.npy", folder);
    float small[4] = {1.0f, 2.0f, 3.0f, 4.0f};
    const uint64_t small_shape[1] = {4};
    char err[256];
    assert_int_equal(npy_save(path, NPY_FLOAT32, 1, small_shape, small, err, sizeof err), 0);
    const long old_size = file_size(path);
    assert_true(old_size > 0);

    /* 1 MiB of data under a 64 KiB file-size limit: the write fails with EFBIG. */
    enum { COUNT = 1 << 18 };
    float *big = calloc(COUNT, sizeof *big);
    assert_non_null(big);
    const uint64_t big_shape[1] = {COUNT};
    struct rlimit before, limit;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &before), 0);
    limit = before;
    limit.rlim_cur = 64 * 1024;
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
    int status = npy_save(path, NPY_FLOAT32, 1, big_shape, big, err, sizeof err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &before), 0);
    printf("  write past the limit: %d (%s)\n", status, status ? err : "");
    assert_int_equal(status, -1);
    assert_int_equal(file_size(path), old_size);
    assert_int_equal(entries(), 1);
    npy_array back;
    assert_int_equal(npy_load(path, &back, err, sizeof err), 0);
    assert_int_equal(back.header.shape[0], 4);
    assert_memory_equal(back.data, small, sizeof small);
    npy_free(&back);

    /* Without the limit the new file replaces the old one. */
    assert_int_equal(npy_save(path, NPY_FLOAT32, 1, big_shape, big, err, sizeof err), 0);
    assert_true(file_size(path) > COUNT * 4);
    assert_int_equal(entries(), 1);
    free(big);
    unlink(path);
}

int main(void)
{
    if (!mkdtemp(folder)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed_write_keeps_old_file),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(folder);
    return failed;
}
