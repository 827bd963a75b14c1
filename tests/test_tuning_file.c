/* Tuning files without a device: the parser on valid, corrupt, foreign-device and outdated
 * input, the writer (round trip), device-name normalisation, the built-in files, the rules of the
 * tensor-core configurations, the environment variables' values, the search spaces'
 * neighbourhoods, and random damage to a valid file (never a crash, never an invalid entry). */
#include "tuning/tuning.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char VALID[] =
    "# a comment\n"
    "\n"
    "pbsattn-tuning 1\n"
    "platform  NVIDIA CUDA \n"
    "device\tNVIDIA H100 80GB HBM3\n"
    "driver 550.54.15\n"
    "generator pbsa-tune 0.1.0 --quick\n"
    "date 2026-01-31T12:00:00Z\n"
    "entry kernel=dense dtype=bf16 head_dim=128 block=0 causal=1 block_m=64 block_n=64 "
    "wg_rows=8 wg_cols=16 kchunk=16 vchunk=16 unroll_qk=16 unroll_pv=8 ms=21.5 "
    "default_ms=22.9375 seq=8192 heads=32 kv_heads=8\n"
    "   # an indented comment\n"
    "entry kernel=sparse dtype=bf16 head_dim=128 block=128 causal=1 block_m=64 block_n=64 "
    "wg_rows=8 wg_cols=16 kchunk=16 vchunk=16\n"
    "entry causal=0 kernel=scores block=64 dtype=f16 head_dim=64 block_m=32 block_n=32 "
    "wg_rows=8 wg_cols=8 kchunk=8 vchunk=8 unroll_qk=0\n"
    "entry kernel=sparse_mma dtype=bf16 head_dim=96 block=128 causal=0 stages=1 groups=2 warps=4 "
    "keys=64 ms=3.25\n";

static pbsa_tuning_result parse_text(const char *text, pbsa_tuning_file *file, char *error,
                                     size_t capacity)
{
    return pbsa_tuning_parse(text, strlen(text), file, error, capacity);
}

static void test_valid(void **state)
{
    (void)state;
    pbsa_tuning_file f;
    char error[256];
    assert_int_equal(parse_text(VALID, &f, error, sizeof error), PBSA_TUNING_OK);
    assert_string_equal(error, "");
    assert_int_equal(f.schema, 1);
    assert_string_equal(f.platform, "NVIDIA CUDA");
    assert_string_equal(f.device, "NVIDIA H100 80GB HBM3");
    assert_string_equal(f.driver, "550.54.15");
    assert_string_equal(f.generator, "pbsa-tune 0.1.0 --quick");
    assert_int_equal(f.count, 4);

    const pbsa_tuning_entry *e = &f.entries[0];
    assert_int_equal(e->key.kind, PBSA_KERNEL_DENSE);
    assert_int_equal(e->key.dtype, PBSA_DTYPE_BF16);
    assert_int_equal(e->key.head_dim, 128);
    assert_int_equal(e->key.block, 0);
    assert_int_equal(e->key.causal, 1);
    pbsa_flash_config want = {64, 64, 8, 16, 16, 16, 16, 8};
    assert_true(pbsa_flash_config_equal(&e->config.flash, &want));
    assert_int_equal(e->config.flash.unroll_pv, 8);
    assert_true(e->ms == 21.5 && e->default_ms == 22.9375);
    assert_int_equal(e->seq, 8192);
    assert_int_equal(e->heads, 32);
    assert_int_equal(e->kv_heads, 8);
    assert_int_equal(e->line, 9);

    e = &f.entries[1]; /* unrolling absent: full; metadata absent */
    assert_int_equal(e->key.kind, PBSA_KERNEL_SPARSE);
    assert_int_equal(e->key.block, 128);
    assert_int_equal(e->config.flash.unroll_qk, 0);
    assert_int_equal(e->config.flash.unroll_pv, 0);
    assert_true(e->ms < 0.0 && e->default_ms < 0.0);
    assert_int_equal(e->seq, 0);
    assert_int_equal(e->line, 11);

    e = &f.entries[2]; /* names in any order */
    assert_int_equal(e->key.kind, PBSA_KERNEL_SCORES);
    assert_int_equal(e->key.dtype, PBSA_DTYPE_F16);
    assert_int_equal(e->key.block, 64);
    assert_int_equal(e->config.flash.kchunk, 8);

    e = &f.entries[3]; /* a tensor-core kernel */
    assert_int_equal(e->key.kind, PBSA_KERNEL_SPARSE_MMA);
    assert_int_equal(e->key.head_dim, 96);
    assert_int_equal(e->key.block, 128);
    assert_int_equal(e->key.causal, 0);
    pbsa_mma_config mma = {4, 2, 64, 1};
    assert_true(pbsa_mma_config_equal(&e->config.mma, &mma));
    assert_int_equal(e->config.mma.groups, 2);
    assert_true(e->ms == 3.25);
    assert_int_equal(e->line, 13);

    pbsa_tuning_key key = {PBSA_KERNEL_SPARSE, PBSA_DTYPE_BF16, 128, 128, 1};
    assert_ptr_equal(pbsa_tuning_file_find(&f, &key), &f.entries[1]);
    key.causal = 0;
    assert_null(pbsa_tuning_file_find(&f, &key));
    pbsa_tuning_file_free(&f);
    assert_null(f.entries);
}

