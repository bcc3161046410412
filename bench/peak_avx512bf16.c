/* attn-bench: AVX512_BF16 dot-product peak loop (24 zmm vdpbf16ps chains). Compile with the avx512bf16 level's flags
 * (-mavx512f -mavx512bw -mavx512vl -mavx512bf16); the bench calls it only after
 * attn_isa_supported(ATTN_ISA_AVX512_BF16) said this CPU and OS run it. */
#include "bench.h"

#if defined(__x86_64__) || defined(__i386__)
#if !defined(__AVX512F__) || !defined(__AVX512BF16__)
#error "bench/peak_avx512bf16.c needs -mavx512f -mavx512bf16"
#endif
#include <immintrin.h>

/* acc += x[2i]*y[2i] + x[2i+1]*y[2i+1] in each of the 16 fp32 lanes: 32 bf16 products and 32 adds. */
#define STEP(c) c = _mm512_dpbf16_ps(c, x, y)

double attn_bench_dpbf16_avx512bf16(uint64_t iters, float mul, float add, float *sink)
{
    /* x = bf16(mul) everywhere, y = bf16(add), bf16(-add) alternating: each lane adds mul*add - mul*add = 0 (the
     * products of two bf16 numbers are exact in fp32), so the chains stay at their seeds: no growth, no infinity. */
    const __m512 yf = _mm512_set_ps(-add, add, -add, add, -add, add, -add, add, -add, add, -add, add, -add, add,
                                    -add, add);
    const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(mul), _mm512_set1_ps(mul));
    const __m512bh y = _mm512_cvtne2ps_pbh(yf, yf);
    const float s = *sink;
    __m512 c0 = _mm512_set1_ps(s + 0.01f), c1 = _mm512_set1_ps(s + 0.02f), c2 = _mm512_set1_ps(s + 0.03f);
    __m512 c3 = _mm512_set1_ps(s + 0.04f), c4 = _mm512_set1_ps(s + 0.05f), c5 = _mm512_set1_ps(s + 0.06f);
    __m512 c6 = _mm512_set1_ps(s + 0.07f), c7 = _mm512_set1_ps(s + 0.08f), c8 = _mm512_set1_ps(s + 0.09f);
    __m512 c9 = _mm512_set1_ps(s + 0.10f), c10 = _mm512_set1_ps(s + 0.11f), c11 = _mm512_set1_ps(s + 0.12f);
    __m512 c12 = _mm512_set1_ps(s + 0.13f), c13 = _mm512_set1_ps(s + 0.14f), c14 = _mm512_set1_ps(s + 0.15f);
    __m512 c15 = _mm512_set1_ps(s + 0.16f), c16 = _mm512_set1_ps(s + 0.17f), c17 = _mm512_set1_ps(s + 0.18f);
    __m512 c18 = _mm512_set1_ps(s + 0.19f), c19 = _mm512_set1_ps(s + 0.20f), c20 = _mm512_set1_ps(s + 0.21f);
    __m512 c21 = _mm512_set1_ps(s + 0.22f), c22 = _mm512_set1_ps(s + 0.23f), c23 = _mm512_set1_ps(s + 0.24f);
    for (uint64_t i = 0; i < iters; i++) {
        STEP(c0); STEP(c1); STEP(c2); STEP(c3); STEP(c4); STEP(c5); STEP(c6); STEP(c7);
        STEP(c8); STEP(c9); STEP(c10); STEP(c11); STEP(c12); STEP(c13); STEP(c14); STEP(c15);
        STEP(c16); STEP(c17); STEP(c18); STEP(c19); STEP(c20); STEP(c21); STEP(c22); STEP(c23);
    }
    c0 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)),
                       _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7)));
    c8 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c8, c9), _mm512_add_ps(c10, c11)),
                       _mm512_add_ps(_mm512_add_ps(c12, c13), _mm512_add_ps(c14, c15)));
    c16 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(c16, c17), _mm512_add_ps(c18, c19)),
                        _mm512_add_ps(_mm512_add_ps(c20, c21), _mm512_add_ps(c22, c23)));
    /* The mean over chains and lanes: depends on every chain and stays near the seed from call to call. */
    *sink = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c8), c16)) *
            (1.0f / (ATTN_BENCH_AVX512BF16_CHAINS * 16));
    return (double)iters * ATTN_BENCH_AVX512BF16_CHAINS * 64;
}
#else
typedef int attn_bench_peak_avx512bf16_empty; /* not x86: nothing to build (ISO C wants a declaration) */
#endif
