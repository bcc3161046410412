/* libFuzzer target: the public entry points and their validation (include/attn.h).
 *
 * The input picks an entry point (attn_ctx_create, attn_sdpa, a KV cache with appends, resets and attn_decode,
 * attn_linear, attn_self_attention), a context (every ISA attn_isa_supported accepts, 1 or 2 threads, three
 * block-size settings; created once at start-up) and every argument, invalid ones included. The harness decides
 * on its own, from attn.h, whether a call is valid and how many elements each buffer holds (with overflow checks),
 * then asserts:
 *   - the status is one of the defined codes, and ATTN_OK exactly when the call is valid; when a buffer's element
 *     or byte count overflows, the buffers passed are 1 element long and the status must be ERANGE or EINVAL;
 *   - buffers are malloc'ed at their exact sizes (ASan sees any access past them), inputs are never written, and on
 *     an error the outputs are bit for bit the poison they were filled with (a signalling-NaN pattern);
 *   - on success: a query row that sees no key is all zero (output and probs); a row that sees a key has finite
 *     output and probs that are 0 where masked, in [0, 1] elsewhere and sum to 1, whenever the inputs' magnitudes
 *     cannot overflow fp32; and, where the float error bound is small, the results match a double-precision
 *     reference computed here from the documented semantics (masks, windows, kv_valid, GQA, layouts, half/bfloat16
 *     rounding of the KV cache, half/bfloat16 q/k/v/out and ATTN_MATH_BF16, their roundings in the tolerance);
 *   - the same call on the context with the other thread count gives bitwise the same results.
 * Calls whose valid buffers would exceed FZ_MAX_FLOATS floats, or whose work exceeds FZ_MAX_WORK multiply-adds, are
 * skipped (they would make executions slow without testing anything the small ones do not). */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdlib.h>
#include <time.h>

#include "fuzz_common.h"

#define FZ_MAX_FLOATS ((size_t)1 << 20)
#define FZ_MAX_WORK ((size_t)1 << 18)
#define FZ_U (1.0 / 16777216.0) /* fp32 unit roundoff, 2^-24 */

/* ---- contexts, created once ---- */

#define FZ_NBLOCK 3
static const int fz_blocks[FZ_NBLOCK][2] = {{0, 0}, {1, 1}, {5, 17}}; /* block_q, block_kv; 0: the default */

typedef struct fz_isa_ctxs {
    attn_isa isa;
    attn_ctx *c[2][FZ_NBLOCK]; /* [threads - 1][block setting] */
} fz_isa_ctxs;

#define FZ_N_ISA 8 /* the attn_isa values attn.h defines: AUTO .. NEON_BF16 */
static fz_isa_ctxs fz_isas[FZ_N_ISA];
static int fz_nisa;
static attn_isa fz_best;      /* what AUTO resolves to */
static int fz_default_threads; /* attn_ctx_threads of a context with num_threads 0 and no ATTN_NUM_THREADS */

/* FUZZ_TRACE=1 in the environment: one line per call on stderr (what was called, the status), for checking what
 * an input exercises. */
static int fz_trace;
#define TRACE(...)                                                                                                   \
    do {                                                                                                             \
        if (fz_trace)                                                                                                \
            fprintf(stderr, __VA_ARGS__);                                                                            \
    } while (0)

static const char *const fz_env_vars[] = {"ATTN_NUM_THREADS", "ATTN_ISA", "ATTN_KERNELS", "ATTN_BLOCK_Q",
                                          "ATTN_BLOCK_KV", "ATTN_VERBOSE"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_trace = getenv("FUZZ_TRACE") && atoi(getenv("FUZZ_TRACE")) > 0;
    /* OpenMP workers that spin after each call would take the CPU the fuzzer runs on: let them sleep at once. */
    setenv("KMP_BLOCKTIME", "0", 0);
    setenv("OMP_WAIT_POLICY", "passive", 0);
    for (size_t i = 0; i < sizeof fz_env_vars / sizeof fz_env_vars[0]; i++)
        unsetenv(fz_env_vars[i]);
    CHECK(attn_isa_supported(ATTN_ISA_AUTO) == 1 && attn_isa_supported(ATTN_ISA_SCALAR) == 1, "AUTO/SCALAR");
    CHECK(attn_isa_supported((attn_isa)FZ_N_ISA) == 0 && attn_isa_supported((attn_isa)-1) == 0, "out-of-enum ISA");
    CHECK(strcmp(attn_isa_name((attn_isa)(FZ_N_ISA - 1)), "unknown") != 0 &&
              strcmp(attn_isa_name((attn_isa)FZ_N_ISA), "unknown") == 0,
          "attn_isa_name knows exactly FZ_N_ISA values");
    CHECK(strcmp(attn_isa_name((attn_isa)99), "unknown") == 0, "attn_isa_name(99)");
    CHECK(strcmp(attn_strerror((attn_status)12345), "unknown status") == 0, "attn_strerror(12345)");
    attn_ctx *d = NULL;
    CHECK(attn_ctx_create(&d, NULL) == ATTN_OK, "default context");
    fz_best = attn_ctx_isa(d);
    fz_default_threads = attn_ctx_threads(d);
    CHECK(fz_best != ATTN_ISA_AUTO && attn_isa_supported(fz_best) && fz_default_threads >= 1, "default context");
    attn_ctx_destroy(d);
    for (int isa = 0; strcmp(attn_isa_name((attn_isa)isa), "unknown") != 0; isa++) {
        if (!attn_isa_supported((attn_isa)isa))
            continue;
        fz_isa_ctxs *e = &fz_isas[fz_nisa++];
        e->isa = (attn_isa)isa;
        for (int t = 0; t < 2; t++)
            for (int b = 0; b < FZ_NBLOCK; b++) {
                const attn_config cfg = {.num_threads = t + 1, .isa = (attn_isa)isa, .block_q = fz_blocks[b][0],
                                         .block_kv = fz_blocks[b][1]};
                attn_status s = attn_ctx_create(&e->c[t][b], &cfg);
                CHECK(s == ATTN_OK, "attn_ctx_create(isa %s, %d threads) = %d", attn_isa_name((attn_isa)isa), t + 1,
                      (int)s);
                CHECK(attn_ctx_threads(e->c[t][b]) == t + 1, "threads");
                CHECK(attn_ctx_isa(e->c[t][b]) == (isa == ATTN_ISA_AUTO ? fz_best : (attn_isa)isa), "isa");
            }
    }
    CHECK(attn_ctx_isa(NULL) == ATTN_ISA_SCALAR && attn_ctx_threads(NULL) == 0, "NULL context getters");
    return 0;
}

/* The context for a call, and the one with the other thread count (same ISA and blocks) for the bitwise check. */
typedef struct fz_pick {
    const attn_ctx *ctx, *other;
    int compare;
} fz_pick;

static fz_pick fz_pick_ctx(fz_reader *r)
{
    const uint8_t a = fz_u8(r), b = fz_u8(r);
    const fz_isa_ctxs *e = &fz_isas[a % fz_nisa];
    const int t = b & 1, blk = (b >> 1) % FZ_NBLOCK;
    return (fz_pick){e->c[t][blk], e->c[!t][blk], (b >> 3) & 1};
}

static float fz_mag(fz_reader *r)
{
    static const float mags[] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 16.0f, 1e-3f, 1e-20f, 1e-40f, 1e15f, 1e30f, 3e38f, 100.0f};
    return mags[fz_u8(r) % (sizeof mags / sizeof mags[0])];
}

/* A value for an int-sized field: mostly boundary values, else 32 raw bits. */
static int32_t fz_int_field(fz_reader *r)
{
    static const int32_t vals[] = {0, 0, 0, 1, 2, 3, -1, 1024, 1025, 4096, 4097, INT32_MIN, INT32_MAX, 5, 16, 256};
    const uint8_t t = fz_u8(r);
    return t < 224 ? vals[t % 16] : (int32_t)fz_u32(r);
}

/* An enum-typed field: mostly the valid values, sometimes any 32-bit pattern. */
static uint32_t fz_enum_field(fz_reader *r, unsigned n_valid)
{
    const uint8_t t = fz_u8(r);
    if (t < 232)
        return t % n_valid;
    static const uint32_t odd[] = {2, 3, 5, 0x7fffffff, 0x80000000u, 0xffffffffu, 256};
    return t < 248 ? odd[t % 7] : fz_u32(r);
}

/* A position: mostly small, sometimes past 2^32 or at the 2^62 limit and beyond. */
static size_t fz_pos(fz_reader *r)
{
    static const size_t big[] = {((size_t)1 << 32) + 3, ((size_t)1 << 62) - 64, ((size_t)1 << 62) - 1,
                                 (size_t)1 << 62, SIZE_MAX, 1000, 65536, 0};
    const uint8_t t = fz_u8(r);
    return t < 200 ? t : big[t % 8];
}

