/* Explicit positions, the per-row log-sum-exp, attn_merge, attention sinks and the score modifiers (softcap, ALiBi,
 * bias) of attn.h, on every ISA this CPU runs: outputs, lse and probs against a float64 reference that places
 * queries and keys at their positions, and the ring identity: keys split into blocks at random cuts, each block a
 * call with positions and lse, merged in order, equal the whole call within the accuracy contract of the math mode
 * (with every modifier too). */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "half.h"

/* ---- the reference ------------------------------------------------------------------------------------------- */

/* BHSD, fp32 inputs (already rounded to bfloat16 by the caller for ATTN_MATH_BF16). out [b][h][i][dv], lse
 * [b][h][i] and (when not NULL) probs [b][h][i][kv_len] in double; positions and sinks as the desc says. */
static void reference(const attn_sdpa_desc *d, const float *q, const float *k, const float *v, double *out,
                      double *lse, double *probs)
{
    const size_t hk = d->n_kv_heads ? d->n_kv_heads : d->n_heads, dv = d->v_dim ? d->v_dim : d->head_dim;
    const double scale = d->scale != 0.0f ? d->scale : 1.0 / sqrt((double)d->head_dim);
    double *s = malloc(d->kv_len * sizeof *s);
    for (size_t b = 0; b < d->batch; b++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++) {
                const size_t g = h / (d->n_heads / hk), row = (b * d->n_heads + h) * d->q_len + i;
                const long long qp = d->positions ? (long long)(d->q_pos0 + i)
                                                  : (long long)i + (long long)d->kv_len - (long long)d->q_len;
                double m = -INFINITY;
                for (size_t j = 0; j < d->kv_len; j++) {
                    const long long kp = d->positions ? (long long)(d->kv_pos0 + j) : (long long)j;
                    int sees = !d->kv_valid || (long long)j < d->kv_valid[b];
                    if (d->mask == ATTN_MASK_CAUSAL)
                        sees = sees && kp <= qp && (!d->window || kp > qp - (long long)d->window);
                    s[j] = -INFINITY;
                    if (!sees)
                        continue;
                    double dot = 0;
                    for (size_t c = 0; c < d->head_dim; c++)
                        dot += (double)q[row * d->head_dim + c] * k[((b * hk + g) * d->kv_len + j) * d->head_dim + c];
                    double x = dot * scale;
                    if (d->softcap != 0.0f)
                        x = d->softcap * tanh(x / d->softcap);
                    if (d->alibi_slopes)
                        x += (double)d->alibi_slopes[h] * (double)(kp - qp);
                    if (d->bias)
                        x += d->bias[b * d->bias_stride[0] + h * d->bias_stride[1] + i * d->bias_stride[2] + j];
                    s[j] = x; /* -inf: a bias masks the pair */
                    m = s[j] > m ? s[j] : m;
                }
                double l = 0;
                for (size_t c = 0; c < dv; c++)
                    out[row * dv + c] = 0;
                for (size_t j = 0; probs && j < d->kv_len; j++)
                    probs[row * d->kv_len + j] = 0;
                if (m == -INFINITY) {
                    lse[row] = -INFINITY;
                    continue;
                }
                for (size_t j = 0; j < d->kv_len; j++)
                    if (s[j] != -INFINITY) {
                        const double p = exp(s[j] - m);
                        l += p;
                        for (size_t c = 0; c < dv; c++)
                            out[row * dv + c] += p * v[((b * hk + g) * d->kv_len + j) * dv + c];
                    }
                lse[row] = m + log(l);
                if (d->sinks)
                    l += exp((double)d->sinks[h] - m);
                for (size_t c = 0; c < dv; c++)
                    out[row * dv + c] /= l;
                for (size_t j = 0; probs && j < d->kv_len; j++)
                    probs[row * d->kv_len + j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - m) / l;
            }
    free(s);
}

static float *rand_floats(tc_rng *r, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = tc_rng_float(r, -1.0f, 1.0f);
    return p;
}

static void round_bf16(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = attn_bf16_to_f32(attn_f32_to_bf16(p[i]));
}

static float *poisoned(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = tc_u2f(TC_POISON_BITS);
    return p;
}

