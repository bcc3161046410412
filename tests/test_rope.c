/* Rotary embeddings and the decoder layer step: attn_rope_apply against float64 (NEOX and GPT-J, partial rotation,
 * big positions, theta variants) and every status code; attn_self_attention with RoPE against float64 and against
 * the Llama fixtures (tests/llama_fixtures.h, written by tests/fixtures/gen_llama.py from PyTorch); then
 * attn_layer_forward over a paged pool: the fixtures' prefill and decode steps with two sequences batched per call,
 * one call for many sequences against per-sequence calls and chunked prefill, all or nothing when pages run out, and
 * every argument error. Outputs are NaN-poisoned and guarded throughout. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "llama_fixtures.h"

/* ---- float64 references ---- */

/* The float64 rotation of x [n][heads][hd] at positions pos0 + t: the angle and its fp32-rounded cos and sin as
 * attn.h defines them, the rotation itself in double. r, theta already resolved. */
static void ref_rope(double *x, size_t n, size_t heads, size_t hd, attn_rope style, size_t r, double theta,
                     size_t pos0)
{
    for (size_t t = 0; t < n; t++)
        for (size_t i = 0; i < r / 2; i++) {
            const double ang = (double)(pos0 + t) * pow(theta, -(double)(2 * i) / (double)r);
            const double c = (float)cos(ang), s = (float)sin(ang);
            const size_t ia = style == ATTN_ROPE_NEOX ? i : 2 * i, ib = style == ATTN_ROPE_NEOX ? i + r / 2 : 2 * i + 1;
            for (size_t h = 0; h < heads; h++) {
                double *xh = x + (t * heads + h) * hd;
                const double a = xh[ia], b = xh[ib];
                xh[ia] = a * c - b * s;
                xh[ib] = b * c + a * s;
            }
        }
}

static size_t width_of(const attn_layer *w)
{
    return w->wo ? w->d_model : w->n_heads * w->head_dim;
}

/* attn_self_attention's formula with the layer's RoPE at positions 0..n-1, all in double from fp32 weights:
 * y [n][width_of(w)]. 0, or -1 out of memory. */
static int ref_layer(const attn_layer *w, const float *x, size_t n, int causal, double *y)
{
    const size_t dm = w->d_model, h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim;
    const size_t qw = h * hd, kw = hk * hd, group = h / hk;
    double *q = malloc(n * qw * sizeof *q), *k = malloc(n * kw * sizeof *k), *v = malloc(n * kw * sizeof *v);
    double *o = malloc(n * qw * sizeof *o), *sc = malloc(n * sizeof *sc);
    if (!q || !k || !v || !o || !sc) {
        free(q), free(k), free(v), free(o), free(sc);
        return -1;
    }
    const float *W[3] = { w->wq, w->wk, w->wv }, *B[3] = { w->bq, w->bk, w->bv };
    double *out[3] = { q, k, v };
    for (int m = 0; m < 3; m++) {
        const size_t cols = m ? kw : qw;
        for (size_t t = 0; t < n; t++)
            for (size_t j = 0; j < cols; j++) {
                double s = B[m] ? B[m][j] : 0.0;
                for (size_t c = 0; c < dm; c++)
                    s += (double)x[t * dm + c] * W[m][j * dm + c];
                out[m][t * cols + j] = s;
            }
    }
    if (w->rope != ATTN_ROPE_NONE) {
        const size_t r = w->rope_dims ? w->rope_dims : hd;
        const double th = w->rope_theta != 0.0f ? w->rope_theta : 10000.0;
        ref_rope(q, n, h, hd, w->rope, r, th, 0);
        ref_rope(k, n, hk, hd, w->rope, r, th, 0);
    }
    for (size_t hh = 0; hh < h; hh++) {
        const size_t g = hh / group;
        for (size_t i = 0; i < n; i++) {
            const size_t nk = causal ? i + 1 : n;
            double mx = -INFINITY, sum = 0.0;
            for (size_t j = 0; j < nk; j++) {
                double s = 0.0;
                for (size_t c = 0; c < hd; c++)
                    s += q[i * qw + hh * hd + c] * k[j * kw + g * hd + c];
                sc[j] = s / sqrt((double)hd);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (size_t j = 0; j < nk; j++)
                sum += (sc[j] = exp(sc[j] - mx));
            for (size_t c = 0; c < hd; c++) {
                double acc = 0.0;
                for (size_t j = 0; j < nk; j++)
                    acc += sc[j] * v[j * kw + g * hd + c];
                o[i * qw + hh * hd + c] = acc / sum;
            }
        }
    }
    if (w->wo) {
        const float *wo = w->wo;
        for (size_t t = 0; t < n; t++)
            for (size_t j = 0; j < dm; j++) {
                double s = w->bo ? w->bo[j] : 0.0;
                for (size_t c = 0; c < qw; c++)
                    s += o[t * qw + c] * wo[j * qw + c];
                y[t * dm + j] = s;
            }
    } else {
        memcpy(y, o, n * qw * sizeof *y);
    }
    free(q), free(k), free(v), free(o), free(sc);
    return 0;
}

/* max |got - ref| / max(1, max|ref|) over n values; NaN counts as infinitely wrong. */
static double rel_err(const float *got, const double *ref, size_t n)
{
    double mx = 1.0, e = 0.0;
    for (size_t i = 0; i < n; i++)
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - ref[i]);
        if (!(d <= e))
            e = isnan(d) ? INFINITY : d;
    }
    return e / mx;
}

static attn_ctx *make_ctx(attn_isa isa, int threads)
{
    attn_ctx *ctx = NULL;
    attn_status s = tc_ctx_create(&ctx, isa, threads, 0, 0);
    cr_assert_eq(s, ATTN_OK, "attn_ctx_create(isa=%s) gave %d (%s)", attn_isa_name(isa), (int)s, attn_strerror(s));
    return ctx;
}

/* ---- attn_rope_apply ---- */

typedef struct rope_case {
    attn_rope style;
    size_t n, heads, hd, rope_dims;
    float theta;
    size_t pos0;
} rope_case;

/* Runs one case on random x in a guarded buffer; every rotated element within the rounding of two fp32 products
 * and their sum of the float64 rotation (2^-22 (|a c| + |b s|): rigorous, so never flaky, while a wrong angle or
 * pair is off by the size of the values), every other element bitwise unchanged. */
