/* Error messages: per-thread last error, the log callback, and status texts. */
#include "core/internal.h"

#include <stdio.h>
#include <string.h>

enum { MESSAGE_CAPACITY = 1024 };

/* The last error of this thread, and which context it belongs to (NULL: context creation). */
static _Thread_local struct {
    const pbsa_context *ctx;
    char text[MESSAGE_CAPACITY];
} last_error;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static pbsa_log_fn log_fn;
static void *log_user_data;

void pbsa_set_log_callback(pbsa_log_fn fn, void *user_data)
{
    pthread_mutex_lock(&log_lock);
    log_fn = fn;
    log_user_data = user_data;
    pthread_mutex_unlock(&log_lock);
}

static void emit(pbsa_log_level level, const char *text)
{
    pthread_mutex_lock(&log_lock);
    pbsa_log_fn fn = log_fn;
    void *user_data = log_user_data;
    pthread_mutex_unlock(&log_lock);
    if (fn)
        fn(level, text, user_data);
}

int pbsa_fail(const pbsa_context *ctx, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error.text, sizeof last_error.text, fmt, ap);
    va_end(ap);
    last_error.ctx = ctx;
    emit(PBSA_LOG_ERROR, last_error.text);
    return status;
}

void pbsa_log(pbsa_log_level level, const char *fmt, ...)
{
    char text[MESSAGE_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    emit(level, text);
}

void pbsa_clear_error(const pbsa_context *ctx)
{
    if (last_error.ctx == ctx)
        last_error.text[0] = '\0';
}

const char *pbsa_context_last_error(const pbsa_context *ctx)
{
    return last_error.ctx == ctx ? last_error.text : "";
}

const char *pbsa_status_string(int status)
{
    switch (status) {
    case PBSA_SUCCESS: return "success";
    case PBSA_ERROR_NULL_ARGUMENT: return "a required argument is NULL";
    case PBSA_ERROR_INVALID_VALUE: return "an argument is out of its valid range";
    case PBSA_ERROR_SHAPE_MISMATCH: return "tensor shapes do not agree";
    case PBSA_ERROR_DTYPE_MISMATCH: return "tensor dtypes do not agree";
    case PBSA_ERROR_BUFFER_TOO_SMALL: return "a buffer is smaller than the tensor it describes";
    case PBSA_ERROR_SIZE_OVERFLOW: return "a size computation overflows";
    case PBSA_ERROR_WRONG_DEVICE: return "an object belongs to another OpenCL context or device";
    case PBSA_ERROR_UNSUPPORTED_HEAD_DIM: return "unsupported head dimension";
    case PBSA_ERROR_UNSUPPORTED_DTYPE: return "unsupported dtype";
    case PBSA_ERROR_UNSUPPORTED_DEVICE: return "unsupported device";
    case PBSA_ERROR_BUILD_FAILED: return "OpenCL kernel compilation failed";
    case PBSA_ERROR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case PBSA_ERROR_NO_DEVICE: return "no matching OpenCL platform or device";
    default: break;
    }
    return status < 0 ? "OpenCL error" : "unknown status";
}
