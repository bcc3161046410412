/* The tile kernels written once over a small vector vocabulary; each ISA file defines the vocabulary, includes
 * this header and gets its own copy (every function here is static, so no copy can be picked by the linker for
 * another ISA). Register blocking: SC_RB query rows x SC_NV vectors of keys for scores, PV_RB rows x PV_NV vectors
 * of output columns for P.V, so each K or V load feeds several FMAs.
 *
 * Needs: V, VW, M, V_ZERO(), V_LOAD(p) (aligned), V_LOADU(p), V_STORE(p, x), V_STOREU(p, x), V_BCAST(f),
 * V_FMA(a, b, c) = a*b+c, V_MUL, V_SUB, V_MAX, V_ADD, V_EXP(x), V_HMAX(x), V_HSUM(x), V_HSUMS(p) (lane i = the sum of
 * vector p[i], for VW vectors), V_IOTA(),
 * V_INRANGE(idx, lo, hi) -> M, V_SEL(m, a, b) (a where m), V_CVT_F16(p) and V_CVT_BF16(p) (VW stored halves at p,
 * widened); the blockings SC_RB x SC_NV (scores and the GEMM), PV_RB x PV_NV (P.V), PVD_RB x PVD_NV (P.V of
 * decode-sized blocks; optionally PVH_RB x PVH_NV for half/bfloat16 V), SR_RB x SR_JB (scores_rows); ATTN_SFX
 * (the ISA suffix of every name) and ATTN_KERNELS_ISA. */
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

/* VW elements from element i of a row stored as KT (0 fp32, 1 half, 2 bfloat16; a constant after inlining), widened
 * to fp32 in registers: a KV cache's half keys and values are read at half the bytes and never copied. */
#define ATTN_LDKV(KT, base, i)                                                                                     \
    ((KT) == ATTN_F16    ? V_CVT_F16((const uint16_t *)(base) + (i))                                               \
     : (KT) == ATTN_BF16 ? V_CVT_BF16((const uint16_t *)(base) + (i))                                              \
                         : V_LOADU((const float *)(base) + (i)))

/* exp(x - m) with SLEEF's ISA-suffixed expf (DESIGN.md §2). */
#define ATTN_EXPM(x, m) V_EXP(V_SUB((x), (m)))
#define ATTN_CAT_(a, b) a##b
#define ATTN_CAT(a, b) ATTN_CAT_(a, b)
#define ATTN_STR_(a) #a
#define ATTN_STR(a) ATTN_STR_(a)
#define ATTN_FN(op) ATTN_CAT(attn_##op##_f32_, ATTN_SFX) /* attn_scores_f32_avx2, ... */

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

/* s[r0..r0+RB)[j0..j0+NV*VW) = q . kt over the whole head_dim, kt of type KT. PF: prefetch the same lines of the
 * next tile's panels (kn: a KV cache's half or bfloat16 panels read in place) as this micro-kernel reads them;
 * fp32 panels stream in order with the hardware prefetchers alone (software prefetch made D2 f32 13% slower,
 * while half panels without it were 11% slower). */