static void check_rope_case(const rope_case *c, uint64_t seed, double *worst)
{
    const size_t n = c->n * c->heads * c->hd, r = c->rope_dims ? c->rope_dims : c->hd;
    const double th = c->theta != 0.0f ? c->theta : 10000.0;
    tc_rng rng;
    tc_rng_init(&rng, seed);
    tc_buf x;
    cr_assert_eq(tc_buf_alloc(&x, n), 0);
    double *ref = malloc(n * sizeof *ref), *mag = malloc(n * sizeof *mag);
    float *orig = malloc(n * sizeof *orig);
    cr_assert(ref && mag && orig);
    for (size_t i = 0; i < n; i++)
        ref[i] = orig[i] = x.p[i] = tc_rng_float(&rng, -2.0f, 2.0f);
    /* |a c| + |b s| per element: the scale of its rounding. */
    memcpy(mag, ref, n * sizeof *mag);
    for (size_t i = 0; i < n; i++)
        mag[i] = fabs(mag[i]);
    ref_rope(ref, c->n, c->heads, c->hd, c->style, r, th, c->pos0);
    attn_status s = attn_rope_apply(c->style, c->rope_dims, c->theta, c->n, c->heads, c->hd, c->pos0, x.p);
    cr_assert_eq(s, ATTN_OK, "attn_rope_apply(style %d, r %zu, theta %g, n %zu, heads %zu, hd %zu, pos0 %zu) gave %d",
                 (int)c->style, c->rope_dims, (double)c->theta, c->n, c->heads, c->hd, c->pos0, (int)s);
    cr_assert(tc_buf_guards_ok(&x), "attn_rope_apply wrote outside x");
    for (size_t t = 0; t < c->n; t++)
        for (size_t h = 0; h < c->heads; h++)
            for (size_t d = 0; d < c->hd; d++) {
                const size_t i = (t * c->heads + h) * c->hd + d;
                if (d >= r) {
                    cr_assert_eq(tc_f2u(x.p[i]), tc_f2u(orig[i]), "dim %zu >= rope_dims %zu changed", d, r);
                    continue;
                }
                /* The partner of d in its pair. */
                const size_t e = c->style == ATTN_ROPE_NEOX ? (d < r / 2 ? d + r / 2 : d - r / 2) : d ^ 1;
                const size_t j = (t * c->heads + h) * c->hd + e;
                const double bound = ldexp(mag[i] + mag[j], -22) + 1e-300, err = fabs((double)x.p[i] - ref[i]);
                cr_assert(err <= bound,
                          "style %d r %zu theta %g pos0 %zu: x[t=%zu][h=%zu][%zu] = %.9g, float64 %.9g (err %.3g > "
                          "%.3g, seed %" PRIu64 ")",
                          (int)c->style, r, th, c->pos0, t, h, d, (double)x.p[i], ref[i], err, bound, tc_seed());
                if (err / bound > *worst)
                    *worst = err / bound;
            }
    tc_buf_free(&x);
    free(ref), free(mag), free(orig);
}

Test(rope, apply_vs_float64)
{
    static const rope_case cases[] = {
        { ATTN_ROPE_NEOX, 1, 1, 2, 0, 0.0f, 0 },
        { ATTN_ROPE_NEOX, 7, 3, 8, 0, 0.0f, 0 },
        { ATTN_ROPE_NEOX, 17, 5, 64, 0, 10000.0f, 3 },
        { ATTN_ROPE_NEOX, 3, 2, 128, 64, 500000.0f, 1000 },       /* partial rotation */
        { ATTN_ROPE_NEOX, 5, 3, 13, 12, 0.0f, 0 },                 /* odd head_dim, rope_dims below it */
        { ATTN_ROPE_NEOX, 9, 1, 80, 32, 1000000.0f, 1000000 },    /* big positions, theta 1e6 */
        { ATTN_ROPE_NEOX, 4, 2, 300, 0, 10000.0f, 7 },             /* more pairs than one stack chunk */
        { ATTN_ROPE_NEOX, 2, 3, 16, 16, 1.5f, (size_t)1 << 40 },   /* theta near 1, positions past fp32 */
        { ATTN_ROPE_GPTJ, 1, 1, 2, 0, 0.0f, 0 },
        { ATTN_ROPE_GPTJ, 7, 3, 8, 0, 0.0f, 0 },
        { ATTN_ROPE_GPTJ, 17, 5, 64, 0, 10000.0f, 3 },
        { ATTN_ROPE_GPTJ, 3, 2, 128, 64, 500000.0f, 1000 },
        { ATTN_ROPE_GPTJ, 5, 3, 13, 6, 0.0f, 0 },
        { ATTN_ROPE_GPTJ, 9, 1, 80, 32, 1000000.0f, 1000000 },
        { ATTN_ROPE_GPTJ, 3, 2, 258, 258, 10000.0f, 11 },
        { ATTN_ROPE_GPTJ, 2, 3, 16, 16, 0.25f, ((size_t)1 << 53) - 2 }, /* the last positions allowed */
    };
    double worst = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_rope_case(&cases[i], tc_mix(tc_seed() ^ 0x409e, i), &worst);
    fprintf(stderr, "[stat] %-24s %zu cases, max err %.2f of the rounding bound (seed %" PRIu64 ")\n",
            "rope::apply_vs_float64", sizeof cases / sizeof cases[0], worst, tc_seed());
}

/* rope_dims 0 is head_dim and theta 0 is 10000, bitwise; tokens at pos0 + t equal one call per token. */
Test(rope, defaults_and_positions)
{
    enum { N = 5, H = 3, D = 12 };
    for (int st = ATTN_ROPE_NEOX; st <= ATTN_ROPE_GPTJ; st++) {
        float a[N * H * D], b[N * H * D], c[N * H * D];
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed(), 0xdef + (uint64_t)st));
        for (size_t i = 0; i < N * H * D; i++)
            a[i] = b[i] = c[i] = tc_rng_float(&r, -1.0f, 1.0f);
        cr_assert_eq(attn_rope_apply((attn_rope)st, 0, 0.0f, N, H, D, 40, a), ATTN_OK);
        cr_assert_eq(attn_rope_apply((attn_rope)st, D, 10000.0f, N, H, D, 40, b), ATTN_OK);
        for (size_t t = 0; t < N; t++)
            cr_assert_eq(attn_rope_apply((attn_rope)st, D, 0.0f, 1, H, D, 40 + t, c + t * H * D), ATTN_OK);
        cr_assert(!memcmp(a, b, sizeof a), "style %d: defaults differ from rope_dims %d, theta 10000", st, D);
        cr_assert(!memcmp(a, c, sizeof a), "style %d: one call differs from one call per token", st);
    }
}