static float fz_scale(fz_reader *r)
{
    const uint8_t t = fz_u8(r);
    if (t < 112)
        return 0.0f;
    static const uint32_t bits[] = {
        0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7f800000u, 0xff800000u, 0x00000001u, 0x00800000u, 0x7f7fffffu,
        0x80000000u, 0x3f800000u, 0xbf800000u, 0x3e000000u, 0x7149f2cau, 0x0da24260u, 0x3eb504f3u, 0x41200000u,
    };
    uint32_t u = t < 208 ? bits[t % 16] : fz_u32(r);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* n_kv_heads: 0 (= n_heads), a divisor of n_heads (valid GQA) or anything. */
static size_t fz_kv_heads(fz_reader *r, size_t n_heads)
{
    const uint8_t t = fz_u8(r);
    if (t < 80)
        return 0;
    if (t < 200 && n_heads && n_heads <= 4096) {
        size_t k = 1 + fz_u8(r) % n_heads;
        while (n_heads % k)
            k--;
        return k;
    }
    return fz_size(r);
}

/* ---- attn_ctx_create with a fuzzed config ---- */

static void fz_ctx_create(fz_reader *r)
{
    attn_config cfg = {0};
    cfg.num_threads = fz_int_field(r);
    cfg.isa = (attn_isa)fz_enum_field(r, FZ_N_ISA);
    cfg.block_q = fz_int_field(r);
    cfg.block_kv = fz_int_field(r);
    if (cfg.num_threads > 4 && cfg.num_threads <= 1024 && (fz_u8(r) & 1))
        cfg.num_threads = 2; /* keep the small call below from starting hundreds of threads most of the time */
    const int null_out = fz_u8(r) < 8;
    int inval = null_out || cfg.num_threads < 0 || cfg.num_threads > 1024 || (uint32_t)cfg.isa >= FZ_N_ISA ||
                cfg.block_q < 0 || cfg.block_q > 4096 || cfg.block_kv < 0 || cfg.block_kv > 4096;
    /* The kernel variant: none (most of the time), one of the registry's names, or one that is not. */
    const uint8_t kv = fz_u8(r);
    attn_isa level = cfg.isa == ATTN_ISA_AUTO ? fz_best : cfg.isa;
    if (kv >= 160) {
        size_t nv = 0;
        while (attn_kernels_name(nv))
            nv++;
        if (kv >= 250) {
            cfg.kernels = kv & 1 ? "avx512/nosuch" : "";
            inval = 1;
        } else {
            cfg.kernels = attn_kernels_name(kv % nv);
            attn_isa vl = ATTN_ISA_SCALAR;
            while (strncmp(cfg.kernels, attn_isa_name(vl), strcspn(cfg.kernels, "/")) ||
                   strlen(attn_isa_name(vl)) != strcspn(cfg.kernels, "/"))
                vl = (attn_isa)(vl + 1);
            inval |= cfg.isa != ATTN_ISA_AUTO && cfg.isa != vl;
            level = vl;
        }
    }
    const attn_status want = inval ? ATTN_EINVAL : !attn_isa_supported(level) ? ATTN_ENOTSUP : ATTN_OK;
    attn_ctx *const sentinel = (attn_ctx *)&fz_nisa, *ctx = sentinel;
    const attn_config saved = cfg;
    const attn_status s = attn_ctx_create(null_out ? NULL : &ctx, &cfg);
    TRACE("attn_ctx_create(threads %d, isa %u, block_q %d, block_kv %d, null %d) = %d\n", cfg.num_threads,
          (unsigned)cfg.isa, cfg.block_q, cfg.block_kv, null_out, (int)s);
    CHECK(memcmp(&saved, &cfg, sizeof cfg) == 0, "attn_ctx_create wrote its config");
    CHECK(s == want, "attn_ctx_create(threads %d, isa %u, block_q %d, block_kv %d) = %d, want %d", cfg.num_threads,
          (unsigned)cfg.isa, cfg.block_q, cfg.block_kv, (int)s, (int)want);
    if (s != ATTN_OK) {
        CHECK(ctx == sentinel, "*out written on error");
        return;
    }
    CHECK(attn_ctx_threads(ctx) == (cfg.num_threads ? cfg.num_threads : fz_default_threads), "threads %d",
          attn_ctx_threads(ctx));
    CHECK(attn_ctx_isa(ctx) == level, "isa %d", (int)attn_ctx_isa(ctx));
    CHECK(!cfg.kernels || !strcmp(attn_ctx_kernels(ctx), cfg.kernels), "kernels %s, asked for %s",
          attn_ctx_kernels(ctx), cfg.kernels);
    /* The context works: a small causal call with GQA gives a finite output. */
    const size_t H = 2, L = 3, D = 5;
    float q[2 * 3 * 5], k[3 * 5], v[3 * 5], out[2 * 3 * 5];
    uint64_t seed = 7;
    fz_fill(q, H * L * D, &seed, 1.0f);
    fz_fill(k, L * D, &seed, 1.0f);
    fz_fill(v, L * D, &seed, 1.0f);
    const attn_sdpa_desc d = {.batch = 1, .n_heads = H, .n_kv_heads = 1, .q_len = L, .kv_len = L, .head_dim = D,
                              .mask = ATTN_MASK_CAUSAL};
    CHECK(attn_sdpa(ctx, &d, q, k, v, out, NULL) == ATTN_OK, "attn_sdpa on a fresh context");
    for (size_t i = 0; i < H * L * D; i++)
        CHECK(isfinite(out[i]), "out[%zu] = %g", i, out[i]);
    attn_ctx_destroy(ctx);
}

/* ---- float formats ---- */

/* x rounded to a float format with mant explicit mantissa bits and smallest normal exponent emin, to nearest even;
 * past max it is infinity. Independent of the library's bit tricks. */
FZ_NOCOV static float fz_round_fmt(float x, int mant, int emin, double max)
{
    if (!isfinite(x) || x == 0.0f)
        return x;
    int e;
    frexp((double)x, &e); /* |x| in [2^(e-1), 2^e) */
    int qe = (e - 1 < emin ? emin : e - 1) - mant; /* the quantum's exponent */
    const double q = ldexp(1.0, qe), r = nearbyint((double)x / q) * q;
    if (fabs(r) > max)
        return x > 0 ? INFINITY : -INFINITY;
    return (float)r;
}

static float fz_store_round(attn_dtype t, float x)
{
    if (t == ATTN_F16)
        return fz_round_fmt(x, 10, -14, 65504.0);
    if (t == ATTN_BF16)
        return fz_round_fmt(x, 7, -126, 3.3895313892515355e38);
    return x;
}

/* An ATTN_I8 row as the cache reads it back (attn.h): x_q = nearbyintf(x / s) within +-127, s = max|x| / 127 in
 * fp32 (0 for an all-zero row), read as x_q * s; in place. */
FZ_NOCOV static void fz_quant_row(float *x, size_t n)
{
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float s = mx / 127.0f;
    for (size_t i = 0; i < n; i++)
        x[i] = s == 0.0f ? 0.0f : fmaxf(-127.0f, fminf(127.0f, nearbyintf(x[i] / s))) * s;
}

/* The binary16 bits of x, which must be a binary16 value (fz_store_round(ATTN_F16, .)), infinity or NaN. */
FZ_NOCOV static uint16_t fz_f16_bits(float x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs((double)x);
    if (isnan(x))
        return 0x7e00;
    if (isinf(x))
        return sign | 0x7c00;
    if (a == 0.0)
        return sign;
    int e;
    frexp(a, &e); /* a in [2^(e-1), 2^e) */
    if (e - 1 < -14)
        return sign | (uint16_t)ldexp(a, 24); /* subnormal: a multiple of 2^-24 */
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)((ldexp(a, 1 - e) - 1.0) * 1024.0);
}

FZ_NOCOV static float fz_f16_value(uint16_t h)
{
    const int e = h >> 10 & 31, m = h & 1023;
    const double a = e == 31 ? (m ? NAN : INFINITY) : e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return (float)(h & 0x8000 ? -a : a);
}

static size_t fz_esize(attn_dtype t) { return t == ATTN_F16 || t == ATTN_BF16 ? 2 : 4; }

/* Rounds the n floats at p to type t in place (the values the library will read) and returns them stored as t, in
 * a buffer of exactly n elements of t. */
FZ_NOCOV static void *fz_typed(float *p, size_t n, attn_dtype t)
{
    const size_t es = fz_esize(t);
    unsigned char *b = malloc((n ? n : 1) * es);
    CHECK(b != NULL, "malloc");
    for (size_t i = 0; i < n; i++) {
        p[i] = fz_store_round(t, p[i]);
        uint32_t u;
        memcpy(&u, &p[i], 4);
        const uint16_t h = t == ATTN_F16 ? fz_f16_bits(p[i]) : (uint16_t)(u >> 16);
        memcpy(b + i * es, es == 2 ? (const void *)&h : (const void *)&u, es);
    }
    return b;
}

/* Exactly n elements of t, each a signalling NaN of t (the float one for a type outside the enum). */
static void *fz_typed_poison(size_t n, attn_dtype t)
{
    const size_t es = fz_esize(t);
    unsigned char *b = malloc((n ? n : 1) * es);
    CHECK(b != NULL, "malloc");
    const uint32_t u = FZ_POISON;
    const uint16_t h = t == ATTN_F16 ? 0x7da5 : 0x7fa5;
    for (size_t i = 0; i < n; i++)
        memcpy(b + i * es, es == 2 ? (const void *)&h : (const void *)&u, es);
    return b;
}

static int fz_typed_is_poison(const void *b, size_t n, attn_dtype t)
{
    unsigned char *c = fz_typed_poison(n, t);
    const int same = !memcmp(b, c, n * fz_esize(t));
    free(c);
    return same;
}

/* n elements of t as floats, in a new buffer. */
FZ_NOCOV static float *fz_typed_floats(const void *b, size_t n, attn_dtype t)
{
    float *f = fz_floats(n);
    const unsigned char *c = b;
    for (size_t i = 0; i < n; i++) {
        if (fz_esize(t) == 4) {
            memcpy(&f[i], c + 4 * i, 4);
            continue;
        }
        uint16_t h;
        memcpy(&h, c + 2 * i, 2);
        const uint32_t u = (uint32_t)h << 16;
        if (t == ATTN_F16)
            f[i] = fz_f16_value(h);
        else
            memcpy(&f[i], &u, 4);
    }
    return f;
}

/* A copy of p with each element rounded to bfloat16 (ATTN_MATH_BF16's operands). */
FZ_NOCOV static float *fz_bf16_copy(const float *p, size_t n)
{
    float *c = fz_dup(p, n);
    for (size_t i = 0; i < n; i++)
        c[i] = fz_store_round(ATTN_BF16, c[i]);
    return c;
}

/* ---- the reference for attention ---- */

/* One attention call with everything resolved: element (b, h, s, c) of a tensor with `heads` heads, `len` positions
 * and rows of `w` floats is at fz_at(...). */
