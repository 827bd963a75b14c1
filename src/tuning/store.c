/* Tuning files on disk: the user's file of a device, reading, and atomic writing. */
#include "tuning/tuning.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool pbsa_tuning_user_path(const char *device, char *out, size_t capacity)
{
    char name[160];
    pbsa_tuning_file_name(device, name, sizeof name);
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int n;
    /* The XDG rules: a relative XDG_CONFIG_HOME is invalid and ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(out, capacity, "%s/pbsattn/tuning/%s", xdg, name);
    else if (home && home[0] == '/')
        n = snprintf(out, capacity, "%s/.config/pbsattn/tuning/%s", home, name);
    else
        return false;
    return n > 0 && (size_t)n < capacity;
}

int pbsa_tuning_read_file(const char *path, char **text, size_t *length)
{
    *text = NULL;
    *length = 0;
    /* Anything but a regular file is refused before it is opened (opening a device can act on
     * it), and opened without blocking in case it is replaced meanwhile (a FIFO without a writer
     * would block forever). */
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode))
        return EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return errno;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode))
        err = EINVAL;
    else if (st.st_size > PBSA_TUNING_MAX_BYTES)
        err = EFBIG;
    char *data = err ? NULL : malloc((size_t)st.st_size + 1);
    if (!err && !data)
        err = ENOMEM;
    size_t used = 0;
    /* Read to the end, which may differ from the size seen (a file being replaced). */
    while (!err) {
        if (used == (size_t)st.st_size + 1 || used > PBSA_TUNING_MAX_BYTES) {
            err = EFBIG;
            break;
        }
        ssize_t got = read(fd, data + used, (size_t)st.st_size + 1 - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            err = errno;
        else if (got == 0)
            break;
        else
            used += (size_t)got;
    }
    close(fd);
    if (err) {
        free(data);
        return err;
    }
    if (used == (size_t)st.st_size + 1) { /* grew while being read */
        free(data);
        return EFBIG;
    }
    data[used] = '\0';
    *text = data;
    *length = used;
    return 0;
}

/* mkdir -p of the folder that holds path. */
static int make_parents(const char *path)
{
    char folder[4096];
    size_t n = strlen(path);
    if (n >= sizeof folder)
        return ENAMETOOLONG;
    memcpy(folder, path, n + 1);
    char *slash = strrchr(folder, '/');
    if (!slash || slash == folder)
        return 0;
    *slash = '\0';
    for (char *p = folder + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(folder, 0755) != 0 && errno != EEXIST)
            return errno;
        *p = '/';
    }
    if (mkdir(folder, 0755) != 0 && errno != EEXIST)
        return errno;
    return 0;
}

int pbsa_tuning_write_file(const char *path, const char *text)
{
    int err = make_parents(path);
    if (err)
        return err;
    char temporary[4200];
    int n = snprintf(temporary, sizeof temporary, "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof temporary)
        return ENAMETOOLONG;
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errno;
    size_t length = strlen(text), done = 0;
    while (!err && done < length) {
        ssize_t wrote = write(fd, text + done, length - done);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote < 0)
            err = errno;
        else
            done += (size_t)wrote;
    }
    if (!err && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && !err)
        err = errno;
    if (!err && rename(temporary, path) != 0)
        err = errno;
    if (err)
        unlink(temporary);
    return err;
}
