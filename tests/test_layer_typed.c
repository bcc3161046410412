/* The layer with half and bfloat16 weights (DESIGN.md §3b): attn_linear_typed and attn_self_attention with
 * attn_layer.w_dtype F16/BF16 (and F32) in ATTN_MATH_F32 and ATTN_MATH_BF16 on every ISA this CPU runs, against
 * float64 references computed from the stored values (and, for ATTN_MATH_BF16, from their bfloat16 roundings), with
 * outputs NaN-poisoned and guarded; the rounding points checked exactly on hand-made values and bitwise against
 * fp32 calls on pre-rounded operands; argument errors (bad enums, overlaps counted in the weights' own bytes);
 * thread-count independence; and attn_layer_load_safetensors with keep_dtype (16-bit weights kept bit for bit,
 * mixed dtypes refused; refused with ATTN_ENOTSUP when built without jansson).
 *
 * Tolerances:
 * - attn_linear_typed, either math: per element (k + 2) * 2^-24 * (|b| + sum_i |x_i w_i|), from the operands the
 *   math multiplies (x and the widened w; in ATTN_MATH_BF16 both rounded to bfloat16). Sound: the products of two
 *   bfloat16 values are exact in fp32 (8 + 8 significant bits), and of fp32 x by a widened w the FMA (or rounded
 *   product) adds at most one more unit, so only the k + 1 additions of any summation order round.
 * - attn_self_attention, ATTN_MATH_F32: TC_LAYER_TOL * max(1, max|ref|), as test_layer.c (the weights are widened
 *   exactly, so nothing changes from an fp32 layer of the same values).
 * - attn_self_attention, ATTN_MATH_BF16: per element, from attn_sdpa's contract (1e-2 * max|V| the row sees,
 *   against float64 from the bfloat16-rounded q, k, v, P unrounded), carried through the layer:
 *     q, k, v: the reference rounds its float64 projection d to bfloat16; the library rounds its fp32 sum, which
 *       lies within e = (d_model + 2) * 2^-24 * (|b| + sum |x w|) of d, so (rounding being monotonic) its value
 *       lies in [bf16(d - e), bf16(d + e)]: dq = that interval's width, 0 for almost every element (where the
 *       library cannot differ), one bfloat16 step where it may. (Keys that attn_sdpa reads in place and does not
 *       round, a known library bug on some shapes, get dk = |d - bf16(d)| + e.)
 *     scores move by at most ds_j = scale * sum_c (dq |k| + |q| dk + dq dk), so softmax weights by a factor within
 *       e^(+-2 sigma), sigma = max_j ds_j: with r = e^(2 sigma) - 1,
 *       |o_c - ref| <= 1e-2 * (vmax + dvmax) + r * sum_j p_j (|v_jc| + dv_jc) + sum_j p_j dv_jc  =: E_c
 *     no wo: y = o, tolerance E_c. With wo: the heads are rounded to bfloat16 on both sides, so they differ by at
 *       most F_c = E_c (1 + 2^-8) + 2^-7 |o_ref c|, and y by sum_c F_c |wo_jc| plus the fp32 GEMM's
 *       (qw + 2) * 2^-24 * (|bo| + sum_c (|o_c| + F_c) |wo_jc|); plus TC_LAYER_TOL * max(1, max|ref|) for the rest
 *       of the fp32 arithmetic.
 *     probs (fp32 weights exp(s - lse) of the library's scores): TC_TOL + (r + 2^-8) * p_ref, the 2^-8 for a row
 *       sum taken from the bfloat16-rounded weights (DESIGN allows either), which moves lse by up to 2^-9.
 *   Sound given attn_sdpa's contract; rows without a possible rounding difference (sigma = 0, the vast majority)
 *   are held to exactly the attention's own 1e-2 * max|V| through wo. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- conversions (independent of the library's: the compiler's _Float16, frexp/nearbyint for bfloat16) ---- */

/* x rounded to bfloat16 (8 significant bits, nearest even), for finite normal-range x, in double. */
static double bf16_round_d(double x)
{
    if (x == 0.0 || !isfinite(x))
        return x;
    int e;
    const double m = frexp(x, &e); /* 0.5 <= |m| < 1 */
    return ldexp(nearbyint(m * 256.0) / 256.0, e);
}

static float bf16_round(float x) { return (float)bf16_round_d((double)x); }

/* The 16-bit pattern of x rounded to type t (F16 or BF16). */
static uint16_t bits16(attn_dtype t, float x)
{
    if (t == ATTN_BF16)
        return (uint16_t)(tc_f2u(bf16_round(x)) >> 16);
    const _Float16 h = (_Float16)x;
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

static float value16(attn_dtype t, uint16_t u)
{
    if (t == ATTN_BF16)
        return tc_u2f((uint32_t)u << 16);
    _Float16 h;
    memcpy(&h, &u, sizeof h);
    return (float)h;
}

static const char *dt_name(attn_dtype t) { return t == ATTN_F16 ? "f16" : t == ATTN_BF16 ? "bf16" : "f32"; }
static const char *math_name(attn_math m) { return m == ATTN_MATH_BF16 ? "bf16" : "f32"; }
static size_t dt_size(attn_dtype t) { return t == ATTN_F32 ? 4 : 2; }

/* ---- typed weights ---- */

/* n values stored as t: p (one element past an aligned start: no alignment promised) holds the stored elements,
 * val the same values widened to fp32 (what a reference reads). */
typedef struct typed_w {
    void *p;
    float *val;
    size_t n;
    attn_dtype t;
    void *alloc;
} typed_w;

static void typed_from(typed_w *w, const float *src, size_t n, attn_dtype t)
{
    w->n = n;
    w->t = t;
    w->alloc = malloc((n + 1) * dt_size(t));
    w->val = malloc((n ? n : 1) * sizeof(float));
    cr_assert(w->alloc && w->val, "out of memory");
    w->p = (char *)w->alloc + dt_size(t);
    for (size_t i = 0; i < n; i++) {
        if (t == ATTN_F32) {
            ((float *)w->p)[i] = w->val[i] = src[i];
        } else {
            const uint16_t u = bits16(t, src[i]);
            memcpy((char *)w->p + 2 * i, &u, 2);
            w->val[i] = value16(t, u);
        }
    }
}

static void typed_free(typed_w *w)
{
    free(w->alloc);
    free(w->val);
    memset(w, 0, sizeof *w);
}

static float *rand_floats(float **alloc, size_t n, tc_rng *r, float a)
{
    *alloc = malloc((n + 1) * sizeof(float));
    cr_assert(*alloc != NULL, "out of memory");
    float *p = *alloc + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = tc_rng_float(r, -a, a);
    return p;
}

static attn_ctx *make_ctx(attn_isa isa, int threads)
{
    attn_ctx *ctx = NULL;
    attn_status s = tc_ctx_create(&ctx, isa, threads, 0, 0);
    cr_assert_eq(s, ATTN_OK, "attn_ctx_create(isa=%s, threads=%d) gave %d (%s)", attn_isa_name(isa), threads,
                 (int)s, attn_strerror(s));
    return ctx;
}

static const attn_dtype w_types[3] = { ATTN_F32, ATTN_F16, ATTN_BF16 };
static const attn_math maths[2] = { ATTN_MATH_F32, ATTN_MATH_BF16 };

/* ==== attn_linear_typed ========================================================================================= */

typedef struct lin_stats {
    unsigned long cases;
    double err_u;   /* max |y - ref| / (2^-24 * (|b| + sum |x w|)) */
    double err_rel; /* max |y - ref| / max(1, max|ref|) */
} lin_stats;

/* y = x w^T + b through attn_linear_typed on ctx into a poisoned, guarded buffer, against float64 from the operands
 * the math multiplies, within (k + 2) * 2^-24 * (|b| + sum |x w|). x, w unchanged. 0 on pass. */
static int check_linear_typed(const attn_ctx *ctx, const float *x, size_t m, size_t k, const typed_w *w,
                              const float *b, size_t n, attn_math math, lin_stats *st, char *msg, size_t len)
{
    tc_buf y;
    if (tc_buf_alloc(&y, m * n)) {
        snprintf(msg, len, "out of memory");
        return 1;
    }
    const size_t wbytes = w->n * dt_size(w->t);
    void *wcopy = malloc(wbytes ? wbytes : 1);
    float *xcopy = malloc(m * k * sizeof *xcopy);
    cr_assert(wcopy && xcopy);
    memcpy(wcopy, w->p, wbytes);
    memcpy(xcopy, x, m * k * sizeof *xcopy);
    char what[160];
    snprintf(what, sizeof what, "%s, %d threads: attn_linear_typed(m=%zu k=%zu n=%zu w %s math %s%s)",
             attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx), m, k, n, dt_name(w->t), math_name(math),
             b ? " bias" : "");
    int bad = 0;
    attn_status s = attn_linear_typed(ctx, x, m, k, w->p, w->t, b, n, y.p, math);
    if (s != ATTN_OK) {
        snprintf(msg, len, "%s gave %d (%s)", what, (int)s, attn_strerror(s));
        bad = 1;
    } else if (!tc_buf_guards_ok(&y)) {
        snprintf(msg, len, "%s wrote outside y", what);
        bad = 1;
    } else if (memcmp(wcopy, w->p, wbytes) || memcmp(xcopy, x, m * k * sizeof *xcopy)) {
        snprintf(msg, len, "%s wrote its inputs", what);
        bad = 1;
    }
    const int r16 = math == ATTN_MATH_BF16;
    double eu = 0.0, max_ref = 0.0, max_err = 0.0;
    for (size_t r = 0; r < m && !bad; r++)
        for (size_t j = 0; j < n && !bad; j++) {
            double t = b ? (double)b[j] : 0.0, abs = b ? fabs((double)b[j]) : 0.0;
            for (size_t i = 0; i < k; i++) {
                const double xv = r16 ? bf16_round_d(x[r * k + i]) : (double)x[r * k + i];
                const double wv = r16 ? bf16_round_d(w->val[j * k + i]) : (double)w->val[j * k + i];
                t += xv * wv;
                abs += fabs(xv * wv);
            }
            const double got = y.p[r * n + j], e = fabs(got - t), unit = ldexp(abs, -24);
            if (!(e <= (double)(k + 2) * unit)) {
                snprintf(msg, len, "%s: y[%zu][%zu] = %.9g, reference %.9g: error %.3g > bound %.3g (seed %" PRIu64 ")",
                         what, r, j, (double)got, t, e, (double)(k + 2) * unit, tc_seed());
                bad = 1;
            }
            if (unit > 0 && e / unit > eu)
                eu = e / unit;
            max_ref = fabs(t) > max_ref ? fabs(t) : max_ref;
            max_err = e > max_err ? e : max_err;
        }
    if (!bad && st) {
        st->cases++;
        st->err_u = eu > st->err_u ? eu : st->err_u;
        const double rel = max_err / (max_ref > 1.0 ? max_ref : 1.0);
        st->err_rel = rel > st->err_rel ? rel : st->err_rel;
    }
    free(wcopy);
    free(xcopy);
    tc_buf_free(&y);
    return bad;
}

