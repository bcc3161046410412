/* attn_self_attention and attn_linear on every ISA this CPU runs: against torch.nn.MultiheadAttention (the cases of
 * tests/mha_fixtures.h, written by tests/fixtures/gen_mha.py with torch's outputs as exact hex floats), against the
 * float64 reference of the whole layer (tc_ref_layer) on odd shapes, GQA/MQA, with and without biases and output
 * projection, and the projection GEMM against float64 across its 64-column and 192-row tile edges. Then thread-count
 * independence (bitwise) and every argument error, with outputs NaN-poisoned and guarded throughout. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mha_fixtures.h"

/* ---- helpers ---- */

static attn_layer fixture_layer(const mha_fixture *f)
{
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = f->d_model;
    w.n_heads = f->n_heads;
    w.n_kv_heads = f->n_kv_heads;
    w.head_dim = f->head_dim;
    w.wq = f->wq, w.wk = f->wk, w.wv = f->wv, w.wo = f->wo;
    w.bq = f->bq, w.bk = f->bk, w.bv = f->bv, w.bo = f->bo;
    return w;
}

static double *widen(const float *src, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    cr_assert(d != NULL, "out of memory");
    for (size_t i = 0; i < n; i++)
        d[i] = src[i];
    return d;
}

static attn_ctx *make_ctx(attn_isa isa, int threads)
{
    attn_ctx *ctx = NULL;
    attn_status s = tc_ctx_create(&ctx, isa, threads, 0, 0);
    cr_assert_eq(s, ATTN_OK, "attn_ctx_create(isa=%s, threads=%d) gave %d (%s)", attn_isa_name(isa), threads,
                 (int)s, attn_strerror(s));
    return ctx;
}

static void print_layer_stats(const char *what, const tc_layer_stats st[TC_MAX_ISAS])
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++) {
        char line[256];
        tc_layer_stats_str(isas[i], &st[isas[i]], line, sizeof line);
        fprintf(stderr, "[stat] %-24s %s (seed %" PRIu64 ")\n", what, line, tc_seed());
    }
}

/* A random layer and input, each array one float past its allocation's start (no alignment promised). */
typedef struct layer_case {
    size_t d_model, h, hk, hd;
    unsigned bias; /* bit 0 bq, 1 bk, 2 bv, 3 bo */
    int wo;
} layer_case;

typedef struct rand_layer {
    attn_layer w;
    float *x;
    float *alloc[9];
} rand_layer;

static float *rand_floats(float **alloc, size_t n, tc_rng *r, float a)
{
    *alloc = malloc((n + 1) * sizeof(float));
    cr_assert(*alloc != NULL, "out of memory");
    float *p = *alloc + 1;
    for (size_t i = 0; i < n; i++)
        p[i] = tc_rng_float(r, -a, a);
    return p;
}

/* Scales: x in [-1.5, 1.5] and the Q/K weights in +-2.5/sqrt(d_model) give q, k entries of about 1.2 and scores of
 * std ~1.5 (softmax neither flat nor one-hot); wo keeps y of order 1; biases in [-0.5, 0.5]. */
static void rand_layer_make(rand_layer *L, const layer_case *c, size_t n, uint64_t seed)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    memset(L, 0, sizeof *L);
    const size_t hk = c->hk ? c->hk : c->h, qw = c->h * c->hd, kw = hk * c->hd, dm = c->d_model;
    const float a = 2.5f / sqrtf((float)dm);
    attn_layer *w = &L->w;
    w->d_model = dm;
    w->n_heads = c->h;
    w->n_kv_heads = c->hk;
    w->head_dim = c->hd;
    L->x = rand_floats(&L->alloc[0], n * dm, &r, 1.5f);
    w->wq = rand_floats(&L->alloc[1], qw * dm, &r, a);
    w->wk = rand_floats(&L->alloc[2], kw * dm, &r, a);
    w->wv = rand_floats(&L->alloc[3], kw * dm, &r, a);
    if (c->wo)
        w->wo = rand_floats(&L->alloc[4], dm * qw, &r, sqrtf(3.0f / (float)qw));
    if (c->bias & 1)
        w->bq = rand_floats(&L->alloc[5], qw, &r, 0.5f);
    if (c->bias & 2)
        w->bk = rand_floats(&L->alloc[6], kw, &r, 0.5f);
    if (c->bias & 4)
        w->bv = rand_floats(&L->alloc[7], kw, &r, 0.5f);
    if (c->bias & 8)
        w->bo = rand_floats(&L->alloc[8], dm, &r, 0.5f);
}

static void rand_layer_free(rand_layer *L)
{
    for (int i = 0; i < 9; i++)
        free(L->alloc[i]);
    memset(L, 0, sizeof *L);
}

/* ---- against torch.nn.MultiheadAttention ---- */

/* Every fixture on every ISA, with probs and without, on the default thread count and on one thread. Masked probs
 * must be exactly 0 and rows must sum to 1 (tc_check_layer). */
