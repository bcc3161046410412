/* attn-bench: NEON (AArch64 Advanced SIMD) FMA peak loop (16 q-register chains). Baseline AArch64 flags;
 * built only for aarch64 (ATTN_HAVE_NEON), where NEON is always present. */
#include "bench.h"

#if defined(__aarch64__)
#include <arm_neon.h>

#define STEP(c) c = vfmaq_f32(a, c, m)

double attn_bench_fma_neon(uint64_t iters, float mul, float add, float *sink)
{
    const float32x4_t m = vdupq_n_f32(mul), a = vdupq_n_f32(add);
    const float s = *sink;
    float32x4_t c0 = vdupq_n_f32(s + 0.01f), c1 = vdupq_n_f32(s + 0.02f);
    float32x4_t c2 = vdupq_n_f32(s + 0.03f), c3 = vdupq_n_f32(s + 0.04f);
    float32x4_t c4 = vdupq_n_f32(s + 0.05f), c5 = vdupq_n_f32(s + 0.06f);
    float32x4_t c6 = vdupq_n_f32(s + 0.07f), c7 = vdupq_n_f32(s + 0.08f);
    float32x4_t c8 = vdupq_n_f32(s + 0.09f), c9 = vdupq_n_f32(s + 0.10f);
    float32x4_t c10 = vdupq_n_f32(s + 0.11f), c11 = vdupq_n_f32(s + 0.12f);
    float32x4_t c12 = vdupq_n_f32(s + 0.13f), c13 = vdupq_n_f32(s + 0.14f);
    float32x4_t c14 = vdupq_n_f32(s + 0.15f), c15 = vdupq_n_f32(s + 0.16f);
    for (uint64_t i = 0; i < iters; i++) {
        STEP(c0); STEP(c1); STEP(c2); STEP(c3); STEP(c4); STEP(c5); STEP(c6); STEP(c7);
        STEP(c8); STEP(c9); STEP(c10); STEP(c11); STEP(c12); STEP(c13); STEP(c14); STEP(c15);
    }
    c0 = vaddq_f32(vaddq_f32(vaddq_f32(c0, c1), vaddq_f32(c2, c3)),
                   vaddq_f32(vaddq_f32(c4, c5), vaddq_f32(c6, c7)));
    c8 = vaddq_f32(vaddq_f32(vaddq_f32(c8, c9), vaddq_f32(c10, c11)),
                   vaddq_f32(vaddq_f32(c12, c13), vaddq_f32(c14, c15)));
    *sink = vaddvq_f32(vaddq_f32(c0, c8));
    return (double)iters * ATTN_BENCH_NEON_CHAINS * 4 * 2;
}
#else
typedef int attn_bench_peak_neon_empty; /* not aarch64: nothing to build (ISO C wants a declaration) */
#endif
