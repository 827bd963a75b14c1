/* Runs a fuzz target over files, without libFuzzer: the seed corpus and the crash reproducers
 * in tests/fuzz/ become ordinary tests of every build (sanitizers included). Arguments are
 * files or folders (every regular file inside). Exit 0 when every input ran. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    size_t capacity = 4096, size = 0;
    uint8_t *data = malloc(capacity);
    while (data) {
        size += fread(data + size, 1, capacity - size, file);
        if (size < capacity)
            break;
        uint8_t *grown = realloc(data, capacity * 2);
        if (!grown)
            free(data);
        data = grown;
        capacity *= 2;
    }
    fclose(file);
    if (!data)
        return 1;
    /* Exactly size bytes, so that a read past the end is caught by the sanitizers. */
    uint8_t *exact = malloc(size ? size : 1);
    if (!exact) {
        free(data);
        return 1;
    }
    memcpy(exact, data, size);
    free(data);
    LLVMFuzzerTestOneInput(exact, size);
    free(exact);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_path(const char *path, int *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "no such file or folder: %s\n", path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return run_file(path);
    }
    DIR *dir = opendir(path);
    if (!dir)
        return 1;
    char *names[4096];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(dir)) && n < 4096;)
        if (e->d_name[0] != '.' && (names[n] = malloc(strlen(path) + strlen(e->d_name) + 2)))
            sprintf(names[n++], "%s/%s", path, e->d_name);
    closedir(dir);
    qsort(names, n, sizeof names[0], compare_names);
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            (*count)++;
            failed |= run_file(names[i]);
        }
        free(names[i]);
    }
    return failed;
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    int failed = 0, count = 0;
    for (int i = 1; i < argc; i++)
        failed |= run_path(argv[i], &count);
    printf("%d inputs ran\n", count);
    return failed;
}