Test(layer, torch_fixtures)
{
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    tc_layer_stats st[TC_MAX_ISAS] = { { 0 } };
    for (size_t fi = 0; fi < MHA_N_FIXTURES; fi++) {
        const mha_fixture *f = &mha_fixtures[fi];
        attn_layer w = fixture_layer(f);
        cr_assert_eq(tc_layer_width(&w), f->d_model, "%s: y is [n][d_model] in torch", f->name);
        double *ry = widen(f->y, f->n_tokens * f->d_model);
        double *rp = widen(f->probs, f->n_heads * f->n_tokens * f->n_tokens);
        for (int ii = 0; ii < n_isa; ii++) {
            for (int threads = 0; threads <= 1; threads++) {
                attn_ctx *ctx = make_ctx(isas[ii], threads);
                for (int probs = 1; probs >= 0; probs--) {
                    char msg[1024];
                    int bad = tc_check_layer(ctx, &w, f->x, f->n_tokens, f->mask, probs, ry, rp, TC_LAYER_TOL,
                                             &st[isas[ii]], msg, sizeof msg);
                    cr_assert(!bad, "fixture %s: %s", f->name, msg);
                }
                attn_ctx_destroy(ctx);
            }
        }
        free(ry);
        free(rp);
    }
    print_layer_stats("layer::torch_fixtures", st);
}

/* n_kv_heads = 0 means n_heads: the fixtures without GQA again, written that way. */
Test(layer, torch_fixtures_kv_heads_default)
{
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    for (size_t fi = 0; fi < MHA_N_FIXTURES; fi++) {
        const mha_fixture *f = &mha_fixtures[fi];
        if (f->n_kv_heads != f->n_heads)
            continue;
        attn_layer w = fixture_layer(f);
        w.n_kv_heads = 0;
        double *ry = widen(f->y, f->n_tokens * f->d_model);
        double *rp = widen(f->probs, f->n_heads * f->n_tokens * f->n_tokens);
        for (int ii = 0; ii < n_isa; ii++) {
            attn_ctx *ctx = make_ctx(isas[ii], 0);
            char msg[1024];
            int bad = tc_check_layer(ctx, &w, f->x, f->n_tokens, f->mask, 1, ry, rp, TC_LAYER_TOL, NULL, msg,
                                     sizeof msg);
            cr_assert(!bad, "fixture %s, n_kv_heads 0: %s", f->name, msg);
            attn_ctx_destroy(ctx);
        }
        free(ry);
        free(rp);
    }
}

/* The float64 reference that the random tests trust is itself torch's layer: on every fixture it lands within
 * torch's own fp32 rounding (the generator prints that, ~3e-7) of torch's output. */
Test(layer, reference_matches_torch)
{
    double worst_y = 0.0, worst_p = 0.0;
    for (size_t fi = 0; fi < MHA_N_FIXTURES; fi++) {
        const mha_fixture *f = &mha_fixtures[fi];
        attn_layer w = fixture_layer(f);
        const size_t ny = f->n_tokens * f->d_model, np = f->n_heads * f->n_tokens * f->n_tokens;
        double *y = malloc(ny * sizeof *y), *p = malloc(np * sizeof *p);
        cr_assert(y && p);
        cr_assert_eq(tc_ref_layer(&w, f->x, f->n_tokens, f->mask, y, p), 0);
        double mx = 1.0, ey = 0.0, ep = 0.0;
        for (size_t i = 0; i < ny; i++) {
            mx = fabs(y[i]) > mx ? fabs(y[i]) : mx;
            ey = fabs(y[i] - f->y[i]) > ey ? fabs(y[i] - f->y[i]) : ey;
        }
        for (size_t i = 0; i < np; i++) {
            ep = fabs(p[i] - f->probs[i]) > ep ? fabs(p[i] - f->probs[i]) : ep;
            if (f->probs[i] == 0.0f)
                cr_assert_eq(p[i], 0.0, "%s: torch masks probs[%zu], the reference gives %g", f->name, i, p[i]);
        }
        cr_assert(ey / mx <= 2e-6 && ep <= 2e-6, "%s: reference vs torch: y %.3g probs %.3g", f->name, ey / mx, ep);
        worst_y = ey / mx > worst_y ? ey / mx : worst_y;
        worst_p = ep > worst_p ? ep : worst_p;
        free(y);
        free(p);
    }
    fprintf(stderr, "[stat] %-24s float64 reference vs torch fp32: max err y %.2e probs %.2e\n",
            "layer::reference_vs_torch", worst_y, worst_p);
}

/* ---- against the float64 reference ---- */

static const layer_case random_cases[] = {
    { 70, 6, 2, 13, 0xf, 1 }, /* GQA 6/2, head_dim 13, every bias */
    { 70, 4, 1, 64, 0x0, 1 }, /* MQA 4/1, head_dim 64, no bias */
    { 70, 6, 2, 13, 0x5, 0 }, /* bq and bv only, no wo: y is [n][78] */
    { 70, 4, 0, 64, 0xa, 1 }, /* n_kv_heads 0 (= 4), bk and bo only (bk adds q.bk to a whole score row: no effect) */
    { 33, 3, 3, 11, 0xf, 0 }, /* everything odd, no wo */
    { 100, 5, 5, 13, 0x7, 1 }, /* wo without bo */
    { 70, 2, 1, 64, 0x8, 0 }, /* bo without wo: y is the concatenated heads (attn.h), bo is not added */
};

