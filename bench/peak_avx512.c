/* attn-bench: AVX-512F FMA peak loop (16 zmm chains). Compile with -mavx512f -mavx2 -mfma; the bench calls it
 * only after attn_isa_supported(ATTN_ISA_AVX512) said this CPU and OS run it. */
#include "bench.h"

#if defined(__x86_64__) || defined(__i386__)
#if !defined(__AVX512F__) || !defined(__FMA__)
#error "bench/peak_avx512.c needs -mavx512f -mavx2 -mfma"
#endif
#include <immintrin.h>

#define STEP(c) c = _mm512_fmadd_ps(c, m, a)

double attn_bench_fma_avx512(uint64_t iters, float mul, float add, float *sink)
{
    const __m512 m = _mm512_set1_ps(mul), a = _mm512_set1_ps(add);
    const float s = *sink;
    __m512 c0 = _mm512_set1_ps(s + 0.01f), c1 = _mm512_set1_ps(s + 0.02f);
    __m512 c2 = _mm512_set1_ps(s + 0.03f), c3 = _mm512_set1_ps(s + 0.04f);
    __m512 c4 = _mm512_set1_ps(s + 0.05f), c5 = _mm512_set1_ps(s + 0.06f);
    __m512 c6 = _mm512_set1_ps(s + 0.07f), c7 = _mm512_set1_ps(s + 0.08f);
    __m512 c8 = _mm512_set1_ps(s + 0.09f), c9 = _mm512_set1_ps(s + 0.10f);
    __m512 c10 = _mm512_set1_ps(s + 0.11f), c11 = _mm512_set1_ps(s + 0.12f);
    __m512 c12 = _mm512_set1_ps(s + 0.13f), c13 = _mm512_set1_ps(s + 0.14f);
    __m512 c14 = _mm512_set1_ps(s + 0.15f), c15 = _mm512_set1_ps(s + 0.16f);
    for (uint64_t i = 0; i < iters; i++) {
        STEP(c0); STEP(c1); STEP(c2); STEP(c3); STEP(c4); STEP(c5); STEP(c6); STEP(c7);
        STEP(c8); STEP(c9); STEP(c10); STEP(c11); STEP(c12); STEP(c13); STEP(c14); STEP(c15);
    }
    c0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                       _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    c8 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                       _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15)));
    *sink = _mm512_reduce_add_ps(_mm512_add_ps(c0, c8));
    return (double)iters * ATTN_BENCH_AVX512_CHAINS * 16 * 2;
}
#else
typedef int attn_bench_peak_avx512_empty; /* not x86: nothing to build (ISO C wants a declaration) */
#endif