/* The contract's tolerances: out (against max(1, |ref|), or in ATTN_MATH_BF16 the largest |V|, 1 here) and lse. */
static double out_tol(attn_math m, double ref) { return m == ATTN_MATH_BF16 ? 1e-2 : TC_TOL * fmax(1.0, fabs(ref)); }
static double lse_tol(attn_math m, double ref) { return (m == ATTN_MATH_BF16 ? 1e-2 : 0.0) + TC_TOL * fmax(1.0, fabs(ref)); }

/* One call's out, lse and probs (NULL: not asked for) against the reference from the inputs it read (q, k, v, rounded
 * here to bfloat16 for ATTN_MATH_BF16): rows that see no key must give zeros and -inf. Returns the largest output
 * error; adds the rows that see no key to *empty. */
static double check_call(attn_isa isa, int t, const attn_sdpa_desc *d, float *q, float *k, float *v, const float *out,
                         const float *lse, const float *probs, int *empty)
{
    const size_t hk = d->n_kv_heads ? d->n_kv_heads : d->n_heads, dv = d->v_dim ? d->v_dim : d->head_dim;
    const size_t nq = d->batch * d->n_heads * d->q_len, nk = d->batch * hk * d->kv_len;
    if (d->math == ATTN_MATH_BF16) {
        round_bf16(q, nq * d->head_dim);
        round_bf16(k, nk * d->head_dim);
        round_bf16(v, nk * dv);
    }
    double *ro = malloc(nq * dv * sizeof *ro), *rl = malloc(nq * sizeof *rl);
    double *rp = probs ? malloc(nq * d->kv_len * sizeof *rp) : NULL, worst = 0;
    reference(d, q, k, v, ro, rl, rp);
    for (size_t i = 0; i < nq; i++) {
        *empty += rl[i] == -INFINITY;
        cr_assert(rl[i] == -INFINITY ? lse[i] == -INFINITY
                                     : fabs(lse[i] - rl[i]) <= lse_tol(d->math, rl[i]) + 0x1p-22 * fabs(rl[i]),
                  "%s case %d: lse[%zu] = %.9g, want %.9g", attn_isa_name(isa), t, i, lse[i], rl[i]);
        for (size_t c = 0; c < dv; c++) {
            const double o = out[i * dv + c], want = ro[i * dv + c];
            cr_assert(fabs(o - want) <= out_tol(d->math, want) && (rl[i] != -INFINITY || o == 0.0),
                      "%s case %d (positions %d %zu %zu, window %zu, softcap %g, alibi %d, bias %d, sinks %d): "
                      "out[%zu][%zu] = %.9g, want %.9g", attn_isa_name(isa), t, d->positions, d->q_pos0, d->kv_pos0,
                      d->window, d->softcap, d->alibi_slopes != NULL, d->bias != NULL, d->sinks != NULL, i, c, o,
                      want);
            worst = fmax(worst, fabs(o - want));
        }
        for (size_t j = 0; probs && j < d->kv_len; j++)
            cr_assert(fabs(probs[i * d->kv_len + j] - rp[i * d->kv_len + j]) <=
                          (d->math == ATTN_MATH_BF16 ? 1e-4 : 0) + 4 * TC_TOL * fmax(1e-3, rp[i * d->kv_len + j]),
                      "%s case %d: probs[%zu][%zu] = %.9g, want %.9g", attn_isa_name(isa), t, i, j,
                      probs[i * d->kv_len + j], rp[i * d->kv_len + j]);
    }
    free(ro), free(rl), free(rp);
    return worst;
}

/* ---- positions and lse against float64 ----------------------------------------------------------------------- */