/* What RoPE is for: q . k after rotation depends on the positions only through their difference. */
Test(rope, relative_positions)
{
    enum { D = 32 };
    for (int st = ATTN_ROPE_NEOX; st <= ATTN_ROPE_GPTJ; st++) {
        float q0[D], k0[D];
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed(), 0x4e1 + (uint64_t)st));
        for (int i = 0; i < D; i++)
            q0[i] = tc_rng_float(&r, -1.0f, 1.0f), k0[i] = tc_rng_float(&r, -1.0f, 1.0f);
        static const size_t at[][2] = { { 5, 2 }, { 105, 102 }, { 100003, 100000 } };
        double dots[3];
        for (int c = 0; c < 3; c++) {
            float q[D], k[D];
            memcpy(q, q0, sizeof q), memcpy(k, k0, sizeof k);
            cr_assert_eq(attn_rope_apply((attn_rope)st, 0, 0.0f, 1, 1, D, at[c][0], q), ATTN_OK);
            cr_assert_eq(attn_rope_apply((attn_rope)st, 0, 0.0f, 1, 1, D, at[c][1], k), ATTN_OK);
            dots[c] = 0.0;
            for (int i = 0; i < D; i++)
                dots[c] += (double)q[i] * k[i];
        }
        for (int c = 1; c < 3; c++)
            cr_assert(fabs(dots[c] - dots[0]) < 1e-4, "style %d: q.k at distance 3 is %.9g at %zu, %.9g at %zu", st,
                      dots[c], at[c][0], dots[0], at[0][0]);
    }
}

#define EXPECT_ROPE(want, style, r, theta, n, h, d, pos0, xp)                                                     \
    do {                                                                                                          \
        attn_status s_ = attn_rope_apply((style), (r), (theta), (n), (h), (d), (pos0), (xp));                     \
        cr_assert_eq(s_, (want), "line %d: attn_rope_apply gave %d (%s), want %d", __LINE__, (int)s_,             \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&x, TC_POISON_BITS) && tc_buf_guards_ok(&x), "line %d: x written on error",    \
                  __LINE__);                                                                                      \
    } while (0)

Test(rope, apply_errors)
{
    tc_buf x;
    cr_assert_eq(tc_buf_alloc(&x, 64), 0);
    const attn_rope N = ATTN_ROPE_NEOX;
    EXPECT_ROPE(ATTN_EINVAL, N, 0, 0.0f, 2, 2, 8, 0, NULL);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, 0.0f, 0, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, 0.0f, 2, 0, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, 0.0f, 2, 2, 0, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, ATTN_ROPE_NONE, 0, 0.0f, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, (attn_rope)3, 0, 0.0f, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, (attn_rope)-1, 0, 0.0f, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 3, 0.0f, 2, 2, 8, 0, x.p);  /* odd rope_dims */
    EXPECT_ROPE(ATTN_EINVAL, N, 10, 0.0f, 2, 2, 8, 0, x.p); /* above head_dim */
    EXPECT_ROPE(ATTN_EINVAL, N, 0, 0.0f, 2, 2, 7, 0, x.p);  /* odd head_dim as the default rope_dims */
    EXPECT_ROPE(ATTN_EINVAL, ATTN_ROPE_GPTJ, 0, 0.0f, 2, 2, 7, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, -1.0f, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, NAN, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, INFINITY, 2, 2, 8, 0, x.p);
    EXPECT_ROPE(ATTN_EINVAL, N, 0, -INFINITY, 2, 2, 8, 0, x.p);
    /* Element and byte counts that overflow, positions past 2^53. */
    EXPECT_ROPE(ATTN_ERANGE, N, 0, 0.0f, SIZE_MAX / 2, 4, 8, 0, x.p);
    EXPECT_ROPE(ATTN_ERANGE, N, 2, 0.0f, SIZE_MAX / 8 + 1, 1, 2, 0, x.p);
    EXPECT_ROPE(ATTN_ERANGE, N, 0, 0.0f, 2, 2, 8, ((size_t)1 << 53) - 1, x.p);
    EXPECT_ROPE(ATTN_ERANGE, N, 0, 0.0f, 1, 2, 8, ((size_t)1 << 53), x.p);
    EXPECT_ROPE(ATTN_ERANGE, N, 0, 0.0f, 1, 2, 8, SIZE_MAX, x.p);
    EXPECT_ROPE(ATTN_ERANGE, N, 0, 0.0f, ((size_t)1 << 53) + 1, 1, 2, 0, x.p);
    /* rope_dims 2 of head_dim 3 is fine, and so is the last position; -0 is theta 0. */
    tc_buf_fill_bits(&x, 0);
    cr_assert_eq(attn_rope_apply(N, 2, 0.0f, 2, 2, 3, 0, x.p), ATTN_OK);
    cr_assert_eq(attn_rope_apply(N, 0, 0.0f, 2, 2, 8, ((size_t)1 << 53) - 2, x.p), ATTN_OK);
    cr_assert_eq(attn_rope_apply(ATTN_ROPE_GPTJ, 0, -0.0f, 2, 2, 8, 0, x.p), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&x));
    tc_buf_free(&x);
}

/* ---- random layers ---- */

typedef struct layer_case {
    size_t d_model, h, hk, hd;
    unsigned bias; /* bit 0 bq, 1 bk, 2 bv, 3 bo */
    int wo;
    attn_rope rope;
    size_t rope_dims;
    float theta;
} layer_case;

typedef struct rand_layer {
    attn_layer w;
    float *alloc[8];
} rand_layer;

static float *rand_floats(size_t n, tc_rng *r, float a)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    cr_assert(p != NULL, "out of memory");
    for (size_t i = 0; i < n; i++)
        p[i] = tc_rng_float(r, -a, a);
    return p;
}

