/* pbsa-info: lists every OpenCL platform and device, with the P:D index that PBSA_DEVICE and
 * --device accept, and what pbsattn will use on each device. */
#include "pbsattn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PLATFORMS = 16, MAX_DEVICES = 64 };

/* -1001 is CL_PLATFORM_NOT_FOUND_KHR (cl_khr_icd): the ICD loader found no platform. */
#define PLATFORM_NOT_FOUND (-1001)

static void usage(FILE *to)
{
    fprintf(to,
            "usage: pbsa-info [--help]\n"
            "Lists every OpenCL platform and device and what pbsattn uses on each.\n"
            "\n"
            "Each device is shown as 'P:D' (platform index : device index in that platform)\n"
            "and with its index over all platforms; both select it, as does a substring of its\n"
            "name, in PBSA_DEVICE=SELECTOR or the tools' --device SELECTOR. Without a selector\n"
            "the first GPU is used, else the first device.\n"
            "\n"
            "Per device: name, vendor, driver, compute units, local and global memory, largest\n"
            "allocation, maximum work-group size, storage dtypes (f32, f16 and bf16 are stored on\n"
            "every device and computed in fp32; cl_khr_fp16 arithmetic is reported), NVIDIA\n"
            "compute capability, whether the NVIDIA tensor-core path could apply, and which\n"
            "kernels run. Then, for the default device, the kernel configuration that dense\n"
            "attention (bf16, D 128 and 256, causal) and PBS sparse attention (block 128) start\n"
            "from, and where it comes from: PBSA_FLASH_CONFIG (PBSA_MMA_CONFIG for the\n"
            "tensor-core kernels), PBSA_TUNING_FILE, the user's tuning file written by\n"
            "pbsa-tune, tuning data built into the library, or the heuristic default. Where the\n"
            "calls run on tensor cores, the line names the tensor-core configuration (warps,\n"
            "groups, keys, stages) and its source, then the portable kernel's tiles (used with\n"
            "PBSA_FORCE_PORTABLE=1). The 'runs' line below it is the configuration the call\n"
            "runs with after fitting it to the compiled kernel (this builds the kernels): where\n"
            "that kernel allows fewer work-items than the configuration has, the smaller one it\n"
            "stepped down to, and why.\n"
            "\n"
            "Exit status: 0 when at least one device is listed, 1 when there is no OpenCL\n"
            "platform or device, 2 on a usage error.\n");
}

/* "48 KiB", "15.6 GiB": bytes in the largest binary unit that keeps the value >= 1. */
static const char *format_bytes(cl_ulong bytes, char *out, size_t capacity)
{
    static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
    double value = (double)bytes;
    int unit = 0;
    while (value >= 1024.0 && unit < 4) {
        value /= 1024.0;
        unit++;
    }
    if (unit == 0 || value == (double)(cl_ulong)value)
        snprintf(out, capacity, "%.0f %s", value, units[unit]);
    else
        snprintf(out, capacity, "%.1f %s", value, units[unit]);
    return out;
}

static const char *device_type_name(cl_device_id device)
{
    cl_device_type type = 0;
    if (clGetDeviceInfo(device, CL_DEVICE_TYPE, sizeof type, &type, NULL) != CL_SUCCESS)
        return "unknown";
    if (type & CL_DEVICE_TYPE_GPU)
        return "GPU";
    if (type & CL_DEVICE_TYPE_CPU)
        return "CPU";
    if (type & CL_DEVICE_TYPE_ACCELERATOR)
        return "accelerator";
    return "other";
}

/* The tensor-core path a library context on device takes (its probes decide). */
static pbsa_tensor_core_path tensor_core_path(cl_device_id device)
{
    cl_int err;
    cl_context cl_ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return PBSA_TENSOR_CORES_NONE;
    pbsa_context *ctx = NULL;
    pbsa_tensor_core_path path = PBSA_TENSOR_CORES_NONE;
    if (pbsa_context_create(cl_ctx, device, NULL, &ctx) == PBSA_SUCCESS)
        path = pbsa_context_tensor_core_path(ctx);
    pbsa_context_release(ctx);
    clReleaseContext(cl_ctx);
    return path;
}