/* CRLF line ends, a byte order mark, no final newline; a later entry of the same key wins. */
static void test_line_ends_and_replacement(void **state)
{
    (void)state;
    const char text[] = "\xef\xbb\xbfpbsattn-tuning 1\r\nplatform P\r\ndevice D\r\n"
                        "entry kernel=dense dtype=f32 head_dim=64 causal=0 block_m=32 block_n=32 "
                        "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\r\n"
                        "entry kernel=dense dtype=f32 head_dim=64 causal=0 block_m=16 block_n=16 "
                        "wg_rows=4 wg_cols=4 kchunk=16 vchunk=16";
    pbsa_tuning_file f;
    char error[256];
    assert_int_equal(parse_text(text, &f, error, sizeof error), PBSA_TUNING_OK);
    assert_int_equal(f.count, 1);
    assert_int_equal(f.entries[0].config.flash.block_m, 16);
    assert_int_equal(f.entries[0].line, 5);
    pbsa_tuning_file_free(&f);
}

#define ENTRY_TILES "block_m=32 block_n=32 wg_rows=8 wg_cols=8 kchunk=16 vchunk=16"
#define HEADER "pbsattn-tuning 1\nplatform P\ndevice D\n"
#define DENSE "entry kernel=dense dtype=f32 head_dim=64 causal=1 "
#define MMA_TILES "warps=4 groups=1 keys=32 stages=2"
#define MMA "entry kernel=dense_mma dtype=bf16 head_dim=128 causal=1 "

