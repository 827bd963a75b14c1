/* Synthetic LLM-like attention heads (see workload.h). */
#include "workload.h"

#include "bench_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Logits added by each feature (after the 1/sqrt(D) scale), per pattern. */
static const float SINK_LOGIT = 12.0f;
static const float LOCAL_LOGIT = 10.0f;       /* sink-local, at distance 0 */
static const float SLASH_LOCAL_LOGIT = 8.0f;  /* vertical-slash, at distance 0 */
static const float SLASH_WEIGHT = 0.75f;      /* the second diagonal, relative to the band */
static const float HEAVY_LOGIT = 24.0f;       /* at full strength */
static const float HEAVY_MIN_STRENGTH = 0.9f;
static const float TOPIC_LOGIT = 5.0f;
static const int TOPIC_SPAN_MIN = 256, TOPIC_SPAN_MAX = 2048;
static const float UNIT_VARIANCE = 1.7320508f; /* sqrt(3): uniform [-a, a) with variance 1 */

/* Which key features a pattern needs. */
enum { F_LOCAL = 1, F_SINK = 2, F_HEAVY = 4, F_TOPICS = 8 };

static const struct {
    const char *name;
    unsigned features;
} patterns[WORKLOAD_PATTERN_COUNT] = {
    [WORKLOAD_SINK_LOCAL] = {"sink-local", F_SINK | F_LOCAL},
    [WORKLOAD_VERTICAL] = {"vertical", F_HEAVY},
    [WORKLOAD_VERTICAL_SLASH] = {"vertical-slash", F_SINK | F_HEAVY | F_LOCAL},
    [WORKLOAD_TOPICS_PATTERN] = {"topics", F_TOPICS},
    [WORKLOAD_RANDOM] = {"random", 0},
};

static const workload_pattern mixed_cycle[] = {WORKLOAD_VERTICAL_SLASH, WORKLOAD_TOPICS_PATTERN,
                                               WORKLOAD_SINK_LOCAL, WORKLOAD_VERTICAL};

struct workload_kv_head {
    workload w;
    workload_shape shape;
    uint64_t seed;
    int kv_head;
    unsigned features;
    int local_dims;    /* D/2: dimensions 0 .. D/2-1 */
    int sink_dim;      /* D/2 */
    int heavy_dim;     /* D/2 + 1 */
    int topic_first;   /* D/2 + 2 .. D-1 */
    float key_amplitude; /* of the sink and heavy components in the keys */
    float *walk;       /* [seq, local_dims] positional feature, or NULL */
    float *heavy;      /* [seq] strength of each key in 0 or [HEAVY_MIN_STRENGTH, 1], or NULL */
    unsigned char *topic; /* [seq] topic of each position, or NULL */
    float topic_dir[WORKLOAD_TOPICS][256]; /* unit vectors over dimensions topic_first .. D-1 */
    int64_t slash;     /* offset of the second diagonal */
};

bool workload_parse(const char *name, workload *out)
{
    if (strcmp(name, "mixed") == 0) {
        out->mixed = true;
        out->pattern = WORKLOAD_SINK_LOCAL;
        return true;
    }
    for (int p = 0; p < WORKLOAD_PATTERN_COUNT; p++)
        if (strcmp(name, patterns[p].name) == 0) {
            out->mixed = false;
            out->pattern = (workload_pattern)p;
            return true;
        }
    return false;
}

const char *workload_pattern_name(workload_pattern pattern)
{
    return (unsigned)pattern < WORKLOAD_PATTERN_COUNT ? patterns[pattern].name : "?";
}

const char *workload_name(const workload *w)
{
    return w->mixed ? "mixed" : workload_pattern_name(w->pattern);
}

workload_pattern workload_head_pattern(const workload *w, int q_head)
{
    if (!w->mixed)
        return w->pattern;
    return mixed_cycle[q_head % (int)(sizeof mixed_cycle / sizeof mixed_cycle[0])];
}

/* Independent random streams: one per (seed, purpose, head). */
enum { STREAM_FEATURES = 1, STREAM_K = 2, STREAM_V = 3, STREAM_Q = 4 };

static uint64_t stream(uint64_t seed, int purpose, int head)
{
    uint64_t state = seed ^ ((uint64_t)purpose << 56) ^ ((uint64_t)(unsigned)head << 24);
    splitmix64(&state);
    return state;
}