Test(layer, random_vs_float64, .timeout = 600)
{
    static const size_t lens[] = { 1, 2, 7, 33, 200 };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    tc_layer_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t ci = 0; ci < sizeof random_cases / sizeof random_cases[0]; ci++) {
        const layer_case *c = &random_cases[ci];
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            for (int causal = 0; causal <= 1; causal++) {
                const size_t n = lens[li];
                const attn_mask mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
                rand_layer L;
                rand_layer_make(&L, c, n, tc_mix(tc_seed() ^ 0x1a7e4, id++));
                const size_t ny = n * tc_layer_width(&L.w), np = c->h * n * n;
                double *ry = malloc(ny * sizeof *ry), *rp = malloc(np * sizeof *rp);
                cr_assert(ry && rp);
                cr_assert_eq(tc_ref_layer(&L.w, L.x, n, mask, ry, rp), 0);
                for (int ii = 0; ii < n_isa; ii++) {
                    attn_ctx *ctx = make_ctx(isas[ii], 0);
                    for (int probs = 0; probs <= 1; probs++) {
                        char msg[1024];
                        int bad = tc_check_layer(ctx, &L.w, L.x, n, mask, probs, ry, rp, TC_LAYER_TOL,
                                                 &st[isas[ii]], msg, sizeof msg);
                        cr_assert(!bad, "case %zu (id %" PRIu64 "): %s", ci, id - 1, msg);
                    }
                    attn_ctx_destroy(ctx);
                }
                free(ry);
                free(rp);
                rand_layer_free(&L);
            }
        }
    }
    print_layer_stats("layer::random_vs_float64", st);
}

/* Layers in which q, k, v or the heads span several GEMM tiles (more than 64 columns, more than 192 rows). */
Test(layer, random_tiles_vs_float64, .timeout = 600)
{
    static const layer_case cases[] = {
        { 70, 6, 2, 13, 0xf, 1 }, /* q 78 wide: two column blocks, the second 14 wide */
        { 130, 3, 1, 64, 0x9, 1 }, /* q 192, k/v 64, y 130: three column blocks of wo */
    };
    static const size_t lens[] = { 193, 390 };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    tc_layer_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++)
        for (size_t li = 0; li < 2; li++) {
            const size_t n = lens[li];
            const attn_mask mask = li ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            rand_layer L;
            rand_layer_make(&L, &cases[ci], n, tc_mix(tc_seed() ^ 0x711e5, id++));
            const size_t ny = n * tc_layer_width(&L.w), np = cases[ci].h * n * n;
            double *ry = malloc(ny * sizeof *ry), *rp = malloc(np * sizeof *rp);
            cr_assert(ry && rp);
            cr_assert_eq(tc_ref_layer(&L.w, L.x, n, mask, ry, rp), 0);
            for (int ii = 0; ii < n_isa; ii++) {
                attn_ctx *ctx = make_ctx(isas[ii], 0);
                char msg[1024];
                int bad = tc_check_layer(ctx, &L.w, L.x, n, mask, (int)li, ry, rp, TC_LAYER_TOL, &st[isas[ii]],
                                         msg, sizeof msg);
                cr_assert(!bad, "%s", msg);
                attn_ctx_destroy(ctx);
            }
            free(ry);
            free(rp);
            rand_layer_free(&L);
        }
    print_layer_stats("layer::random_tiles", st);
}

/* ---- attn_linear ---- */

typedef struct lin_stats {
    unsigned long cases;
    double err_u;   /* max |y - ref| / (2^-24 * (|b| + sum |x w|)): error in units of the dot product's scale */
    double err_rel; /* max |y - ref| / max(1, max|ref|) */
} lin_stats;

/* y = x w^T + b on ctx into a poisoned, guarded buffer against float64. Each element must be within the worst-case
 * bound of any fp32 summation order (FMA or not), (k + 2) * 2^-24 * (|b| + sum_i |x_i w_i|): rigorous, so never
 * flaky, yet a dropped or doubled term (of order sum / k) is far outside it. Returns 0 on pass. */
static int check_linear(const attn_ctx *ctx, const float *x, size_t m, size_t k, const float *w, const float *b,
                        size_t n, lin_stats *st, char *msg, size_t len)
{
    tc_buf y;
    if (tc_buf_alloc(&y, m * n)) {
        snprintf(msg, len, "out of memory");
        return 1;
    }
    int bad = 0;
    attn_status s = attn_linear(ctx, x, m, k, w, b, n, y.p);
    if (s != ATTN_OK) {
        snprintf(msg, len, "%s: attn_linear(m=%zu k=%zu n=%zu%s) gave %d (%s)", attn_isa_name(attn_ctx_isa(ctx)), m,
                 k, n, b ? " bias" : "", (int)s, attn_strerror(s));
        bad = 1;
    } else if (!tc_buf_guards_ok(&y)) {
        snprintf(msg, len, "%s: attn_linear(m=%zu k=%zu n=%zu%s) wrote outside y", attn_isa_name(attn_ctx_isa(ctx)),
                 m, k, n, b ? " bias" : "");
        bad = 1;
    }
    double eu = 0.0, max_ref = 0.0, max_err = 0.0;
    for (size_t r = 0; r < m && !bad; r++)
        for (size_t j = 0; j < n && !bad; j++) {
            double t = b ? (double)b[j] : 0.0, abs = b ? fabs((double)b[j]) : 0.0;
            for (size_t i = 0; i < k; i++) {
                const double p = (double)x[r * k + i] * (double)w[j * k + i];
                t += p;
                abs += fabs(p);
            }
            const double got = y.p[r * n + j], e = fabs(got - t), unit = ldexp(abs, -24);
            if (!(e <= (double)(k + 2) * unit)) {
                snprintf(msg, len,
                         "%s, %d threads: attn_linear(m=%zu k=%zu n=%zu%s) y[%zu][%zu] = %.9g, reference %.9g: error "
                         "%.3g > bound %.3g (seed %" PRIu64 ")",
                         attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx), m, k, n, b ? " bias" : "", r, j,
                         got, t, e, (double)(k + 2) * unit, tc_seed());
                bad = 1;
            }
            if (unit > 0 && e / unit > eu)
                eu = e / unit;
            max_ref = fabs(t) > max_ref ? fabs(t) : max_ref;
            max_err = e > max_err ? e : max_err;
        }
    if (!bad && st) {
        st->cases++;
        st->err_u = eu > st->err_u ? eu : st->err_u;
        const double rel = max_err / (max_ref > 1.0 ? max_ref : 1.0);
        st->err_rel = rel > st->err_rel ? rel : st->err_rel;
    }
    tc_buf_free(&y);
    return bad;
}

