/* The paged KV pool and attn_batch_attend: the pool's page accounting (fork, copy-on-write, truncate, all-or-nothing
 * appends, id reuse) against the rules of DESIGN.md §3b, batched attention against a float64 reference on the
 * stored (rounded or int8-quantised) keys and values for every ISA and storage type, bitwise independence of the
 * thread count and of the rest of the batch, bitwise agreement with attn_decode, a randomized model check of
 * thousands of pool operations against plain arrays, and a 1M-token pool serving 512 sequences. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const attn_dtype dtypes[] = { ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8 };
static const char *const dtype_names[] = { "f32", "f16", "bf16", "i8" };
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])

/* ---- a plain-array model of a pool: each sequence's fp32 tokens, and the pages the rules say it holds ---- */

#define M_MAX_SEQS 64

typedef struct m_seq {
    int live;
    size_t len;
    float *k, *v;  /* [len][hk][d], [len][hk][dv]: what was appended */
    int *pages;    /* model page ids, ceil(len / P) */
} m_seq;

typedef struct m_pool {
    size_t hk, d, dv, P, n_pages, used; /* used: pages some sequence holds */
    int *ref;                           /* holders per model page id (ids 0..n_pages-1, reused) */
    m_seq s[M_MAX_SEQS];
} m_pool;

static size_t m_pages_for(const m_pool *m, size_t len) { return (len + m->P - 1) / m->P; }

static int m_take(m_pool *m)
{
    for (size_t i = 0; i < m->n_pages; i++)
        if (!m->ref[i]) {
            m->ref[i] = 1;
            m->used++;
            return (int)i;
        }
    cr_assert_fail("model: no free page");
    return -1;
}

static void m_release(m_pool *m, int pg)
{
    if (--m->ref[pg] == 0)
        m->used--;
}

/* Pages an append of n tokens needs, by the rules: new pages, plus a copy of a shared, partly filled last page. */
static size_t m_need(const m_pool *m, const m_seq *s, size_t n)
{
    const size_t have = m_pages_for(m, s->len), want = m_pages_for(m, s->len + n);
    return want - have + (s->len % m->P && m->ref[s->pages[have - 1]] > 1);
}

static void m_append(m_pool *m, m_seq *s, const float *k, const float *v, size_t n)
{
    const size_t have = m_pages_for(m, s->len), want = m_pages_for(m, s->len + n);
    s->pages = realloc(s->pages, (want ? want : 1) * sizeof *s->pages);
    s->k = realloc(s->k, (s->len + n) * m->hk * m->d * sizeof(float));
    s->v = realloc(s->v, (s->len + n) * m->hk * m->dv * sizeof(float));
    cr_assert(s->pages && s->k && s->v);
    if (s->len % m->P && m->ref[s->pages[have - 1]] > 1) {
        const int pg = m_take(m);
        m_release(m, s->pages[have - 1]);
        s->pages[have - 1] = pg;
    }
    for (size_t i = have; i < want; i++)
        s->pages[i] = m_take(m);
    memcpy(s->k + s->len * m->hk * m->d, k, n * m->hk * m->d * sizeof(float));
    memcpy(s->v + s->len * m->hk * m->dv, v, n * m->hk * m->dv * sizeof(float));
    s->len += n;
}

static void m_truncate(m_pool *m, m_seq *s, size_t len)
{
    for (size_t i = m_pages_for(m, len); i < m_pages_for(m, s->len); i++)
        m_release(m, s->pages[i]);
    s->len = len;
}

static void m_free(m_pool *m, m_seq *s)
{
    m_truncate(m, s, 0);
    free(s->k), free(s->v), free(s->pages);
    memset(s, 0, sizeof *s);
}

static void m_fork(m_pool *m, const m_seq *src, m_seq *dst)
{
    const size_t n = m_pages_for(m, src->len);
    dst->live = 1;
    dst->len = src->len;
    dst->pages = malloc((n ? n : 1) * sizeof *dst->pages);
    dst->k = malloc((src->len ? src->len : 1) * m->hk * m->d * sizeof(float));
    dst->v = malloc((src->len ? src->len : 1) * m->hk * m->dv * sizeof(float));
    cr_assert(dst->pages && dst->k && dst->v);
    if (src->len) { /* an empty source has no arrays yet */
        memcpy(dst->pages, src->pages, n * sizeof *dst->pages);
        memcpy(dst->k, src->k, src->len * m->hk * m->d * sizeof(float));
        memcpy(dst->v, src->v, src->len * m->hk * m->dv * sizeof(float));
    }
    for (size_t i = 0; i < n; i++)
        m->ref[dst->pages[i]]++;
}

/* ---- the float64 reference ---- */

typedef struct b_opts {
    size_t heads, window;
    attn_mask mask;
    float scale, softcap;
    const float *slopes, *sinks;
} b_opts;

/* Output rows and lse of the last q_len positions of a sequence of len tokens whose stored keys and values (as the
 * pool reads them) are k, v: out [q_len][heads][dv], lse [q_len][heads]. */
