/* AArch64 Advanced SIMD kernel set (blocking in block_neon.h). NEON is baseline on AArch64, so no extra flags. Its
 * slot functions are external: the neonbf16 table points at them. */
#include "vec_neon.h"
#include "block_neon.h"
#define ATTN_SFX neon
#define ATTN_KERNELS_ISA ATTN_ISA_NEON
#define ATTN_SHARE_SLOTS

#include "tile_simd.h"