static void print_lin_stats(const char *what, const lin_stats st[TC_MAX_ISAS])
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++)
        fprintf(stderr,
                "[stat] %-24s %-6s: %4lu cases, max err %.2f u*sum|xw| (rel. to max(1,|ref|) %.2e) (seed %" PRIu64
                ")\n",
                what, attn_isa_name(isas[i]), st[isas[i]].cases, st[isas[i]].err_u, st[isas[i]].err_rel, tc_seed());
}

/* Runs every (m, k, n) of the lists, with and without bias, on every ISA; inputs one float off alignment. */
static void linear_sweep(const char *what, const size_t *ms, size_t nm, const size_t *ks, size_t nk, const size_t *ns,
                         size_t nn, uint64_t salt)
{
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    attn_ctx *ctx[TC_MAX_ISAS];
    for (int ii = 0; ii < n_isa; ii++)
        ctx[ii] = make_ctx(isas[ii], 0);
    lin_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t a = 0; a < nm; a++)
        for (size_t c = 0; c < nk; c++)
            for (size_t e = 0; e < nn; e++) {
                const size_t m = ms[a], k = ks[c], n = ns[e];
                tc_rng r;
                tc_rng_init(&r, tc_mix(tc_seed() ^ salt, id++));
                float *xa, *wa, *ba;
                const float *x = rand_floats(&xa, m * k, &r, 1.0f), *w = rand_floats(&wa, n * k, &r, 1.0f);
                const float *b = rand_floats(&ba, n, &r, 1.0f);
                for (int ii = 0; ii < n_isa; ii++)
                    for (int bias = 0; bias <= 1; bias++) {
                        char msg[1024];
                        int bad = check_linear(ctx[ii], x, m, k, w, bias ? b : NULL, n, &st[isas[ii]], msg,
                                               sizeof msg);
                        cr_assert(!bad, "%s", msg);
                    }
                free(xa), free(wa), free(ba);
            }
    for (int ii = 0; ii < n_isa; ii++)
        attn_ctx_destroy(ctx[ii]);
    print_lin_stats(what, st);
}

/* Small odd shapes: every row count of a micro-kernel's row tail (the blockings are 4, 6 and 8 rows), reductions
 * below and around a vector, column counts around 16 (a panel) and 64 (a tile). */
Test(layer, linear_small_shapes, .timeout = 600)
{
    static const size_t ms[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 };
    static const size_t ks[] = { 1, 2, 3, 16, 17, 70 };
    static const size_t ns[] = { 1, 2, 15, 16, 17, 63, 64, 65, 100, 128, 129, 130 };
    linear_sweep("layer::linear_small", ms, sizeof ms / sizeof ms[0], ks, sizeof ks / sizeof ks[0], ns,
                 sizeof ns / sizeof ns[0], 0x11ea5);
}

/* Row tiles of 192 and column blocks of 64: the edges on both sides of each, and several of both. */
Test(layer, linear_tile_edges, .timeout = 600)
{
    static const size_t ms[] = { 191, 192, 193, 385, 400 };
    static const size_t ks[] = { 7, 70, 129 };
    static const size_t ns[] = { 200, 257 };
    linear_sweep("layer::linear_tiles", ms, sizeof ms / sizeof ms[0], ks, sizeof ks / sizeof ks[0], ns,
                 sizeof ns / sizeof ns[0], 0x711e);
}

/* A few larger reductions: the bound grows with k, the measured error should not approach it. */
Test(layer, linear_long_reductions, .timeout = 600)
{
    static const size_t ms[] = { 5, 97 };
    static const size_t ks[] = { 512, 1031 };
    static const size_t ns[] = { 33, 129 };
    linear_sweep("layer::linear_long_k", ms, 2, ks, 2, ns, 2, 0x10a9);
}

/* nn.Linear semantics on a hand-checked case: y = x w^T + b with w [out][in]. */
Test(layer, linear_exact_small)
{
    const float x[2 * 3] = { 1, 2, 3, -1, 0.5f, 4 };
    const float w[4 * 3] = { 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1 };
    const float b[4] = { 10, 20, 30, 40 };
    const float want[2 * 4] = { 11, 22, 33, 46, 9, 20.5f, 34, 43.5f };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = make_ctx(isas[ii], 0);
        tc_buf y;
        cr_assert_eq(tc_buf_alloc(&y, 8), 0);
        cr_assert_eq(attn_linear(ctx, x, 2, 3, w, b, 4, y.p), ATTN_OK);
        cr_assert(tc_buf_guards_ok(&y));
        for (int i = 0; i < 8; i++)
            cr_assert_eq(y.p[i], want[i], "%s: y[%d] = %g, want %g", attn_isa_name(isas[ii]), i, (double)y.p[i],
                         (double)want[i]);
        tc_buf_fill_bits(&y, TC_POISON_BITS);
        cr_assert_eq(attn_linear(ctx, x, 2, 3, w, NULL, 4, y.p), ATTN_OK);
        for (int i = 0; i < 8; i++)
            cr_assert_eq(y.p[i], want[i] - b[i % 4], "%s: no bias: y[%d] = %g", attn_isa_name(isas[ii]), i,
                         (double)y.p[i]);
        tc_buf_free(&y);
        attn_ctx_destroy(ctx);
    }
}