/* Scaled as test_layer.c's: q, k entries of about 1.2, scores of std ~1.5, y of order 1. */
static void rand_layer_make(rand_layer *L, const layer_case *c, uint64_t seed)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    memset(L, 0, sizeof *L);
    const size_t hk = c->hk ? c->hk : c->h, qw = c->h * c->hd, kw = hk * c->hd, dm = c->d_model;
    const float a = 2.5f / sqrtf((float)dm);
    attn_layer *w = &L->w;
    w->d_model = dm;
    w->n_heads = c->h;
    w->n_kv_heads = c->hk;
    w->head_dim = c->hd;
    w->rope = c->rope;
    w->rope_dims = c->rope_dims;
    w->rope_theta = c->theta;
    w->wq = L->alloc[0] = rand_floats(qw * dm, &r, a);
    w->wk = L->alloc[1] = rand_floats(kw * dm, &r, a);
    w->wv = L->alloc[2] = rand_floats(kw * dm, &r, a);
    if (c->wo)
        w->wo = L->alloc[3] = rand_floats(dm * qw, &r, sqrtf(3.0f / (float)qw));
    if (c->bias & 1)
        w->bq = L->alloc[4] = rand_floats(qw, &r, 0.5f);
    if (c->bias & 2)
        w->bk = L->alloc[5] = rand_floats(kw, &r, 0.5f);
    if (c->bias & 4)
        w->bv = L->alloc[6] = rand_floats(kw, &r, 0.5f);
    if (c->bias & 8)
        w->bo = L->alloc[7] = rand_floats(dm, &r, 0.5f);
}

static void rand_layer_free(rand_layer *L)
{
    for (int i = 0; i < 8; i++)
        free(L->alloc[i]);
    memset(L, 0, sizeof *L);
}

static const layer_case rope_layers[] = {
    { 48, 4, 2, 12, 0x0, 1, ATTN_ROPE_NEOX, 0, 0.0f },        /* Llama: GQA, full rotation, defaults */
    { 70, 6, 2, 16, 0xf, 1, ATTN_ROPE_NEOX, 8, 500000.0f },   /* partial rotation, every bias */
    { 40, 4, 1, 10, 0x7, 0, ATTN_ROPE_GPTJ, 0, 1000.0f },     /* MQA, GPT-J pairs, no wo */
    { 64, 2, 2, 32, 0x9, 1, ATTN_ROPE_GPTJ, 30, 10000.0f },   /* MHA, rope_dims not a multiple of 4 */
};

/* attn_self_attention with RoPE (positions 0..n-1) against the float64 layer, on every ISA. */
Test(rope, self_attention_vs_float64, .timeout = 600)
{
    static const size_t lens[] = { 1, 7, 33 };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    double worst = 0.0;
    uint64_t id = 0;
    for (size_t ci = 0; ci < sizeof rope_layers / sizeof rope_layers[0]; ci++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int causal = 0; causal <= 1; causal++) {
                const size_t n = lens[li];
                rand_layer L;
                rand_layer_make(&L, &rope_layers[ci], tc_mix(tc_seed() ^ 0x5e1f, id++));
                tc_rng r;
                tc_rng_init(&r, tc_mix(tc_seed() ^ 0x5e1f, id++));
                float *x = rand_floats(n * L.w.d_model, &r, 1.5f);
                const size_t ny = n * width_of(&L.w);
                double *ref = malloc(ny * sizeof *ref);
                cr_assert(ref);
                cr_assert_eq(ref_layer(&L.w, x, n, causal, ref), 0);
                for (int ii = 0; ii < n_isa; ii++) {
                    attn_ctx *ctx = make_ctx(isas[ii], 0);
                    tc_buf y;
                    cr_assert_eq(tc_buf_alloc(&y, ny), 0);
                    attn_status s = attn_self_attention(ctx, &L.w, x, n, causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE,
                                                        y.p, NULL);
                    cr_assert_eq(s, ATTN_OK, "case %zu: %d", ci, (int)s);
                    cr_assert(tc_buf_guards_ok(&y));
                    const double e = rel_err(y.p, ref, ny);
                    cr_assert(e <= TC_LAYER_TOL, "%s: case %zu n %zu causal %d: y err %.3g (seed %" PRIu64 ")",
                              attn_isa_name(isas[ii]), ci, n, causal, e, tc_seed());
                    worst = e > worst ? e : worst;
                    tc_buf_free(&y);
                    attn_ctx_destroy(ctx);
                }
                free(ref);
                free(x);
                rand_layer_free(&L);
            }
    fprintf(stderr, "[stat] %-24s max err y %.2e (seed %" PRIu64 ")\n", "rope::self_attention", worst, tc_seed());
}

/* With rope NONE the RoPE fields are ignored: the same bits as a layer without them (the v0 behaviour). */
Test(rope, self_attention_rope_none_unchanged)
{
    const layer_case c = { 48, 4, 2, 12, 0xf, 1, ATTN_ROPE_NONE, 0, 0.0f };
    rand_layer L;
    rand_layer_make(&L, &c, tc_mix(tc_seed(), 0x0e0e));
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 0x0e0f));
    float *x = rand_floats(9 * 48, &r, 1.5f);
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    float y0[9 * 48], y1[9 * 48];
    cr_assert_eq(attn_self_attention(ctx, &L.w, x, 9, ATTN_MASK_CAUSAL, y0, NULL), ATTN_OK);
    attn_layer w = L.w;
    w.rope_dims = 5;
    w.rope_theta = NAN;
    cr_assert_eq(attn_self_attention(ctx, &w, x, 9, ATTN_MASK_CAUSAL, y1, NULL), ATTN_OK);
    cr_assert(!memcmp(y0, y1, sizeof y0));
    attn_ctx_destroy(ctx);
    free(x);
    rand_layer_free(&L);
}

static attn_layer fixture_layer(const llama_fixture *f)
{
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = f->d_model;
    w.n_heads = f->n_heads;
    w.n_kv_heads = f->n_kv_heads;
    w.head_dim = f->head_dim;
    w.wq = f->wq, w.wk = f->wk, w.wv = f->wv, w.wo = f->wo;
    w.bq = f->bq, w.bk = f->bk, w.bv = f->bv, w.bo = f->bo;
    w.rope = f->rope;
    w.rope_dims = f->rope_dims;
    w.rope_theta = f->rope_theta;
    return w;
}

static const size_t llama_len[2] = { LLAMA_LEN_A, LLAMA_LEN_B };

/* attn_self_attention (causal) of each whole fixture sequence against torch and the float64 reference; and the
 * test's own float64 layer against the fixture's, so that the random tests above trust a reference that is
 * Hugging Face's. */