/* Every ISA x weight type x math on fixed edge shapes (row tails of every blocking, the 48-row rounding blocks and
 * the 192-row tiles, panels and 64-column blocks) and random odd ones; with and without bias. */
Test(layer_typed, linear_vs_float64, .timeout = 600)
{
    static const size_t fixed[][3] = {
        { 1, 1, 1 }, { 3, 5, 17 }, { 7, 17, 15 }, { 13, 70, 65 }, { 47, 33, 64 }, { 49, 3, 130 },
        { 97, 129, 33 }, { 193, 70, 100 }, { 200, 16, 16 },
    };
    enum { N_FIXED = sizeof fixed / sizeof fixed[0], N_RAND = 14 };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    attn_ctx *ctx[TC_MAX_ISAS];
    for (int ii = 0; ii < n_isa; ii++)
        ctx[ii] = make_ctx(isas[ii], 0);
    lin_stats st[TC_MAX_ISAS][3][2];
    memset(st, 0, sizeof st);
    tc_rng shapes;
    tc_rng_init(&shapes, tc_mix(tc_seed(), 0x71ed));
    for (size_t c = 0; c < N_FIXED + N_RAND; c++) {
        size_t m, k, n;
        if (c < N_FIXED) {
            m = fixed[c][0], k = fixed[c][1], n = fixed[c][2];
        } else {
            m = 1 + tc_rng_below(&shapes, 260);
            k = 1 + tc_rng_below(&shapes, 140);
            n = 1 + tc_rng_below(&shapes, 140);
        }
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed() ^ 0x7e9ed, c));
        float *xa, *wa, *ba;
        const float *x = rand_floats(&xa, m * k, &r, 1.0f), *wf = rand_floats(&wa, n * k, &r, 1.0f);
        const float *b = rand_floats(&ba, n, &r, 1.0f);
        for (int ti = 0; ti < 3; ti++) {
            typed_w w;
            typed_from(&w, wf, n * k, w_types[ti]);
            for (int mi = 0; mi < 2; mi++)
                for (int ii = 0; ii < n_isa; ii++)
                    for (int bias = 0; bias <= 1; bias++) {
                        char msg[1024];
                        const int bad = check_linear_typed(ctx[ii], x, m, k, &w, bias ? b : NULL, n, maths[mi],
                                                           &st[isas[ii]][ti][mi], msg, sizeof msg);
                        cr_assert(!bad, "%s", msg);
                    }
            typed_free(&w);
        }
        free(xa), free(wa), free(ba);
    }
    for (int ii = 0; ii < n_isa; ii++) {
        for (int ti = 0; ti < 3; ti++)
            for (int mi = 0; mi < 2; mi++) {
                const lin_stats *s = &st[isas[ii]][ti][mi];
                fprintf(stderr,
                        "[stat] layer_typed::linear   %-10s w %-4s math %-4s: %4lu cases, max err %.2f u*sum|xw| "
                        "(bound k+2; rel. to max(1,|ref|) %.2e) (seed %" PRIu64 ")\n",
                        attn_isa_name(isas[ii]), dt_name(w_types[ti]), math_name(maths[mi]), s->cases, s->err_u,
                        s->err_rel, tc_seed());
            }
        attn_ctx_destroy(ctx[ii]);
    }
}

/* The rounding points, exactly: bfloat16 keeps 7 fraction bits. 1 + 2^-10 (exact in fp32 and in half) rounds to 1;
 * 1 + 2^-8 is halfway between 1 and 1 + 2^-7 and rounds to the even 1; 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and
 * 1 + 2^-6 and rounds to the even 1 + 2^-6. With k = 1 and no bias, y = x * w is exact, so every ISA gives exactly
 * the product of the rounded (ATTN_MATH_BF16) or unrounded (ATTN_MATH_F32) operands. */
Test(layer_typed, linear_rounding_points)
{
    const float a = 1.0f + 0x1p-10f, half = 1.0f + 0x1p-8f, half3 = 1.0f + 3 * 0x1p-8f;
    const float xs[4] = { a, half, half3, -half3 }, xs_r[4] = { 1.0f, 1.0f, 1.0f + 0x1p-6f, -(1.0f + 0x1p-6f) };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = make_ctx(isas[ii], 0);
        /* x [4][1] by w [3][1]: w = {1, a, 2} in each type (a is exact in f32 and f16; bf16 stores 1 for it). */
        const float wv[3] = { 1.0f, a, 2.0f };
        for (int ti = 0; ti < 3; ti++) {
            typed_w w;
            typed_from(&w, wv, 3, w_types[ti]);
            for (int mi = 0; mi < 2; mi++) {
                tc_buf y;
                cr_assert_eq(tc_buf_alloc(&y, 12), 0);
                cr_assert_eq(attn_linear_typed(ctx, xs, 4, 1, w.p, w.t, NULL, 3, y.p, maths[mi]), ATTN_OK);
                cr_assert(tc_buf_guards_ok(&y));
                for (int r = 0; r < 4; r++)
                    for (int j = 0; j < 3; j++) {
                        const float wj = maths[mi] ? bf16_round(w.val[j]) : w.val[j];
                        const float want = (maths[mi] ? xs_r[r] : xs[r]) * wj;
                        cr_assert_eq(tc_f2u(y.p[r * 3 + j]), tc_f2u(want),
                                     "%s w %s math %s: y[%d][%d] = %a, want %a", attn_isa_name(isas[ii]),
                                     dt_name(w.t), math_name(maths[mi]), r, j, (double)y.p[r * 3 + j],
                                     (double)want);
                    }
                tc_buf_free(&y);
            }
            typed_free(&w);
        }
        attn_ctx_destroy(ctx);
    }
}

/* Bitwise identities that pin down where the typed paths round: half and bfloat16 weights in ATTN_MATH_F32 give
 * attn_linear's bits on the widened weights; ATTN_MATH_BF16 gives attn_linear's bits on bf16(x) and bf16(w) (for
 * any stored type); attn_linear_typed(F32, MATH_F32) is attn_linear. On every ISA, shapes across tiles. */
Test(layer_typed, linear_bitwise_identities, .timeout = 300)
{
    static const size_t shapes[][3] = { { 5, 7, 9 }, { 50, 70, 130 }, { 400, 33, 200 } };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (size_t c = 0; c < 3; c++) {
        const size_t m = shapes[c][0], k = shapes[c][1], n = shapes[c][2];
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed() ^ 0xb17, c));
        float *xa, *wa, *ba;
        const float *x = rand_floats(&xa, m * k, &r, 2.0f), *wf = rand_floats(&wa, n * k, &r, 1.0f);
        const float *b = rand_floats(&ba, n, &r, 1.0f);
        float *xr = malloc(m * k * sizeof *xr), *wr = malloc(n * k * sizeof *wr);
        float *y0 = malloc(m * n * sizeof *y0), *y1 = malloc(m * n * sizeof *y1);
        cr_assert(xr && wr && y0 && y1);
        for (size_t i = 0; i < m * k; i++)
            xr[i] = bf16_round(x[i]);
        for (int ii = 0; ii < n_isa; ii++) {
            attn_ctx *ctx = make_ctx(isas[ii], 0);
            cr_assert_eq(attn_linear(ctx, x, m, k, wf, b, n, y0), ATTN_OK);
            cr_assert_eq(attn_linear_typed(ctx, x, m, k, wf, ATTN_F32, b, n, y1, ATTN_MATH_F32), ATTN_OK);
            cr_assert(!memcmp(y0, y1, m * n * sizeof *y0), "%s: attn_linear_typed(F32, MATH_F32) != attn_linear",
                      attn_isa_name(isas[ii]));
            for (int ti = 0; ti < 3; ti++) {
                typed_w w;
                typed_from(&w, wf, n * k, w_types[ti]);
                /* MATH_F32: the widened weights through attn_linear. */
                cr_assert_eq(attn_linear(ctx, x, m, k, w.val, b, n, y0), ATTN_OK);
                cr_assert_eq(attn_linear_typed(ctx, x, m, k, w.p, w.t, b, n, y1, ATTN_MATH_F32), ATTN_OK);
                cr_assert(!memcmp(y0, y1, m * n * sizeof *y0), "%s w %s m=%zu k=%zu n=%zu: MATH_F32 differs from "
                          "attn_linear on the widened weights", attn_isa_name(isas[ii]), dt_name(w.t), m, k, n);
                /* MATH_BF16: bf16(x), bf16(w) through attn_linear. */
                for (size_t i = 0; i < n * k; i++)
                    wr[i] = bf16_round(w.val[i]);
                cr_assert_eq(attn_linear(ctx, xr, m, k, wr, b, n, y0), ATTN_OK);
                cr_assert_eq(attn_linear_typed(ctx, x, m, k, w.p, w.t, b, n, y1, ATTN_MATH_BF16), ATTN_OK);
                cr_assert(!memcmp(y0, y1, m * n * sizeof *y0), "%s w %s m=%zu k=%zu n=%zu: MATH_BF16 differs from "
                          "attn_linear on bf16(x), bf16(w)", attn_isa_name(isas[ii]), dt_name(w.t), m, k, n);
                typed_free(&w);
            }
            attn_ctx_destroy(ctx);
        }
        free(xa), free(wa), free(ba), free(xr), free(wr), free(y0), free(y1);
    }
}

