/* Fuzz target: npy_parse() over any bytes. It must never read outside the buffer, never crash,
 * and whatever it accepts must describe the buffer exactly; whatever it rejects comes with a
 * message, *out untouched. */
#include "npy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that any read past the end is caught. */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    npy_header h, untouched;
    memset(&h, 0x5c, sizeof h);
    untouched = h;
    char err[128] = "";
    int status = npy_parse(copy, size, &h, err, sizeof err);
    if (status == 0) {
        uint64_t count = 1;
        for (int d = 0; d < h.ndim; d++)
            count *= h.shape[d];
        if (h.ndim < 0 || h.ndim > NPY_MAX_DIMS || count != h.count ||
            h.data_offset > size || h.data_bytes != size - h.data_offset ||
            h.data_bytes != h.count * h.item_size || !npy_dtype_descr(h.dtype))
            abort();
    } else if (status != -1 || err[0] == '\0' || memcmp(&h, &untouched, sizeof h) != 0 ||
               !memchr(err, '\0', sizeof err)) {
        abort();
    }
    /* No message buffer at all, or a tiny one: the same answer, the message cut short. */
    char tiny[4];
    int again = npy_parse(copy, size, &h, tiny, sizeof tiny);
    if (npy_parse(copy, size, &h, NULL, 0) != status || again != status ||
        (status != 0 && !memchr(tiny, '\0', sizeof tiny)))
        abort();
    free(copy);
    return 0;
}