typedef struct fz_attn {
    size_t batch, h, hk, q_len, kv_len, d, dv;
    int bshd, causal;
    size_t window;
    const int32_t *kv_valid;
    float scale; /* the effective scale */
    /* ATTN_MATH_BF16's rounding of the softmax weights (relative, 2^-8; 0 in fp32 math) and the output's own
     * rounding (relative u_out, absolute abs_out below half's normal range); out_f16: out is binary16, which
     * overflows past 65504 */
    double u_p, u_out, abs_out;
    int out_f16;
    int unscaled; /* ATTN_MATH_BF16: q . k is summed in fp32 before the scale (attn.h), so it must not overflow */
    /* kv tensors may use their own layout (the KV cache: [t][hk][d] whatever the query layout) */
    int kv_bshd;
    int positions; /* 1: query i at qpos0 + i, key j at kpos0 + j; 0: bottom-right */
    int64_t qpos0, kpos0;
    const float *lse; /* NULL, or the call's lse [batch][h][q_len] */
    /* score modifiers (attn_sdpa_desc): softcap, ALiBi slopes and sinks per head, the bias and its strides */
    float softcap;
    const float *slopes, *sinks, *bias;
    size_t bst[3];
} fz_attn;

FZ_NOCOV static size_t fz_at(int bshd, size_t heads, size_t len, size_t w, size_t b, size_t h, size_t s, size_t c)
{
    return bshd ? ((b * len + s) * heads + h) * w + c : ((b * heads + h) * len + s) * w + c;
}

/* Does query i of batch b see key j? (attn.h: causal mask and window on positions, bottom-right aligned unless
 * positions is 1; kv_valid on the key index.) */
FZ_NOCOV static int fz_sees(const fz_attn *a, size_t b, size_t i, size_t j)
{
    if (a->kv_valid && (int64_t)j >= (int64_t)a->kv_valid[b])
        return 0;
    /* p: the query's position less key 0's, in key-index units (positions below 2^62: no overflow) */
    const int64_t p = a->positions ? a->qpos0 + (int64_t)i - a->kpos0
                                   : (int64_t)i + (int64_t)a->kv_len - (int64_t)a->q_len;
    if (a->causal && (int64_t)j > p)
        return 0;
    if (a->window && (uint64_t)(p - (int64_t)j) >= a->window)
        return 0; /* here j <= p: window needs the causal mask */
    return 1;
}

FZ_NOCOV static double fz_absmax(const float *p, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs(p[i]) > m ? fabs(p[i]) : m;
    return m;
}

/* Checks out (and probs when not NULL) of a successful call against the semantics and, where the float error bound
 * is small, against a double-precision reference. */
FZ_NOCOV static void fz_attn_verify(const fz_attn *a, const float *q, const float *k, const float *v, const float *out,
                           const float *probs)
{
    const size_t kvn = a->batch * a->hk * a->kv_len;
    const double qmax = fz_absmax(q, a->batch * a->h * a->q_len * a->d), kmax = fz_absmax(k, kvn * a->d),
                 vmax = fz_absmax(v, kvn * a->dv), sc = fabs((double)a->scale);
    /* fp32 cannot overflow on the way: scaled queries, scores, and the unnormalised sum of values. */
    const int finite_ok = qmax * sc < 1e30 && sc * qmax * kmax * (double)a->d < 1e30 &&
                          vmax * (double)(a->kv_len + 1) < 1e37 && (!a->out_f16 || vmax <= 65504.0) &&
                          (!a->unscaled || qmax * kmax * (double)a->d < 1e30);
    const size_t group = a->h / a->hk;
    const size_t ns = (a->kv_len > a->dv ? a->kv_len : a->dv) + 1;
    double *s = malloc(ns * sizeof *s), *sabs = malloc(ns * sizeof *sabs); /* sabs: then the output row */
    CHECK(s && sabs, "malloc");
    for (size_t b = 0; b < a->batch; b++)
        for (size_t h = 0; h < a->h; h++)
            for (size_t i = 0; i < a->q_len; i++) {
                const size_t kh = h / group;
                const float *orow = out + fz_at(a->bshd, a->h, a->q_len, a->dv, b, h, i, 0);
                const float *prow = probs ? probs + ((b * a->h + h) * a->q_len + i) * a->kv_len : NULL;
                size_t nvis = 0;
                double m = -INFINITY, dsmax = 0, vrow = 0;
                for (size_t j = 0; j < a->kv_len; j++) {
                    const double bj = a->bias ? a->bias[b * a->bst[0] + h * a->bst[1] + i * a->bst[2] + j] : 0.0;
                    if (!fz_sees(a, b, i, j) || bj == -INFINITY) { /* a -inf bias masks the pair too */
                        if (prow)
                            CHECK(prow[j] == 0.0f, "probs[b %zu][h %zu][i %zu][j %zu] = %g, want 0 (masked)", b, h,
                                  i, j, prow[j]);
                        s[j] = -INFINITY;
                        continue;
                    }
                    nvis++;
                    double dot = 0, dabs = 0;
                    const float *qr = q + fz_at(a->bshd, a->h, a->q_len, a->d, b, h, i, 0);
                    const float *kr = k + fz_at(a->kv_bshd, a->hk, a->kv_len, a->d, b, kh, j, 0);
                    for (size_t c = 0; c < a->d; c++) {
                        dot += (double)qr[c] * kr[c];
                        dabs += fabs((double)qr[c] * kr[c]);
                    }
                    /* the score and its float error: d ulps of the dot's absolute sum, then a few of each modifier */
                    double x = dot * a->scale, e = (double)(a->d + 4) * FZ_U * dabs * sc;
                    if (a->softcap != 0.0f) {
                        x = a->softcap * tanh(x / a->softcap);
                        e += 8 * FZ_U * a->softcap;
                    }
                    if (a->slopes) {
                        const int64_t qp = a->positions ? a->qpos0 + (int64_t)i
                                                        : (int64_t)i + (int64_t)a->kv_len - (int64_t)a->q_len;
                        const int64_t kp = a->positions ? a->kpos0 + (int64_t)j : (int64_t)j;
                        const double t = (double)a->slopes[h] * (double)(kp - qp);
                        x += t;
                        e += 4 * FZ_U * (fabs(t) + fabs(x));
                    }
                    x += bj;
                    e += 4 * FZ_U * (fabs(bj) + fabs(x));
                    s[j] = x;
                    m = s[j] > m ? s[j] : m;
                    dsmax = e > dsmax ? e : dsmax;
                    const double vm = fz_absmax(v + fz_at(a->kv_bshd, a->hk, a->kv_len, a->dv, b, kh, j, 0), a->dv);
                    vrow = vm > vrow ? vm : vrow;
                }
                const float lrow = a->lse ? a->lse[(b * a->h + h) * a->q_len + i] : 0.0f;
                if (!nvis) {
                    CHECK(!a->lse || lrow == -INFINITY, "lse[b %zu][h %zu][i %zu] = %g: a row that sees no key", b, h,
                          i, lrow);
                    for (size_t c = 0; c < a->dv; c++)
                        CHECK(orow[c] == 0.0f, "out[b %zu][h %zu][i %zu][%zu] = %g: a row that sees no key", b, h, i,
                              c, orow[c]);
                    if (prow)
                        for (size_t j = 0; j < a->kv_len; j++)
                            CHECK(prow[j] == 0.0f, "probs of a row that sees no key");
                    continue;
                }
                if (!finite_ok)
                    continue;
                for (size_t c = 0; c < a->dv; c++)
                    CHECK(isfinite(orow[c]), "out[b %zu][h %zu][i %zu][%zu] = %g is not finite", b, h, i, c, orow[c]);
                CHECK(!a->lse || isfinite(lrow), "lse[b %zu][h %zu][i %zu] = %g is not finite", b, h, i, lrow);
                double psum = 0;
                if (prow) { /* sums to 1, or less by a sink's share */
                    for (size_t j = 0; j < a->kv_len; j++) {
                        CHECK(prow[j] >= 0.0f && prow[j] <= 1.0f, "probs[b %zu][h %zu][i %zu][j %zu] = %g", b, h, i,
                              j, prow[j]);
                        psum += prow[j];
                    }
                    CHECK(a->sinks ? psum <= 1.0 + 1e-3 : fabs(psum - 1.0) <= 1e-3 + (double)a->kv_len * 4 * FZ_U,
                          "probs row (b %zu, h %zu, i %zu) sums to %.9g", b, h, i, psum);
                }
                /* The reference, where the scores' float error stays small. */
                const double ds = dsmax;
                if (ds > 0.05)
                    continue;
                /* s[j] becomes the softmax weight of key j, 0 where masked; a sink joins the denominator only. */
                double l = 0;
                for (size_t j = 0; j < a->kv_len; j++)
                    l += (s[j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - m));
                const double lse_want = m + log(l);
                if (a->sinks)
                    l += exp((double)a->sinks[h] - m);
                for (size_t j = 0; j < a->kv_len; j++)
                    s[j] /= l;
                if (prow && a->sinks) {
                    double want = 0;
                    for (size_t j = 0; j < a->kv_len; j++)
                        want += s[j];
                    CHECK(fabs(psum - want) <= 1e-3 + 4 * ds, "probs row (b %zu, h %zu, i %zu) sums to %.9g, with the "
                          "sink %.9g", b, h, i, psum, want);
                }
                if (a->lse) { /* the max score's error, the sum's rounding, log's */
                    const double want = lse_want, tl = 2 * ds + (double)(a->kv_len + 8) * 4 * FZ_U + 4 * FZ_U * fabs(want);
                    CHECK(fabs(lrow - want) <= tl, "lse[b %zu][h %zu][i %zu] = %.9g, reference %.9g (tolerance %.3g)", b,
                          h, i, lrow, want, tl);
                }
                const double slack = (double)(a->kv_len + 8) * 4 * FZ_U,
                             tol = (4 * (2 * ds + slack + a->u_p) + 2 * a->u_out) * vrow + a->abs_out + 1e-37;
                for (size_t c = 0; c < a->dv; c++)
                    sabs[c] = 0;
                for (size_t j = 0; j < a->kv_len; j++)
                    if (s[j] != 0.0) {
                        const float *vr = v + fz_at(a->kv_bshd, a->hk, a->kv_len, a->dv, b, kh, j, 0);
                        for (size_t c = 0; c < a->dv; c++)
                            sabs[c] += s[j] * vr[c];
                    }
                for (size_t c = 0; c < a->dv; c++)
                    CHECK(fabs(orow[c] - sabs[c]) <= tol,
                          "out[b %zu][h %zu][i %zu][%zu] = %.9g, reference %.9g (tolerance %.3g, %zu keys seen)", b,
                          h, i, c, orow[c], sabs[c], tol, nvis);
                if (prow)
                    for (size_t j = 0; j < a->kv_len; j++) {
                        if (!fz_sees(a, b, i, j))
                            continue;
                        const double p = s[j], tol = 4 * (3 * ds + slack) * p + 1e-37;
                        CHECK(fabs(prow[j] - p) <= tol,
                              "probs[b %zu][h %zu][i %zu][j %zu] = %.9g, reference %.9g (tolerance %.3g)", b, h, i, j,
                              prow[j], p, tol);
                    }
            }
    free(s);
    free(sabs);
}

