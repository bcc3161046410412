/* The .safetensors reader and the layer loader, on files built here byte by byte (in memory and on disk): F32, F16
 * and BF16 values read back exactly (known bit patterns and random ones, decoded by an independent formula), odd
 * sizes and unaligned data, metadata, offset order, lookups and argument errors; every hostile header is refused
 * with ATTN_EINVAL, a one-line reason and *out untouched; layers load in both naming forms, with GQA, and wrong
 * shapes or names are refused. Built without jansson (no ATTN_HAVE_JANSSON), the tests instead check that every
 * entry point refuses valid files with ATTN_ENOTSUP and the documented reason, after its argument checks. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

/* ---- a safetensors writer ---- */

typedef struct sb {
    char *json;
    size_t jlen, jcap;
    unsigned char *data;
    size_t dlen, dcap;
    int n; /* members written */
} sb;

static void sb_grow(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    *p = realloc(*p, c);
    cr_assert(*p, "out of memory");
    *cap = c;
}

__attribute__((format(printf, 2, 3))) static void sb_json(sb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sb_grow((void **)&b->json, &b->jcap, b->jlen + (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->json + b->jlen, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->jlen += (size_t)n;
}

static void sb_init(sb *b)
{
    memset(b, 0, sizeof *b);
    sb_json(b, "{");
}

/* One tensor entry whose data_offsets are where its bytes land: after every tensor added before it. */
static void sb_tensor(sb *b, const char *name, const char *dtype, size_t ndim, const size_t *shape, const void *bytes,
                      size_t nbytes)
{
    sb_json(b, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", b->n++ ? "," : "", name, dtype);
    for (size_t i = 0; i < ndim; i++)
        sb_json(b, i ? ",%zu" : "%zu", shape[i]);
    sb_json(b, "],\"data_offsets\":[%zu,%zu]}", b->dlen, b->dlen + nbytes);
    sb_grow((void **)&b->data, &b->dcap, b->dlen + nbytes + 1);
    if (nbytes)
        memcpy(b->data + b->dlen, bytes, nbytes);
    b->dlen += nbytes;
}

static size_t numel_of(size_t ndim, const size_t *shape)
{
    size_t n = 1;
    for (size_t i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* Little-endian bytes, written byte by byte so the files are right on any host. */
static void sb_f32(sb *b, const char *name, size_t ndim, const size_t *shape, const float *v)
{
    const size_t n = numel_of(ndim, shape);
    unsigned char *p = malloc(4 * n + 1);
    for (size_t i = 0; i < n; i++) {
        const uint32_t u = tc_f2u(v[i]);
        for (int k = 0; k < 4; k++)
            p[4 * i + k] = (unsigned char)(u >> 8 * k);
    }
    sb_tensor(b, name, "F32", ndim, shape, p, 4 * n);
    free(p);
}

static void sb_u16(sb *b, const char *name, const char *dtype, size_t ndim, const size_t *shape, const uint16_t *v)
{
    const size_t n = numel_of(ndim, shape);
    unsigned char *p = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        p[2 * i] = (unsigned char)v[i];
        p[2 * i + 1] = (unsigned char)(v[i] >> 8);
    }
    sb_tensor(b, name, dtype, ndim, shape, p, 2 * n);
    free(p);
}

static void sb_meta(sb *b, const char *members) { sb_json(b, "%s\"__metadata__\":{%s}", b->n++ ? "," : "", members); }

/* The file: 8-byte length, the header plus pad spaces, the data. Frees the builder. */
static unsigned char *sb_finish(sb *b, size_t pad, size_t *len)
{
    sb_json(b, "}%*s", (int)pad, "");
    const size_t n = 8 + b->jlen + b->dlen;
    unsigned char *f = malloc(n + 1);
    for (int k = 0; k < 8; k++)
        f[k] = (unsigned char)((uint64_t)b->jlen >> 8 * k);
    memcpy(f + 8, b->json, b->jlen);
    if (b->dlen)
        memcpy(f + 8 + b->jlen, b->data, b->dlen);
    free(b->json);
    free(b->data);
    *len = n;
    return f;
}

/* A file from a raw header of hlen bytes (its length field says hlen) and dlen zero bytes of data. */
static unsigned char *raw_file(const char *hdr, size_t hlen, size_t dlen, size_t *len)
{
    unsigned char *f = calloc(1, 8 + hlen + dlen + 1);
    for (int k = 0; k < 8; k++)
        f[k] = (unsigned char)((uint64_t)hlen >> 8 * k);
    memcpy(f + 8, hdr, hlen);
    *len = 8 + hlen + dlen;
    return f;
}

/* Writes n bytes to a fresh file under /tmp; path receives its name (the caller unlinks it). */
static void write_tmp(const void *p, size_t n, char path[64])
{
    strcpy(path, "/tmp/attn-st-XXXXXX");
    const int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    cr_assert_eq(write(fd, p, n), (ssize_t)n);
    cr_assert_eq(close(fd), 0);
}

#if ATTN_HAVE_JANSSON

/* ---- independent decoders and exact encoders ---- */

static float f16_value(uint16_t h)
{
    const int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = exp == 0 ? ldexp(man, -24) : exp == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, exp - 25);
    return (float)(h & 0x8000 ? -v : v);
}

static float bf16_value(uint16_t h)
{
    const int exp = (h >> 7) & 0xff, man = h & 0x7f;
    double v = exp == 0 ? ldexp(man, -133) : exp == 255 ? (man ? NAN : INFINITY) : ldexp(128 + man, exp - 134);
    return (float)(h & 0x8000 ? -v : v);
}

/* x must be exactly representable: the test's values are small multiples of 1/8. */
static uint16_t f16_exact(float x)
{
    if (x == 0.0f)
        return signbit(x) ? 0x8000 : 0;
    int e;
    const double m = frexp(fabs((double)x), &e); /* |x| = m 2^e, m in [0.5, 1) */
    const double man = (2.0 * m - 1.0) * 1024.0;
    cr_assert(man == floor(man) && e - 1 + 15 > 0 && e - 1 + 15 < 31, "%g is not an exact normal half", x);
    return (uint16_t)((x < 0 ? 0x8000 : 0) | (e - 1 + 15) << 10 | (int)man);
}

static uint16_t bf16_exact(float x)
{
    const uint32_t u = tc_f2u(x);
    cr_assert((u & 0xffff) == 0, "%g is not an exact bfloat16", x);
    return (uint16_t)(u >> 16);
}

/* ---- the sample file ---- */

#define F32A_N 15 /* [3][5] */
#define F16R_N 101
#define BF16R_N 33
static const uint16_t f16_known[7] = {0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x8000, 0x7c00};
static const float f16_known_val[7] = {1.0f, -2.0f, 0.333251953125f, 65504.0f, 0x1p-24f, -0.0f, INFINITY};
static const uint16_t bf16_known[6] = {0x3f80, 0x4049, 0x0001, 0xff80, 0x7f7f, 0xbe00};
static const float bf16_known_val[6] = {1.0f, 3.140625f, 0x1p-133f, -INFINITY, 0x1.fep127f, -0.125f};

typedef struct sample {
    float f32a[F32A_N];
    uint16_t f16r[F16R_N], bf16r[BF16R_N];
    float scalar;
} sample;

/* Tensors in this order (also their data order): "u8" [3] (so what follows is unaligned), "f32a" F32 [3][5],
 * "f16k" F16 [7], "bf16k" BF16 [2][3], "empty" F32 [0][4], "i64" I64 [2], "f16r" F16 [101], "bf16r" BF16 [33],
 * "scalar" F32 [] (one element); metadata format=pt, note=héllo; the header padded with `pad` spaces. */
static unsigned char *sample_file(sample *s, uint64_t seed, size_t pad, size_t *len)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    for (size_t i = 0; i < F32A_N; i++)
        s->f32a[i] = tc_rng_float(&r, -100.0f, 100.0f);
    for (size_t i = 0; i < F16R_N; i++) {
        uint16_t h;
        do
            h = (uint16_t)tc_rng_u64(&r);
        while (((h >> 10) & 0x1f) == 0x1f); /* finite */
        s->f16r[i] = h;
    }
    for (size_t i = 0; i < BF16R_N; i++) {
        uint16_t h;
        do
            h = (uint16_t)tc_rng_u64(&r);
        while (((h >> 7) & 0xff) == 0xff);
        s->bf16r[i] = h;
    }
    s->scalar = tc_rng_float(&r, -1.0f, 1.0f);
    sb b;
    sb_init(&b);
    const unsigned char u8[3] = {1, 2, 3};
    const unsigned char i64[16] = {0};
    sb_meta(&b, "\"format\":\"pt\",\"note\":\"h\xc3\xa9llo\"");
    sb_tensor(&b, "u8", "U8", 1, (size_t[]){3}, u8, 3);
    sb_f32(&b, "f32a", 2, (size_t[]){3, 5}, s->f32a);
    sb_u16(&b, "f16k", "F16", 1, (size_t[]){7}, f16_known);
    sb_u16(&b, "bf16k", "BF16", 2, (size_t[]){2, 3}, bf16_known);
    sb_tensor(&b, "empty", "F32", 2, (size_t[]){0, 4}, NULL, 0);
    sb_tensor(&b, "i64", "I64", 1, (size_t[]){2}, i64, 16);
    sb_u16(&b, "f16r", "F16", 1, (size_t[]){F16R_N}, s->f16r);
    sb_u16(&b, "bf16r", "BF16", 1, (size_t[]){BF16R_N}, s->bf16r);
    sb_f32(&b, "scalar", 0, NULL, &s->scalar);
    return sb_finish(&b, pad, len);
}

static int same_bits(float a, float b) { return tc_f2u(a) == tc_f2u(b); }

/* Everything the sample file holds, read back through f. */
static void check_sample(const attn_st *f, const sample *s)
{
    static const char *const order[] = {"u8", "f32a", "f16k", "bf16k", "empty", "i64", "f16r", "bf16r", "scalar"};
    static const char *const dtypes[] = {"U8", "F32", "F16", "BF16", "F32", "I64", "F16", "BF16", "F32"};
    static const size_t numels[] = {3, 15, 7, 6, 0, 2, F16R_N, BF16R_N, 1};
    cr_assert_eq(attn_st_count(f), 9);
    for (size_t i = 0; i < 9; i++) {
        attn_st_tensor t;
        memset(&t, 0xab, sizeof t);
        cr_assert_eq(attn_st_tensor_at(f, i, &t), ATTN_OK);
        cr_assert_str_eq(t.name, order[i], "tensor_at(%zu) is %s", i, t.name);
        cr_assert_str_eq(t.dtype, dtypes[i]);
        cr_assert_eq(t.numel, numels[i], "%s numel %zu", t.name, t.numel);
        attn_st_tensor u;
        cr_assert_eq(attn_st_find(f, order[i], &u), ATTN_OK);
        cr_assert(u.name == t.name && u.dtype == t.dtype && u.ndim == t.ndim && u.numel == t.numel &&
                  memcmp(u.shape, t.shape, sizeof u.shape) == 0, "find and tensor_at differ on %s", order[i]);
    }
    attn_st_tensor t;
    cr_assert_eq(attn_st_find(f, "f32a", &t), ATTN_OK);
    cr_assert(t.ndim == 2 && t.shape[0] == 3 && t.shape[1] == 5 && t.shape[2] == 0);
    cr_assert_eq(attn_st_find(f, "empty", &t), ATTN_OK);
    cr_assert(t.ndim == 2 && t.shape[0] == 0 && t.shape[1] == 4 && t.numel == 0);
    cr_assert_eq(attn_st_find(f, "scalar", &t), ATTN_OK);
    cr_assert(t.ndim == 0 && t.numel == 1);

    float buf[128];
    cr_assert_eq(attn_st_read_f32(f, "f32a", buf, F32A_N), ATTN_OK);
    for (size_t i = 0; i < F32A_N; i++)
        cr_assert(same_bits(buf[i], s->f32a[i]), "f32a[%zu] = %a, wrote %a", i, buf[i], s->f32a[i]);
    cr_assert_eq(attn_st_read_f32(f, "f16k", buf, 7), ATTN_OK);
    for (size_t i = 0; i < 7; i++)
        cr_assert(same_bits(buf[i], f16_known_val[i]), "f16k[%zu] = %a, want %a", i, buf[i], f16_known_val[i]);
    cr_assert_eq(attn_st_read_f32(f, "bf16k", buf, 6), ATTN_OK);
    for (size_t i = 0; i < 6; i++)
        cr_assert(same_bits(buf[i], bf16_known_val[i]), "bf16k[%zu] = %a, want %a", i, buf[i], bf16_known_val[i]);
    cr_assert_eq(attn_st_read_f32(f, "f16r", buf, F16R_N), ATTN_OK);
    for (size_t i = 0; i < F16R_N; i++)
        cr_assert(same_bits(buf[i], f16_value(s->f16r[i])), "f16r[%zu] 0x%04x = %a, want %a", i, s->f16r[i],
                  buf[i], f16_value(s->f16r[i]));
    cr_assert_eq(attn_st_read_f32(f, "bf16r", buf, BF16R_N), ATTN_OK);
    for (size_t i = 0; i < BF16R_N; i++)
        cr_assert(same_bits(buf[i], bf16_value(s->bf16r[i])), "bf16r[%zu] 0x%04x = %a, want %a", i, s->bf16r[i],
                  buf[i], bf16_value(s->bf16r[i]));
    cr_assert_eq(attn_st_read_f32(f, "scalar", buf, 1), ATTN_OK);
    cr_assert(same_bits(buf[0], s->scalar));
    cr_assert_eq(attn_st_read_f32(f, "empty", NULL, 0), ATTN_OK, "a 0-element tensor needs no buffer");
    cr_assert_eq(attn_st_read_f32(f, "empty", buf, 0), ATTN_OK);

    cr_assert_str_eq(attn_st_metadata(f, "format"), "pt");
    cr_assert_str_eq(attn_st_metadata(f, "note"), "h\xc3\xa9llo");
    cr_assert_null(attn_st_metadata(f, "missing"));
}

Test(safetensors, roundtrip_memory)
{
    for (size_t pad = 0; pad < 4; pad++) { /* pad moves the data start across alignments */
        sample s;
        size_t len;
        unsigned char *bytes = sample_file(&s, tc_mix(tc_seed(), pad), pad, &len);
        attn_st *f = NULL;
        char err[256] = "";
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, err, sizeof err), ATTN_OK, "pad %zu: %s", pad, err);
        check_sample(f, &s);
        attn_st_close(f);
        free(bytes);
    }
}

