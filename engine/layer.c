/* The self-attention layer (DESIGN.md §3): Q/K/V projections, attn_sdpa over the projected heads, the output
 * projection. The projections are attn_linear: the weight matrix is packed once per call into the same 16-column
 * panels the score kernels read keys from, then every (column block, row chunk) tile runs the ISA's register-blocked
 * GEMM micro-kernel. Each element of a result is computed by one kernel call in a fixed order, so results do not
 * depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Columns per tile (every ISA's micro-kernel width divides it) and rows per tile (a multiple of every ISA's row
 * blocking 4, 6 and 8): a tile's packed weight slice, 64 columns x k, stays in L2 while its rows go by. */
#define ATTN_GEMM_NB 64
#define ATTN_GEMM_MB 192

/* 1 if the byte ranges of n floats at p and m floats at q overlap (either may be NULL). */
static int attn_overlaps(const void *p, size_t n, const void *q, size_t m)
{
    if (!p || !q || !n || !m)
        return 0;
    const uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return a < b + m * sizeof(float) && b < a + n * sizeof(float);
}

/* w [n][k] (nn.Linear layout) into panels of ATTN_PAD columns of w^T, zero past n; bias into [np] zero past n. */
static void attn_pack_w(float *bp, float *biasp, const float *w, const float *bias, size_t n, size_t k, int nt)
{
    const size_t panels = attn_round16(n) / ATTN_PAD;
    (void)nt;
#ifdef ATTN_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (size_t p = 0; p < panels; p++) {
        float *dst = bp + p * k * ATTN_PAD;
        const size_t j0 = p * ATTN_PAD, nj = n - j0 < ATTN_PAD ? n - j0 : ATTN_PAD;
        if (nj < ATTN_PAD)
            memset(dst, 0, k * ATTN_PAD * sizeof *dst);
        for (size_t jj = 0; jj < nj; jj++)
            attn_panel_row(dst, w + (j0 + jj) * k, k, jj);
    }
    if (biasp) {
        memset(biasp, 0, attn_round16(n) * sizeof *biasp);
        memcpy(biasp, bias, n * sizeof *biasp);
    }
}

/* y = x w^T + bias with a packed w; pack holds attn_round16(n) * (k + 1) floats. */
static void attn_linear_packed(const attn_ctx *ctx, const float *x, size_t m, size_t k, const float *w,
                               const float *bias, size_t n, float *y, size_t ldy, float *pack)
{
    const size_t np = attn_round16(n);
    float *biasp = bias ? pack + np * k : NULL;
    const size_t ncb = (np + ATTN_GEMM_NB - 1) / ATTN_GEMM_NB, nrc = (m + ATTN_GEMM_MB - 1) / ATTN_GEMM_MB;
    const size_t tiles = ncb * nrc;
    const int nt = attn_call_threads(ctx, tiles);
    (void)nt; /* read only by the OpenMP pragma */
    attn_pack_w(pack, biasp, w, bias, n, k, attn_call_threads(ctx, np / ATTN_PAD));
    const attn_kernels *kern = ctx->kern;
    /* Column block outer: a thread's consecutive tiles share one packed slice. */
#ifdef ATTN_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (size_t t = 0; t < tiles; t++) {
        const size_t j0 = t / nrc * ATTN_GEMM_NB, r0 = t % nrc * ATTN_GEMM_MB;
        const size_t ncp = np - j0 < ATTN_GEMM_NB ? np - j0 : ATTN_GEMM_NB;
        const attn_gemm_args g = {
            .rows = m - r0 < ATTN_GEMM_MB ? m - r0 : ATTN_GEMM_MB,
            .k = k,
            .nc = n - j0 < ncp ? n - j0 : ncp,
            .ncp = ncp,
            .a = x + r0 * k,
            .lda = k,
            .bp = pack + j0 * k,
            .bias = biasp ? biasp + j0 : NULL,
            .c = y + r0 * ldy + j0,
            .ldc = ldy,
        };
        kern->gemm(&g);
    }
}

/* Floats of packing space for an n x k weight: panels plus a padded bias; 0 on overflow. */
static size_t attn_pack_floats(size_t n, size_t k)
{
    size_t f;
    if (n > SIZE_MAX - ATTN_PAD || k == SIZE_MAX || attn_mul_overflow(attn_round16(n), k + 1, &f) ||
        f > SIZE_MAX / sizeof(float))
        return 0;
    return f;
}

