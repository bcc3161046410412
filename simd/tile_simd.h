/* The tile kernels written once over a small vector vocabulary; each ISA file defines the vocabulary, includes
 * this header and gets its own copy (every function here is static or carries the ISA suffix, so no copy can be
 * picked by the linker for another ISA). Register blocking: SC_RB query rows x SC_NV vectors of keys for scores,
 * PV_RB rows x PV_NV vectors of output columns for P.V, so each K or V load feeds several FMAs.
 *
 * Needs: V, VW, M, V_ZERO(), V_LOAD(p) (aligned), V_LOADU(p), V_STORE(p, x), V_STOREU(p, x), V_BCAST(f),
 * V_FMA(a, b, c) = a*b+c, V_MUL, V_SUB, V_MAX, V_ADD, V_DIV, V_EXP(x), V_HMAX(x), V_HSUM(x), V_HSUMS(p) (lane
 * i = the sum of vector p[i], for VW vectors), V_IOTA(),
 * V_INRANGE(idx, lo, hi) -> M, V_SEL(m, a, b) (a where m), V_CVT_F16(p) and V_CVT_BF16(p) (VW stored halves at p,
 * widened), V_CVT_I8(p) (VW int8 at p, widened exactly); the blockings SC_RB x SC_NV (scores and the GEMM), PV_RB x PV_NV (P.V), PVD_RB x PVD_NV (P.V of
 * decode-sized blocks; optionally PVH_RB x PVH_NV for half/bfloat16 V), SR_RB x SR_JB (scores_rows); ATTN_SFX
 * (the ISA suffix of every name) and ATTN_KERNELS_ISA.
 *
 * A table that only adds slots to another ISA's (avx512bf16 to avx512, neonbf16 to neon) defines ATTN_SLOTS_OF as
 * that ISA's suffix: its table then points at that ISA's slot functions, which its file compiled once with
 * ATTN_SHARE_SLOTS (external names), and this header defines only the inline helpers. ATTN_EXTRA_SLOTS: more
 * designated initializers for the table. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "half.h"
#include "kernels.h"

#define ATTN_INLINE static inline __attribute__((always_inline))

/* Decode-sized score blocks (at most SR_RB rows, a GQA group) take one 16-key panel per micro-kernel: SCD_RB x
 * SCD_NV accumulators, each panel read once for all the rows. Against a KV cache's panels this beats key rows
 * with a transposing reduction per score (f16 scores from L2, 4 rows: AVX-512 37.7 -> 34.7 cycles per key,
 * AVX2 57.8 -> 35.1); 4 panels per micro-kernel, as prefill blocks take, was slower (41.4, 55.6). */
#define SCD_RB SR_RB
#define SCD_NV (ATTN_PAD / VW)

/* exp(x - m) with SLEEF's ISA-suffixed expf (DESIGN.md §2). */
#define ATTN_EXPM(x, m) V_EXP(V_SUB((x), (m)))
#define ATTN_CAT_(a, b) a##b
#define ATTN_CAT(a, b) ATTN_CAT_(a, b)
#define ATTN_STR_(a) #a
#define ATTN_STR(a) ATTN_STR_(a)
#define ATTN_FN(op) ATTN_CAT(attn_##op##_, ATTN_SFX) /* attn_scores_f16_avx2, ... */

/* The slot functions' linkage: static, or external for a table another extends (ATTN_SHARE_SLOTS). */
#ifdef ATTN_SHARE_SLOTS
#define ATTN_SLOT_LINK
#else
#define ATTN_SLOT_LINK static
#endif

/* Runs body(RB) for the n < max leftover rows with RB = n, a compile-time constant in each case, so that a tail
 * of rows keeps as many independent FMA chains as it can (one row at a time would be latency-bound). Cases at or
 * above max are unreachable and instantiate RB = 1. */
