/* The AArch64 Advanced SIMD vector vocabulary of tile_simd.h, shared by the NEON kernel files. */
#ifndef ATTN_VEC_NEON_H
#define ATTN_VEC_NEON_H

#include <arm_neon.h>
#include <sleef.h>

#define V float32x4_t
#define VW 4
#define M uint32x4_t
#define V_ZERO() vdupq_n_f32(0.0f)
#define V_LOAD(p) vld1q_f32(p)
#define V_LOADU(p) vld1q_f32(p)
#define V_STORE(p, x) vst1q_f32((p), (x))
#define V_STOREU(p, x) vst1q_f32((p), (x))
#define V_BCAST(f) vdupq_n_f32(f)
#define V_FMA(a, b, c) vfmaq_f32((c), (a), (b))
#define V_MUL(a, b) vmulq_f32((a), (b))
#define V_ADD(a, b) vaddq_f32((a), (b))
#define V_SUB(a, b) vsubq_f32((a), (b))
#define V_MAX(a, b) vmaxq_f32((a), (b))
#define V_EXP(x) Sleef_expf4_u10advsimd(x)
#define V_DIV(a, b) vdivq_f32((a), (b))
#define V_HMAX(x) vmaxvq_f32(x)
#define V_HSUM(x) vaddvq_f32(x)
/* Lane i = the sum of p[i]: two levels of pairwise adds. */
#define V_HSUMS(p) vpaddq_f32(vpaddq_f32((p)[0], (p)[1]), vpaddq_f32((p)[2], (p)[3]))
static inline float32x4_t attn_iota_neon(void)
{
    static const float i[4] = {0, 1, 2, 3};
    return vld1q_f32(i);
}
#define V_IOTA() attn_iota_neon()
#define V_INRANGE(idx, lo, hi) vandq_u32(vcgeq_f32((idx), (lo)), vcltq_f32((idx), (hi)))
#define V_SEL(m, a, b) vbslq_f32((m), (a), (b))

#define V_CVT_F16(p) vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)))
#define V_CVT_BF16(p) vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16))
/* Four int8 through one 32-bit lane load (vld1_s8 would read 8 bytes, past the end of a row). */
#define V_CVT_I8(p) \
    vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vld1_dup_s32((const int32_t *)(const void *)(p)))))))

/* Round to bfloat16, kept as fp32: add 0x7fff plus the lowest kept bit, clear the low half; a NaN is quieted
 * instead. */
static inline float32x4_t attn_rbf16_neon(float32x4_t x)
{
    const uint32x4_t u = vreinterpretq_u32_f32(x), hi = vdupq_n_u32(0xffff0000u);
    const uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    const uint32x4_t r = vandq_u32(vaddq_u32(vaddq_u32(u, vdupq_n_u32(0x7fff)), odd), hi);
    const uint32x4_t qnan = vandq_u32(vorrq_u32(u, vdupq_n_u32(0x400000)), hi);
    return vreinterpretq_f32_u32(vbslq_u32(vceqq_f32(x, x), r, qnan));
}
#define V_RBF16(x) attn_rbf16_neon(x)
/* Stores: IEEE half (round to nearest even, the FPCR default); the upper halves of values V_RBF16 rounded. */
#define V_STORE_F16(p, x) vst1_u16((p), vreinterpret_u16_f16(vcvt_f16_f32(x)))
#define V_STORE_BF16(p, x) vst1_u16((p), vshrn_n_u32(vreinterpretq_u32_f32(x), 16))

#endif
