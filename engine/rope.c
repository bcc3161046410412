/* Rotary position embeddings (DESIGN.md §3b): attn_rope_apply, and the check of a layer's RoPE fields that
 * attn_self_attention and attn_layer_forward share. Serial: one pass over q or k is small next to the attention
 * that follows, and the function has no context to take a thread count from. */
#include <math.h>
#include <stdint.h>

#include "internal.h"

/* Pairs whose inverse frequencies, cos and sin live on the stack at a time (2 KiB; no allocation, so no ENOMEM). */
#define ATTN_ROPE_CHUNK 128


/* ATTN_OK if a style, rope_dims and theta are ones attn_rope_apply takes for heads of head_dim (>= 1). */
attn_status attn_rope_check(attn_rope style, size_t rope_dims, float theta, size_t head_dim)
{
    const size_t r = rope_dims ? rope_dims : head_dim;
    if ((style != ATTN_ROPE_NEOX && style != ATTN_ROPE_GPTJ) || r % 2 || r > head_dim || !(theta >= 0.0f) ||
        !isfinite(theta))
        return ATTN_EINVAL;
    return ATTN_OK;
}

/* Rotates pairs i0 .. i0 + n of one head: (a, b) -> (a c - b s, b c + a s), each product rounded to fp32 before
 * the sum as PyTorch's q * cos + rotate_half(q) * sin rounds them (products in their own statements: no FMA). */
static void attn_rope_head(float *xh, attn_rope style, size_t half, size_t i0, size_t n, const float *c,
                           const float *s)
{
    /* NEOX pairs x[i] with x[i + half]; GPT-J pairs x[2i] with x[2i + 1]. */
    const size_t step = style == ATTN_ROPE_NEOX ? 1 : 2, other = style == ATTN_ROPE_NEOX ? half : 1;
    float *a = xh + i0 * step;
    for (size_t i = 0; i < n; i++, a += step) {
        const float xa = a[0], xb = a[other];
        const float ac = xa * c[i], bs = xb * s[i], bc = xb * c[i], as = xa * s[i];
        a[0] = ac - bs;
        a[other] = bc + as;
    }
}

attn_status attn_rope_apply(attn_rope style, size_t rope_dims, float theta, size_t n_tokens, size_t n_heads,
                            size_t head_dim, size_t pos0, float *x)
{
    if (!x || !n_tokens || !n_heads || !head_dim || attn_rope_check(style, rope_dims, theta, head_dim) != ATTN_OK)
        return ATTN_EINVAL;
    size_t n;
    if (attn_mul_overflow(n_tokens, n_heads, &n) || attn_mul_overflow(n, head_dim, &n) ||
        n > SIZE_MAX / sizeof(float) || pos0 > ATTN_ROPE_MAX_POS || n_tokens > ATTN_ROPE_MAX_POS - pos0)
        return ATTN_ERANGE;
    const size_t r = rope_dims ? rope_dims : head_dim, half = r / 2;
    const double base = theta == 0.0f ? 10000.0 : (double)theta;
    double inv[ATTN_ROPE_CHUNK];
    float c[ATTN_ROPE_CHUNK], s[ATTN_ROPE_CHUNK];
    /* Chunks of pairs outermost: each chunk's inverse frequencies are computed once, its cos and sin once per
     * token, then used by every head of that token. */
    for (size_t i0 = 0; i0 < half; i0 += ATTN_ROPE_CHUNK) {
        const size_t m = half - i0 < ATTN_ROPE_CHUNK ? half - i0 : ATTN_ROPE_CHUNK;
        for (size_t i = 0; i < m; i++)
            inv[i] = pow(base, -(double)(2 * (i0 + i)) / (double)r);
        for (size_t t = 0; t < n_tokens; t++) {
            const double p = (double)(pos0 + t);
            for (size_t i = 0; i < m; i++) {
                const double ang = p * inv[i];
                c[i] = (float)cos(ang);
                s[i] = (float)sin(ang);
            }
            float *xt = x + t * n_heads * head_dim;
            for (size_t h = 0; h < n_heads; h++)
                attn_rope_head(xt + h * head_dim, style, half, i0, m, c, s);
        }
    }
    return ATTN_OK;
}