#define ATTN_TAIL(n, max, body)                                                                                    \
    switch (n) {                                                                                                   \
    case 1: body(1); break;                                                                                        \
    case 2: body(2 < (max) ? 2 : 1); break;                                                                        \
    case 3: body(3 < (max) ? 3 : 1); break;                                                                        \
    case 4: body(4 < (max) ? 4 : 1); break;                                                                        \
    case 5: body(5 < (max) ? 5 : 1); break;                                                                        \
    case 6: body(6 < (max) ? 6 : 1); break;                                                                        \
    case 7: body(7 < (max) ? 7 : 1); break;                                                                        \
    default: break;                                                                                                \
    }

/* 1 if no row of r0..r0+RB sees any key of [j0, j1): the softmax never reads those scores (causal diagonal and
 * window edges), so they need not be computed. */
ATTN_INLINE int attn_sc_unseen(const attn_tile_args *a, size_t r0, size_t j0, size_t j1, const int RB)
{
    for (int r = 0; r < RB; r++)
        if (a->lo[r0 + r] < a->hi[r0 + r] && (size_t)a->lo[r0 + r] < j1 && (size_t)a->hi[r0 + r] > j0)
            return 0;
    return 1;
}

/* Blocks of at most this many rows are decode-shaped (a GQA group of a few query positions). */
#define ATTN_FEW_ROWS 8
/* PVH_RB x PVH_NV: the decode blocking for V stored as half or bfloat16 (the ISA may set it; else PVD's). */
#ifndef PVH_RB
#define PVH_RB PVD_RB
#define PVH_NV PVD_NV
#endif
#define ATTN_MAX3(a, b, c) ((a) > (b) ? ((a) > (c) ? (a) : (c)) : ((b) > (c) ? (b) : (c)))
#define PV_RBMAX ATTN_MAX3(PV_RB, PVD_RB, PVH_RB)
#define PV_NVMAX ATTN_MAX3(PV_NV, PVD_NV, PVH_NV)

/* scores_rows: RB query rows x JB key rows per micro-kernel, vectors along d, one accumulator per score. The
 * accumulators are summed VW at a time by V_HSUMS (a transposing reduction: about 3 shuffles and adds per score,
 * where a horizontal sum per score took about 8 and a long dependency chain). SR_RB x SR_JB accumulators, a
 * multiple of VW, make one full micro-kernel; fewer rows take proportionally more keys. */
#define SR_NACC (SR_RB * SR_JB)
_Static_assert(SR_NACC % VW == 0, "scores_rows accumulators must fill whole reductions");
#define SR_JBF(RB) (SR_NACC / (RB)) /* keys per micro-kernel for RB rows */

/* s[r0..r0+RB)[j0..j0+JB) from a micro-kernel's accumulators. */
ATTN_INLINE void attn_sr_store(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int JB,
                               const V *acc)
{
    const int NA = (RB * JB + VW - 1) / VW * VW;
    float sum[SR_NACC] __attribute__((aligned(64)));
#pragma GCC unroll 16
    for (int i = 0; i < NA; i += VW)
        V_STORE(sum + i, V_HSUMS(acc + i));
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 64
        for (int t = 0; t < JB; t++)
            a->s[(r0 + r) * a->nkp + j0 + t] = sum[r * JB + t];
}

#ifndef ATTN_SLOTS_OF
/* One instance of the score and P.V kernels per storage format (simd/tile_fmt.h). fp32 panels are packed and
 * aligned; a KV cache's half and bfloat16 panels are prefetched a tile ahead, and their values are widened in
 * registers, read at half the bytes and never copied. */
#define FMT f32
#define FMT_ESZ sizeof(float)
#define FMT_LD(base, i) V_LOADU((const float *)(base) + (i))
#define FMT_LDP(base, i) V_LOAD((const float *)(base) + (i))
#define FMT_PF_PANELS 0
#define FMT_PF_COPIES 2
#define FMT_PVD_RB PVD_RB
#define FMT_PVD_NV PVD_NV
#include "tile_fmt.h"

