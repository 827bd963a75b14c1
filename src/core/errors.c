/* Error messages: per-thread last error, the log callback, and status texts. */
#include "core/internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MESSAGE_CAPACITY = 1024 };

/* The last error of one thread on one context. */
typedef struct thread_error {
    uint64_t thread; /* thread_serial() of its thread */
    struct thread_error *next;
    char text[MESSAGE_CAPACITY];
} thread_error;

/* Every thread's last error on one context: one entry per thread that has failed a call on it,
 * kept until the context is released, so that a text stays valid while other threads fail. */
struct pbsa_error_table {
    pthread_mutex_t lock;
    thread_error *entries;
};

/* The last error of this thread on no context (a failed pbsa_context_create(), a call passed
 * ctx NULL). */
static _Thread_local char contextless_error[MESSAGE_CAPACITY];

/* A number per thread, never reused (pthread_t values are, once a thread has ended). */
static uint64_t thread_serial(void)
{
    static atomic_uint_fast64_t next = 1;
    static _Thread_local uint64_t serial;
    if (serial == 0)
        serial = atomic_fetch_add(&next, 1);
    return serial;
}

bool pbsa_error_table_create(pbsa_context *ctx)
{
    ctx->errors = calloc(1, sizeof *ctx->errors);
    if (ctx->errors && pthread_mutex_init(&ctx->errors->lock, NULL) == 0)
        return true;
    free(ctx->errors);
    ctx->errors = NULL;
    return false;
}

void pbsa_error_table_release(pbsa_context *ctx)
{
    if (!ctx->errors)
        return;
    for (thread_error *e = ctx->errors->entries, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&ctx->errors->lock);
    free(ctx->errors);
    ctx->errors = NULL;
}

/* The calling thread's entry in table; created when create is set (NULL if out of memory).
 * The caller holds table->lock. */
static thread_error *find_entry(pbsa_error_table *table, bool create)
{
    const uint64_t thread = thread_serial();
    for (thread_error *e = table->entries; e; e = e->next)
        if (e->thread == thread)
            return e;
    thread_error *e = create ? calloc(1, sizeof *e) : NULL;
    if (e) {
        e->thread = thread;
        e->next = table->entries;
        table->entries = e;
    }
    return e;
}

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
    char text[MESSAGE_CAPACITY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (!ctx || !ctx->errors) {
        memcpy(contextless_error, text, sizeof text);
    } else {
        pthread_mutex_lock(&ctx->errors->lock);
        thread_error *e = find_entry(ctx->errors, true);
        if (e)
            memcpy(e->text, text, sizeof text);
        pthread_mutex_unlock(&ctx->errors->lock);
    }
    emit(PBSA_LOG_ERROR, text);
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
    if (!ctx || !ctx->errors) {
        contextless_error[0] = '\0';
        return;
    }
    pthread_mutex_lock(&ctx->errors->lock);
    thread_error *e = find_entry(ctx->errors, false);
    if (e)
        e->text[0] = '\0';
    pthread_mutex_unlock(&ctx->errors->lock);
}

const char *pbsa_context_last_error(const pbsa_context *ctx)
{
    if (!ctx)
        return contextless_error;
    if (!ctx->errors)
        return "";
    pthread_mutex_lock(&ctx->errors->lock);
    const thread_error *e = find_entry(ctx->errors, false);
    pthread_mutex_unlock(&ctx->errors->lock);
    /* Only this thread writes its entry, and entries live as long as ctx. */
    return e ? e->text : "";
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
