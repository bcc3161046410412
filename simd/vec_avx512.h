/* The AVX-512F vector vocabulary of tile_simd.h, shared by the AVX-512 kernel files (each compiled with -mavx512f
 * -mavx2 -mfma -mf16c; they run only after attn_cpu_flags() saw AVX-512F and the OS saving opmask/ZMM state). */
#ifndef ATTN_VEC_AVX512_H
#define ATTN_VEC_AVX512_H
#include <immintrin.h>
#include <sleef.h>

/* Lane i of the result = the sum of the 16 lanes of a[i]: a transposing tree of 15 shuffle pairs and adds. */
static inline __m512 attn_hsums_avx512(const __m512 *a)
{
    __m512 t[8], u[4], w[2];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) /* per 128-bit lane: a[2i], a[2i+1], a[2i], a[2i+1] */
        t[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) /* per 128-bit lane: a[4i] .. a[4i+3] */
        u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
#pragma GCC unroll 8
    for (int i = 0; i < 2; i++) /* 128-bit lanes: a[8i..8i+3] twice, a[8i+4..8i+7] twice */
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

#define V __m512
#define VW 16
#define M __mmask16
#define V_ZERO() _mm512_setzero_ps()
#define V_LOAD(p) _mm512_load_ps(p)
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STORE(p, x) _mm512_store_ps((p), (x))
#define V_STOREU(p, x) _mm512_storeu_ps((p), (x))
#define V_BCAST(f) _mm512_set1_ps(f)
#define V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define V_MUL(a, b) _mm512_mul_ps((a), (b))
#define V_ADD(a, b) _mm512_add_ps((a), (b))
#define V_SUB(a, b) _mm512_sub_ps((a), (b))
#define V_MAX(a, b) _mm512_max_ps((a), (b))
#define V_EXP(x) Sleef_expf16_u10avx512f(x)
#define V_DIV(a, b) _mm512_div_ps((a), (b))
#define V_HMAX(x) _mm512_reduce_max_ps(x)
#define V_HSUM(x) _mm512_reduce_add_ps(x)
#define V_HSUMS(p) attn_hsums_avx512(p)
#define V_IOTA() _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define V_INRANGE(idx, lo, hi) \
    (M)(_mm512_cmp_ps_mask((idx), (lo), _CMP_GE_OQ) & _mm512_cmp_ps_mask((idx), (hi), _CMP_LT_OQ))
#define V_SEL(m, a, b) _mm512_mask_blend_ps((m), (b), (a))

/* Round to bfloat16, kept as fp32 (the integer form of vcvtneps2bf16, which plain AVX-512F lacks): add 0x7fff
 * plus the lowest kept bit, clear the low half; a NaN is quieted instead. */
static inline __m512 attn_rbf16_avx512(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x), hi = _mm512_set1_epi32((int)0xffff0000u);
    const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), hi);
    const __m512i qnan = _mm512_and_si512(_mm512_or_si512(u, _mm512_set1_epi32(0x400000)), hi);
    return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, qnan));
}
#define V_RBF16(x) attn_rbf16_avx512(x)
/* Stores: IEEE half (round to nearest even); the upper halves of values V_RBF16 rounded. */
#define V_STORE_F16(p, x) \
    _mm256_storeu_si256((__m256i *)(void *)(p), _mm512_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT))
#define V_STORE_BF16(p, x) \
    _mm256_storeu_si256((__m256i *)(void *)(p), _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(x), 16)))
#define V_CVT_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define V_CVT_I8(p) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))))
#define V_CVT_BF16(p) \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))

#endif