/* ---- attn_sdpa ---- */

static void fz_sdpa(fz_reader *r)
{
    const fz_pick pk = fz_pick_ctx(r);
    attn_sdpa_desc d;
    memset(&d, 0, sizeof d);
    d.batch = fz_size(r);
    d.n_heads = fz_size(r);
    d.n_kv_heads = fz_kv_heads(r, d.n_heads);
    d.q_len = fz_size(r);
    d.kv_len = fz_size(r);
    d.head_dim = fz_size(r);
    d.v_dim = fz_u8(r) < 128 ? 0 : fz_size(r);
    d.layout = (attn_layout)fz_enum_field(r, 2);
    d.scale = fz_scale(r);
    d.mask = (attn_mask)fz_enum_field(r, 2);
    d.window = fz_u8(r) < 150 ? 0 : fz_size(r);
    const uint8_t fl = fz_u8(r), nul = fz_u8(r);
    const int want_probs = fl & 1, with_valid = (fl & 6) == 0 && d.batch && d.batch <= 64;
    const float mag = fz_mag(r);
    int32_t valid[64];
    if (with_valid)
        for (size_t b = 0; b < d.batch; b++) {
            const uint8_t t = fz_u8(r);
            valid[b] = t < 224 ? (int32_t)(t % (d.kv_len < 1000 ? d.kv_len + 2 : 1002))
                       : t < 240 ? (int32_t)d.kv_len + (int32_t)(t & 3) - 1
                                 : (int32_t)fz_u32(r);
        }
    d.kv_valid = with_valid ? valid : NULL;
    /* Element types and math, read last so that inputs from before they existed still make fp32 calls. */
    if (fz_u8(r) >= 128) {
        d.q_dtype = (attn_dtype)fz_enum_field(r, 3);
        d.kv_dtype = (attn_dtype)fz_enum_field(r, 3);
        d.out_dtype = (attn_dtype)fz_enum_field(r, 3);
        d.math = (attn_math)fz_enum_field(r, 2);
    }
    /* Explicit positions and the lse output, read after those. */
    const uint8_t pl = fz_u8(r);
    if (pl >= 128) {
        d.positions = (int)fz_enum_field(r, 2);
        d.q_pos0 = fz_pos(r);
        d.kv_pos0 = fz_pos(r);
    }
    const int want_lse = pl & 1;
    /* Score modifiers, read after those: softcap from a table (invalid ones too), ALiBi slopes, sinks, a bias
     * tensor per element, one [q][kv] matrix broadcast, or one row broadcast to all. */
    const uint8_t mb = fz_u8(r);
    static const float caps[] = {0.0f, 1.0f, 30.0f, 1e-3f, 50.0f, -1.0f, INFINITY, NAN};
    if (mb & 0x80)
        d.softcap = caps[fz_u8(r) % 8];
    const int with_slopes = mb & 1, with_sinks = mb & 2, bias_mode = mb & 4 ? 1 + fz_u8(r) % 3 : 0;
    const int null_arg = nul < 14 ? 1 + nul % 7 : 0; /* 1 ctx, 2 d, 3 q, 4 k, 5 v, 6 out, 7 out (and probs) */
    const uint64_t seed0 = fz_hash(r->p, r->n);

    /* The oracle, from attn.h alone. */
    const size_t hk = d.n_kv_heads ? d.n_kv_heads : d.n_heads, dv = d.v_dim ? d.v_dim : d.head_dim;
    int inval = null_arg || !d.batch || !d.n_heads || !d.q_len || !d.kv_len || !d.head_dim || !hk ||
                d.n_heads % hk || (uint32_t)d.layout > 1 || (uint32_t)d.mask > 1 ||
                (d.window && d.mask != ATTN_MASK_CAUSAL) || !isfinite(d.scale) || (uint32_t)d.q_dtype > 2 ||
                (uint32_t)d.kv_dtype > 2 || (uint32_t)d.out_dtype > 2 || (uint32_t)d.math > 1 ||
                (uint32_t)d.positions > 1 || !(d.softcap >= 0.0f && d.softcap < INFINITY);
    /* Positions past 2^62: ATTN_ERANGE (or EINVAL when something else is wrong too: either may be checked first). */
    const size_t pmax = (size_t)1 << 62;
    const int prange = d.positions == 1 && (d.q_len > pmax || d.q_pos0 > pmax - d.q_len || d.kv_len > pmax ||
                                            d.kv_pos0 > pmax - d.kv_len);
    if (with_valid)
        for (size_t b = 0; b < d.batch; b++)
            inval |= valid[b] < 0 || (uint64_t)valid[b] > d.kv_len;
    size_t nq = 0, nk = 0, nv = 0, no = 0, np = 0, nl = 0, nb = 0;
    const int ovf = FZ_COUNT(&nq, d.batch, d.n_heads, d.q_len, d.head_dim) | FZ_COUNT(&nl, d.batch, d.n_heads, d.q_len) |
                    (bias_mode == 1 ? FZ_COUNT(&nb, d.batch, d.n_heads, d.q_len, d.kv_len)
                     : bias_mode == 2 ? FZ_COUNT(&nb, d.q_len, d.kv_len)
                     : bias_mode == 3 ? (nb = d.kv_len, 0) : 0) |
                    FZ_COUNT(&nk, d.batch, hk, d.kv_len, d.head_dim) | FZ_COUNT(&nv, d.batch, hk, d.kv_len, dv) |
                    FZ_COUNT(&no, d.batch, d.n_heads, d.q_len, dv) |
                    (want_probs ? FZ_COUNT(&np, d.batch, d.n_heads, d.q_len, d.kv_len) : 0);
    size_t work = 0;
    const int big = ovf || nq > FZ_MAX_FLOATS || nl > FZ_MAX_FLOATS || nb > FZ_MAX_FLOATS || nk > FZ_MAX_FLOATS || nv > FZ_MAX_FLOATS || no > FZ_MAX_FLOATS ||
                    np > FZ_MAX_FLOATS || FZ_COUNT(&work, d.batch, d.n_heads, d.q_len, d.kv_len, d.head_dim + dv) ||
                    work > FZ_MAX_WORK;
    if (big && !ovf)
        return; /* counts fit but are too large to run here */
    if (ovf)
        nq = nk = nv = no = np = nl = nb = 1; /* the library must refuse before touching any of them */

    float *q = fz_floats(nq), *k = fz_floats(nk), *v = fz_floats(nv);
    float *probs = want_probs ? fz_floats(np) : NULL;
    uint64_t seed = seed0;
    fz_fill(q, nq, &seed, mag);
    fz_fill(k, nk, &seed, mag);
    fz_fill(v, nv, &seed, mag);
    /* q, k, v become the values stored (rounded to their types); qb, kb, vb hold them as the library reads them. */
    void *qb = fz_typed(q, nq, d.q_dtype), *kb = fz_typed(k, nk, d.kv_dtype), *vb = fz_typed(v, nv, d.kv_dtype);
    void *out = fz_typed_poison(no, d.out_dtype);
    float *lse = want_lse ? fz_floats(nl) : NULL;
    /* Modifier inputs, exact sizes: slopes and sinks [n_heads] (1 when the sizes overflow), the bias with -inf
     * holes. */
    const size_t nh = ovf || d.n_heads > FZ_MAX_FLOATS ? 1 : d.n_heads; /* huge only in calls refused early */
    float *slopes = with_slopes ? fz_floats(nh) : NULL, *sinks = with_sinks ? fz_floats(nh) : NULL;
    float *bias = bias_mode ? fz_floats(nb) : NULL;
    if (slopes)
        fz_fill(slopes, nh, &seed, 1.0f);
    if (sinks)
        fz_fill(sinks, nh, &seed, 8.0f);
    if (bias) {
        fz_fill(bias, nb, &seed, 2.0f);
        for (size_t e = 0; e < nb; e++)
            if ((fz_rng_next(&seed) & 7) == 0)
                bias[e] = -INFINITY;
        if (bias_mode == 1) { /* saturated where they overflow: the library must then refuse the call */
            size_t s1, s0;
            if (__builtin_mul_overflow(d.q_len, d.kv_len, &s1))
                s1 = SIZE_MAX;
            if (__builtin_mul_overflow(d.n_heads, s1, &s0))
                s0 = SIZE_MAX;
            d.bias_stride[0] = s0, d.bias_stride[1] = s1;
        }
        if (bias_mode <= 2)
            d.bias_stride[2] = d.kv_len;
    }
    d.alibi_slopes = slopes;
    d.sinks = sinks;
    d.bias = bias;
    if (probs)
        fz_poison(probs, np);
    if (lse)
        fz_poison(lse, nl);
    d.lse = lse;
    const size_t bq = nq * fz_esize(d.q_dtype), bk = nk * fz_esize(d.kv_dtype), bv = nv * fz_esize(d.kv_dtype),
                 bo = no * fz_esize(d.out_dtype);
    unsigned char *q0 = malloc(bq + 1), *k0 = malloc(bk + 1), *v0 = malloc(bv + 1);
    CHECK(q0 && k0 && v0, "malloc");
    memcpy(q0, qb, bq), memcpy(k0, kb, bk), memcpy(v0, vb, bv);
    const attn_sdpa_desc d0 = d;

    const attn_status s = attn_sdpa(null_arg == 1 ? NULL : pk.ctx, null_arg == 2 ? NULL : &d, null_arg == 3 ? NULL : qb,
                                    null_arg == 4 ? NULL : kb, null_arg == 5 ? NULL : vb,
                                    null_arg >= 6 ? NULL : out, null_arg == 7 ? NULL : probs);
    TRACE("attn_sdpa(isa %s, batch %zu, heads %zu, kv_heads %zu, q_len %zu, kv_len %zu, head_dim %zu, v_dim %zu, "
          "layout %u, mask %u, window %zu, scale %g, kv_valid %d, probs %d, null %d, overflow %d, dtypes q %u kv %u "
          "out %u, math %u, positions %d %zu %zu, lse %d, softcap %g, alibi %d, sinks %d, bias %d) = %d\n",
          attn_isa_name(attn_ctx_isa(pk.ctx)), d.batch, d.n_heads, d.n_kv_heads, d.q_len, d.kv_len, d.head_dim,
          d.v_dim, (unsigned)d.layout, (unsigned)d.mask, d.window, (double)d.scale, with_valid, want_probs, null_arg,
          ovf, (unsigned)d.q_dtype, (unsigned)d.kv_dtype, (unsigned)d.out_dtype, (unsigned)d.math, d.positions,
          d.q_pos0, d.kv_pos0, want_lse, (double)d.softcap, with_slopes, with_sinks, bias_mode, (int)s);
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    CHECK(!memcmp(qb, q0, bq) && !memcmp(kb, k0, bk) && !memcmp(vb, v0, bv) && !memcmp(&d, &d0, sizeof d) &&
              (!with_valid || d.kv_valid == valid),
          "attn_sdpa wrote an input");
    if (ovf || prange)
        CHECK(s == ATTN_ERANGE || (s == ATTN_EINVAL && (ovf || inval)), "overflowing sizes or positions gave %d: %s",
              (int)s, attn_strerror(s));
    else
        CHECK(s == (inval ? ATTN_EINVAL : ATTN_OK),
              "attn_sdpa(batch %zu, heads %zu, kv_heads %zu, q_len %zu, kv_len %zu, head_dim %zu, v_dim %zu, layout %u, "
              "mask %u, window %zu, scale %g, kv_valid %d, probs %d, null %d, dtypes q %u kv %u out %u, math %u) gave "
              "%d (%s), want %s",
              d.batch, d.n_heads, d.n_kv_heads, d.q_len, d.kv_len, d.head_dim, d.v_dim, (unsigned)d.layout,
              (unsigned)d.mask, d.window, (double)d.scale, with_valid, want_probs, null_arg, (unsigned)d.q_dtype,
              (unsigned)d.kv_dtype, (unsigned)d.out_dtype, (unsigned)d.math, (int)s, attn_strerror(s),
              inval ? "EINVAL" : "OK");
    if (s != ATTN_OK) {
        CHECK(fz_typed_is_poison(out, no, d.out_dtype) && (!probs || fz_is_poison(probs, np)) &&
                  (!lse || fz_is_poison(lse, nl)),
              "output written on error %d", (int)s);
    } else {
        /* ATTN_MATH_BF16 multiplies the stored values rounded to bfloat16: so does the reference. */
        const int bf = d.math == ATTN_MATH_BF16;
        float *rq = bf ? fz_bf16_copy(q, nq) : q, *rk = bf ? fz_bf16_copy(k, nk) : k,
              *rv = bf ? fz_bf16_copy(v, nv) : v, *outf = fz_typed_floats(out, no, d.out_dtype);
        fz_attn a = {
            .batch = d.batch, .h = d.n_heads, .hk = hk, .q_len = d.q_len, .kv_len = d.kv_len, .d = d.head_dim,
            .dv = dv, .bshd = d.layout == ATTN_LAYOUT_BSHD, .kv_bshd = d.layout == ATTN_LAYOUT_BSHD,
            .causal = d.mask == ATTN_MASK_CAUSAL, .window = d.window, .kv_valid = d.kv_valid,
            .scale = d.scale != 0.0f ? d.scale : (float)(1.0 / sqrt((double)d.head_dim)),
            .u_p = bf ? 1.0 / 256 : 0.0,
            .u_out = d.out_dtype == ATTN_F16 ? 1.0 / 2048 : d.out_dtype == ATTN_BF16 ? 1.0 / 256 : 0.0,
            .abs_out = d.out_dtype == ATTN_F16 ? 1.0 / 33554432.0 : 0.0, /* half of binary16's least subnormal */
            .out_f16 = d.out_dtype == ATTN_F16, .unscaled = bf,
            .positions = d.positions, .qpos0 = (int64_t)d.q_pos0, .kpos0 = (int64_t)d.kv_pos0, .lse = lse,
            .softcap = d.softcap, .slopes = slopes, .sinks = sinks, .bias = bias,
            .bst = {d.bias_stride[0], d.bias_stride[1], d.bias_stride[2]},
        };
        fz_attn_verify(&a, rq, rk, rv, outf, probs);
        if (bf)
            free(rq), free(rk), free(rv);
        free(outf);
        if (pk.compare) {
            void *out2 = fz_typed_poison(no, d.out_dtype);
            float *probs2 = probs ? fz_floats(np) : NULL, *lse2 = lse ? fz_floats(nl) : NULL;
            if (probs2)
                fz_poison(probs2, np);
            attn_sdpa_desc d2 = d;
            d2.lse = lse2;
            CHECK(attn_sdpa(pk.other, &d2, qb, kb, vb, out2, probs2) == ATTN_OK, "second thread count");
            CHECK(!memcmp(out, out2, bo) && (!probs || !memcmp(probs, probs2, np * sizeof *probs)) &&
                      (!lse || !memcmp(lse, lse2, nl * sizeof *lse)),
                  "1 and 2 threads differ");
            free(out2);
            free(probs2);
            free(lse2);
        }
    }
    free(q), free(k), free(v), free(out), free(probs), free(q0), free(k0), free(v0), free(qb), free(kb), free(vb);
    free(lse), free(slopes), free(sinks), free(bias);
}

