/* Fuzz target: the device selector of pbsa_helper_create_cl_context() (the PBSA_DEVICE variable
 * and the tools' --device option): "P:D", "D" or a name substring, any bytes. It must never
 * crash; on success the caller gets a context it can release, on failure a message. */
#include "pbsattn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An empty selector would read PBSA_DEVICE: keep the input the only source. */
    if (size == 0 || size > 512)
        return 0;
    char *selector = malloc(size + 1);
    if (!selector)
        return 0;
    memcpy(selector, data, size);
    selector[size] = '\0';
    cl_context cl_ctx = (cl_context)selector;
    cl_device_id device = (cl_device_id)selector;
    int status = pbsa_helper_create_cl_context(selector, &cl_ctx, &device);
    if (status == PBSA_SUCCESS) {
        if (!cl_ctx || !device)
            abort();
        clReleaseContext(cl_ctx);
    } else if (cl_ctx || device || pbsa_context_last_error(NULL)[0] == '\0') {
        abort();
    }
    free(selector);
    return 0;
}