#define EXPECT_TYPED(want, ctx, x, m, k, w, t, b, n, yp, math)                                                    \
    do {                                                                                                          \
        attn_status s_ = attn_linear_typed((ctx), (x), (m), (k), (w), (t), (b), (n), (yp), (math));               \
        cr_assert_eq(s_, (want), "line %d: attn_linear_typed gave %d (%s), want %d", __LINE__, (int)s_,           \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "line %d: y written on error",    \
                  __LINE__);                                                                                      \
    } while (0)

/* NULLs, zero sizes, bad enums, overflowing sizes; y overlapping a 16-bit w by one element at either end (counted
 * in w's own bytes: a y that starts where a 16-bit w ends is valid, though the same w read as floats would reach
 * into it); nothing is written on error. */
Test(layer_typed, linear_argument_errors)
{
    enum { M = 4, K = 8, NO = 8, NY = M * NO, PAD = 2 * NY };
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float xa[M * K], ba[NO], wblock[PAD + NO * K + PAD];
    for (int i = 0; i < M * K; i++)
        xa[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < NO; i++)
        ba[i] = (float)i;
    uint16_t *w16 = (uint16_t *)(void *)(wblock + PAD); /* NO * K 16-bit elements: NO * K / 2 floats of bytes */
    for (int i = 0; i < NO * K; i++)
        w16[i] = bits16(ATTN_BF16, (float)(i % 5) * 0.25f);
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, NY), 0);
    const attn_dtype bf = ATTN_BF16;
    const attn_math mb = ATTN_MATH_BF16;
    EXPECT_TYPED(ATTN_EINVAL, NULL, xa, M, K, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, NULL, M, K, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, NULL, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, bf, ba, NO, NULL, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, 0, K, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, 0, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, bf, ba, 0, y.p, mb);
    static const int bad_dtypes[] = { 3, 4, -1, 1000 };
    for (size_t i = 0; i < sizeof bad_dtypes / sizeof bad_dtypes[0]; i++)
        for (int mi = 0; mi < 2; mi++)
            EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, (attn_dtype)bad_dtypes[i], ba, NO, y.p, maths[mi]);
    static const int bad_maths[] = { 2, -1, 77 };
    for (size_t i = 0; i < sizeof bad_maths / sizeof bad_maths[0]; i++)
        for (int ti = 0; ti < 3; ti++)
            EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, w_types[ti], ba, NO, y.p, (attn_math)bad_maths[i]);
    const size_t big = SIZE_MAX / 2;
    EXPECT_TYPED(ATTN_ERANGE, ctx, xa, big, K, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_ERANGE, ctx, xa, M, big, w16, bf, ba, NO, y.p, mb);
    EXPECT_TYPED(ATTN_ERANGE, ctx, xa, M, K, w16, bf, ba, big, y.p, mb);
    EXPECT_TYPED(ATTN_ERANGE, ctx, xa, 1, 1, w16, bf, NULL, SIZE_MAX / 4 + 1, y.p, mb);
    /* y over w16's first element or its last one. */
    float *const w_first = wblock + PAD, *const w_end = wblock + PAD + NO * K / 2; /* byte end of the 16-bit w */
    for (int ti = 1; ti < 3; ti++) {
        EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, w_types[ti], ba, NO, w_first - (NY - 1), mb);
        EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, w_types[ti], ba, NO, w_end - 1, mb);
        EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, w_types[ti], ba, NO, w_first, ATTN_MATH_F32);
    }
    /* As F32 the same pointer covers twice the bytes: y at the 16-bit end overlaps it then. */
    EXPECT_TYPED(ATTN_EINVAL, ctx, xa, M, K, w16, ATTN_F32, ba, NO, w_end, ATTN_MATH_F32);
    /* Touching a 16-bit w on either side is fine, and gives the bits of a separate y. */
    cr_assert_eq(attn_linear_typed(ctx, xa, M, K, w16, bf, ba, NO, y.p, mb), ATTN_OK);
    float *const touch[2] = { w_first - NY, w_end };
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(attn_linear_typed(ctx, xa, M, K, w16, bf, ba, NO, touch[i], mb), ATTN_OK, "touch %d refused", i);
        cr_assert(!memcmp(touch[i], y.p, NY * sizeof(float)), "touching y %d differs", i);
    }
    for (int i = 0; i < NO * K; i++)
        cr_assert_eq(w16[i], bits16(ATTN_BF16, (float)(i % 5) * 0.25f), "w written");
    tc_buf_free(&y);
    attn_ctx_destroy(ctx);
}

/* ==== attn_self_attention ======================================================================================= */

typedef struct layer_case {
    size_t d_model, h, hk, hd;
    unsigned bias; /* bit 0 bq, 1 bk, 2 bv, 3 bo */
    int wo;
} layer_case;

/* A random layer: fp32 draws stored as t (typed_w keeps the stored values widened), x and biases fp32. Scales as in
 * test_layer.c: scores of std ~1.5, y of order 1. */
typedef struct rand_layer {
    attn_layer w;
    typed_w tw[4]; /* wq, wk, wv, wo (wo.n == 0 when absent) */
    float *x;
    float *alloc[5]; /* x, bq, bk, bv, bo */
} rand_layer;

static void rand_layer_make(rand_layer *L, const layer_case *c, size_t n, attn_dtype t, attn_math math,
                            uint64_t seed)
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
    w->w_dtype = t;
    w->math = math;
    L->x = rand_floats(&L->alloc[0], n * dm, &r, 1.5f);
    const size_t sizes[4] = { qw * dm, kw * dm, kw * dm, c->wo ? dm * qw : 0 };
    const float amp[4] = { a, a, a, sqrtf(3.0f / (float)qw) };
    for (int i = 0; i < 4; i++) {
        if (!sizes[i])
            continue;
        float *tmp;
        const float *src = rand_floats(&tmp, sizes[i], &r, amp[i]);
        typed_from(&L->tw[i], src, sizes[i], t);
        free(tmp);
    }
    w->wq = L->tw[0].p, w->wk = L->tw[1].p, w->wv = L->tw[2].p, w->wo = c->wo ? L->tw[3].p : NULL;
    const float **b[4] = { &w->bq, &w->bk, &w->bv, &w->bo };
    const size_t blen[4] = { qw, kw, kw, dm };
    for (int i = 0; i < 4; i++)
        if (c->bias >> i & 1)
            *b[i] = rand_floats(&L->alloc[1 + i], blen[i], &r, 0.5f);
}

static void rand_layer_free(rand_layer *L)
{
    for (int i = 0; i < 4; i++)
        typed_free(&L->tw[i]);
    for (int i = 0; i < 5; i++)
        free(L->alloc[i]);
    memset(L, 0, sizeof *L);
}

/* The float64 reference of a typed layer in its math mode, with a tolerance per element (see the top of the file). */
typedef struct layer_ref {
    size_t width;
    double *y, *ytol;   /* [n][width] */
    double *p, *ptol;   /* [h][n][n] */
    double max_sigma;   /* the largest score uncertainty from possible bfloat16 rounding differences */
    unsigned long uncertain; /* q/k/v elements whose rounding the library may do differently */
} layer_ref;

/* 1 when attn_sdpa reads the layer's fp32 keys in place (one query block per KV head of at most 16 rows, head_dim a
 * multiple of 16: engine/sdpa.c), where ATTN_MATH_BF16 may leave them unrounded (a library bug test_dtypes.c
 * describes). The reference then allows any key between its fp32 and bfloat16 value. */
static int keys_in_place(const attn_layer *w, size_t n)
{
    const size_t hk = w->n_kv_heads ? w->n_kv_heads : w->n_heads;
    return w->n_heads / hk * n <= 16 && w->head_dim % 16 == 0;
}

/* One projection: d = b + xs ws^T in double; hat the value the math uses (d, or bf16(d)); dlt the largest distance
 * of the library's value from hat. */
static void ref_proj(const double *xs, size_t n, size_t k, const double *ws, const float *b, size_t m, int r16,
                     int unrounded_ok, double *hat, double *dlt, unsigned long *uncertain)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < m; j++) {
            double d = b ? (double)b[j] : 0.0, abs = b ? fabs((double)b[j]) : 0.0;
            for (size_t c = 0; c < k; c++) {
                d += xs[i * k + c] * ws[j * k + c];
                abs += fabs(xs[i * k + c] * ws[j * k + c]);
            }
            const double e = (double)(k + 2) * ldexp(abs, -24);
            double h = d, dl = 0.0;
            if (r16) {
                h = bf16_round_d(d);
                dl = bf16_round_d(d + e) - bf16_round_d(d - e);
                if (unrounded_ok)
                    dl = fmax(dl, fabs(d - h) + e);
                *uncertain += dl > 0.0;
            }
            hat[i * m + j] = h;
            dlt[i * m + j] = dl;
        }
}

