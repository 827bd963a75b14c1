/*
 * Synthetic attention heads with the structure of a language model's, for benchmarking sparse
 * attention: seeded and deterministic (the same seed, shape and dtype give the same bytes on
 * every machine), generated on the host directly in the storage dtype, one head at a time.
 *
 * Every query head gets a pattern (below). A key/value head serves a group of query heads (GQA)
 * and carries the key features of every pattern in its group; a query only carries the features
 * of its own pattern, so it picks out its pattern's structure and sees the rest as noise.
 *
 *   K[j] = noise + the key features of the group's patterns at position j
 *   Q[i] = noise + the query features of the head's pattern at position i
 *   V[j] = noise
 *
 * Noise is uniform with unit variance in every dimension of Q and K (so with the default softmax
 * scale 1/sqrt(D), q.k of unrelated tokens has a standard deviation of about 1); V is uniform in
 * [-1, 1). Feature strengths are given as the attention logit they add (after the 1/sqrt(D)
 * scale). The dimensions are split: the first D/2 carry the positional feature, dimension D/2 the
 * sink, D/2 + 1 the heavy keys, and the rest the topic directions, so features of different
 * patterns are orthogonal.
 *
 * Features:
 *  - positional ("RoPE-like" locality): a smooth random walk w(p) in D/2 dimensions, an
 *    Ornstein-Uhlenbeck process with correlation length WORKLOAD_LOCAL_WINDOW tokens, in keys and
 *    in queries. q_i . k_j then falls off as exp(-|i - j| / window): nearby keys align with the
 *    query. Being smooth, it survives the mean over a block of keys.
 *  - sink: key 0 carries a large component along a direction every query of the head shares
 *    (LLMs' attention sink on the first token).
 *  - heavy keys: about one key in WORKLOAD_HEAVY_EVERY, at random positions, carries a component
 *    along a direction shared by every query, of random strength (0.9 to 1 times the pattern's
 *    logit): vertical lines in the attention map (punctuation, separators, key facts).
 *  - topics: the sequence is cut into spans of 256 to 2048 tokens, each about one of
 *    WORKLOAD_TOPICS topics (topics recur); keys and queries carry the direction of their span's
 *    topic, so a query attends to the earlier spans of its own topic: block-clustered, non-local.
 *
 * Patterns (strengths as logits):
 *  - sink-local: sink (12) + positional (10 at distance 0). The most common head: mass on the
 *    first token and a local window.
 *  - vertical: heavy keys (24) only. The important keys are scattered over the sequence, so
 *    every block holds a few of them: the case the key permutation is made for, which gathers
 *    them at the front of their segment.
 *  - vertical-slash: sink (12) + heavy keys (24) + positional (8), the query also carrying the
 *    positional feature of the position WORKLOAD_SLASH offset tokens back (0.75 times as
 *    strong): a local band plus a second diagonal line, and vertical lines (MInference's
 *    "vertical-slash" heads).
 *  - topics: topics (5).
 *  - random: noise only. No structure: attention is spread over all keys and every block
 *    matters; the worst case for any sparse method.
 *  - mixed: query head h has pattern h mod 4 of vertical-slash, topics, sink-local, vertical (so
 *    with GQA every group holds several patterns; random heads are left out).
 * The logits assume the default softmax scale 1/sqrt(D).
 */
#ifndef PBSA_BENCH_WORKLOAD_H
#define PBSA_BENCH_WORKLOAD_H

#include "pbsattn.h"

#include <stdbool.h>
#include <stdint.h>

enum {
    WORKLOAD_LOCAL_WINDOW = 128, /* tokens: correlation length of the positional feature */
    WORKLOAD_HEAVY_EVERY = 16,   /* one heavy key per this many keys, on average */
    WORKLOAD_TOPICS = 8,
    WORKLOAD_SLASH_MIN = 512, /* the slash offset of a key/value head: random in [MIN, MAX) */
    WORKLOAD_SLASH_MAX = 2048,
};

typedef enum workload_pattern {
    WORKLOAD_SINK_LOCAL,
    WORKLOAD_VERTICAL,
    WORKLOAD_VERTICAL_SLASH,
    WORKLOAD_TOPICS_PATTERN,
    WORKLOAD_RANDOM,
    WORKLOAD_PATTERN_COUNT
} workload_pattern;

typedef struct workload {
    bool mixed;
    workload_pattern pattern; /* of every head, when not mixed */
} workload;

typedef struct workload_shape {
    int q_heads, kv_heads, head_dim; /* q_heads a multiple of kv_heads, head_dim >= 8 */
    int64_t seq;
    pbsa_dtype dtype;    /* of the queries */
    pbsa_dtype kv_dtype; /* of the keys and values */
} workload_shape;

/* "sink-local", "vertical", "vertical-slash", "topics", "random" or "mixed". */
bool workload_parse(const char *name, workload *out);
const char *workload_name(const workload *w);
const char *workload_pattern_name(workload_pattern pattern);
/* The pattern of query head q_head. */
workload_pattern workload_head_pattern(const workload *w, int q_head);

/* The features of one key/value head and its group of query heads, for one seed. */
typedef struct workload_kv_head workload_kv_head;

/* Builds the features of key/value head kv_head. Returns NULL when out of host memory. */
workload_kv_head *workload_kv_head_create(const workload *w, const workload_shape *shape,
                                          uint64_t seed, int kv_head);
void workload_kv_head_free(workload_kv_head *h);

/* Write one head, seq x head_dim elements of shape->kv_dtype (K, V) or shape->dtype (Q),
 * row-major (position, dimension). */
void workload_fill_k(const workload_kv_head *h, void *out);
void workload_fill_v(const workload_kv_head *h, void *out);
/* q_head must be one of the group's query heads: kv_head * (q_heads / kv_heads) + 0, 1, ... */
void workload_fill_q(const workload_kv_head *h, int q_head, void *out);

#endif