/* ---- KV cache and attn_decode ---- */

static void fz_kvcache(fz_reader *r)
{
    const fz_pick pk = fz_pick_ctx(r);
    const size_t hk = fz_size(r), hd = fz_size(r);
    size_t cap = fz_u8(r) < 128 ? 1 + fz_u8(r) % 48 : fz_size(r);
    const attn_dtype dt = (attn_dtype)fz_enum_field(r, 4);
    const int null_out = fz_u8(r) < 6;
    const float mag = fz_mag(r);
    uint64_t seed = fz_hash(r->p, r->n);

    const size_t esz = dt == ATTN_F32 ? 4 : dt == ATTN_I8 ? 1 : 2;
    const int inval = null_out || !hk || !hd || !cap || (uint32_t)dt > 3;
    size_t elems = 1, bytes;
    const int ovf = __builtin_mul_overflow(cap, hk, &elems) || __builtin_mul_overflow(elems, hd, &elems) ||
                    __builtin_mul_overflow(elems, esz, &bytes);
    const int huge = !ovf && bytes > PTRDIFF_MAX;
    if (!inval && !ovf && !huge && elems > FZ_MAX_FLOATS)
        return; /* a valid cache too large to create here */
    attn_kv_cache *const sentinel = (attn_kv_cache *)&fz_nisa, *c = sentinel;
    attn_status s = attn_kv_cache_create(null_out ? NULL : &c, hk, hd, cap, dt);
    TRACE("attn_kv_cache_create(%zu, %zu, %zu, dtype %u, null %d) = %d\n", hk, hd, cap, (unsigned)dt, null_out,
          (int)s);
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    if (inval && (ovf || huge))
        CHECK(s == ATTN_EINVAL || s == ATTN_ERANGE, "attn_kv_cache_create gave %d", (int)s);
    else if (inval)
        CHECK(s == ATTN_EINVAL, "attn_kv_cache_create(%zu, %zu, %zu, %u) gave %d, want EINVAL", hk, hd, cap,
              (unsigned)dt, (int)s);
    else if (ovf)
        CHECK(s == ATTN_ERANGE, "attn_kv_cache_create(%zu, %zu, %zu, %u) gave %d, want ERANGE", hk, hd, cap,
              (unsigned)dt, (int)s);
    else if (huge)
        CHECK(s == ATTN_ERANGE || s == ATTN_ENOMEM, "attn_kv_cache_create of %zu bytes gave %d", bytes, (int)s);
    else
        CHECK(s == ATTN_OK, "attn_kv_cache_create(%zu, %zu, %zu, %u) gave %d, want OK", hk, hd, cap, (unsigned)dt,
              (int)s);
    if (s != ATTN_OK) {
        CHECK(c == sentinel, "*out written on error");
        return;
    }
    CHECK(attn_kv_cache_len(c) == 0 && attn_kv_cache_len(NULL) == 0, "length of a new cache");
    attn_kv_cache_reset(NULL);

    /* What the cache holds, as the harness rounds it: [t][hk][hd] (BSHD with one batch). */
    const size_t row = hk * hd;
    float *sk = fz_floats(elems), *sv = fz_floats(elems);
    size_t len = 0;
    for (int op = 0; op < 6; op++) {
        const uint8_t o = fz_u8(r);
        if (r->at >= r->n && op > 0)
            break;
        if (o % 8 < 3) { /* append */
            const uint8_t t = fz_u8(r);
            size_t n = t < 200 ? t % (cap < 40 ? cap + 3 : 43) : fz_size(r);
            const uint8_t nf = fz_u8(r);
            const int null_c = nf < 4, null_kv = nf >= 4 && nf < 12;
            size_t cnt = 0;
            const int aovf = FZ_COUNT(&cnt, n, hk, hd);
            if (!aovf && cnt > FZ_MAX_FLOATS)
                continue;
            if (aovf)
                cnt = 1;
            float *k = fz_floats(cnt), *v = fz_floats(cnt);
            fz_fill(k, cnt, &seed, mag);
            fz_fill(v, cnt, &seed, mag);
            float *k0 = fz_dup(k, cnt), *v0 = fz_dup(v, cnt);
            s = attn_kv_cache_append(null_c ? NULL : c, null_kv && (nf & 1) ? NULL : k, null_kv && !(nf & 1) ? NULL : v,
                                     n);
            TRACE("  append(%zu tokens, null %u; len %zu) = %d\n", n, nf < 12 ? nf : 0, len, (int)s);
            CHECK(fz_status_defined(s), "undefined status %d", (int)s);
            const int a_inval = null_c || (n && null_kv), a_full = n > cap - len;
            if (a_inval && a_full)
                CHECK(s == ATTN_EINVAL || s == ATTN_ERANGE, "append gave %d", (int)s);
            else if (null_c && !n)
                CHECK(s == ATTN_EINVAL || s == ATTN_OK, "append of 0 tokens to NULL gave %d", (int)s);
            else
                CHECK(s == (a_inval ? ATTN_EINVAL : a_full ? ATTN_ERANGE : ATTN_OK),
                      "append of %zu tokens (len %zu, capacity %zu, null %u) gave %d", n, len, cap, nf, (int)s);
            CHECK(!memcmp(k, k0, cnt * sizeof *k) && !memcmp(v, v0, cnt * sizeof *v), "append wrote its input");
            if (s == ATTN_OK && !null_c) {
                for (size_t i = 0; i < n * row; i++) {
                    sk[len * row + i] = fz_store_round(dt, k[i]);
                    sv[len * row + i] = fz_store_round(dt, v[i]);
                }
                for (size_t i = 0; dt == ATTN_I8 && i < n * row; i += hd) { /* int8: each (token, head) row */
                    fz_quant_row(sk + len * row + i, hd);
                    fz_quant_row(sv + len * row + i, hd);
                }
                len += n;
            }
            CHECK(attn_kv_cache_len(c) == len, "cache length %zu, want %zu", attn_kv_cache_len(c), len);
            free(k), free(v), free(k0), free(v0);
        } else if (o % 8 == 3) {
            attn_kv_cache_reset(c);
            len = 0;
            TRACE("  reset\n");
            CHECK(attn_kv_cache_len(c) == 0, "reset");
        } else { /* decode */
            const uint8_t t = fz_u8(r);
            const size_t q_len = t < 200 ? (len ? 1 + t % (len + 1) : t % 3) : fz_size(r);
            const uint8_t th = fz_u8(r);
            const size_t n_heads = th < 160 ? hk * (1 + th % 4) : th < 176 ? hk + 1 : fz_size(r);
            const attn_mask mask = (attn_mask)fz_enum_field(r, 2);
            const uint8_t nf = fz_u8(r);
            const int null_arg = nf < 10 ? 1 + nf % 4 : 0; /* ctx, c, q, out */
            const int d_inval = null_arg || !q_len || !n_heads || n_heads % hk || (uint32_t)mask > 1 || q_len > len;
            size_t nqo = 0, work = 0;
            const int dovf = FZ_COUNT(&nqo, q_len, n_heads, hd);
            if (!dovf && (nqo > FZ_MAX_FLOATS || FZ_COUNT(&work, q_len, n_heads, len, 2 * hd) || work > FZ_MAX_WORK))
                continue;
            if (dovf)
                nqo = 1;
            float *q = fz_floats(nqo), *out = fz_floats(nqo);
            fz_fill(q, nqo, &seed, mag);
            fz_poison(out, nqo);
            float *q0 = fz_dup(q, nqo);
            s = attn_decode(null_arg == 1 ? NULL : pk.ctx, null_arg == 2 ? NULL : c, null_arg == 3 ? NULL : q, q_len,
                            n_heads, mask, null_arg == 4 ? NULL : out);
            TRACE("  attn_decode(isa %s, q_len %zu, n_heads %zu, mask %u, null %d; len %zu) = %d\n",
                  attn_isa_name(attn_ctx_isa(pk.ctx)), q_len, n_heads, (unsigned)mask, null_arg, len, (int)s);
            CHECK(fz_status_defined(s), "undefined status %d", (int)s);
            CHECK(!memcmp(q, q0, nqo * sizeof *q), "attn_decode wrote q");
            if (dovf)
                CHECK(s == ATTN_EINVAL || s == ATTN_ERANGE, "attn_decode with overflowing sizes gave %d", (int)s);
            else
                CHECK(s == (d_inval ? ATTN_EINVAL : ATTN_OK),
                      "attn_decode(q_len %zu, n_heads %zu, mask %u, null %d; len %zu, kv_heads %zu, head_dim %zu, "
                      "dtype %u) gave %d",
                      q_len, n_heads, (unsigned)mask, null_arg, len, hk, hd, (unsigned)dt, (int)s);
            CHECK(attn_kv_cache_len(c) == len, "attn_decode changed the cache length");
            if (s != ATTN_OK) {
                CHECK(fz_is_poison(out, nqo), "attn_decode wrote out on error");
            } else {
                const fz_attn a = {
                    .batch = 1, .h = n_heads, .hk = hk, .q_len = q_len, .kv_len = len, .d = hd, .dv = hd, .bshd = 1,
                    .kv_bshd = 1, .causal = mask == ATTN_MASK_CAUSAL, .scale = (float)(1.0 / sqrt((double)hd)),
                };
                int stored_finite = 1;
                for (size_t i = 0; i < len * row; i++)
                    stored_finite &= isfinite(sk[i]) && isfinite(sv[i]);
                if (stored_finite) /* half rounds values past 65504 to infinity: nothing to promise then */
                    fz_attn_verify(&a, q, sk, sv, out, NULL);
                if (pk.compare) {
                    float *out2 = fz_floats(nqo);
                    CHECK(attn_decode(pk.other, c, q, q_len, n_heads, mask, out2) == ATTN_OK, "other threads");
                    CHECK(!memcmp(out, out2, nqo * sizeof *out), "attn_decode: 1 and 2 threads differ");
                    free(out2);
                }
            }
            free(q), free(out), free(q0);
        }
    }
    free(sk), free(sv);
    attn_kv_cache_destroy(c);
}