static int layer_ref_make(layer_ref *R, const rand_layer *L, size_t n, attn_mask mask)
{
    const attn_layer *w = &L->w;
    const size_t h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim, dm = w->d_model;
    const size_t qw = h * hd, kw = hk * hd, group = h / hk, width = w->wo ? dm : qw;
    const int r16 = w->math == ATTN_MATH_BF16;
    memset(R, 0, sizeof *R);
    R->width = width;
    double *xs = malloc(n * dm * sizeof *xs), *ws[4] = { NULL, NULL, NULL, NULL };
    double *q = malloc(n * qw * sizeof *q), *dq = malloc(n * qw * sizeof *dq);
    double *k = malloc(n * kw * sizeof *k), *dk = malloc(n * kw * sizeof *dk);
    double *v = malloc(n * kw * sizeof *v), *dv = malloc(n * kw * sizeof *dv);
    double *o = malloc(n * qw * sizeof *o), *eo = malloc(n * qw * sizeof *eo), *s = malloc(n * sizeof *s);
    R->y = malloc(n * width * sizeof *R->y);
    R->ytol = malloc(n * width * sizeof *R->ytol);
    R->p = malloc(h * n * n * sizeof *R->p);
    R->ptol = malloc(h * n * n * sizeof *R->ptol);
    int bad = !xs || !q || !dq || !k || !dk || !v || !dv || !o || !eo || !s || !R->y || !R->ytol || !R->p ||
              !R->ptol;
    for (int i = 0; i < 4 && !bad; i++)
        if (L->tw[i].n) {
            ws[i] = malloc(L->tw[i].n * sizeof *ws[i]);
            bad |= !ws[i];
            for (size_t e = 0; ws[i] && e < L->tw[i].n; e++)
                ws[i][e] = r16 ? bf16_round_d(L->tw[i].val[e]) : (double)L->tw[i].val[e];
        }
    if (bad)
        goto done;
    for (size_t e = 0; e < n * dm; e++)
        xs[e] = r16 ? bf16_round_d(L->x[e]) : (double)L->x[e];
    ref_proj(xs, n, dm, ws[0], w->bq, qw, r16, 0, q, dq, &R->uncertain);
    ref_proj(xs, n, dm, ws[1], w->bk, kw, r16, keys_in_place(w, n), k, dk, &R->uncertain);
    ref_proj(xs, n, dm, ws[2], w->bv, kw, r16, 0, v, dv, &R->uncertain);
    const double scale = 1.0 / sqrt((double)hd);
    for (size_t hh = 0; hh < h; hh++) {
        const size_t g = hh / group;
        for (size_t i = 0; i < n; i++) {
            const size_t seen = mask == ATTN_MASK_CAUSAL ? i + 1 : n;
            double mx = -INFINITY, sum = 0.0, sigma = 0.0, vmax = 0.0, dvmax = 0.0;
            for (size_t j = 0; j < seen; j++) {
                double t = 0.0, dt = 0.0;
                for (size_t c = 0; c < hd; c++) {
                    const double qc = q[i * qw + hh * hd + c], kc = k[j * kw + g * hd + c];
                    const double dqc = dq[i * qw + hh * hd + c], dkc = dk[j * kw + g * hd + c];
                    t += qc * kc;
                    dt += dqc * fabs(kc) + fabs(qc) * dkc + dqc * dkc;
                    vmax = fmax(vmax, fabs(v[j * kw + g * hd + c]));
                    dvmax = fmax(dvmax, dv[j * kw + g * hd + c]);
                }
                s[j] = t * scale;
                sigma = fmax(sigma, dt * scale);
                mx = s[j] > mx ? s[j] : mx;
            }
            for (size_t j = 0; j < seen; j++)
                sum += (s[j] = exp(s[j] - mx));
            const double rr = expm1(2.0 * sigma);
            R->max_sigma = fmax(R->max_sigma, sigma);
            for (size_t j = 0; j < n; j++) {
                const double pj = j < seen ? s[j] / sum : 0.0;
                R->p[(hh * n + i) * n + j] = pj;
                R->ptol[(hh * n + i) * n + j] = r16 ? TC_TOL + (rr + 0x1p-8) * pj : TC_LAYER_TOL;
                s[j] = pj;
            }
            for (size_t c = 0; c < hd; c++) {
                double t = 0.0, spread = 0.0, dvs = 0.0;
                for (size_t j = 0; j < seen; j++) {
                    const double vj = v[j * kw + g * hd + c], dvj = dv[j * kw + g * hd + c];
                    t += s[j] * vj;
                    spread += s[j] * (fabs(vj) + dvj);
                    dvs += s[j] * dvj;
                }
                o[i * qw + hh * hd + c] = t;
                eo[i * qw + hh * hd + c] = 1e-2 * (vmax + dvmax) + rr * spread + dvs;
            }
        }
    }
    double ymax = 1.0;
    for (size_t r = 0; r < n; r++)
        for (size_t j = 0; j < width; j++) {
            double t, tol;
            if (!w->wo) {
                t = o[r * qw + j];
                tol = eo[r * qw + j];
            } else {
                t = w->bo ? (double)w->bo[j] : 0.0;
                double spread = 0.0, gemm = w->bo ? fabs((double)w->bo[j]) : 0.0;
                for (size_t c = 0; c < qw; c++) {
                    const double oc = o[r * qw + c], orr = r16 ? bf16_round_d(oc) : oc, wv = ws[3][j * qw + c];
                    const double fc = eo[r * qw + c] * (1.0 + 0x1p-8) + 0x1p-7 * fabs(oc);
                    t += orr * wv;
                    spread += fc * fabs(wv);
                    gemm += (fabs(orr) + fc) * fabs(wv);
                }
                tol = spread + (double)(qw + 2) * ldexp(gemm, -24);
            }
            R->y[r * width + j] = t;
            R->ytol[r * width + j] = r16 ? tol : 0.0;
            ymax = fmax(ymax, fabs(t));
        }
    for (size_t e = 0; e < n * width; e++)
        R->ytol[e] += TC_LAYER_TOL * ymax;
done:
    free(xs), free(q), free(dq), free(k), free(dk), free(v), free(dv), free(o), free(eo), free(s);
    for (int i = 0; i < 4; i++)
        free(ws[i]);
    return bad ? -1 : 0;
}

static void layer_ref_free(layer_ref *R)
{
    free(R->y), free(R->ytol), free(R->p), free(R->ptol);
    memset(R, 0, sizeof *R);
}

typedef struct layer_stats {
    unsigned long cases;
    double err_y;     /* max |y - ref| / max(1, max|ref|) */
    double frac_y;    /* max |y - ref| / tolerance */
    double err_p;     /* max |probs - ref| */
    double frac_p;    /* max |probs - ref| / tolerance */
    unsigned long uncertain; /* q/k/v elements with a possible rounding difference */
    double max_sigma;
} layer_stats;

static int layer_fail(char *msg, size_t len, const attn_ctx *ctx, const rand_layer *L, size_t n, attn_mask mask,
                      const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int layer_fail(char *msg, size_t len, const attn_ctx *ctx, const rand_layer *L, size_t n, attn_mask mask,
                      const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const attn_layer *w = &L->w;
    snprintf(msg, len,
             "%s, %d threads, layer n=%zu d_model=%zu h=%zu/%zu hd=%zu w %s math %s%s%s%s: %s (seed %" PRIu64 ")",
             attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx), n, w->d_model, w->n_heads,
             w->n_kv_heads ? w->n_kv_heads : w->n_heads, w->head_dim, dt_name(w->w_dtype), math_name(w->math),
             w->wo ? "" : " no-wo", w->bq || w->bk || w->bv || w->bo ? " bias" : "",
             mask == ATTN_MASK_CAUSAL ? " causal" : "", what, tc_seed());
    return 1;
}

/* attn_self_attention on ctx into poisoned, guarded y (and probs) against R. x and the weights unchanged; masked
 * probs exactly 0, rows summing to 1. keep_y (may be NULL): a malloc'd copy of y. 0 on pass. */
