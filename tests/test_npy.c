/* The .npy parser of the tools: valid version 1.0, 2.0 and 3.0 headers, every kind of malformed
 * file it must reject, and a save/load round trip. */
#include "npy.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* A file image: magic, version, header length, the header text padded with spaces to a multiple
 * of 64 bytes and ended by a newline, then data_bytes bytes of data (0x5a). */
typedef struct image {
    unsigned char bytes[8192];
    size_t size;
} image;

static void make_image(image *im, int major, const char *dict, size_t data_bytes)
{
    size_t prefix = major == 1 ? 10 : 12;
    size_t len = strlen(dict) + 1;
    size_t total = (prefix + len + 63) / 64 * 64;
    size_t header_len = total - prefix;
    assert_true(total + data_bytes <= sizeof im->bytes);
    memcpy(im->bytes, "\x93NUMPY", 6);
    im->bytes[6] = (unsigned char)major;
    im->bytes[7] = 0;
    for (size_t i = 0; i < prefix - 8; i++)
        im->bytes[8 + i] = (unsigned char)(header_len >> (8 * i));
    memcpy(im->bytes + prefix, dict, len - 1);
    memset(im->bytes + prefix + len - 1, ' ', header_len - len);
    im->bytes[total - 1] = '\n';
    memset(im->bytes + total, 0x5a, data_bytes);
    im->size = total + data_bytes;
}

static void expect_valid(const image *im, npy_header *h)
{
    char err[256] = "";
    int status = npy_parse(im->bytes, im->size, h, err, sizeof err);
    if (status != 0)
        fail_msg("rejected a valid file: %s", err);
}

/* Rejected, with a message that contains needle. */
static void expect_invalid(const void *bytes, size_t size, const char *needle)
{
    npy_header h;
    memset(&h, 0x77, sizeof h);
    npy_header untouched = h;
    char err[256] = "";
    if (npy_parse(bytes, size, &h, err, sizeof err) != -1)
        fail_msg("accepted a malformed file (expected '%s')", needle);
    if (!strstr(err, needle))
        fail_msg("message '%s' does not mention '%s'", err, needle);
    assert_memory_equal(&h, &untouched, sizeof h); /* not written on failure */
}

static void expect_invalid_dict(const char *dict, size_t data_bytes, const char *needle)
{
    image im;
    make_image(&im, 1, dict, data_bytes);
    expect_invalid(im.bytes, im.size, needle);
}

static void test_valid_v1(void **state)
{
    (void)state;
    image im;
    npy_header h;
    make_image(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 5), }",
               2 * 3 * 4 * 5 * 4);
    expect_valid(&im, &h);
    assert_int_equal(h.dtype, NPY_FLOAT32);
    assert_int_equal(h.item_size, 4);
    assert_int_equal(h.ndim, 4);
    assert_int_equal(h.shape[0], 2);
    assert_int_equal(h.shape[3], 5);
    assert_int_equal(h.count, 120);
    assert_int_equal(h.data_offset, 128);
    assert_int_equal(h.data_bytes, 480);

    /* Other dtypes, key order, double quotes, no trailing comma, tight spacing. */
    static const struct {
        const char *dict;
        npy_dtype dtype;
        size_t item;
    } variants[] = {
        {"{\"shape\":(7,),\"descr\":\"<f2\",\"fortran_order\":False}", NPY_FLOAT16, 2},
        {"{'fortran_order': False, 'shape': (7,), 'descr': '<u2'}", NPY_UINT16, 2},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (7 ,) ,}", NPY_INT32, 4},
        {"{'descr': '|b1', 'fortran_order': False, 'shape': ( 7, ), }", NPY_BOOL, 1},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        make_image(&im, 1, variants[i].dict, 7 * variants[i].item);
        expect_valid(&im, &h);
        assert_int_equal(h.dtype, variants[i].dtype);
        assert_int_equal(h.ndim, 1);
        assert_int_equal(h.count, 7);
    }
    /* A 0-d array holds one element; a zero-sized dimension none. */
    make_image(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()}", 4);
    expect_valid(&im, &h);
    assert_int_equal(h.ndim, 0);
    assert_int_equal(h.count, 1);
    make_image(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 0, 2)}", 0);
    expect_valid(&im, &h);
    assert_int_equal(h.count, 0);
    assert_int_equal(h.data_bytes, 0);
}

static void test_valid_v2_v3(void **state)
{
    (void)state;
    image im;
    npy_header h;
    for (int major = 2; major <= 3; major++) {
        make_image(&im, major, "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2, 3, 4)}",
                   24 * 2);
        expect_valid(&im, &h);
        assert_int_equal(h.dtype, NPY_FLOAT16);
        assert_int_equal(h.data_offset, 128);
        assert_int_equal(h.count, 24);
    }
    /* A header that is not padded to 64 bytes is still valid. */
    const char dict[] = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }  \n";
    const size_t len = sizeof dict - 1;
    unsigned char raw[12 + sizeof dict + 8];
    memcpy(raw, "\x93NUMPY\x02\x00", 8);
    raw[8] = (unsigned char)len;
    raw[9] = raw[10] = raw[11] = 0;
    memcpy(raw + 12, dict, len);
    memset(raw + 12 + len, 1, 8);
    char err[128];
    assert_int_equal(npy_parse(raw, 12 + len + 8, &h, err, sizeof err), 0);
    assert_int_equal(h.data_offset, 12 + len);
    assert_int_equal(h.count, 2);
}

