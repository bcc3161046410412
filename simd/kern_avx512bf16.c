/* The AVX512_BF16 kernel table: the AVX-512 table's slots (compiled once, in kern_avx512.c) for ATTN_MATH_F32, plus
 * vdpbf16ps kernels for ATTN_MATH_BF16, whose products of bfloat16 pairs run at twice the fp32 FMA rate on AMD
 * Zen 4/5. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma -mf16c; runs only after
 * attn_cpu_flags() saw AVX-512F and AVX512_BF16 (every such CPU also has BW and VL) and the OS saving ZMM state. */
#include "vec_avx512.h"
#include "block_avx512.h"
#define ATTN_SFX avx512bf16
#define ATTN_KERNELS_ISA ATTN_ISA_AVX512_BF16
#define ATTN_SLOTS_OF avx512
#include "kernels.h"
static ATTN_DECL_SCORES(attn_scores_bf16p_avx512bf16);
static ATTN_DECL_PV(attn_pv_bf16p_avx512bf16);
ATTN_DECL_PACK_BF16P(attn_pack_bf16p_avx512bf16);
ATTN_DECL_SCORES(attn_scores_rows_bf16p_avx512bf16);
ATTN_DECL_PV(attn_pv_rows_bf16p_avx512bf16);
#define ATTN_EXTRA_SLOTS                                                                                        \
    .scores_bf16p = attn_scores_bf16p_avx512bf16, .pv_bf16p = attn_pv_bf16p_avx512bf16,                        \
    .pack_bf16p = attn_pack_bf16p_avx512bf16, .scores_rows_bf16p = attn_scores_rows_bf16p_avx512bf16,           \
    .pv_rows_bf16p = attn_pv_rows_bf16p_avx512bf16,
#include "tile_simd.h"

#include "vec_avx512bf16.h"
#include "tile_bf16p.h"


/* K: each panel's word (c, key) gathered across its 16 key rows, one vector per pair of dimensions (the engine's
 * scalar strided copy is the fallback; docs/performance.md has its cost). V: two value rows interleaved into pair
 * words, 16 columns per step. */
ATTN_DECL_PACK_BF16P(attn_pack_bf16p_avx512bf16) /* external: the amx table packs with it too */
{
    const size_t d2 = (d + 1) / 2, nkp = (nk + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD;
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)ldk));
    for (size_t p = 0; p < nkp; p += ATTN_PAD) {
        uint32_t *dst = kt + p / ATTN_PAD * d2 * ATTN_PAD;
        const __mmask16 live = nk - p >= ATTN_PAD ? 0xffff : (__mmask16)((1u << (nk - p)) - 1);
        const uint16_t *src = k + p * ldk;
        for (size_t c = 0; c < d / 2; c++) /* word c of rows p.., 2-byte aligned: gather by 2-byte scale */
            _mm512_store_si512(dst + c * ATTN_PAD,
                               _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, rows, src + 2 * c, 2));
        if (d % 2) /* the last dimension alone, paired with a zero (a 4-byte gather could read past the tensor) */
            for (size_t t = 0; t < ATTN_PAD; t++)
                dst[d / 2 * ATTN_PAD + t] = p + t < nk ? src[t * ldk + d - 1] : 0;
    }
    if (!vp)
        return;
    const size_t n2 = (nk + 1) / 2;
    for (size_t j2 = 0; j2 < n2; j2++) {
        const uint16_t *v0 = v + 2 * j2 * ldv, *v1 = 2 * j2 + 1 < nk ? v0 + ldv : NULL;
        uint32_t *dst = vp + j2 * dvp;
        for (size_t c = 0; c < dvp; c += VW) {
            const __mmask16 m = c + VW <= dv ? 0xffff : c < dv ? (__mmask16)((1u << (dv - c)) - 1) : 0;
            const __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, v0 + c));
            const __m512i hi = v1 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, v1 + c)) : _mm512_setzero_si512();
            _mm512_store_si512(dst + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
        }
    }
}

/* ---- decode: bfloat16 rows read in place (scores_rows_bf16p, pv_rows_bf16p) ---- */

/* s[r0..r0+RB)[j0..j0+JB) = q . k over d/2 pair words, one key row at a time (as scores_rows: the hardware
 * prefetchers follow each row in order), unscaled. PF: prefetch the next tile's rows j0.. as these are read. */
ATTN_INLINE void attn_srp_micro(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int JB,
                                const int PF)
{
    const size_t d2 = a->d / 2, kn = PF && a->kn && j0 < a->knn ? a->knn - j0 : 0;
    const uint16_t *knp = kn ? (const uint16_t *)a->kn + j0 * a->ldk : NULL;
    const uint32_t *q = (const uint32_t *)(const void *)a->q + r0 * d2;
    const int NA = (RB * JB + VW - 1) / VW * VW;
    V acc[SR_NACC];
#pragma GCC unroll 64
    for (int i = 0; i < NA; i++)
        acc[i] = V_ZERO();
#pragma GCC unroll 64
    for (int t = 0; t < JB; t++) {
        const uint16_t *k = (const uint16_t *)a->kr + (j0 + (size_t)t) * a->ldk;
        for (size_t c = 0; c < d2; c += VW) {
            const __m512i kv = _mm512_loadu_si512(k + 2 * c);
            if ((size_t)t < kn)
                __builtin_prefetch(knp + (size_t)t * a->ldk + 2 * c, 0, 2);
#pragma GCC unroll 16
            for (int r = 0; r < RB; r++)
                acc[r * JB + t] = V_DP(acc[r * JB + t], _mm512_loadu_si512(q + (size_t)r * d2 + c), kv);
        }
    }
    attn_sr_store(a, r0, j0, RB, JB, acc);
}

