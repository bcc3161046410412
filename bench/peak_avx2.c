/* attn-bench: AVX2+FMA peak loop (12 ymm chains). Compile with -mavx2 -mfma; the bench calls it only after
 * attn_isa_supported(ATTN_ISA_AVX2) said this CPU and OS run it. */
#include "bench.h"

#if defined(__x86_64__) || defined(__i386__)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "bench/peak_avx2.c needs -mavx2 -mfma"
#endif
#include <immintrin.h>

#define STEP(c) c = _mm256_fmadd_ps(c, m, a)

double attn_bench_fma_avx2(uint64_t iters, float mul, float add, float *sink)
{
    const __m256 m = _mm256_set1_ps(mul), a = _mm256_set1_ps(add);
    const float s = *sink;
    __m256 c0 = _mm256_set1_ps(s + 0.01f), c1 = _mm256_set1_ps(s + 0.02f);
    __m256 c2 = _mm256_set1_ps(s + 0.03f), c3 = _mm256_set1_ps(s + 0.04f);
    __m256 c4 = _mm256_set1_ps(s + 0.05f), c5 = _mm256_set1_ps(s + 0.06f);
    __m256 c6 = _mm256_set1_ps(s + 0.07f), c7 = _mm256_set1_ps(s + 0.08f);
    __m256 c8 = _mm256_set1_ps(s + 0.09f), c9 = _mm256_set1_ps(s + 0.10f);
    __m256 c10 = _mm256_set1_ps(s + 0.11f), c11 = _mm256_set1_ps(s + 0.12f);
    for (uint64_t i = 0; i < iters; i++) {
        STEP(c0); STEP(c1); STEP(c2); STEP(c3); STEP(c4); STEP(c5);
        STEP(c6); STEP(c7); STEP(c8); STEP(c9); STEP(c10); STEP(c11);
    }
    c0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                       _mm256_add_ps(c4, c5));
    c6 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c6, c7), _mm256_add_ps(c8, c9)),
                       _mm256_add_ps(c10, c11));
    c0 = _mm256_add_ps(c0, c6);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(c0), _mm256_extractf128_ps(c0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    *sink = _mm_cvtss_f32(h);
    return (double)iters * ATTN_BENCH_AVX2_CHAINS * 8 * 2;
}
#else
typedef int attn_bench_peak_avx2_empty; /* not x86: nothing to build (ISO C wants a declaration) */
#endif