static void ref_attend(const b_opts *o, size_t hk, size_t d, size_t dv, const float *k, const float *v, size_t len,
                       size_t q_len, const float *q, double *out, double *lse)
{
    const size_t group = o->heads / hk;
    const double scale = o->scale != 0.0f ? o->scale : 1.0 / sqrt((double)d);
    double *s = malloc(len * sizeof *s);
    cr_assert(s);
    for (size_t i = 0; i < q_len; i++)
        for (size_t h = 0; h < o->heads; h++) {
            const size_t g = h / group, pos = len - q_len + i;
            const float *qr = q + (i * o->heads + h) * d;
            double m = -INFINITY;
            for (size_t j = 0; j < len; j++) {
                const int seen = (o->mask != ATTN_MASK_CAUSAL || j <= pos) && (!o->window || j + o->window > pos);
                if (!seen) {
                    s[j] = -INFINITY;
                    continue;
                }
                double x = 0.0;
                for (size_t c = 0; c < d; c++)
                    x += (double)qr[c] * k[(j * hk + g) * d + c];
                x = (float)(x * scale); /* the library's score is fp32 before the modifiers */
                if (o->softcap != 0.0f)
                    x = o->softcap * tanh(x / o->softcap);
                if (o->slopes)
                    x += (double)o->slopes[h] * ((double)j - (double)pos);
                s[j] = x;
                m = x > m ? x : m;
            }
            double l = 0.0;
            double *orow = out + (i * o->heads + h) * dv;
            for (size_t c = 0; c < dv; c++)
                orow[c] = 0.0;
            for (size_t j = 0; j < len && m > -INFINITY; j++) {
                if (s[j] == -INFINITY)
                    continue;
                const double p = exp(s[j] - m);
                l += p;
                for (size_t c = 0; c < dv; c++)
                    orow[c] += p * v[(j * hk + g) * dv + c];
            }
            lse[i * o->heads + h] = m > -INFINITY ? m + log(l) : -INFINITY;
            const double den = l + (o->sinks && m > -INFINITY ? exp(o->sinks[h] - m) : 0.0);
            for (size_t c = 0; c < dv && m > -INFINITY; c++)
                orow[c] /= den;
        }
    free(s);
}

/* A sequence's tokens as the pool stores them: each (token, head) row rounded or quantised (tc_stored_row). */
static float *stored_copy(attn_dtype t, const float *x, size_t rows, size_t width)
{
    float *y = malloc((rows ? rows : 1) * width * sizeof *y);
    cr_assert(y);
    memcpy(y, x, rows * width * sizeof *y);
    for (size_t r = 0; r < rows; r++)
        tc_stored_row(t, y + r * width, width);
    return y;
}

static void fill(tc_rng *r, float *x, size_t n, float mag)
{
    for (size_t i = 0; i < n; i++)
        x[i] = tc_rng_float(r, -mag, mag);
}

static attn_kv_pool *pool_new(size_t hk, size_t d, size_t dv, size_t P, size_t pages, size_t max_seqs, attn_dtype t)
{
    const attn_kv_pool_desc pd = { .n_kv_heads = hk, .head_dim = d, .v_dim = dv, .page_tokens = P, .n_pages = pages,
                                   .max_seqs = max_seqs, .dtype = t };
    attn_kv_pool *p = NULL;
    cr_assert_eq(attn_kv_pool_create(&p, &pd), ATTN_OK);
    return p;
}

/* ---- pool bookkeeping ---- */