/* ---- threads ---- */

static size_t first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tc_f2u(a[i]) != tc_f2u(b[i]))
            return i;
    return n;
}

/* attn_linear and attn_self_attention give the same bits on 1, 2 and 3 threads (shapes with many tiles). */
Test(layer, threads_bitwise, .timeout = 600)
{
    static const int threads[] = { 1, 2, 3 };
    static const layer_case lc[] = { { 70, 6, 2, 13, 0xf, 1 }, { 130, 4, 1, 64, 0x0, 0 } };
    static const size_t lens[] = { 200, 397 };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 0x7d));
    const size_t m = 400, k = 70, n = 200;
    float *xa, *wa, *ba;
    const float *x = rand_floats(&xa, m * k, &r, 1.0f), *w = rand_floats(&wa, n * k, &r, 1.0f);
    const float *b = rand_floats(&ba, n, &r, 1.0f);
    rand_layer L[2];
    for (int li = 0; li < 2; li++)
        rand_layer_make(&L[li], &lc[li], lens[li], tc_mix(tc_seed(), 0x7e + (uint64_t)li));
    for (int ii = 0; ii < n_isa; ii++) {
        tc_buf y[3], ly[2][3], lp[2][3];
        for (int ti = 0; ti < 3; ti++) {
            attn_ctx *ctx = make_ctx(isas[ii], threads[ti]);
            cr_assert_eq(attn_ctx_threads(ctx), threads[ti]);
            cr_assert_eq(tc_buf_alloc(&y[ti], m * n), 0);
            cr_assert_eq(attn_linear(ctx, x, m, k, w, b, n, y[ti].p), ATTN_OK);
            for (int li = 0; li < 2; li++) {
                const size_t nt = lens[li];
                cr_assert_eq(tc_buf_alloc(&ly[li][ti], nt * tc_layer_width(&L[li].w)), 0);
                cr_assert_eq(tc_buf_alloc(&lp[li][ti], lc[li].h * nt * nt), 0);
                cr_assert_eq(attn_self_attention(ctx, &L[li].w, L[li].x, nt, li ? ATTN_MASK_NONE : ATTN_MASK_CAUSAL,
                                                 ly[li][ti].p, lp[li][ti].p),
                             ATTN_OK);
            }
            attn_ctx_destroy(ctx);
        }
        for (int ti = 1; ti < 3; ti++) {
            size_t at = first_diff(y[0].p, y[ti].p, m * n);
            cr_assert_eq(at, m * n, "%s: attn_linear on %d threads differs from 1 thread at %zu: %a vs %a",
                         attn_isa_name(isas[ii]), threads[ti], at, (double)y[ti].p[at], (double)y[0].p[at]);
            for (int li = 0; li < 2; li++) {
                const size_t ny = ly[li][0].n, np = lp[li][0].n;
                at = first_diff(ly[li][0].p, ly[li][ti].p, ny);
                cr_assert_eq(at, ny, "%s: layer %d y on %d threads differs from 1 thread at %zu: %a vs %a",
                             attn_isa_name(isas[ii]), li, threads[ti], at, (double)ly[li][ti].p[at],
                             (double)ly[li][0].p[at]);
                at = first_diff(lp[li][0].p, lp[li][ti].p, np);
                cr_assert_eq(at, np, "%s: layer %d probs on %d threads differ from 1 thread at %zu",
                             attn_isa_name(isas[ii]), li, threads[ti], at);
            }
        }
        for (int ti = 0; ti < 3; ti++) {
            cr_assert(tc_buf_guards_ok(&y[ti]));
            tc_buf_free(&y[ti]);
            for (int li = 0; li < 2; li++) {
                cr_assert(tc_buf_guards_ok(&ly[li][ti]) && tc_buf_guards_ok(&lp[li][ti]));
                tc_buf_free(&ly[li][ti]);
                tc_buf_free(&lp[li][ti]);
            }
        }
    }
    for (int li = 0; li < 2; li++)
        rand_layer_free(&L[li]);
    free(xa), free(wa), free(ba);
}

/* ---- argument errors: the status, and y / probs untouched (still poisoned, guards intact) ---- */

#define EXPECT_LAYER(want, ctx, w, x, n, mask, yp, pp)                                                            \
    do {                                                                                                          \
        attn_status s_ = attn_self_attention((ctx), (w), (x), (n), (mask), (yp), (pp));                           \
        cr_assert_eq(s_, (want), "line %d: attn_self_attention gave %d (%s), want %d", __LINE__, (int)s_,         \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "line %d: y written on error",    \
                  __LINE__);                                                                                      \
        cr_assert(tc_buf_all_bits(&probs, TC_POISON_BITS) && tc_buf_guards_ok(&probs),                            \
                  "line %d: probs written on error", __LINE__);                                                   \
    } while (0)

