/* The NEON BF16 kernel table (FEAT_BF16): the NEON table's slots (compiled once, in kern_neon.c) for ATTN_MATH_F32,
 * plus BFDOT kernels for ATTN_MATH_BF16 (each instruction multiplies 4 pairs of bfloat16 and adds both products to
 * 4 fp32 sums). Compiled with -march=armv8.2-a+bf16; runs only after attn_cpu_flags() saw HWCAP2_BF16. */
#include "vec_neon.h"
#include "block_neon.h"
#define ATTN_SFX neonbf16
#define ATTN_KERNELS_ISA ATTN_ISA_NEON_BF16
#define ATTN_SLOTS_OF neon
#include "kernels.h"
static ATTN_DECL_SCORES(attn_scores_bf16p_neonbf16);
static ATTN_DECL_PV(attn_pv_bf16p_neonbf16);
#define ATTN_EXTRA_SLOTS .scores_bf16p = attn_scores_bf16p_neonbf16, .pv_bf16p = attn_pv_bf16p_neonbf16,
#include "tile_simd.h"

/* The bfloat16 dot-product vocabulary of tile_bf16p.h: BFDOT, 4 pair words per q-register. */
#define W uint32x4_t
#define W_LOAD(p) vld1q_u32(p)
#define W_STOREU(p, w) vst1q_u32((p), (w))
#define W_BCAST(u) vdupq_n_u32(u)
#define V_DP(acc, a, b) vbfdotq_f32((acc), vreinterpretq_bf16_u32(a), vreinterpretq_bf16_u32(b))
#define W_EVEN(w) vreinterpretq_f32_u32(vshlq_n_u32((w), 16))
#define W_ODD(w) vreinterpretq_f32_u32(vandq_u32((w), vdupq_n_u32(0xffff0000u)))
#define W_PACK2(lo, hi) \
    vreinterpretq_u32_u16(vcombine_u16(vshrn_n_u32(vreinterpretq_u32_f32(lo), 16), vshrn_n_u32(vreinterpretq_u32_f32(hi), 16)))
#include "tile_bf16p.h"
