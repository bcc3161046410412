/* The self-attention layer (DESIGN.md §3, §3b): Q/K/V projections, RoPE, attn_sdpa over the projected heads, the
 * output projection. The projections are attn_linear_typed: the weight matrix (fp32, half or bfloat16) is packed once
 * per call into the same 16-column fp32 panels the score kernels read keys from, widened exactly as it is packed (and
 * rounded to bfloat16 there in ATTN_MATH_BF16), then every (column block, row chunk) tile runs the ISA's
 * register-blocked GEMM micro-kernel. Each element of a result is computed by one kernel call in a fixed order, so
 * results do not depend on the thread count. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "half.h"
#include "internal.h"

/* Columns per tile (every ISA's micro-kernel width divides it) and rows per tile (a multiple of every ISA's row
 * blocking 4, 6 and 8): a tile's packed weight slice, 64 columns x k, stays in L2 while its rows go by. */
#define ATTN_GEMM_NB 64
#define ATTN_GEMM_MB 192
/* ATTN_MATH_BF16: x is rounded to bfloat16 a block of ATTN_GEMM_XB rows at a time (four row tiles), by all the
 * call's threads into one shared scratch of ATTN_GEMM_XB x k floats (k = 4096: 12 MiB; never more than x itself),
 * whose tiles then run as in fp32. So every element of x is rounded once per projection, and the scratch does not
 * grow with the thread count or the number of tokens (one rounded copy of the whole x could be as large as x;
 * rounding per tile would redo each row once per 64-column block). */
#define ATTN_GEMM_XB (4 * ATTN_GEMM_MB)

/* 1 for the weight types and math modes the projections take. */
static int attn_w_dtype_ok(attn_dtype t) { return t == ATTN_F32 || t == ATTN_F16 || t == ATTN_BF16; }
static int attn_math_ok(attn_math m) { return m == ATTN_MATH_F32 || m == ATTN_MATH_BF16; }

/* Row w[0..k) of type t into column jj of a panel (as attn_panel_row), widened exactly. */
static void attn_panel_row_typed(float *dst, const void *w, attn_dtype t, size_t k, size_t jj)
{
    if (t == ATTN_F32) {
        attn_panel_row(dst, w, k, jj);
        return;
    }
    const uint16_t *h = w;
    float *d = dst + jj;
    if (t == ATTN_BF16)
        for (size_t c = 0; c < k; c++)
            d[c * ATTN_PAD] = attn_bf16_to_f32(h[c]);
    else
        for (size_t c = 0; c < k; c++)
            d[c * ATTN_PAD] = attn_f16_to_f32(h[c]);
}

/* w [n][k] (nn.Linear layout, elements of type t) into fp32 panels of ATTN_PAD columns of w^T, zero past n, each
 * panel rounded to bfloat16 when round_bf16 (a no-op for bfloat16 weights, which skip it); bias into [np] zero past
 * n. */
static void attn_pack_w(const attn_ctx *ctx, float *bp, float *biasp, const void *w, attn_dtype t, const float *bias,
                        size_t n, size_t k, int round_bf16, int nt)
{
    const size_t panels = attn_round16(n) / ATTN_PAD, esz = attn_dtype_size(t);
    const attn_kernels *kern = ctx->kern;
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
            attn_panel_row_typed(dst, (const char *)w + (j0 + jj) * k * esz, t, k, jj);
        if (round_bf16 && t != ATTN_BF16)
            kern->round_bf16(dst, k * ATTN_PAD);
    }
    if (biasp) {
        memset(biasp, 0, attn_round16(n) * sizeof *biasp);
        memcpy(biasp, bias, n * sizeof *biasp);
    }
}

/* Tiles of an m x n product. */
static size_t attn_gemm_tiles(size_t m, size_t n)
{
    return (attn_round16(n) + ATTN_GEMM_NB - 1) / ATTN_GEMM_NB * ((m + ATTN_GEMM_MB - 1) / ATTN_GEMM_MB);
}