Test(safetensors, roundtrip_file)
{
    sample s;
    size_t len;
    unsigned char *bytes = sample_file(&s, tc_mix(tc_seed(), 77), 5, &len);
    char path[64];
    write_tmp(bytes, len, path);
    free(bytes);
    attn_st *f = NULL;
    char err[256] = "";
    const attn_status st = attn_st_open(&f, path, err, sizeof err);
    unlink(path);
    cr_assert_eq(st, ATTN_OK, "%s", err);
    check_sample(f, &s); /* the file is gone: the mapping keeps its pages */
    attn_st_close(f);
}

Test(safetensors, empty_and_metadata_only)
{
    size_t len;
    unsigned char *bytes = raw_file("{}", 2, 0, &len);
    attn_st *f = NULL;
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
    cr_assert_eq(attn_st_count(f), 0);
    attn_st_tensor t;
    cr_assert_eq(attn_st_tensor_at(f, 0, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(f, "x", &t), ATTN_EINVAL);
    cr_assert_null(attn_st_metadata(f, "format"));
    attn_st_close(f);
    free(bytes);

    const char *hdr = "{\"__metadata__\":{\"a\":\"1\",\"b\":\"\"}}  \n";
    bytes = raw_file(hdr, strlen(hdr), 0, &len);
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK, "trailing whitespace is padding");
    cr_assert_eq(attn_st_count(f), 0);
    cr_assert_str_eq(attn_st_metadata(f, "a"), "1");
    cr_assert_str_eq(attn_st_metadata(f, "b"), "");
    cr_assert_null(attn_st_metadata(f, "c"));
    cr_assert_null(attn_st_metadata(f, NULL));
    cr_assert_null(attn_st_metadata(NULL, "a"));
    attn_st_close(f);
    free(bytes);

    /* Keys a tensor entry does not need are ignored; zero-size tensors may sit anywhere in the tiling. */
    hdr = "{\"z\":{\"dtype\":\"F16\",\"shape\":[0],\"data_offsets\":[4,4],\"extra\":[1,{}]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"BOOL\",\"shape\":[2,1],\"data_offsets\":[4,6]}}";
    bytes = raw_file(hdr, strlen(hdr), 6, &len);
    char err[128] = "";
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, err, sizeof err), ATTN_OK, "%s", err);
    cr_assert_eq(attn_st_count(f), 3);
    static const char *const order[] = {"a", "z", "b"};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(attn_st_tensor_at(f, i, &t), ATTN_OK);
        cr_assert_str_eq(t.name, order[i]);
    }
    attn_st_close(f);
    free(bytes);
}