/* ---- attn_linear ---- */

/* y = x w^T + b against a double-precision reference, within in + 4 ulps of the absolute sum (times 4). */
FZ_NOCOV static void fz_linear_verify(const float *x, size_t n, size_t in, const float *w, const float *b, size_t outf,
                                      const float *y)
{
    for (size_t t = 0; t < n; t++)
        for (size_t o = 0; o < outf; o++) {
            double ref = b ? b[o] : 0, abs = b ? fabs(b[o]) : 0;
            for (size_t i = 0; i < in; i++) {
                ref += (double)x[t * in + i] * w[o * in + i];
                abs += fabs((double)x[t * in + i] * w[o * in + i]);
            }
            if (abs >= 1e37)
                continue;
            const double tol = 4 * (double)(in + 4) * FZ_U * abs + 1e-37;
            CHECK(fabs(y[t * outf + o] - ref) <= tol, "y[%zu][%zu] = %.9g, reference %.9g (tolerance %.3g)", t, o,
                  y[t * outf + o], ref, tol);
        }
}

static void fz_linear(fz_reader *r)
{
    const fz_pick pk = fz_pick_ctx(r);
    const size_t n = fz_size(r), in = fz_size(r), outf = fz_size(r);
    const uint8_t fl = fz_u8(r), nf = fz_u8(r), ov = fz_u8(r);
    const int with_b = fl & 1;
    const int null_arg = nf < 12 ? 1 + nf % 4 : 0; /* ctx, x, w, y */
    /* Placement of y: 0 its own buffer; else right after (1, 2, 3: x, w, b) or overlapping (4, 5, 6: x, w, b). */
    int place = ov < 200 ? 0 : 1 + ov % 6;
    if (!with_b && (place == 3 || place == 6))
        place = 0;
    const float mag = fz_mag(r);
    uint64_t seed = fz_hash(r->p, r->n);

    size_t nx = 0, nw = 0, ny = 0, work = 0;
    const int ovf = FZ_COUNT(&nx, n, in) | FZ_COUNT(&nw, outf, in) | FZ_COUNT(&ny, n, outf);
    const int inval = null_arg || !n || !in || !outf || place >= 4;
    if (!ovf && (nx > FZ_MAX_FLOATS || nw > FZ_MAX_FLOATS || ny > FZ_MAX_FLOATS || outf > FZ_MAX_FLOATS ||
                 FZ_COUNT(&work, n, in, outf) || work > FZ_MAX_WORK))
        return;
    if (ovf) {
        nx = nw = ny = 1;
        place = 0;
    }
    const size_t nb = with_b ? (ovf ? 1 : outf) : 0;
    /* Overlap by ovl floats (place 4..6): at least 1 where both sides have a float. */
    const size_t host_n = place == 1 || place == 4 ? nx : place == 2 || place == 5 ? nw : nb;
    size_t ovl = 0;
    if (place >= 4) {
        const size_t lim = host_n < ny ? host_n : ny;
        if (!lim)
            place = 0;
        else
            ovl = 1 + fz_u8(r) % lim;
    }
    float *host = NULL;
    if (place) {
        host = fz_floats(host_n + ny - ovl);
        fz_poison(host, host_n + ny - ovl);
    }
    float *x = place == 1 || place == 4 ? host : fz_floats(nx);
    float *w = place == 2 || place == 5 ? host : fz_floats(nw);
    float *b = !with_b ? NULL : place == 3 || place == 6 ? host : fz_floats(nb);
    float *y = place ? host + host_n - ovl : fz_floats(ny);
    fz_fill(x, nx, &seed, mag);
    fz_fill(w, nw, &seed, mag);
    if (b)
        fz_fill(b, nb, &seed, mag);
    if (!place)
        fz_poison(y, ny);
    float *x0 = fz_dup(x, nx), *w0 = fz_dup(w, nw), *b0 = b ? fz_dup(b, nb) : NULL, *y0 = fz_dup(y, ny);

    const attn_status s = attn_linear(null_arg == 1 ? NULL : pk.ctx, null_arg == 2 ? NULL : x, n, in,
                                      null_arg == 3 ? NULL : w, b, outf, null_arg == 4 ? NULL : y);
    TRACE("attn_linear(isa %s, n %zu, in %zu, out %zu, bias %d, null %d, place %d, overlap %zu) = %d\n",
          attn_isa_name(attn_ctx_isa(pk.ctx)), n, in, outf, with_b, null_arg, place, ovl, (int)s);
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    if (ovf)
        CHECK(s == ATTN_ERANGE || s == ATTN_EINVAL, "attn_linear with overflowing sizes gave %d", (int)s);
    else
        CHECK(s == (inval ? ATTN_EINVAL : ATTN_OK),
              "attn_linear(n %zu, in %zu, out %zu, bias %d, null %d, place %d, overlap %zu) gave %d", n, in, outf,
              with_b, null_arg, place, ovl, (int)s);
    if (s != ATTN_OK) {
        CHECK(!memcmp(y, y0, ny * sizeof *y), "attn_linear wrote y on error");
    } else {
        CHECK(!memcmp(x, x0, nx * sizeof *x) && !memcmp(w, w0, nw * sizeof *w) && (!b || !memcmp(b, b0, nb * sizeof *b)),
              "attn_linear wrote an input");
        fz_linear_verify(x, n, in, w, b, outf, y);
        if (pk.compare) {
            float *y2 = fz_floats(ny);
            CHECK(attn_linear(pk.other, x, n, in, w, b, outf, y2) == ATTN_OK, "other threads");
            CHECK(!memcmp(y, y2, ny * sizeof *y), "attn_linear: 1 and 2 threads differ");
            free(y2);
        }
    }
    if (!(place == 1 || place == 4))
        free(x);
    if (!(place == 2 || place == 5))
        free(w);
    if (b && !(place == 3 || place == 6))
        free(b);
    if (place)
        free(host);
    else
        free(y);
    free(x0), free(w0), free(b0), free(y0);
}

