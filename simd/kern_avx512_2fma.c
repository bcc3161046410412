/* AVX-512F kernel set for cores with two full 512-bit FMA pipes (AMD Zen 5, Intel Golden Cove-class servers).
 * Compiled with -mavx512f -mavx2 -mfma -mf16c. */
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
#define ATTN_SFX avx512_2fma
#define ATTN_KERNELS_ISA ATTN_ISA_AVX512

#include "tile_simd.h"