Test(merge, positions_and_lse)
{
    const uint64_t seed = tc_seed();
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 2, 0, 37), ATTN_OK);
        tc_rng r;
        tc_rng_init(&r, tc_mix(seed, (uint64_t)isas[ii]));
        double worst_out = 0;
        int empty_rows = 0;
        for (int t = 0; t < 24; t++) {
            attn_sdpa_desc d = tc_shape(1 + tc_rng_below(&r, 2), 2, 1 + tc_rng_below(&r, 2), 1 + tc_rng_below(&r, 40),
                                        1 + tc_rng_below(&r, 300), 1 + tc_rng_below(&r, 70), 0);
            d.n_kv_heads = d.n_kv_heads == 2 ? 2 : 1;
            d.mask = tc_rng_below(&r, 4) ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.window = d.mask == ATTN_MASK_CAUSAL && tc_rng_below(&r, 2) ? 1 + tc_rng_below(&r, 100) : 0;
            d.math = t % 2 ? ATTN_MATH_BF16 : ATTN_MATH_F32;
            d.positions = t % 3 != 0;
            /* Keys before, around or after the queries; positions far past 2^32. */
            d.q_pos0 = ((size_t)tc_rng_below(&r, 4) << 33) + tc_rng_below(&r, 400);
            d.kv_pos0 = d.q_pos0 + tc_rng_below(&r, 500) - 250 * (d.q_pos0 >= 250);
            int32_t valid[2] = {(int32_t)tc_rng_below(&r, (uint32_t)d.kv_len + 1), (int32_t)d.kv_len};
            d.kv_valid = t % 4 == 1 ? valid : NULL;
            const size_t hk = d.n_kv_heads, nq = d.batch * d.n_heads * d.q_len;
            float *q = rand_floats(&r, nq * d.head_dim), *k = rand_floats(&r, d.batch * hk * d.kv_len * d.head_dim);
            float *v = rand_floats(&r, d.batch * hk * d.kv_len * d.head_dim);
            float *out = poisoned(nq * d.head_dim), *lse = poisoned(nq);
            d.lse = lse;
            cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, out, NULL), ATTN_OK, "%s case %d", attn_isa_name(isas[ii]), t);
            worst_out = fmax(worst_out, check_call(isas[ii], t, &d, q, k, v, out, lse, NULL, &empty_rows));
            free(q), free(k), free(v), free(out), free(lse);
        }
        cr_log_info("[stat] merge::positions_and_lse %-10s 24 cases, max err out %.2e, %d rows seeing no key (seed %llu)",
                    attn_isa_name(isas[ii]), worst_out, empty_rows, (unsigned long long)seed);
        attn_ctx_destroy(ctx);
    }
}

/* ---- the ring identity ----------------------------------------------------------------------------------------- */

