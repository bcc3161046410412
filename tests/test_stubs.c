/* attn_self_attention and the KV cache are not built yet (they return ATTN_ENOTSUP for valid arguments). Until
 * they land, only their argument checks are tested: NULL where data is needed gives ATTN_EINVAL, *out stays
 * untouched on failure, and NULL handles are harmless. Replace this file when the features land. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <string.h>

#include "common.h"

Test(stubs, self_attention_null_arguments)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float w[4 * 4] = { 0 }, x[2 * 4] = { 0 };
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, 2 * 4), 0);
    attn_layer layer;
    memset(&layer, 0, sizeof layer);
    layer.d_model = 4;
    layer.n_heads = 2;
    layer.head_dim = 2;
    layer.wq = layer.wk = layer.wv = layer.wo = w;

    cr_assert_eq(attn_self_attention(NULL, &layer, x, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_self_attention(ctx, NULL, x, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_self_attention(ctx, &layer, NULL, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_self_attention(ctx, &layer, x, 2, ATTN_MASK_NONE, NULL, NULL), ATTN_EINVAL);
    attn_layer no_q = layer;
    no_q.wq = NULL;
    cr_assert_eq(attn_self_attention(ctx, &no_q, x, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    attn_layer no_k = layer;
    no_k.wk = NULL;
    cr_assert_eq(attn_self_attention(ctx, &no_k, x, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    attn_layer no_v = layer;
    no_v.wv = NULL;
    cr_assert_eq(attn_self_attention(ctx, &no_v, x, 2, ATTN_MASK_NONE, y.p, NULL), ATTN_EINVAL);
    cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "y written on error");
    /* Valid arguments must not crash, whatever the status is while the layer is a stub. */
    attn_status s = attn_self_attention(ctx, &layer, x, 2, ATTN_MASK_NONE, y.p, NULL);
    cr_assert(s == ATTN_OK || s == ATTN_ENOTSUP, "valid layer call gave %d (%s)", (int)s, attn_strerror(s));
    cr_assert(tc_buf_guards_ok(&y));
    tc_buf_free(&y);
    attn_ctx_destroy(ctx);
}

Test(stubs, kv_cache_null_arguments)
{
    attn_kv_cache *const sentinel = (attn_kv_cache *)&sentinel;
    cr_assert_eq(attn_kv_cache_create(NULL, 2, 8, 16, ATTN_F32), ATTN_EINVAL);
    attn_kv_cache *c = sentinel;
    attn_status s = attn_kv_cache_create(&c, 2, 8, 16, ATTN_F32);
    if (s != ATTN_OK)
        cr_assert_eq(c, sentinel, "*out written although attn_kv_cache_create gave %d", (int)s);
    else
        attn_kv_cache_destroy(c);

    attn_kv_cache_destroy(NULL);
    attn_kv_cache_reset(NULL);
    cr_assert_eq(attn_kv_cache_len(NULL), 0);
    float k[16] = { 0 }, v[16] = { 0 }, q[16] = { 0 };
    cr_assert_eq(attn_kv_cache_append(NULL, k, v, 1), ATTN_EINVAL);

    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    tc_buf out;
    cr_assert_eq(tc_buf_alloc(&out, 16), 0);
    cr_assert_eq(attn_decode(ctx, NULL, q, 1, 2, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert(tc_buf_all_bits(&out, TC_POISON_BITS) && tc_buf_guards_ok(&out), "out written on error");
    tc_buf_free(&out);
    attn_ctx_destroy(ctx);
}