#define FMT f16
#define FMT_ESZ sizeof(uint16_t)
#define FMT_LD(base, i) V_CVT_F16((const uint16_t *)(base) + (i))
#define FMT_LDP(base, i) FMT_LD(base, i)
#define FMT_PF_PANELS 1
#define FMT_PF_COPIES 1
#define FMT_PVD_RB PVH_RB
#define FMT_PVD_NV PVH_NV
#include "tile_fmt.h"

#define FMT bf16
#define FMT_ESZ sizeof(uint16_t)
#define FMT_LD(base, i) V_CVT_BF16((const uint16_t *)(base) + (i))
#define FMT_LDP(base, i) FMT_LD(base, i)
#define FMT_PF_PANELS 1
#define FMT_PF_COPIES 1
#define FMT_PVD_RB PVH_RB
#define FMT_PVD_NV PVH_NV
#include "tile_fmt.h"

/* int8 rows (ATTN_I8) as their integers: a quarter of fp32's bytes, prefetched like half. */
#define FMT i8
#define FMT_ESZ sizeof(int8_t)
#define FMT_LD(base, i) V_CVT_I8((const int8_t *)(base) + (i))
#define FMT_LDP(base, i) FMT_LD(base, i)
#define FMT_PF_PANELS 1
#define FMT_PF_COPIES 1
#define FMT_PVD_RB PVH_RB
#define FMT_PVD_NV PVH_NV
#include "tile_fmt.h"

/* RP: store the weights rounded to bfloat16 (ATTN_MATH_BF16's P; l sums the unrounded ones). VS: store them times
 * a->vsc (int8 value rows' scales; l sums the weights before it). */
ATTN_INLINE void attn_softmax_rows(const attn_tile_args *a, const int RP, const int VS)
{
    const V iota = V_IOTA(), ninf = V_BCAST(-INFINITY);
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        const size_t lo = (size_t)a->lo[r], hi = (size_t)a->hi[r];
        if (lo >= hi) {
            memset(s, 0, a->nkp * sizeof *s);
            continue;
        }
        /* A row that sees the whole tile (the common case away from mask boundaries) needs no lane masks. */
        const int full = lo == 0 && hi == a->nkp;
        const V vlo = V_BCAST((float)lo), vhi = V_BCAST((float)hi);
        V vm = ninf;
        if (full) {
            V vm2 = ninf;
            size_t j0 = 0;
            for (; j0 + 2 * VW <= a->nkp; j0 += 2 * VW) {
                vm = V_MAX(vm, V_LOAD(s + j0));
                vm2 = V_MAX(vm2, V_LOAD(s + j0 + VW));
            }
            for (; j0 < a->nkp; j0 += VW)
                vm = V_MAX(vm, V_LOAD(s + j0));
            vm = V_MAX(vm, vm2);
        } else
            for (size_t j0 = lo / VW * VW; j0 < hi; j0 += VW) {
                const M in = V_INRANGE(V_ADD(iota, V_BCAST((float)j0)), vlo, vhi);
                vm = V_MAX(vm, V_SEL(in, V_LOAD(s + j0), ninf));
            }
        const float mold = a->m[r], mt = V_HMAX(vm), mnew = mt > mold ? mt : mold;
        if (mnew == -INFINITY) { /* every visible score so far is -inf (a bias masks them): nothing to add */
            memset(s, 0, a->nkp * sizeof *s);
            continue;
        }
        const float alpha = mold == mnew ? 1.0f : expf(mold - mnew); /* 0 on the first tile (mold = -inf) */
        const V vmn = V_BCAST(mnew);
        V sum = V_ZERO();
        if (full) {
            /* Two exps per step: each is a long dependency chain, and two independent ones overlap better. */
            V sum2 = V_ZERO();
            size_t j0 = 0;
            for (; j0 + 2 * VW <= a->nkp; j0 += 2 * VW) {
                const V p = ATTN_EXPM(V_LOAD(s + j0), vmn), p2 = ATTN_EXPM(V_LOAD(s + j0 + VW), vmn);
                V_STORE(s + j0, RP ? V_RBF16(p) : VS ? V_MUL(p, V_LOADU(a->vsc + j0)) : p);
                V_STORE(s + j0 + VW, RP ? V_RBF16(p2) : VS ? V_MUL(p2, V_LOADU(a->vsc + j0 + VW)) : p2);
                sum = V_ADD(sum, p);
                sum2 = V_ADD(sum2, p2);
            }
            for (; j0 < a->nkp; j0 += VW) {
                const V p = ATTN_EXPM(V_LOAD(s + j0), vmn);
                V_STORE(s + j0, RP ? V_RBF16(p) : VS ? V_MUL(p, V_LOADU(a->vsc + j0)) : p);
                sum = V_ADD(sum, p);
            }
            sum = V_ADD(sum, sum2);
        }
        else
            for (size_t j0 = 0; j0 < a->nkp; j0 += VW) {
                if (j0 + VW <= lo || j0 >= hi) {
                    V_STORE(s + j0, V_ZERO());
                    continue;
                }
                const M in = V_INRANGE(V_ADD(iota, V_BCAST((float)j0)), vlo, vhi);
                const V p = V_SEL(in, ATTN_EXPM(V_LOAD(s + j0), vmn), V_ZERO());
                V_STORE(s + j0, RP ? V_RBF16(p) : VS ? V_MUL(p, V_LOADU(a->vsc + j0)) : p);
                sum = V_ADD(sum, p);
            }
        a->l[r] = a->l[r] * alpha + V_HSUM(sum);
        a->m[r] = mnew;
        if (alpha != 1.0f) {
            const V va = V_BCAST(alpha);
            float *o = a->o + r * a->dvp;
            for (size_t c = 0; c < a->dvp; c += VW)
                V_STORE(o + c, V_MUL(V_LOAD(o + c), va));
        }
    }
}