Test(pool, create_and_argument_errors)
{
    attn_kv_pool *p = NULL;
    attn_kv_pool_desc d = { .n_kv_heads = 2, .head_dim = 8, .n_pages = 4 };
    cr_assert_eq(attn_kv_pool_create(NULL, &d), ATTN_EINVAL);
    cr_assert_eq(attn_kv_pool_create(&p, NULL), ATTN_EINVAL);
    const attn_kv_pool_desc bad[] = {
        { .n_kv_heads = 0, .head_dim = 8, .n_pages = 4 },
        { .n_kv_heads = 2, .head_dim = 0, .n_pages = 4 },
        { .n_kv_heads = 2, .head_dim = 8, .n_pages = 0 },
        { .n_kv_heads = 2, .head_dim = 8, .n_pages = 4, .page_tokens = 24 },
        { .n_kv_heads = 2, .head_dim = 8, .n_pages = 4, .page_tokens = 4112 },
        { .n_kv_heads = 2, .head_dim = 8, .n_pages = 4, .dtype = (attn_dtype)4 },
        { .n_kv_heads = 2, .head_dim = 8, .n_pages = 4, .max_seqs = ((size_t)1 << 31) + 1 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(attn_kv_pool_create(&p, &bad[i]), ATTN_EINVAL, "case %zu", i);
        cr_assert_null(p);
    }
    const attn_kv_pool_desc huge = { .n_kv_heads = SIZE_MAX / 2, .head_dim = 8, .n_pages = 4 };
    cr_assert_eq(attn_kv_pool_create(&p, &huge), ATTN_ERANGE);
    const attn_kv_pool_desc many = { .n_kv_heads = 8, .head_dim = 128, .n_pages = (size_t)1 << 32 };
    cr_assert_neq(attn_kv_pool_create(&p, &many), ATTN_OK);
    cr_assert_eq(attn_kv_pool_create(&p, &d), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 4);
    cr_assert_eq(attn_kv_pool_page_tokens(p), 256, "the default page");
    uint32_t s = 77;
    cr_assert_eq(attn_seq_new(NULL, &s), ATTN_EINVAL);
    cr_assert_eq(attn_seq_new(p, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_seq_fork(p, 0, &s), ATTN_EINVAL, "fork of an id that is not live");
    cr_assert_eq(s, 77, "*seq untouched on failure");
    cr_assert_eq(attn_seq_free(p, 0), ATTN_EINVAL);
    cr_assert_eq(attn_seq_truncate(p, 0, 0), ATTN_EINVAL);
    cr_assert_eq(attn_seq_append(p, 0, NULL, NULL, 0), ATTN_EINVAL, "an id that is not live");
    cr_assert_eq(attn_seq_len(p, 0), 0);
    cr_assert_eq(attn_seq_len(NULL, 0), 0);
    cr_assert_eq(attn_kv_pool_free_pages(NULL), 0);
    cr_assert_eq(attn_seq_new(p, &s), ATTN_OK);
    cr_assert_eq(s, 0);
    cr_assert_eq(attn_seq_append(p, s, NULL, NULL, 0), ATTN_OK, "0 tokens, NULL rows");
    cr_assert_eq(attn_seq_append(p, s, NULL, NULL, 3), ATTN_EINVAL);
    cr_assert_eq(attn_seq_append(p, s, (const float *)&d, NULL, 3), ATTN_EINVAL);
    cr_assert_eq(attn_seq_truncate(p, s, 1), ATTN_EINVAL, "past the length");
    cr_assert_eq(attn_seq_truncate(p, s, 0), ATTN_OK);
    cr_assert_eq(attn_seq_append(p, s, (const float *)&d, (const float *)&d, SIZE_MAX), ATTN_ERANGE);
    cr_assert_eq(attn_seq_len(p, s), 0);
    cr_assert_eq(attn_seq_free(p, s), ATTN_OK);
    cr_assert_eq(attn_seq_free(p, s), ATTN_EINVAL, "double free");
    attn_kv_pool_destroy(p);
    attn_kv_pool_destroy(NULL);
}

/* The settled rules, step by step, with 16-token pages. */
Test(pool, pages_fork_copy_truncate)
{
    const size_t hk = 2, d = 8, P = 16;
    attn_kv_pool *p = pool_new(hk, d, 0, P, 6, 3, ATTN_F16);
    float *k = calloc(100 * hk * d, sizeof *k), *v = calloc(100 * hk * d, sizeof *v);
    cr_assert(k && v);
    uint32_t a, b, c, x = 99;
    cr_assert_eq(attn_seq_new(p, &a), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 6, "an empty sequence holds no page");
    cr_assert_eq(attn_seq_append(p, a, k, v, 20), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 4);
    cr_assert_eq(attn_seq_fork(p, a, &b), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 4, "fork takes no page");
    cr_assert_eq(attn_seq_len(p, b), 20);
    cr_assert_eq(attn_seq_append(p, b, k, v, 1), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 3, "the first append into the shared partial page copies it");
    cr_assert_eq(attn_seq_append(p, a, k, v, 1), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 3, "the other holder now owns the original alone");
    cr_assert_eq(attn_seq_truncate(p, a, 16), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 4, "truncate returns a page at once");
    cr_assert_eq(attn_seq_fork(p, a, &c), ATTN_OK);
    cr_assert_eq(attn_seq_append(p, c, k, v, 16), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 3, "a shared full page is never copied");
    cr_assert_eq(attn_seq_new(p, &x), ATTN_ERANGE, "ids run out");
    cr_assert_eq(attn_seq_fork(p, a, &x), ATTN_ERANGE);
    cr_assert_eq(x, 99);
    /* All or nothing: 3 free pages; b (21 tokens, 2 pages) + 60 = 81 tokens would need 4 more. */
    cr_assert_eq(attn_seq_append(p, b, k, v, 60), ATTN_ERANGE);
    cr_assert_eq(attn_seq_len(p, b), 21);
    cr_assert_eq(attn_kv_pool_free_pages(p), 3);
    cr_assert_eq(attn_seq_append(p, b, k, v, 58), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 0);
    cr_assert_eq(attn_seq_free(p, a), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 0, "c still holds a's first page");
    cr_assert_eq(attn_seq_new(p, &x), ATTN_OK);
    cr_assert_eq(x, a, "ids are reused, smallest first");
    cr_assert_eq(attn_seq_free(p, c), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 1, "b still holds the first page");
    cr_assert_eq(attn_seq_free(p, b), ATTN_OK);
    cr_assert_eq(attn_seq_free(p, x), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), 6);
    attn_kv_pool_destroy(p);
    free(k), free(v);
}

Test(pool, i8_rejects_non_finite)
{
    attn_kv_pool *p = pool_new(1, 4, 0, 16, 2, 0, ATTN_I8);
    float k[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, v[8] = { 1, 2, 3, 4, 5, 6, 7, INFINITY };
    uint32_t s;
    cr_assert_eq(attn_seq_new(p, &s), ATTN_OK);
    cr_assert_eq(attn_seq_append(p, s, k, v, 2), ATTN_EINVAL);
    v[7] = 0.0f;
    k[1] = NAN;
    cr_assert_eq(attn_seq_append(p, s, k, v, 2), ATTN_EINVAL);
    cr_assert_eq(attn_seq_len(p, s), 0);
    cr_assert_eq(attn_kv_pool_free_pages(p), 2);
    k[1] = 0.0f;
    cr_assert_eq(attn_seq_append(p, s, k, v, 2), ATTN_OK);
    attn_kv_pool_destroy(p);
}

/* ---- batched attention ---- */

typedef struct b_case {
    size_t hk, group, d, dv, P, n_seqs, max_len;
    int prefill;   /* some sequences take several query rows */
    attn_mask mask;
    size_t window;
    int mods;      /* softcap, ALiBi, sinks */
} b_case;

/* Builds a pool of random sequences (appended in random chunks), runs one batch on ctx into a poisoned buffer and
 * compares with the float64 reference on the stored values. */
static void check_batch(attn_isa isa, attn_dtype t, const b_case *bc, uint64_t seed, double *worst)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    const size_t hk = bc->hk, d = bc->d, dv = bc->dv ? bc->dv : bc->d, heads = hk * bc->group, n = bc->n_seqs;
    attn_kv_pool *p = pool_new(hk, d, bc->dv, bc->P, 4096, 0, t);
    uint32_t *ids = malloc(n * sizeof *ids);
    size_t *lens = malloc(n * sizeof *lens), *qls = malloc(n * sizeof *qls), rows = 0;
    float **ks = malloc(n * sizeof *ks), **vs = malloc(n * sizeof *vs);
    cr_assert(ids && lens && qls && ks && vs);
    for (size_t s = 0; s < n; s++) {
        lens[s] = 1 + tc_rng_below(&r, (uint32_t)bc->max_len);
        qls[s] = bc->prefill && tc_rng_below(&r, 2) ? 1 + tc_rng_below(&r, (uint32_t)lens[s]) : 1;
        rows += qls[s];
        ks[s] = malloc(lens[s] * hk * d * sizeof(float));
        vs[s] = malloc(lens[s] * hk * dv * sizeof(float));
        cr_assert(ks[s] && vs[s]);
        fill(&r, ks[s], lens[s] * hk * d, 3.0f);
        fill(&r, vs[s], lens[s] * hk * dv, 1.0f);
        cr_assert_eq(attn_seq_new(p, &ids[s]), ATTN_OK);
        for (size_t at = 0, c; at < lens[s]; at += c) {
            c = 1 + tc_rng_below(&r, 200);
            c = c > lens[s] - at ? lens[s] - at : c;
            cr_assert_eq(attn_seq_append(p, ids[s], ks[s] + at * hk * d, vs[s] + at * hk * dv, c), ATTN_OK);
        }
    }
    float *q = malloc(rows * heads * d * sizeof *q), slopes[64], sinks[64];
    cr_assert(q && heads <= 64);
    fill(&r, q, rows * heads * d, 1.0f);
    for (size_t h = 0; h < heads; h++) {
        slopes[h] = 0.05f * (float)(h + 1);
        sinks[h] = tc_rng_float(&r, -1.0f, 2.0f);
    }
    const b_opts o = { .heads = heads, .window = bc->window, .mask = bc->mask, .softcap = bc->mods ? 4.0f : 0.0f,
                       .slopes = bc->mods ? slopes : NULL, .sinks = bc->mods ? sinks : NULL };
    const attn_batch_desc bd = { .n_seqs = n, .seqs = ids, .q_lens = bc->prefill ? qls : NULL, .n_heads = heads,
                                 .mask = bc->mask, .window = bc->window, .softcap = o.softcap,
                                 .alibi_slopes = o.slopes, .sinks = o.sinks };
    tc_buf out = { 0 }, lse = { 0 };
    cr_assert_eq(tc_buf_alloc(&out, rows * heads * dv), 0);
    cr_assert_eq(tc_buf_alloc(&lse, rows * heads), 0);
    attn_ctx *ctx = NULL;
    cr_assert_eq(tc_ctx_create(&ctx, isa, 2, 0, 0), ATTN_OK);
    cr_assert_eq(attn_batch_attend(ctx, p, &bd, q, out.p, lse.p), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&out) && tc_buf_guards_ok(&lse));
    for (size_t s = 0, row = 0; s < n; row += qls[s], s++) {
        float *sk = stored_copy(t, ks[s], lens[s] * hk, d), *sv = stored_copy(t, vs[s], lens[s] * hk, dv);
        double *ro = malloc(qls[s] * heads * dv * sizeof *ro), *rl = malloc(qls[s] * heads * sizeof *rl);
        cr_assert(ro && rl);
        ref_attend(&o, hk, d, dv, sk, sv, lens[s], qls[s], q + row * heads * d, ro, rl);
        for (size_t i = 0; i < qls[s] * heads; i++) {
            double mx = 1.0;
            for (size_t c = 0; c < dv; c++)
                mx = fmax(mx, fabs(ro[i * dv + c]));
            for (size_t c = 0; c < dv; c++) {
                const double e = fabs((double)out.p[(row * heads + i) * dv + c] - ro[i * dv + c]) / mx;
                *worst = fmax(*worst, e);
                cr_assert(e <= 2e-5, "ATTN_TEST_SEED=%llu %s %s seq %zu (len %zu, q_len %zu) row %zu col %zu: %.9g vs %.9g",
                          (unsigned long long)tc_seed(), attn_isa_name(isa), dtype_names[t], s, lens[s], qls[s], i, c,
                          (double)out.p[(row * heads + i) * dv + c], ro[i * dv + c]);
            }
            const double gl = lse.p[row * heads + i];
            cr_assert(rl[i] == -INFINITY ? gl == -INFINITY : fabs(gl - rl[i]) <= 2e-5 * fmax(1.0, fabs(rl[i])),
                      "%s %s seq %zu row %zu: lse %.9g vs %.9g", attn_isa_name(isa), dtype_names[t], s, i, gl, rl[i]);
        }
        free(sk), free(sv), free(ro), free(rl);
    }
    attn_ctx_destroy(ctx);
    tc_buf_free(&out), tc_buf_free(&lse);
    for (size_t s = 0; s < n; s++)
        free(ks[s]), free(vs[s]);
    free(ks), free(vs), free(ids), free(lens), free(qls), free(q);
    attn_kv_pool_destroy(p);
}