Test(merge, ring_identity)
{
    const uint64_t seed = tc_seed();
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 2, 0, 0), ATTN_OK);
        tc_rng r;
        tc_rng_init(&r, tc_mix(seed, 100 + (uint64_t)isas[ii]));
        double worst[2] = {0, 0};
        for (int t = 0; t < 16; t++) {
            attn_sdpa_desc d = tc_shape(2, 4, 2, 1 + tc_rng_below(&r, 33), 2 + tc_rng_below(&r, 700),
                                        16 * (1 + tc_rng_below(&r, 8)) + (t % 3 == 0), 0);
            d.v_dim = t % 4 == 0 ? 24 : 0;
            d.mask = t % 4 == 3 ? ATTN_MASK_NONE : ATTN_MASK_CAUSAL;
            d.window = t % 4 == 1 ? 1 + tc_rng_below(&r, 200) : 0;
            d.math = t % 2 ? ATTN_MATH_BF16 : ATTN_MATH_F32;
            int32_t valid[2] = {(int32_t)d.kv_len, (int32_t)tc_rng_below(&r, (uint32_t)d.kv_len + 1)};
            d.kv_valid = t % 5 == 2 ? valid : NULL;
            const size_t hk = d.n_kv_heads, dv = d.v_dim ? d.v_dim : d.head_dim, nq = d.batch * d.n_heads * d.q_len;
            float *q = rand_floats(&r, nq * d.head_dim), *k = rand_floats(&r, d.batch * hk * d.kv_len * d.head_dim);
            float *v = rand_floats(&r, d.batch * hk * d.kv_len * dv);
            float *whole = poisoned(nq * dv), *wlse = poisoned(nq), *acc = poisoned(nq * dv), *alse = poisoned(nq);
            /* Modifiers split with the keys: ALiBi follows the positions, the bias is sliced at each block's key 0. */
            const float slopes[4] = {1.0f / 32, 1.0f / 128, -1.0f / 64, 1.0f / 256};
            d.softcap = t % 3 == 0 ? 5.0f : 0.0f;
            d.alibi_slopes = t % 3 == 1 ? slopes : NULL;
            float *bias = t % 4 == 2 ? rand_floats(&r, nq * d.kv_len) : NULL;
            if (bias) {
                bias[tc_rng_below(&r, (uint32_t)(nq * d.kv_len))] = -INFINITY;
                d.bias = bias;
                d.bias_stride[2] = d.kv_len;
                d.bias_stride[1] = d.q_len * d.kv_len;
                d.bias_stride[0] = d.n_heads * d.q_len * d.kv_len;
            }
            d.lse = wlse;
            cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, whole, NULL), ATTN_OK);
            /* Cuts at random keys (1 to 4 blocks), each block a call at its own key positions. */
            size_t cuts[5] = {0}, nb = 1 + tc_rng_below(&r, 4);
            for (size_t c = 1; c < nb; c++)
                cuts[c] = tc_rng_below(&r, (uint32_t)d.kv_len);
            cuts[nb] = d.kv_len;
            for (size_t c = 1; c < nb; c++) /* sorted (insertion) */
                for (size_t e = c; e > 1 && cuts[e] < cuts[e - 1]; e--) {
                    const size_t x = cuts[e];
                    cuts[e] = cuts[e - 1];
                    cuts[e - 1] = x;
                }
            int first = 1;
            for (size_t c = 0; c < nb; c++) {
                const size_t k0 = cuts[c], n = cuts[c + 1] - cuts[c];
                if (!n)
                    continue;
                attn_sdpa_desc bd = d;
                bd.kv_len = n;
                bd.positions = 1;
                bd.q_pos0 = d.kv_len; /* the whole call's bottom-right alignment, all positions moved by q_len */
                bd.kv_pos0 = k0 + d.q_len;
                int32_t bvalid[2];
                for (size_t b = 0; b < 2; b++) {
                    const long long x = (long long)valid[b] - (long long)k0;
                    bvalid[b] = (int32_t)(x < 0 ? 0 : x > (long long)n ? (long long)n : x);
                }
                bd.kv_valid = d.kv_valid ? bvalid : NULL;
                bd.bias = bias ? bias + k0 : NULL;
                float *bk = malloc(d.batch * hk * n * d.head_dim * sizeof *bk), *bv = malloc(d.batch * hk * n * dv * sizeof *bv);
                for (size_t g = 0; g < d.batch * hk; g++) {
                    memcpy(bk + g * n * d.head_dim, k + (g * d.kv_len + k0) * d.head_dim, n * d.head_dim * sizeof *bk);
                    memcpy(bv + g * n * dv, v + (g * d.kv_len + k0) * dv, n * dv * sizeof *bv);
                }
                float *bo = poisoned(nq * dv), *bl = poisoned(nq);
                bd.lse = bl;
                cr_assert_eq(attn_sdpa(ctx, &bd, q, bk, bv, bo, NULL), ATTN_OK);
                if (first)
                    memcpy(acc, bo, nq * dv * sizeof *acc), memcpy(alse, bl, nq * sizeof *alse);
                else
                    cr_assert_eq(attn_merge(nq, dv, acc, alse, bo, bl, acc, alse), ATTN_OK); /* in place */
                first = 0;
                free(bk), free(bv), free(bo), free(bl);
            }
            for (size_t i = 0; i < nq; i++) {
                cr_assert((wlse[i] == -INFINITY) == (alse[i] == -INFINITY) &&
                              (wlse[i] == -INFINITY || fabs(alse[i] - wlse[i]) <= lse_tol(d.math, wlse[i])),
                          "%s case %d (%zu blocks): lse[%zu] merged %.9g, whole %.9g", attn_isa_name(isas[ii]), t, nb,
                          i, alse[i], wlse[i]);
                for (size_t c = 0; c < dv; c++) {
                    const double e = fabs(acc[i * dv + c] - whole[i * dv + c]);
                    cr_assert(e <= out_tol(d.math, whole[i * dv + c]),
                              "%s case %d (%zu blocks, window %zu, math %d): out[%zu][%zu] merged %.9g, whole %.9g",
                              attn_isa_name(isas[ii]), t, nb, d.window, (int)d.math, i, c, acc[i * dv + c],
                              whole[i * dv + c]);
                    worst[d.math] = fmax(worst[d.math], e);
                }
            }
            free(q), free(k), free(v), free(whole), free(wlse), free(acc), free(alse), free(bias);
        }
        cr_log_info("[stat] merge::ring_identity    %-10s 16 cases, merged vs whole max err math f32 %.2e, bf16 %.2e "
                    "(seed %llu)", attn_isa_name(isas[ii]), worst[0], worst[1], (unsigned long long)seed);
        attn_ctx_destroy(ctx);
    }
}

/* ---- attn_merge on its own ------------------------------------------------------------------------------------- */

