/* attn-bench: the measuring loops that need their own ISA flags (bench/peak_*.c), declared here so that
 * bench/attn-bench.c, compiled with baseline flags, calls them only after attn_isa_supported() said yes. */
#ifndef ATTN_BENCH_H
#define ATTN_BENCH_H

#include <stdint.h>

/* Each FMA loop runs `iters` iterations of ATTN_BENCH_*_CHAINS independent multiply-add chains,
 * acc = acc * mul + add, one vector instruction per chain per iteration, and returns the floating-point
 * operations it did (2 per lane per chain per iteration). With 0 < mul < 1 the chains converge to
 * add / (1 - mul) and never reach denormals or infinities. *sink receives a value that depends on every chain,
 * so that the compiler cannot drop any of them; it also seeds the chains. */
typedef double attn_bench_fma_fn(uint64_t iters, float mul, float add, float *sink);

/* Enough chains to cover latency x FMA issue width: Zen 4 needs 4 zmm / 8 ymm chains, Intel server cores
 * with two 512-bit FMA ports 8 zmm; 12 ymm leaves room in the 16 ymm registers for the two constants. */
#define ATTN_BENCH_AVX2_CHAINS 12
#define ATTN_BENCH_AVX512_CHAINS 16
#define ATTN_BENCH_NEON_CHAINS 16

/* The bf16 dot-product loop has the same signature and contract, but each chain is acc += x . y over bf16 pairs
 * (vdpbf16ps: 16 fp32 lanes, each adding two bf16 products), counted as 64 flops per zmm instruction (32 multiplies,
 * 32 adds). The operands are chosen so that the chains stay where they were seeded (x*y - x*y per lane) and *sink
 * gets their mean. 24 chains cover a 6-cycle latency on two pipes (Zen 4/5) and leave room for the two operands in
 * the 32 zmm registers. */
#define ATTN_BENCH_AVX512BF16_CHAINS 24

#if defined(ATTN_HAVE_AVX2) && ATTN_HAVE_AVX2
attn_bench_fma_fn attn_bench_fma_avx2;    /* bench/peak_avx2.c: -mavx2 -mfma, 8 lanes */
#endif
#if defined(ATTN_HAVE_AVX512) && ATTN_HAVE_AVX512
attn_bench_fma_fn attn_bench_fma_avx512;  /* bench/peak_avx512.c: -mavx512f -mavx2 -mfma, 16 lanes */
#endif
#if defined(ATTN_HAVE_AVX512BF16) && ATTN_HAVE_AVX512BF16
attn_bench_fma_fn attn_bench_dpbf16_avx512bf16; /* bench/peak_avx512bf16.c: + -mavx512bf16, vdpbf16ps zmm */
#endif
#if defined(ATTN_HAVE_NEON) && ATTN_HAVE_NEON
attn_bench_fma_fn attn_bench_fma_neon;    /* bench/peak_neon.c: aarch64 baseline, 4 lanes */
#endif

#endif