/* The null-argument checks of the old tests/test_stubs.c, now with probs requested too. */
Test(layer, null_arguments)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float wt[4 * 4] = { 0 }, x[2 * 4] = { 0 };
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, 2 * 4), 0);
    cr_assert_eq(tc_buf_alloc(&probs, 2 * 2 * 2), 0);
    attn_layer layer;
    memset(&layer, 0, sizeof layer);
    layer.d_model = 4;
    layer.n_heads = 2;
    layer.head_dim = 2;
    layer.wq = layer.wk = layer.wv = layer.wo = wt;

    for (int p = 0; p <= 1; p++) {
        float *pp = p ? probs.p : NULL;
        EXPECT_LAYER(ATTN_EINVAL, NULL, &layer, x, 2, ATTN_MASK_NONE, y.p, pp);
        EXPECT_LAYER(ATTN_EINVAL, ctx, NULL, x, 2, ATTN_MASK_NONE, y.p, pp);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &layer, NULL, 2, ATTN_MASK_NONE, y.p, pp);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &layer, x, 2, ATTN_MASK_NONE, NULL, pp);
        attn_layer no = layer;
        no.wq = NULL;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &no, x, 2, ATTN_MASK_NONE, y.p, pp);
        no = layer;
        no.wk = NULL;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &no, x, 2, ATTN_MASK_CAUSAL, y.p, pp);
        no = layer;
        no.wv = NULL;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &no, x, 2, ATTN_MASK_NONE, y.p, pp);
    }
    /* The same arguments, valid: all-zero weights give y = 0 and uniform probs. */
    cr_assert_eq(attn_self_attention(ctx, &layer, x, 2, ATTN_MASK_NONE, y.p, probs.p), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&y) && tc_buf_guards_ok(&probs));
    for (size_t i = 0; i < y.n; i++)
        cr_assert_eq(y.p[i], 0.0f);
    for (size_t i = 0; i < probs.n; i++)
        cr_assert_eq(probs.p[i], 0.5f);
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

Test(layer, bad_shapes_and_mask)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float wt[8 * 8] = { 0 }, x[3 * 8] = { 0 };
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, 3 * 8), 0);
    cr_assert_eq(tc_buf_alloc(&probs, 4 * 3 * 3), 0);
    attn_layer base;
    memset(&base, 0, sizeof base);
    base.d_model = 8;
    base.n_heads = 4;
    base.head_dim = 2;
    base.wq = base.wk = base.wv = base.wo = wt;
    for (int p = 0; p <= 1; p++) {
        float *pp = p ? probs.p : NULL;
        attn_layer w = base;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 0, ATTN_MASK_NONE, y.p, pp);
        w.d_model = 0;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, ATTN_MASK_NONE, y.p, pp);
        w = base;
        w.n_heads = 0;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, ATTN_MASK_NONE, y.p, pp);
        w = base;
        w.head_dim = 0;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, ATTN_MASK_NONE, y.p, pp);
        /* n_kv_heads must divide n_heads (wk/wv are big enough for any of these). */
        static const size_t bad_kv[] = { 3, 8, 5 };
        for (size_t i = 0; i < 3; i++) {
            w = base;
            w.n_kv_heads = bad_kv[i];
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, ATTN_MASK_CAUSAL, y.p, pp);
        }
        w = base;
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, (attn_mask)2, y.p, pp);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, (attn_mask)-1, y.p, pp);
        EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, 3, (attn_mask)1000, y.p, pp);
    }
    /* Divisors are fine: 4/4, 4/2, 4/1. */
    static const size_t good_kv[] = { 4, 2, 1 };
    for (size_t i = 0; i < 3; i++) {
        attn_layer w = base;
        w.n_kv_heads = good_kv[i];
        cr_assert_eq(attn_self_attention(ctx, &w, x, 3, ATTN_MASK_CAUSAL, y.p, probs.p), ATTN_OK);
        tc_buf_fill_bits(&y, TC_POISON_BITS);
        tc_buf_fill_bits(&probs, TC_POISON_BITS);
    }
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

/* y or probs overlapping x, a weight or a bias by one element at either end: ATTN_EINVAL, nothing written. Each
 * input lives alone in a block with room for a whole y or probs on both sides, so each overlap involves exactly
 * one input; an output that merely touches an input (ends right before it or starts right after it) is valid and
 * gives the same result as separate buffers. Then y and probs overlapping each other. */