ATTN_SLOT_LINK ATTN_DECL_SOFTMAX(ATTN_FN(softmax_f32))
{
    if (a->round_p)
        attn_softmax_rows(a, 1, 0);
    else if (a->vsc)
        attn_softmax_rows(a, 0, 1);
    else
        attn_softmax_rows(a, 0, 0);
}

/* tanh for softcap: (1 - t) / (1 + t) with t = exp(-2|x|), through the softmax's exp and one division, and below
 * |x| = 0.3, where 1 - t would cancel, its odd Taylor polynomial to x^11 (error under 1e-9). Much cheaper than
 * SLEEF's vector tanhf (docs/performance.md has the measurements). */
ATTN_INLINE V attn_tanh(V x)
{
    const V one = V_BCAST(1.0f), ax = V_MAX(x, V_SUB(V_ZERO(), x));
    const V t = V_EXP(V_MUL(ax, V_BCAST(-2.0f)));
    const V big = V_DIV(V_SUB(one, t), V_ADD(one, t));
    const V x2 = V_MUL(x, x);
    V p = V_FMA(x2, V_BCAST(-1382.0f / 155925.0f), V_BCAST(62.0f / 2835.0f));
    p = V_FMA(x2, p, V_BCAST(-17.0f / 315.0f));
    p = V_FMA(x2, p, V_BCAST(2.0f / 15.0f));
    p = V_FMA(x2, p, V_BCAST(-1.0f / 3.0f));
    const V small = V_FMA(V_MUL(x, x2), p, x);
    const V lim = V_BCAST(0.3f), ninf = V_BCAST(-INFINITY);
    return V_SEL(V_INRANGE(x, V_SUB(V_ZERO(), lim), lim), small,
                 V_SEL(V_INRANGE(x, ninf, V_ZERO()), V_SUB(V_ZERO(), big), big));
}