Test(safetensors, lookup_and_read_errors)
{
    sample s;
    size_t len;
    unsigned char *bytes = sample_file(&s, 1, 0, &len);
    attn_st *f = NULL;
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
    attn_st_tensor t;
    memset(&t, 0x5a, sizeof t);
    const attn_st_tensor before = t;
    cr_assert_eq(attn_st_find(f, "nope", &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(f, "f32", &t), ATTN_EINVAL, "a prefix of a name is not the name");
    cr_assert_eq(attn_st_find(f, "", &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(f, NULL, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(NULL, "f32a", &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(f, "f32a", NULL), ATTN_EINVAL);
    cr_assert_eq(attn_st_tensor_at(f, 9, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_tensor_at(f, SIZE_MAX, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_tensor_at(NULL, 0, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_tensor_at(f, 0, NULL), ATTN_EINVAL);
    cr_assert(memcmp(&t, &before, sizeof t) == 0, "info written on error");

    tc_buf dst;
    cr_assert_eq(tc_buf_alloc(&dst, 64), 0);
    cr_assert_eq(attn_st_read_f32(f, "f32a", dst.p, F32A_N - 1), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "f32a", dst.p, F32A_N + 1), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "f16k", dst.p, 6), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "scalar", dst.p, 0), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "f32a", NULL, F32A_N), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "nope", dst.p, 1), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, NULL, dst.p, 1), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(NULL, "f32a", dst.p, F32A_N), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(f, "i64", dst.p, 2), ATTN_ENOTSUP);
    cr_assert_eq(attn_st_read_f32(f, "u8", dst.p, 3), ATTN_ENOTSUP);
    cr_assert(tc_buf_all_bits(&dst, TC_POISON_BITS) && tc_buf_guards_ok(&dst), "dst written on error");
    cr_assert_eq(attn_st_read_f32(f, "f16r", dst.p, 64), ATTN_EINVAL, "64 of 101");
    cr_assert_eq(attn_st_read_f32(f, "bf16r", dst.p, BF16R_N), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&dst), "read past n");
    tc_buf_free(&dst);

    cr_assert_eq(attn_st_count(NULL), 0);
    attn_st_close(NULL);
    attn_st_close(f);

    attn_st *const sentinel = (attn_st *)&sentinel;
    attn_st *g = sentinel;
    char err[64] = "";
    cr_assert_eq(attn_st_open_memory(NULL, bytes, len, err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open_memory(&g, NULL, len, err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open(NULL, "/tmp", err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open(&g, NULL, err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(g, sentinel);
    cr_assert(err[0]);
    free(bytes);
}

/* ---- hostile headers ---- */

typedef struct bad_case {
    const char *why;
    const char *hdr;
    size_t dlen;      /* zero bytes of data after the header */
    const char *want; /* a substring of the reason */
} bad_case;

#define T1(name, dtype, shape, offs) "\"" name "\":{\"dtype\":" dtype ",\"shape\":" shape ",\"data_offsets\":" offs "}"

static const bad_case bad_cases[] = {
    {"not JSON", "{\"a\": }", 0, "JSON"},
    {"truncated JSON", "{\"a\":{\"dtype\":\"F32\"", 0, "JSON"},
    {"two JSON values", "{} {}", 0, "JSON"},
    {"garbage after the object", "{}x", 0, "JSON"},
    {"an array", "[1, 2]", 0, "{"},
    {"a string", "\"abc\"", 0, "{"},
    {"leading space", " {}", 0, "{"},
    {"tensor not an object", "{\"w\":5}", 0, "\"w\""},
    {"missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype"},
    {"missing shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "shape"},
    {"missing data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets"},
    {"duplicate dtype key", "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "duplicate"},
    {"dtype not a string", "{" T1("w", "32", "[1]", "[0,4]") "}", 4, "\"w\""},
    {"unknown dtype", "{" T1("w", "\"F128\"", "[1]", "[0,16]") "}", 16, "F128"},
    {"lowercase dtype", "{" T1("w", "\"f32\"", "[1]", "[0,4]") "}", 4, "f32"},
    {"shape not an array", "{" T1("w", "\"F32\"", "1", "[0,4]") "}", 4, "\"w\""},
    {"negative shape", "{" T1("w", "\"F32\"", "[-1]", "[0,4]") "}", 4, "\"w\""},
    {"fractional shape", "{" T1("w", "\"F32\"", "[1.5]", "[0,6]") "}", 6, "\"w\""},
    {"1e300 shape", "{" T1("w", "\"U8\"", "[1e300]", "[0,1]") "}", 1, "\"w\""},
    {"shape past 2^53", "{" T1("w", "\"U8\"", "[9007199254740994]", "[0,1]") "}", 1, "\"w\""},
    {"string in shape", "{" T1("w", "\"F32\"", "[\"1\"]", "[0,4]") "}", 4, "\"w\""},
    {"null in shape", "{" T1("w", "\"F32\"", "[null]", "[0,4]") "}", 4, "\"w\""},
    {"9 dims", "{" T1("w", "\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, "dimensions"},
    {"numel overflows", "{" T1("w", "\"U8\"", "[4294967296,4294967296]", "[0,0]") "}", 0, "overflow"},
    {"byte size overflows", "{" T1("w", "\"U64\"", "[4611686018427387904]", "[0,0]") "}", 0, "\"w\""},
    {"offsets past the end", "{" T1("w", "\"F32\"", "[2]", "[0,8]") "}", 4, "\"w\""},
    {"end before begin", "{" T1("w", "\"F32\"", "[1]", "[4,0]") "}", 4, "\"w\""},
    {"one offset", "{" T1("w", "\"F32\"", "[1]", "[4]") "}", 4, "\"w\""},
    {"three offsets", "{" T1("w", "\"F32\"", "[1]", "[0,4,4]") "}", 4, "\"w\""},
    {"negative offset", "{" T1("w", "\"F32\"", "[1]", "[-4,0]") "}", 4, "\"w\""},
    {"fractional offset", "{" T1("w", "\"U8\"", "[1]", "[0.5,1.5]") "}", 2, "\"w\""},
    {"offsets not an array", "{" T1("w", "\"F32\"", "[1]", "{}") "}", 4, "\"w\""},
    {"byte size != end - begin", "{" T1("w", "\"F32\"", "[2]", "[0,4]") "}", 4, "\"w\""},
    {"byte size != end - begin (F16)", "{" T1("w", "\"F16\"", "[3]", "[0,8]") "}", 8, "\"w\""},
    {"overlapping tensors", "{" T1("a", "\"F32\"", "[2]", "[0,8]") "," T1("b", "\"F32\"", "[2]", "[4,12]") "}", 12,
     "overlap"},
    {"zero-size tensor inside another",
     "{" T1("a", "\"F32\"", "[2]", "[0,8]") "," T1("z", "\"F32\"", "[0]", "[4,4]") "}", 8, "overlap"},
    {"same offsets twice", "{" T1("a", "\"F32\"", "[1]", "[0,4]") "," T1("b", "\"F32\"", "[1]", "[0,4]") "}", 4,
     "overlap"},
    {"a hole between tensors", "{" T1("a", "\"F32\"", "[1]", "[0,4]") "," T1("b", "\"F32\"", "[1]", "[8,12]") "}",
     12, "\"b\""},
    {"a hole at the start", "{" T1("a", "\"F32\"", "[1]", "[4,8]") "}", 8, "\"a\""},
    {"trailing unindexed bytes", "{" T1("a", "\"F32\"", "[1]", "[0,4]") "}", 8, "after the last"},
    {"data but no tensors", "{}", 4, "after the last"},
    {"duplicate names", "{" T1("a", "\"F32\"", "[1]", "[0,4]") "," T1("a", "\"F32\"", "[1]", "[4,8]") "}", 8,
     "duplicate object key"},
    {"metadata value a number", "{\"__metadata__\":{\"k\":1}}", 0, "\"k\""},
    {"metadata value an object", "{\"__metadata__\":{\"k\":{}}}", 0, "\"k\""},
    {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, "__metadata__"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate object key"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "\"k\""},
    {"invalid UTF-8", "{\"\xff\":{}}", 0, "UTF-8"},
    {"UTF-8 surrogate", "{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, "UTF-8"},
    {"overlong UTF-8", "{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}", 0, "UTF-8"},
    {"a \\u0000 escape in a name", "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "u0000"},
    {"a name with a newline", "{\"a\nb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,5]}}", 5, "newline"},
};

/* Opens bytes from memory and from a file on disk: both must fail with ATTN_EINVAL, a one-line reason containing
 * want, and *out untouched. */
static void expect_bad(const char *why, const unsigned char *bytes, size_t len, const char *want)
{
    attn_st *const sentinel = (attn_st *)&sentinel;
    for (int disk = 0; disk < 2; disk++) {
        attn_st *f = sentinel;
        char err[256];
        memset(err, 0, sizeof err);
        attn_status st;
        if (disk) {
            char path[64];
            write_tmp(bytes, len, path);
            st = attn_st_open(&f, path, err, sizeof err);
            unlink(path);
        } else {
            st = attn_st_open_memory(&f, bytes, len, err, sizeof err);
        }
        cr_assert_eq(st, ATTN_EINVAL, "%s (%s): status %d", why, disk ? "file" : "memory", (int)st);
        cr_assert_eq(f, sentinel, "%s: *out written on error", why);
        cr_assert(err[0], "%s: no reason given", why);
        cr_assert(!strchr(err, '\n'), "%s: the reason is not one line: %s", why, err);
        cr_assert(!want || strstr(err, want), "%s: reason \"%s\" does not mention %s", why, err, want);
        /* No err buffer, and one too small for anything: the same status, no crash, a NUL-terminated err. */
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_EINVAL);
        char tiny[1] = {'x'};
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, tiny, 1), ATTN_EINVAL);
        cr_assert_eq(tiny[0], '\0');
        cr_assert_eq(f, sentinel);
    }
}

Test(safetensors, hostile_headers)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        size_t len;
        unsigned char *bytes = raw_file(c->hdr, strlen(c->hdr), c->dlen, &len);
        expect_bad(c->why, bytes, len, c->want);
        free(bytes);
    }
}

Test(safetensors, hostile_lengths)
{
    unsigned char buf[64] = {0};
    expect_bad("empty", buf, 0, "too short");
    expect_bad("7 bytes", buf, 7, "short");
    expect_bad("header length 0", buf, 8, "{");

    buf[0] = 10; /* N = 10, 9 bytes follow */
    memcpy(buf + 8, "{}       ", 9);
    expect_bad("N past the end", buf, 17, "past the end");

    memset(buf, 0, 8);
    buf[7] = 0x80; /* N = 2^63 */
    memcpy(buf + 8, "{}", 2);
    expect_bad("N = 2^63", buf, 10, "past the end");
    memset(buf, 0xff, 8); /* N = 2^64 - 1 */
    expect_bad("N = 2^64 - 1", buf, 10, "past the end");

    /* N over 100 MiB in a buffer that holds it. */
    const size_t big = ((size_t)100 << 20) + 1;
    unsigned char *mem = calloc(1, 8 + big);
    cr_assert(mem);
    for (int k = 0; k < 8; k++)
        mem[k] = (unsigned char)((uint64_t)big >> 8 * k);
    mem[8] = '{';
    mem[9] = '}';
    memset(mem + 10, ' ', big - 2);
    attn_st *f = NULL;
    char err[128] = "";
    cr_assert_eq(attn_st_open_memory(&f, mem, 8 + big, err, sizeof err), ATTN_EINVAL);
    cr_assert(strstr(err, "100 MiB"), "%s", err);
    mem[0]--; /* exactly 100 MiB of header, one byte of data nobody indexes */
    cr_assert_eq(attn_st_open_memory(&f, mem, 8 + big, err, sizeof err), ATTN_EINVAL);
    cr_assert(strstr(err, "after the last"), "%s", err);
    free(mem);

    /* A NUL inside the header (refused before parsing). */
    static const char nul_hdr[] = "{\"__metadata__\":{\"k\":\"a\0b\"}}";
    size_t len;
    unsigned char *bytes = raw_file(nul_hdr, sizeof nul_hdr - 1, 0, &len);
    expect_bad("NUL in the header", bytes, len, "NUL");
    free(bytes);
    bytes = raw_file("{}\0", 3, 0, &len);
    expect_bad("NUL padding", bytes, len, "NUL");
    free(bytes);
}

Test(safetensors, bad_paths)
{
    attn_st *const sentinel = (attn_st *)&sentinel;
    attn_st *f = sentinel;
    char err[256] = "";
    cr_assert_eq(attn_st_open(&f, "/nonexistent/dir/model.safetensors", err, sizeof err), ATTN_EINVAL);
    cr_assert(strstr(err, "model.safetensors"), "%s", err);
    err[0] = '\0';
    cr_assert_eq(attn_st_open(&f, "/tmp", err, sizeof err), ATTN_EINVAL);
    cr_assert(strstr(err, "directory"), "%s", err);
    err[0] = '\0';
    cr_assert_eq(attn_st_open(&f, "/dev/null", err, sizeof err), ATTN_EINVAL);
    cr_assert(err[0]);
    err[0] = '\0';
    cr_assert_eq(attn_st_open(&f, "", err, sizeof err), ATTN_EINVAL);
    cr_assert(err[0]);
    char path[64];
    write_tmp("", 0, path);
    err[0] = '\0';
    cr_assert_eq(attn_st_open(&f, path, err, sizeof err), ATTN_EINVAL);
    unlink(path);
    cr_assert(strstr(err, "short"), "empty file: %s", err);
    cr_assert_eq(f, sentinel);
}

/* Threads opening, reading and refusing files at once (jansson keeps its errors per call). */
typedef struct open_job {
    const unsigned char *bytes;
    size_t len;
    int fails;
} open_job;

static void *open_many(void *arg)
{
    open_job *job = arg;
    size_t bad_len;
    unsigned char *bad = raw_file("{\"a\": }", 7, 0, &bad_len);
    for (int i = 0; i < 200; i++) {
        attn_st *f = NULL;
        float v[F32A_N];
        job->fails += attn_st_open_memory(&f, job->bytes, job->len, NULL, 0) != ATTN_OK;
        job->fails += attn_st_read_f32(f, "f32a", v, F32A_N) != ATTN_OK;
        attn_st_close(f);
        f = NULL;
        job->fails += attn_st_open_memory(&f, bad, bad_len, NULL, 0) != ATTN_EINVAL || f != NULL;
    }
    free(bad);
    return NULL;
}

Test(safetensors, concurrent_opens)
{
    sample s;
    size_t len;
    unsigned char *bytes = sample_file(&s, 3, 0, &len);
    open_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (open_job){bytes, len, 0};
        cr_assert_eq(pthread_create(&th[i], NULL, open_many, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_eq(jobs[i].fails, 0, "thread %d: %d failures", i, jobs[i].fails);
    }
    free(bytes);
}

/* ---- layers ---- */

/* n values, small multiples of 1/8 (exact in F16 and BF16), distinct per tensor. */
static float *layer_values(size_t n, uint64_t seed)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    tc_rng r;
    tc_rng_init(&r, seed);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)((int)tc_rng_below(&r, 33) - 16) / 8.0f;
    return v;
}

/* A tensor of the given dtype ("F32", "F16", "BF16") holding v exactly. */
static void sb_values(sb *b, const char *name, const char *dtype, size_t ndim, const size_t *shape, const float *v)
{
    if (strcmp(dtype, "F32") == 0) {
        sb_f32(b, name, ndim, shape, v);
        return;
    }
    const size_t n = numel_of(ndim, shape);
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++)
        h[i] = strcmp(dtype, "F16") == 0 ? f16_exact(v[i]) : bf16_exact(v[i]);
    sb_u16(b, name, dtype, ndim, shape, h);
    free(h);
}

typedef struct ref_layer {
    size_t d, h, hk, hd;
    float *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo;
} ref_layer;

static ref_layer ref_make(size_t d, size_t h, size_t hk, size_t hd, uint64_t seed)
{
    ref_layer L = {d, h, hk, hd, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    L.wq = layer_values(h * hd * d, seed + 1);
    L.wk = layer_values(hk * hd * d, seed + 2);
    L.wv = layer_values(hk * hd * d, seed + 3);
    L.wo = layer_values(d * h * hd, seed + 4);
    L.bq = layer_values(h * hd, seed + 5);
    L.bk = layer_values(hk * hd, seed + 6);
    L.bv = layer_values(hk * hd, seed + 7);
    L.bo = layer_values(d, seed + 8);
    return L;
}

static void ref_free(ref_layer *L)
{
    free(L->wq), free(L->wk), free(L->wv), free(L->wo);
    free(L->bq), free(L->bk), free(L->bv), free(L->bo);
}

static void expect_array(const char *what, const float *got, const float *want, size_t n)
{
    cr_assert_not_null(got, "%s missing", what);
    cr_assert_eq((uintptr_t)got % 64, 0, "%s is not 64-byte aligned", what);
    for (size_t i = 0; i < n; i++)
        cr_assert(same_bits(got[i], want[i]), "%s[%zu] = %g, want %g", what, i, got[i], want[i]);
}

static void expect_layer(const attn_layer_weights *w, const ref_layer *L, int with_wo, int with_bias)
{
    const size_t qr = L->h * L->hd, kr = L->hk * L->hd;
    cr_assert_eq(w->layer.d_model, L->d);
    cr_assert_eq(w->layer.n_heads, L->h);
    cr_assert_eq(w->layer.n_kv_heads, L->hk);
    cr_assert_eq(w->layer.head_dim, L->hd);
    cr_assert_not_null(w->data);
    expect_array("wq", w->layer.wq, L->wq, qr * L->d);
    expect_array("wk", w->layer.wk, L->wk, kr * L->d);
    expect_array("wv", w->layer.wv, L->wv, kr * L->d);
    if (with_wo)
        expect_array("wo", w->layer.wo, L->wo, L->d * qr);
    else
        cr_assert_null(w->layer.wo);
    if (with_bias) {
        expect_array("bq", w->layer.bq, L->bq, qr);
        expect_array("bk", w->layer.bk, L->bk, kr);
        expect_array("bv", w->layer.bv, L->bv, kr);
        expect_array("bo", w->layer.bo, L->bo, L->d);
    } else {
        cr_assert(!w->layer.bq && !w->layer.bk && !w->layer.bv && !w->layer.bo);
    }
}

/* The layer as separate tensors "q.weight" ... "o.bias", each stored as dtypes[i % 3]. */
static unsigned char *separate_file(const ref_layer *L, size_t *len)
{
    static const char *const dt[] = {"F32", "F16", "BF16"};
    const size_t qr = L->h * L->hd, kr = L->hk * L->hd;
    sb b;
    sb_init(&b);
    sb_values(&b, "o.bias", dt[0], 1, (size_t[]){L->d}, L->bo); /* file order need not be load order */
    sb_values(&b, "q.weight", dt[0], 2, (size_t[]){qr, L->d}, L->wq);
    sb_values(&b, "k.weight", dt[1], 2, (size_t[]){kr, L->d}, L->wk);
    sb_values(&b, "v.weight", dt[2], 2, (size_t[]){kr, L->d}, L->wv);
    sb_values(&b, "o.weight", dt[1], 2, (size_t[]){L->d, qr}, L->wo);
    sb_values(&b, "q.bias", dt[2], 1, (size_t[]){qr}, L->bq);
    sb_values(&b, "k.bias", dt[0], 1, (size_t[]){kr}, L->bk);
    sb_values(&b, "v.bias", dt[1], 1, (size_t[]){kr}, L->bv);
    const size_t n8[1] = {2};
    sb_tensor(&b, "step", "I64", 1, n8, (unsigned char[16]){0}, 16);
    return sb_finish(&b, 3, len); /* 3 spaces: the data starts unaligned */
}

static const attn_layer_names separate_names = {
    .wq = "q.weight", .wk = "k.weight", .wv = "v.weight", .wo = "o.weight",
    .bq = "q.bias", .bk = "k.bias", .bv = "v.bias", .bo = "o.bias",
};

Test(safetensors, layer_separate)
{
    static const size_t shapes[][4] = {{5, 4, 4, 3}, {5, 4, 2, 3}, {16, 8, 1, 2}, {1, 1, 1, 1}}; /* d, h, hk, hd */
    for (size_t c = 0; c < sizeof shapes / sizeof shapes[0]; c++) {
        ref_layer L = ref_make(shapes[c][0], shapes[c][1], shapes[c][2], shapes[c][3], tc_mix(tc_seed(), c));
        size_t len;
        unsigned char *bytes = separate_file(&L, &len);
        attn_st *f = NULL;
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
        attn_layer_weights w;
        char err[256] = "";
        const size_t hk_arg = L.hk == L.h && c % 2 ? 0 : L.hk; /* 0 means n_heads */
        cr_assert_eq(attn_layer_load_safetensors(&w, f, &separate_names, L.h, hk_arg, err, sizeof err), ATTN_OK,
                     "case %zu: %s", c, err);
        expect_layer(&w, &L, 1, 1);
        attn_layer_weights_free(&w);
        cr_assert(!w.data && !w.layer.wq && !w.layer.d_model, "free does not zero");
        attn_layer_weights_free(&w); /* a zeroed struct is fine */

        /* Without wo and biases. */
        const attn_layer_names bare = {.wq = "q.weight", .wk = "k.weight", .wv = "v.weight"};
        cr_assert_eq(attn_layer_load_safetensors(&w, f, &bare, L.h, L.hk, err, sizeof err), ATTN_OK, "%s", err);
        expect_layer(&w, &L, 0, 0);
        attn_layer_weights_free(&w);
        attn_st_close(f);
        free(bytes);
        ref_free(&L);
    }
    attn_layer_weights_free(NULL);
}

/* The layer as PyTorch's MultiheadAttention stores it: in_proj_weight = cat(wq, wk, wv), in_proj_bias likewise,
 * out_proj.weight / out_proj.bias. */
static unsigned char *in_proj_file(const ref_layer *L, const char *dtype, size_t *len)
{
    const size_t qr = L->h * L->hd, kr = L->hk * L->hd, d = L->d;
    float *w = malloc((qr + 2 * kr) * d * sizeof *w), *bias = malloc((qr + 2 * kr) * sizeof *bias);
    memcpy(w, L->wq, qr * d * sizeof *w);
    memcpy(w + qr * d, L->wk, kr * d * sizeof *w);
    memcpy(w + (qr + kr) * d, L->wv, kr * d * sizeof *w);
    memcpy(bias, L->bq, qr * sizeof *bias);
    memcpy(bias + qr, L->bk, kr * sizeof *bias);
    memcpy(bias + qr + kr, L->bv, kr * sizeof *bias);
    sb b;
    sb_init(&b);
    sb_meta(&b, "\"format\":\"pt\"");
    sb_values(&b, "attn.in_proj_weight", dtype, 2, (size_t[]){qr + 2 * kr, d}, w);
    sb_values(&b, "attn.in_proj_bias", dtype, 1, (size_t[]){qr + 2 * kr}, bias);
    sb_values(&b, "attn.out_proj.weight", dtype, 2, (size_t[]){d, qr}, L->wo);
    sb_values(&b, "attn.out_proj.bias", dtype, 1, (size_t[]){d}, L->bo);
    free(w);
    free(bias);
    return sb_finish(&b, 1, len);
}

static const attn_layer_names in_proj_names = {
    .in_proj_weight = "attn.in_proj_weight", .in_proj_bias = "attn.in_proj_bias",
    .wo = "attn.out_proj.weight", .bo = "attn.out_proj.bias",
};

Test(safetensors, layer_in_proj)
{
    static const char *const dtypes[] = {"F32", "F16", "BF16"};
    static const size_t shapes[][4] = {{12, 4, 4, 3}, {7, 6, 2, 5}, {8, 8, 1, 4}}; /* d, h, hk, hd */
    for (size_t c = 0; c < 3; c++)
        for (size_t t = 0; t < 3; t++) {
            ref_layer L = ref_make(shapes[c][0], shapes[c][1], shapes[c][2], shapes[c][3], tc_mix(tc_seed(), c));
            size_t len;
            unsigned char *bytes = in_proj_file(&L, dtypes[t], &len);
            attn_st *f = NULL;
            cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
            attn_layer_weights w;
            char err[256] = "";
            cr_assert_eq(attn_layer_load_safetensors(&w, f, &in_proj_names, L.h, L.hk, err, sizeof err), ATTN_OK,
                         "case %zu %s: %s", c, dtypes[t], err);
            expect_layer(&w, &L, 1, 1);
            attn_layer_weights_free(&w);

            /* in_proj_weight with separate biases is a valid mix too: here none. */
            const attn_layer_names w_only = {.in_proj_weight = "attn.in_proj_weight"};
            cr_assert_eq(attn_layer_load_safetensors(&w, f, &w_only, L.h, L.hk, err, sizeof err), ATTN_OK, "%s",
                         err);
            expect_layer(&w, &L, 0, 0);
            attn_layer_weights_free(&w);

            /* The same rows read as another head split: a different head_dim, not an error when it divides. */
            if (L.hk == L.h && L.h % 2 == 0) {
                cr_assert_eq(attn_layer_load_safetensors(&w, f, &w_only, L.h / 2, 0, err, sizeof err), ATTN_OK);
                cr_assert_eq(w.layer.head_dim, 2 * L.hd);
                attn_layer_weights_free(&w);
            }
            attn_st_close(f);
            free(bytes);
            ref_free(&L);
        }
}

/* A load that must fail: status want, a reason containing what, and *out zeroed. */
static void expect_load_fail(const attn_st *f, const attn_layer_names *nm, size_t h, size_t hk, attn_status want,
                             const char *what)
{
    attn_layer_weights w;
    memset(&w, 0x77, sizeof w);
    char err[256] = "";
    const attn_status s = attn_layer_load_safetensors(&w, f, nm, h, hk, err, sizeof err);
    cr_assert_eq(s, want, "h=%zu hk=%zu (%s): status %d, want %d; err: %s", h, hk, what, (int)s, (int)want, err);
    attn_layer_weights zero;
    memset(&zero, 0, sizeof zero);
    cr_assert(memcmp(&w, &zero, sizeof w) == 0, "%s: *out not zeroed on failure", what);
    cr_assert(err[0], "%s: no reason", what);
    cr_assert(!what || strstr(err, what), "%s: reason \"%s\"", what, err);
}

Test(safetensors, layer_errors)
{
    ref_layer L = ref_make(5, 4, 2, 3, 11); /* wq [12][5], wk/wv [6][5], wo [5][12] */
    size_t len;
    unsigned char *bytes = separate_file(&L, &len);
    attn_st *f = NULL;
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);

    /* Arguments. */
    cr_assert_eq(attn_layer_load_safetensors(NULL, f, &separate_names, 4, 2, NULL, 0), ATTN_EINVAL);
    expect_load_fail(NULL, &separate_names, 4, 2, ATTN_EINVAL, "NULL");
    expect_load_fail(f, NULL, 4, 2, ATTN_EINVAL, "NULL");
    expect_load_fail(f, &separate_names, 0, 0, ATTN_EINVAL, "n_heads");
    expect_load_fail(f, &separate_names, 4, 3, ATTN_EINVAL, "divide");
    expect_load_fail(f, &separate_names, 2, 4, ATTN_EINVAL, "divide");
    expect_load_fail(f, &separate_names, SIZE_MAX, 1, ATTN_EINVAL, NULL);

    /* Shapes that do not fit the head counts: wq's 12 rows are not a multiple of 5 heads; with 6 heads of 2,
     * wk should have 2 * 2 (hk 2) rows, not 6; 4 heads over 4 KV heads want 12-row wk. */
    expect_load_fail(f, &separate_names, 5, 5, ATTN_EINVAL, "q.weight");
    expect_load_fail(f, &separate_names, 6, 2, ATTN_EINVAL, "k.weight");
    expect_load_fail(f, &separate_names, 4, 4, ATTN_EINVAL, "k.weight");
    expect_load_fail(f, &separate_names, 12, 2, ATTN_EINVAL, "k.weight");

    /* Names: missing tensors, a tensor in the wrong role, incomplete or ambiguous sets. */
    attn_layer_names nm = separate_names;
    nm.wv = "nope";
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "nope");
    nm = separate_names;
    nm.bo = "nope";
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "nope");
    nm = separate_names;
    nm.wk = NULL;
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "wq, wk and wv");
    nm = separate_names;
    nm.in_proj_weight = "q.weight";
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "either wq, wk and wv or in_proj_weight");
    nm = separate_names;
    nm.in_proj_bias = "q.bias";
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "either bq, bk, bv or in_proj_bias");
    nm = separate_names;
    nm.wo = "k.weight"; /* [6][5], wo must be [5][12] */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "k.weight");
    nm = separate_names;
    nm.wq = "o.weight"; /* [5][12]: 5 rows over 4 heads */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "o.weight");
    nm = separate_names;
    nm.bq = "k.bias"; /* 6, bq must be 12 */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "k.bias");
    nm = separate_names;
    nm.bo = "q.weight"; /* 2-D where a bias is 1-D */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "q.weight");
    nm = separate_names;
    nm.wq = "q.bias"; /* 1-D where a weight is 2-D */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "q.bias");
    nm = separate_names;
    nm.bk = "step"; /* I64 */
    expect_load_fail(f, &nm, 4, 2, ATTN_ENOTSUP, "I64");
    attn_st_close(f);
    free(bytes);

    /* in_proj_weight whose rows are not (n_heads + 2 n_kv_heads) * head_dim. */
    bytes = in_proj_file(&L, "F16", &len); /* 24 rows = (4 + 2*2) * 3 */
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
    /* 24 rows over 4 + 2*4 heads: head_dim 2 fits in_proj_weight, but wo [5][12] is not [5][8]. */
    expect_load_fail(f, &in_proj_names, 4, 4, ATTN_EINVAL, "out_proj.weight");
    expect_load_fail(f, &in_proj_names, 3, 3, ATTN_EINVAL, "in_proj_weight"); /* 24 % 9 */
    expect_load_fail(f, &in_proj_names, 5, 5, ATTN_EINVAL, "in_proj_weight"); /* 24 % 15 */
    nm = in_proj_names;
    nm.in_proj_bias = "attn.out_proj.bias"; /* [5], wants [24] */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "attn.out_proj.bias");
    nm = in_proj_names;
    nm.in_proj_weight = "attn.in_proj_bias"; /* 1-D */
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "attn.in_proj_bias");
    nm = in_proj_names;
    nm.wq = "attn.in_proj_weight";
    expect_load_fail(f, &nm, 4, 2, ATTN_EINVAL, "either wq, wk and wv or in_proj_weight");
    nm = in_proj_names;
    nm.bk = "attn.out_proj.bias"; /* in_proj_bias holds bk already */
    expect_load_fail(f, &nm, 8, 8, ATTN_EINVAL, "either bq, bk, bv or in_proj_bias");
    attn_st_close(f);
    free(bytes);
    ref_free(&L);
}