attn_status attn_linear(const attn_ctx *ctx, const float *x, size_t n_tokens, size_t in_features, const float *w,
                        const float *b, size_t out_features, float *y)
{
    if (!ctx || !x || !w || !y || !n_tokens || !in_features || !out_features)
        return ATTN_EINVAL;
    size_t nx, nw, ny;
    if (attn_mul_overflow(n_tokens, in_features, &nx) || attn_mul_overflow(out_features, in_features, &nw) ||
        attn_mul_overflow(n_tokens, out_features, &ny) || nx > SIZE_MAX / sizeof(float) ||
        nw > SIZE_MAX / sizeof(float) || ny > SIZE_MAX / sizeof(float))
        return ATTN_ERANGE;
    if (attn_overlaps(y, ny, x, nx) || attn_overlaps(y, ny, w, nw) || attn_overlaps(y, ny, b, out_features))
        return ATTN_EINVAL;
    const size_t pf = attn_pack_floats(out_features, in_features);
    if (!pf)
        return ATTN_ERANGE;
    float *pack = attn_alloc_aligned(pf * sizeof(float));
    if (!pack)
        return ATTN_ENOMEM;
    attn_linear_packed(ctx, x, n_tokens, in_features, w, b, out_features, y, out_features, pack);
    attn_free_aligned(pack);
    return ATTN_OK;
}

attn_status attn_self_attention(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n_tokens,
                                attn_mask mask, float *y, float *probs)
{
    if (!ctx || !w || !x || !y || !n_tokens || !w->d_model || !w->n_heads || !w->head_dim || !w->wq || !w->wk ||
        !w->wv || (unsigned)mask > ATTN_MASK_CAUSAL)
        return ATTN_EINVAL;
    const size_t dm = w->d_model, h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim;
    if (h % hk)
        return ATTN_EINVAL;
    size_t qw, kw, nx, nq, nk, nwq, nwk, nwo, ny, np = 0;
    if (attn_mul_overflow(h, hd, &qw) || attn_mul_overflow(hk, hd, &kw) || attn_mul_overflow(n_tokens, dm, &nx) ||
        attn_mul_overflow(n_tokens, qw, &nq) || attn_mul_overflow(n_tokens, kw, &nk) ||
        attn_mul_overflow(qw, dm, &nwq) || attn_mul_overflow(kw, dm, &nwk) || attn_mul_overflow(dm, qw, &nwo) ||
        (probs && (attn_mul_overflow(n_tokens, n_tokens, &np) || attn_mul_overflow(np, h, &np))))
        return ATTN_ERANGE;
    ny = w->wo ? nx : nq;
    /* Byte counts too: every array below is addressed (and compared for overlap) in bytes. */
    const size_t counts[] = {nx, nq, nk, nwq, nwk, nwo, np};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i] > SIZE_MAX / sizeof(float) - ATTN_PAD)
            return ATTN_ERANGE;
    /* Outputs must not overlap the input or any weight (they are written while those are still being read). */
    const void *const in[] = {x, w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->bo};
    const size_t inn[] = {nx, nwq, nwk, nwk, nwo, qw, kw, kw, dm};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (attn_overlaps(y, ny, in[i], inn[i]) || attn_overlaps(probs, np, in[i], inn[i]))
            return ATTN_EINVAL;
    if (attn_overlaps(y, ny, probs, np))
        return ATTN_EINVAL;

    /* Scratch: Q, K, V, the concatenated heads (when there is an output projection) and one weight packing. */
    size_t pf = attn_pack_floats(qw, dm), pk = attn_pack_floats(kw, dm), po = w->wo ? attn_pack_floats(dm, qw) : 1;
    if (!pf || !pk || !po)
        return ATTN_ERANGE;
    pf = pf > pk ? pf : pk;
    pf = pf > po ? pf : po;
    const size_t sq = attn_round16(nq), sk = attn_round16(nk), so = w->wo ? sq : 0;
    size_t total = pf;
    if (__builtin_add_overflow(total, sq, &total) || __builtin_add_overflow(total, sk, &total) ||
        __builtin_add_overflow(total, sk, &total) || __builtin_add_overflow(total, so, &total) ||
        total > SIZE_MAX / sizeof(float))
        return ATTN_ERANGE;
    float *buf = attn_alloc_aligned(total * sizeof(float));
    if (!buf)
        return ATTN_ENOMEM;
    float *pack = buf, *q = pack + pf, *k = q + sq, *v = k + sk, *o = w->wo ? v + sk : y;

    attn_linear_packed(ctx, x, n_tokens, dm, w->wq, w->bq, qw, q, qw, pack);
    attn_linear_packed(ctx, x, n_tokens, dm, w->wk, w->bk, kw, k, kw, pack);
    attn_linear_packed(ctx, x, n_tokens, dm, w->wv, w->bv, kw, v, kw, pack);
    const attn_sdpa_desc d = {
        .batch = 1, .n_heads = h, .n_kv_heads = hk, .q_len = n_tokens, .kv_len = n_tokens, .head_dim = hd,
        .layout = ATTN_LAYOUT_BSHD, .mask = mask,
    };
    attn_status st = attn_sdpa(ctx, &d, q, k, v, o, probs);
    if (st == ATTN_OK && w->wo)
        attn_linear_packed(ctx, o, n_tokens, qw, w->wo, w->bo, dm, y, dm, pack);
    attn_free_aligned(buf);
    return st;
}