Test(merge, merge_edges)
{
    const float nan = tc_u2f(TC_POISON_BITS);
    cr_assert_eq(attn_merge(0, 0, NULL, NULL, NULL, NULL, NULL, NULL), ATTN_OK);
    float a[3 * 20], b[3 * 20], o[3 * 20], la[3] = {0.5f, -INFINITY, 2.0f}, lb[3] = {-INFINITY, -INFINITY, 1.0f},
                                              lo[3];
    for (int i = 0; i < 60; i++) {
        a[i] = (float)(i % 7) - 3.0f;
        b[i] = (float)(i % 5) * 0.25f;
    }
    cr_assert_eq(attn_merge(3, 0, a, la, b, lb, o, lo), ATTN_EINVAL);
    cr_assert_eq(attn_merge(3, 20, NULL, la, b, lb, o, lo), ATTN_EINVAL);
    cr_assert_eq(attn_merge(3, 20, a, la, b, lb, o, NULL), ATTN_EINVAL);
    /* Row 0: b is -inf and holds NaN: a comes back bitwise. Row 1: both -inf: zeros. Row 2: the formula. */
    for (int c = 0; c < 20; c++)
        b[c] = nan;
    cr_assert_eq(attn_merge(3, 20, a, la, b, lb, o, lo), ATTN_OK);
    cr_assert(!memcmp(o, a, 20 * sizeof *o) && lo[0] == 0.5f);
    for (int c = 20; c < 40; c++)
        cr_assert(o[c] == 0.0f && !signbit(o[c]));
    cr_assert(lo[1] == -INFINITY);
    const double ea = exp(2.0), eb = exp(1.0);
    for (int c = 40; c < 60; c++)
        cr_assert(fabs(o[c] - (ea * a[c] + eb * b[c]) / (ea + eb)) <= 1e-6 * (1 + fabs(o[c])), "o[%d] = %g", c, o[c]);
    cr_assert(fabs(lo[2] - log(ea + eb)) <= 1e-6);
    /* In place on either side gives the same bits; a NaN lse stays in its row. */
    float a2[60], l2[3] = {0.5f, -INFINITY, 2.0f};
    memcpy(a2, a, sizeof a2);
    cr_assert_eq(attn_merge(3, 20, a2, l2, b, lb, a2, l2), ATTN_OK);
    cr_assert(!memcmp(a2, o, sizeof a2) && !memcmp(l2, lo, sizeof l2));
    float b2[60], lb2[3] = {-INFINITY, -INFINITY, 1.0f};
    memcpy(b2, b, sizeof b2);
    cr_assert_eq(attn_merge(3, 20, a, la, b2, lb2, b2, lb2), ATTN_OK);
    cr_assert(!memcmp(b2, o, sizeof b2) && !memcmp(lb2, lo, sizeof lb2));
    float ln[3] = {0.5f, -INFINITY, NAN}, on[60], lon[3];
    cr_assert_eq(attn_merge(3, 20, a, ln, b, lb, on, lon), ATTN_OK);
    cr_assert(!memcmp(on, o, 40 * sizeof *on) && !memcmp(lon, lo, 2 * sizeof *lon) && isnan(lon[2]));
    for (int c = 40; c < 60; c++)
        cr_assert(isnan(on[c]));
}