static const b_case b_cases[] = {
    /* decodes, GQA, pages of 16 keys (tiles cut to a page), split-KV on the longer ones */
    { 2, 4, 64, 0, 16, 7, 2600, 0, ATTN_MASK_CAUSAL, 0, 0 },
    /* mixed prefill and decode, head_dim and v_dim not vector multiples, pages of 48 (tiles of 48) */
    { 2, 2, 40, 24, 48, 5, 300, 1, ATTN_MASK_CAUSAL, 0, 0 },
    /* default pages, window, MQA */
    { 1, 3, 32, 0, 0, 6, 1500, 1, ATTN_MASK_CAUSAL, 70, 0 },
    /* no mask, softcap, ALiBi and sinks */
    { 2, 1, 16, 0, 32, 4, 500, 1, ATTN_MASK_NONE, 0, 1 },
    /* long decodes with the score modifiers (split-KV merges with sinks) */
    { 1, 4, 48, 0, 64, 3, 3000, 0, ATTN_MASK_CAUSAL, 0, 1 },
};

Test(batch, vs_reference, .timeout = 600)
{
    attn_isa isas[TC_MAX_ISAS];
    const int ni = tc_isas(isas);
    for (int i = 0; i < ni; i++)
        for (size_t t = 0; t < N_DTYPES; t++) {
            double worst = 0.0;
            for (size_t c = 0; c < sizeof b_cases / sizeof b_cases[0]; c++)
                check_batch(isas[i], dtypes[t], &b_cases[c], tc_mix(tc_seed(), 300 + c * 11 + t), &worst);
            fprintf(stderr, "[stat] batch::vs_reference %-10s %-4s: %zu cases, max err out %.2e\n",
                    attn_isa_name(isas[i]), dtype_names[t], sizeof b_cases / sizeof b_cases[0], worst);
        }
}