static int check_layer(const attn_ctx *ctx, const rand_layer *L, size_t n, attn_mask mask, int want_probs,
                       const layer_ref *R, layer_stats *st, float **keep_y, char *msg, size_t len)
{
    const attn_layer *w = &L->w;
    const size_t h = w->n_heads, ny = n * R->width, np = h * n * n;
    tc_buf y = { 0 }, probs = { 0 };
    if (tc_buf_alloc(&y, ny) || (want_probs && tc_buf_alloc(&probs, np)))
        return layer_fail(msg, len, ctx, L, n, mask, "test out of memory");
    void *snap[4] = { NULL, NULL, NULL, NULL };
    for (int i = 0; i < 4; i++)
        if (L->tw[i].n) {
            snap[i] = malloc(L->tw[i].n * dt_size(L->tw[i].t));
            cr_assert(snap[i]);
            memcpy(snap[i], L->tw[i].p, L->tw[i].n * dt_size(L->tw[i].t));
        }
    int bad = 0;
    attn_status s = attn_self_attention(ctx, w, L->x, n, mask, y.p, want_probs ? probs.p : NULL);
    if (s != ATTN_OK) {
        bad = layer_fail(msg, len, ctx, L, n, mask, "attn_self_attention gave %d (%s)", (int)s, attn_strerror(s));
        goto done;
    }
    if (!tc_buf_guards_ok(&y) || (want_probs && !tc_buf_guards_ok(&probs))) {
        bad = layer_fail(msg, len, ctx, L, n, mask, "write outside y or probs");
        goto done;
    }
    for (int i = 0; i < 4; i++)
        if (snap[i] && memcmp(snap[i], L->tw[i].p, L->tw[i].n * dt_size(L->tw[i].t))) {
            bad = layer_fail(msg, len, ctx, L, n, mask, "weight %d written", i);
            goto done;
        }
    double ymax = 1.0, ey = 0.0, fy = 0.0, ep = 0.0, fp = 0.0;
    for (size_t e = 0; e < ny; e++)
        ymax = fmax(ymax, fabs(R->y[e]));
    for (size_t e = 0; e < ny; e++) {
        const double err = fabs((double)y.p[e] - R->y[e]);
        if (!(err <= R->ytol[e])) {
            bad = layer_fail(msg, len, ctx, L, n, mask, "y[%zu][%zu] = %.9g, reference %.9g: error %.3g > %.3g",
                             e / R->width, e % R->width, (double)y.p[e], R->y[e], err, R->ytol[e]);
            goto done;
        }
        ey = fmax(ey, err / ymax);
        fy = fmax(fy, err / R->ytol[e]);
    }
    for (size_t row = 0; want_probs && row < h * n; row++) {
        double sum = 0.0;
        for (size_t j = 0; j < n; j++) {
            const size_t e = row * n + j;
            const double err = fabs((double)probs.p[e] - R->p[e]);
            if (R->p[e] == 0.0 ? tc_f2u(probs.p[e]) != 0 : !(err <= R->ptol[e])) {
                bad = layer_fail(msg, len, ctx, L, n, mask, "probs[h=%zu][%zu][%zu] = %.9g, reference %.9g (tol %.3g)",
                                 row / n, row % n, j, (double)probs.p[e], R->p[e], R->ptol[e]);
                goto done;
            }
            ep = fmax(ep, err);
            if (R->ptol[e] > 0.0)
                fp = fmax(fp, err / R->ptol[e]);
            sum += probs.p[e];
        }
        if (!(fabs(sum - 1.0) <= TC_ROWSUM_TOL)) {
            bad = layer_fail(msg, len, ctx, L, n, mask, "probs row h=%zu i=%zu sums to %.9g", row / n, row % n, sum);
            goto done;
        }
    }
    if (st) {
        st->cases++;
        st->err_y = fmax(st->err_y, ey);
        st->frac_y = fmax(st->frac_y, fy);
        st->err_p = fmax(st->err_p, ep);
        st->frac_p = fmax(st->frac_p, fp);
        st->uncertain += R->uncertain;
        st->max_sigma = fmax(st->max_sigma, R->max_sigma);
    }
    if (keep_y) {
        *keep_y = malloc(ny * sizeof **keep_y);
        cr_assert(*keep_y);
        memcpy(*keep_y, y.p, ny * sizeof **keep_y);
    }
done:
    for (int i = 0; i < 4; i++)
        free(snap[i]);
    tc_buf_free(&y);
    if (want_probs)
        tc_buf_free(&probs);
    return bad;
}

static const layer_case layer_cases[] = {
    { 70, 6, 2, 13, 0xf, 1 },  /* GQA 6/2, head_dim 13, every bias */
    { 70, 4, 1, 64, 0x0, 1 },  /* MQA, head_dim 64 (keys read in place for short inputs) */
    { 33, 3, 3, 11, 0xf, 0 },  /* everything odd, no wo */
    { 100, 5, 5, 13, 0x7, 1 }, /* wo without bo */
    { 130, 3, 1, 64, 0x9, 1 }, /* q 192 wide: three column blocks of wo; 200 tokens: two row tiles */
};

/* Every case x length x mask x (weight type, math) on every ISA (ATTN_MATH_F32 with fp32 weights is test_layer.c's),
 * probs on every other run; stats per ISA, type and math. In ATTN_MATH_BF16 the result must also differ from the
 * ATTN_MATH_F32 one on the same weights (the math is not ignored). */
Test(layer_typed, self_attention_vs_float64, .timeout = 900)
{
    static const size_t lens[] = { 1, 7, 33, 200 };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    attn_ctx *ctx[TC_MAX_ISAS];
    for (int ii = 0; ii < n_isa; ii++)
        ctx[ii] = make_ctx(isas[ii], 0);
    layer_stats st[TC_MAX_ISAS][3][2];
    memset(st, 0, sizeof st);
    uint64_t id = 0;
    for (size_t ci = 0; ci < sizeof layer_cases / sizeof layer_cases[0]; ci++)
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const size_t n = lens[li];
            const attn_mask mask = (ci + li) % 2 ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            const uint64_t seed = tc_mix(tc_seed() ^ 0x1a7e7, id++);
            for (int ti = 0; ti < 3; ti++) {
                float *y32[TC_MAX_ISAS] = { NULL };
                for (int mi = 0; mi < 2; mi++) {
                    if (ti == 0 && mi == 0)
                        continue;
                    rand_layer L;
                    rand_layer_make(&L, &layer_cases[ci], n, w_types[ti], maths[mi], seed);
                    layer_ref R;
                    cr_assert_eq(layer_ref_make(&R, &L, n, mask), 0, "out of memory");
                    for (int ii = 0; ii < n_isa; ii++) {
                        char msg[1024];
                        float *got = NULL;
                        const int probs = (int)((id + (uint64_t)ii) % 2);
                        const int bad = check_layer(ctx[ii], &L, n, mask, probs, &R, &st[isas[ii]][ti][mi], &got,
                                                    msg, sizeof msg);
                        cr_assert(!bad, "case %zu: %s", ci, msg);
                        if (mi == 0) {
                            y32[ii] = got;
                        } else {
                            if (y32[ii])
                                cr_assert(memcmp(y32[ii], got, n * R.width * sizeof *got),
                                          "%s case %zu n=%zu w %s: MATH_BF16 gives MATH_F32's bits",
                                          attn_isa_name(isas[ii]), ci, n, dt_name(w_types[ti]));
                            free(got);
                        }
                    }
                    layer_ref_free(&R);
                    rand_layer_free(&L);
                }
                for (int ii = 0; ii < n_isa; ii++)
                    free(y32[ii]);
            }
        }
    for (int ii = 0; ii < n_isa; ii++) {
        for (int ti = 0; ti < 3; ti++)
            for (int mi = 0; mi < 2; mi++) {
                const layer_stats *s = &st[isas[ii]][ti][mi];
                if (!s->cases)
                    continue;
                fprintf(stderr,
                        "[stat] layer_typed::layer    %-10s w %-4s math %-4s: %3lu cases, max err y %.2e (rel. to "
                        "max(1,|ref|); %.3f of the tolerance) probs %.2e (%.3f of the tolerance); %lu q/k/v "
                        "elements of uncertain rounding, max score uncertainty %.1e (seed %" PRIu64 ")\n",
                        attn_isa_name(isas[ii]), dt_name(w_types[ti]), math_name(maths[mi]), s->cases, s->err_y,
                        s->frac_y, s->err_p, s->frac_p, s->uncertain, s->max_sigma, tc_seed());
            }
        attn_ctx_destroy(ctx[ii]);
    }
}

/* Bitwise identities of the layer: half and bfloat16 weights in ATTN_MATH_F32 give the bits of the fp32 layer of the
 * widened weights; in ATTN_MATH_BF16 those of an fp32-weight ATTN_MATH_BF16 layer of the same values (the panels are
 * rounded either way); and a zeroed v0-style struct (w_dtype and math left 0) is the fp32 layer. */
Test(layer_typed, self_attention_bitwise_identities, .timeout = 300)
{
    static const size_t lens[] = { 5, 70 };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (size_t ci = 0; ci < 2; ci++)
        for (size_t li = 0; li < 2; li++) {
            const size_t n = lens[li];
            const uint64_t seed = tc_mix(tc_seed() ^ 0x1de7, ci * 2 + li);
            for (int ti = 1; ti < 3; ti++) {
                rand_layer L;
                rand_layer_make(&L, &layer_cases[ci], n, w_types[ti], ATTN_MATH_F32, seed);
                attn_layer wide = L.w; /* the widened weights as an fp32 layer */
                wide.w_dtype = ATTN_F32;
                wide.wq = L.tw[0].val, wide.wk = L.tw[1].val, wide.wv = L.tw[2].val;
                wide.wo = L.w.wo ? L.tw[3].val : NULL;
                const size_t ny = n * (L.w.wo ? L.w.d_model : L.w.n_heads * L.w.head_dim);
                const size_t np = L.w.n_heads * n * n;
                float *ya = malloc(ny * sizeof *ya), *yb = malloc(ny * sizeof *yb);
                float *pa = malloc(np * sizeof *pa), *pb = malloc(np * sizeof *pb);
                cr_assert(ya && yb && pa && pb);
                for (int ii = 0; ii < n_isa; ii++) {
                    attn_ctx *ctx = make_ctx(isas[ii], 0);
                    for (int mi = 0; mi < 2; mi++) {
                        L.w.math = wide.math = maths[mi];
                        cr_assert_eq(attn_self_attention(ctx, &L.w, L.x, n, ATTN_MASK_CAUSAL, ya, pa), ATTN_OK);
                        cr_assert_eq(attn_self_attention(ctx, &wide, L.x, n, ATTN_MASK_CAUSAL, yb, pb), ATTN_OK);
                        cr_assert(!memcmp(ya, yb, ny * sizeof *ya) && !memcmp(pa, pb, np * sizeof *pa),
                                  "%s case %zu n=%zu w %s math %s: differs from fp32 weights of the same values",
                                  attn_isa_name(isas[ii]), ci, n, dt_name(w_types[ti]), math_name(maths[mi]));
                    }
                    /* v0: the fields after bo left zero. */
                    attn_layer v0;
                    memset(&v0, 0, sizeof v0);
                    v0.d_model = wide.d_model, v0.n_heads = wide.n_heads, v0.n_kv_heads = wide.n_kv_heads;
                    v0.head_dim = wide.head_dim;
                    v0.wq = wide.wq, v0.wk = wide.wk, v0.wv = wide.wv, v0.wo = wide.wo;
                    v0.bq = wide.bq, v0.bk = wide.bk, v0.bv = wide.bv, v0.bo = wide.bo;
                    wide.math = ATTN_MATH_F32;
                    cr_assert_eq(attn_self_attention(ctx, &v0, L.x, n, ATTN_MASK_NONE, ya, NULL), ATTN_OK);
                    cr_assert_eq(attn_self_attention(ctx, &wide, L.x, n, ATTN_MASK_NONE, yb, NULL), ATTN_OK);
                    cr_assert(!memcmp(ya, yb, ny * sizeof *ya), "%s: a zeroed v0 layer is not the fp32 layer",
                              attn_isa_name(isas[ii]));
                    attn_ctx_destroy(ctx);
                }
                free(ya), free(yb), free(pa), free(pb);
                rand_layer_free(&L);
            }
        }
}