Test(merge, positions_validation)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float q[8] = {0}, k[16] = {0}, v[16] = {0}, out[8], lse[2];
    attn_sdpa_desc d = tc_shape(1, 1, 0, 2, 4, 4, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.lse = lse;
    const size_t big = (size_t)1 << 62;
    const struct { int positions; size_t q_pos0, kv_pos0; attn_status want; } cases[] = {
        {2, 0, 0, ATTN_EINVAL},       {-1, 0, 0, ATTN_EINVAL},       {1, big - 1, 0, ATTN_ERANGE},
        {1, 0, big - 3, ATTN_ERANGE}, {1, big - 2, big - 4, ATTN_OK}, {0, SIZE_MAX, SIZE_MAX, ATTN_OK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        d.positions = cases[i].positions;
        d.q_pos0 = cases[i].q_pos0;
        d.kv_pos0 = cases[i].kv_pos0;
        for (int c = 0; c < 8; c++)
            out[c] = tc_u2f(TC_POISON_BITS);
        lse[0] = lse[1] = tc_u2f(TC_POISON_BITS);
        const attn_status s = attn_sdpa(ctx, &d, q, k, v, out, NULL);
        cr_assert_eq(s, cases[i].want, "case %zu: %d", i, (int)s);
        if (s != ATTN_OK)
            cr_assert(tc_f2u(out[0]) == TC_POISON_BITS && tc_f2u(lse[0]) == TC_POISON_BITS, "case %zu wrote", i);
        else
            cr_assert(lse[0] == logf(3.0f) && lse[1] == logf(4.0f), "case %zu: lse %g %g", i, lse[0], lse[1]);
    }
    attn_ctx_destroy(ctx);
}

/* ---- attention sinks ------------------------------------------------------------------------------------------- */

Test(merge, sinks)
{
    const uint64_t seed = tc_seed();
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 2, 0, 0), ATTN_OK);
        tc_rng r;
        tc_rng_init(&r, tc_mix(seed, 200 + (uint64_t)isas[ii]));
        double worst = 0;
        for (int t = 0; t < 12; t++) {
            attn_sdpa_desc d = tc_shape(2, 4, 2, 1 + tc_rng_below(&r, 20), 1 + tc_rng_below(&r, 600),
                                        1 + tc_rng_below(&r, 130), 0);
            d.mask = t % 3 ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.math = t % 2 ? ATTN_MATH_BF16 : ATTN_MATH_F32;
            /* a sink that weighs nothing, one that outweighs every key, and ordinary ones */
            const float sinks[4] = {-INFINITY, 30.0f, tc_rng_float(&r, -3, 3), tc_rng_float(&r, -3, 3)};
            d.sinks = sinks;
            const size_t hk = d.n_kv_heads, nq = d.batch * d.n_heads * d.q_len, nk = d.batch * hk * d.kv_len;
            float *q = rand_floats(&r, nq * d.head_dim), *k = rand_floats(&r, nk * d.head_dim);
            float *v = rand_floats(&r, nk * d.head_dim), *out = poisoned(nq * d.head_dim), *lse = poisoned(nq);
            float *probs = poisoned(nq * d.kv_len), *plain = poisoned(nq * d.head_dim), *plse = poisoned(nq);
            d.lse = lse;
            cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, out, probs), ATTN_OK);
            /* The same call without sinks, scaled afterwards as attn.h tells a merging caller to. */
            attn_sdpa_desc d0 = d;
            d0.sinks = NULL;
            d0.lse = plse;
            cr_assert_eq(attn_sdpa(ctx, &d0, q, k, v, plain, NULL), ATTN_OK);
            int empty = 0;
            worst = fmax(worst, check_call(isas[ii], t, &d, q, k, v, out, lse, probs, &empty));
            for (size_t i = 0; i < nq; i++) {
                const size_t h = i / d.q_len % d.n_heads;
                cr_assert(lse[i] == plse[i], "%s case %d: lse[%zu] %g with sinks, %g without", attn_isa_name(isas[ii]),
                          t, i, lse[i], plse[i]);
                const double shrink = lse[i] == -INFINITY ? 0.0 : 1.0 / (1.0 + exp((double)sinks[h] - lse[i]));
                for (size_t c = 0; c < d.head_dim; c++)
                    cr_assert(fabs(out[i * d.head_dim + c] - plain[i * d.head_dim + c] * shrink) <=
                                  4e-7 * (1 + fabs(out[i * d.head_dim + c])),
                              "%s case %d: out %.9g, the plain call scaled %.9g", attn_isa_name(isas[ii]), t,
                              out[i * d.head_dim + c], plain[i * d.head_dim + c] * shrink);
            }
            free(q), free(k), free(v), free(out), free(lse), free(probs), free(plain), free(plse);
        }
        cr_log_info("[stat] merge::sinks            %-10s 12 cases, max err out %.2e (seed %llu)", attn_isa_name(isas[ii]),
                    worst, (unsigned long long)seed);
        attn_ctx_destroy(ctx);
    }
}

/* ---- score modifiers: softcap, ALiBi, bias ---------------------------------------------------------------------- */

