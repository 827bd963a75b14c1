/* Which kernel runs a call: the table of tile families, the family and configuration a call of
 * given shapes runs on, and its build options. The one place that decides; the dense call, the
 * PBS stages and pbsa_query_kernel_config() ask it. */
#ifndef PBSA_DISPATCH_H
#define PBSA_DISPATCH_H

#include "tuning/tuning.h"

/* What a tiled kernel computes in a call. */
typedef enum pbsa_tile_role {
    PBSA_ROLE_DENSE,  /* dense attention, cl/dense_attention.cl */
    PBSA_ROLE_SPARSE, /* PBS sparse attention, cl/pbs_attention.cl */
    PBSA_ROLE_SCORES, /* PBS fused permutation scores, cl/pbs_scores.cl or its family's variant */
    PBSA_ROLE_COUNT
} pbsa_tile_role;

/* How a family runs one role. */
typedef struct pbsa_family_role {
    const char *kernel_file;         /* built after the family's tile files; NULL: not run */
    pbsa_kernel_kind kind;           /* the space of its configuration, and its tuning kind */
    const pbsa_kernel_config *fixed; /* a configuration that is not tuned; NULL: looked up */
} pbsa_family_role;

/*
 * One family of tiles: the kernels of every role built on one tile implementation. To add a
 * family, add its tuning space and kinds (src/tuning/space.c), its tile file in cl/, and an entry
 * in the table of src/launch/dispatch.c, ahead of the families it should win over.
 */
typedef struct pbsa_tile_family {
    const char *name;
    const char *const *tile_files; /* embedded sources before the role's kernel file */
    size_t tile_file_count;
    pbsa_family_role roles[PBSA_ROLE_COUNT];
    int row_alignment; /* elements on which every row the tiles load must start */
    /* K and V must be f16 or bf16, the type the tiles compute in: calls with f32 K and V go to
     * a later family rather than being rounded. */
    bool kv_16bit;
    /* Whether the family runs on ctx (a probe's verdict, say); NULL: on every device. */
    bool (*available)(const pbsa_context *ctx);
    /* Writes the -D options of a kernel variant: dtypes, head dim, causal and the
     * configuration. */
    bool (*options)(char *options, size_t capacity, const pbsa_dtypes *dtypes, int head_dim,
                    int causal, const pbsa_kernel_config *config);
    /* The work-group size and the query rows one work-group covers. */
    void (*work_group)(const pbsa_kernel_config *config, size_t *work_items, size_t *rows);
    /* The keys of one tile (the fused scores' partial results are per tile). */
    int (*tile_keys)(const pbsa_kernel_config *config);
    /* The index-th configuration of the family's list, largest first; false past its end. A call
     * steps down through them when the compiled kernel allows fewer work-items. */
    bool (*rung)(const pbsa_device_info *info, size_t index, pbsa_kernel_config *out);
    /* Builds kernel_name as pbsa_get_kernel() does. NULL: pbsa_get_kernel(). A family whose
     * program needs another step (compiled once, its binary rewritten, built again from the
     * binary) sets its own. */
    int (*build)(pbsa_context *ctx, const char *const *files, size_t file_count,
                 const char *options, const char *kernel_name, cl_kernel *out);
} pbsa_tile_family;

/* The portable flash tiles (cl/flash_tile.cl): every role on every device, tried last. */
extern const pbsa_tile_family pbsa_portable_family;

/* The answer for one call. */
typedef struct pbsa_dispatch {
    const pbsa_tile_family *family;
    pbsa_tile_role role;
    pbsa_dtypes dtypes;  /* o = q for the scores, which write no o */
    pbsa_tuning_key key; /* kind: the family's kind for the role; dtype: K and V's; block 0 for
                            dense, causal 0 for the scores */
    pbsa_kernel_config config;
    pbsa_config_source source;
} pbsa_dispatch;

/* The largest of 8, 4, 2 and 1 that the offsets and strides of a and b (NULL: a alone) are
 * multiples of: the alignment, in elements, on which every row of both starts. */
int pbsa_row_alignment(const pbsa_tensor *a, const pbsa_tensor *b);