/* Score modifiers (kernels.h attn_score_mods), a vector at a time over each row's visible keys. */
ATTN_SLOT_LINK ATTN_DECL_MODIFY(ATTN_FN(modify_f32))
{
    const attn_score_mods *md = a->mods;
    const V cap = V_BCAST(md->softcap), icap = V_BCAST(md->inv_cap), iota = V_IOTA();
    const V ninf = V_BCAST(-INFINITY), nmax = V_BCAST(-FLT_MAX);
    for (size_t r = 0; r < a->rows; r++) {
        const size_t lo = (size_t)a->lo[r], hi = (size_t)a->hi[r];
        if (lo >= hi)
            continue;
        float *s = a->s + r * a->nkp;
        const float *bias = md->bias ? md->bias[r] + md->t0 : NULL;
        const V slope = V_BCAST(md->slope ? md->slope[r] : 0.0f);
        const V d0 = V_BCAST(md->slope ? (float)(md->rel[r] + (int64_t)md->t0) : 0.0f);
        for (size_t j0 = lo / VW * VW; j0 < hi; j0 += VW) {
            V x = V_LOAD(s + j0);
            if (md->softcap != 0.0f)
                x = V_MUL(cap, attn_tanh(V_MUL(x, icap)));
            if (md->slope)
                x = V_FMA(slope, V_ADD(d0, V_ADD(iota, V_BCAST((float)j0))), x);
            if (bias) {
                V bv;
                if (j0 + VW <= a->nk)
                    bv = V_LOADU(bias + j0);
                else { /* the tile's last keys: never read the bias past key nk */
                    float t[VW] __attribute__((aligned(64)));
                    for (size_t i = 0; i < VW; i++)
                        t[i] = j0 + i < a->nk ? bias[j0 + i] : 0.0f;
                    bv = V_LOAD(t);
                }
                /* a -inf bias masks the pair whatever the score (an overflowed +inf one would make NaN) */
                x = V_SEL(V_INRANGE(bv, ninf, nmax), ninf, V_ADD(x, bv));
            }
            V_STORE(s + j0, x);
        }
    }
}

ATTN_SLOT_LINK ATTN_DECL_PROBS(ATTN_FN(probs_f32))
{
    const V iota = V_IOTA();
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        const size_t lo = (size_t)a->lo[r], hi = (size_t)a->hi[r];
        if (lo >= hi) {
            memset(dst + r * ld, 0, a->nk * sizeof *dst);
            continue;
        }
        const V vlo = V_BCAST((float)lo), vhi = V_BCAST((float)hi);
        const V vm = V_BCAST(a->m[r]), vli = V_BCAST(1.0f / a->l[r]), ninf = V_BCAST(-INFINITY);
        const V nmax = V_BCAST(-FLT_MAX);
        for (size_t j0 = 0; j0 < a->nk; j0 += VW) {
            const M in = V_INRANGE(V_ADD(iota, V_BCAST((float)j0)), vlo, vhi);
            const V x = V_LOAD(s + j0), p = V_SEL(in, V_MUL(ATTN_EXPM(x, vm), vli), V_ZERO());
            /* a -inf score (a bias mask) is exactly 0 even where the row's own max overflowed */
            V_STORE(s + j0, V_SEL(V_INRANGE(x, ninf, nmax), V_ZERO(), p));
        }
        memcpy(dst + r * ld, s, a->nk * sizeof *dst);
    }
}

ATTN_SLOT_LINK ATTN_DECL_SCALE(ATTN_FN(scale_f32))
{
    const V vf = V_BCAST(f);
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_MUL(V_LOADU(src + i), vf));
    for (; i < n; i++)
        dst[i] = src[i] * f;
}

ATTN_SLOT_LINK ATTN_DECL_CVT(ATTN_FN(cvt_f16))
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_CVT_F16(src + i));
    for (; i < n; i++)
        dst[i] = attn_f16_to_f32(src[i]);
}

ATTN_SLOT_LINK ATTN_DECL_CVT(ATTN_FN(cvt_bf16))
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_CVT_BF16(src + i));
    for (; i < n; i++)
        dst[i] = attn_bf16_to_f32(src[i]);
}