static void test_corrupt(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *expect; /* a part of the message */
    } cases[] = {
        {"", "empty"},
        {"# only a comment\n\n", "empty"},
        {"hello world\n", "not a pbsattn tuning file"},
        {"pbsattn-tuning\n", "not a pbsattn tuning file"},
        {"pbsattn-tuning one\n", "not a pbsattn tuning file"},
        {"pbsattn-tuning -1\n", "not a pbsattn tuning file"},
        {"platform P\npbsattn-tuning 1\n", "not a pbsattn tuning file"},
        {"pbsattn-tuning 1\ndevice D\n", "no 'platform'"},
        {"pbsattn-tuning 1\nplatform P\n", "no 'device'"},
        {HEADER "device E\n", "given twice"},
        {"pbsattn-tuning 1\nplatform \n", "without a value"},
        {HEADER "colour blue\n", "unknown statement"},
        {HEADER "entry\n", "without 'kernel'"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 " ENTRY_TILES "\n", "without 'causal'"},
        {HEADER DENSE "block_m=32 block_n=32 wg_rows=8 wg_cols=8 kchunk=16\n", "without 'vchunk'"},
        {HEADER DENSE ENTRY_TILES " colour=blue\n", "unknown name"},
        {HEADER DENSE ENTRY_TILES " block_m=64\n", "given twice"},
        {HEADER DENSE ENTRY_TILES " causal=1\n", "given twice"},
        {HEADER DENSE ENTRY_TILES " ms\n", "not name=value"},
        {HEADER DENSE ENTRY_TILES " =5\n", "not name=value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=abc block_n=32 "
                "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=-32 block_n=32 "
                "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=0 block_n=32 "
                "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=99999999999 "
                "block_n=32 wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=5000 block_n=32 "
                "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block_m=3=2 block_n=32 "
                "wg_rows=8 wg_cols=8 kchunk=16 vchunk=16\n",
         "bad value"},
        {HEADER DENSE ENTRY_TILES " ms=1.2.3\n", "bad value"},
        {HEADER DENSE ENTRY_TILES " ms=.5\n", "bad value"},
        {HEADER DENSE ENTRY_TILES " ms=-1\n", "bad value"},
        {HEADER DENSE ENTRY_TILES " seq=1e3\n", "bad value"},
        {HEADER "entry kernel=flash dtype=f32 head_dim=64 causal=1 " ENTRY_TILES "\n", "bad value"},
        {HEADER "entry kernel=dense dtype=f64 head_dim=64 causal=1 " ENTRY_TILES "\n", "bad value"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=100 causal=1 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=2 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=dense dtype=f32 head_dim=64 causal=1 block=128 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=sparse dtype=f32 head_dim=64 causal=1 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=sparse dtype=f32 head_dim=64 causal=1 block=48 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=scores dtype=f32 head_dim=64 causal=1 block=64 " ENTRY_TILES "\n",
         "no such kernel variant"},
        {HEADER MMA "warps=4 groups=1 keys=32\n", "without 'stages'"},
        {HEADER MMA "warps=4 keys=32 stages=2\n", "without 'groups'"}, /* the old three */
        {HEADER MMA MMA_TILES " block_m=32\n", "'block_m' is not a parameter of kernel dense_mma"},
        {HEADER DENSE ENTRY_TILES " warps=4\n", "'warps' is not a parameter of kernel dense"},
        {HEADER DENSE ENTRY_TILES " groups=1\n", "'groups' is not a parameter of kernel dense"},
        {HEADER MMA "warps=0 groups=1 keys=32 stages=2\n", "bad value"},
        {HEADER MMA "warps=4 groups=0 keys=32 stages=2\n", "bad value"},
        {HEADER MMA "warps=4 groups=-1 keys=32 stages=2\n", "bad value"},
        {HEADER MMA "warps=4 groups=1 keys=32 stages=5000\n", "bad value"},
        {HEADER MMA MMA_TILES " stages=1\n", "given twice"},
        {HEADER MMA MMA_TILES " groups=2\n", "given twice"},
        {HEADER "entry kernel=dense_mma dtype=f32 head_dim=128 causal=1 " MMA_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=dense_mma dtype=f16 head_dim=256 causal=1 " MMA_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=dense_mma dtype=f16 head_dim=64 block=64 causal=1 " MMA_TILES "\n",
         "no such kernel variant"},
        {HEADER "entry kernel=sparse_mma dtype=f16 head_dim=64 block=32 causal=1 " MMA_TILES "\n",
         "no such kernel variant"},
        {HEADER "device\x01 D\n", "control character"},
        {HEADER "platform \x7f\n", "control character"},
        {HEADER "\rdevice D\n", "control character"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pbsa_tuning_file f;
        char error[256];
        pbsa_tuning_result r = parse_text(cases[i].text, &f, error, sizeof error);
        if (r != PBSA_TUNING_CORRUPT || !strstr(error, cases[i].expect))
            fail_msg("case %zu: result %d, message '%s', expected '%s'", i, (int)r, error,
                     cases[i].expect);
        assert_int_equal(f.count, 0);
        assert_null(f.entries);
        pbsa_tuning_file_free(&f);
    }
}

static void test_corrupt_sizes(void **state)
{
    (void)state;
    pbsa_tuning_file f;
    char error[256];
    /* A NUL byte inside the buffer. */
    static const char with_nul[] = "pbsattn-tuning 1\nplatform P\0\ndevice D\n";
    assert_int_equal(pbsa_tuning_parse(with_nul, sizeof with_nul - 1, &f, error, sizeof error),
                     PBSA_TUNING_CORRUPT);
    assert_non_null(strstr(error, "line 2: control character 0x00"));
    /* A line over 4 KiB. */
    size_t n = 6000;
    char *text = malloc(n + 64);
    assert_non_null(text);
    int used = snprintf(text, 64, "pbsattn-tuning 1\nplatform ");
    memset(text + used, 'x', n);
    text[used + n] = '\0';
    assert_int_equal(parse_text(text, &f, error, sizeof error), PBSA_TUNING_CORRUPT);
    assert_non_null(strstr(error, "longer than"));
    /* A header text that does not fit. */
    memset(text + used + 300, '\0', 1);
    assert_int_equal(parse_text(text, &f, error, sizeof error), PBSA_TUNING_CORRUPT);
    assert_non_null(strstr(error, "longer than 255 bytes"));
    free(text);
    /* More than 1 MiB, rejected unread. */
    assert_int_equal(pbsa_tuning_parse("pbsattn-tuning 1\n", (size_t)PBSA_TUNING_MAX_BYTES + 1, &f,
                                       error, sizeof error),
                     PBSA_TUNING_CORRUPT);
    assert_non_null(strstr(error, "larger than"));
    /* Too many entries (distinct keys are few, so repeat one key: it replaces, not adds). */
    size_t capacity = 5000 * 160;
    text = malloc(capacity);
    assert_non_null(text);
    used = snprintf(text, capacity, HEADER);
    assert_int_equal(parse_text(text, &f, error, 0), PBSA_TUNING_OK); /* no room for a message */
    pbsa_tuning_file_free(&f);
    for (int i = 0; i < 5000; i++)
        used += snprintf(text + used, capacity - (size_t)used, DENSE ENTRY_TILES "\n");
    assert_int_equal(parse_text(text, &f, error, sizeof error), PBSA_TUNING_OK);
    assert_int_equal(f.count, 1);
    pbsa_tuning_file_free(&f);
    free(text);
}

static void test_versions(void **state)
{
    (void)state;
    pbsa_tuning_file f;
    char error[256];
    assert_int_equal(
        parse_text("pbsattn-tuning 0\nplatform P\ndevice D\n", &f, error, sizeof error),
        PBSA_TUNING_OUTDATED);
    assert_non_null(strstr(error, "older"));
    assert_int_equal(f.schema, 0);
    pbsa_tuning_file_free(&f);
    /* A newer file may hold statements this library does not know: they are never read. */
    assert_int_equal(parse_text("pbsattn-tuning 2\nplatform P\ndevice D\nsort bitonic\n", &f, error,
                                sizeof error),
                     PBSA_TUNING_NEWER);
    assert_non_null(strstr(error, "newer"));
    assert_int_equal(f.count, 0);
    pbsa_tuning_file_free(&f);
}

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"  NVIDIA  H100\t80GB   HBM3 \n", "NVIDIA H100 80GB HBM3"},
        {"gfx90a:sramecc+:xnack-", "gfx90a"},
        {"AMD Instinct MI250X gfx90a:sramecc+:xnack- ", "AMD Instinct MI250X gfx90a"},
        {"gfx1100", "gfx1100"},
        {"a:b", "a:b"}, /* not a feature suffix */
        {"x:+", "x:+"}, /* nor this */
        {":xnack-", ""},
        {"", ""},
        {"\x01\x02", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        pbsa_tuning_normalise_name(cases[i].in, out, sizeof out);
        assert_string_equal(out, cases[i].out);
    }
    char tiny[5];
    pbsa_tuning_normalise_name("NVIDIA H100", tiny, sizeof tiny);
    assert_string_equal(tiny, "NVID");

    pbsa_tuning_file f = {.schema = 1};
    snprintf(f.platform, sizeof f.platform, "AMD Accelerated Parallel Processing");
    snprintf(f.device, sizeof f.device, "gfx90a:sramecc+:xnack-");
    assert_true(pbsa_tuning_same_device(&f, "AMD  Accelerated Parallel Processing", "GFX90A"));
    assert_true(pbsa_tuning_same_device(&f, "amd accelerated parallel processing",
                                        "gfx90a:sramecc-:xnack+"));
    assert_false(pbsa_tuning_same_device(&f, "AMD Accelerated Parallel Processing", "gfx908"));
    assert_false(pbsa_tuning_same_device(&f, "rusticl", "gfx90a"));

    char name[160];
    pbsa_tuning_file_name("NVIDIA H100 80GB HBM3", name, sizeof name);
    assert_string_equal(name, "NVIDIA_H100_80GB_HBM3.txt");
    pbsa_tuning_file_name("pthread-skylake-avx512-AMD EPYC", name, sizeof name);
    assert_string_equal(name, "pthread-skylake-avx512-AMD_EPYC.txt");
    pbsa_tuning_file_name("../../etc/passwd", name, sizeof name);
    assert_null(strchr(name, '/'));
    assert_true(name[0] != '.');
    pbsa_tuning_file_name("", name, sizeof name);
    assert_string_equal(name, "device.txt");
}