/* ---- attn_self_attention ---- */

/* y[t][o] = x[t] . w[o] + b[o] in double, and the same with absolute values. */
FZ_NOCOV static void fz_proj(const float *x, size_t n, size_t in, const float *w, const float *b, size_t outf, double *y,
                    double *ya)
{
    for (size_t t = 0; t < n; t++)
        for (size_t o = 0; o < outf; o++) {
            double s = b ? b[o] : 0, a = b ? fabs(b[o]) : 0;
            for (size_t i = 0; i < in; i++) {
                s += (double)x[t * in + i] * w[o * in + i];
                a += fabs((double)x[t * in + i] * w[o * in + i]);
            }
            y[t * outf + o] = s;
            ya[t * outf + o] = a;
        }
}

FZ_NOCOV static void fz_self_attention_verify(const attn_layer *L, const float *x, size_t n, int causal, const float *y,
                                     const float *probs)
{
    const size_t dm = L->d_model, h = L->n_heads, hk = L->n_kv_heads ? L->n_kv_heads : h, hd = L->head_dim;
    const size_t qw = h * hd, kw = hk * hd, group = h / hk;
    double *q = malloc(n * qw * sizeof *q), *qa = malloc(n * qw * sizeof *qa), *k = malloc(n * kw * sizeof *k),
           *ka = malloc(n * kw * sizeof *ka), *v = malloc(n * kw * sizeof *v), *va = malloc(n * kw * sizeof *va),
           *o = malloc(n * qw * sizeof *o), *otol = malloc(n * qw * sizeof *otol), *s = malloc(n * sizeof *s);
    CHECK(q && qa && k && ka && v && va && o && otol && s, "malloc");
    fz_proj(x, n, dm, L->wq, L->bq, qw, q, qa);
    fz_proj(x, n, dm, L->wk, L->bk, kw, k, ka);
    fz_proj(x, n, dm, L->wv, L->bv, kw, v, va);
    const double scale = 1.0 / sqrt((double)hd);
    double amax = 0;
    for (size_t i = 0; i < n * qw; i++)
        amax = qa[i] > amax ? qa[i] : amax;
    for (size_t i = 0; i < n * kw; i++) {
        amax = ka[i] > amax ? ka[i] : amax;
        amax = va[i] > amax ? va[i] : amax;
    }
    const int finite_ok = amax * amax * (double)hd < 1e30 && amax * (double)(n + 1) < 1e30;
    int ref_ok = finite_ok;
    for (size_t hh = 0; hh < h; hh++)
        for (size_t i = 0; i < n; i++) {
            const size_t kh = hh / group;
            const float *prow = probs ? probs + (hh * n + i) * n : NULL;
            double m = -INFINITY, dsmax = 0, vrow = 0, varow = 0;
            for (size_t j = 0; j < n; j++) {
                if (causal && j > i) {
                    if (prow)
                        CHECK(prow[j] == 0.0f, "probs[h %zu][%zu][%zu] = %g, masked", hh, i, j, prow[j]);
                    continue;
                }
                double dot = 0, dabs = 0;
                for (size_t c = 0; c < hd; c++) {
                    dot += q[i * qw + hh * hd + c] * k[j * kw + kh * hd + c];
                    dabs += qa[i * qw + hh * hd + c] * ka[j * kw + kh * hd + c];
                }
                s[j] = dot * scale;
                m = s[j] > m ? s[j] : m;
                dsmax = dabs * scale > dsmax ? dabs * scale : dsmax;
                for (size_t c = 0; c < hd; c++) {
                    vrow = fabs(v[j * kw + kh * hd + c]) > vrow ? fabs(v[j * kw + kh * hd + c]) : vrow;
                    varow = va[j * kw + kh * hd + c] > varow ? va[j * kw + kh * hd + c] : varow;
                }
            }
            if (!finite_ok)
                continue;
            if (prow) {
                double sum = 0;
                for (size_t j = 0; j < n; j++) {
                    CHECK(prow[j] >= 0.0f && prow[j] <= 1.0f, "probs[h %zu][%zu][%zu] = %g", hh, i, j, prow[j]);
                    sum += prow[j];
                }
                CHECK(fabs(sum - 1.0) <= 1e-3 + (double)n * 4 * FZ_U, "probs row (h %zu, %zu) sums to %.9g", hh, i,
                      sum);
            }
            /* Score error: the projections' (d_model ulps of the absolute sums) and the dot product's. */
            const double ds = (double)(dm + hd + 8) * FZ_U * dsmax, slack = (double)(n + 8) * 4 * FZ_U;
            if (ds > 0.05) {
                ref_ok = 0;
                continue;
            }
            const size_t last = causal ? i + 1 : n;
            double l = 0;
            for (size_t j = 0; j < last; j++)
                l += (s[j] = exp(s[j] - m)); /* s[j]: the softmax weight of key j */
            for (size_t j = 0; j < last; j++)
                s[j] /= l;
            double *orow = o + i * qw + hh * hd;
            for (size_t c = 0; c < hd; c++) {
                orow[c] = 0;
                otol[i * qw + hh * hd + c] = 4 * ((2 * ds + slack) * vrow + (double)(dm + 4) * FZ_U * varow) + 1e-37;
            }
            for (size_t j = 0; j < last; j++)
                for (size_t c = 0; c < hd; c++)
                    orow[c] += s[j] * v[j * kw + kh * hd + c];
            if (prow)
                for (size_t j = 0; j < last; j++) {
                    const double p = s[j], tol = 4 * (3 * ds + slack) * p + 1e-37;
                    CHECK(fabs(prow[j] - p) <= tol, "probs[h %zu][%zu][%zu] = %.9g, reference %.9g (tolerance %.3g)",
                          hh, i, j, prow[j], p, tol);
                }
        }
    const size_t ydim = L->wo ? dm : qw;
    const int y_finite = finite_ok && (!L->wo || fz_absmax(L->wo, dm * qw) * amax * (double)qw < 1e30);
    for (size_t t = 0; t < n; t++)
        for (size_t c = 0; c < ydim; c++) {
            const float yv = y[t * ydim + c];
            if (y_finite)
                CHECK(isfinite(yv), "y[%zu][%zu] = %g is not finite", t, c, yv);
            if (!ref_ok)
                continue;
            double ref, tol;
            if (!L->wo) {
                ref = o[t * qw + c];
                tol = otol[t * qw + c];
            } else {
                double acc = L->bo ? L->bo[c] : 0, aabs = L->bo ? fabs(L->bo[c]) : 0, etol = 0;
                for (size_t i = 0; i < qw; i++) {
                    const double wv = ((const float *)L->wo)[c * qw + i];
                    acc += o[t * qw + i] * wv;
                    aabs += fabs(o[t * qw + i] * wv);
                    etol += otol[t * qw + i] * fabs(wv);
                }
                ref = acc;
                tol = etol + 4 * (double)(qw + 4) * FZ_U * aabs + 1e-37;
                if (aabs >= 1e30)
                    continue;
            }
            CHECK(fabs(yv - ref) <= tol, "y[%zu][%zu] = %.9g, reference %.9g (tolerance %.3g)", t, c, yv, ref, tol);
        }
    free(q), free(qa), free(k), free(ka), free(v), free(va), free(o), free(otol), free(s);
}

