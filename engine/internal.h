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

/* Where a call's keys and values live. The driver asks a source only for pointers at (sequence, KV head, first
 * key) through the attn_src_* functions below, so another kind of storage (a paged pool) is a new kind here and a
 * case in each of them, not a change to the driver. */
typedef enum attn_kv_kind {
    ATTN_KV_DENSE, /* tensors in the call's layout and kv_dtype: key and value rows, strided by ks / vs */
    ATTN_KV_CACHE, /* one sequence's cache (engine/kvcache.c): values as rows, keys as panels of ATTN_PAD keys
                      ([d][ATTN_PAD] per panel), KV head h's at h * ks.h / vs.h elements */
    ATTN_KV_PAGED, /* one sequence of a pool (engine/pool.c): its page table pt; in each page, KV head h's key
                      panels at byte pk0 + h * pk_h, its value rows (vs.s elements apart) at pv0 + h * pv_h */
} attn_kv_kind;

typedef struct attn_kv_src {
    attn_kv_kind kind;
    attn_dtype fmt; /* storage format of keys and values */
    const void *k, *v;
    attn_strides ks, vs; /* elements between sequences (batch entries), KV heads and positions */
    size_t d;            /* key width */
    /* ATTN_I8: the per-row scales. CACHE: key t of KV head h at ksc[h * sc_h + t] (vsc likewise); PAGED: in each
     * page, KV head h's key scales at byte psk + h * ptok * 4, value scales at psv + h * ptok * 4. */
    const float *ksc, *vsc;
    size_t sc_h;
    const uint32_t *pt;  /* PAGED: page numbers, token t in page pt[t / ptok] of the pool memory k (= v) */
    size_t ptok, page_bytes, pk0, pk_h, pv0, pv_h, psk, psv;
} attn_kv_src;

/* Bytes per element of a tensor of type t. */
static inline size_t attn_dtype_size(attn_dtype t)
{
    return t == ATTN_F32 ? sizeof(float) : t == ATTN_I8 ? 1 : sizeof(uint16_t);
}

static inline size_t attn_src_esz(const attn_kv_src *s) { return attn_dtype_size(s->fmt); }

/* 1 if keys are stored in panels (attn_src_kpanel), 0 if as rows (attn_src_krow). */
static inline int attn_src_panels(const attn_kv_src *s) { return s->kind != ATTN_KV_DENSE; }

/* The start of the page holding token t (PAGED). */
static inline const char *attn_src_page(const attn_kv_src *s, size_t t)
{
    return (const char *)s->k + s->pt[t / s->ptok] * s->page_bytes;
}

/* 1 if tokens [t0, t0 + n) lie in one stretch of memory (a page of a PAGED source), so that a tile of them can be
 * read in place. */
static inline int attn_src_contig(const attn_kv_src *s, size_t t0, size_t n)
{
    return s->kind != ATTN_KV_PAGED || t0 % s->ptok + n <= s->ptok;
}

/* Key row t of KV head kvh of sequence b (keys stored as rows). */
static inline const void *attn_src_krow(const attn_kv_src *s, size_t b, size_t kvh, size_t t)
{
    return (const char *)s->k + (b * s->ks.b + kvh * s->ks.h + t * s->ks.s) * attn_src_esz(s);
}

/* The panel holding key t (keys stored as panels): key t, dim c at element c * ATTN_PAD + t % ATTN_PAD of it. */
static inline const void *attn_src_kpanel(const attn_kv_src *s, size_t b, size_t kvh, size_t t)
{
    if (s->kind == ATTN_KV_PAGED)
        return attn_src_page(s, t) + s->pk0 + kvh * s->pk_h + t % s->ptok / ATTN_PAD * s->d * ATTN_PAD * attn_src_esz(s);
    return (const char *)s->k + (b * s->ks.b + kvh * s->ks.h + t / ATTN_PAD * s->d * ATTN_PAD) * attn_src_esz(s);
}

/* Value row t of KV head kvh of sequence b; the rows of one tile are vs.s elements apart. */
static inline const void *attn_src_vrow(const attn_kv_src *s, size_t b, size_t kvh, size_t t)
{
    if (s->kind == ATTN_KV_PAGED)
        return attn_src_page(s, t) + s->pv0 + kvh * s->pv_h + t % s->ptok * s->vs.s * attn_src_esz(s);
    return (const char *)s->v + (b * s->vs.b + kvh * s->vs.h + t * s->vs.s) * attn_src_esz(s);
}