Test(rope, self_attention_llama_fixtures)
{
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    for (size_t fi = 0; fi < LLAMA_N_FIXTURES; fi++) {
        const llama_fixture *f = &llama_fixtures[fi];
        const attn_layer w = fixture_layer(f);
        for (int sq = 0; sq < 2; sq++) {
            const size_t n = llama_len[sq], ny = n * f->d_model;
            double *mine = malloc(ny * sizeof *mine);
            cr_assert(mine);
            cr_assert_eq(ref_layer(&w, f->x[sq], n, 1, mine), 0);
            double e = 0.0;
            for (size_t i = 0; i < ny; i++)
                e = fabs(mine[i] - f->ref[sq][i]) > e ? fabs(mine[i] - f->ref[sq][i]) : e;
            cr_assert(e < 1e-12, "%s: the test's float64 layer is %.3g off the fixture's", f->name, e);
            cr_assert(rel_err(f->y[sq], f->ref[sq], ny) < 2e-6, "%s: torch float32 vs float64", f->name);
            for (int ii = 0; ii < n_isa; ii++) {
                attn_ctx *ctx = make_ctx(isas[ii], 0);
                tc_buf y;
                cr_assert_eq(tc_buf_alloc(&y, ny), 0);
                cr_assert_eq(attn_self_attention(ctx, &w, f->x[sq], n, ATTN_MASK_CAUSAL, y.p, NULL), ATTN_OK);
                cr_assert(tc_buf_guards_ok(&y));
                const double er = rel_err(y.p, f->ref[sq], ny);
                double et = 0.0;
                for (size_t i = 0; i < ny; i++)
                    et = fabs((double)y.p[i] - f->y[sq][i]) > et ? fabs((double)y.p[i] - f->y[sq][i]) : et;
                cr_assert(er <= TC_LAYER_TOL && et <= TC_LAYER_TOL, "%s %s seq %d: err vs float64 %.3g, vs torch %.3g",
                          attn_isa_name(isas[ii]), f->name, sq, er, et);
                tc_buf_free(&y);
                attn_ctx_destroy(ctx);
            }
            free(mine);
        }
    }
}

#define EXPECT_LAYER(want, ctx, w, x, n, yp)                                                                      \
    do {                                                                                                          \
        attn_status s_ = attn_self_attention((ctx), (w), (x), (n), ATTN_MASK_CAUSAL, (yp), NULL);                 \
        cr_assert_eq(s_, (want), "line %d: attn_self_attention gave %d, want %d", __LINE__, (int)s_, (int)(want)); \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "line %d: y written on error",    \
                  __LINE__);                                                                                      \
    } while (0)

Test(rope, self_attention_rope_errors)
{
    float wt[16 * 16] = { 0 }, x[3 * 16] = { 0 };
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, 3 * 16), 0);
    attn_layer base;
    memset(&base, 0, sizeof base);
    base.d_model = 16;
    base.n_heads = 2;
    base.head_dim = 8;
    base.wq = base.wk = base.wv = base.wo = wt;
    base.rope = ATTN_ROPE_NEOX;
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    attn_layer w = base;
    w.rope = (attn_rope)3;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w.rope = (attn_rope)-1;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w = base;
    w.rope_dims = 5;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w.rope_dims = 10;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w = base;
    w.rope_theta = -2.0f;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w.rope_theta = NAN;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w.rope_theta = INFINITY;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    w = base;
    w.head_dim = 7; /* the default rope_dims is odd */
    w.d_model = 14;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, y.p);
    /* Valid: rope_dims 8 and 2, GPT-J, theta 1. */
    w = base;
    w.rope_dims = 2;
    w.rope_theta = 1.0f;
    w.rope = ATTN_ROPE_GPTJ;
    cr_assert_eq(attn_self_attention(ctx, &w, x, 3, ATTN_MASK_CAUSAL, y.p, NULL), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&y));
    tc_buf_free(&y);
    attn_ctx_destroy(ctx);
}

/* ---- attn_layer_forward ---- */

static attn_kv_pool *make_pool(size_t hk, size_t hd, size_t vd, size_t page_tokens, size_t n_pages, attn_dtype t)
{
    const attn_kv_pool_desc d = { .n_kv_heads = hk, .head_dim = hd, .v_dim = vd, .page_tokens = page_tokens,
                                  .n_pages = n_pages, .dtype = t };
    attn_kv_pool *p = NULL;
    attn_status s = attn_kv_pool_create(&p, &d);
    cr_assert_eq(s, ATTN_OK, "attn_kv_pool_create gave %d (%s)", (int)s, attn_strerror(s));
    return p;
}

static uint32_t new_seq(attn_kv_pool *p)
{
    uint32_t id = UINT32_MAX;
    cr_assert_eq(attn_seq_new(p, &id), ATTN_OK);
    return id;
}

/* The fixture's schedule (prefill of A and B in one call, then decode steps of both, in either order, then A
 * alone) on every ISA, one and two threads, page size 16 (A's 10 tokens and B's 7 share no page); every step's y
 * rows against the float64 reference and torch, the lengths after every step. */
