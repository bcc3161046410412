/* AVX2 + FMA kernel set. Compiled with -mavx2 -mfma -mf16c; runs only after attn_cpu_flags() saw AVX2, FMA, F16C
 * and the OS saving YMM state. */
#include <immintrin.h>
#include <sleef.h>

static inline float attn_hmax_avx2(__m256 x)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float attn_hsum_avx2(__m256 x)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Lane i of the result = the sum of the 8 lanes of a[i]. */
static inline __m256 attn_hsums_avx2(const __m256 *a)
{
    __m256 t[4], u[2];
#pragma GCC unroll 8
    for (int i = 0; i < 4; i++) /* per 128-bit lane: a[2i], a[2i+1], a[2i], a[2i+1] */
        t[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
#pragma GCC unroll 8
    for (int i = 0; i < 2; i++) /* per 128-bit lane: a[4i] .. a[4i+3] */
        u[i] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(u[0], u[1], 0x20), _mm256_permute2f128_ps(u[0], u[1], 0x31));
}

#define V __m256
#define VW 8
#define M __m256
#define V_ZERO() _mm256_setzero_ps()
#define V_LOAD(p) _mm256_load_ps(p)
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STORE(p, x) _mm256_store_ps((p), (x))
#define V_STOREU(p, x) _mm256_storeu_ps((p), (x))
#define V_BCAST(f) _mm256_set1_ps(f)
#define V_FMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define V_MUL(a, b) _mm256_mul_ps((a), (b))
#define V_ADD(a, b) _mm256_add_ps((a), (b))
#define V_SUB(a, b) _mm256_sub_ps((a), (b))
#define V_MAX(a, b) _mm256_max_ps((a), (b))
#define V_EXP(x) Sleef_expf8_u10avx2(x)
#define V_DIV(a, b) _mm256_div_ps((a), (b))
#define V_HMAX(x) attn_hmax_avx2(x)
#define V_HSUM(x) attn_hsum_avx2(x)
#define V_HSUMS(p) attn_hsums_avx2(p)
#define V_IOTA() _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7)
#define V_INRANGE(idx, lo, hi) \
    _mm256_and_ps(_mm256_cmp_ps((idx), (lo), _CMP_GE_OQ), _mm256_cmp_ps((idx), (hi), _CMP_LT_OQ))
#define V_SEL(m, a, b) _mm256_blendv_ps((b), (a), (m))

#define V_CVT_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)))
#define V_CVT_I8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(p))))
#define V_CVT_BF16(p) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(p))), 16))

/* 3 rows x 4 ymm = 12 chains (two FMA pipes x latency 4 needs 8), 16 registers with the 4 loaded vectors. Without
 * AVX-512's embedded broadcast every broadcast is an instruction of its own, and the AVX2 path is bound by how many
 * instructions Zen 4 issues per FMA: 3 broadcasts + 4 loads per 12 FMAs beat 6 x 2 (6 + 2): P2 4%, P3 4%, P1 1%
 * faster (1 thread, interleaved runs). */
#define SC_RB 3
#define SC_NV 4
#define PV_RB 3
#define PV_NV 4
#define PVD_RB 4 /* decode P.V: 4 rows x 2 ymm, so each V vector is loaded (and a half/bfloat16 one widened) once
                  * for a GQA group of 4 rows. 1 x 8 loaded each V row once per row: P.V per key of 4 rows from L2,
                  * f16 48 -> 38 cycles, bf16 111 -> 40 (bfloat16's widening is two shuffle-port instructions that
                  * compete with the FMAs); D2 f32 57.3 -> 44.6 ns per key and KV head, D1 f32 48.6 -> 36.4 */
#define PVD_NV 2
#define SR_RB 4 /* decode scores: 4 query rows x 2 key rows = 8 accumulators, one V_HSUMS */
#define SR_JB 2
/* Round to bfloat16, kept as fp32: add 0x7fff plus the lowest kept bit, clear the low half; a NaN is quieted
 * instead (adding could carry it into infinity). */
static inline __m256 attn_rbf16_avx2(__m256 x)
{
    const __m256i u = _mm256_castps_si256(x), hi = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), odd), hi);
    const __m256i qnan = _mm256_and_si256(_mm256_or_si256(u, _mm256_set1_epi32(0x400000)), hi);
    return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(qnan), _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}
#define V_RBF16(x) attn_rbf16_avx2(x)
/* Stores: IEEE half by F16C (round to nearest even); the upper halves of values V_RBF16 rounded. */
#define V_STORE_F16(p, x) _mm_storeu_si128((__m128i *)(void *)(p), _mm256_cvtps_ph((x), _MM_FROUND_TO_NEAREST_INT))
#define V_STORE_BF16(p, x)                                                                                    \
    _mm_storeu_si128((__m128i *)(void *)(p),                                                                  \
                     _mm_packus_epi32(_mm_srli_epi32(_mm256_castsi256_si128(_mm256_castps_si256(x)), 16),       \
                                      _mm_srli_epi32(_mm256_extracti128_si256(_mm256_castps_si256(x), 1), 16)))
#define ATTN_SFX avx2
#define ATTN_KERNELS_ISA ATTN_ISA_AVX2

#include "tile_simd.h"