static float uniform(uint64_t *rng) /* [-1, 1) */
{
    return bench_unit_float((uint32_t)splitmix64(rng));
}


workload_kv_head *workload_kv_head_create(const workload *w, const workload_shape *shape,
                                          uint64_t seed, int kv_head)
{
    workload_kv_head *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    const int d = shape->head_dim;
    const int64_t seq = shape->seq;
    const int group = shape->q_heads / shape->kv_heads;
    h->w = *w;
    h->shape = *shape;
    h->seed = seed;
    h->kv_head = kv_head;
    for (int q = kv_head * group; q < (kv_head + 1) * group; q++)
        h->features |= patterns[workload_head_pattern(w, q)].features;
    h->local_dims = d / 2;
    h->sink_dim = d / 2;
    h->heavy_dim = d / 2 + 1;
    h->topic_first = d / 2 + 2;
    /* Split the sink and heavy logits evenly between key and query (geometric mean). */
    h->key_amplitude = sqrtf(HEAVY_LOGIT * sqrtf((float)d));

    uint64_t rng = stream(seed, STREAM_FEATURES, kv_head);
    h->slash = WORKLOAD_SLASH_MIN +
               (int64_t)(splitmix_unit(&rng) * (WORKLOAD_SLASH_MAX - WORKLOAD_SLASH_MIN));
    if (h->features & F_LOCAL) {
        /* Stationary Ornstein-Uhlenbeck walk with unit variance per dimension. */
        h->walk = malloc((size_t)seq * (size_t)h->local_dims * sizeof *h->walk);
        if (!h->walk)
            goto fail;
        const float rho = expf(-1.0f / WORKLOAD_LOCAL_WINDOW);
        const float step = sqrtf(1.0f - rho * rho) * UNIT_VARIANCE;
        for (int c = 0; c < h->local_dims; c++)
            h->walk[c] = UNIT_VARIANCE * uniform(&rng);
        for (int64_t p = 1; p < seq; p++) {
            const float *prev = h->walk + (size_t)(p - 1) * (size_t)h->local_dims;
            float *cur = h->walk + (size_t)p * (size_t)h->local_dims;
            for (int c = 0; c < h->local_dims; c++)
                cur[c] = rho * prev[c] + step * uniform(&rng);
        }
    }
    if (h->features & F_HEAVY) {
        h->heavy = calloc((size_t)seq, sizeof *h->heavy);
        if (!h->heavy)
            goto fail;
        for (int64_t p = 0; p < seq; p++)
            if (splitmix_unit(&rng) * WORKLOAD_HEAVY_EVERY < 1.0)
                h->heavy[p] = HEAVY_MIN_STRENGTH +
                              (1.0f - HEAVY_MIN_STRENGTH) * (float)splitmix_unit(&rng);
    }
    if (h->features & F_TOPICS) {
        h->topic = malloc((size_t)seq);
        if (!h->topic)
            goto fail;
        for (int64_t p = 0; p < seq;) {
            int64_t span = TOPIC_SPAN_MIN +
                           (int64_t)(splitmix_unit(&rng) * (TOPIC_SPAN_MAX - TOPIC_SPAN_MIN));
            unsigned char t = (unsigned char)(splitmix_unit(&rng) * WORKLOAD_TOPICS);
            for (int64_t e = p + span < seq ? p + span : seq; p < e; p++)
                h->topic[p] = t;
        }
        for (int t = 0; t < WORKLOAD_TOPICS; t++) {
            double norm = 0.0;
            for (int c = h->topic_first; c < d; c++) {
                h->topic_dir[t][c - h->topic_first] = uniform(&rng);
                norm += (double)h->topic_dir[t][c - h->topic_first] *
                        h->topic_dir[t][c - h->topic_first];
            }
            for (int c = h->topic_first; c < d; c++)
                h->topic_dir[t][c - h->topic_first] /= (float)sqrt(norm);
        }
    }
    return h;

fail:
    workload_kv_head_free(h);
    return NULL;
}

void workload_kv_head_free(workload_kv_head *h)
{
    if (!h)
        return;
    free(h->walk);
    free(h->heavy);
    free(h->topic);
    free(h);
}

