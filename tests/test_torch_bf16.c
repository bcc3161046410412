/* ATTN_MATH_BF16 against PyTorch 1.13's bf16 math on the same inputs: the cases of tests/torch_bf16_fixtures.h
 * (written by tests/fixtures/gen_torch_bf16.py: bf16 q, k, v; torch's bf16 softmax((q @ k.T) * scale + mask) @ v;
 * the float64 reference from the same bf16 inputs). DESIGN.md §3b: MATH_BF16 is within 1e-2 * max|V entries the
 * row sees| (+ the output's rounding) of float64 and never worse than torch on the same inputs.
 *
 * Error of a case: max over query rows (b, h, i) of max_c |out - ref| divided by the largest |V| entry among the
 * keys that row sees (per row, not per tensor: a causal row that sees 3 keys is measured against those 3).
 * On every ISA this CPU runs, with the default tiles and with 16 x 16 tiles (several key tiles per row, so the
 * running max moves between tiles and P is rounded against a stale max), q/k/v BF16 at an odd 2-byte offset:
 *   out F32:  error <= 1e-2 and error <= torch's error on that case;
 *   out BF16: per row max|out - ref| <= torch_err * rowV + 2^-8 * max|ref row| (and the same with 1e-2 for
 *             torch_err), and out bitwise the round-to-nearest-even of the same context's F32 out.
 * Outputs are NaN-poisoned before each call and guarded on both sides; inputs must come back unchanged. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "torch_bf16_fixtures.h"

#define TBF_TOL 1e-2             /* DESIGN.md §3b, relative to the row's max|V| */
#define TBF_OUT_ROUND 0x1p-8     /* bf16's unit roundoff: |bf16(x) - x| <= 2^-8 |x| */
#define TBF_GUARD 9              /* uint16 guard words on each side of a bf16 output */
#define TBF_GUARD_BITS 0x7f81u   /* a signalling-NaN bf16 pattern, compared bitwise */
#define TBF_POISON_BITS 0x7fc1u  /* a quiet-NaN bf16: an element the library forgot stays NaN and fails */

static float bf2f(uint16_t u)
{
    return tc_u2f((uint32_t)u << 16);
}