ATTN_SLOT_LINK ATTN_DECL_ROUND(ATTN_FN(round_bf16))
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(x + i, V_RBF16(V_LOADU(x + i)));
    for (; i < n; i++)
        x[i] = attn_bf16_to_f32(attn_f32_to_bf16(x[i]));
}

ATTN_SLOT_LINK ATTN_DECL_NARROW(ATTN_FN(narrow_f16))
{
    const V vf = V_BCAST(f);
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STORE_F16(dst + i, V_MUL(V_LOADU(src + i), vf));
    for (; i < n; i++)
        dst[i] = attn_f32_to_f16(src[i] * f);
}

ATTN_SLOT_LINK ATTN_DECL_NARROW(ATTN_FN(narrow_bf16))
{
    const V vf = V_BCAST(f);
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STORE_BF16(dst + i, V_RBF16(V_MUL(V_LOADU(src + i), vf)));
    for (; i < n; i++)
        dst[i] = attn_f32_to_bf16(src[i] * f);
}

/* c[r0..r0+RB)[j0..j0+NV*VW) = bias + a . bp over the whole reduction: the scores micro-kernel's blocking, with the
 * accumulators seeded from the bias and stored once. Columns at or past nc go through a buffer and are dropped. */
ATTN_INLINE void attn_gemm_micro(const attn_gemm_args *g, size_t r0, size_t j0, const int RB, const int NV)
{
    V acc[SC_RB][SC_NV];
    const float *bp[SC_NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
        const size_t j = j0 + (size_t)v * VW;
        const V b0 = g->bias ? V_LOAD(g->bias + j) : V_ZERO();
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++)
            acc[r][v] = b0;
        bp[v] = g->bp + j / ATTN_PAD * g->k * ATTN_PAD + j % ATTN_PAD;
    }
    const float *x = g->a + r0 * g->lda;
    for (size_t i = 0; i < g->k; i++) {
        V b[SC_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = V_LOAD(bp[v] + i * ATTN_PAD);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const V xv = V_BCAST(x[r * g->lda + i]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_FMA(xv, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            const size_t j = j0 + (size_t)v * VW;
            float *c = g->c + (r0 + r) * g->ldc + j;
            if (j + VW <= g->nc) {
                V_STOREU(c, acc[r][v]);
            } else if (j < g->nc) {
                float t[VW] __attribute__((aligned(64)));
                V_STORE(t, acc[r][v]);
                memcpy(c, t, (g->nc - j) * sizeof *c);
            }
        }
}

/* Every row group of one column slice, so the slice's packed panels stay in L1/L2 while the rows go by. */
ATTN_INLINE void attn_gemm_cols(const attn_gemm_args *g, size_t j0, const int NV)
{
    size_t r0 = 0;
    for (; r0 + SC_RB <= g->rows; r0 += SC_RB)
        attn_gemm_micro(g, r0, j0, SC_RB, NV);
#define ATTN_GEMM_TAIL(RB) attn_gemm_micro(g, r0, j0, RB, NV)
    ATTN_TAIL(g->rows - r0, SC_RB, ATTN_GEMM_TAIL)
#undef ATTN_GEMM_TAIL
}

ATTN_SLOT_LINK ATTN_DECL_GEMM(ATTN_FN(gemm_f32))
{
    size_t j0 = 0;
    for (; j0 + SC_NV * VW <= g->ncp; j0 += SC_NV * VW)
        attn_gemm_cols(g, j0, SC_NV);
    for (; j0 < g->ncp; j0 += VW)
        attn_gemm_cols(g, j0, 1);
}

#endif /* ATTN_SLOTS_OF */

/* The slots of the table whose functions carry suffix sfx, and their declarations. */
#define ATTN_SIMD_SLOTS(sfx) ATTN_SIMD_SLOTS_(sfx)
#define ATTN_SIMD_SLOTS_(sfx)                                                                                      \
    .scores = {attn_scores_f32_##sfx, attn_scores_f16_##sfx, attn_scores_bf16_##sfx, attn_scores_i8_##sfx},        \
    .scores_rows = {attn_scores_rows_f32_##sfx, attn_scores_rows_f16_##sfx, attn_scores_rows_bf16_##sfx,           \
                    attn_scores_rows_i8_##sfx},                                                                    \
    .softmax = attn_softmax_f32_##sfx,                                                                             \
    .pv = {attn_pv_f32_##sfx, attn_pv_f16_##sfx, attn_pv_bf16_##sfx, attn_pv_i8_##sfx},                            \
    .modify = attn_modify_f32_##sfx,                                                                               \
    .probs = attn_probs_f32_##sfx, .scale = attn_scale_f32_##sfx,                                                  \
    .cvt = {NULL, attn_cvt_f16_##sfx, attn_cvt_bf16_##sfx}, .round_bf16 = attn_round_bf16_##sfx,                   \
    .narrow = {NULL, attn_narrow_f16_##sfx, attn_narrow_bf16_##sfx}, .gemm = attn_gemm_f32_##sfx
#define ATTN_SIMD_DECLS(sfx) ATTN_SIMD_DECLS_(sfx)
#define ATTN_SIMD_DECLS_(sfx)                                                                                      \
    ATTN_DECL_SCORES(attn_scores_f32_##sfx); ATTN_DECL_SCORES(attn_scores_f16_##sfx);                              \
    ATTN_DECL_SCORES(attn_scores_bf16_##sfx); ATTN_DECL_SCORES(attn_scores_rows_f32_##sfx);                        \
    ATTN_DECL_SCORES(attn_scores_rows_f16_##sfx); ATTN_DECL_SCORES(attn_scores_rows_bf16_##sfx);                   \
    ATTN_DECL_SCORES(attn_scores_i8_##sfx); ATTN_DECL_SCORES(attn_scores_rows_i8_##sfx);                           \
    ATTN_DECL_PV(attn_pv_i8_##sfx);                                                                                \
    ATTN_DECL_SOFTMAX(attn_softmax_f32_##sfx); ATTN_DECL_PV(attn_pv_f32_##sfx); ATTN_DECL_PV(attn_pv_f16_##sfx);   \
    ATTN_DECL_MODIFY(attn_modify_f32_##sfx);                                                                       \
    ATTN_DECL_PV(attn_pv_bf16_##sfx); ATTN_DECL_PROBS(attn_probs_f32_##sfx); ATTN_DECL_SCALE(attn_scale_f32_##sfx); \
    ATTN_DECL_CVT(attn_cvt_f16_##sfx); ATTN_DECL_CVT(attn_cvt_bf16_##sfx); ATTN_DECL_ROUND(attn_round_bf16_##sfx); \
    ATTN_DECL_NARROW(attn_narrow_f16_##sfx); ATTN_DECL_NARROW(attn_narrow_bf16_##sfx);                             \
    ATTN_DECL_GEMM(attn_gemm_f32_##sfx)

#ifdef ATTN_SLOTS_OF
ATTN_SIMD_DECLS(ATTN_SLOTS_OF);
#else
#define ATTN_SLOTS_OF ATTN_SFX
#endif

const attn_kernels ATTN_CAT(attn_kernels_, ATTN_SFX) = {
    .isa = ATTN_KERNELS_ISA,
    .table = "attn_kernels_" ATTN_STR(ATTN_SFX),
    .sc_rb = SC_RB, .sc_nv = SC_NV, .pv_rb = PV_RB, .pv_nv = PV_NV, .pvd_rb = PVD_RB, .pvd_nv = PVD_NV,
    ATTN_SIMD_SLOTS(ATTN_SLOTS_OF),
#ifdef ATTN_EXTRA_SLOTS
    ATTN_EXTRA_SLOTS
#endif
};