ATTN_INLINE void attn_sc_micro(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int NV,
                               const attn_dtype KT, const int PF)
{
    V acc[SC_RB > SCD_RB ? SC_RB : SCD_RB][SC_NV > SCD_NV ? SC_NV : SCD_NV];
    float *s = a->s + r0 * a->nkp + j0;
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = V_ZERO();
    const size_t esz = KT == ATTN_F32 ? sizeof(float) : sizeof(uint16_t), cl = 64 / (ATTN_PAD * esz);
    const float *q = a->q + r0 * a->d;
    size_t kt[SC_NV > SCD_NV ? SC_NV : SCD_NV]; /* element offsets of the NV panels' columns */
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
        const size_t j = j0 + (size_t)v * VW;
        kt[v] = j / ATTN_PAD * a->d * ATTN_PAD + j % ATTN_PAD;
    }
    const int pf = PF && KT != ATTN_F32 && a->kn && j0 < a->knn;
    for (size_t c = 0; c < a->d; c++) {
        if (pf && c % cl == 0)
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                __builtin_prefetch((const char *)a->kn + (kt[v] + c * ATTN_PAD) * esz, 0, 2);
        V b[SC_NV > SCD_NV ? SC_NV : SCD_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = KT == ATTN_F32 ? V_LOAD((const float *)a->kt + kt[v] + c * ATTN_PAD)
                                  : ATTN_LDKV(KT, a->kt, kt[v] + c * ATTN_PAD);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const V x = V_BCAST(q[r * a->d + c]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_FMA(x, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(s + r * a->nkp + v * VW, acc[r][v]);
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

/* One row group against every slice of keys it sees: its queries stay in L1, each score is stored once, and the
 * K panels stream from L2 (a 64-key slice is 32 KiB at head_dim 128). The other order (64-dim passes over a K
 * slice kept in L1 while every row group went by, scores reloaded and summed) was P2 1-2%, P3 1% and AVX2 P2
 * 2-3% slower (best of 4 interleaved 1-thread runs). */
ATTN_INLINE void attn_sc_rows(const attn_tile_args *a, size_t r0, const int RB, const int NV, const attn_dtype KT,
                              const int PF)
{
    size_t j0 = 0;
    for (; j0 + NV * VW <= a->nkp; j0 += NV * VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + NV * VW, RB))
            attn_sc_micro(a, r0, j0, RB, NV, KT, PF);
    for (; j0 < a->nkp; j0 += VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + VW, RB))
            attn_sc_micro(a, r0, j0, RB, 1, KT, PF);
}

/* Every row group against the tile; the first group issues the next tile's prefetches (decode: the only one,
 * with one panel per micro-kernel). */
ATTN_INLINE void attn_sc_all(const attn_tile_args *a, const attn_dtype KT)
{
    if (a->rows <= SCD_RB) {
#define ATTN_SCD(RB) attn_sc_rows(a, 0, RB, SCD_NV, KT, 1)
        ATTN_TAIL(a->rows, SCD_RB + 1, ATTN_SCD)
#undef ATTN_SCD
        return;
    }
    size_t r0 = 0;
    for (; r0 + SC_RB <= a->rows; r0 += SC_RB)
        if (r0 == 0)
            attn_sc_rows(a, r0, SC_RB, SC_NV, KT, 1);
        else
            attn_sc_rows(a, r0, SC_RB, SC_NV, KT, 0);
#define ATTN_SC_TAIL(RB) attn_sc_rows(a, r0, RB, SC_NV, KT, r0 == 0)
    ATTN_TAIL(a->rows - r0, SC_RB, ATTN_SC_TAIL)
#undef ATTN_SC_TAIL
}

static ATTN_DECL_SCORES(ATTN_FN(scores))
{
    if (a->kdt == ATTN_F16)
        attn_sc_all(a, ATTN_F16);
    else if (a->kdt == ATTN_BF16)
        attn_sc_all(a, ATTN_BF16);
    else
        attn_sc_all(a, ATTN_F32);
}

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

/* s[r0..r0+RB)[j0..j0+JB) = q . k, one key row at a time, front to back: the hardware prefetchers follow each row's
 * lines in order (reading fp32 rows interleaved, a line of each in turn, made D1 f32 40% slower). PF: prefetch the
 * next tile's key rows j0..j0+JB (the first row group of a tile does), one cache line per line read here. */
ATTN_INLINE void attn_sr_micro(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int JB,
                               const int PF)
{
    const float *kr = a->kr;
    const size_t kn = PF && a->kn && j0 < a->knn ? a->knn - j0 : 0; /* next-tile rows from j0 on that exist */
    const float *knp = kn ? (const float *)a->kn + j0 * a->ldk : NULL;
    const int NA = (RB * JB + VW - 1) / VW * VW; /* accumulators, zero-padded to whole reductions */
    V acc[SR_NACC];
#pragma GCC unroll 64
    for (int i = 0; i < NA; i++)
        acc[i] = V_ZERO();
#pragma GCC unroll 64
    for (int t = 0; t < JB; t++)
        for (size_t c = 0; c < a->d; c += VW) {
            const V k = V_LOADU(kr + (j0 + t) * a->ldk + c);
            if (c % (64 / sizeof(float)) == 0 && (size_t)t < kn)
                __builtin_prefetch(knp + (size_t)t * a->ldk + c, 0, 2);
#pragma GCC unroll 16
            for (int r = 0; r < RB; r++)
                acc[r * JB + t] = V_FMA(V_LOAD(a->q + (r0 + r) * a->d + c), k, acc[r * JB + t]);
        }
    attn_sr_store(a, r0, j0, RB, JB, acc);
}

/* Rows r0..r0+RB against every key of the tile, JB keys at a time, then the leftover keys one by one. */
ATTN_INLINE void attn_sr_rows(const attn_tile_args *a, size_t r0, const int RB, const int JB, const int PF)
{
    size_t j0 = 0;
    for (; j0 + (size_t)JB <= a->nk; j0 += (size_t)JB)
        attn_sr_micro(a, r0, j0, RB, JB, PF);
    for (; j0 < a->nk; j0++)
        attn_sr_micro(a, r0, j0, RB, 1, PF);
    for (int r = 0; r < RB; r++)
        memset(a->s + (r0 + r) * a->nkp + a->nk, 0, (a->nkp - a->nk) * sizeof(float));
}

/* Up to SR_RB rows (a GQA group at one position: the usual decode block) in one pass over the keys, taking more
 * keys per step when there are fewer rows; more rows go SR_RB at a time, the first group issuing the prefetches. */
static ATTN_DECL_SCORES(ATTN_FN(scores_rows))
{
    if (a->rows <= SR_RB) {
#define ATTN_SR_ONE(RB) attn_sr_rows(a, 0, RB, SR_JBF(RB), 1)
        if (a->rows == SR_RB)
            ATTN_SR_ONE(SR_RB);
        else
            ATTN_TAIL(a->rows, SR_RB, ATTN_SR_ONE)
#undef ATTN_SR_ONE
        return;
    }
    size_t r0 = 0;
    for (; r0 + SR_RB <= a->rows; r0 += SR_RB)
        if (r0 == 0)
            attn_sr_rows(a, r0, SR_RB, SR_JB, 1);
        else
            attn_sr_rows(a, r0, SR_RB, SR_JB, 0);
#define ATTN_SR_TAIL(RB) attn_sr_rows(a, r0, RB, SR_JB, 0)
    ATTN_TAIL(a->rows - r0, SR_RB, ATTN_SR_TAIL)
#undef ATTN_SR_TAIL
}

static ATTN_DECL_SOFTMAX(ATTN_FN(softmax))
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
        }
        else
            for (size_t j0 = lo / VW * VW; j0 < hi; j0 += VW) {
                const M in = V_INRANGE(V_ADD(iota, V_BCAST((float)j0)), vlo, vhi);
                vm = V_MAX(vm, V_SEL(in, V_LOAD(s + j0), ninf));
            }
        const float mold = a->m[r], mt = V_HMAX(vm), mnew = mt > mold ? mt : mold;
        const float alpha = mold == mnew ? 1.0f : expf(mold - mnew); /* 0 on the first tile (mold = -inf) */
        const V vmn = V_BCAST(mnew);
        V sum = V_ZERO();
        if (full) {
            /* Two exps per step: each is a long dependency chain, and two independent ones overlap better. */
            V sum2 = V_ZERO();
            size_t j0 = 0;
            for (; j0 + 2 * VW <= a->nkp; j0 += 2 * VW) {
                const V p = ATTN_EXPM(V_LOAD(s + j0), vmn), p2 = ATTN_EXPM(V_LOAD(s + j0 + VW), vmn);
                V_STORE(s + j0, p);
                V_STORE(s + j0 + VW, p2);
                sum = V_ADD(sum, p);
                sum2 = V_ADD(sum2, p2);
            }
            for (; j0 < a->nkp; j0 += VW) {
                const V p = ATTN_EXPM(V_LOAD(s + j0), vmn);
                V_STORE(s + j0, p);
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
                V_STORE(s + j0, p);
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

/* o[r0..r0+RB)[c0..c0+NV*VW) += sum_{j in [jlo, jhi)} s[r][j] * v[j] */
ATTN_INLINE void attn_pv_micro(const attn_tile_args *a, size_t r0, size_t c0, size_t jlo, size_t jhi, const int RB,
                               const int NV, const attn_dtype KT, const int PF)
{
    V acc[PV_RBMAX][PV_NVMAX];
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = V_LOAD(a->o + (r0 + r) * a->dvp + c0 + v * VW);
    const float *p = a->s + r0 * a->nkp;
    /* PF (decode-sized blocks): each full row group and column strip prefetches its share of the lines of the next
     * tile's value row j as it reads value row j, so the prefetches spread over the whole P.V. fp32 rows have each
     * line issued twice, by two different calls: fp32 decode is bound by memory, the prefetches outrun it and some
     * are dropped, and the second issue re-requests those (D2 f32 50.7 -> 45.5 ns per key and KV head; f16 lost
     * 3% the same way). */
    const size_t esz = KT == ATTN_F32 ? sizeof(float) : sizeof(uint16_t), strip = (size_t)NV * VW;
    const char *pfp = NULL;
    size_t pfn = 0, pfj = jlo; /* pfn lines of next row j from pfp + j * ldv, for j < pfj */
    const size_t ngr = PF ? a->rows / (size_t)RB : 0, nst = PF ? a->dvp / strip : 0, nsl = ngr * nst;
    if (PF && a->vn && r0 + (size_t)RB <= ngr * RB && c0 + strip <= nst * strip) {
        const size_t sl = r0 / (size_t)RB * nst + c0 / strip, lines = (a->dvp * esz + 63) / 64;
        const size_t copies = KT == ATTN_F32 ? 2 : 1, from = lines * copies * sl / nsl;
        pfn = lines * copies * (sl + 1) / nsl - from;
        pfn = pfn > lines - from % lines ? lines - from % lines : pfn; /* within the row */
        pfp = (const char *)a->vn + from % lines * 64;
        pfj = a->knn < jhi ? a->knn : jhi;
    }
    const size_t pfs = a->ldv * esz;
    for (size_t j = jlo; j < jhi; j++) {
        /* Up to 4 lines straight-line, the rest (wide fp32 slices) in a loop: as a loop of pfn trips (2 lines
         * for f16 at head_dim 128), the prefetches cost P.V 1.7 cycles per key of 4 rows even with every line
         * in L2 (35.4 -> 32.7). */
        if (PF && j < pfj) {
            const char *pp = pfp + j * pfs;
#pragma GCC unroll 4
            for (size_t l = 0; l < 4; l++)
                if (l < pfn)
                    __builtin_prefetch(pp + l * 64, 0, 2);
            for (size_t l = 4; l < pfn; l++)
                __builtin_prefetch(pp + l * 64, 0, 2);
        }
        V b[PV_NVMAX];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = ATTN_LDKV(KT, a->vp, j * a->ldv + c0 + (size_t)v * VW);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const V x = V_BCAST(p[r * a->nkp + j]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_FMA(x, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(a->o + (r0 + r) * a->dvp + c0 + v * VW, acc[r][v]);
}

ATTN_INLINE void attn_pv_rows(const attn_tile_args *a, size_t r0, size_t jlo, size_t jhi, const int RB,
                              const int NV, const attn_dtype KT, const int PF)
{
    if (jlo >= jhi)
        return;
    size_t c0 = 0;
    for (; c0 + NV * VW <= a->dvp; c0 += NV * VW)
        attn_pv_micro(a, r0, c0, jlo, jhi, RB, NV, KT, PF);
    for (; c0 < a->dvp; c0 += VW)
        attn_pv_micro(a, r0, c0, jlo, jhi, RB, 1, KT, PF);
}

/* Rows r0..r0+RB: the keys every one of them sees go through the blocked kernel; each row's ragged ends (causal
 * and window boundaries) go row by row, so no row ever reads a key it cannot see. */
ATTN_INLINE void attn_pv_group(const attn_tile_args *a, size_t r0, const int RB, const int NV, const attn_dtype KT,
                               const int PF)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (int r = 1; r < RB; r++) {
        clo = a->lo[r0 + r] > clo ? a->lo[r0 + r] : clo;
        chi = a->hi[r0 + r] < chi ? a->hi[r0 + r] : chi;
    }
    if (clo >= chi) {
        for (int r = 0; r < RB; r++)
            attn_pv_rows(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)a->hi[r0 + r], 1, NV, KT, PF);
        return;
    }
    attn_pv_rows(a, r0, (size_t)clo, (size_t)chi, RB, NV, KT, PF);
    for (int r = 0; r < RB; r++) {
        attn_pv_rows(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)clo, 1, NV, KT, PF);
        attn_pv_rows(a, r0 + r, (size_t)chi, (size_t)a->hi[r0 + r], 1, NV, KT, PF);
    }
}

/* Every row group of RB rows, then the tail, over column chunks of NV vectors. */
ATTN_INLINE void attn_pv_blocked(const attn_tile_args *a, const int RB, const int NV, const attn_dtype KT,
                                 const int PF)
{
    size_t r0 = 0;
    for (; r0 + (size_t)RB <= a->rows; r0 += (size_t)RB)
        attn_pv_group(a, r0, RB, NV, KT, PF);
#define ATTN_PV_TAIL(R) attn_pv_group(a, r0, R, NV, KT, PF)
    ATTN_TAIL(a->rows - r0, RB, ATTN_PV_TAIL)
#undef ATTN_PV_TAIL
}

/* Decode-sized blocks: V comes from memory once per tile, so the row groups are wide (PVD_NV vectors cover a whole
 * row of up to 128 values) and each V row is read in one piece rather than in column strips. They are compiled as
 * functions of their own, so that their prefetch arithmetic leaves the code of the larger blocks as it was (inlined
 * together, prefill P2 ran 1.3% slower). */
#define ATTN_PV_FEW(T, KT)                                                                                         \
    static __attribute__((noinline)) void ATTN_FN(pv_few_##T)(const attn_tile_args *a)                             \
    {                                                                                                              \
        if (KT != ATTN_F32)                                                                                        \
            attn_pv_blocked(a, PVH_RB, PVH_NV, KT, 1);                                                             \
        else                                                                                                       \
            attn_pv_blocked(a, PVD_RB, PVD_NV, KT, 1);                                                             \
    }
ATTN_PV_FEW(f32, ATTN_F32)
ATTN_PV_FEW(f16, ATTN_F16)
ATTN_PV_FEW(bf16, ATTN_BF16)
#undef ATTN_PV_FEW

static ATTN_DECL_PV(ATTN_FN(pv))
{
    if (a->rows <= ATTN_FEW_ROWS && a->vdt == ATTN_F16)
        ATTN_FN(pv_few_f16)(a);
    else if (a->rows <= ATTN_FEW_ROWS && a->vdt == ATTN_BF16)
        ATTN_FN(pv_few_bf16)(a);
    else if (a->rows <= ATTN_FEW_ROWS)
        ATTN_FN(pv_few_f32)(a);
    else if (a->vdt == ATTN_F16)
        attn_pv_blocked(a, PV_RB, PV_NV, ATTN_F16, 0);
    else if (a->vdt == ATTN_BF16)
        attn_pv_blocked(a, PV_RB, PV_NV, ATTN_BF16, 0);
    else
        attn_pv_blocked(a, PV_RB, PV_NV, ATTN_F32, 0);
}

static ATTN_DECL_PROBS(ATTN_FN(probs))
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
        const V vm = V_BCAST(a->m[r]), vli = V_BCAST(1.0f / a->l[r]);
        for (size_t j0 = 0; j0 < a->nk; j0 += VW) {
            const M in = V_INRANGE(V_ADD(iota, V_BCAST((float)j0)), vlo, vhi);
            V_STORE(s + j0, V_SEL(in, V_MUL(ATTN_EXPM(V_LOAD(s + j0), vm), vli), V_ZERO()));
        }
        memcpy(dst + r * ld, s, a->nk * sizeof *dst);
    }
}

static ATTN_DECL_SCALE(ATTN_FN(scale))
{
    const V vf = V_BCAST(f);
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_MUL(V_LOADU(src + i), vf));
    for (; i < n; i++)
        dst[i] = src[i] * f;
}

static ATTN_DECL_CVT(ATTN_FN(cvt_f16))
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_CVT_F16(src + i));
    for (; i < n; i++)
        dst[i] = attn_f16_to_f32(src[i]);
}