#else /* !ATTN_HAVE_JANSSON */

/* ---- built without jansson: every entry point refuses ---- */

#define NO_JANSSON "attn was built without jansson (configure --without-jansson)"

/* A file a jansson build opens and loads a layer from (d_model 2, one head of 2): F32 and F16 tensors,
 * metadata. */
static unsigned char *valid_file(size_t *len)
{
    static const float w[4] = {1.0f, 0.5f, -0.25f, 2.0f};
    static const uint16_t b[2] = {0x3c00, 0xc000}; /* F16 1, -2 */
    sb s;
    sb_init(&s);
    sb_meta(&s, "\"format\":\"pt\"");
    sb_f32(&s, "wq", 2, (size_t[]){2, 2}, w);
    sb_f32(&s, "wk", 2, (size_t[]){2, 2}, w);
    sb_f32(&s, "wv", 2, (size_t[]){2, 2}, w);
    sb_u16(&s, "bq", "F16", 1, (size_t[]){2}, b);
    return sb_finish(&s, 0, len);
}

Test(safetensors, without_jansson_open)
{
    attn_st *const sentinel = (attn_st *)&sentinel;
    size_t len, empty_len;
    unsigned char *bytes = valid_file(&len), *empty = raw_file("{}", 2, 0, &empty_len);
    for (int disk = 0; disk < 2; disk++)
        for (int which = 0; which < 2; which++) {
            const unsigned char *p = which ? empty : bytes;
            const size_t n = which ? empty_len : len;
            attn_st *f = sentinel;
            char err[256];
            memset(err, 'x', sizeof err);
            attn_status st;
            if (disk) {
                char path[64];
                write_tmp(p, n, path);
                st = attn_st_open(&f, path, err, sizeof err);
                unlink(path);
            } else {
                st = attn_st_open_memory(&f, p, n, err, sizeof err);
            }
            cr_assert_eq(st, ATTN_ENOTSUP, "%s, %s file: status %d", disk ? "attn_st_open" : "attn_st_open_memory",
                         which ? "empty" : "valid", (int)st);
            cr_assert_str_eq(err, NO_JANSSON);
            cr_assert_eq(f, sentinel, "*out written");
        }
    /* No err buffer, one too small: the same status, a NUL-terminated err. */
    attn_st *f = sentinel;
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_ENOTSUP);
    char tiny[1] = {'x'};
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, tiny, 1), ATTN_ENOTSUP);
    cr_assert_eq(tiny[0], '\0');
    cr_assert_eq(attn_st_open(&f, "/nonexistent/model.safetensors", NULL, 0), ATTN_ENOTSUP);
    cr_assert_eq(f, sentinel);

    /* Argument errors come first, as in a jansson build. */
    char err[64] = "";
    cr_assert_eq(attn_st_open_memory(NULL, bytes, len, err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open_memory(&f, NULL, len, err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open(NULL, "/tmp", err, sizeof err), ATTN_EINVAL);
    cr_assert_eq(attn_st_open(&f, NULL, err, sizeof err), ATTN_EINVAL);
    cr_assert(err[0] && strcmp(err, NO_JANSSON), "argument errors have their own reason: %s", err);
    cr_assert_eq(f, sentinel);
    free(bytes);
    free(empty);
}

Test(safetensors, without_jansson_handle)
{
    /* No handle can be opened: one that is not NULL (never dereferenced by these builds) gets past the argument
     * checks. */
    static char storage;
    const attn_st *fake = (const attn_st *)&storage;
    attn_st_tensor t;
    memset(&t, 0x5a, sizeof t);
    const attn_st_tensor before = t;
    cr_assert_eq(attn_st_tensor_at(fake, 0, &t), ATTN_ENOTSUP);
    cr_assert_eq(attn_st_find(fake, "wq", &t), ATTN_ENOTSUP);
    cr_assert_eq(attn_st_tensor_at(NULL, 0, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_tensor_at(fake, 0, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(NULL, "wq", &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(fake, NULL, &t), ATTN_EINVAL);
    cr_assert_eq(attn_st_find(fake, "wq", NULL), ATTN_EINVAL);
    cr_assert(memcmp(&t, &before, sizeof t) == 0, "info written");

    float v[4] = {7.0f, 7.0f, 7.0f, 7.0f};
    cr_assert_eq(attn_st_read_f32(fake, "wq", v, 4), ATTN_ENOTSUP);
    cr_assert_eq(attn_st_read_f32(fake, "wq", NULL, 0), ATTN_ENOTSUP);
    cr_assert_eq(attn_st_read_f32(NULL, "wq", v, 4), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(fake, NULL, v, 4), ATTN_EINVAL);
    cr_assert_eq(attn_st_read_f32(fake, "wq", NULL, 4), ATTN_EINVAL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(v[i], 7.0f, "dst written");

    cr_assert_eq(attn_st_count(fake), 0);
    cr_assert_eq(attn_st_count(NULL), 0);
    cr_assert_null(attn_st_metadata(fake, "format"));
    cr_assert_null(attn_st_metadata(NULL, "format"));
    attn_st_close(NULL);

    const attn_layer_names names = {.wq = "wq", .wk = "wk", .wv = "wv", .bq = "bq"};
    attn_layer_weights w, zero;
    memset(&zero, 0, sizeof zero);
    memset(&w, 0x77, sizeof w);
    char err[256];
    memset(err, 'x', sizeof err);
    cr_assert_eq(attn_layer_load_safetensors(&w, fake, &names, 1, 0, err, sizeof err), ATTN_ENOTSUP);
    cr_assert_str_eq(err, NO_JANSSON);
    cr_assert(memcmp(&w, &zero, sizeof w) == 0, "*out not zeroed");
    memset(&w, 0x77, sizeof w);
    cr_assert_eq(attn_layer_load_safetensors(&w, NULL, &names, 1, 0, err, sizeof err), ATTN_EINVAL);
    cr_assert(memcmp(&w, &zero, sizeof w) == 0, "*out not zeroed");
    cr_assert_eq(attn_layer_load_safetensors(&w, fake, NULL, 1, 0, NULL, 0), ATTN_EINVAL);
    cr_assert_eq(attn_layer_load_safetensors(NULL, fake, &names, 1, 0, NULL, 0), ATTN_EINVAL);
    attn_layer_weights_free(&w); /* zeroed */
    attn_layer_weights_free(NULL);
}

#endif /* ATTN_HAVE_JANSSON */