Test(layer, overlapping_outputs)
{
    enum { N = 3, DM = 8, H = 2, HK = 1, HD = 4, QW = H * HD, KW = HK * HD, NY = N * DM, NP = H * N * N };
    enum { PAD = NY > NP ? NY : NP };
    static const char *const names[9] = { "x", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo" };
    static const size_t sizes[9] = { N * DM, QW * DM, KW * DM, KW * DM, DM * QW, QW, KW, KW, DM };
    float *block[9], *in[9], *snap[9];
    tc_rng r;
    tc_rng_init(&r, 42);
    for (int i = 0; i < 9; i++) {
        block[i] = malloc((PAD + sizes[i] + PAD) * sizeof(float));
        snap[i] = malloc(sizes[i] * sizeof(float));
        cr_assert(block[i] && snap[i]);
        in[i] = block[i] + PAD;
        for (size_t j = 0; j < sizes[i]; j++)
            snap[i][j] = in[i][j] = tc_rng_float(&r, -1.0f, 1.0f);
    }
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = DM;
    w.n_heads = H;
    w.n_kv_heads = HK;
    w.head_dim = HD;
    const float *x = in[0];
    w.wq = in[1], w.wk = in[2], w.wv = in[3], w.wo = in[4];
    w.bq = in[5], w.bk = in[6], w.bv = in[7], w.bo = in[8];
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, NY), 0);
    cr_assert_eq(tc_buf_alloc(&probs, NP), 0);
    float *ref_y = malloc(NY * sizeof(float)), *ref_p = malloc(NP * sizeof(float));
    cr_assert(ref_y && ref_p);
    cr_assert_eq(attn_self_attention(ctx, &w, x, N, ATTN_MASK_CAUSAL, ref_y, ref_p), ATTN_OK);

    for (int i = 0; i < 9; i++) {
        float *const first = in[i], *const end = in[i] + sizes[i];
        float *const bad_y[2] = { first - (NY - 1), end - 1 }, *const bad_p[2] = { first - (NP - 1), end - 1 };
        for (int k = 0; k < 2; k++) {
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_NONE, bad_y[k], NULL);
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_CAUSAL, bad_y[k], probs.p);
            EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_NONE, y.p, bad_p[k]);
            cr_assert(!memcmp(in[i], snap[i], sizes[i] * sizeof(float)), "%s written on error", names[i]);
        }
        /* Touching, either side. */
        float *const ok_y[2] = { first - NY, end }, *const ok_p[2] = { first - NP, end };
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(attn_self_attention(ctx, &w, x, N, ATTN_MASK_CAUSAL, ok_y[k], probs.p), ATTN_OK,
                         "y touching %s (%s) refused", names[i], k ? "after" : "before");
            cr_assert(!memcmp(ok_y[k], ref_y, NY * sizeof(float)), "y touching %s differs", names[i]);
            cr_assert_eq(attn_self_attention(ctx, &w, x, N, ATTN_MASK_CAUSAL, y.p, ok_p[k]), ATTN_OK,
                         "probs touching %s (%s) refused", names[i], k ? "after" : "before");
            cr_assert(!memcmp(ok_p[k], ref_p, NP * sizeof(float)), "probs touching %s differ", names[i]);
            cr_assert(!memcmp(in[i], snap[i], sizes[i] * sizeof(float)), "%s written", names[i]);
            tc_buf_fill_bits(&y, TC_POISON_BITS);
            tc_buf_fill_bits(&probs, TC_POISON_BITS);
        }
    }
    /* y and probs overlapping each other (in a scratch area of their own). */
    float *out = malloc((NY + NP) * sizeof(float));
    cr_assert(out);
    for (size_t j = 0; j < NY + NP; j++)
        out[j] = tc_u2f(TC_POISON_BITS);
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_NONE, out, out + NY - 1);
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_NONE, out + NP - 1, out);
    EXPECT_LAYER(ATTN_EINVAL, ctx, &w, x, N, ATTN_MASK_NONE, out, out);
    for (size_t j = 0; j < NY + NP; j++)
        cr_assert_eq(tc_f2u(out[j]), TC_POISON_BITS, "out[%zu] written on error", j);
    cr_assert_eq(attn_self_attention(ctx, &w, x, N, ATTN_MASK_CAUSAL, out, out + NY), ATTN_OK);
    cr_assert(!memcmp(out, ref_y, NY * sizeof(float)) && !memcmp(out + NY, ref_p, NP * sizeof(float)));
    /* Without wo, y is [N][QW]: the overlap checks use that size. */
    attn_layer nw = w;
    nw.wo = NULL;
    nw.bo = NULL;
    EXPECT_LAYER(ATTN_EINVAL, ctx, &nw, x, N, ATTN_MASK_NONE, in[1] + sizes[1] - 1, NULL);
    EXPECT_LAYER(ATTN_EINVAL, ctx, &nw, x, N, ATTN_MASK_NONE, in[7] - (N * QW - 1), NULL);
    cr_assert_eq(attn_self_attention(ctx, &nw, x, N, ATTN_MASK_NONE, in[7] - N * QW, NULL), ATTN_OK);
    for (int i = 0; i < 9; i++) {
        cr_assert(!memcmp(in[i], snap[i], sizes[i] * sizeof(float)), "%s written", names[i]);
        free(block[i]);
        free(snap[i]);
    }
    free(out);
    free(ref_y);
    free(ref_p);
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

/* Sizes whose element or byte counts overflow size_t: ATTN_ERANGE before anything is read or written. */
Test(layer, size_overflow)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float wt[64] = { 0 }, x[64] = { 0 };
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, 64), 0);
    cr_assert_eq(tc_buf_alloc(&probs, 64), 0);
    attn_layer base;
    memset(&base, 0, sizeof base);
    base.d_model = 4;
    base.n_heads = 2;
    base.head_dim = 2;
    base.wq = base.wk = base.wv = base.wo = wt;
    const size_t big = SIZE_MAX / 2;
    for (int p = 0; p <= 1; p++) {
        float *pp = p ? probs.p : NULL;
        attn_layer w = base;
        w.d_model = big; /* x, wq, ... */
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, 2, ATTN_MASK_NONE, y.p, pp);
        w.n_heads = w.head_dim = 1; /* n x d_model still fits, the packed weights do not */
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, 1, ATTN_MASK_NONE, y.p, pp);
        w = base;
        w.head_dim = big;
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, 2, ATTN_MASK_NONE, y.p, pp);
        w = base;
        w.n_heads = w.n_kv_heads = big;
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, 2, ATTN_MASK_NONE, y.p, pp);
        w = base;
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, big, ATTN_MASK_CAUSAL, y.p, pp);
        /* n_tokens x d_model floats fit, their bytes do not. */
        w.d_model = 1;
        w.n_heads = w.head_dim = 1;
        EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, SIZE_MAX / 4 + 1, ATTN_MASK_NONE, y.p, pp);
    }
    /* probs [n_heads][n][n] overflows while everything else is small. */
    attn_layer w = base;
    w.d_model = 1;
    w.n_heads = w.head_dim = 1;
    EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, ((size_t)1 << 32) + 1, ATTN_MASK_CAUSAL, y.p, probs.p);
    w.n_heads = 4;
    w.n_kv_heads = 1;
    EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, (size_t)1 << 31, ATTN_MASK_CAUSAL, y.p, probs.p);
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

