/* One decoder layer step over a paged KV pool (DESIGN.md §3b, continuous batching): the Q/K/V projections of every
 * new token of every sequence in one GEMM each, RoPE at each sequence's positions, the keys and values appended to
 * the pool, attn_batch_attend, the output projection. Everything that can be refused is checked before the pool
 * changes, pages included (attn_pool_prepare), so the appends cannot fail; only memory running out in the attention
 * or the output projection afterwards truncates the appended sequences back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int attn_step_cmp_u32(const void *a, const void *b)
{
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Truncates sequences 0 .. n-1 back to their lengths before the call; cannot fail for ids that were checked. */
static void attn_step_rollback(attn_kv_pool *p, const uint32_t *seqs, const size_t *old_len, size_t n)
{
    for (size_t s = 0; s < n; s++)
        attn_seq_truncate(p, seqs[s], old_len[s]);
}

attn_status attn_layer_forward(const attn_ctx *ctx, const attn_layer *w, attn_kv_pool *p, size_t n_seqs,
                               const uint32_t *seqs, const size_t *n_new, const float *x, float *y)
{
    if (!ctx || !w || !p || !seqs || !n_new || !x || !y || !n_seqs || !w->d_model || !w->n_heads || !w->head_dim ||
        !w->wq || !w->wk || !w->wv || (unsigned)w->w_dtype > ATTN_BF16 || (unsigned)w->math > ATTN_MATH_BF16 ||
        (w->rope != ATTN_ROPE_NONE && attn_rope_check(w->rope, w->rope_dims, w->rope_theta, w->head_dim) != ATTN_OK))
        return ATTN_EINVAL;
    const size_t dm = w->d_model, h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim;
    size_t phk, phd, pvd;
    if (h % hk || !attn_kv_pool_dims_(p, &phk, &phd, &pvd) || phk != hk || phd != hd || pvd != hd)
        return ATTN_EINVAL;
    /* Live ids with new tokens first; then the token count and every new position (RoPE's angles are exact in
     * double up to 2^53) must fit before anything is sized from them. */
    for (size_t s = 0; s < n_seqs; s++)
        if (!n_new[s] || !attn_seq_live_(p, seqs[s]))
            return ATTN_EINVAL;
    size_t total = 0;
    for (size_t s = 0; s < n_seqs; s++) {
        const size_t len = attn_seq_len(p, seqs[s]);
        if (__builtin_add_overflow(total, n_new[s], &total) || len > ATTN_ROPE_MAX_POS ||
            n_new[s] > ATTN_ROPE_MAX_POS - len)
            return ATTN_ERANGE;
    }
    size_t qw, kw, nx, nq, nk, nwq, nwk, nwo, ids;
    if (attn_mul_overflow(h, hd, &qw) || attn_mul_overflow(hk, hd, &kw) || attn_mul_overflow(total, dm, &nx) ||
        attn_mul_overflow(total, qw, &nq) || attn_mul_overflow(total, kw, &nk) || attn_mul_overflow(qw, dm, &nwq) ||
        attn_mul_overflow(kw, dm, &nwk) || attn_mul_overflow(dm, qw, &nwo) ||
        attn_mul_overflow(n_seqs, sizeof(size_t) + sizeof(uint32_t), &ids))
        return ATTN_ERANGE;
    const size_t ny = w->wo ? nx : nq;
    /* Byte counts too: every array is addressed (and compared for overlap) in bytes. */
    const size_t counts[] = {nx, nq, nk, nwq, nwk, nwo};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i] > SIZE_MAX / sizeof(float) - ATTN_PAD)
            return ATTN_ERANGE;
    /* Scratch: Q, K, V, the heads (with wo), then the old lengths and a sorted copy of the ids. */
    const size_t sq = attn_round16(nq), sk = attn_round16(nk), so = w->wo ? sq : 0;
    size_t bytes = sq;
    if (__builtin_add_overflow(bytes, sk, &bytes) || __builtin_add_overflow(bytes, sk, &bytes) ||
        __builtin_add_overflow(bytes, so, &bytes) || attn_mul_overflow(bytes, sizeof(float), &bytes) ||
        __builtin_add_overflow(bytes, ids, &bytes))
        return ATTN_ERANGE;
    /* y is written last, but as in attn_self_attention it must not overlap x or a weight. */
    const size_t f4 = sizeof(float), we = attn_dtype_size(w->w_dtype);
    const void *const in[] = {x, w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->bo};
    const size_t inb[] = {nx * f4, nwq * we, nwk * we, nwk * we, nwo * we, qw * f4, kw * f4, kw * f4, dm * f4};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (attn_overlaps(y, ny * f4, in[i], inb[i]))
            return ATTN_EINVAL;

    float *buf = attn_alloc_aligned(bytes);
    if (!buf)
        return ATTN_ENOMEM;
    float *q = buf, *k = q + sq, *v = k + sk, *o = w->wo ? v + sk : y;
    size_t *old_len = (size_t *)(void *)(v + sk + so);
    uint32_t *sorted = (uint32_t *)(void *)(old_len + n_seqs);
    memcpy(sorted, seqs, n_seqs * sizeof *sorted);
    qsort(sorted, n_seqs, sizeof *sorted, attn_step_cmp_u32);
    attn_status st = ATTN_OK;
    for (size_t s = 1; s < n_seqs && st == ATTN_OK; s++)
        if (sorted[s] == sorted[s - 1])
            st = ATTN_EINVAL;
    if (st != ATTN_OK || (st = attn_pool_prepare(p, n_seqs, seqs, n_new)) != ATTN_OK)
        goto done;

    const attn_dtype t = w->w_dtype;
    const attn_math math = w->math;
    if ((st = attn_linear_typed(ctx, x, total, dm, w->wq, t, w->bq, qw, q, math)) != ATTN_OK ||
        (st = attn_linear_typed(ctx, x, total, dm, w->wk, t, w->bk, kw, k, math)) != ATTN_OK ||
        (st = attn_linear_typed(ctx, x, total, dm, w->wv, t, w->bv, kw, v, math)) != ATTN_OK)
        goto done;
    if (attn_pool_dtype(p) == ATTN_I8 && (!attn_all_finite(k, nk) || !attn_all_finite(v, nk))) {
        st = ATTN_EINVAL; /* an int8 pool refuses a non-finite row: refuse it before any sequence changes */
        goto done;
    }
    /* RoPE at each sequence's own positions, then its keys and values into the pool (attn_pool_prepare made room;
     * should an append fail all the same, the sequences before it are undone). */
    for (size_t s = 0, r = 0; s < n_seqs; r += n_new[s], s++) {
        old_len[s] = attn_seq_len(p, seqs[s]);
        if (w->rope != ATTN_ROPE_NONE) {
            attn_rope_apply(w->rope, w->rope_dims, w->rope_theta, n_new[s], h, hd, old_len[s], q + r * qw);
            attn_rope_apply(w->rope, w->rope_dims, w->rope_theta, n_new[s], hk, hd, old_len[s], k + r * kw);
        }
        if ((st = attn_seq_append(p, seqs[s], k + r * kw, v + r * kw, n_new[s])) != ATTN_OK) {
            attn_step_rollback(p, seqs, old_len, s);
            goto done;
        }
    }
    const attn_batch_desc d = {
        .n_seqs = n_seqs, .seqs = seqs, .q_lens = n_new, .n_heads = h, .mask = ATTN_MASK_CAUSAL, .math = math,
    };
    st = attn_batch_attend(ctx, p, &d, q, o, NULL);
    /* The heads in ATTN_MATH_BF16 are rounded to bfloat16 by the projection itself, as in attn_self_attention. */
    if (st == ATTN_OK && w->wo)
        st = attn_linear_typed(ctx, o, total, qw, w->wo, t, w->bo, dm, y, math);
    if (st != ATTN_OK)
        attn_step_rollback(p, seqs, old_len, n_seqs);
done:
    attn_free_aligned(buf);
    return st;
}