/* ---- bitwise properties ---- */

/* One random pool and the batch over all of it; out = the batch on ctx. */
typedef struct b_fix {
    attn_kv_pool *p;
    uint32_t ids[12];
    size_t n, qls[12], rows, heads, d, dv;
    float *q;
} b_fix;

static void fix_init(b_fix *f, attn_dtype t, size_t P, uint64_t seed)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    const size_t hk = 2;
    memset(f, 0, sizeof *f);
    f->n = 12;
    f->heads = 8;
    f->d = f->dv = 64;
    f->p = pool_new(hk, f->d, 0, P, 2048, 0, t);
    float *k = malloc(5000 * hk * f->d * sizeof *k), *v = malloc(5000 * hk * f->d * sizeof *v);
    cr_assert(k && v);
    for (size_t s = 0; s < f->n; s++) {
        const size_t len = s % 3 == 0 ? 2000 + tc_rng_below(&r, 3000) : 1 + tc_rng_below(&r, 400);
        fill(&r, k, len * hk * f->d, 3.0f);
        fill(&r, v, len * hk * f->d, 1.0f);
        cr_assert_eq(attn_seq_new(f->p, &f->ids[s]), ATTN_OK);
        cr_assert_eq(attn_seq_append(f->p, f->ids[s], k, v, len), ATTN_OK);
        f->qls[s] = s % 4 == 1 ? 1 + tc_rng_below(&r, (uint32_t)(len < 300 ? len : 300)) : 1;
        f->rows += f->qls[s];
    }
    f->q = malloc(f->rows * f->heads * f->d * sizeof *f->q);
    cr_assert(f->q);
    fill(&r, f->q, f->rows * f->heads * f->d, 1.0f);
    free(k), free(v);
}

static void fix_free(b_fix *f)
{
    attn_kv_pool_destroy(f->p);
    free(f->q);
}

static float *run_batch(const attn_ctx *ctx, const b_fix *f, size_t first, size_t n, size_t row0)
{
    float *out = malloc(f->rows * f->heads * f->dv * sizeof *out);
    cr_assert(out);
    const attn_batch_desc bd = { .n_seqs = n, .seqs = f->ids + first, .q_lens = f->qls + first, .n_heads = f->heads,
                                 .mask = ATTN_MASK_CAUSAL };
    cr_assert_eq(attn_batch_attend(ctx, f->p, &bd, f->q + row0 * f->heads * f->d, out, NULL), ATTN_OK);
    return out;
}

/* Any thread count and any company in the batch give the same bits. */
Test(batch, bitwise_threads_and_company, .timeout = 600)
{
    attn_isa isas[TC_MAX_ISAS];
    const int ni = tc_isas(isas);
    for (int i = 0; i < ni; i++)
        for (size_t t = 0; t < N_DTYPES; t++) {
            b_fix f;
            fix_init(&f, dtypes[t], t % 2 ? 16 : 0, tc_mix(tc_seed(), 500 + t));
            attn_ctx *c1, *c2, *c3;
            cr_assert_eq(tc_ctx_create(&c1, isas[i], 1, 0, 0), ATTN_OK);
            cr_assert_eq(tc_ctx_create(&c2, isas[i], 2, 0, 0), ATTN_OK);
            cr_assert_eq(tc_ctx_create(&c3, isas[i], 3, 0, 0), ATTN_OK);
            float *a = run_batch(c1, &f, 0, f.n, 0), *b = run_batch(c2, &f, 0, f.n, 0), *c = run_batch(c3, &f, 0, f.n, 0);
            const size_t nout = f.rows * f.heads * f.dv;
            cr_assert(!memcmp(a, b, nout * sizeof *a) && !memcmp(a, c, nout * sizeof *a),
                      "%s %s: thread counts differ", attn_isa_name(isas[i]), dtype_names[t]);
            for (size_t s = 0, row = 0; s < f.n; row += f.qls[s], s++) {
                float *alone = run_batch(c2, &f, s, 1, row);
                cr_assert(!memcmp(alone, a + row * f.heads * f.dv, f.qls[s] * f.heads * f.dv * sizeof *a),
                          "%s %s: sequence %zu alone differs from the batch", attn_isa_name(isas[i]), dtype_names[t], s);
                free(alone);
            }
            free(a), free(b), free(c);
            attn_ctx_destroy(c1), attn_ctx_destroy(c2), attn_ctx_destroy(c3);
            fix_free(&f);
        }
}