Test(rope, forward_llama_fixtures, .timeout = 300)
{
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    double worst = 0.0;
    for (size_t fi = 0; fi < LLAMA_N_FIXTURES; fi++) {
        const llama_fixture *f = &llama_fixtures[fi];
        const attn_layer w = fixture_layer(f);
        const size_t dm = f->d_model;
        for (int ii = 0; ii < n_isa; ii++)
            for (int threads = 0; threads <= 1; threads++) {
                attn_ctx *ctx = make_ctx(isas[ii], threads);
                attn_kv_pool *p = make_pool(f->n_kv_heads, f->head_dim, 0, 16, 8, ATTN_F32);
                const uint32_t ids[2] = { new_seq(p), new_seq(p) };
                size_t done[2] = { 0, 0 };
                for (size_t si = 0; si < LLAMA_N_STEPS; si++) {
                    const llama_step *st = &llama_steps[si];
                    size_t total = 0;
                    uint32_t seqs[2];
                    for (size_t j = 0; j < st->n_seqs; j++)
                        total += st->n_new[j], seqs[j] = ids[st->seq[j]];
                    float *x = malloc(total * dm * sizeof *x);
                    cr_assert(x);
                    tc_buf y;
                    cr_assert_eq(tc_buf_alloc(&y, total * dm), 0);
                    for (size_t j = 0, r = 0; j < st->n_seqs; r += st->n_new[j], j++)
                        memcpy(x + r * dm, f->x[st->seq[j]] + done[st->seq[j]] * dm, st->n_new[j] * dm * sizeof *x);
                    attn_status s = attn_layer_forward(ctx, &w, p, st->n_seqs, seqs, st->n_new, x, y.p);
                    cr_assert_eq(s, ATTN_OK, "%s %s step %zu: %d (%s)", attn_isa_name(isas[ii]), f->name, si, (int)s,
                                 attn_strerror(s));
                    cr_assert(tc_buf_guards_ok(&y));
                    for (size_t j = 0, r = 0; j < st->n_seqs; r += st->n_new[j], j++) {
                        const int sq = st->seq[j];
                        const size_t off = done[sq] * dm, n = st->n_new[j] * dm;
                        const double er = rel_err(y.p + r * dm, f->ref[sq] + off, n);
                        double et = 0.0;
                        for (size_t i = 0; i < n; i++) {
                            const double d = fabs((double)y.p[r * dm + i] - f->y[sq][off + i]);
                            et = d > et ? d : et;
                        }
                        cr_assert(er <= TC_LAYER_TOL && et <= TC_LAYER_TOL,
                                  "%s, %d threads, %s step %zu seq %d: err vs float64 %.3g, vs torch %.3g",
                                  attn_isa_name(isas[ii]), attn_ctx_threads(ctx), f->name, si, sq, er, et);
                        worst = er > worst ? er : worst;
                        done[sq] += st->n_new[j];
                        cr_assert_eq(attn_seq_len(p, ids[sq]), done[sq]);
                    }
                    tc_buf_free(&y);
                    free(x);
                }
                cr_assert_eq(done[0], LLAMA_LEN_A);
                cr_assert_eq(done[1], LLAMA_LEN_B);
                attn_kv_pool_destroy(p);
                attn_ctx_destroy(ctx);
            }
    }
    fprintf(stderr, "[stat] %-24s max err y %.2e vs float64 (seed %" PRIu64 ")\n", "rope::forward_fixtures", worst,
            tc_seed());
}

/* Random Llama layers, several sequences of different lengths (some across pages): prefill of all of them in one
 * call, then the same in one call per sequence on a second pool, and in two chunks per sequence on a third, then
 * decode steps; all within tolerance of each other and of the float64 layer over the whole sequence. */
Test(rope, forward_batched_vs_single, .timeout = 600)
{
    enum { NS = 5, STEPS = 3 };
    static const size_t prefill[NS] = { 1, 17, 40, 3, 33 };
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    double worst = 0.0;
    for (size_t ci = 0; ci < sizeof rope_layers / sizeof rope_layers[0]; ci++) {
        rand_layer L;
        rand_layer_make(&L, &rope_layers[ci], tc_mix(tc_seed() ^ 0xba7c, ci));
        const attn_layer *w = &L.w;
        const size_t dm = w->d_model, hk = w->n_kv_heads ? w->n_kv_heads : w->n_heads, wy = width_of(w);
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed() ^ 0xba7d, ci));
        /* Each sequence's whole input and the float64 output over it. */
        float *xs[NS];
        double *refs[NS];
        for (int s = 0; s < NS; s++) {
            const size_t n = prefill[s] + STEPS;
            xs[s] = rand_floats(n * dm, &r, 1.5f);
            refs[s] = malloc(n * wy * sizeof *refs[s]);
            cr_assert(refs[s]);
            cr_assert_eq(ref_layer(w, xs[s], n, 1, refs[s]), 0);
        }
        attn_kv_pool *pools[3];
        uint32_t ids[3][NS];
        for (int m = 0; m < 3; m++) {
            pools[m] = make_pool(hk, w->head_dim, 0, 16, 64, ATTN_F32);
            for (int s = 0; s < NS; s++)
                ids[m][s] = new_seq(pools[m]);
        }
        for (int step = 0; step <= STEPS; step++) {
            size_t n_new[NS], total = 0;
            for (int s = 0; s < NS; s++)
                total += n_new[s] = step ? 1 : prefill[s];
            float *x = malloc(total * dm * sizeof *x);
            cr_assert(x);
            for (int s = 0, row = 0; s < NS; row += (int)n_new[s], s++) {
                const size_t from = step ? prefill[s] + (size_t)step - 1 : 0;
                memcpy(x + (size_t)row * dm, xs[s] + from * dm, n_new[s] * dm * sizeof *x);
            }
            float *y[3];
            for (int m = 0; m < 3; m++) {
                y[m] = malloc(total * wy * sizeof *y[m]);
                cr_assert(y[m]);
            }
            /* 0: one call; 1: one call per sequence; 2: per sequence, a prefill in two chunks. */
            cr_assert_eq(attn_layer_forward(ctx, w, pools[0], NS, ids[0], n_new, x, y[0]), ATTN_OK);
            for (int s = 0, row = 0; s < NS; row += (int)n_new[s], s++) {
                cr_assert_eq(attn_layer_forward(ctx, w, pools[1], 1, &ids[1][s], &n_new[s], x + (size_t)row * dm,
                                                y[1] + (size_t)row * wy),
                             ATTN_OK);
                const size_t a = n_new[s] / 2, b = n_new[s] - a;
                if (a)
                    cr_assert_eq(attn_layer_forward(ctx, w, pools[2], 1, &ids[2][s], &a, x + (size_t)row * dm,
                                                    y[2] + (size_t)row * wy),
                                 ATTN_OK);
                cr_assert_eq(attn_layer_forward(ctx, w, pools[2], 1, &ids[2][s], &b, x + (row + a) * dm,
                                                y[2] + (row + a) * wy),
                             ATTN_OK);
            }
            for (int s = 0, row = 0; s < NS; row += (int)n_new[s], s++) {
                const size_t from = step ? prefill[s] + (size_t)step - 1 : 0;
                for (int m = 0; m < 3; m++) {
                    cr_assert_eq(attn_seq_len(pools[m], ids[m][s]), prefill[s] + (size_t)step);
                    const double e = rel_err(y[m] + (size_t)row * wy, refs[s] + from * wy, n_new[s] * wy);
                    cr_assert(e <= TC_LAYER_TOL, "layer %zu step %d seq %d way %d: err %.3g (seed %" PRIu64 ")", ci,
                              step, s, m, e, tc_seed());
                    worst = e > worst ? e : worst;
                }
            }
            for (int m = 0; m < 3; m++)
                free(y[m]);
            free(x);
        }
        for (int m = 0; m < 3; m++)
            attn_kv_pool_destroy(pools[m]);
        for (int s = 0; s < NS; s++)
            free(xs[s]), free(refs[s]);
        rand_layer_free(&L);
    }
    attn_ctx_destroy(ctx);
    fprintf(stderr, "[stat] %-24s max err y %.2e (seed %" PRIu64 ")\n", "rope::forward_batched", worst, tc_seed());
}