ATTN_INLINE void attn_srp_rows(const attn_tile_args *a, size_t r0, const int RB, const int JB, const int PF)
{
    size_t j0 = 0;
    for (; j0 + (size_t)JB <= a->nk; j0 += (size_t)JB)
        attn_srp_micro(a, r0, j0, RB, JB, PF);
    for (; j0 < a->nk; j0++)
        attn_srp_micro(a, r0, j0, RB, 1, PF);
    const V sc = V_BCAST(a->scale);
    for (int r = 0; r < RB; r++) {
        float *s = a->s + (r0 + (size_t)r) * a->nkp;
        for (size_t j = 0; j < a->nkp; j += VW)
            V_STORE(s + j, j + VW <= a->nk ? V_MUL(V_LOAD(s + j), sc)
                                           : _mm512_maskz_mul_ps(j < a->nk ? (M)((1u << (a->nk - j)) - 1) : 0,
                                                                 V_LOAD(s + j), sc));
    }
}

/* external: the amx table takes these too */
ATTN_DECL_SCORES(attn_scores_rows_bf16p_avx512bf16)
{
    if (a->rows <= SR_RB) {
#define ATTN_SRP_ONE(RB) attn_srp_rows(a, 0, RB, SR_JBF(RB), 1)
        if (a->rows == SR_RB)
            ATTN_SRP_ONE(SR_RB);
        else
            ATTN_TAIL(a->rows, SR_RB, ATTN_SRP_ONE)
#undef ATTN_SRP_ONE
        return;
    }
    size_t r0 = 0;
    for (; r0 + SR_RB <= a->rows; r0 += SR_RB)
        attn_srp_rows(a, r0, SR_RB, SR_JB, r0 == 0);
#define ATTN_SRP_TAIL(RB) attn_srp_rows(a, r0, RB, SR_JB, 0)
    ATTN_TAIL(a->rows - r0, SR_RB, ATTN_SRP_TAIL)
#undef ATTN_SRP_TAIL
}

/* P.V from value rows in place: keys 2 j2 and 2 j2 + 1 become pair words by interleaving their rows' 16-bit
 * elements (vpunpcklwd / vpunpckhwd), which leaves columns in the order 0-3, 8-11, .. (lo) and 4-7, 12-15, ..
 * (hi) of each 32; the accumulators keep that order and are permuted once from o and back. */
#define PVR_RB 4
static const int32_t attn_pvr_perm[4][16] = {
    {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},     /* o columns 0..31 -> lo order */
    {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},   /* -> hi order */
    {0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23},       /* lo, hi -> o columns 0..15 */
    {8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31}, /* -> o columns 16..31 */
};

/* o[r0..r0+RB)[c0..c0+32 NC) += sum over key pairs [j2lo, j2hi) of p pair . v pair. PF: prefetch the next tile's
 * value rows' same columns. */