/* With pages of block_kv keys, a pool's tiles are a KV cache's: attn_batch_attend gives attn_decode's bits. */
Test(batch, equals_attn_decode, .timeout = 300)
{
    attn_isa isas[TC_MAX_ISAS];
    const int ni = tc_isas(isas);
    const size_t hk = 2, d = 64, heads = 8, lens[] = { 1, 255, 256, 1500, 4100 };
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 600));
    float *k = malloc(4100 * hk * d * sizeof *k), *v = malloc(4100 * hk * d * sizeof *v);
    float *q = malloc(heads * d * sizeof *q), *o1 = malloc(heads * d * sizeof *o1), *o2 = malloc(heads * d * sizeof *o2);
    cr_assert(k && v && q && o1 && o2);
    for (int i = 0; i < ni; i++)
        for (size_t t = 0; t < N_DTYPES; t++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                fill(&r, k, lens[li] * hk * d, 3.0f);
                fill(&r, v, lens[li] * hk * d, 1.0f);
                fill(&r, q, heads * d, 1.0f);
                attn_ctx *ctx;
                cr_assert_eq(tc_ctx_create(&ctx, isas[i], 2, 0, 256), ATTN_OK);
                attn_kv_pool *p = pool_new(hk, d, 0, 256, 32, 0, dtypes[t]);
                attn_kv_cache *c = NULL;
                cr_assert_eq(attn_kv_cache_create(&c, hk, d, lens[li], dtypes[t]), ATTN_OK);
                uint32_t s;
                cr_assert_eq(attn_seq_new(p, &s), ATTN_OK);
                cr_assert_eq(attn_seq_append(p, s, k, v, lens[li]), ATTN_OK);
                cr_assert_eq(attn_kv_cache_append(c, k, v, lens[li]), ATTN_OK);
                const attn_batch_desc bd = { .n_seqs = 1, .seqs = &s, .n_heads = heads, .mask = ATTN_MASK_CAUSAL };
                cr_assert_eq(attn_batch_attend(ctx, p, &bd, q, o1, NULL), ATTN_OK);
                cr_assert_eq(attn_decode(ctx, c, q, 1, heads, ATTN_MASK_CAUSAL, o2), ATTN_OK);
                cr_assert(!memcmp(o1, o2, heads * d * sizeof *o1), "%s %s len %zu", attn_isa_name(isas[i]),
                          dtype_names[t], lens[li]);
                attn_kv_cache_destroy(c);
                attn_kv_pool_destroy(p);
                attn_ctx_destroy(ctx);
            }
    free(k), free(v), free(q), free(o1), free(o2);
}

Test(batch, argument_errors)
{
    attn_ctx *ctx;
    cr_assert_eq(tc_ctx_create(&ctx, ATTN_ISA_AUTO, 1, 0, 0), ATTN_OK);
    attn_kv_pool *p = pool_new(2, 8, 0, 16, 8, 4, ATTN_F32);
    float kv[4 * 2 * 8] = { 0 }, q[4 * 4 * 8] = { 0 }, out[4 * 4 * 8], lse[16];
    uint32_t a, b, e;
    cr_assert_eq(attn_seq_new(p, &a), ATTN_OK);
    cr_assert_eq(attn_seq_new(p, &b), ATTN_OK);
    cr_assert_eq(attn_seq_new(p, &e), ATTN_OK);
    cr_assert_eq(attn_seq_append(p, a, kv, kv, 4), ATTN_OK);
    cr_assert_eq(attn_seq_append(p, b, kv, kv, 2), ATTN_OK);
    uint32_t ids[2] = { a, b };
    size_t ql[2] = { 2, 2 };
    const attn_batch_desc ok = { .n_seqs = 2, .seqs = ids, .q_lens = ql, .n_heads = 4 };
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, lse), ATTN_OK);
    attn_batch_desc d = ok;
    cr_assert_eq(attn_batch_attend(NULL, p, &d, q, out, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_batch_attend(ctx, NULL, &d, q, out, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_batch_attend(ctx, p, NULL, q, out, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_batch_attend(ctx, p, &d, NULL, out, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_batch_attend(ctx, p, &d, q, NULL, NULL), ATTN_EINVAL);
#define BAD(field, value)                                                                                          \
    do {                                                                                                           \
        d = ok;                                                                                                    \
        d.field = value;                                                                                           \
        cr_assert_eq(attn_batch_attend(ctx, p, &d, q, out, NULL), ATTN_EINVAL, #field " = " #value);               \
    } while (0)
    BAD(n_seqs, 0);
    BAD(seqs, NULL);
    BAD(n_heads, 3);
    BAD(n_heads, 0);
    BAD(mask, (attn_mask)2);
    BAD(window, 2);
    BAD(scale, INFINITY);
    BAD(softcap, -1.0f);
    BAD(math, (attn_math)2);
#undef BAD
    ql[1] = 3;
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, NULL), ATTN_EINVAL, "q_len past the sequence");
    ql[1] = 0;
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, NULL), ATTN_EINVAL, "q_len 0");
    ql[1] = 2;
    ids[1] = a;
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, NULL), ATTN_EINVAL, "an id twice");
    ids[1] = 3;
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, NULL), ATTN_EINVAL, "an id not live");
    ids[1] = 1000;
    cr_assert_eq(attn_batch_attend(ctx, p, &ok, q, out, NULL), ATTN_EINVAL, "an id past max_seqs");
    ids[1] = e;
    d = ok;
    d.q_lens = NULL;
    cr_assert_eq(attn_batch_attend(ctx, p, &d, q, out, NULL), ATTN_EINVAL, "an empty sequence in a decode batch");
    attn_kv_pool_destroy(p);
    attn_ctx_destroy(ctx);
}

