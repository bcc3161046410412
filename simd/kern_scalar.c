/* The scalar kernel set: plain C, the reference every SIMD set is checked against, and the path that always
 * exists. Baseline flags only. */
#include <math.h>

#include "half.h"
#include "kernels.h"

/* Element i of a row stored as t. */
static inline float attn_ld(const void *p, size_t i, attn_dtype t)
{
    if (t == ATTN_F16)
        return attn_f16_to_f32(((const uint16_t *)p)[i]);
    if (t == ATTN_BF16)
        return attn_bf16_to_f32(((const uint16_t *)p)[i]);
    if (t == ATTN_I8)
        return (float)((const int8_t *)p)[i];
    return ((const float *)p)[i];
}

/* The scores from kt of type t (a constant in each caller, so the loads are specialised), a panel at a time for
 * every row, so that the panel stays in L1 while the rows go by. */
static inline __attribute__((always_inline)) void attn_scores_t(const attn_tile_args *a, attn_dtype t)
{
    for (size_t p = 0; p < a->nkp; p += ATTN_PAD)
        for (size_t r = 0; r < a->rows; r++) {
            const float *q = a->q + r * a->d;
            float acc[ATTN_PAD] = { 0 };
            for (size_t c = 0; c < a->d; c++)
                for (size_t l = 0; l < ATTN_PAD; l++)
                    acc[l] += q[c] * attn_ld(a->kt, p * a->d + c * ATTN_PAD + l, t);
            for (size_t l = 0; l < ATTN_PAD; l++)
                a->s[r * a->nkp + p + l] = a->ksc ? acc[l] * a->ksc[p + l] : acc[l];
        }
}

static ATTN_DECL_SCORES(attn_scores_f32_scalar) { attn_scores_t(a, ATTN_F32); }
static ATTN_DECL_SCORES(attn_scores_f16_scalar) { attn_scores_t(a, ATTN_F16); }
static ATTN_DECL_SCORES(attn_scores_bf16_scalar) { attn_scores_t(a, ATTN_BF16); }
static ATTN_DECL_SCORES(attn_scores_i8_scalar) { attn_scores_t(a, ATTN_I8); }

static inline __attribute__((always_inline)) void attn_scores_rows_t(const attn_tile_args *a, attn_dtype t)
{
    for (size_t r = 0; r < a->rows; r++) {
        const float *q = a->q + r * a->d;
        float *s = a->s + r * a->nkp;
        for (size_t j = 0; j < a->nkp; j++) {
            float acc = 0.0f;
            if (j < a->nk)
                for (size_t c = 0; c < a->d; c++)
                    acc += q[c] * attn_ld(a->kr, j * a->ldk + c, t);
            s[j] = acc;
        }
    }
}

static ATTN_DECL_SCORES(attn_scores_rows_f32_scalar) { attn_scores_rows_t(a, ATTN_F32); }
static ATTN_DECL_SCORES(attn_scores_rows_f16_scalar) { attn_scores_rows_t(a, ATTN_F16); }
static ATTN_DECL_SCORES(attn_scores_rows_bf16_scalar) { attn_scores_rows_t(a, ATTN_BF16); }
static ATTN_DECL_SCORES(attn_scores_rows_i8_scalar) { attn_scores_rows_t(a, ATTN_I8); }

static ATTN_DECL_SOFTMAX(attn_softmax_f32_scalar)
{
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        const size_t lo = (size_t)a->lo[r], hi = (size_t)a->hi[r];
        if (lo >= hi) {
            for (size_t j = 0; j < a->nkp; j++)
                s[j] = 0.0f;
            continue;
        }
        float mt = s[lo];
        for (size_t j = lo + 1; j < hi; j++)
            mt = fmaxf(mt, s[j]);
        const float mold = a->m[r], mnew = fmaxf(mold, mt);
        if (mnew == -INFINITY) { /* every visible score so far is -inf (a bias masks them): nothing to add */
            for (size_t j = 0; j < a->nkp; j++)
                s[j] = 0.0f;
            continue;
        }
        const float alpha = expf(mold - mnew); /* 0 on the first tile (mold = -inf) */
        float sum = 0.0f;
        for (size_t j = 0; j < a->nkp; j++) {
            const float p = (j >= lo && j < hi) ? expf(s[j] - mnew) : 0.0f;
            s[j] = a->round_p ? attn_bf16_to_f32(attn_f32_to_bf16(p)) : a->vsc ? p * a->vsc[j] : p;
            sum += p;
        }
        a->l[r] = a->l[r] * alpha + sum;
        a->m[r] = mnew;
        if (alpha != 1.0f) {
            float *o = a->o + r * a->dvp;
            for (size_t c = 0; c < a->dvp; c++)
                o[c] *= alpha;
        }
    }
}