/* attn_linear_typed and attn_self_attention with 16-bit weights in ATTN_MATH_BF16 give the same bits on 1, 2 and 3
 * threads (shapes with several tiles, 48-row rounding blocks and row tiles). */
Test(layer_typed, threads_bitwise, .timeout = 300)
{
    static const int threads[] = { 1, 2, 3 };
    const layer_case lc = { 130, 3, 1, 64, 0xf, 1 };
    const size_t n = 397, m = 400, k = 70, no = 200;
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 0x7d16));
    float *xa, *wa, *ba;
    const float *x = rand_floats(&xa, m * k, &r, 1.0f), *wf = rand_floats(&wa, no * k, &r, 1.0f);
    const float *b = rand_floats(&ba, no, &r, 1.0f);
    for (int ti = 1; ti < 3; ti++) {
        typed_w w;
        typed_from(&w, wf, no * k, w_types[ti]);
        rand_layer L;
        rand_layer_make(&L, &lc, n, w_types[ti], ATTN_MATH_BF16, tc_mix(tc_seed(), 0x7d17 + (uint64_t)ti));
        const size_t ny = n * lc.d_model, np = lc.h * n * n;
        for (int ii = 0; ii < n_isa; ii++) {
            float *y[3], *ly[3], *lp[3];
            for (int t = 0; t < 3; t++) {
                attn_ctx *ctx = make_ctx(isas[ii], threads[t]);
                y[t] = malloc(m * no * sizeof(float));
                ly[t] = malloc(ny * sizeof(float));
                lp[t] = malloc(np * sizeof(float));
                cr_assert(y[t] && ly[t] && lp[t]);
                cr_assert_eq(attn_linear_typed(ctx, x, m, k, w.p, w.t, b, no, y[t], ATTN_MATH_BF16), ATTN_OK);
                cr_assert_eq(attn_self_attention(ctx, &L.w, L.x, n, ATTN_MASK_CAUSAL, ly[t], lp[t]), ATTN_OK);
                attn_ctx_destroy(ctx);
            }
            for (int t = 1; t < 3; t++) {
                cr_assert(!memcmp(y[0], y[t], m * no * sizeof(float)),
                          "%s w %s: attn_linear_typed on %d threads differs from 1 thread", attn_isa_name(isas[ii]),
                          dt_name(w.t), threads[t]);
                cr_assert(!memcmp(ly[0], ly[t], ny * sizeof(float)) && !memcmp(lp[0], lp[t], np * sizeof(float)),
                          "%s w %s: the layer on %d threads differs from 1 thread", attn_isa_name(isas[ii]),
                          dt_name(w.t), threads[t]);
            }
            for (int t = 0; t < 3; t++)
                free(y[t]), free(ly[t]), free(lp[t]);
        }
        rand_layer_free(&L);
        typed_free(&w);
    }
    free(xa), free(wa), free(ba);
}

#define EXPECT_LAYER(want, ctx, w, x, n, mask, yp, pp)                                                            \
    do {                                                                                                          \
        attn_status s_ = attn_self_attention((ctx), (w), (x), (n), (mask), (yp), (pp));                           \
        cr_assert_eq(s_, (want), "line %d: attn_self_attention gave %d (%s), want %d", __LINE__, (int)s_,         \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y) &&                                  \
                      tc_buf_all_bits(&probs, TC_POISON_BITS) && tc_buf_guards_ok(&probs),                        \
                  "line %d: an output was written on error", __LINE__);                                           \
    } while (0)

/* Bad w_dtype or math: ATTN_EINVAL. y or probs overlapping a 16-bit weight by one element (in the weight's own
 * bytes): ATTN_EINVAL; touching it: fine, with the bits of separate outputs. */
Test(layer_typed, self_attention_argument_errors)
{
    enum { N = 3, DM = 8, H = 2, HK = 1, HD = 4, QW = H * HD, KW = HK * HD, NY = N * DM, NP = H * N * N };
    enum { PAD = 2 * (NY > NP ? NY : NP) };
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    tc_rng r;
    tc_rng_init(&r, 99);
    float xv[N * DM];
    for (int i = 0; i < N * DM; i++)
        xv[i] = tc_rng_float(&r, -1.0f, 1.0f);
    /* Each 16-bit weight alone in a block of floats with room for y or probs on both sides. */
    static const size_t wn[4] = { QW * DM, KW * DM, KW * DM, DM * QW };
    float *block[4];
    uint16_t *w16[4];
    for (int i = 0; i < 4; i++) {
        block[i] = malloc((PAD + wn[i] / 2 + PAD) * sizeof(float));
        cr_assert(block[i]);
        w16[i] = (uint16_t *)(void *)(block[i] + PAD);
        for (size_t e = 0; e < wn[i]; e++)
            w16[i][e] = bits16(ATTN_BF16, tc_rng_float(&r, -0.5f, 0.5f));
    }
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = DM, w.n_heads = H, w.n_kv_heads = HK, w.head_dim = HD;
    w.wq = w16[0], w.wk = w16[1], w.wv = w16[2], w.wo = w16[3];
    w.w_dtype = ATTN_BF16;
    w.math = ATTN_MATH_BF16;
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, NY), 0);
    cr_assert_eq(tc_buf_alloc(&probs, NP), 0);
    static const int bad_dtypes[] = { 3, -1, 1000 }, bad_maths[] = { 2, -1, 1000 };
    for (size_t i = 0; i < 3; i++) {
        attn_layer b = w;
        b.w_dtype = (attn_dtype)bad_dtypes[i];
        EXPECT_LAYER(ATTN_EINVAL, ctx, &b, xv, N, ATTN_MASK_NONE, y.p, probs.p);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &b, xv, N, ATTN_MASK_CAUSAL, y.p, NULL);
        b = w;
        b.math = (attn_math)bad_maths[i];
        EXPECT_LAYER(ATTN_EINVAL, ctx, &b, xv, N, ATTN_MASK_NONE, y.p, probs.p);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &b, xv, N, ATTN_MASK_CAUSAL, y.p, NULL);
    }
    float *ref_y = malloc(NY * sizeof(float)), *ref_p = malloc(NP * sizeof(float));
    cr_assert(ref_y && ref_p);
    cr_assert_eq(attn_self_attention(ctx, &w, xv, N, ATTN_MASK_CAUSAL, ref_y, ref_p), ATTN_OK);
    for (int i = 0; i < 4; i++) {
        float *const first = block[i] + PAD, *const end = block[i] + PAD + wn[i] / 2;
        float *const bad_y[2] = { first - (NY - 1), end - 1 }, *const bad_p[2] = { first - (NP - 1), end - 1 };
        for (int k = 0; k < 2; k++) {
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, xv, N, ATTN_MASK_NONE, bad_y[k], NULL);
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, xv, N, ATTN_MASK_CAUSAL, y.p, bad_p[k]);
        }
        float *const ok_y[2] = { first - NY, end }, *const ok_p[2] = { first - NP, end };
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(attn_self_attention(ctx, &w, xv, N, ATTN_MASK_CAUSAL, ok_y[k], probs.p), ATTN_OK,
                         "y touching weight %d refused", i);
            cr_assert(!memcmp(ok_y[k], ref_y, NY * sizeof(float)), "y touching weight %d differs", i);
            cr_assert_eq(attn_self_attention(ctx, &w, xv, N, ATTN_MASK_CAUSAL, y.p, ok_p[k]), ATTN_OK,
                         "probs touching weight %d refused", i);
            cr_assert(!memcmp(ok_p[k], ref_p, NP * sizeof(float)), "probs touching weight %d differ", i);
            tc_buf_fill_bits(&y, TC_POISON_BITS);
            tc_buf_fill_bits(&probs, TC_POISON_BITS);
        }
        /* Read as F32, the same pointer reaches twice as far: the y that touched it now overlaps. */
        attn_layer f = w;
        f.w_dtype = ATTN_F32;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &f, xv, N, ATTN_MASK_NONE, end, NULL);
    }
    for (int i = 0; i < 4; i++)
        free(block[i]);
    free(ref_y), free(ref_p);
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

/* ==== attn_layer_load_safetensors with keep_dtype =============================================================== */

#if ATTN_HAVE_JANSSON