/* Floats of ATTN_MATH_BF16 scratch for the rounded rows of an m x k input (a multiple of 16); 0 on overflow. */
static size_t attn_xr_floats(size_t m, size_t k)
{
    size_t f;
    if (attn_mul_overflow(m < ATTN_GEMM_XB ? m : ATTN_GEMM_XB, k, &f) || f > SIZE_MAX / sizeof(float) - ATTN_PAD)
        return 0;
    return attn_round16(f);
}

/* y = a bp + bias for a's m rows (lda k) with the weights already packed in bp (and the bias in biasp): every
 * (column block, row tile) tile on the context's threads, column block outer so that a thread's consecutive tiles
 * share one packed slice. */
static void attn_gemm_run(const attn_ctx *ctx, const float *a, size_t m, size_t k, const float *bp, const float *biasp,
                          size_t n, float *y, size_t ldy)
{
    const size_t np = attn_round16(n), nrc = (m + ATTN_GEMM_MB - 1) / ATTN_GEMM_MB, tiles = attn_gemm_tiles(m, n);
    const int nt = attn_call_threads(ctx, tiles);
    (void)nt; /* read only by the OpenMP pragma */
    const attn_kernels *kern = ctx->kern;
#ifdef ATTN_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
    for (size_t tl = 0; tl < tiles; tl++) {
        const size_t j0 = tl / nrc * ATTN_GEMM_NB, r0 = tl % nrc * ATTN_GEMM_MB;
        const size_t ncp = np - j0 < ATTN_GEMM_NB ? np - j0 : ATTN_GEMM_NB;
        const attn_gemm_args g = {
            .rows = m - r0 < ATTN_GEMM_MB ? m - r0 : ATTN_GEMM_MB,
            .k = k,
            .nc = n - j0 < ncp ? n - j0 : ncp,
            .ncp = ncp,
            .a = a + r0 * k,
            .lda = k,
            .bp = bp + j0 * k,
            .bias = biasp ? biasp + j0 : NULL,
            .c = y + r0 * ldy + j0,
            .ldc = ldy,
        };
        kern->gemm(&g);
    }
}

/* y = x w^T + bias with w (type t) packed here; pack holds attn_round16(n) * (k + 1) floats. In ATTN_MATH_BF16, xr
 * holds attn_xr_floats(m, k) floats: x goes through it ATTN_GEMM_XB rounded rows at a time. Each element of y is
 * one kernel's sum over the whole reduction whatever the row blocks, so the bits depend on neither the blocks nor
 * the thread count. */