/* A small pool that runs out in the middle of a batch: the sequences appended before the one that failed are
 * truncated back, so lengths and free pages are what they were and y is untouched; after a sequence is freed the
 * same call succeeds and matches a pool that never failed. The same with an I8 pool refusing a non-finite row. */
Test(rope, forward_all_or_nothing)
{
    const layer_case c = { 32, 4, 2, 8, 0x0, 1, ATTN_ROPE_NEOX, 0, 0.0f };
    rand_layer L;
    rand_layer_make(&L, &c, tc_mix(tc_seed(), 0xa11));
    const attn_layer *w = &L.w;
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 0xa12));
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    /* 6 pages of 16: s0 holds 10 tokens (1 page), a spare sequence 40 (3 pages): 2 pages free. */
    attn_kv_pool *p = make_pool(2, 8, 0, 16, 6, ATTN_F32), *big = make_pool(2, 8, 0, 16, 64, ATTN_F32);
    const uint32_t s0 = new_seq(p), s1 = new_seq(p), spare = new_seq(p), s2 = new_seq(p);
    const uint32_t b0 = new_seq(big), b1 = new_seq(big), b2 = new_seq(big);
    float *x10 = rand_floats(40 * 32, &r, 1.5f);
    float *scratch = malloc(40 * 32 * sizeof *scratch);
    cr_assert(scratch);
    const size_t n10 = 10, n40 = 40;
    cr_assert_eq(attn_layer_forward(ctx, w, p, 1, &s0, &n10, x10, scratch), ATTN_OK);
    cr_assert_eq(attn_layer_forward(ctx, w, p, 1, &spare, &n40, x10, scratch), ATTN_OK);
    cr_assert_eq(attn_layer_forward(ctx, w, big, 1, &b0, &n10, x10, scratch), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 2);
    /* s0 + 7 (a second page), s1 + 5 (a page), s2 + 3 (a page): the third append finds no page. */
    const uint32_t seqs[3] = { s0, s1, s2 }, bseqs[3] = { b0, b1, b2 };
    const size_t n_new[3] = { 7, 5, 3 };
    float *x = rand_floats(15 * 32, &r, 1.5f);
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, 15 * 32), 0);
    cr_assert_eq(attn_layer_forward(ctx, w, p, 3, seqs, n_new, x, y.p), ATTN_ERANGE);
    cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "y written on ERANGE");
    cr_assert_eq(attn_seq_len(p, s0), 10);
    cr_assert_eq(attn_seq_len(p, s1), 0);
    cr_assert_eq(attn_seq_len(p, s2), 0);
    cr_assert_eq(attn_kv_pool_free_pages(p), 2);
    /* Room again: the same call now gives what a pool that never ran out gives. */
    cr_assert_eq(attn_seq_free(p, spare), ATTN_OK);
    cr_assert_eq(attn_layer_forward(ctx, w, p, 3, seqs, n_new, x, y.p), ATTN_OK);
    float yb[15 * 32];
    cr_assert_eq(attn_layer_forward(ctx, w, big, 3, bseqs, n_new, x, yb), ATTN_OK);
    double *ref = malloc(sizeof yb / sizeof yb[0] * sizeof *ref);
    cr_assert(ref);
    for (size_t i = 0; i < 15 * 32; i++)
        ref[i] = yb[i];
    cr_assert(rel_err(y.p, ref, 15 * 32) <= TC_LAYER_TOL, "after the rollback: %.3g", rel_err(y.p, ref, 15 * 32));
    cr_assert_eq(attn_seq_len(p, s0), 17);
    cr_assert_eq(attn_seq_len(p, s1), 5);
    cr_assert_eq(attn_seq_len(p, s2), 3);
    attn_kv_pool_destroy(p);
    attn_kv_pool_destroy(big);

    /* I8 pool: the third sequence's tokens are infinite, so its append is refused (ATTN_EINVAL) after two others
     * went in. */
    attn_kv_pool *q8 = make_pool(2, 8, 0, 16, 16, ATTN_I8);
    const uint32_t t0 = new_seq(q8), t1 = new_seq(q8), t2 = new_seq(q8);
    cr_assert_eq(attn_layer_forward(ctx, w, q8, 1, &t0, &n10, x10, scratch), ATTN_OK);
    const size_t free8 = attn_kv_pool_free_pages(q8);
    const uint32_t tseqs[3] = { t0, t1, t2 };
    for (size_t i = 12 * 32; i < 15 * 32; i++)
        x[i] = INFINITY;
    tc_buf_fill_bits(&y, TC_POISON_BITS);
    cr_assert_eq(attn_layer_forward(ctx, w, q8, 3, tseqs, n_new, x, y.p), ATTN_EINVAL);
    cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "y written on a refused append");
    cr_assert_eq(attn_seq_len(q8, t0), 10);
    cr_assert_eq(attn_seq_len(q8, t1), 0);
    cr_assert_eq(attn_seq_len(q8, t2), 0);
    cr_assert_eq(attn_kv_pool_free_pages(q8), free8);
    attn_kv_pool_destroy(q8);

    free(ref), free(x), free(x10), free(scratch);
    tc_buf_free(&y);
    attn_ctx_destroy(ctx);
    rand_layer_free(&L);
}

/* Forks and the page check: a fork and its source share a partly filled page; in one call the first to append
 * copies it and the second then owns the original alone, so the call needs exactly one page for both. With one free
 * page it fits; with a third sequence that needs one more page it is ATTN_ERANGE before any append, and the pool
 * (free pages included: no stray copy) is as it was. */
