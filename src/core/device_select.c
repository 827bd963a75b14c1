/* pbsa_helper_create_cl_context(): device selection for programs without a context of their own. */
#include "core/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { MAX_PLATFORMS = 16, MAX_DEVICES = 64 };

typedef struct device_entry {
    cl_platform_id platform;
    cl_device_id device;
    int platform_index;
    int device_index; /* within its platform */
    bool is_gpu;
    char name[512]; /* "platform name / device name" */
} device_entry;

static int list_devices(device_entry *entries, int capacity, int *count)
{
    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint platform_count = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &platform_count);
    *count = 0;
    /* -1001 is CL_PLATFORM_NOT_FOUND_KHR: the ICD loader found no platform. */
    if (err == -1001 || (err == CL_SUCCESS && platform_count == 0))
        return pbsa_fail(NULL, PBSA_ERROR_NO_DEVICE,
                         "pbsa_helper_create_cl_context: no OpenCL platform is installed");
    if (err != CL_SUCCESS)
        return pbsa_fail(NULL, err, "pbsa_helper_create_cl_context: clGetPlatformIDs failed (%d)",
                         err);
    if (platform_count > MAX_PLATFORMS)
        platform_count = MAX_PLATFORMS;
    for (cl_uint p = 0; p < platform_count; p++) {
        char platform_name[256] = "";
        clGetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof platform_name, platform_name, NULL);
        platform_name[sizeof platform_name - 1] = '\0';
        cl_device_id devices[MAX_DEVICES];
        cl_uint device_count = 0;
        if (clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices, &device_count) !=
            CL_SUCCESS)
            continue;
        if (device_count > MAX_DEVICES)
            device_count = MAX_DEVICES;
        for (cl_uint d = 0; d < device_count && *count < capacity; d++) {
            device_entry *e = &entries[(*count)++];
            char device_name[256] = "";
            cl_device_type type = 0;
            clGetDeviceInfo(devices[d], CL_DEVICE_NAME, sizeof device_name, device_name, NULL);
            device_name[sizeof device_name - 1] = '\0';
            clGetDeviceInfo(devices[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            e->platform = platforms[p];
            e->device = devices[d];
            e->platform_index = (int)p;
            e->device_index = (int)d;
            e->is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
            snprintf(e->name, sizeof e->name, "%s / %s", platform_name, device_name);
        }
    }
    if (*count == 0)
        return pbsa_fail(NULL, PBSA_ERROR_NO_DEVICE,
                         "pbsa_helper_create_cl_context: no OpenCL device is available");
    return PBSA_SUCCESS;
}

/* Parses a non-negative decimal integer spanning all of text. */
static bool parse_index(const char *text, size_t length, int *out)
{
    if (length == 0 || length > 6)
        return false;
    int value = 0;
    for (size_t i = 0; i < length; i++) {
        if (!isdigit((unsigned char)text[i]))
            return false;
        value = value * 10 + (text[i] - '0');
    }
    *out = value;
    return true;
}

static const device_entry *select_device(const device_entry *entries, int count,
                                         const char *selector)
{
    if (!selector || !*selector) {
        for (int i = 0; i < count; i++)
            if (entries[i].is_gpu)
                return &entries[i];
        return &entries[0];
    }
    const char *colon = strchr(selector, ':');
    int platform, device;
    if (colon && parse_index(selector, (size_t)(colon - selector), &platform) &&
        parse_index(colon + 1, strlen(colon + 1), &device)) {
        for (int i = 0; i < count; i++)
            if (entries[i].platform_index == platform && entries[i].device_index == device)
                return &entries[i];
        return NULL;
    }
    if (parse_index(selector, strlen(selector), &device))
        return device < count ? &entries[device] : NULL;
    for (int i = 0; i < count; i++)
        if (strcasestr(entries[i].name, selector))
            return &entries[i];
    return NULL;
}

int pbsa_helper_create_cl_context(const char *selector, cl_context *cl_ctx_out,
                                  cl_device_id *device_out)
{
    static const char fn[] = "pbsa_helper_create_cl_context";
    pbsa_clear_error(NULL);
    if (!cl_ctx_out || !device_out)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT, "%s: %s is NULL", fn,
                         cl_ctx_out ? "device_out" : "cl_ctx_out");
    *cl_ctx_out = NULL;
    *device_out = NULL;
    if (!selector || !*selector)
        selector = getenv("PBSA_DEVICE");
    device_entry *entries = calloc(MAX_PLATFORMS * MAX_DEVICES, sizeof *entries);
    if (!entries)
        return pbsa_fail(NULL, PBSA_ERROR_OUT_OF_HOST_MEMORY, "%s: out of host memory", fn);
    int count = 0;
    int status = list_devices(entries, MAX_PLATFORMS * MAX_DEVICES, &count);
    const device_entry *chosen = status == PBSA_SUCCESS ? select_device(entries, count, selector)
                                                        : NULL;
    if (status == PBSA_SUCCESS && !chosen)
        status = pbsa_fail(NULL, PBSA_ERROR_NO_DEVICE,
                           "%s: no OpenCL device matches selector \"%s\" (see pbsa-info)", fn,
                           selector);
    if (status == PBSA_SUCCESS) {
        cl_context_properties properties[] = {CL_CONTEXT_PLATFORM,
                                              (cl_context_properties)chosen->platform, 0};
        cl_int err;
        cl_context cl_ctx = clCreateContext(properties, 1, &chosen->device, NULL, NULL, &err);
        if (err != CL_SUCCESS) {
            status = pbsa_fail(NULL, err, "%s: clCreateContext on %s failed (%d)", fn,
                               chosen->name, err);
        } else {
            *cl_ctx_out = cl_ctx;
            *device_out = chosen->device;
        }
    }
    free(entries);
    return status;
}