/* ATTN_I8: the scale of key (v 0) or value (v 1) row t of KV head kvh; the scales of a contiguous stretch of
 * tokens (attn_src_contig) follow each other. */
static inline const float *attn_src_scale(const attn_kv_src *s, int v, size_t kvh, size_t t)
{
    if (s->kind == ATTN_KV_PAGED)
        return (const float *)(const void *)(attn_src_page(s, t) + (v ? s->psv : s->psk) + kvh * s->ptok * 4) +
               t % s->ptok;
    return (v ? s->vsc : s->ksc) + kvh * s->sc_h + t;
}

/* attn_sdpa over the keys and values of src (the desc's batch, heads and lengths describe them, its kv_dtype is
 * ignored for src->fmt; a CACHE source has batch 1). */
attn_status attn_sdpa_src(const attn_ctx *ctx, const attn_sdpa_desc *d, const void *q, const attn_kv_src *src,
                          void *out, float *probs);

/* engine/pool.c, for the batched driver and the layer step: a live sequence's length and page table (NULL if seq is
 * not live), the pool's source with pt unset, and its shape. */
const uint32_t *attn_pool_pages(const attn_kv_pool *p, uint32_t seq, size_t *len);
void attn_pool_src(const attn_kv_pool *p, attn_kv_src *src);
size_t attn_kv_pool_dims_(const attn_kv_pool *p, size_t *n_kv_heads, size_t *head_dim, size_t *v_dim);
size_t attn_pool_max_seqs(const attn_kv_pool *p);
int attn_seq_live_(const attn_kv_pool *p, uint32_t seq);
attn_dtype attn_pool_dtype(const attn_kv_pool *p);
/* For attn_layer_forward: ATTN_OK when appending n_new[i] tokens to each of the n distinct live sequences seqs[i],
 * in this order, cannot run out: the free pages cover the new pages and the copies of shared, partly filled pages
 * (each copy counted by the rules, in order), else ATTN_ERANGE; the page tables are grown now (ATTN_ENOMEM). Nothing
 * else changes. */
attn_status attn_pool_prepare(attn_kv_pool *p, size_t n, const uint32_t *seqs, const size_t *n_new);

/* engine/rope.c: ATTN_OK if style, rope_dims and theta suit heads of head_dim (attn_rope_apply's rules). */
attn_status attn_rope_check(attn_rope style, size_t rope_dims, float theta, size_t head_dim);

/* ATTN_I8 quantisation of one row (attn_dtype): q[i] = nearbyintf(x[i] / s), s = max|x| / 127 (0 for an all-zero
 * row); returns s. x must be finite. */
float attn_quant_i8(int8_t *q, const float *x, size_t n);

/* Stores row src[0..n) as type t at dst, element i at i * step (elements of t); returns the row's ATTN_I8 scale
 * (1 for the other types). tmp: 2n bytes of scratch. k: NULL, or a kernel table whose narrow slots convert half
 * and bfloat16 rows (the same bits as the scalar conversion, faster). */
float attn_store_kv(attn_dtype t, void *dst, const float *src, size_t n, size_t step, void *tmp,
                    const attn_kernels *k);
/* The kernel table of the best level this CPU runs (for conversions outside a context's calls). */
const attn_kernels *attn_best_kernels(void);
/* 1 if no element of x[0..n) is a NaN or infinity. */
int attn_all_finite(const float *x, size_t n);
/* Memory for a whole KV cache or pool, 64-byte aligned: from 2 MiB on, huge-page aligned and advised to use huge
 * pages. Free with free(). */
void *attn_alloc_big(size_t bytes);

/* 1 if the byte ranges [p, p + n) and [q, q + m) overlap (either may be NULL). */
static inline int attn_overlaps(const void *p, size_t n, const void *q, size_t m)
{
    if (!p || !q || !n || !m)
        return 0;
    const uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return a < b + m && b < a + n;
}

/* RoPE positions stay below this: exact in double. */
#define ATTN_ROPE_MAX_POS ((size_t)1 << 53)

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