static void test_bad_prefix(void **state)
{
    (void)state;
    image im;
    make_image(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8);
    expect_invalid(im.bytes, 0, "too short");
    expect_invalid(NULL, 0, "too short");
    expect_invalid(im.bytes, 9, "too short");
    image bad = im;
    bad.bytes[1] = 'n';
    expect_invalid(bad.bytes, bad.size, "magic");
    bad = im;
    bad.bytes[6] = 4;
    expect_invalid(bad.bytes, bad.size, "version 4.0");
    bad = im;
    bad.bytes[6] = 0;
    expect_invalid(bad.bytes, bad.size, "version 0.0");
    bad = im;
    bad.bytes[7] = 1;
    expect_invalid(bad.bytes, bad.size, "version 1.1");
    /* Version 2.0 needs 12 bytes before the header. */
    bad = im;
    bad.bytes[6] = 2;
    expect_invalid(bad.bytes, 11, "truncated");
}

static void test_bad_header_length(void **state)
{
    (void)state;
    image im;
    make_image(&im, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8);
    image bad = im;
    bad.bytes[8] = 0;
    bad.bytes[9] = 0;
    expect_invalid(bad.bytes, bad.size, "header length is 0");
    bad = im;
    bad.bytes[9] = 0x40; /* 16 KiB */
    expect_invalid(bad.bytes, bad.size, "runs past the end");
    bad = im;
    bad.bytes[8] = 0xff;
    bad.bytes[9] = 0xff;
    expect_invalid(bad.bytes, bad.size, "runs past the end");
    bad = im;
    bad.bytes[8] += 4; /* the header would swallow the data: no newline at its end */
    expect_invalid(bad.bytes, bad.size, "newline");
    bad = im;
    bad.bytes[8] -= 1;
    expect_invalid(bad.bytes, bad.size, "newline");
    /* Version 2.0 with a header length beyond 4 GiB - 1 cannot fit. */
    make_image(&bad, 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8);
    bad.bytes[11] = 0xff;
    expect_invalid(bad.bytes, bad.size, "runs past the end");
    /* Header cut off by the end of the file. */
    expect_invalid(im.bytes, 40, "runs past the end");
    /* A NUL inside the header. */
    bad = im;
    bad.bytes[30] = 0;
    expect_invalid(bad.bytes, bad.size, "NUL");
}

static void test_bad_dict(void **state)
{
    (void)state;
    expect_invalid_dict("['descr', '<f4']", 8, "not a Python dict");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False}", 8, "lacks 'shape'");
    expect_invalid_dict("{'fortran_order': False, 'shape': (2,)}", 8, "lacks 'descr'");
    expect_invalid_dict("{'descr': '<f4', 'shape': (2,)}", 8, "lacks 'fortran_order'");
    expect_invalid_dict("{}", 0, "lacks");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", 8,
                        "unexpected key 'x'");
    expect_invalid_dict("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, "
                        "'shape': (2,)}", 8, "twice");
    expect_invalid_dict("{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", 8,
                        "',' or '}'");
    expect_invalid_dict("{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", 8, "':'");
    /* A missing quote pairs the wrong quotes: "<f4, " is the descr. */
    expect_invalid_dict("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", 8,
                        "'<f4, ' is not supported");
    expect_invalid_dict("{'descr': '<f4", 8, "not a string");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", 8,
                        "',' or '}'");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} 1", 8,
                        "text after");
    expect_invalid_dict("{descr: '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
                        "malformed key");
    expect_invalid_dict("{'de\\scr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
                        "malformed key");
}

static void test_bad_dtype_and_order(void **state)
{
    (void)state;
    expect_invalid_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", 16,
                        "'<f8' is not supported");
    expect_invalid_dict("{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", 8,
                        "'>f4' is not supported");
    expect_invalid_dict("{'descr': 'f4', 'fortran_order': False, 'shape': (2,)}", 8,
                        "not supported");
    expect_invalid_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (2,)}", 16,
                        "not supported");
    expect_invalid_dict("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,)}", 8,
                        "not a string");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}", 16,
                        "fortran_order True");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", 8,
                        "not True or False");
}

static void test_bad_shape(void **state)
{
    (void)state;
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", 8,
                        "needs a comma");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': 2}", 8,
                        "not a tuple");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", 8,
                        "not a tuple");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", 8,
                        "non-negative integer");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}", 8,
                        "well-formed");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", 0,
                        "non-negative integer");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}", 8,
                        "non-negative integer");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2 2)}", 8,
                        "well-formed");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2", 8,
                        "well-formed");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (99999999999999999999,)}", 8,
                        "fits 64 bits");
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int d = 0; d < NPY_MAX_DIMS + 1; d++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "1, ");
    snprintf(dict + n, sizeof dict - (size_t)n, ")}");
    expect_invalid_dict(dict, 4, "more than 32 dimensions");
}