static void attn_linear_packed(const attn_ctx *ctx, const float *x, size_t m, size_t k, const void *w, attn_dtype t,
                               const float *bias, size_t n, float *y, size_t ldy, float *pack, attn_math math,
                               float *xr)
{
    const size_t np = attn_round16(n);
    float *biasp = bias ? pack + np * k : NULL;
    const int bf16 = math == ATTN_MATH_BF16;
    attn_pack_w(ctx, pack, biasp, w, t, bias, n, k, bf16, attn_call_threads(ctx, np / ATTN_PAD));
    if (!bf16) {
        attn_gemm_run(ctx, x, m, k, pack, biasp, n, y, ldy);
        return;
    }
    const attn_kernels *kern = ctx->kern;
    for (size_t b0 = 0; b0 < m; b0 += ATTN_GEMM_XB) {
        const size_t mb = m - b0 < ATTN_GEMM_XB ? m - b0 : ATTN_GEMM_XB;
        const int nt = attn_call_threads(ctx, mb);
        (void)nt; /* read only by the OpenMP pragma */
#ifdef ATTN_HAVE_OPENMP
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
        for (size_t r = 0; r < mb; r++) {
            memcpy(xr + r * k, x + (b0 + r) * k, k * sizeof *xr);
            kern->round_bf16(xr + r * k, k);
        }
        attn_gemm_run(ctx, xr, mb, k, pack, biasp, n, y + b0 * ldy, ldy);
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

/* Floats of ATTN_MATH_BF16 scratch for an m x k input (0 in ATTN_MATH_F32); SIZE_MAX on overflow. */
static size_t attn_xr_total(attn_math math, size_t m, size_t k)
{
    if (math != ATTN_MATH_BF16)
        return 0;
    const size_t f = attn_xr_floats(m, k);
    return f ? f : SIZE_MAX;
}

attn_status attn_linear_typed(const attn_ctx *ctx, const float *x, size_t n_tokens, size_t in_features,
                              const void *w, attn_dtype w_dtype, const float *b, size_t out_features, float *y,
                              attn_math math)
{
    if (!ctx || !x || !w || !y || !n_tokens || !in_features || !out_features || !attn_w_dtype_ok(w_dtype) ||
        !attn_math_ok(math))
        return ATTN_EINVAL;
    size_t nx, nw, ny;
    if (attn_mul_overflow(n_tokens, in_features, &nx) || attn_mul_overflow(out_features, in_features, &nw) ||
        attn_mul_overflow(n_tokens, out_features, &ny) || nx > SIZE_MAX / sizeof(float) ||
        nw > SIZE_MAX / sizeof(float) || ny > SIZE_MAX / sizeof(float))
        return ATTN_ERANGE;
    const size_t f4 = sizeof(float);
    if (attn_overlaps(y, ny * f4, x, nx * f4) || attn_overlaps(y, ny * f4, w, nw * attn_dtype_size(w_dtype)) ||
        attn_overlaps(y, ny * f4, b, out_features * f4))
        return ATTN_EINVAL;
    const size_t pf = attn_pack_floats(out_features, in_features),
                 xf = attn_xr_total(math, n_tokens, in_features);
    size_t total;
    if (!pf || __builtin_add_overflow(pf, xf, &total) || total > SIZE_MAX / sizeof(float))
        return ATTN_ERANGE;
    float *pack = attn_alloc_aligned(total * sizeof(float));
    if (!pack)
        return ATTN_ENOMEM;
    attn_linear_packed(ctx, x, n_tokens, in_features, w, w_dtype, b, out_features, y, out_features, pack, math,
                       xf ? pack + pf : NULL);
    attn_free_aligned(pack);
    return ATTN_OK;
}

attn_status attn_linear(const attn_ctx *ctx, const float *x, size_t n_tokens, size_t in_features, const float *w,
                        const float *b, size_t out_features, float *y)
{
    return attn_linear_typed(ctx, x, n_tokens, in_features, w, ATTN_F32, b, out_features, y, ATTN_MATH_F32);
}

attn_status attn_self_attention(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n_tokens,
                                attn_mask mask, float *y, float *probs)
{
    if (!ctx || !w || !x || !y || !n_tokens || !w->d_model || !w->n_heads || !w->head_dim || !w->wq || !w->wk ||
        !w->wv || (unsigned)mask > ATTN_MASK_CAUSAL || !attn_w_dtype_ok(w->w_dtype) || !attn_math_ok(w->math))
        return ATTN_EINVAL;
    /* The RoPE fields mean nothing without a style, so only a RoPE'd layer has them checked. */
    if (w->rope != ATTN_ROPE_NONE && attn_rope_check(w->rope, w->rope_dims, w->rope_theta, w->head_dim) != ATTN_OK)
        return ATTN_EINVAL;
    const size_t dm = w->d_model, h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim;
    if (h % hk)
        return ATTN_EINVAL;
    size_t qw, kw, nx, nq, nk, nwq, nwk, nwo, ny, np = 0;
    if (attn_mul_overflow(h, hd, &qw) || attn_mul_overflow(hk, hd, &kw) || attn_mul_overflow(n_tokens, dm, &nx) ||
        attn_mul_overflow(n_tokens, qw, &nq) || attn_mul_overflow(n_tokens, kw, &nk) ||
        attn_mul_overflow(qw, dm, &nwq) || attn_mul_overflow(kw, dm, &nwk) || attn_mul_overflow(dm, qw, &nwo) ||
        (probs && (attn_mul_overflow(n_tokens, n_tokens, &np) || attn_mul_overflow(np, h, &np))) ||
        (w->rope != ATTN_ROPE_NONE && n_tokens > (size_t)1 << 53)) /* RoPE positions exact in double */
        return ATTN_ERANGE;
    ny = w->wo ? nx : nq;
    /* Byte counts too: every array below is addressed (and compared for overlap) in bytes. */
    const size_t counts[] = {nx, nq, nk, nwq, nwk, nwo, np};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (counts[i] > SIZE_MAX / sizeof(float) - ATTN_PAD)
            return ATTN_ERANGE;
    /* Outputs must not overlap the input or any weight (they are written while those are still being read). */
    const size_t f4 = sizeof(float), we = attn_dtype_size(w->w_dtype);
    const void *const in[] = {x, w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->bo};
    const size_t inb[] = {nx * f4, nwq * we, nwk * we, nwk * we, nwo * we, qw * f4, kw * f4, kw * f4, dm * f4};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
        if (attn_overlaps(y, ny * f4, in[i], inb[i]) || attn_overlaps(probs, np * f4, in[i], inb[i]))
            return ATTN_EINVAL;
    if (attn_overlaps(y, ny * f4, probs, np * f4))
        return ATTN_EINVAL;

    /* Scratch: one weight packing (and in ATTN_MATH_BF16 the rows of x or of the heads rounded per thread), then Q,
     * K, V and the concatenated heads (when there is an output projection). */
    size_t pf = attn_pack_floats(qw, dm), pk = attn_pack_floats(kw, dm), po = w->wo ? attn_pack_floats(dm, qw) : 1;
    if (!pf || !pk || !po)
        return ATTN_ERANGE;
    pf = pf > pk ? pf : pk;
    pf = pf > po ? pf : po;
    size_t xf = attn_xr_total(w->math, n_tokens, dm), xo = w->wo ? attn_xr_total(w->math, n_tokens, qw) : 0;
    if (xf == SIZE_MAX || xo == SIZE_MAX)
        return ATTN_ERANGE;
    xf = xf > xo ? xf : xo;
    const size_t sq = attn_round16(nq), sk = attn_round16(nk), so = w->wo ? sq : 0;
    size_t total = pf;
    if (__builtin_add_overflow(total, xf, &total) || __builtin_add_overflow(total, sq, &total) ||
        __builtin_add_overflow(total, sk, &total) || __builtin_add_overflow(total, sk, &total) ||
        __builtin_add_overflow(total, so, &total) || total > SIZE_MAX / sizeof(float))
        return ATTN_ERANGE;
    float *buf = attn_alloc_aligned(total * sizeof(float));
    if (!buf)
        return ATTN_ENOMEM;
    /* pf and xf are multiples of 16 floats: every array starts 64-byte aligned. */
    float *pack = buf, *xr = xf ? pack + pf : NULL, *q = pack + pf + xf, *k = q + sq, *v = k + sk,
          *o = w->wo ? v + sk : y;

    const attn_dtype t = w->w_dtype;
    const attn_math math = w->math;
    attn_linear_packed(ctx, x, n_tokens, dm, w->wq, t, w->bq, qw, q, qw, pack, math, xr);
    attn_linear_packed(ctx, x, n_tokens, dm, w->wk, t, w->bk, kw, k, kw, pack, math, xr);
    attn_linear_packed(ctx, x, n_tokens, dm, w->wv, t, w->bv, kw, v, kw, pack, math, xr);
    if (w->rope != ATTN_ROPE_NONE) {
        /* Checked above, so these cannot fail. */
        attn_rope_apply(w->rope, w->rope_dims, w->rope_theta, n_tokens, h, hd, 0, q);
        attn_rope_apply(w->rope, w->rope_dims, w->rope_theta, n_tokens, hk, hd, 0, k);
    }
    const attn_sdpa_desc d = {
        .batch = 1, .n_heads = h, .n_kv_heads = hk, .q_len = n_tokens, .kv_len = n_tokens, .head_dim = hd,
        .layout = ATTN_LAYOUT_BSHD, .mask = mask, .math = math,
    };
    attn_status st = attn_sdpa(ctx, &d, q, k, v, o, probs);
    if (st == ATTN_OK && w->wo)
        attn_linear_packed(ctx, o, n_tokens, qw, w->wo, t, w->bo, dm, y, dm, pack, math, xr);
    attn_free_aligned(buf);
    return st;
}
