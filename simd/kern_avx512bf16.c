/* The AVX512_BF16 kernel table: the AVX-512 kernels (same 6x4 blocking) for ATTN_MATH_F32, plus vdpbf16ps
 * kernels for ATTN_MATH_BF16, whose products of bfloat16 pairs run at twice the fp32 FMA rate on AMD Zen 4/5.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma -mf16c; runs only after attn_cpu_flags()
 * saw AVX-512F and AVX512_BF16 (every such CPU also has BW and VL) and the OS saving ZMM state. */
#include "vec_avx512.h"
#define SC_RB 6
#define SC_NV 4
#define PV_RB 6
#define PV_NV 4
#define PVD_RB 2
#define PVD_NV 8
#define PVH_RB 4
#define PVH_NV 4
#define SR_RB 4
#define SR_JB 4
#define ATTN_SFX avx512bf16
#define ATTN_KERNELS_ISA ATTN_ISA_AVX512_BF16
#include "kernels.h"
static ATTN_DECL_SCORES(attn_scores_bf16p_avx512bf16);
static ATTN_DECL_PV(attn_pv_bf16p_avx512bf16);
static ATTN_DECL_PACK_BF16P(attn_pack_bf16p_avx512bf16);
#define ATTN_BF16P_SLOTS                                                                                        \
    .scores_bf16p = attn_scores_bf16p_avx512bf16, .pv_bf16p = attn_pv_bf16p_avx512bf16,                        \
    .pack_bf16p = attn_pack_bf16p_avx512bf16,
#include "tile_simd.h"

/* ---- ATTN_MATH_BF16 on vdpbf16ps: each instruction multiplies 16 pairs of bfloat16 and adds both products to 16
 * fp32 sums, so one instruction does the work of two fp32 FMAs. Pairs run along the reduction: Q.K^T pairs
 * adjacent dimensions, P.V adjacent keys. Layouts (kernels.h, scores_bf16p / pv_bf16p): q rows of d2 = ceil(d/2)
 * pair words; K panels of 16 keys, word (c2, key) = (k[2 c2], k[2 c2 + 1]); V word (j2, col) = (v[2 j2][col],
 * v[2 j2 + 1][col]). The lower half of a word is the even element. */

static inline __m512 attn_dp(__m512 acc, __m512i a, __m512i b)
{
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
}

/* s[r0..r0+RB)[j0..j0+16 NV) = scale * (q . k) over d2 pair words. */
ATTN_INLINE void attn_sc_bf16p_micro(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int NV)
{
    __m512 acc[SC_RB][SC_NV] = {{_mm512_setzero_ps()}}; /* whole, or GCC 12 warns of lanes NV leaves unused */
    const size_t d2 = (a->d + 1) / 2;
    const uint32_t *q = (const uint32_t *)(const void *)a->q + r0 * d2;
    const uint32_t *k = (const uint32_t *)a->kt + j0 / ATTN_PAD * d2 * ATTN_PAD;
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (size_t c = 0; c < d2; c++) {
        __m512i b[SC_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_load_si512(k + ((size_t)v * d2 + c) * ATTN_PAD);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const __m512i x = _mm512_set1_epi32((int)q[r * d2 + c]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = attn_dp(acc[r][v], x, b[v]);
        }
    }
    const __m512 sc = _mm512_set1_ps(a->scale);
    float *s = a->s + r0 * a->nkp + j0;
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            _mm512_store_ps(s + r * a->nkp + v * VW, _mm512_mul_ps(acc[r][v], sc));
}

ATTN_INLINE void attn_sc_bf16p_rows(const attn_tile_args *a, size_t r0, const int RB)
{
    size_t j0 = 0;
    for (; j0 + SC_NV * VW <= a->nkp; j0 += SC_NV * VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + SC_NV * VW, RB))
            attn_sc_bf16p_micro(a, r0, j0, RB, SC_NV);
    for (; j0 < a->nkp; j0 += VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + VW, RB))
            attn_sc_bf16p_micro(a, r0, j0, RB, 1);
}

static ATTN_DECL_SCORES(attn_scores_bf16p_avx512bf16)
{
    size_t r0 = 0;
    for (; r0 + SC_RB <= a->rows; r0 += SC_RB)
        attn_sc_bf16p_rows(a, r0, SC_RB);
#define ATTN_SCP_TAIL(RB) attn_sc_bf16p_rows(a, r0, RB)
    ATTN_TAIL(a->rows - r0, SC_RB, ATTN_SCP_TAIL)
#undef ATTN_SCP_TAIL
}

/* o[r0..r0+RB)[c0..c0+16 NV) += sum over key pairs [j2lo, j2hi) of p pair . v pair. p: row r's pair words at
 * (uint32_t *)(s + r * nkp). */
