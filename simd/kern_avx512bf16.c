/* The AVX512_BF16 kernel table: the AVX-512 kernels (same 6x4 blocking) for ATTN_MATH_F32, plus vdpbf16ps
 * kernels for ATTN_MATH_BF16, whose products of bfloat16 pairs run at twice the fp32 FMA rate on AMD Zen 4/5.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -mavx2 -mfma -mf16c; runs only after attn_cpu_flags()
 * saw AVX-512F and AVX512_BF16 (every such CPU also has BW and VL) and the OS saving ZMM state. */
#include "vec_avx512.h"
#define SC_RB 6
#define SC_NV 4
#define PV_RB 6
#define PV_NV 4
#define PVD_RB 2
#define PVD_NV 8
#define PVH_RB 4
#define PVH_NV 4
#define SR_RB 4
#define SR_JB 4
#define ATTN_SFX avx512bf16
#define ATTN_KERNELS_ISA ATTN_ISA_AVX512_BF16
#include "tile_simd.h"
