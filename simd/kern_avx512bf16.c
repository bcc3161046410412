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
#define ATTN_EXTRA_SLOTS                                                                                        \
    .scores_bf16p = attn_scores_bf16p_avx512bf16, .pv_bf16p = attn_pv_bf16p_avx512bf16,                        \
    .pack_bf16p = attn_pack_bf16p_avx512bf16,
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