ATTN_INLINE void attn_pvr_micro(const attn_tile_args *a, size_t r0, size_t c0, size_t j2lo, size_t j2hi,
                                const int RB, const int NC, const int PF)
{
    const __m512i ilo = _mm512_loadu_si512(attn_pvr_perm[0]), ihi = _mm512_loadu_si512(attn_pvr_perm[1]);
    V lo[PVR_RB][2], hi[PVR_RB][2];
#pragma GCC unroll 16
    for (int r = 0; r < PVR_RB; r++)
#pragma GCC unroll 2
        for (int n = 0; n < 2; n++) {
            if (r >= RB || n >= NC) {
                lo[r][n] = hi[r][n] = V_ZERO();
                continue;
            }
            const float *o = a->o + (r0 + (size_t)r) * a->dvp + c0 + 32 * (size_t)n;
            lo[r][n] = _mm512_permutex2var_ps(V_LOAD(o), ilo, V_LOAD(o + VW));
            hi[r][n] = _mm512_permutex2var_ps(V_LOAD(o), ihi, V_LOAD(o + VW));
        }
    const uint32_t *p = (const uint32_t *)(const void *)(a->s + r0 * a->nkp);
    const uint16_t *v = (const uint16_t *)a->vp + c0, *vn = PF && a->vn ? (const uint16_t *)a->vn + c0 : NULL;
    for (size_t j2 = j2lo; j2 < j2hi; j2++) {
        const uint16_t *v0 = v + 2 * j2 * a->ldv, *v1 = v0 + a->ldv;
        __m512i wlo[2], whi[2];
#pragma GCC unroll 2
        for (int n = 0; n < NC; n++) {
            const __m512i x0 = _mm512_loadu_si512(v0 + 32 * n), x1 = _mm512_loadu_si512(v1 + 32 * n);
            wlo[n] = _mm512_unpacklo_epi16(x0, x1);
            whi[n] = _mm512_unpackhi_epi16(x0, x1);
        }
        if (vn && 2 * j2 + 1 < a->knn) {
            __builtin_prefetch(vn + 2 * j2 * a->ldv, 0, 2);
            __builtin_prefetch(vn + (2 * j2 + 1) * a->ldv, 0, 2);
            if (NC == 2) {
                __builtin_prefetch(vn + 2 * j2 * a->ldv + 32, 0, 2);
                __builtin_prefetch(vn + (2 * j2 + 1) * a->ldv + 32, 0, 2);
            }
        }
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const W x = W_BCAST(p[(size_t)r * a->nkp + j2]);
#pragma GCC unroll 2
            for (int n = 0; n < NC; n++) {
                lo[r][n] = V_DP(lo[r][n], x, wlo[n]);
                hi[r][n] = V_DP(hi[r][n], x, whi[n]);
            }
        }
    }
    const __m512i i0 = _mm512_loadu_si512(attn_pvr_perm[2]), i1 = _mm512_loadu_si512(attn_pvr_perm[3]);
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 2
        for (int n = 0; n < NC; n++) {
            float *o = a->o + (r0 + (size_t)r) * a->dvp + c0 + 32 * (size_t)n;
            V_STORE(o, _mm512_permutex2var_ps(lo[r][n], i0, hi[r][n]));
            V_STORE(o + VW, _mm512_permutex2var_ps(lo[r][n], i1, hi[r][n]));
        }
}

ATTN_INLINE void attn_pvr_pairs(const attn_tile_args *a, size_t r0, size_t j2lo, size_t j2hi, const int RB,
                                const int PF)
{
    if (j2lo >= j2hi)
        return;
    size_t c0 = 0;
    for (; c0 + 64 <= a->dvp; c0 += 64)
        attn_pvr_micro(a, r0, c0, j2lo, j2hi, RB, 2, PF);
    if (c0 < a->dvp)
        attn_pvr_micro(a, r0, c0, j2lo, j2hi, RB, 1, PF);
}

/* o[r] += p[r][j] v[j] for one key j (a row's lone key at a pair's edge): exact bfloat16 products in fp32. */
static void attn_pvr_one(const attn_tile_args *a, size_t r, size_t j)
{
    const uint32_t w = ((const uint32_t *)(const void *)(a->s + r * a->nkp))[j / 2];
    const V x = V_BCAST(attn_bf16_to_f32((uint16_t)(j % 2 ? w >> 16 : w)));
    const uint16_t *v = (const uint16_t *)a->vp + j * a->ldv;
    float *o = a->o + r * a->dvp;
    for (size_t c = 0; c < a->dvp; c += VW)
        V_STORE(o + c, V_FMA(x, V_CVT_BF16(v + c), V_LOAD(o + c)));
}

/* Rows r0..r0+RB: the key pairs all of them see in the blocked kernel, each row's other keys (a lone key at either
 * end, or whole pairs outside the common range) one at a time, so no row reads a key it cannot see. */
ATTN_INLINE void attn_pvr_group(const attn_tile_args *a, size_t r0, const int RB, const int PF)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (int r = 1; r < RB; r++) {
        clo = a->lo[r0 + r] > clo ? a->lo[r0 + r] : clo;
        chi = a->hi[r0 + r] < chi ? a->hi[r0 + r] : chi;
    }
    clo += clo % 2;
    chi -= chi % 2;
    if (clo < chi)
        attn_pvr_pairs(a, r0, (size_t)clo / 2, (size_t)chi / 2, RB, PF);
    else
        clo = chi = a->hi[r0]; /* no common pairs: every visible key of every row goes one by one */
    for (int r = 0; r < RB; r++) {
        for (size_t j = (size_t)a->lo[r0 + r]; j < (size_t)a->hi[r0 + r] && j < (size_t)clo; j++)
            attn_pvr_one(a, r0 + r, j);
        for (size_t j = (size_t)(chi > a->lo[r0 + r] ? chi : a->lo[r0 + r]); j < (size_t)a->hi[r0 + r]; j++)
            attn_pvr_one(a, r0 + r, j);
    }
}

ATTN_DECL_PV(attn_pv_rows_bf16p_avx512bf16)
{
    attn_pvp_pack_p(a);
    size_t r0 = 0;
    for (; r0 + PVR_RB <= a->rows; r0 += PVR_RB)
        attn_pvr_group(a, r0, PVR_RB, r0 == 0);
#define ATTN_PVR_TAIL(RB) attn_pvr_group(a, r0, RB, r0 == 0)
    ATTN_TAIL(a->rows - r0, PVR_RB, ATTN_PVR_TAIL)
#undef ATTN_PVR_TAIL
}
