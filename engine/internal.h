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

/* Largest workspace a context keeps between calls; larger ones are allocated and freed per call. */
#define ATTN_WS_CACHE_MAX ((size_t)64 << 20)

/* A context's cached workspace: calls that find it free reuse it, so a server's steady stream of calls does not
 * fault in fresh pages every time. Mutable behind the const context, guarded by lock. */
typedef struct attn_ws attn_ws;

struct attn_ctx {
    const attn_variant *var;  /* never NULL */
    const attn_kernels *kern; /* var->kern */
    attn_isa isa;
    int threads;
    int block_q, block_kv;
    int verbose;
    attn_ws *ws;
};

/* bytes of 64-byte aligned memory for one call: the context's cached workspace when no other call holds it, else
 * a fresh allocation. *cached says which; hand both back to attn_ws_release. NULL when out of memory. */
void *attn_ws_acquire(const attn_ctx *ctx, size_t bytes, int *cached);
void attn_ws_release(const attn_ctx *ctx, void *p, int cached);

/* Elements between batches, heads and sequence positions of a tensor; row elements are contiguous. */
typedef struct attn_strides {
    size_t b, h, s;
} attn_strides;

/* attn_sdpa over keys and values stored as kvt (fp32, half or bfloat16). kv_head_stride 0: k and v are fp32
 * (kvt ATTN_F32) and follow d->layout like q. Else a KV cache's layout (batch 1 only, see engine/kvcache.c): KV
 * head h's values are rows h * kv_head_stride rows in, one after another, and its keys the same positions in
 * panels of ATTN_PAD keys (kv_head_stride a multiple of ATTN_PAD). */
attn_status attn_sdpa_kv(const attn_ctx *ctx, const attn_sdpa_desc *d, const float *q, const void *k, const void *v,
                         attn_dtype kvt, size_t kv_head_stride, float *out, float *probs);

/* a * b into *r; 1 on overflow. */
static inline int attn_mul_overflow(size_t a, size_t b, size_t *r) { return __builtin_mul_overflow(a, b, r); }

/* x rounded up to whole vectors of the widest ISA. */
static inline size_t attn_round16(size_t x) { return (x + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD; }

/* Row t (d floats) into the 16-column panels of attn_tile_args.kt: element c at
 * panels[(t / ATTN_PAD) * d * ATTN_PAD + c * ATTN_PAD + t % ATTN_PAD]. Keys for the score kernels, weight rows for
 * the GEMM. */
static inline void attn_panel_row(float *panels, const float *row, size_t d, size_t t)
{
    float *dst = panels + t / ATTN_PAD * d * ATTN_PAD + t % ATTN_PAD;
    for (size_t c = 0; c < d; c++)
        dst[c * ATTN_PAD] = row[c];
}

/* Threads for one call with items independent work items: the context's count, at most items, and 1 when the
 * caller already runs an OpenMP team (no nested team, no oversubscription) or without OpenMP. */
int attn_call_threads(const attn_ctx *ctx, size_t items);

/* 64-byte aligned allocation for kernel scratch; free with attn_free_aligned. NULL on failure or bytes == 0. */
void *attn_alloc_aligned(size_t bytes);
void attn_free_aligned(void *p);

#endif
