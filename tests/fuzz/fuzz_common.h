/* Shared by the libFuzzer targets in tests/fuzz: a reader that decodes the fuzzer's bytes (zeros once they run out),
 * a small PRNG for tensor contents, exact-size allocations and the CHECK macro that turns a broken promise of
 * attn.h into a crash libFuzzer records. Header-only: every target is one translation unit. */
#ifndef ATTN_FUZZ_COMMON_H
#define ATTN_FUZZ_COMMON_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"

/* Harness code that only computes (fills, references, comparisons) gets no coverage instrumentation: tracing its
 * comparisons cost more time than the library's calls, and its branches are no news to the fuzzer. */
#if defined(__clang__) && __clang_major__ >= 13
#define FZ_NOCOV __attribute__((no_sanitize("coverage")))
#else
#define FZ_NOCOV
#endif

/* A failed check: say what and where, then abort (libFuzzer saves the input as crash-<sha1>). */
#define CHECK(cond, ...)                                                                                             \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            fprintf(stderr, "\nfuzz check failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond);                     \
            fprintf(stderr, __VA_ARGS__);                                                                            \
            fprintf(stderr, "\n");                                                                                   \
            abort();                                                                                                 \
        }                                                                                                            \
    } while (0)

static inline int fz_status_defined(attn_status s)
{
    return s == ATTN_OK || s == ATTN_EINVAL || s == ATTN_ERANGE || s == ATTN_ENOMEM || s == ATTN_ENOTSUP;
}

/* ---- reading the input ---- */

typedef struct fz_reader {
    const uint8_t *p;
    size_t n, at;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r) { return r->at < r->n ? r->p[r->at++] : 0; }

static inline uint16_t fz_u16(fz_reader *r)
{
    uint16_t v = fz_u8(r);
    return (uint16_t)(v | fz_u8(r) << 8);
}

static inline uint32_t fz_u32(fz_reader *r)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)fz_u8(r) << (8 * i);
    return v;
}

static inline uint64_t fz_u64(fz_reader *r)
{
    uint64_t v = fz_u32(r);
    return v | (uint64_t)fz_u32(r) << 32;
}

/* A size: mostly 0..40, sometimes up to ~3000, sometimes one of the values that make products overflow. */
static inline size_t fz_size(fz_reader *r)
{
    const uint8_t t = fz_u8(r);
    if (t < 205)
        return t % 41;
    if (t < 240)
        return 41 + fz_u16(r) % 3000;
    static const size_t huge[] = {
        SIZE_MAX,           SIZE_MAX - 1,          SIZE_MAX / 2,           SIZE_MAX / 2 + 1,
        SIZE_MAX / 4 + 1,   SIZE_MAX / 16 + 1,     (size_t)1 << 62,        (size_t)1 << 61,
        ((size_t)1 << 32) + 1, (size_t)1 << 32,    (size_t)1 << 31,        ((size_t)1 << 30) + 1,
        SIZE_MAX / 3,       ((size_t)1 << 20) + 1, SIZE_MAX - 15,          0,
    };
    const size_t v = huge[t - 240];
    return v ? v : (size_t)fz_u64(r); /* the last entry: 8 raw bytes */
}

/* ---- tensor contents ---- */

static inline uint64_t fz_rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* n finite floats in [-mag, mag], a few of them exact zeros. */
FZ_NOCOV static inline void fz_fill(float *p, size_t n, uint64_t *seed, float mag)
{
    for (size_t i = 0; i < n; i++) {
        const uint64_t x = fz_rng_next(seed);
        if ((x & 31) == 0) {
            p[i] = (x & 32) ? -0.0f : 0.0f;
            continue;
        }
        const float u = (float)((double)(x >> 40) / (double)(1ull << 24) * 2.0 - 1.0); /* [-1, 1) */
        p[i] = u * mag;
    }
}

FZ_NOCOV static inline uint64_t fz_hash(const uint8_t *p, size_t n) /* FNV-1a */
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* ---- memory ---- */

/* Exactly n floats (1 when n is 0, so there is a valid pointer to pass), so ASan sees any access past them. */
static inline float *fz_floats(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof(float));
    CHECK(p != NULL, "malloc of %zu floats failed", n);
    return p;
}

FZ_NOCOV static inline float *fz_dup(const float *p, size_t n)
{
    float *c = fz_floats(n);
    memcpy(c, p, n * sizeof(float));
    return c;
}

#define FZ_POISON 0x7fa5dea5u /* a signalling-NaN bit pattern no computation produces */

FZ_NOCOV static inline void fz_poison(float *p, size_t n)
{
    const uint32_t u = (uint32_t)FZ_POISON;
    for (size_t i = 0; i < n; i++)
        memcpy(&p[i], &u, sizeof u);
}

FZ_NOCOV static inline int fz_is_poison(const float *p, size_t n)
{
    const uint32_t u = (uint32_t)FZ_POISON;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&p[i], &u, sizeof u) != 0)
            return 0;
    return 1;
}

/* a * b * ... into *r; 1 if the element count or its byte count overflows size_t. */
static inline int fz_count(size_t *r, size_t n, const size_t *f)
{
    size_t c = 1;
    for (size_t i = 0; i < n; i++)
        if (__builtin_mul_overflow(c, f[i], &c))
            return 1;
    *r = c;
    return c > SIZE_MAX / sizeof(float);
}

#define FZ_COUNT(r, ...) fz_count((r), sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t), (size_t[]){__VA_ARGS__})

#endif
