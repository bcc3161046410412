/* The self-attention layer is specified (DESIGN.md §3) but not built yet: it validates its arguments and returns
 * ATTN_ENOTSUP, so callers can already link against the final API. */
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