Test(rope, forward_fork_pages)
{
    const layer_case c = { 32, 4, 2, 8, 0x0, 1, ATTN_ROPE_NEOX, 0, 0.0f };
    rand_layer L;
    rand_layer_make(&L, &c, tc_mix(tc_seed(), 0xf0c));
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 0xf0d));
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    attn_kv_pool *p = make_pool(2, 8, 0, 16, 3, ATTN_F16);
    const uint32_t s0 = new_seq(p), other = new_seq(p);
    float *x = rand_floats(20 * 32, &r, 1.5f), *y = malloc(20 * 32 * sizeof *y);
    cr_assert(y);
    const size_t n10 = 10, n16 = 16;
    cr_assert_eq(attn_layer_forward(ctx, &L.w, p, 1, &s0, &n10, x, y), ATTN_OK);
    cr_assert_eq(attn_layer_forward(ctx, &L.w, p, 1, &other, &n16, x, y), ATTN_OK);
    uint32_t f;
    cr_assert_eq(attn_seq_fork(p, s0, &f), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 1);
    const uint32_t three[3] = { f, s0, other };
    const size_t n_new[3] = { 2, 2, 1 };
    cr_assert_eq(attn_layer_forward(ctx, &L.w, p, 3, three, n_new, x, y), ATTN_ERANGE);
    cr_assert_eq(attn_kv_pool_free_pages(p), 1, "a copy made before the refusal stayed");
    cr_assert(attn_seq_len(p, f) == 10 && attn_seq_len(p, s0) == 10 && attn_seq_len(p, other) == 16);
    cr_assert_eq(attn_layer_forward(ctx, &L.w, p, 2, three, n_new, x, y), ATTN_OK, "one copy, counted once");
    cr_assert_eq(attn_kv_pool_free_pages(p), 0);
    cr_assert(attn_seq_len(p, f) == 12 && attn_seq_len(p, s0) == 12);
    attn_kv_pool_destroy(p);
    free(x), free(y);
    attn_ctx_destroy(ctx);
    rand_layer_free(&L);
}

#define EXPECT_FWD(want, ctx, w, p, n, seqs, nn, x, yp)                                                           \
    do {                                                                                                          \
        attn_status s_ = attn_layer_forward((ctx), (w), (p), (n), (seqs), (nn), (x), (yp));                       \
        cr_assert_eq(s_, (want), "line %d: attn_layer_forward gave %d (%s), want %d", __LINE__, (int)s_,          \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "line %d: y written on error",    \
                  __LINE__);                                                                                      \
        cr_assert(attn_seq_len(pool, ids[0]) == 3 && attn_seq_len(pool, ids[1]) == 0 &&                          \
                      attn_kv_pool_free_pages(pool) == free0,                                                     \
                  "line %d: the pool changed on error", __LINE__);                                                \
    } while (0)

Test(rope, forward_errors)
{
    enum { DM = 16, H = 2, HK = 1, HD = 8 };
    const layer_case c = { DM, H, HK, HD, 0xf, 1, ATTN_ROPE_GPTJ, 0, 0.0f };
    rand_layer L;
    rand_layer_make(&L, &c, tc_mix(tc_seed(), 0xe44));
    const attn_layer base = L.w;
    attn_ctx *ctx = make_ctx(ATTN_ISA_AUTO, 0);
    attn_kv_pool *pool = make_pool(HK, HD, 0, 16, 4, ATTN_F32);
    const uint32_t ids[3] = { new_seq(pool), new_seq(pool), new_seq(pool) };
    float x[8 * DM] = { 0 }, ys[8 * DM];
    const size_t three = 3;
    cr_assert_eq(attn_layer_forward(ctx, &base, pool, 1, &ids[0], &three, x, ys), ATTN_OK);
    cr_assert_eq(attn_seq_free(pool, ids[2]), ATTN_OK); /* a dead id */
    const size_t free0 = attn_kv_pool_free_pages(pool);
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, 8 * DM), 0);
    const size_t nn[2] = { 2, 1 }, zero[2] = { 2, 0 };
    const uint32_t dup[2] = { ids[0], ids[0] }, dead[2] = { ids[0], ids[2] }, unknown[2] = { ids[1], 999 };
    EXPECT_FWD(ATTN_EINVAL, NULL, &base, pool, 2, ids, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, NULL, pool, 2, ids, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, NULL, 2, ids, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, NULL, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, NULL, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, nn, NULL, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, nn, x, NULL);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 0, ids, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, zero, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, dup, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, dead, nn, x, y.p);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, unknown, nn, x, y.p);
    /* Bad layer fields. */
    attn_layer w = base;
    w.wq = NULL;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.wv = NULL;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.d_model = 0;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.n_kv_heads = 3; /* does not divide n_heads 2 */
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.w_dtype = ATTN_I8;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.math = (attn_math)2;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.rope = (attn_rope)3;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.rope_dims = 7;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w.rope_dims = 10;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    w = base;
    w.rope_theta = NAN;
    EXPECT_FWD(ATTN_EINVAL, ctx, &w, pool, 2, ids, nn, x, y.p);
    /* A pool whose dims differ from the layer's: KV heads, head_dim, v_dim. */
    {
        static const size_t dims[3][3] = { { 2, HD, 0 }, { HK, 4, 0 }, { HK, HD, 4 } };
        for (int i = 0; i < 3; i++) {
            attn_kv_pool *o = make_pool(dims[i][0], dims[i][1], dims[i][2], 16, 4, ATTN_F32);
            const uint32_t oid = new_seq(o);
            const size_t one = 1;
            attn_status s = attn_layer_forward(ctx, &base, o, 1, &oid, &one, x, y.p);
            cr_assert_eq(s, ATTN_EINVAL, "pool dims %d: %d", i, (int)s);
            cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && attn_seq_len(o, oid) == 0);
            attn_kv_pool_destroy(o);
        }
    }
    /* y overlapping x or a weight. */
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, nn, x, (float *)x + DM);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, nn, x, (float *)base.wo + 1);
    EXPECT_FWD(ATTN_EINVAL, ctx, &base, pool, 2, ids, nn, x, (float *)base.bq + 1);
    /* Sizes that overflow, and positions past 2^53. */
    const size_t huge[2] = { SIZE_MAX / 2, 1 }, wrap[2] = { SIZE_MAX, 2 }, far[2] = { (size_t)1 << 53, 1 };
    EXPECT_FWD(ATTN_ERANGE, ctx, &base, pool, 2, ids, huge, x, y.p);
    EXPECT_FWD(ATTN_ERANGE, ctx, &base, pool, 2, ids, wrap, x, y.p);
    EXPECT_FWD(ATTN_ERANGE, ctx, &base, pool, 2, ids, far, x, y.p);
    /* And still valid afterwards. */
    cr_assert_eq(attn_layer_forward(ctx, &base, pool, 2, ids, nn, x, y.p), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&y));
    cr_assert_eq(attn_seq_len(pool, ids[0]), 5);
    cr_assert_eq(attn_seq_len(pool, ids[1]), 1);
    tc_buf_free(&y);
    attn_kv_pool_destroy(pool);
    attn_ctx_destroy(ctx);
    rand_layer_free(&L);
}