static void fz_self_attention(fz_reader *r)
{
    const fz_pick pk = fz_pick_ctx(r);
    attn_layer L;
    memset(&L, 0, sizeof L);
    const size_t n = fz_size(r);
    L.d_model = fz_size(r);
    L.n_heads = fz_size(r);
    L.n_kv_heads = fz_kv_heads(r, L.n_heads);
    L.head_dim = fz_size(r);
    const attn_mask mask = (attn_mask)fz_enum_field(r, 2);
    const uint8_t fl = fz_u8(r), nf = fz_u8(r), ov = fz_u8(r);
    const int with_wo = !(fl & 1), with_bq = fl & 2, with_bk = fl & 4, with_bv = fl & 8, with_bo = fl & 16,
              want_probs = (fl & 32) != 0;
    const int null_arg = nf < 14 ? 1 + nf % 7 : 0; /* ctx, w, x, y, wq, wk, wv */
    int place = ov < 216 ? 0 : 1 + ov % 4; /* y overlapping x (1), wq (2); probs overlapping y (3); y right after x (4) */
    if (place == 3 && !want_probs)
        place = 0;
    const float mag = fz_mag(r);
    uint64_t seed = fz_hash(r->p, r->n);

    const size_t dm = L.d_model, h = L.n_heads, hk = L.n_kv_heads ? L.n_kv_heads : h, hd = L.head_dim;
    size_t qw = 0, kw = 0, nx = 0, nwq = 0, nwk = 0, nwo = 0, ny = 0, np = 0, t1 = 0, t2 = 0;
    int ovf = FZ_COUNT(&qw, h, hd) | FZ_COUNT(&kw, hk, hd) | FZ_COUNT(&nx, n, dm) | FZ_COUNT(&nwq, h, hd, dm) |
              FZ_COUNT(&nwk, hk, hd, dm) | FZ_COUNT(&nwo, dm, h, hd) | FZ_COUNT(&t1, n, h, hd) | FZ_COUNT(&t2, n, hk, hd) |
              (want_probs ? FZ_COUNT(&np, h, n, n) : 0);
    ny = with_wo ? nx : t1;
    const int inval = null_arg || !n || !dm || !h || !hd || !hk || h % hk || (uint32_t)mask > 1 ||
                      (place >= 1 && place <= 3);
    size_t work = 0, w1 = 0, w2 = 0;
    const int big = ovf || nx > FZ_MAX_FLOATS || nwq > FZ_MAX_FLOATS || nwk > FZ_MAX_FLOATS || nwo > FZ_MAX_FLOATS ||
                    t1 > FZ_MAX_FLOATS || np > FZ_MAX_FLOATS || qw > FZ_MAX_FLOATS || kw > FZ_MAX_FLOATS ||
                    dm > FZ_MAX_FLOATS || FZ_COUNT(&work, n, dm, qw + 2 * kw + qw) ||
                    FZ_COUNT(&w1, h, n, n, 2 * hd) || __builtin_add_overflow(work, w1, &w2) || w2 > FZ_MAX_WORK;
    if (big && !ovf)
        return;
    if (ovf) {
        qw = kw = nx = nwq = nwk = nwo = ny = np = 1;
        place = 0;
    }
    const size_t nbq = ovf ? 1 : qw, nbk = ovf ? 1 : kw, nbo = ovf ? 1 : dm;
    /* Every allocation goes in owned[]; x, wq, y and probs may point into one of them (the overlap cases). */
    void *owned[16];
    size_t nowned = 0, ovl = 0;
    float *x, *wq, *y, *probs = NULL;
    if (place == 1 || place == 2 || place == 4) { /* y against x or wq */
        const size_t host_n = place == 2 ? nwq : nx, lim = host_n < ny ? host_n : ny;
        if (!lim)
            place = 0;
        else
            ovl = place == 4 ? 0 : 1 + fz_u8(r) % lim;
    }
    if (place == 3) { /* probs overlapping y: y first, probs starting inside it */
        const size_t lim = ny < np ? ny : np;
        if (!lim)
            place = 0;
        else
            ovl = 1 + fz_u8(r) % lim;
    }
    if (place == 1 || place == 4) {
        float *a = owned[nowned++] = fz_floats(nx + ny - ovl);
        fz_poison(a, nx + ny - ovl);
        x = a;
        y = a + nx - ovl;
    } else {
        x = owned[nowned++] = fz_floats(nx);
    }
    if (place == 2) {
        float *a = owned[nowned++] = fz_floats(nwq + ny - ovl);
        fz_poison(a, nwq + ny - ovl);
        wq = a;
        y = a + nwq - ovl;
    } else {
        wq = owned[nowned++] = fz_floats(nwq);
    }
    if (place == 3) {
        float *a = owned[nowned++] = fz_floats(ny + np - ovl);
        fz_poison(a, ny + np - ovl);
        y = a;
        probs = a + ny - ovl;
    } else {
        if (place != 1 && place != 2 && place != 4) {
            y = owned[nowned++] = fz_floats(ny);
            fz_poison(y, ny);
        }
        if (want_probs) {
            probs = owned[nowned++] = fz_floats(np);
            fz_poison(probs, np);
        }
    }
    float *wk = owned[nowned++] = fz_floats(nwk), *wv = owned[nowned++] = fz_floats(nwk);
    float *wo = with_wo ? (owned[nowned++] = fz_floats(nwo)) : NULL;
    float *bq = with_bq ? (owned[nowned++] = fz_floats(nbq)) : NULL;
    float *bk = with_bk ? (owned[nowned++] = fz_floats(nbk)) : NULL;
    float *bv = with_bv ? (owned[nowned++] = fz_floats(nbk)) : NULL;
    float *bo = with_bo && with_wo ? (owned[nowned++] = fz_floats(nbo)) : NULL;
    fz_fill(x, nx, &seed, mag);
    fz_fill(wq, nwq, &seed, mag);
    fz_fill(wk, nwk, &seed, mag);
    fz_fill(wv, nwk, &seed, mag);
    if (wo)
        fz_fill(wo, nwo, &seed, mag);
    if (bq)
        fz_fill(bq, nbq, &seed, mag);
    if (bk)
        fz_fill(bk, nbk, &seed, mag);
    if (bv)
        fz_fill(bv, nbk, &seed, mag);
    if (bo)
        fz_fill(bo, nbo, &seed, mag);
    L.wq = null_arg == 5 ? NULL : wq;
    L.wk = null_arg == 6 ? NULL : wk;
    L.wv = null_arg == 7 ? NULL : wv;
    L.wo = wo, L.bq = bq, L.bk = bk, L.bv = bv, L.bo = bo;
    const attn_layer L0 = L;
    float *x0 = fz_dup(x, nx), *wq0 = fz_dup(wq, nwq), *wk0 = fz_dup(wk, nwk), *wv0 = fz_dup(wv, nwk);
    float *wo0 = wo ? fz_dup(wo, nwo) : NULL, *y0 = fz_dup(y, ny), *p0 = probs ? fz_dup(probs, np) : NULL;

    const attn_status s = attn_self_attention(null_arg == 1 ? NULL : pk.ctx, null_arg == 2 ? NULL : &L,
                                              null_arg == 3 ? NULL : x, n, mask, null_arg == 4 ? NULL : y, probs);
    TRACE("attn_self_attention(isa %s, n %zu, d_model %zu, heads %zu, kv_heads %zu, head_dim %zu, mask %u, flags %#x, "
          "null %d, place %d, overlap %zu) = %d\n",
          attn_isa_name(attn_ctx_isa(pk.ctx)), n, dm, h, L.n_kv_heads, hd, (unsigned)mask, fl, null_arg, place, ovl,
          (int)s);
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    if (ovf)
        CHECK(s == ATTN_ERANGE || s == ATTN_EINVAL,
              "attn_self_attention with overflowing sizes (n %zu d_model %zu heads %zu kv_heads %zu head_dim %zu) gave %d",
              n, dm, h, L.n_kv_heads, hd, (int)s);
    else
        CHECK(s == (inval ? ATTN_EINVAL : ATTN_OK),
              "attn_self_attention(n %zu, d_model %zu, heads %zu, kv_heads %zu, head_dim %zu, mask %u, flags %#x, "
              "null %d, place %d, overlap %zu) gave %d",
              n, dm, h, L.n_kv_heads, hd, (unsigned)mask, fl, null_arg, place, ovl, (int)s);
    CHECK(!memcmp(&L, &L0, sizeof L), "attn_self_attention wrote its layer");
    if (s != ATTN_OK) {
        CHECK(!memcmp(y, y0, ny * sizeof *y) && (!probs || !memcmp(probs, p0, np * sizeof *probs)),
              "attn_self_attention wrote an output on error");
    } else {
        CHECK(!memcmp(x, x0, nx * sizeof *x) && !memcmp(wq, wq0, nwq * sizeof *wq) &&
                  !memcmp(wk, wk0, nwk * sizeof *wk) && !memcmp(wv, wv0, nwk * sizeof *wv) &&
                  (!wo || !memcmp(wo, wo0, nwo * sizeof *wo)),
              "attn_self_attention wrote an input");
        fz_self_attention_verify(&L, x, n, mask == ATTN_MASK_CAUSAL, y, probs);
        if (pk.compare) {
            float *y2 = fz_floats(ny), *p2 = probs ? fz_floats(np) : NULL;
            CHECK(attn_self_attention(pk.other, &L, x, n, mask, y2, p2) == ATTN_OK, "other threads");
            CHECK(!memcmp(y, y2, ny * sizeof *y) && (!probs || !memcmp(probs, p2, np * sizeof *probs)),
                  "attn_self_attention: 1 and 2 threads differ");
            free(y2), free(p2);
        }
    }
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    free(x0), free(wq0), free(wk0), free(wv0), free(wo0), free(y0), free(p0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size, 0};
    struct timespec t0, t1;
    if (fz_trace)
        clock_gettime(CLOCK_MONOTONIC, &t0);
    switch (fz_u8(&r) % 5) {
    case 0: fz_ctx_create(&r); break;
    case 1: fz_sdpa(&r); break;
    case 2: fz_kvcache(&r); break;
    case 3: fz_linear(&r); break;
    default: fz_self_attention(&r); break;
    }
    if (fz_trace) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        TRACE("  (%.3f ms)\n", (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-6);
    }
    return 0;
}