/* x's n_tokens x d_model floats fit in size_t but their bytes do not, while the projections are narrow (one head
 * of width 1), so the scratch the layer needs is "only" ~12 TiB: attn.h's ATTN_ERANGE ("a size whose element or
 * byte count overflows size_t") must come before any allocation or overlap test (both see wrapped byte counts). */
Test(layer, size_overflow_bytes)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    float wt[64] = { 0 }, x[64] = { 0 };
    tc_buf y, probs;
    cr_assert_eq(tc_buf_alloc(&y, 64), 0);
    cr_assert_eq(tc_buf_alloc(&probs, 64), 0);
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = (size_t)1 << 22;
    w.n_heads = w.head_dim = 1;
    w.wq = w.wk = w.wv = wt;
    const size_t n = (size_t)1 << 40; /* n * d_model = 2^62 floats = 2^64 bytes */
    EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, n, ATTN_MASK_NONE, y.p, NULL);
    w.wo = wt; /* y is then as large as x */
    EXPECT_LAYER(ATTN_ERANGE, ctx, &w, x, n, ATTN_MASK_NONE, y.p, NULL);
    tc_buf_free(&y);
    tc_buf_free(&probs);
    attn_ctx_destroy(ctx);
}

#define EXPECT_LINEAR(want, ctx, x, m, k, w, b, n, yp)                                                            \
    do {                                                                                                          \
        attn_status s_ = attn_linear((ctx), (x), (m), (k), (w), (b), (n), (yp));                                  \
        cr_assert_eq(s_, (want), "line %d: attn_linear gave %d (%s), want %d", __LINE__, (int)s_,                 \
                     attn_strerror(s_), (int)(want));                                                             \
        cr_assert(tc_buf_all_bits(&y, TC_POISON_BITS) && tc_buf_guards_ok(&y), "line %d: y written on error",    \
                  __LINE__);                                                                                      \
    } while (0)

Test(layer, linear_argument_errors)
{
    enum { M = 4, K = 8, NO = 8, NY = M * NO, PAD = NY };
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    /* x, w and b each with room for a whole y on both sides, so each overlap below involves one input only. */
    float xa[PAD + M * K + PAD], wa[PAD + NO * K + PAD], ba[PAD + NO + PAD];
    float *const x = xa + PAD, *const w = wa + PAD, *const b = ba + PAD;
    for (int i = 0; i < M * K; i++)
        x[i] = (float)i;
    for (int i = 0; i < NO * K; i++)
        w[i] = (float)(i % 5);
    for (int i = 0; i < NO; i++)
        b[i] = (float)i;
    float xs[M * K], ws[NO * K], bs[NO];
    memcpy(xs, x, sizeof xs), memcpy(ws, w, sizeof ws), memcpy(bs, b, sizeof bs);
    tc_buf y;
    cr_assert_eq(tc_buf_alloc(&y, NY), 0);
    EXPECT_LINEAR(ATTN_EINVAL, NULL, x, M, K, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, NULL, M, K, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, NULL, b, NO, y.p);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, w, b, NO, NULL);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, x, 0, K, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, 0, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, w, b, 0, y.p);
    const size_t big = SIZE_MAX / 2;
    EXPECT_LINEAR(ATTN_ERANGE, ctx, x, big, K, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_ERANGE, ctx, x, M, big, w, b, NO, y.p);
    EXPECT_LINEAR(ATTN_ERANGE, ctx, x, M, K, w, b, big, y.p);
    EXPECT_LINEAR(ATTN_ERANGE, ctx, x, SIZE_MAX / 4 + 1, 1, w, NULL, 1, y.p); /* bytes of x and y */
    EXPECT_LINEAR(ATTN_ERANGE, ctx, x, 1, 1, w, NULL, SIZE_MAX / 4 + 1, y.p); /* bytes of w and y */
    /* y overlapping x, w or b by one element at either end, or exactly. */
    float *const inputs[3] = { x, w, b };
    const size_t sizes[3] = { M * K, NO * K, NO };
    for (int i = 0; i < 3; i++) {
        EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, w, b, NO, inputs[i] - (NY - 1));
        EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, w, b, NO, inputs[i] + sizes[i] - 1);
        EXPECT_LINEAR(ATTN_EINVAL, ctx, x, M, K, w, b, NO, inputs[i]);
    }
    cr_assert(!memcmp(xs, x, sizeof xs) && !memcmp(ws, w, sizeof ws) && !memcmp(bs, b, sizeof bs),
              "an input was written on error");
    /* Touching is not overlapping, on either side of each input, and gives the same bits as a separate y. */
    cr_assert_eq(attn_linear(ctx, x, M, K, w, b, NO, y.p), ATTN_OK);
    for (int i = 0; i < 3; i++) {
        float *const touch[2] = { inputs[i] - NY, inputs[i] + sizes[i] };
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(attn_linear(ctx, x, M, K, w, b, NO, touch[k]), ATTN_OK, "y touching input %d refused", i);
            cr_assert(!memcmp(touch[k], y.p, NY * sizeof(float)), "y touching input %d differs", i);
        }
    }
    cr_assert(!memcmp(xs, x, sizeof xs) && !memcmp(ws, w, sizeof ws) && !memcmp(bs, b, sizeof bs),
              "an input was written");
    tc_buf_free(&y);
    attn_ctx_destroy(ctx);
}