/* A safetensors writer (as test_safetensors.c's). */
typedef struct sb {
    char *json;
    size_t jlen, jcap;
    unsigned char *data;
    size_t dlen, dcap;
    int n;
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

/* n fp32 values as dtype ("F32", "F16", "BF16"), little-endian; the stored values widened into stored[] (may be
 * NULL). */
static void sb_values(sb *b, const char *name, const char *dtype, size_t ndim, const size_t *shape, const float *v,
                      float *stored)
{
    size_t n = 1;
    for (size_t i = 0; i < ndim; i++)
        n *= shape[i];
    const attn_dtype t = !strcmp(dtype, "F16") ? ATTN_F16 : !strcmp(dtype, "BF16") ? ATTN_BF16 : ATTN_F32;
    unsigned char *p = malloc(4 * n + 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++) {
        if (t == ATTN_F32) {
            const uint32_t u = tc_f2u(v[i]);
            for (int k = 0; k < 4; k++)
                p[4 * i + k] = (unsigned char)(u >> 8 * k);
            if (stored)
                stored[i] = v[i];
        } else {
            const uint16_t u = bits16(t, v[i]);
            p[2 * i] = (unsigned char)u;
            p[2 * i + 1] = (unsigned char)(u >> 8);
            if (stored)
                stored[i] = value16(t, u);
        }
    }
    sb_tensor(b, name, dtype, ndim, shape, p, t == ATTN_F32 ? 4 * n : 2 * n);
    free(p);
}

static unsigned char *sb_finish(sb *b, size_t pad, size_t *len)
{
    sb_json(b, "}%*s", (int)pad, "");
    const size_t n = 8 + b->jlen + b->dlen;
    unsigned char *f = malloc(n + 1);
    cr_assert(f);
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

/* d_model 12, 4 heads of 3 over 2 KV heads: wq, wo [12][12], wk, wv [6][12]. */
enum { SD = 12, SH = 4, SHK = 2, SHD = 3, SQR = SH * SHD, SKR = SHK * SHD };

typedef struct st_layer {
    float w[4][SQR * SD];        /* wq, wk, wv, wo as drawn */
    float ws[4][SQR * SD];       /* as stored in the file, widened */
    float b[4][SQR];             /* bq, bk, bv, bo as drawn */
    float bs[4][SQR];            /* as stored, widened */
} st_layer;

static const size_t st_wrows[4] = { SQR, SKR, SKR, SD }, st_wcols[4] = { SD, SD, SD, SQR };
static const size_t st_blen[4] = { SQR, SKR, SKR, SD };

static void st_draw(st_layer *L, uint64_t seed)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    for (int i = 0; i < 4; i++) {
        for (size_t e = 0; e < st_wrows[i] * st_wcols[i]; e++)
            L->w[i][e] = tc_rng_float(&r, -0.6f, 0.6f);
        for (size_t e = 0; e < st_blen[i]; e++)
            L->b[i][e] = tc_rng_float(&r, -0.5f, 0.5f);
    }
}

static const char *const st_wnames[4] = { "q.weight", "k.weight", "v.weight", "o.weight" };
static const char *const st_bnames[4] = { "q.bias", "k.bias", "v.bias", "o.bias" };
static const attn_layer_names st_separate = {
    .wq = "q.weight", .wk = "k.weight", .wv = "v.weight", .wo = "o.weight",
    .bq = "q.bias", .bk = "k.bias", .bv = "v.bias", .bo = "o.bias",
};

/* Separate tensors, weight i stored as wdt[i], biases as F32, BF16, F16, F32; pad spaces after the header (an odd
 * pad leaves the data unaligned). */
static unsigned char *st_separate_file(st_layer *L, const char *const wdt[4], size_t pad, size_t *len)
{
    static const char *const bdt[4] = { "F32", "BF16", "F16", "F32" };
    sb b;
    sb_init(&b);
    for (int i = 3; i >= 0; i--) /* file order need not be load order */
        sb_values(&b, st_wnames[i], wdt[i], 2, (size_t[]){ st_wrows[i], st_wcols[i] }, L->w[i], L->ws[i]);
    for (int i = 0; i < 4; i++)
        sb_values(&b, st_bnames[i], bdt[i], 1, (size_t[]){ st_blen[i] }, L->b[i], L->bs[i]);
    sb_tensor(&b, "step", "I64", 1, (size_t[]){ 2 }, (unsigned char[16]){ 0 }, 16);
    return sb_finish(&b, pad, len);
}

/* PyTorch's form: in_proj_weight (cat of wq, wk, wv) as wdt, out_proj.weight as odt, in_proj_bias F32. */
static unsigned char *st_in_proj_file(st_layer *L, const char *wdt, const char *odt, size_t *len)
{
    float w[(SQR + 2 * SKR) * SD], ws[(SQR + 2 * SKR) * SD], bias[SQR + 2 * SKR], bst[SQR + 2 * SKR];
    memcpy(w, L->w[0], SQR * SD * sizeof(float));
    memcpy(w + SQR * SD, L->w[1], SKR * SD * sizeof(float));
    memcpy(w + (SQR + SKR) * SD, L->w[2], SKR * SD * sizeof(float));
    memcpy(bias, L->b[0], SQR * sizeof(float));
    memcpy(bias + SQR, L->b[1], SKR * sizeof(float));
    memcpy(bias + SQR + SKR, L->b[2], SKR * sizeof(float));
    sb b;
    sb_init(&b);
    sb_values(&b, "attn.in_proj_weight", wdt, 2, (size_t[]){ SQR + 2 * SKR, SD }, w, ws);
    sb_values(&b, "attn.in_proj_bias", "F32", 1, (size_t[]){ SQR + 2 * SKR }, bias, bst);
    sb_values(&b, "attn.out_proj.weight", odt, 2, (size_t[]){ SD, SQR }, L->w[3], L->ws[3]);
    sb_values(&b, "attn.out_proj.bias", "BF16", 1, (size_t[]){ SD }, L->b[3], L->bs[3]);
    memcpy(L->ws[0], ws, SQR * SD * sizeof(float));
    memcpy(L->ws[1], ws + SQR * SD, SKR * SD * sizeof(float));
    memcpy(L->ws[2], ws + (SQR + SKR) * SD, SKR * SD * sizeof(float));
    memcpy(L->bs[0], bst, SQR * sizeof(float));
    memcpy(L->bs[1], bst + SQR, SKR * sizeof(float));
    memcpy(L->bs[2], bst + SQR + SKR, SKR * sizeof(float));
    return sb_finish(&b, 1, len);
}

static const attn_layer_names st_in_proj = {
    .in_proj_weight = "attn.in_proj_weight", .in_proj_bias = "attn.in_proj_bias",
    .wo = "attn.out_proj.weight", .bo = "attn.out_proj.bias",
};

/* The loaded layer holds the file's values: weights of type t bit for bit (t F32: the widened values), biases as
 * fp32; every array 64-byte aligned; shapes and heads; math left 0. */
static void expect_loaded(const attn_layer_weights *lw, const st_layer *L, attn_dtype t, int with_wo)
{
    const attn_layer *w = &lw->layer;
    cr_assert_eq(w->w_dtype, t, "w_dtype %d, want %d", (int)w->w_dtype, (int)t);
    cr_assert_eq(w->math, ATTN_MATH_F32);
    cr_assert(w->d_model == SD && w->n_heads == SH && w->n_kv_heads == SHK && w->head_dim == SHD);
    const void *wp[4] = { w->wq, w->wk, w->wv, w->wo };
    const float *bp[4] = { w->bq, w->bk, w->bv, w->bo };
    for (int i = 0; i < (with_wo ? 4 : 3); i++) {
        cr_assert_not_null(wp[i]);
        cr_assert_eq((uintptr_t)wp[i] % 64, 0, "weight %d not 64-byte aligned", i);
        for (size_t e = 0; e < st_wrows[i] * st_wcols[i]; e++) {
            if (t == ATTN_F32) {
                cr_assert_eq(tc_f2u(((const float *)wp[i])[e]), tc_f2u(L->ws[i][e]), "weight %d [%zu]", i, e);
            } else {
                uint16_t u;
                memcpy(&u, (const char *)wp[i] + 2 * e, 2);
                cr_assert_eq(u, bits16(t, L->w[i][e]), "weight %d [%zu]: %#x, want %#x", i, e, u,
                             bits16(t, L->w[i][e]));
            }
        }
        cr_assert_not_null(bp[i]);
        cr_assert_eq((uintptr_t)bp[i] % 64, 0, "bias %d not 64-byte aligned", i);
        for (size_t e = 0; e < st_blen[i]; e++)
            cr_assert_eq(tc_f2u(bp[i][e]), tc_f2u(L->bs[i][e]), "bias %d [%zu]", i, e);
    }
    if (!with_wo)
        cr_assert_null(w->wo);
}

/* A load that must fail: status want, a reason containing each of what[] (NULL-terminated), *out zeroed. */
static void expect_fail(const attn_st *f, const attn_layer_names *nm, attn_status want, const char *const *what)
{
    attn_layer_weights w, zero;
    memset(&w, 0x77, sizeof w);
    memset(&zero, 0, sizeof zero);
    char err[256] = "";
    const attn_status s = attn_layer_load_safetensors(&w, f, nm, SH, SHK, err, sizeof err);
    cr_assert_eq(s, want, "status %d, want %d; err: %s", (int)s, (int)want, err);
    cr_assert(!memcmp(&w, &zero, sizeof w), "*out not zeroed on failure");
    for (; *what; what++)
        cr_assert(strstr(err, *what), "reason \"%s\" lacks \"%s\"", err, *what);
}

/* keep_dtype keeps BF16 and F16 weights bit for bit (w_dtype set, biases fp32, data unaligned in the file), F32
 * weights stay F32; the kept layer computes the bits of the same layer built by hand; without keep_dtype the same
 * files load as before (fp32), and in ATTN_MATH_F32 give the kept layer's bits. */
Test(layer_typed, load_keep_dtype)
{
    static const char *const all_bf16[4] = { "BF16", "BF16", "BF16", "BF16" },
                             *const all_f16[4] = { "F16", "F16", "F16", "F16" },
                             *const all_f32[4] = { "F32", "F32", "F32", "F32" };
    const char *const *kinds[3] = { all_f32, all_f16, all_bf16 };
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    for (int ki = 0; ki < 3; ki++) {
        const attn_dtype t = w_types[ki];
        st_layer L;
        st_draw(&L, tc_mix(tc_seed(), 0x5afe + (uint64_t)ki));
        size_t len;
        unsigned char *bytes = st_separate_file(&L, kinds[ki], 3 + (size_t)ki, &len);
        attn_st *f = NULL;
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
        attn_layer_names nm = st_separate;
        nm.keep_dtype = 1;
        attn_layer_weights kept, plain;
        char err[256] = "";
        cr_assert_eq(attn_layer_load_safetensors(&kept, f, &nm, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
        expect_loaded(&kept, &L, t, 1);
        cr_assert_eq(attn_layer_load_safetensors(&plain, f, &st_separate, SH, SHK, err, sizeof err), ATTN_OK, "%s",
                     err);
        expect_loaded(&plain, &L, ATTN_F32, 1);
        /* Without wo (and biases), keep_dtype too. */
        attn_layer_weights bare;
        const attn_layer_names bare_nm = { .wq = "q.weight", .wk = "k.weight", .wv = "v.weight", .keep_dtype = 1 };
        cr_assert_eq(attn_layer_load_safetensors(&bare, f, &bare_nm, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
        cr_assert(bare.layer.w_dtype == t && !bare.layer.wo && !bare.layer.bq && !bare.layer.bo);
        attn_layer_weights_free(&bare);

        /* The kept layer against a hand-built one over the same bits, and the fp32 load in MATH_F32. */
        typed_w hw[4];
        for (int i = 0; i < 4; i++)
            typed_from(&hw[i], L.w[i], st_wrows[i] * st_wcols[i], t);
        attn_layer hand = kept.layer;
        hand.wq = hw[0].p, hand.wk = hw[1].p, hand.wv = hw[2].p, hand.wo = hw[3].p;
        const size_t n = 9, ny = n * SD, np = SH * n * n;
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed(), 0x5aff));
        float x[9 * SD], ya[9 * SD], yb[9 * SD], pa[SH * 81], pb[SH * 81];
        for (size_t e = 0; e < ny; e++)
            x[e] = tc_rng_float(&r, -1.0f, 1.0f);
        for (int mi = 0; mi < 2; mi++) {
            kept.layer.math = hand.math = maths[mi];
            cr_assert_eq(attn_self_attention(ctx, &kept.layer, x, n, ATTN_MASK_CAUSAL, ya, pa), ATTN_OK);
            cr_assert_eq(attn_self_attention(ctx, &hand, x, n, ATTN_MASK_CAUSAL, yb, pb), ATTN_OK);
            cr_assert(!memcmp(ya, yb, sizeof ya) && !memcmp(pa, pb, np * sizeof(float)),
                      "w %s math %s: the kept layer differs from the same layer built by hand", dt_name(t),
                      math_name(maths[mi]));
            if (mi == 0) {
                cr_assert_eq(attn_self_attention(ctx, &plain.layer, x, n, ATTN_MASK_CAUSAL, yb, pb), ATTN_OK);
                cr_assert(!memcmp(ya, yb, sizeof ya), "w %s: kept and fp32-loaded layers differ in MATH_F32",
                          dt_name(t));
            }
        }
        for (int i = 0; i < 4; i++)
            typed_free(&hw[i]);
        attn_layer_weights_free(&kept);
        attn_layer_weights_free(&plain);
        cr_assert(!kept.data && !kept.layer.wq && !kept.layer.w_dtype, "free does not zero");
        attn_st_close(f);
        free(bytes);
    }
    attn_ctx_destroy(ctx);
}

/* The in_proj_weight form keeps its dtype across the three slices, with out_proj of the same dtype. */
Test(layer_typed, load_keep_dtype_in_proj)
{
    static const char *const dts[3] = { "F32", "F16", "BF16" };
    for (int ki = 0; ki < 3; ki++) {
        st_layer L;
        st_draw(&L, tc_mix(tc_seed(), 0x1b0 + (uint64_t)ki));
        size_t len;
        unsigned char *bytes = st_in_proj_file(&L, dts[ki], dts[ki], &len);
        attn_st *f = NULL;
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
        attn_layer_names nm = st_in_proj;
        nm.keep_dtype = 1;
        attn_layer_weights w;
        char err[256] = "";
        cr_assert_eq(attn_layer_load_safetensors(&w, f, &nm, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
        expect_loaded(&w, &L, w_types[ki], 1);
        attn_layer_weights_free(&w);
        cr_assert_eq(attn_layer_load_safetensors(&w, f, &st_in_proj, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
        expect_loaded(&w, &L, ATTN_F32, 1);
        attn_layer_weights_free(&w);
        attn_st_close(f);
        free(bytes);
    }
}

/* With keep_dtype, weights of different dtypes are ATTN_EINVAL naming both tensors (*out zeroed, nothing
 * allocated); without it the same files load as fp32. Biases may differ from the weights and each other. A dtype
 * the loader does not read is still ATTN_ENOTSUP first. */
Test(layer_typed, load_keep_dtype_mixed)
{
    static const char *const mixes[][4] = {
        { "BF16", "BF16", "F16", "BF16" }, /* wv */
        { "F16", "BF16", "BF16", "BF16" }, /* wq */
        { "BF16", "BF16", "BF16", "F32" }, /* wo */
        { "F32", "F32", "F32", "BF16" },
    };
    static const char *const odd_name[4] = { "v.weight", "k.weight", "o.weight", "o.weight" };
    for (size_t c = 0; c < 4; c++) {
        st_layer L;
        st_draw(&L, tc_mix(tc_seed(), 0x313 + c));
        size_t len;
        unsigned char *bytes = st_separate_file(&L, mixes[c], 2, &len);
        attn_st *f = NULL;
        cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
        attn_layer_names nm = st_separate;
        nm.keep_dtype = 1;
        const char *const what[] = { "keep_dtype", "q.weight", odd_name[c], NULL };
        expect_fail(f, &nm, ATTN_EINVAL, what);
        attn_layer_weights w;
        char err[256] = "";
        cr_assert_eq(attn_layer_load_safetensors(&w, f, &st_separate, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
        expect_loaded(&w, &L, ATTN_F32, 1);
        attn_layer_weights_free(&w);
        if (c == 2) { /* only wo differs: without wo the layer is uniform */
            attn_layer_names nw = nm;
            nw.wo = nw.bo = NULL;
            cr_assert_eq(attn_layer_load_safetensors(&w, f, &nw, SH, SHK, err, sizeof err), ATTN_OK, "%s", err);
            cr_assert_eq(w.layer.w_dtype, ATTN_BF16);
            attn_layer_weights_free(&w);
        }
        /* An I64 tensor as a weight: ATTN_ENOTSUP comes first. */
        nm.wk = "step";
        const char *const i64[] = { "I64", NULL };
        expect_fail(f, &nm, ATTN_ENOTSUP, i64);
        attn_st_close(f);
        free(bytes);
    }
    /* in_proj_weight BF16 with out_proj F16. */
    st_layer L;
    st_draw(&L, 0x1b2);
    size_t len;
    unsigned char *bytes = st_in_proj_file(&L, "BF16", "F16", &len);
    attn_st *f = NULL;
    cr_assert_eq(attn_st_open_memory(&f, bytes, len, NULL, 0), ATTN_OK);
    attn_layer_names nm = st_in_proj;
    nm.keep_dtype = 1;
    const char *const what[] = { "keep_dtype", "attn.in_proj_weight", "attn.out_proj.weight", "BF16", "F16", NULL };
    expect_fail(f, &nm, ATTN_EINVAL, what);
    attn_st_close(f);
    free(bytes);
}

#else /* !ATTN_HAVE_JANSSON */

/* Built without jansson, a keep_dtype load is refused like any other: ATTN_ENOTSUP after the argument checks,
 * *out zeroed, the reason in err. */
Test(layer_typed, load_keep_dtype_without_jansson)
{
    static char storage;
    const attn_st *fake = (const attn_st *)&storage;
    attn_layer_names nm = { .wq = "wq", .wk = "wk", .wv = "wv", .keep_dtype = 1 };
    attn_layer_weights w, zero;
    memset(&zero, 0, sizeof zero);
    memset(&w, 0x77, sizeof w);
    char err[256];
    memset(err, 'x', sizeof err);
    cr_assert_eq(attn_layer_load_safetensors(&w, fake, &nm, 1, 0, err, sizeof err), ATTN_ENOTSUP);
    cr_assert_str_eq(err, "attn was built without jansson (configure --without-jansson)");
    cr_assert(!memcmp(&w, &zero, sizeof w), "*out not zeroed");
    memset(&w, 0x77, sizeof w);
    cr_assert_eq(attn_layer_load_safetensors(&w, NULL, &nm, 1, 0, err, sizeof err), ATTN_EINVAL);
    cr_assert(!memcmp(&w, &zero, sizeof w), "*out not zeroed");
    attn_layer_weights_free(&w);
}

#endif /* ATTN_HAVE_JANSSON */
