/* Fuzz target: the tuning-file reader (src/tuning/file.h), over any bytes, and the device-name
 * normalisation that keys those files. It must never crash or read outside the text; what it
 * accepts must survive a round trip (formatting and parsing again gives the same entries, and
 * formatting that gives the same text); what it refuses comes with a message and no entries. */
#include "tuning/file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool same_entries(const pbsa_tuning_file *a, const pbsa_tuning_file *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++) {
        const pbsa_tuning_entry *x = &a->entries[i], *y = &b->entries[i];
        if (!pbsa_tuning_key_equal(&x->key, &y->key) ||
            !pbsa_tuning_config_equal(x->key.kind, &x->config, &y->config))
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly size bytes, not NUL-terminated: the parser takes a length. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    if (size)
        memcpy(text, data, size);
    pbsa_tuning_file file;
    memset(&file, 0, sizeof file);
    char error[160] = "";
    pbsa_tuning_result result = pbsa_tuning_parse(text, size, &file, error, sizeof error);
    if (result != PBSA_TUNING_OK) {
        if (file.count != 0 || error[0] == '\0' || !memchr(error, '\0', sizeof error))
            abort();
    } else {
        char *once = pbsa_tuning_format(&file);
        if (once) {
            pbsa_tuning_file again;
            memset(&again, 0, sizeof again);
            if (pbsa_tuning_parse(once, strlen(once), &again, error, sizeof error) !=
                    PBSA_TUNING_OK ||
                !same_entries(&file, &again))
                abort();
            char *twice = pbsa_tuning_format(&again);
            if (twice && strcmp(once, twice) != 0)
                abort();
            free(twice);
            pbsa_tuning_file_free(&again);
            free(once);
        }
    }
    pbsa_tuning_file_free(&file);
    /* Without a message buffer: the same answer. */
    memset(&file, 0, sizeof file);
    if (pbsa_tuning_parse(text, size, &file, NULL, 0) != result)
        abort();
    pbsa_tuning_file_free(&file);

    /* The same bytes as a device name (NUL-terminated, as drivers report them). */
    char *name = malloc(size + 1);
    if (name) {
        memcpy(name, data, size);
        name[size] = '\0';
        char normal[64], file_name[48];
        memset(normal, 0x5a, sizeof normal);
        pbsa_tuning_normalise_name(name, normal, sizeof normal);
        if (!memchr(normal, '\0', sizeof normal))
            abort();
        pbsa_tuning_file_name(name, file_name, sizeof file_name);
        for (const char *c = file_name; *c; c++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", *c))
                abort();
        free(name);
    }
    free(text);
    return 0;
}
