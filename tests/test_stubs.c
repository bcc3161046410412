/* attn_self_attention is not built yet (it returns ATTN_ENOTSUP for valid arguments). Until it lands, only its
 * argument checks are tested: NULL where data is needed gives ATTN_EINVAL and y stays untouched. Replace this file
 * when the layer lands. */
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
