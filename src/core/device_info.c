/* Reads what the library needs to know of an OpenCL device, once per context. */
#include "core/internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* From cl_nv_device_attribute_query (not in every header set). */
#define PBSA_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define PBSA_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001
#define PBSA_NVIDIA_VENDOR_ID 0x10de

static int read_string(cl_device_id device, cl_device_info what, char *out, size_t capacity)
{
    cl_int err = clGetDeviceInfo(device, what, capacity, out, NULL);
    out[capacity - 1] = '\0';
    return err;
}

static bool has_extension(cl_device_id device, const char *extension)
{
    size_t size = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, 0, NULL, &size) != CL_SUCCESS || size == 0)
        return false;
    char *text = malloc(size + 1);
    if (!text)
        return false;
    bool found = false;
    if (clGetDeviceInfo(device, CL_DEVICE_EXTENSIONS, size, text, NULL) == CL_SUCCESS) {
        text[size] = '\0';
        size_t length = strlen(extension);
        for (char *at = strstr(text, extension); at; at = strstr(at + 1, extension)) {
            bool starts = at == text || at[-1] == ' ';
            bool ends = at[length] == ' ' || at[length] == '\0';
            if (starts && ends) {
                found = true;
                break;
            }
        }
    }
    free(text);
    return found;
}

int pbsa_query_device_info(cl_device_id device, pbsa_device_info *out)
{
    if (!device || !out)
        return pbsa_fail(NULL, PBSA_ERROR_NULL_ARGUMENT,
                         "pbsa_query_device_info: %s is NULL", device ? "out" : "device");
    pbsa_device_info info;
    memset(&info, 0, sizeof info);
    cl_device_type type = 0;
    cl_int err = read_string(device, CL_DEVICE_NAME, info.name, sizeof info.name);
    if (err == CL_SUCCESS)
        err = read_string(device, CL_DEVICE_VENDOR, info.vendor, sizeof info.vendor);
    if (err == CL_SUCCESS)
        err = read_string(device, CL_DRIVER_VERSION, info.driver_version,
                          sizeof info.driver_version);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_VENDOR_ID, sizeof info.vendor_id, &info.vendor_id,
                              NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof info.compute_units,
                              &info.compute_units, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof info.local_mem_bytes,
                              &info.local_mem_bytes, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof info.global_mem_bytes,
                              &info.global_mem_bytes, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof info.max_alloc_bytes,
                              &info.max_alloc_bytes, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_MAX_WORK_GROUP_SIZE,
                              sizeof info.max_work_group_size, &info.max_work_group_size, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    if (err != CL_SUCCESS)
        return pbsa_fail(NULL, err, "pbsa_query_device_info: clGetDeviceInfo failed (%d)", err);

    info.is_gpu = (type & CL_DEVICE_TYPE_GPU) != 0;
    info.is_nvidia = info.vendor_id == PBSA_NVIDIA_VENDOR_ID || strcasestr(info.vendor, "nvidia");
    if (info.is_nvidia && has_extension(device, "cl_nv_device_attribute_query")) {
        cl_uint major = 0, minor = 0;
        if (clGetDeviceInfo(device, PBSA_CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major,
                            &major, NULL) == CL_SUCCESS &&
            clGetDeviceInfo(device, PBSA_CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof minor,
                            &minor, NULL) == CL_SUCCESS) {
            info.nv_compute_major = (int)major;
            info.nv_compute_minor = (int)minor;
        }
    }
    info.has_fp16_arithmetic = has_extension(device, "cl_khr_fp16");
    info.tensor_core_capable = info.is_nvidia && info.nv_compute_major >= 8;
    *out = info;
    return PBSA_SUCCESS;
}