/* The parser reads back what the writer wrote. */
static void test_round_trip(void **state)
{
    (void)state;
    pbsa_tuning_file f;
    char error[256];
    assert_int_equal(parse_text(VALID, &f, error, sizeof error), PBSA_TUNING_OK);
    /* Header texts with line breaks and control characters stay on their line. */
    snprintf(f.generator, sizeof f.generator, "pbsa-tune --output 'a\nb'\t--x\x01");
    char *text = pbsa_tuning_format(&f);
    assert_non_null(text);
    pbsa_tuning_file g;
    assert_int_equal(parse_text(text, &g, error, sizeof error), PBSA_TUNING_OK);
    assert_string_equal(g.platform, f.platform);
    assert_string_equal(g.device, f.device);
    assert_string_equal(g.driver, f.driver);
    assert_string_equal(g.date, f.date);
    assert_string_equal(g.generator, "pbsa-tune --output 'a b' --x");
    assert_int_equal(g.count, f.count);
    for (size_t i = 0; i < f.count; i++) {
        assert_true(pbsa_tuning_key_equal(&g.entries[i].key, &f.entries[i].key));
        assert_true(pbsa_tuning_config_equal(f.entries[i].key.kind, &g.entries[i].config,
                                             &f.entries[i].config));
        assert_true(g.entries[i].ms == f.entries[i].ms);
        assert_true(g.entries[i].default_ms == f.entries[i].default_ms);
        assert_int_equal(g.entries[i].seq, f.entries[i].seq);
    }
    free(text);
    pbsa_tuning_file_free(&g);
    pbsa_tuning_file_free(&f);
}

/* Every file of tuning/ is accepted as it is committed. */
static void test_builtin_files(void **state)
{
    (void)state;
    assert_true(pbsa_builtin_tuning_count > 0);
    for (size_t i = 0; i < pbsa_builtin_tuning_count; i++) {
        pbsa_tuning_file f;
        char error[256];
        const char *text = pbsa_builtin_tuning[i].text;
        pbsa_tuning_result r = parse_text(text, &f, error, sizeof error);
        if (r != PBSA_TUNING_OK)
            fail_msg("tuning/%s: %s", pbsa_builtin_tuning[i].name, error);
        assert_true(f.count > 0);
        assert_true(f.platform[0] && f.device[0]);
        pbsa_tuning_file_free(&f);
    }
}

/* The tuner's neighbourhoods: usable, distinct, without the start, fitting the sparse block; for
 * the tensor-core kinds, the rest of their space that fits. */
static void test_neighbours(void **state)
{
    (void)state;
    pbsa_device_info gpu = {.is_gpu = 1, .max_work_group_size = 1024, .local_mem_bytes = 49152};
    pbsa_device_info small = gpu; /* 32 KiB: 64 keys of D128 (35840 bytes) do not fit */
    small.local_mem_bytes = 32768;
    pbsa_device_info cpu = {.is_gpu = 0, .max_work_group_size = 4096, .local_mem_bytes = 1 << 20};
    const pbsa_device_info *devices[3] = {&gpu, &small, &cpu};
    static const int head_dims[] = {64, 96, 128, 256};
    static const pbsa_kernel_kind kinds[] = {PBSA_KERNEL_DENSE, PBSA_KERNEL_SPARSE,
                                             PBSA_KERNEL_DENSE_MMA, PBSA_KERNEL_SPARSE_MMA};
    for (int dv = 0; dv < 3; dv++)
        for (int h = 0; h < 4; h++)
            for (int k = 0; k < 4; k++) {
                bool sparse = kinds[k] == PBSA_KERNEL_SPARSE || kinds[k] == PBSA_KERNEL_SPARSE_MMA;
                pbsa_tuning_key key = {kinds[k], PBSA_DTYPE_BF16, head_dims[h], sparse ? 64 : 0, 1};
                if (!pbsa_tuning_key_valid(&key) ||
                    (devices[dv] == &small && !pbsa_kernel_kind_is_mma(key.kind)))
                    continue; /* the tensor-core kinds at head dim 256; 32 KiB: theirs only */
                pbsa_kernel_config start = pbsa_tuning_heuristic(&key, devices[dv]);
                assert_true(pbsa_tuning_config_usable(&start, &key, devices[dv]));
                pbsa_kernel_config out[64];
                size_t n = pbsa_tuning_neighbours(&start, &key, devices[dv], out, 64);
                assert_true(n > 0);
                for (size_t i = 0; i < n; i++) {
                    assert_true(pbsa_tuning_config_usable(&out[i], &key, devices[dv]));
                    assert_false(pbsa_tuning_config_equal(key.kind, &out[i], &start));
                    for (size_t j = 0; j < i; j++)
                        assert_false(pbsa_tuning_config_equal(key.kind, &out[i], &out[j]));
                }
                assert_int_equal(pbsa_tuning_neighbours(&start, &key, devices[dv], out, 2),
                                 n < 2 ? n : 2);
            }
    /* The whole tensor-core space: 3 x 2 x 2 x 2 = 24 points. 48 KiB at D128 holds them all
     * (dense: the 23 besides the start); 32 KiB only the 12 of 32 keys. A 64-row block takes 16 x
     * warps x groups of 16, 32 or 64 rows: (2, 1), (4, 1) and (2, 2), 12 points, 6 of them of 32
     * keys. 128 work-items at most leave out the 8 of 8 warps. */
    pbsa_tuning_key dense = {PBSA_KERNEL_DENSE_MMA, PBSA_DTYPE_F16, 128, 0, 1};
    pbsa_tuning_key sparse = {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_F16, 128, 64, 1};
    pbsa_kernel_config start = pbsa_tuning_heuristic(&dense, &gpu), out[64];
    assert_int_equal(pbsa_tuning_neighbours(&start, &dense, &gpu, out, 64), 23);
    assert_int_equal(pbsa_tuning_neighbours(&start, &dense, &cpu, out, 64), 23);
    start = pbsa_tuning_heuristic(&dense, &small);
    assert_int_equal(start.mma.keys, 32);
    size_t n = pbsa_tuning_neighbours(&start, &dense, &small, out, 64);
    assert_int_equal(n, 11);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(out[i].mma.keys, 32);
    dense.head_dim = 64; /* 64 keys of D64: 19456 bytes, which 32 KiB holds */
    start = pbsa_tuning_heuristic(&dense, &small);
    assert_int_equal(pbsa_tuning_neighbours(&start, &dense, &small, out, 64), 23);
    pbsa_device_info narrow = gpu;
    narrow.max_work_group_size = 128;
    assert_int_equal(pbsa_tuning_neighbours(&start, &dense, &narrow, out, 64), 15);
    start = pbsa_tuning_heuristic(&sparse, &gpu);
    n = pbsa_tuning_neighbours(&start, &sparse, &gpu, out, 64);
    assert_int_equal(n, 11);
    for (size_t i = 0; i < n; i++)
        assert_true(out[i].mma.warps * out[i].mma.groups <= 4);
    start = pbsa_tuning_heuristic(&sparse, &small);
    n = pbsa_tuning_neighbours(&start, &sparse, &small, out, 64);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < n; i++)
        assert_true(out[i].mma.warps * out[i].mma.groups <= 4 && out[i].mma.keys == 32);

    char text[8];
    pbsa_kernel_config c = {.flash = {64, 64, 8, 16, 16, 16, 0, 0}};
    assert_false(pbsa_tuning_format_config(PBSA_KERNEL_DENSE, &c, text, sizeof text));
    assert_int_equal(strlen(text) < sizeof text, 1);
    char long_text[256];
    assert_true(pbsa_tuning_format_config(PBSA_KERNEL_DENSE, &c, long_text, sizeof long_text));
    assert_string_equal(long_text, "block_m=64 block_n=64 wg_rows=8 wg_cols=16 kchunk=16 "
                                   "vchunk=16 unroll_qk=16 unroll_pv=16");
    c.mma = (pbsa_mma_config){8, 2, 64, 1};
    assert_true(pbsa_tuning_format_config(PBSA_KERNEL_SPARSE_MMA, &c, long_text, sizeof long_text));
    assert_string_equal(long_text, "warps=8 groups=2 keys=64 stages=1");
}