/* Round to nearest even, independently of the library (no NaN reaches here: the F32 out was checked first). */
static uint16_t f2bf(float f)
{
    uint32_t u = tc_f2u(f);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static size_t n_q(const torch_bf16_fixture *f)
{
    return f->batch * f->n_heads * f->q_len * f->head_dim;
}

static size_t n_kv(const torch_bf16_fixture *f)
{
    return f->batch * f->n_kv_heads * f->kv_len * f->head_dim;
}

/* Keys [0, hi) that query i sees: all, or (CAUSAL, bottom-right) j <= i + kv_len - q_len. */
static size_t visible_end(const torch_bf16_fixture *f, size_t i)
{
    if (f->mask != ATTN_MASK_CAUSAL)
        return f->kv_len;
    long long hi = (long long)i + (long long)f->kv_len - (long long)f->q_len + 1;
    return hi < 0 ? 0 : (size_t)hi;
}

/* The row's normaliser: max |V| over the keys query row (b, h, i) sees. */
static double row_vmax(const torch_bf16_fixture *f, size_t b, size_t h, size_t i)
{
    const size_t g = h / (f->n_heads / f->n_kv_heads), d = f->head_dim;
    const uint16_t *v = f->v + ((b * f->n_kv_heads + g) * f->kv_len) * d;
    double m = 0.0;
    for (size_t j = 0; j < visible_end(f, i); j++)
        for (size_t c = 0; c < d; c++)
            m = fmax(m, fabs((double)bf2f(v[j * d + c])));
    return m;
}

/* A copy of src (n bf16 words) one word past an allocation's start, so the pointer is only 2-byte aligned. */
static uint16_t *copy_odd(const uint16_t *src, size_t n, uint16_t **alloc)
{
    *alloc = malloc((n + 1) * sizeof(uint16_t));
    cr_assert(*alloc != NULL, "out of memory");
    memcpy(*alloc + 1, src, n * sizeof(uint16_t));
    return *alloc + 1;
}

static attn_sdpa_desc fixture_desc(const torch_bf16_fixture *f, attn_dtype out_dtype)
{
    attn_sdpa_desc d = tc_shape(f->batch, f->n_heads, f->n_kv_heads, f->q_len, f->kv_len, f->head_dim, 0);
    d.scale = f->scale;
    d.mask = f->mask;
    d.q_dtype = ATTN_BF16;
    d.kv_dtype = ATTN_BF16;
    d.out_dtype = out_dtype;
    d.math = ATTN_MATH_BF16;
    return d;
}

/* What one run measured, for the [stat] lines. */
typedef struct tbf_result {
    double err;  /* attn: max over rows of max|out - ref| / rowV */
    double torch; /* torch's, recomputed here from its bits (equals f->torch_err) */
} tbf_result;

/* torch's error on f, recomputed from its bits with this file's row rule. */
static double torch_err(const torch_bf16_fixture *f)
{
    const size_t d = f->head_dim;
    double worst = 0.0;
    for (size_t b = 0; b < f->batch; b++)
        for (size_t h = 0; h < f->n_heads; h++)
            for (size_t i = 0; i < f->q_len; i++) {
                const size_t o = ((b * f->n_heads + h) * f->q_len + i) * d;
                const double vm = row_vmax(f, b, h, i);
                for (size_t c = 0; c < d; c++)
                    worst = fmax(worst, fabs((double)bf2f(f->torch[o + c]) - f->ref[o + c]) / vm);
            }
    return worst;
}

/* Runs fixture f on ctx with out F32 and, when bf16_out, again with out BF16; checks as described at the top. */
static void run_fixture(const attn_ctx *ctx, const torch_bf16_fixture *f, const char *tiles, tbf_result *r32,
                        tbf_result *r16)
{
    const char *isa = attn_isa_name(attn_ctx_isa(ctx));
    const size_t nq = n_q(f), nkv = n_kv(f), d = f->head_dim;
    uint16_t *qa, *ka, *va;
    const uint16_t *q = copy_odd(f->q, nq, &qa), *k = copy_odd(f->k, nkv, &ka), *v = copy_odd(f->v, nkv, &va);
    const double terr = torch_err(f);

    /* out F32 */
    attn_sdpa_desc desc = fixture_desc(f, ATTN_F32);
    tc_buf out;
    cr_assert_eq(tc_buf_alloc(&out, nq), 0, "out of memory");
    tc_buf_fill_bits(&out, TC_POISON_BITS);
    attn_status s = attn_sdpa(ctx, &desc, q, k, v, out.p, NULL);
    cr_assert_eq(s, ATTN_OK, "%s %s (%s tiles): attn_sdpa(out F32) gave %d (%s)", f->name, isa, tiles, (int)s,
                 attn_strerror(s));
    cr_assert(tc_buf_guards_ok(&out), "%s %s (%s tiles): write outside out", f->name, isa, tiles);
    double err = 0.0;
    for (size_t b = 0; b < f->batch; b++)
        for (size_t h = 0; h < f->n_heads; h++)
            for (size_t i = 0; i < f->q_len; i++) {
                const size_t o = ((b * f->n_heads + h) * f->q_len + i) * d;
                const double vm = row_vmax(f, b, h, i);
                for (size_t c = 0; c < d; c++) {
                    const double e = fabs((double)out.p[o + c] - f->ref[o + c]) / vm;
                    cr_assert(e <= TBF_TOL && e <= terr,
                              "%s %s (%s tiles) out F32: (b=%zu h=%zu i=%zu c=%zu) got %a, float64 %a: error %.3e "
                              "of the row's max|V| %.4g; allowed min(1e-2, torch's %.3e)",
                              f->name, isa, tiles, b, h, i, c, (double)out.p[o + c], f->ref[o + c], e, vm, terr);
                    err = fmax(err, e);
                }
            }
    r32->err = err;
    r32->torch = terr;

    /* out BF16: the same fp32 result rounded once */
    desc.out_dtype = ATTN_BF16;
    uint16_t *base = malloc((nq + 2 * TBF_GUARD) * sizeof(uint16_t)), *o16 = base + TBF_GUARD;
    cr_assert(base != NULL, "out of memory");
    for (size_t x = 0; x < nq + 2 * TBF_GUARD; x++)
        base[x] = (uint16_t)(x < TBF_GUARD || x >= TBF_GUARD + nq ? TBF_GUARD_BITS : TBF_POISON_BITS);
    s = attn_sdpa(ctx, &desc, q, k, v, o16, NULL);
    cr_assert_eq(s, ATTN_OK, "%s %s (%s tiles): attn_sdpa(out BF16) gave %d (%s)", f->name, isa, tiles, (int)s,
                 attn_strerror(s));
    for (size_t x = 0; x < TBF_GUARD; x++)
        cr_assert(base[x] == TBF_GUARD_BITS && o16[nq + x] == TBF_GUARD_BITS,
                  "%s %s (%s tiles): write outside the BF16 out", f->name, isa, tiles);
    err = 0.0;
    for (size_t b = 0; b < f->batch; b++)
        for (size_t h = 0; h < f->n_heads; h++)
            for (size_t i = 0; i < f->q_len; i++) {
                const size_t o = ((b * f->n_heads + h) * f->q_len + i) * d;
                const double vm = row_vmax(f, b, h, i);
                double rmax = 0.0, emax = 0.0;
                for (size_t c = 0; c < d; c++) {
                    const float got = bf2f(o16[o + c]);
                    cr_assert(o16[o + c] == f2bf(out.p[o + c]),
                              "%s %s (%s tiles) out BF16: (b=%zu h=%zu i=%zu c=%zu) is 0x%04x, but the F32 out %a "
                              "rounds to 0x%04x",
                              f->name, isa, tiles, b, h, i, c, o16[o + c], (double)out.p[o + c],
                              f2bf(out.p[o + c]));
                    rmax = fmax(rmax, fabs(f->ref[o + c]));
                    const double e = fabs((double)got - f->ref[o + c]);
                    emax = isnan(e) ? INFINITY : fmax(emax, e);
                }
                const double room = fmin(TBF_TOL, terr) * vm + TBF_OUT_ROUND * rmax;
                cr_assert(emax <= room,
                          "%s %s (%s tiles) out BF16: row (b=%zu h=%zu i=%zu) off by %.3e; allowed "
                          "min(1e-2, torch's %.3e) * max|V| %.4g + 2^-8 * max|ref| %.4g = %.3e",
                          f->name, isa, tiles, b, h, i, emax, terr, vm, rmax, room);
                err = fmax(err, emax / vm);
            }
    r16->err = err;
    r16->torch = terr;

    cr_assert(!memcmp(q, f->q, nq * 2) && !memcmp(k, f->k, nkv * 2) && !memcmp(v, f->v, nkv * 2),
              "%s %s (%s tiles): attn_sdpa wrote to its inputs", f->name, isa, tiles);
    free(base);
    tc_buf_free(&out);
    free(qa);
    free(ka);
    free(va);
}

static void print_stats(const char *what, attn_isa isa, const tbf_result *r)
{
    char line[2048];
    size_t n = (size_t)snprintf(line, sizeof line, "[stat] %-26s %-10s attn/torch err:", what, attn_isa_name(isa));
    double ratio = 0.0;
    for (size_t fi = 0; fi < TORCH_BF16_N_FIXTURES && n < sizeof line; fi++) {
        n += (size_t)snprintf(line + n, sizeof line - n, " %s %.2e/%.2e", torch_bf16_fixtures[fi].name, r[fi].err,
                              r[fi].torch);
        ratio = fmax(ratio, r[fi].err / r[fi].torch);
    }
    if (n < sizeof line)
        snprintf(line + n, sizeof line - n, "; worst attn/torch %.2f", ratio);
    fprintf(stderr, "%s\n", line);
}

static void run_all(int block, const char *tiles)
{
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        attn_status s = tc_ctx_create(&ctx, isas[ii], 0, block, block);
        cr_assert_eq(s, ATTN_OK, "context for %s: %d (%s)", attn_isa_name(isas[ii]), (int)s, attn_strerror(s));
        tbf_result r32[TORCH_BF16_N_FIXTURES], r16[TORCH_BF16_N_FIXTURES];
        for (size_t fi = 0; fi < TORCH_BF16_N_FIXTURES; fi++)
            run_fixture(ctx, &torch_bf16_fixtures[fi], tiles, &r32[fi], &r16[fi]);
        char what[64];
        snprintf(what, sizeof what, "torch_bf16::%s_f32", tiles);
        print_stats(what, isas[ii], r32);
        snprintf(what, sizeof what, "torch_bf16::%s_bf16", tiles);
        print_stats(what, isas[ii], r16);
        attn_ctx_destroy(ctx);
    }
}