/* Writes one row of dtype: noise plus features[0 .. D) into out at row p. */
static void store_row(const workload_kv_head *h, pbsa_dtype dtype, void *out, int64_t p,
                      const float *features, uint64_t *rng)
{
    const int d = h->shape.head_dim;
    size_t base = (size_t)p * (size_t)d;
    for (int c = 0; c < d; c += 2) {
        uint64_t bits = splitmix64(rng);
        tensor_store(out, dtype, base + (size_t)c,
                     features[c] + UNIT_VARIANCE * bench_unit_float((uint32_t)bits));
        if (c + 1 < d)
            tensor_store(out, dtype, base + (size_t)c + 1,
                         features[c + 1] +
                             UNIT_VARIANCE * bench_unit_float((uint32_t)(bits >> 32)));
    }
}

/* Amplitude of a feature in the keys and queries that adds logit to q.k / sqrt(D), when the
 * key side has amplitude key_amplitude (along unit directions). */
static float query_amplitude(const workload_kv_head *h, float logit, float key_amplitude)
{
    return logit * sqrtf((float)h->shape.head_dim) / key_amplitude;
}

void workload_fill_k(const workload_kv_head *h, void *out)
{
    const int d = h->shape.head_dim;
    float features[4096];
    uint64_t rng = stream(h->seed, STREAM_K, h->kv_head);
    /* The topic logit split evenly between key and query, like the sink and heavy ones. */
    const float topic_amplitude = sqrtf(TOPIC_LOGIT * sqrtf((float)d));
    for (int64_t p = 0; p < h->shape.seq; p++) {
        memset(features, 0, (size_t)d * sizeof features[0]);
        if (h->walk)
            memcpy(features, h->walk + (size_t)p * (size_t)h->local_dims,
                   (size_t)h->local_dims * sizeof features[0]);
        if ((h->features & F_SINK) && p == 0)
            features[h->sink_dim] = h->key_amplitude;
        if (h->heavy)
            features[h->heavy_dim] = h->key_amplitude * h->heavy[p];
        if (h->topic)
            for (int c = h->topic_first; c < d; c++)
                features[c] = topic_amplitude * h->topic_dir[h->topic[p]][c - h->topic_first];
        store_row(h, h->shape.kv_dtype, out, p, features, &rng);
    }
}

void workload_fill_v(const workload_kv_head *h, void *out)
{
    uint64_t rng = stream(h->seed, STREAM_V, h->kv_head);
    tensor_random(out, h->shape.kv_dtype, (size_t)h->shape.seq * (size_t)h->shape.head_dim, 1.0f,
                  &rng);
}

void workload_fill_q(const workload_kv_head *h, int q_head, void *out)
{
    const int d = h->shape.head_dim;
    const workload_pattern pattern = workload_head_pattern(&h->w, q_head);
    const unsigned features_of = patterns[pattern].features;
    float features[4096];
    uint64_t rng = stream(h->seed, STREAM_Q, q_head);
    const float sink = query_amplitude(h, SINK_LOGIT, h->key_amplitude);
    const float heavy = query_amplitude(h, HEAVY_LOGIT, h->key_amplitude);
    const float topic = query_amplitude(h, TOPIC_LOGIT, sqrtf(TOPIC_LOGIT * sqrtf((float)d)));
    /* The walk has unit variance per dimension: w(i).w(i) is about local_dims. */
    const float local_logit = pattern == WORKLOAD_VERTICAL_SLASH ? SLASH_LOCAL_LOGIT : LOCAL_LOGIT;
    const float local = local_logit * sqrtf((float)d) / (float)h->local_dims;
    for (int64_t p = 0; p < h->shape.seq; p++) {
        memset(features, 0, (size_t)d * sizeof features[0]);
        if (features_of & F_LOCAL) {
            const float *here = h->walk + (size_t)p * (size_t)h->local_dims;
            for (int c = 0; c < h->local_dims; c++)
                features[c] = local * here[c];
            if (pattern == WORKLOAD_VERTICAL_SLASH && p >= h->slash) {
                const float *back = h->walk + (size_t)(p - h->slash) * (size_t)h->local_dims;
                for (int c = 0; c < h->local_dims; c++)
                    features[c] += SLASH_WEIGHT * local * back[c];
            }
        }
        if (features_of & F_SINK)
            features[h->sink_dim] = sink;
        if (features_of & F_HEAVY)
            features[h->heavy_dim] = heavy;
        if (features_of & F_TOPICS)
            for (int c = h->topic_first; c < d; c++)
                features[c] = topic * h->topic_dir[h->topic[p]][c - h->topic_first];
        store_row(h, h->shape.dtype, out, p, features, &rng);
    }
}