static void test_bad_sizes(void **state)
{
    (void)state;
    /* 2^32 * 2^32 elements: the count overflows 64 bits. */
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (4294967296, 4294967296, 2)}", 8,
                        "element count overflows");
    /* 2^62 float32 elements: the byte size overflows. */
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, "
                        "'shape': (4611686018427387904,)}", 8,
                        "data size overflows");
    /* Huge but representable: far more than the file holds. */
    expect_invalid_dict("{'descr': '<f2', 'fortran_order': False, 'shape': (65536, 65536, 4)}",
                        8, "truncated");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 23,
                        "truncated");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", 25,
                        "trailing bytes");
    expect_invalid_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0)}", 1,
                        "trailing bytes");
}

/* Every prefix of a valid file and every single-byte change of its header must be handled
 * without reading outside the buffer (the prefixes are copied to exact-size allocations so that
 * a sanitizer would catch an overread). */
static void test_truncations_and_flips(void **state)
{
    (void)state;
    image im;
    make_image(&im, 1, "{'descr': '<u2', 'fortran_order': False, 'shape': (1, 2, 3, 4), }",
               24 * 2);
    npy_header h;
    char err[128];
    for (size_t size = 0; size < im.size; size++) {
        unsigned char *copy = malloc(size ? size : 1);
        assert_non_null(copy);
        memcpy(copy, im.bytes, size);
        assert_int_equal(npy_parse(copy, size, &h, err, sizeof err), -1);
        free(copy);
    }
    static const unsigned char values[] = {0, ' ', '\'', '"', '(', ')', ',', ':', '{', '}', '9',
                                           '\n', 0xff, 0x80};
    for (size_t at = 0; at < 128; at++)
        for (size_t v = 0; v < sizeof values; v++) {
            image bad = im;
            bad.bytes[at] = values[v];
            unsigned char *copy = malloc(bad.size);
            assert_non_null(copy);
            memcpy(copy, bad.bytes, bad.size);
            int status = npy_parse(copy, bad.size, &h, err, sizeof err);
            if (status == 0)
                assert_int_equal(h.data_offset + h.data_bytes, bad.size);
            free(copy);
        }
    /* No message buffer: still rejected, nothing written. */
    assert_int_equal(npy_parse(im.bytes, 5, &h, NULL, 0), -1);
}

static void test_save_load_round_trip(void **state)
{
    (void)state;
    char path[] = "test_npy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    float data[2 * 3 * 5];
    for (int i = 0; i < 30; i++)
        data[i] = (float)i * 0.5f - 3.0f;
    const uint64_t shape[3] = {2, 3, 5};
    char err[256] = "";
    assert_int_equal(npy_save(path, NPY_FLOAT32, 3, shape, data, err, sizeof err), 0);
    npy_array a;
    if (npy_load(path, &a, err, sizeof err) != 0)
        fail_msg("round trip: %s", err);
    assert_int_equal(a.header.dtype, NPY_FLOAT32);
    assert_int_equal(a.header.ndim, 3);
    assert_int_equal(a.header.shape[2], 5);
    assert_int_equal(a.header.data_offset % 64, 0);
    assert_memory_equal(a.data, data, sizeof data);
    npy_free(&a);

    const uint64_t one[1] = {3};
    const unsigned char flags[3] = {1, 0, 1};
    assert_int_equal(npy_save(path, NPY_BOOL, 1, one, flags, err, sizeof err), 0);
    assert_int_equal(npy_load(path, &a, err, sizeof err), 0);
    assert_int_equal(a.header.dtype, NPY_BOOL);
    assert_int_equal(a.header.ndim, 1);
    assert_memory_equal(a.data, flags, 3);
    npy_free(&a);

    /* Truncated on disk: the loader reports the parser's reason. */
    assert_int_equal(npy_save(path, NPY_FLOAT32, 3, shape, data, err, sizeof err), 0);
    assert_int_equal(truncate(path, 128 + 10), 0);
    assert_int_equal(npy_load(path, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "truncated"));
    assert_null(a.file);
    remove(path);
    assert_int_equal(npy_load(path, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(npy_load(".", &a, err, sizeof err), -1);
    npy_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v1),
        cmocka_unit_test(test_valid_v2_v3),
        cmocka_unit_test(test_bad_prefix),
        cmocka_unit_test(test_bad_header_length),
        cmocka_unit_test(test_bad_dict),
        cmocka_unit_test(test_bad_dtype_and_order),
        cmocka_unit_test(test_bad_shape),
        cmocka_unit_test(test_bad_sizes),
        cmocka_unit_test(test_truncations_and_flips),
        cmocka_unit_test(test_save_load_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
