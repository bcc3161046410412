/* What the engine files share: the context, environment parsing and checked size arithmetic. */
#ifndef ATTN_INTERNAL_H
#define ATTN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "attn.h"
#include "kernels.h"

/* Limits of the tunables (config fields and ATTN_* variables). */
#define ATTN_MAX_THREADS 1024
#define ATTN_MAX_BLOCK 4096
#define ATTN_DEFAULT_BLOCK_Q 64
#define ATTN_DEFAULT_BLOCK_KV 128

struct attn_ctx {
    const attn_kernels *kern; /* never NULL */
    attn_isa isa;
    int threads;
    int block_q, block_kv;
    int verbose;
};

/* a * b into *r; 1 on overflow. */
static inline int attn_mul_overflow(size_t a, size_t b, size_t *r) { return __builtin_mul_overflow(a, b, r); }

/* 64-byte aligned allocation for kernel scratch; free with attn_free_aligned. NULL on failure or bytes == 0. */
void *attn_alloc_aligned(size_t bytes);
void attn_free_aligned(void *p);

#endif