/* ---- the model check ---- */

/* Thousands of random new/fork/append/truncate/free steps, each checked against the model's lengths and free
 * pages; every 50 steps a batch over the live sequences, each of whose rows must equal bit for bit the same
 * sequence's tokens appended to a fresh pool and attended alone. */
Test(pool, model_check, .timeout = 600)
{
    for (size_t t = 0; t < N_DTYPES; t++) {
        tc_rng r;
        tc_rng_init(&r, tc_mix(tc_seed(), 700 + t));
        m_pool m = { .hk = 2, .d = 24, .dv = 40, .P = t % 2 ? 32 : 16, .n_pages = 60 };
        m.ref = calloc(m.n_pages, sizeof *m.ref);
        cr_assert(m.ref);
        attn_kv_pool *p = pool_new(m.hk, m.d, m.dv, m.P, m.n_pages, M_MAX_SEQS, dtypes[t]);
        attn_ctx *ctx;
        cr_assert_eq(tc_ctx_create(&ctx, ATTN_ISA_AUTO, 2, 0, 0), ATTN_OK);
        float *k = malloc(200 * m.hk * m.d * sizeof *k), *v = malloc(200 * m.hk * m.dv * sizeof *v);
        cr_assert(k && v);
        size_t n_err = 0;
        for (int step = 0; step < 3000; step++) {
            const uint32_t op = tc_rng_below(&r, 10), id = tc_rng_below(&r, M_MAX_SEQS);
            m_seq *s = &m.s[id];
            if (op == 0) { /* new */
                size_t want = 0;
                while (want < M_MAX_SEQS && m.s[want].live)
                    want++;
                uint32_t got = 12345;
                const attn_status st = attn_seq_new(p, &got);
                cr_assert_eq(st, want < M_MAX_SEQS ? ATTN_OK : ATTN_ERANGE);
                if (st == ATTN_OK) {
                    cr_assert_eq(got, want, "smallest free id");
                    m.s[want].live = 1;
                }
            } else if (op == 1) { /* fork */
                size_t want = 0;
                while (want < M_MAX_SEQS && m.s[want].live)
                    want++;
                uint32_t got = 12345;
                const attn_status st = attn_seq_fork(p, id, &got);
                cr_assert_eq(st, !s->live ? ATTN_EINVAL : want < M_MAX_SEQS ? ATTN_OK : ATTN_ERANGE);
                if (st == ATTN_OK) {
                    cr_assert_eq(got, want);
                    m_fork(&m, s, &m.s[want]);
                }
            } else if (op <= 5) { /* append */
                const size_t n = tc_rng_below(&r, 4) ? 1 + tc_rng_below(&r, 20) : tc_rng_below(&r, 200);
                fill(&r, k, n * m.hk * m.d, 3.0f);
                fill(&r, v, n * m.hk * m.dv, 1.0f);
                const attn_status st = attn_seq_append(p, id, k, v, n);
                const attn_status want = !s->live ? ATTN_EINVAL
                                         : n && m_need(&m, s, n) > m.n_pages - m.used ? ATTN_ERANGE
                                                                                      : ATTN_OK;
                cr_assert_eq(st, want, "step %d append %zu to %u (len %zu): %d, want %d", step, n, id, s->len, st,
                             want);
                if (st == ATTN_OK && n)
                    m_append(&m, s, k, v, n);
                n_err += st == ATTN_ERANGE;
            } else if (op <= 7) { /* truncate */
                const size_t len = s->live && s->len ? tc_rng_below(&r, (uint32_t)s->len + 2) : 0;
                const attn_status st = attn_seq_truncate(p, id, len);
                cr_assert_eq(st, s->live && len <= s->len ? ATTN_OK : ATTN_EINVAL);
                if (st == ATTN_OK)
                    m_truncate(&m, s, len);
            } else { /* free: often enough that pages and ids keep turning over */
                const attn_status st = attn_seq_free(p, id);
                cr_assert_eq(st, s->live ? ATTN_OK : ATTN_EINVAL);
                if (st == ATTN_OK)
                    m_free(&m, s);
            }
            for (uint32_t i = 0; i < M_MAX_SEQS; i++)
                cr_assert_eq(attn_seq_len(p, i), m.s[i].live ? m.s[i].len : 0, "step %d seq %u", step, i);
            cr_assert_eq(attn_kv_pool_free_pages(p), m.n_pages - m.used, "step %d: free pages", step);
            if (step % 50 != 49)
                continue;
            uint32_t ids[M_MAX_SEQS];
            size_t qls[M_MAX_SEQS], n = 0, rows = 0;
            for (uint32_t i = 0; i < M_MAX_SEQS; i++)
                if (m.s[i].live && m.s[i].len) {
                    ids[n] = i;
                    qls[n] = 1 + tc_rng_below(&r, (uint32_t)(m.s[i].len < 5 ? m.s[i].len : 5));
                    rows += qls[n++];
                }
            if (!n)
                continue;
            const size_t heads = 4;
            float *q = malloc(rows * heads * m.d * sizeof *q), *out = malloc(rows * heads * m.dv * sizeof *out);
            float *one = malloc(rows * heads * m.dv * sizeof *one);
            cr_assert(q && out && one);
            fill(&r, q, rows * heads * m.d, 1.0f);
            const attn_batch_desc bd = { .n_seqs = n, .seqs = ids, .q_lens = qls, .n_heads = heads,
                                         .mask = ATTN_MASK_CAUSAL };
            cr_assert_eq(attn_batch_attend(ctx, p, &bd, q, out, NULL), ATTN_OK);
            for (size_t i = 0, row = 0; i < n; row += qls[i], i++) {
                const m_seq *ms = &m.s[ids[i]];
                attn_kv_pool *fresh = pool_new(m.hk, m.d, m.dv, m.P, m_pages_for(&m, ms->len), 1, dtypes[t]);
                uint32_t fs;
                cr_assert_eq(attn_seq_new(fresh, &fs), ATTN_OK);
                cr_assert_eq(attn_seq_append(fresh, fs, ms->k, ms->v, ms->len), ATTN_OK);
                const attn_batch_desc b1 = { .n_seqs = 1, .seqs = &fs, .q_lens = &qls[i], .n_heads = heads,
                                             .mask = ATTN_MASK_CAUSAL };
                cr_assert_eq(attn_batch_attend(ctx, fresh, &b1, q + row * heads * m.d, one, NULL), ATTN_OK);
                cr_assert(!memcmp(one, out + row * heads * m.dv, qls[i] * heads * m.dv * sizeof *one),
                          "ATTN_TEST_SEED=%llu %s step %d: sequence %u (len %zu) differs from its plain copy",
                          (unsigned long long)tc_seed(), dtype_names[t], step, ids[i], ms->len);
                attn_kv_pool_destroy(fresh);
            }
            free(q), free(out), free(one);
        }
        cr_assert(n_err > 0, "the check never ran the pool out of pages");
        for (size_t i = 0; i < M_MAX_SEQS; i++)
            if (m.s[i].live) {
                cr_assert_eq(attn_seq_free(p, (uint32_t)i), ATTN_OK);
                m_free(&m, &m.s[i]);
            }
        cr_assert_eq(attn_kv_pool_free_pages(p), m.n_pages);
        attn_kv_pool_destroy(p);
        attn_ctx_destroy(ctx);
        free(m.ref), free(k), free(v);
    }
}