static void print_device(int platform_index, int device_index, int global_index,
                         cl_device_id device, int is_default)
{
    pbsa_device_info info;
    int status = pbsa_query_device_info(device, &info);
    printf("  device %d:%d (index %d)%s\n", platform_index, device_index, global_index,
           is_default ? "  <- default" : "");
    if (status != PBSA_SUCCESS) {
        printf("    cannot read the device: %s\n", pbsa_context_last_error(NULL));
        return;
    }
    char text[64];
    const size_t size = sizeof text;
    printf("    name:                 %s\n", info.name);
    printf("    type:                 %s\n", device_type_name(device));
    printf("    vendor:               %s (vendor id 0x%x)\n", info.vendor, info.vendor_id);
    printf("    driver:               %s\n", info.driver_version);
    printf("    compute units:        %u\n", info.compute_units);
    printf("    local memory:         %s\n", format_bytes(info.local_mem_bytes, text, size));
    printf("    global memory:        %s\n", format_bytes(info.global_mem_bytes, text, size));
    printf("    largest allocation:   %s\n", format_bytes(info.max_alloc_bytes, text, size));
    printf("    max work-group size:  %zu\n", info.max_work_group_size);
    printf("    storage dtypes:       f32, f16, bf16 (computed in fp32); cl_khr_fp16 arithmetic: "
           "%s\n",
           info.has_fp16_arithmetic ? "yes" : "no");
    if (!info.is_nvidia)
        printf("    compute capability:   n/a (not NVIDIA)\n");
    else if (info.nv_compute_major == 0)
        printf("    compute capability:   not reported by the driver\n");
    else
        printf("    compute capability:   %d.%d\n", info.nv_compute_major, info.nv_compute_minor);
    const pbsa_tensor_core_path path =
        info.tensor_core_capable ? tensor_core_path(device) : PBSA_TENSOR_CORES_NONE;
    if (info.tensor_core_capable) {
        printf("    tensor-core capable:  yes (sm_%d%d)\n", info.nv_compute_major,
               info.nv_compute_minor);
        printf("    tensor-core path:     %s\n",
               path == PBSA_TENSOR_CORES_WGMMA
                   ? "wgmma (sm_90a, probe passed)"
                   : path == PBSA_TENSOR_CORES_MMA_SYNC
                         ? info.nv_compute_major == 9
                               ? "mma.sync (wgmma turned off with PBSA_WGMMA=0, or its probe failed)"
                               : "mma.sync (probe passed)"
                         : "not in use (probe failed, or PBSA_FORCE_PORTABLE is set)");
    } else {
        printf("    tensor-core capable:  no (not NVIDIA sm_80+)\n");
    }
    printf("    kernels:              %s\n",
           path == PBSA_TENSOR_CORES_WGMMA
               ? "wgmma for f16/bf16 K/V dense and sparse attention with D 128, mma.sync for "
                 "D 64 to 192 and the permutation scores, portable OpenCL C otherwise"
           : path == PBSA_TENSOR_CORES_MMA_SYNC
               ? "mma.sync for f16/bf16 K/V dense and sparse attention with D 64 to 192, "
                 "portable OpenCL C otherwise"
               : "portable OpenCL C");
}

static void log_warning(pbsa_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level != PBSA_LOG_INFO)
        fprintf(stderr, "pbsa-info: %s\n", message);
}

/* The configurations that calls on the default device use, and where they come from (tuning
 * files, built-in tuning data or the heuristic). */
static void print_tuning(void)
{
    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    pbsa_context *ctx = NULL;
    if (pbsa_helper_create_cl_context(NULL, &cl_ctx, &device) != PBSA_SUCCESS)
        return;
    pbsa_set_log_callback(log_warning, NULL); /* a tuning file that is ignored says why */
    int status = pbsa_context_create(cl_ctx, device, NULL, &ctx);
    pbsa_set_log_callback(NULL, NULL);
    if (status == PBSA_SUCCESS) {
        static const struct {
            const char *label;
            pbsa_kernel_kind kind;
            int head_dim, block;
        } calls[] = {
            {"dense bf16 D128 causal", PBSA_KERNEL_DENSE, 128, 0},
            {"sparse bf16 D128 b128 causal", PBSA_KERNEL_SPARSE, 128, 128},
            {"dense bf16 D256 causal", PBSA_KERNEL_DENSE, 256, 0},
        };
        printf("\nkernel configurations on the default device (tuning: pbsa-tune --help); "
               "'runs' is the one that fits the compiled kernel:\n");
        for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
            char text[9000]; /* two origins on the tensor-core path */
            pbsa_config_source source;
            if (pbsa_query_kernel_config(ctx, calls[i].kind, PBSA_DTYPE_BF16, calls[i].head_dim,
                                         calls[i].block, 1, text, sizeof text,
                                         &source) != PBSA_SUCCESS) {
                printf("  %-30s none: %s\n", calls[i].label, pbsa_context_last_error(ctx));
                continue;
            }
            printf("  %-30s %s\n", calls[i].label, text);
            if (pbsa_fit_kernel_config(ctx, calls[i].kind, PBSA_DTYPE_BF16, calls[i].head_dim,
                                       calls[i].block, 1, text, sizeof text,
                                       &source) == PBSA_SUCCESS)
                printf("  %-30s runs %s\n", "", text);
            else
                printf("  %-30s runs none: %s\n", "", pbsa_context_last_error(ctx));
        }
    }
    pbsa_context_release(ctx);
    clReleaseContext(cl_ctx);
}