/* The portable tiles' heuristic at every head dim: a valid configuration within 48 KiB of local
 * memory, 80 and 112 (which 8 and 16 columns of work-items do not divide in groups of 4) on 4
 * columns, 192 as 256 with the V chunk halved; the CPU list too. */
static void test_flash_head_dims(void **state)
{
    (void)state;
    const pbsa_device_info gpu = {.is_gpu = 1, .max_work_group_size = 1024,
                                  .local_mem_bytes = 49152};
    const pbsa_device_info cpu = {.max_work_group_size = 4096, .local_mem_bytes = 4 << 20};
    static const struct {
        int head_dim;
        pbsa_flash_config gpu, cpu;
    } cases[] = {
        {64, {64, 64, 8, 16, 16, 16, 0, 0}, {32, 32, 8, 8, 16, 16, 0, 0}},
        {80, {64, 64, 16, 4, 16, 16, 0, 0}, {16, 16, 4, 4, 16, 16, 0, 0}},
        {96, {64, 32, 16, 8, 16, 16, 0, 0}, {32, 32, 8, 8, 16, 16, 0, 0}},
        {112, {64, 64, 16, 4, 16, 16, 0, 0}, {16, 16, 4, 4, 16, 16, 0, 0}},
        {128, {64, 64, 8, 16, 16, 16, 0, 0}, {32, 32, 8, 8, 16, 16, 0, 0}},
        {192, {64, 64, 16, 16, 16, 8, 0, 0}, {32, 32, 8, 8, 16, 16, 0, 0}},
        {256, {64, 64, 16, 16, 16, 8, 0, 0}, {32, 32, 8, 8, 16, 16, 0, 0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int d = cases[i].head_dim;
        pbsa_flash_config h = pbsa_flash_config_heuristic(&gpu, d, 0);
        if (!pbsa_flash_config_equal(&h, &cases[i].gpu) || !pbsa_flash_config_valid(&h, d, &gpu))
            fail_msg("head dim %d: GPU heuristic %d,%d,%d,%d,%d,%d", d, h.block_m, h.block_n,
                     h.wg_rows, h.wg_cols, h.kchunk, h.vchunk);
        h = pbsa_flash_config_heuristic(&cpu, d, 0);
        if (!pbsa_flash_config_equal(&h, &cases[i].cpu) || !pbsa_flash_config_valid(&h, d, &cpu))
            fail_msg("head dim %d: CPU heuristic %d,%d,%d,%d,%d,%d", d, h.block_m, h.block_n,
                     h.wg_rows, h.wg_cols, h.kchunk, h.vchunk);
        /* Sparse blocks of 16 take the smallest tiles. */
        h = pbsa_flash_config_heuristic(&gpu, d, 16);
        assert_true(pbsa_flash_config_valid(&h, d, &gpu) && pbsa_flash_config_fits(&h, 16));
    }
    assert_int_equal(pbsa_flash_local_bytes(&cases[5].gpu, 192), 44048);
    assert_int_equal(pbsa_flash_local_bytes(&cases[3].gpu, 112), 37904);
}

/* What cl/mma_tile.cl accepts: its values, head dims, local memory (the NVIDIA 48 KiB, and 32
 * KiB where 64 keys of D128 do not fit), the block it must divide; the heuristic default; the
 * build options. */
static void test_mma_rules(void **state)
{
    (void)state;
    pbsa_device_info nvidia = {.is_gpu = 1, .max_work_group_size = 1024, .local_mem_bytes = 49152};
    pbsa_device_info small = nvidia;
    small.local_mem_bytes = 32768;
    const pbsa_mma_config base = {4, 1, 64, 2}, half = {4, 1, 32, 2};
    /* Per key: K and V rows of head_dim + 8 16-bit elements, and 16 bytes of entries. */
    assert_int_equal(pbsa_mma_local_bytes(&base, 128), 35840);
    assert_int_equal(pbsa_mma_local_bytes(&half, 128), 17920);
    assert_int_equal(pbsa_mma_local_bytes(&base, 64), 64 * (72 * 4 + 16));
    const pbsa_mma_config other = {8, 2, 64, 1}; /* neither groups nor stages change it */
    assert_int_equal(pbsa_mma_local_bytes(&other, 128), 35840);
    assert_true(pbsa_mma_config_valid(&base, 128, &nvidia));
    assert_true(pbsa_mma_config_valid(&base, 64, &nvidia));
    assert_false(pbsa_mma_config_valid(&base, 256, &nvidia));
    assert_false(pbsa_mma_config_valid(&base, 72, &nvidia));
    /* Head dims 80 and 112 (an odd count of 16-dim steps) and 192: 64 keys of 192 need 52224
     * bytes, 32 fit; two row groups of 192 would spill their fragments. */
    assert_true(pbsa_mma_config_valid(&base, 80, &nvidia));
    assert_true(pbsa_mma_config_valid(&base, 112, &nvidia));
    assert_false(pbsa_mma_config_valid(&base, 192, &nvidia));
    assert_true(pbsa_mma_config_valid(&half, 192, &nvidia));
    const pbsa_mma_config grouped_192 = {4, 2, 32, 2};
    assert_false(pbsa_mma_config_valid(&grouped_192, 192, &nvidia));
    pbsa_mma_config h192 = pbsa_mma_config_heuristic(&nvidia, 192, 0);
    assert_true(pbsa_mma_config_equal(&h192, &half));
    /* Every point of the space is valid with 48 KiB at D128 ... */
    static const int warps[] = {2, 4, 8}, groups[] = {1, 2}, keys[] = {32, 64}, stages[] = {1, 2};
    int points = 0;
    for (int w = 0; w < 3; w++)
        for (int g = 0; g < 2; g++)
            for (int k = 0; k < 2; k++)
                for (int s = 0; s < 2; s++) {
                    pbsa_mma_config c = {warps[w], groups[g], keys[k], stages[s]};
                    assert_true(pbsa_mma_config_valid(&c, 128, &nvidia));
                    points++;
                }
    assert_int_equal(points, 24);
    /* ... and nothing else. */
    static const pbsa_mma_config outside[] = {
        {1, 1, 32, 2},  {16, 1, 32, 2}, {6, 1, 32, 2}, {4, 0, 32, 2},  {4, 3, 32, 2},
        {4, 4, 32, 2},  {4, -1, 32, 2}, {4, 1, 16, 2}, {4, 1, 128, 2}, {4, 1, 48, 2},
        {4, 1, 32, 0},  {4, 1, 32, 3},  {0, 0, 0, 0},  {-4, 1, 32, 2},
    };
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
        if (pbsa_mma_config_valid(&outside[i], 128, &nvidia))
            fail_msg("outside[%zu] accepted", i);
    /* 32 KiB: 64 keys fit at D64 and D96 (27648 bytes), not at D128, whatever the groups and
     * stages; 32 keys do. */
    assert_true(pbsa_mma_config_valid(&base, 64, &small));
    assert_true(pbsa_mma_config_valid(&base, 96, &small));
    assert_false(pbsa_mma_config_valid(&base, 128, &small));
    assert_false(pbsa_mma_config_valid(&other, 128, &small));
    const pbsa_mma_config lean = {2, 1, 64, 1};
    assert_false(pbsa_mma_config_valid(&lean, 128, &small));
    assert_true(pbsa_mma_config_valid(&half, 128, &small));
    /* 32 x warps work-items. */
    pbsa_device_info small_groups = nvidia;
    small_groups.max_work_group_size = 128;
    const pbsa_mma_config eight = {8, 1, 32, 2};
    assert_true(pbsa_mma_config_valid(&eight, 128, &nvidia));
    assert_false(pbsa_mma_config_valid(&eight, 128, &small_groups));
    assert_true(pbsa_mma_config_valid(&half, 128, &small_groups));
    const pbsa_mma_config grouped = {4, 2, 32, 2}; /* groups add rows, not work-items */
    assert_true(pbsa_mma_config_valid(&grouped, 128, &small_groups));

    /* Blocks: the 16 x warps x groups query rows and the key tile must divide them (0: dense,
     * no limit). */
    assert_true(pbsa_mma_config_fits(&eight, 0));
    assert_true(pbsa_mma_config_fits(&eight, 128));
    assert_false(pbsa_mma_config_fits(&eight, 64));
    assert_true(pbsa_mma_config_fits(&grouped, 128));
    assert_false(pbsa_mma_config_fits(&grouped, 64));
    const pbsa_mma_config two_by_two = {2, 2, 32, 1};
    assert_true(pbsa_mma_config_fits(&two_by_two, 64));
    assert_false(pbsa_mma_config_fits(&two_by_two, 32));
    assert_true(pbsa_mma_config_fits(&base, 64));
    assert_false(pbsa_mma_config_fits(&half, 32));
    const pbsa_mma_config two = {2, 1, 32, 2}, two_wide = {2, 1, 64, 2};
    assert_true(pbsa_mma_config_fits(&two, 32));
    assert_false(pbsa_mma_config_fits(&two_wide, 32)); /* 32 rows, but 64 keys */
    assert_true(pbsa_mma_config_fits(&two_wide, 0));
    pbsa_tuning_key key = {PBSA_KERNEL_SPARSE_MMA, PBSA_DTYPE_BF16, 128, 64, 1};
    pbsa_kernel_config c = {.mma = grouped};
    assert_false(pbsa_tuning_config_usable(&c, &key, &nvidia));
    key.block = 128;
    assert_true(pbsa_tuning_config_usable(&c, &key, &nvidia));
    c.mma = base;
    assert_true(pbsa_tuning_config_usable(&c, &key, &nvidia));
    assert_false(pbsa_tuning_config_usable(&c, &key, &small)); /* local memory */
    /* A file may hold values the kernel does not take: they parse, and are not usable. */
    static const char *const unusable[] = {"warps=16 groups=1 keys=32 stages=2",
                                           "warps=4 groups=4 keys=32 stages=2",
                                           "warps=4 groups=1 keys=32 stages=3"};
    for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
        pbsa_tuning_file f;
        char error[256], text[256];
        snprintf(text, sizeof text,
                 HEADER "entry kernel=dense_mma dtype=bf16 head_dim=64 causal=1 %s\n", unusable[i]);
        assert_int_equal(parse_text(text, &f, error, sizeof error), PBSA_TUNING_OK);
        assert_false(pbsa_tuning_config_usable(&f.entries[0].config, &f.entries[0].key, &nvidia));
        pbsa_tuning_file_free(&f);
    }

    /* The heuristic: 4 warps, 2 groups, 64 keys, 2 stages; 1 group where 128 rows do not fit
     * the block, 32 keys where 64 do not fit the local memory; never one that does not fit the
     * block. */
    const pbsa_mma_config two_groups = {4, 2, 64, 2};
    pbsa_mma_config h = pbsa_mma_config_heuristic(&nvidia, 128, 64);
    assert_true(pbsa_mma_config_equal(&h, &base));
    h = pbsa_mma_config_heuristic(&nvidia, 128, 0);
    assert_true(pbsa_mma_config_equal(&h, &two_groups));
    h = pbsa_mma_config_heuristic(&nvidia, 128, 128);
    assert_true(pbsa_mma_config_equal(&h, &two_groups));
    h = pbsa_mma_config_heuristic(&small, 128, 128);
    assert_true(pbsa_mma_config_equal(&h, &half));
    assert_true(pbsa_mma_config_valid(&h, 128, &small));
    h = pbsa_mma_config_heuristic(&small, 96, 128);
    assert_true(pbsa_mma_config_equal(&h, &two_groups));
    h = pbsa_mma_config_heuristic(&nvidia, 128, 32); /* 64 rows fit no 32-row block: the caller */
    assert_true(pbsa_mma_config_equal(&h, &half));   /* checks, and takes the portable kernel */
    assert_false(pbsa_mma_config_fits(&h, 32));
    pbsa_device_info tiny = nvidia;
    tiny.local_mem_bytes = 10000; /* nothing fits: the caller must check (portable path) */
    h = pbsa_mma_config_heuristic(&tiny, 128, 0);
    assert_false(pbsa_mma_config_valid(&h, 128, &tiny));

    char options[256] = "";
    const pbsa_dtypes bf16 = {PBSA_DTYPE_BF16, PBSA_DTYPE_BF16, PBSA_DTYPE_BF16};
    assert_true(pbsa_mma_options(options, sizeof options, &bf16, 96, 1, &other));
    assert_non_null(
        strstr(options, "-DQ_DTYPE=bf16 -DKV_DTYPE=bf16 -DO_DTYPE=bf16 -DHEAD_DIM=96 -DCAUSAL=1"));
    assert_non_null(strstr(options, "-DMMA_WARPS=8 -DMMA_GROUPS=2 -DBN=64 -DMMA_STAGES=1"));
    options[0] = '\0';
    /* Each tensor's own dtype: q and o f32 around f16 K and V. */
    const pbsa_dtypes mixed = {PBSA_DTYPE_F32, PBSA_DTYPE_F16, PBSA_DTYPE_F32};
    assert_true(pbsa_mma_options(options, sizeof options, &mixed, 64, 0, &half));
    assert_non_null(strstr(options, "-DQ_DTYPE=f32 -DKV_DTYPE=f16 -DO_DTYPE=f32"));
    assert_non_null(strstr(options, "-DHEAD_DIM=64 -DCAUSAL=0"));
    assert_non_null(strstr(options, "-DMMA_WARPS=4 -DMMA_GROUPS=1 -DBN=32 -DMMA_STAGES=2"));
}

/* What the wgmma tiles accept: whole warpgroups, 32 or 64 keys, head dim 128, and local memory
 * for their tile, whose size the 1024-byte alignment of its swizzled layout rounds up: 32 keys
 * take 16896 bytes of rows and lists, 17408 once rounded. */
static void test_wgmma_rules(void **state)
{
    (void)state;
    pbsa_device_info hopper = {.is_gpu = 1, .max_work_group_size = 1024, .local_mem_bytes = 49152};
    const pbsa_mma_config w2 = {8, 1, 64, 2}, w2_32 = {8, 1, 32, 2}, w3 = {8, 1, 64, 3};
    assert_true(pbsa_wgmma_config_valid(&w2, 128, &hopper));
    assert_false(pbsa_wgmma_config_valid(&w2, 64, &hopper));
    assert_false(pbsa_wgmma_config_valid(&w3, 128, &hopper)); /* two buffers: 67 KB */
    hopper.local_mem_bytes = 17408;
    assert_true(pbsa_wgmma_config_valid(&w2_32, 128, &hopper));
    hopper.local_mem_bytes = 17407;
    assert_false(pbsa_wgmma_config_valid(&w2_32, 128, &hopper));
    static const pbsa_mma_config outside[] = {{2, 1, 64, 2}, {8, 2, 64, 2}, {8, 1, 16, 2},
                                              {8, 1, 64, 0}, {8, 1, 64, 7}};
    hopper.local_mem_bytes = 49152;
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++)
        if (pbsa_wgmma_config_valid(&outside[i], 128, &hopper))
            fail_msg("outside[%zu] accepted", i);
}