ATTN_INLINE void attn_pv_bf16p_micro(const attn_tile_args *a, size_t r0, size_t c0, size_t j2lo, size_t j2hi,
                                       const int RB, const int NV)
{
    __m512 acc[PV_RB][PV_NV] = {{_mm512_setzero_ps()}};
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_load_ps(a->o + (r0 + r) * a->dvp + c0 + v * VW);
    const uint32_t *p = (const uint32_t *)(const void *)(a->s + r0 * a->nkp);
    const uint32_t *vp = (const uint32_t *)a->vp + c0;
    for (size_t j2 = j2lo; j2 < j2hi; j2++) {
        __m512i b[PV_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = _mm512_load_si512(vp + j2 * a->ldv + (size_t)v * VW);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const __m512i x = _mm512_set1_epi32((int)p[r * a->nkp + j2]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = attn_dp(acc[r][v], x, b[v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            _mm512_store_ps(a->o + (r0 + r) * a->dvp + c0 + v * VW, acc[r][v]);
}

ATTN_INLINE void attn_pv_bf16p_pairs(const attn_tile_args *a, size_t r0, size_t j2lo, size_t j2hi, const int RB)
{
    if (j2lo >= j2hi)
        return;
    size_t c0 = 0;
    for (; c0 + PV_NV * VW <= a->dvp; c0 += PV_NV * VW)
        attn_pv_bf16p_micro(a, r0, c0, j2lo, j2hi, RB, PV_NV);
    for (; c0 < a->dvp; c0 += VW)
        attn_pv_bf16p_micro(a, r0, c0, j2lo, j2hi, RB, 1);
}

/* o[r] += p[r][j] v[j] for one key j whose pair partner row r cannot see: an fp32 FMA of the two bfloat16 values,
 * the same product vdpbf16ps forms. */
static void attn_pv_bf16p_one(const attn_tile_args *a, size_t r, size_t j)
{
    const uint32_t w = ((const uint32_t *)(const void *)(a->s + r * a->nkp))[j / 2];
    const __m512 x = _mm512_set1_ps(attn_bf16_to_f32((uint16_t)(j % 2 ? w >> 16 : w)));
    const uint32_t *vp = (const uint32_t *)a->vp + j / 2 * a->ldv;
    for (size_t c0 = 0; c0 < a->dvp; c0 += VW) {
        const __m512i pair = _mm512_load_si512(vp + c0);
        const __m512i h = j % 2 ? _mm512_and_si512(pair, _mm512_set1_epi32((int)0xffff0000u))
                                : _mm512_slli_epi32(pair, 16);
        float *o = a->o + r * a->dvp + c0;
        _mm512_store_ps(o, _mm512_fmadd_ps(x, _mm512_castsi512_ps(h), _mm512_load_ps(o)));
    }
}

/* Row r over keys [jlo, jhi): whole pairs through vdpbf16ps, a lone key at either end by itself, so the row never
 * reads a key it cannot see (a NaN or infinity there would reach it through a zero weight). */
static void attn_pv_bf16p_row(const attn_tile_args *a, size_t r, size_t jlo, size_t jhi)
{
    if (jlo >= jhi)
        return;
    if (jlo % 2)
        attn_pv_bf16p_one(a, r, jlo++);
    if (jhi > jlo && jhi % 2)
        attn_pv_bf16p_one(a, r, --jhi);
    attn_pv_bf16p_pairs(a, r, jlo / 2, jhi / 2, 1);
}

/* Rows r0..r0+RB: the key pairs every row sees through the blocked kernel, each row's ragged ends row by row. */
ATTN_INLINE void attn_pv_bf16p_group(const attn_tile_args *a, size_t r0, const int RB)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (int r = 1; r < RB; r++) {
        clo = a->lo[r0 + r] > clo ? a->lo[r0 + r] : clo;
        chi = a->hi[r0 + r] < chi ? a->hi[r0 + r] : chi;
    }
    clo += clo % 2; /* whole pairs only */
    chi -= chi % 2;
    if (clo >= chi) {
        for (int r = 0; r < RB; r++)
            attn_pv_bf16p_row(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)a->hi[r0 + r]);
        return;
    }
    attn_pv_bf16p_pairs(a, r0, (size_t)clo / 2, (size_t)chi / 2, RB);
    for (int r = 0; r < RB; r++) {
        attn_pv_bf16p_row(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)clo);
        attn_pv_bf16p_row(a, r0 + r, (size_t)chi, (size_t)a->hi[r0 + r]);
    }
}

/* The softmax left fp32 weights in s; each row becomes bfloat16 pair words in place (rounded to nearest even,
 * ATTN_MATH_BF16's rounding of P), then P.V. Words are written behind the floats still to be read. */
static ATTN_DECL_PV(attn_pv_bf16p_avx512bf16)
{
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        uint32_t *w = (uint32_t *)(void *)s;
        for (size_t j0 = 0; j0 < a->nkp; j0 += 2 * VW) {
            const __m512 lo = _mm512_load_ps(s + j0);
            const __m512 hi = j0 + VW < a->nkp ? _mm512_load_ps(s + j0 + VW) : _mm512_setzero_ps();
            const __m256i packed = (__m256i)_mm512_cvtneps_pbh(lo);
            const __m256i packed2 = (__m256i)_mm512_cvtneps_pbh(hi);
            _mm512_storeu_si512(w + j0 / 2, _mm512_inserti64x4(_mm512_castsi256_si512(packed), packed2, 1));
        }
    }
    size_t r0 = 0;
    for (; r0 + PV_RB <= a->rows; r0 += PV_RB)
        attn_pv_bf16p_group(a, r0, PV_RB);
#define ATTN_PVP_TAIL(RB) attn_pv_bf16p_group(a, r0, RB)
    ATTN_TAIL(a->rows - r0, PV_RB, ATTN_PVP_TAIL)
#undef ATTN_PVP_TAIL
}

/* K: each panel's word (c, key) gathered across its 16 key rows, one vector per pair of dimensions (the scalar
 * strided copy cost 5% of P3-bf16). V: two value rows interleaved into pair words, 16 columns per step. */
static ATTN_DECL_PACK_BF16P(attn_pack_bf16p_avx512bf16)
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