/* Whether family runs role for these dtypes and shapes on ctx: it is available, runs the role,
 * takes K and V's dtype (kv_16bit), its rows' alignment is met (alignment: that of the rows the
 * kernel loads, pbsa_row_alignment()), the key is one it has (pbsa_tuning_key_valid()) and the
 * configuration found for it (pbsa_tuning_lookup(), or the fixed one) is usable on the device.
 * *out receives the answer when true; origin (may be NULL when capacity is 0) receives where the
 * configuration came from. block: the PBS logical block (ignored for the dense role); causal is
 * ignored for the scores. Thread-safe. */
bool pbsa_dispatch_family(const pbsa_context *ctx, const pbsa_tile_family *family,
                          pbsa_tile_role role, const pbsa_dtypes *dtypes, int head_dim, int block,
                          int causal, int alignment, pbsa_dispatch *out, char *origin,
                          size_t capacity);
/* The first family of the table that runs the call (pbsa_dispatch_family()); false when none
 * does, that is when even the portable configuration does not fit the device. Thread-safe. */
bool pbsa_dispatch_pick(const pbsa_context *ctx, pbsa_tile_role role, const pbsa_dtypes *dtypes,
                        int head_dim, int block, int causal, int alignment, pbsa_dispatch *out);

/* How the permutation scores of a PBS call with these shapes (dtype: K's) are computed on ctx,
 * and where that comes from: forced on ctx (pbsa_pbs_force_methods(), tests), forced by the
 * tuner, the PBSA_SCORE_METHOD variable, the tuned choice of the scores_method kind (pbsa-tune
 * measures both), else the fused kernels. Both methods read q and k each in its own dtype.
 * origin (may be NULL when capacity is 0) and source (may be NULL) receive where it came from.
 * Thread-safe. */
pbsa_score_method pbsa_dispatch_score_method(const pbsa_context *ctx, pbsa_dtype dtype,
                                             int head_dim, int block, pbsa_config_source *source,
                                             char *origin, size_t capacity);

/*
 * Fits d to the compiled kernel: builds kernel_name on d's tiles (extra_options appended to the
 * family's options) and, where the kernel as compiled allows fewer work-items per group than the
 * configuration has (CL_KERNEL_WORK_GROUP_SIZE), steps down to the next configuration of the
 * family's list (then of the families after it) that is usable for the call and has at most
 * that many work-items, and so on until one fits. The scores keep their keys per tile: the
 * workspace holds one partial result per tile. A configuration forced by the tuner or by
 * PBSA_FLASH_CONFIG / PBSA_MMA_CONFIG is not replaced: it fails with
 * PBSA_ERROR_UNSUPPORTED_DEVICE, naming it. *fitted receives the configuration, note (may be NULL
 * when capacity is 0) "" or why it stepped down ("stepped down from block_m=32 ...: kernel
 * dense_attention allows 32 work-items per group"), and *out (may be NULL) its kernel, which the
 * caller releases. The answer is remembered per context and key: later calls build nothing new.
 * Thread-safe.
 */
int pbsa_dispatch_fit(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                      const char *extra_options, pbsa_dispatch *fitted, char *note,
                      size_t capacity, cl_kernel *out);
/* pbsa_dispatch_fit()'s kernel, with its work-group size and query rows per work-group. The
 * caller releases *out. */
int pbsa_dispatch_kernel(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                         const char *extra_options, cl_kernel *out, size_t *work_items,
                         size_t *rows);
/* kernel_name built on d's tiles as they are, not fitted: for a kernel of the program whose
 * work-group size is not the tiles' (the scores' reduction). The caller releases *out. */
int pbsa_dispatch_build(pbsa_context *ctx, const pbsa_dispatch *d, const char *kernel_name,
                        const char *extra_options, cl_kernel *out);
/* The extra options of the sparse kernel (cl/pbs_attention.cl): the logical block, whether it
 * reads K and V through pi, and whether they are the materialised copies. */
void pbsa_sparse_options(char *options, size_t capacity, int block, bool has_pi,
                         bool materialised);

#endif