static ATTN_DECL_CVT(ATTN_FN(cvt_bf16))
{
    size_t i = 0;
    for (; i + VW <= n; i += VW)
        V_STOREU(dst + i, V_CVT_BF16(src + i));
    for (; i < n; i++)
        dst[i] = attn_bf16_to_f32(src[i]);
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

static ATTN_DECL_GEMM(ATTN_FN(gemm))
{
    size_t j0 = 0;
    for (; j0 + SC_NV * VW <= g->ncp; j0 += SC_NV * VW)
        attn_gemm_cols(g, j0, SC_NV);
    for (; j0 < g->ncp; j0 += VW)
        attn_gemm_cols(g, j0, 1);
}

const attn_kernels ATTN_CAT(attn_kernels_, ATTN_SFX) = {
    .isa = ATTN_KERNELS_ISA,
    .table = "attn_kernels_" ATTN_STR(ATTN_SFX),
    .sc_rb = SC_RB, .sc_nv = SC_NV, .pv_rb = PV_RB, .pv_nv = PV_NV, .pvd_rb = PVD_RB, .pvd_nv = PVD_NV,
    .scores = ATTN_FN(scores),
    .scores_rows = ATTN_FN(scores_rows),
    .softmax = ATTN_FN(softmax),
    .pv = ATTN_FN(pv),
    .probs = ATTN_FN(probs),
    .scale = ATTN_FN(scale),
    .cvt_f16 = ATTN_FN(cvt_f16),
    .cvt_bf16 = ATTN_FN(cvt_bf16),
    .gemm = ATTN_FN(gemm),
};