/* The device that a run without --device would use (PBSA_DEVICE, else the first GPU, else the
 * first device), or NULL when that selection fails. */
static cl_device_id default_device(void)
{
    cl_context cl_ctx = NULL;
    cl_device_id device = NULL;
    if (pbsa_helper_create_cl_context(NULL, &cl_ctx, &device) != PBSA_SUCCESS)
        return NULL;
    clReleaseContext(cl_ctx);
    return device;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        fprintf(stderr, "pbsa-info: unknown argument '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }

    cl_platform_id platforms[MAX_PLATFORMS];
    cl_uint platform_count = 0;
    cl_int err = clGetPlatformIDs(MAX_PLATFORMS, platforms, &platform_count);
    if (err == PLATFORM_NOT_FOUND || (err == CL_SUCCESS && platform_count == 0)) {
        fprintf(stderr,
                "pbsa-info: no OpenCL platform is installed (clGetPlatformIDs returned %d, %u "
                "platforms).\n"
                "Install an OpenCL driver and its ICD file in /etc/OpenCL/vendors (for example "
                "PoCL for CPUs, or the NVIDIA driver).\n",
                err, platform_count);
        return 1;
    }
    if (err != CL_SUCCESS) {
        fprintf(stderr, "pbsa-info: clGetPlatformIDs failed (OpenCL error %d)\n", err);
        return 1;
    }
    if (platform_count > MAX_PLATFORMS)
        platform_count = MAX_PLATFORMS;

    const char *selector = getenv("PBSA_DEVICE");
    cl_device_id chosen = default_device();
    printf("pbsattn %s\n", pbsa_version_string());
    if (selector && *selector)
        printf("PBSA_DEVICE=%s%s\n", selector, chosen ? "" : " matches no device");
    else
        printf("PBSA_DEVICE is not set: the default is the first GPU, else the first device\n");

    int global_index = 0;
    for (cl_uint p = 0; p < platform_count; p++) {
        char name[256] = "", vendor[256] = "", version[256] = "";
        clGetPlatformInfo(platforms[p], CL_PLATFORM_NAME, sizeof name, name, NULL);
        clGetPlatformInfo(platforms[p], CL_PLATFORM_VENDOR, sizeof vendor, vendor, NULL);
        clGetPlatformInfo(platforms[p], CL_PLATFORM_VERSION, sizeof version, version, NULL);
        name[sizeof name - 1] = vendor[sizeof vendor - 1] = version[sizeof version - 1] = '\0';
        printf("\nplatform %u: %s (%s; %s)\n", p, name, vendor, version);

        cl_device_id devices[MAX_DEVICES];
        cl_uint device_count = 0;
        err = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, devices,
                             &device_count);
        if (err == CL_DEVICE_NOT_FOUND || (err == CL_SUCCESS && device_count == 0)) {
            printf("  no devices\n");
            continue;
        }
        if (err != CL_SUCCESS) {
            printf("  cannot list the devices (OpenCL error %d)\n", err);
            continue;
        }
        if (device_count > MAX_DEVICES)
            device_count = MAX_DEVICES;
        for (cl_uint d = 0; d < device_count; d++) {
            print_device((int)p, (int)d, global_index, devices[d], devices[d] == chosen);
            global_index++;
        }
    }
    if (global_index == 0) {
        fprintf(stderr, "pbsa-info: no OpenCL device is available on any platform\n");
        return 1;
    }
    if (chosen)
        print_tuning();
    return 0;
}