Test(merge, modifiers)
{
    const uint64_t seed = tc_seed();
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 2, 0, 0), ATTN_OK);
        tc_rng r;
        tc_rng_init(&r, tc_mix(seed, 300 + (uint64_t)isas[ii]));
        double worst = 0;
        int masked_rows = 0;
        for (int t = 0; t < 24; t++) {
            attn_sdpa_desc d = tc_shape(2, 4, 1 + (t % 2), 1 + tc_rng_below(&r, 40), 1 + tc_rng_below(&r, 400),
                                        1 + tc_rng_below(&r, 100), 0);
            d.mask = t % 3 ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.window = d.mask == ATTN_MASK_CAUSAL && t % 4 == 1 ? 1 + tc_rng_below(&r, 100) : 0;
            d.math = t / 2 % 2 ? ATTN_MATH_BF16 : ATTN_MATH_F32;
            d.scale = 0.5f; /* scores up to about head_dim / 2: softcap has work to do */
            d.softcap = t % 3 != 2 ? tc_rng_float(&r, 1.0f, 30.0f) : 0.0f;
            /* Slopes that keep |score| near 30 at the largest distances here: fp32 scores carry an absolute error of
             * about 2^-24 |score|, which the contract's 2e-5 assumes is small. */
            const float slopes[4] = {1.0f / 32, 1.0f / 64, 1.0f / 256, -1.0f / 128};
            d.alibi_slopes = t % 4 != 3 ? slopes : NULL;
            d.positions = t % 2;
            d.q_pos0 = tc_rng_below(&r, 600);
            d.kv_pos0 = tc_rng_below(&r, 600);
            const size_t hk = d.n_kv_heads, nq = d.batch * d.n_heads * d.q_len, nk = d.batch * hk * d.kv_len;
            /* A bias per (b, h, i, j), or one row broadcast to all (strides 0), with -inf holes, and in some cases
             * whole rows masked. */
            const int bcast = t % 5 == 4;
            float *bias = NULL;
            if (t % 4 != 0) {
                const size_t nb = bcast ? d.kv_len : nq * d.kv_len;
                bias = malloc(nb * sizeof *bias);
                for (size_t e = 0; e < nb; e++)
                    bias[e] = tc_rng_below(&r, 8) == 0 ? -INFINITY : tc_rng_float(&r, -2.0f, 2.0f);
                if (!bcast && t % 3 == 1)
                    for (size_t e = 0; e < d.kv_len; e++)
                        bias[3 * d.kv_len + e] = -INFINITY; /* row 3 sees nothing */
                d.bias = bias;
                if (!bcast) {
                    d.bias_stride[2] = d.kv_len;
                    d.bias_stride[1] = d.q_len * d.kv_len;
                    d.bias_stride[0] = d.n_heads * d.q_len * d.kv_len;
                }
            }
            float *q = rand_floats(&r, nq * d.head_dim), *k = rand_floats(&r, nk * d.head_dim);
            float *v = rand_floats(&r, nk * d.head_dim), *out = poisoned(nq * d.head_dim), *lse = poisoned(nq);
            float *probs = poisoned(nq * d.kv_len);
            d.lse = lse;
            cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, out, probs), ATTN_OK, "%s case %d", attn_isa_name(isas[ii]), t);
            worst = fmax(worst, check_call(isas[ii], t, &d, q, k, v, out, lse, probs, &masked_rows));
            free(q), free(k), free(v), free(out), free(lse), free(probs), free(bias);
        }
        cr_log_info("[stat] merge::modifiers        %-10s 24 cases, max err out %.2e, %d rows that see no key "
                    "(seed %llu)", attn_isa_name(isas[ii]), worst, masked_rows, (unsigned long long)seed);
        attn_ctx_destroy(ctx);
    }
}

Test(merge, modifiers_validation)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float q[8] = {0}, k[16] = {0}, v[16] = {0}, out[8];
    attn_sdpa_desc d = tc_shape(1, 1, 0, 2, 4, 4, 0);
    const float caps[] = {-1.0f, INFINITY, NAN};
    for (size_t i = 0; i < 3; i++) {
        d.softcap = caps[i];
        out[0] = tc_u2f(TC_POISON_BITS);
        cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, out, NULL), ATTN_EINVAL, "softcap %g", caps[i]);
        cr_assert(tc_f2u(out[0]) == TC_POISON_BITS);
    }
    /* A bias whose last element lies past SIZE_MAX (bytes) is refused before anything is read. */
    d.softcap = 0.0f;
    const float bias[1] = {0};
    d.bias = bias;
    d.bias_stride[2] = SIZE_MAX / 2;
    out[0] = tc_u2f(TC_POISON_BITS);
    cr_assert_eq(attn_sdpa(ctx, &d, q, k, v, out, NULL), ATTN_ERANGE);
    cr_assert(tc_f2u(out[0]) == TC_POISON_BITS);
    attn_ctx_destroy(ctx);
}
