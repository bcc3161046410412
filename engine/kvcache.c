/* The KV cache of one sequence, stored as fp32, IEEE half or bfloat16 (rounded to nearest even on append), and
 * attn_decode: the cache's last q_len positions attend to the whole cache through the attn_sdpa engine, whose
 * kernels widen the stored keys and values to fp32 in registers (all arithmetic stays fp32). */
#define _DEFAULT_SOURCE /* madvise */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "half.h"
#include "internal.h"

struct attn_kv_cache {
    size_t n_kv_heads, head_dim, capacity, len;
    size_t rows; /* capacity rounded up to whole panels: positions per KV head in k and v */
    attn_dtype dtype;
    float *ks, *vs; /* ATTN_I8: [n_kv_heads][rows] scales of the key and value rows */
    void *tmp;      /* one row of conversion scratch (2 bytes an element) */
    /* Elements of dtype; decode streams one KV head's keys and values in order. v: [n_kv_heads][rows][head_dim].
     * k: [n_kv_heads][rows / ATTN_PAD] panels of [head_dim][ATTN_PAD], key t, dim c of head h at
     * (h * rows + t / ATTN_PAD * ATTN_PAD) * head_dim + c * ATTN_PAD + t % ATTN_PAD: the score kernels take a
     * panel's 16 keys per vector with no reduction (a key row took a transposing reduction per score). Keys a
     * panel holds beyond len are zero. */
    void *k, *v;
};


/* Decode streams the whole cache for every token: large caches ask for transparent huge pages, which measured
 * 10-15% faster decode from DRAM on Zen 4 (fewer TLB misses, prefetch runs across 2 MiB instead of 4 KiB). */
