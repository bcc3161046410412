/* The bfloat16 dot-product vocabulary of tile_bf16p.h: vdpbf16ps, 16 pair words per zmm. */
#define W __m512i
#define W_LOAD(p) _mm512_load_si512(p)
#define W_STOREU(p, w) _mm512_storeu_si512((p), (w))
#define W_BCAST(u) _mm512_set1_epi32((int)(u))
#define V_DP(acc, a, b) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(b))
#define W_EVEN(w) _mm512_castsi512_ps(_mm512_slli_epi32((w), 16))
#define W_ODD(w) _mm512_castsi512_ps(_mm512_and_si512((w), _mm512_set1_epi32((int)0xffff0000u)))
/* vcvtne2ps2bf16: round to nearest even and pack in one instruction (subnormals become zero, as vdpbf16ps reads
 * them), instead of the integer rounding and a separate pack. */
#define W_RPACK2(lo, hi) ((__m512i)_mm512_cvtne2ps_pbh((hi), (lo)))
#define W_PACK2(lo, hi)                                                                                        \
    _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(lo), 16))), \
                       _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(hi), 16)), 1)