/* The values of PBSA_FLASH_CONFIG and PBSA_MMA_CONFIG. */
static void test_environment_values(void **state)
{
    (void)state;
    pbsa_kernel_config c;
    assert_true(pbsa_tuning_parse_values(PBSA_KERNEL_DENSE, "64,32,8,8,16,8", &c));
    pbsa_flash_config six = {64, 32, 8, 8, 16, 8, 0, 0};
    assert_int_equal(memcmp(&c.flash, &six, sizeof six), 0);
    assert_true(pbsa_tuning_parse_values(PBSA_KERNEL_SCORES, "64,32,8,8,16,8,4,2", &c));
    assert_int_equal(c.flash.unroll_qk, 4);
    assert_int_equal(c.flash.unroll_pv, 2);
    assert_true(pbsa_tuning_parse_values(PBSA_KERNEL_SPARSE_MMA, "8,2,64,1", &c));
    pbsa_mma_config four = {8, 2, 64, 1};
    assert_true(pbsa_mma_config_equal(&c.mma, &four));
    assert_true(pbsa_tuning_parse_values(PBSA_KERNEL_DENSE_MMA, "2,1,32,2", &c));
    assert_int_equal(c.mma.warps, 2);
    assert_int_equal(c.mma.groups, 1);
    assert_int_equal(c.mma.keys, 32);
    assert_int_equal(c.mma.stages, 2);
    static const struct {
        pbsa_kernel_kind kind;
        const char *text;
    } bad[] = {
        {PBSA_KERNEL_DENSE, ""},
        {PBSA_KERNEL_DENSE, "64,32,8,8,16"},
        {PBSA_KERNEL_DENSE, "64,32,8,8,16,8,4"},
        {PBSA_KERNEL_DENSE, "64,32,8,8,16,8,4,2,1"},
        {PBSA_KERNEL_DENSE, "64,32,8,8,16,8 "},
        {PBSA_KERNEL_DENSE_MMA, ""},
        {PBSA_KERNEL_DENSE_MMA, "4"},
        {PBSA_KERNEL_DENSE_MMA, "4,64"},
        {PBSA_KERNEL_DENSE_MMA, "4,64,2"}, /* the old form: warps, keys, stages */
        {PBSA_KERNEL_DENSE_MMA, "4,1,64,2,1"},
        {PBSA_KERNEL_DENSE_MMA, "4,1,64,2,"},
        {PBSA_KERNEL_DENSE_MMA, ",4,1,64,2"},
        {PBSA_KERNEL_DENSE_MMA, "4;1;64;2"},
        {PBSA_KERNEL_DENSE_MMA, "4,x,64,2"},
        {PBSA_KERNEL_DENSE_MMA, "4,1,99999999999,2"},
        {PBSA_KERNEL_SPARSE_MMA, "64,32,8,8,16,8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (pbsa_tuning_parse_values(bad[i].kind, bad[i].text, &c))
            fail_msg("'%s' accepted for %s", bad[i].text, pbsa_kernel_kind_name(bad[i].kind));
    assert_string_equal(pbsa_tuning_space_of(PBSA_KERNEL_SPARSE)->environment,
                        "PBSA_FLASH_CONFIG");
    assert_string_equal(pbsa_tuning_space_of(PBSA_KERNEL_DENSE_MMA)->environment,
                        "PBSA_MMA_CONFIG");
}

/* Random damage to a valid file: each result is one of the enum's, a corrupt file has no
 * entries, and every entry of an accepted one has a valid key. */
static void test_damage(void **state)
{
    (void)state;
    const size_t length = sizeof VALID - 1;
    char *text = malloc(length);
    assert_non_null(text);
    uint64_t rng = 12345;
    for (int iteration = 0; iteration < 20000; iteration++) {
        memcpy(text, VALID, length);
        size_t cut = length;
        int edits = 1 + iteration % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = (size_t)(rng >> 33) % length;
            switch ((rng >> 20) % 4) {
            case 0: text[at] ^= (char)(1u << ((rng >> 8) % 8)); break;
            case 1: text[at] = "=# \n0915abcz\t"[(rng >> 8) % 13]; break;
            case 2: cut = at; break;
            default: text[at] = (char)(rng >> 40); break;
            }
        }
        pbsa_tuning_file f;
        char error[128];
        pbsa_tuning_result r = pbsa_tuning_parse(text, cut, &f, error, sizeof error);
        assert_true(r >= PBSA_TUNING_OK && r <= PBSA_TUNING_NO_MEMORY);
        if (r != PBSA_TUNING_OK)
            assert_int_equal(f.count, 0);
        for (size_t i = 0; i < f.count; i++)
            assert_true(pbsa_tuning_key_valid(&f.entries[i].key));
        pbsa_tuning_file_free(&f);
    }
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),      cmocka_unit_test(test_line_ends_and_replacement),
        cmocka_unit_test(test_corrupt),    cmocka_unit_test(test_corrupt_sizes),
        cmocka_unit_test(test_versions),   cmocka_unit_test(test_names),
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_builtin_files),
        cmocka_unit_test(test_neighbours), cmocka_unit_test(test_flash_head_dims),
        cmocka_unit_test(test_mma_rules),
        cmocka_unit_test(test_wgmma_rules),
        cmocka_unit_test(test_environment_values), cmocka_unit_test(test_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