void *attn_alloc_big(size_t bytes)
{
    const size_t huge = (size_t)2 << 20;
    if (bytes < huge)
        return attn_alloc_aligned(bytes);
    void *p = NULL;
    if (posix_memalign(&p, huge, bytes) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: failure leaves ordinary pages */
#endif
    return p;
}

attn_status attn_kv_cache_create(attn_kv_cache **out, size_t n_kv_heads, size_t head_dim, size_t capacity,
                                 attn_dtype dtype)
{
    if (!out || !n_kv_heads || !head_dim || !capacity || (unsigned)dtype > ATTN_I8)
        return ATTN_EINVAL;
    size_t bytes;
    if (capacity > SIZE_MAX - ATTN_PAD)
        return ATTN_ERANGE;
    const size_t rows = (capacity + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD;
    if (attn_mul_overflow(rows, n_kv_heads, &bytes) || attn_mul_overflow(bytes, head_dim, &bytes) ||
        attn_mul_overflow(bytes, attn_dtype_size(dtype), &bytes) || bytes > PTRDIFF_MAX)
        return ATTN_ERANGE;
    attn_kv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return ATTN_ENOMEM;
    c->k = attn_alloc_big(bytes);
    c->v = c->k ? attn_alloc_big(bytes) : NULL;
    if (c->v && dtype == ATTN_I8) { /* bytes = rows * n_kv_heads * head_dim >= the scales' count */
        c->ks = calloc(rows * n_kv_heads, sizeof(float));
        c->vs = calloc(rows * n_kv_heads, sizeof(float));
    }
    if (c->v)
        c->tmp = malloc(2 * head_dim);
    if (!c->v || !c->tmp || (dtype == ATTN_I8 && (!c->ks || !c->vs))) {
        attn_kv_cache_destroy(c);
        return ATTN_ENOMEM;
    }
    c->n_kv_heads = n_kv_heads;
    c->head_dim = head_dim;
    c->capacity = capacity;
    c->rows = rows;
    c->len = 0;
    c->dtype = dtype;
    *out = c;
    return ATTN_OK;
}

void attn_kv_cache_destroy(attn_kv_cache *c)
{
    if (!c)
        return;
    free(c->k);
    free(c->v);
    free(c->ks);
    free(c->vs);
    free(c->tmp);
    free(c);
}

size_t attn_kv_cache_len(const attn_kv_cache *c) { return c ? c->len : 0; }

void attn_kv_cache_reset(attn_kv_cache *c)
{
    if (c)
        c->len = 0;
}

float attn_quant_i8(int8_t *q, const float *x, size_t n)
{
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float s = mx / 127.0f;
    /* x / s is at most 127 in magnitude: adding and subtracting 1.5 * 2^23 rounds it to the nearest integer, ties to
     * even, as nearbyintf does in the default rounding mode, without a call per element. */
    const float magic = 12582912.0f;
    for (size_t i = 0; i < n; i++) {
        /* A subnormal s is coarse: max / s may then pass 127, so the integers saturate at +-127. */
        const float r = s == 0.0f ? 0.0f : (x[i] / s + magic) - magic;
        q[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
    }
    return s;
}

const attn_kernels *attn_best_kernels(void)
{
    const attn_variant *v = attn_variant_pick(attn_isa_best());
    return v ? v->kern : &attn_kernels_scalar;
}

float attn_store_kv(attn_dtype t, void *dst, const float *src, size_t n, size_t step, void *tmp,
                    const attn_kernels *k)
{
    if ((t == ATTN_F16 || t == ATTN_BF16) && k && k->narrow[t]) { /* a row, or a key into a panel column */
        uint16_t *h = step == 1 ? dst : tmp;
        k->narrow[t](h, src, n, 1.0f);
        for (size_t i = 0; step != 1 && i < n; i++)
            ((uint16_t *)dst)[i * step] = h[i];
        return 1.0f;
    }
    if (t == ATTN_I8) {
        int8_t *q = tmp;
        const float s = attn_quant_i8(q, src, n);
        for (size_t i = 0; i < n; i++)
            ((int8_t *)dst)[i * step] = q[i];
        return s;
    }
    if (t == ATTN_F32) {
        float *f = dst;
        for (size_t i = 0; i < n; i++)
            f[i * step] = src[i];
        return 1.0f;
    }
    uint16_t *h = dst;
    if (t == ATTN_F16)
        for (size_t i = 0; i < n; i++)
            h[i * step] = attn_f32_to_f16(src[i]);
    else
        for (size_t i = 0; i < n; i++)
            h[i * step] = attn_f32_to_bf16(src[i]);
    return 1.0f;
}

int attn_all_finite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

attn_status attn_kv_cache_append(attn_kv_cache *c, const float *k, const float *v, size_t n_tokens)
{
    if (!c || (n_tokens && (!k || !v)))
        return ATTN_EINVAL;
    if (!n_tokens)
        return ATTN_OK;
    if (n_tokens > c->capacity - c->len) /* all or nothing */
        return ATTN_ERANGE;
    const size_t d = c->head_dim, esz = attn_dtype_size(c->dtype), hk = c->n_kv_heads;
    const attn_kernels *kern = attn_best_kernels();
    if (c->dtype == ATTN_I8 && (!attn_all_finite(k, n_tokens * hk * d) || !attn_all_finite(v, n_tokens * hk * d)))
        return ATTN_EINVAL;
    for (size_t t = 0; t < n_tokens; t++)
        for (size_t h = 0; h < hk; h++) { /* token t, head h: input row t*hk + h, position p = len+t */
            const size_t p = c->len + t, in = (t * hk + h) * d;
            char *panel = (char *)c->k + (h * c->rows + p / ATTN_PAD * ATTN_PAD) * d * esz;
            if (p % ATTN_PAD == 0) /* a fresh panel: its keys beyond len read as zero */
                memset(panel, 0, d * ATTN_PAD * esz);
            const float ks = attn_store_kv(c->dtype, panel + p % ATTN_PAD * esz, k + in, d, ATTN_PAD, c->tmp, kern);
            const float vs =
                attn_store_kv(c->dtype, (char *)c->v + (h * c->rows + p) * d * esz, v + in, d, 1, c->tmp, kern);
            if (c->dtype == ATTN_I8) {
                c->ks[h * c->rows + p] = ks;
                c->vs[h * c->rows + p] = vs;
            }
        }
    c->len += n_tokens;
    return ATTN_OK;
}

attn_status attn_decode(const attn_ctx *ctx, const attn_kv_cache *c, const float *q, size_t q_len, size_t n_heads,
                        attn_mask mask, float *out)
{
    if (!ctx || !c || !q || !out || !q_len || !n_heads || n_heads % c->n_kv_heads ||
        (unsigned)mask > ATTN_MASK_CAUSAL || q_len > c->len)
        return ATTN_EINVAL;
    /* q and out are [position][head][dim]: BSHD with one batch; the cache keeps each KV head's rows together. */
    const attn_sdpa_desc d = {
        .batch = 1, .n_heads = n_heads, .n_kv_heads = c->n_kv_heads, .q_len = q_len, .kv_len = c->len,
        .head_dim = c->head_dim, .layout = ATTN_LAYOUT_BSHD, .mask = mask,
    };
    const attn_kv_src src = {
        .kind = ATTN_KV_CACHE, .fmt = c->dtype, .k = c->k, .v = c->v, .d = c->head_dim,
        .ks = {0, c->rows * c->head_dim, c->head_dim}, .vs = {0, c->rows * c->head_dim, c->head_dim},
        .ksc = c->ks, .vsc = c->vs, .sc_h = c->rows,
    };
    return attn_sdpa_src(ctx, &d, q, &src, out, NULL);
}
