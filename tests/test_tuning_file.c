/* Tuning files without a device: the parser on valid, corrupt, foreign-device and outdated
 * input, the writer (round trip), device-name normalisation, the built-in files, the search
 * space's neighbourhoods, and random damage to a valid file (never a crash, never an invalid
 * entry). */
#include "tuning.h"

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
    "wg_rows=8 wg_cols=8 kchunk=8 vchunk=8 unroll_qk=0\n";

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
    assert_int_equal(f.count, 3);

    const pbsa_tuning_entry *e = &f.entries[0];
    assert_int_equal(e->key.kind, PBSA_KERNEL_DENSE);
    assert_int_equal(e->key.dtype, PBSA_DTYPE_BF16);
    assert_int_equal(e->key.head_dim, 128);
    assert_int_equal(e->key.block, 0);
    assert_int_equal(e->key.causal, 1);
    pbsa_flash_config want = {64, 64, 8, 16, 16, 16, 16, 8};
    assert_true(pbsa_flash_config_equal(&e->config, &want));
    assert_int_equal(e->config.unroll_pv, 8);
    assert_true(e->ms == 21.5 && e->default_ms == 22.9375);
    assert_int_equal(e->seq, 8192);
    assert_int_equal(e->heads, 32);
    assert_int_equal(e->kv_heads, 8);
    assert_int_equal(e->line, 9);

    e = &f.entries[1]; /* unrolling absent: full; metadata absent */
    assert_int_equal(e->key.kind, PBSA_KERNEL_SPARSE);
    assert_int_equal(e->key.block, 128);
    assert_int_equal(e->config.unroll_qk, 0);
    assert_int_equal(e->config.unroll_pv, 0);
    assert_true(e->ms < 0.0 && e->default_ms < 0.0);
    assert_int_equal(e->seq, 0);
    assert_int_equal(e->line, 11);

    e = &f.entries[2]; /* names in any order */
    assert_int_equal(e->key.kind, PBSA_KERNEL_SCORES);
    assert_int_equal(e->key.dtype, PBSA_DTYPE_F16);
    assert_int_equal(e->key.block, 64);
    assert_int_equal(e->config.kchunk, 8);

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
    assert_int_equal(f.entries[0].config.block_m, 16);
    assert_int_equal(f.entries[0].line, 5);
    pbsa_tuning_file_free(&f);
}

#define ENTRY_TILES "block_m=32 block_n=32 wg_rows=8 wg_cols=8 kchunk=16 vchunk=16"
#define HEADER "pbsattn-tuning 1\nplatform P\ndevice D\n"
#define DENSE "entry kernel=dense dtype=f32 head_dim=64 causal=1 "

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
        assert_true(pbsa_flash_config_equal(&g.entries[i].config, &f.entries[i].config));
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

/* The tuner's neighbourhoods: usable, distinct, without the start, fitting the sparse block. */
static void test_neighbours(void **state)
{
    (void)state;
    pbsa_device_info gpu = {.is_gpu = 1, .max_work_group_size = 1024, .local_mem_bytes = 49152};
    pbsa_device_info cpu = {.is_gpu = 0, .max_work_group_size = 4096, .local_mem_bytes = 1 << 20};
    const pbsa_device_info *devices[2] = {&gpu, &cpu};
    static const int head_dims[] = {64, 96, 128, 256};
    for (int dv = 0; dv < 2; dv++)
        for (int h = 0; h < 4; h++)
            for (int kind = 0; kind < 2; kind++) {
                pbsa_tuning_key key = {kind ? PBSA_KERNEL_SPARSE : PBSA_KERNEL_DENSE,
                                       PBSA_DTYPE_BF16, head_dims[h], kind ? 64 : 0, 1};
                pbsa_flash_config start = pbsa_flash_config_heuristic(
                    devices[dv], key.head_dim, pbsa_tuning_key_max_tile(&key));
                pbsa_flash_config out[64];
                size_t n = pbsa_tuning_neighbours(&start, &key, devices[dv], out, 64);
                assert_true(n > 0);
                for (size_t i = 0; i < n; i++) {
                    assert_true(pbsa_tuning_config_usable(&out[i], &key, devices[dv]));
                    assert_false(pbsa_flash_config_equal(&out[i], &start));
                    for (size_t j = 0; j < i; j++)
                        assert_false(pbsa_flash_config_equal(&out[i], &out[j]));
                }
                assert_int_equal(pbsa_tuning_neighbours(&start, &key, devices[dv], out, 2),
                                 n < 2 ? n : 2);
            }
    char text[8];
    pbsa_flash_config c = {64, 64, 8, 16, 16, 16, 0, 0};
    assert_false(pbsa_tuning_format_config(&c, text, sizeof text));
    assert_int_equal(strlen(text) < sizeof text, 1);
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
        cmocka_unit_test(test_neighbours), cmocka_unit_test(test_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
