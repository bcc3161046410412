/* The AVX-512F kernel table (blocking in block_avx512.h). A table for another blocking is a file like this one with
 * its own constants and ATTN_SFX. Its slot functions are external: the avx512bf16 table points at them.
 * Compiled with -mavx512f -mavx2 -mfma -mf16c. */
#include "vec_avx512.h"
#include "block_avx512.h"
#define ATTN_SFX avx512
#define ATTN_KERNELS_ISA ATTN_ISA_AVX512
#define ATTN_SHARE_SLOTS

#include "tile_simd.h"