/* A pool of 2^20 tokens of 8 KV heads x 128 in F16 (4 GiB reserved, a fraction touched) serving 512 sequences:
 * 64 prompts, each forked 7 times, every sequence growing, some truncated, batches of decodes over all of them;
 * in the end every page is back. Under ASan this proves no page table or scratch leaks. */
Test(pool, million_tokens_512_sequences, .timeout = 600)
{
    const size_t hk = 8, d = 128, heads = 32, P = 128, n_pages = ((size_t)1 << 20) / P;
    attn_kv_pool *p = pool_new(hk, d, 0, P, n_pages, 512, ATTN_F16);
    attn_ctx *ctx;
    cr_assert_eq(tc_ctx_create(&ctx, ATTN_ISA_AUTO, 2, 0, 0), ATTN_OK);
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 800));
    float *k = malloc(1000 * hk * d * sizeof *k), *v = malloc(1000 * hk * d * sizeof *v);
    float *q = malloc(512 * heads * d * sizeof *q), *out = malloc(512 * heads * d * sizeof *out);
    cr_assert(k && v && q && out);
    fill(&r, k, 1000 * hk * d, 1.0f);
    fill(&r, v, 1000 * hk * d, 1.0f);
    fill(&r, q, 512 * heads * d, 1.0f);
    uint32_t ids[512];
    size_t n = 0;
    for (size_t i = 0; i < 64; i++) {
        cr_assert_eq(attn_seq_new(p, &ids[n]), ATTN_OK);
        cr_assert_eq(attn_seq_append(p, ids[n], k, v, 200 + tc_rng_below(&r, 800)), ATTN_OK);
        const size_t src = n++;
        for (int f = 0; f < 7; f++, n++)
            cr_assert_eq(attn_seq_fork(p, ids[src], &ids[n]), ATTN_OK);
    }
    cr_assert_eq(n, 512);
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++) {
            if (tc_rng_below(&r, 4) == 0)
                cr_assert_eq(attn_seq_truncate(p, ids[i], attn_seq_len(p, ids[i]) / 2), ATTN_OK);
            cr_assert_eq(attn_seq_append(p, ids[i], k, v, 1 + tc_rng_below(&r, 40)), ATTN_OK);
        }
        const attn_batch_desc bd = { .n_seqs = n, .seqs = ids, .n_heads = heads, .mask = ATTN_MASK_CAUSAL };
        for (size_t i = 0; i < n * heads * d; i++)
            out[i] = NAN;
        cr_assert_eq(attn_batch_attend(ctx, p, &bd, q, out, NULL), ATTN_OK);
        for (size_t i = 0; i < n * heads * d; i++)
            cr_assert(isfinite(out[i]) && fabsf(out[i]) <= 1.0f, "out[%zu] = %g", i, (double)out[i]);
    }
    cr_assert_lt(attn_kv_pool_free_pages(p), n_pages);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(attn_seq_free(p, ids[i]), ATTN_OK);
    cr_assert_eq(attn_kv_pool_free_pages(p), n_pages);
    attn_kv_pool_destroy(p);
    attn_ctx_destroy(ctx);
    free(k), free(v), free(q), free(out);
}