static ATTN_DECL_MODIFY(attn_modify_f32_scalar)
{
    const attn_score_mods *md = a->mods;
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        const float *bias = md->bias ? md->bias[r] + md->t0 : NULL;
        const float d0 = md->slope ? (float)(md->rel[r] + (int64_t)md->t0) : 0.0f;
        for (size_t j = (size_t)a->lo[r]; j < (size_t)a->hi[r]; j++) {
            float x = s[j];
            if (md->softcap != 0.0f)
                x = md->softcap * tanhf(x * md->inv_cap);
            if (md->slope)
                x = fmaf(md->slope[r], d0 + (float)j, x);
            if (bias) /* a -inf bias masks the pair whatever the score */
                x = bias[j] == -INFINITY ? -INFINITY : x + bias[j];
            s[j] = x;
        }
    }
}

static inline __attribute__((always_inline)) void attn_pv_t(const attn_tile_args *a, attn_dtype t)
{
    for (size_t r = 0; r < a->rows; r++) {
        const float *p = a->s + r * a->nkp;
        float *o = a->o + r * a->dvp;
        for (int j = a->lo[r]; j < a->hi[r]; j++) {
            const float pj = p[j];
            for (size_t c = 0; c < a->dvp; c++)
                o[c] += pj * attn_ld(a->vp, (size_t)j * a->ldv + c, t);
        }
    }
}

static ATTN_DECL_PV(attn_pv_f32_scalar) { attn_pv_t(a, ATTN_F32); }
static ATTN_DECL_PV(attn_pv_f16_scalar) { attn_pv_t(a, ATTN_F16); }
static ATTN_DECL_PV(attn_pv_bf16_scalar) { attn_pv_t(a, ATTN_BF16); }
static ATTN_DECL_PV(attn_pv_i8_scalar) { attn_pv_t(a, ATTN_I8); }

static ATTN_DECL_PROBS(attn_probs_f32_scalar)
{
    for (size_t r = 0; r < a->rows; r++) {
        const float *s = a->s + r * a->nkp;
        float *row = dst + r * ld;
        const size_t lo = (size_t)a->lo[r], hi = (size_t)a->hi[r];
        const float m = a->m[r], linv = 1.0f / a->l[r];
        for (size_t j = 0; j < a->nk; j++)
            row[j] = (j >= lo && j < hi && s[j] != -INFINITY) ? expf(s[j] - m) * linv : 0.0f; /* -inf: a bias mask */
    }
}

static ATTN_DECL_SCALE(attn_scale_f32_scalar)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = src[i] * f;
}

static ATTN_DECL_CVT(attn_cvt_f16_scalar)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = attn_f16_to_f32(src[i]);
}

static ATTN_DECL_CVT(attn_cvt_bf16_scalar)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = attn_bf16_to_f32(src[i]);
}

static ATTN_DECL_ROUND(attn_round_bf16_scalar)
{
    for (size_t i = 0; i < n; i++)
        x[i] = attn_bf16_to_f32(attn_f32_to_bf16(x[i]));
}

static ATTN_DECL_NARROW(attn_narrow_f16_scalar)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = attn_f32_to_f16(src[i] * f);
}

static ATTN_DECL_NARROW(attn_narrow_bf16_scalar)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = attn_f32_to_bf16(src[i] * f);
}

static ATTN_DECL_GEMM(attn_gemm_f32_scalar)
{
    for (size_t r = 0; r < g->rows; r++)
        for (size_t j = 0; j < g->nc; j++) {
            const float *b = g->bp + j / ATTN_PAD * g->k * ATTN_PAD + j % ATTN_PAD;
            float t = g->bias ? g->bias[j] : 0.0f;
            for (size_t i = 0; i < g->k; i++)
                t += g->a[r * g->lda + i] * b[i * ATTN_PAD];
            g->c[r * g->ldc + j] = t;
        }
}

const attn_kernels attn_kernels_scalar = {
    .isa = ATTN_ISA_SCALAR,
    .table = "attn_kernels_scalar",
    .sc_rb = 1, .sc_nv = 1, .pv_rb = 1, .pv_nv = 1, .pvd_rb = 1, .pvd_nv = 1,
    .scores = {attn_scores_f32_scalar, attn_scores_f16_scalar, attn_scores_bf16_scalar, attn_scores_i8_scalar},
    .scores_rows = {attn_scores_rows_f32_scalar, attn_scores_rows_f16_scalar, attn_scores_rows_bf16_scalar,
                    attn_scores_rows_i8_scalar},
    .softmax = attn_softmax_f32_scalar,
    .modify = attn_modify_f32_scalar,
    .pv = {attn_pv_f32_scalar, attn_pv_f16_scalar, attn_pv_bf16_scalar, attn_pv_i8_scalar},
    .probs = attn_probs_f32_scalar,
    .scale = attn_scale_f32_scalar,
    .cvt = {NULL, attn_cvt_f16_scalar, attn_cvt_bf16_scalar},
    .round_bf16 = attn_round_bf16_scalar,
    .narrow = {NULL, attn_narrow_f16_scalar, attn_narrow_bf16_scalar},
    .gemm = attn_gemm_f32_scalar,
};