/* The fixture means what this file assumes: the header's reference equals attn.h's formula computed here in
 * float64 from the bf16 bits (GQA head h reads KV head h / group, bottom-right causal, the scale attn gets), and
 * its torch_err is what this file's row rule gives on torch's bits. */
Test(torch_bf16, fixture_is_attn_formula)
{
    for (size_t fi = 0; fi < TORCH_BF16_N_FIXTURES; fi++) {
        const torch_bf16_fixture *f = &torch_bf16_fixtures[fi];
        const size_t d = f->head_dim, group = f->n_heads / f->n_kv_heads;
        cr_assert(f->n_kv_heads * group == f->n_heads, "%s: n_kv_heads must divide n_heads", f->name);
        const double scale = f->scale != 0.0f ? (double)f->scale : 1.0 / sqrt((double)d);
        double *w = malloc(f->kv_len * sizeof *w);
        cr_assert(w != NULL);
        double worst = 0.0;
        for (size_t b = 0; b < f->batch; b++)
            for (size_t h = 0; h < f->n_heads; h++) {
                const size_t g = h / group;
                const uint16_t *kh = f->k + (b * f->n_kv_heads + g) * f->kv_len * d;
                const uint16_t *vh = f->v + (b * f->n_kv_heads + g) * f->kv_len * d;
                for (size_t i = 0; i < f->q_len; i++) {
                    const size_t o = ((b * f->n_heads + h) * f->q_len + i) * d, hi = visible_end(f, i);
                    cr_assert(hi >= 1, "%s: row %zu sees no key (torch would give NaN)", f->name, i);
                    double m = -INFINITY, l = 0.0;
                    for (size_t j = 0; j < hi; j++) {
                        double sc = 0.0;
                        for (size_t x = 0; x < d; x++)
                            sc += (double)bf2f(f->q[o + x]) * (double)bf2f(kh[j * d + x]);
                        w[j] = sc * scale;
                        m = fmax(m, w[j]);
                    }
                    for (size_t j = 0; j < hi; j++)
                        l += (w[j] = exp(w[j] - m));
                    const double vm = row_vmax(f, b, h, i);
                    for (size_t c = 0; c < d; c++) {
                        double acc = 0.0;
                        for (size_t j = 0; j < hi; j++)
                            acc += w[j] * (double)bf2f(vh[j * d + c]);
                        worst = fmax(worst, fabs(acc / l - f->ref[o + c]) / vm);
                    }
                }
            }
        free(w);
        cr_assert(worst <= 1e-12, "%s: the header's float64 reference is %.3e (of max|V|) from attn.h's formula",
                  f->name, worst);
        const double te = torch_err(f);
        cr_assert(fabs(te - f->torch_err) <= 1e-9 * f->torch_err, "%s: torch's error is %.6e here, %.6e in the header",
                  f->name, te, f->torch_err);
        cr_assert(te > 0.0, "%s: torch's bf16 result cannot be exact", f->name);
    }
}

Test(torch_bf16, every_isa_default_tiles)
{
    run_all(0, "default");
}

/* 16 x 16 tiles: a row's keys span up to 9 tiles, so the softmax rescales as the running max grows. */
Test(torch_bf16, every_isa_16x16_tiles)
{
    run_all(16, "16x16");
}
