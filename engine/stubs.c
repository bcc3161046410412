/* The layer and the KV cache are specified (DESIGN.md §3) but not built yet: they validate their arguments and
 * return ATTN_ENOTSUP, so callers can already link against the final API. */
#include "internal.h"

attn_status attn_self_attention(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n_tokens,
                                attn_mask mask, float *y, float *probs)
{
    (void)probs;
    if (!ctx || !w || !x || !y || !n_tokens || !w->d_model || !w->n_heads || !w->head_dim || !w->wq || !w->wk ||
        !w->wv || (unsigned)mask > ATTN_MASK_CAUSAL)
        return ATTN_EINVAL;
    return ATTN_ENOTSUP;
}

attn_status attn_kv_cache_create(attn_kv_cache **out, size_t n_kv_heads, size_t head_dim, size_t capacity,
                                 attn_dtype dtype)
{
    if (!out || !n_kv_heads || !head_dim || !capacity || (unsigned)dtype > ATTN_BF16)
        return ATTN_EINVAL;
    return ATTN_ENOTSUP;
}

/* No cache can exist yet, so these only accept NULL. */
void attn_kv_cache_destroy(attn_kv_cache *c) { (void)c; }
size_t attn_kv_cache_len(const attn_kv_cache *c) { (void)c; return 0; }
void attn_kv_cache_reset(attn_kv_cache *c) { (void)c; }

attn_status attn_kv_cache_append(attn_kv_cache *c, const float *k, const float *v, size_t n_tokens)
{
    if (!c || (n_tokens && (!k || !v)))
        return ATTN_EINVAL;
    return ATTN_ENOTSUP;
}

attn_status attn_decode(const attn_ctx *ctx, const attn_kv_cache *c, const float *q, size_t q_len, size_t n_heads,
                        attn_mask mask, float *out)
{
    if (!ctx || !c || !q || !out || !q_len || !n_heads || (unsigned)mask > ATTN_MASK_CAUSAL)
        return ATTN_EINVAL;
    return ATTN_ENOTSUP;
}
