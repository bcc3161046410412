/* libFuzzer target: the paged KV pool and attn_batch_attend (attn.h, DESIGN.md §3b).
 *
 * Input: a pool shape (dtype, page size, heads, widths, pages, ids), then operations, 3 bytes each: new, fork,
 * free, append, truncate or attend, on an id and a size the bytes choose. The harness keeps its own model of the
 * pool: each sequence's length and the pages it holds by the documented rules (a sequence holds ceil(len / page)
 * pages, a fork shares them, the first append into a shared partly filled page copies it, truncate and free return
 * pages no one else holds), and checks every status (ids and pages running out, bad ids, double frees, truncation
 * past the end, non-finite rows in an int8 pool), every length and the free page count against it. An attend over a
 * random subset of the live sequences (random q_lens, masks, window, softcap, ALiBi, sinks, lse) must succeed, write
 * finite rows bounded by the largest value appended (a convex combination, shrunk by a sink), and give each sequence
 * the same bits alone as in the batch. */
#include "fuzz_common.h"

#define FZ_SEQS 8
#define FZ_MAX_PAGES 48

typedef struct fz_seq {
    int live;
    size_t len;
    int pages[FZ_MAX_PAGES]; /* model page ids; a sequence holds at most n_pages pages */
} fz_seq;

typedef struct fz_model {
    size_t P, n_pages, used;
    int ref[FZ_MAX_PAGES];
    fz_seq s[FZ_SEQS];
} fz_model;

static size_t fz_pages_for(const fz_model *m, size_t len) { return (len + m->P - 1) / m->P; }

static int fz_take(fz_model *m)
{
    for (size_t i = 0; i < m->n_pages; i++)
        if (!m->ref[i]) {
            m->ref[i] = 1;
            m->used++;
            return (int)i;
        }
    CHECK(0, "model out of pages");
    return -1;
}

static void fz_release(fz_model *m, int pg)
{
    if (--m->ref[pg] == 0)
        m->used--;
}

static void fz_trunc(fz_model *m, fz_seq *s, size_t len)
{
    for (size_t i = fz_pages_for(m, len); i < fz_pages_for(m, s->len); i++)
        fz_release(m, s->pages[i]);
    s->len = len;
}

static size_t fz_smallest_free(const fz_model *m, size_t max_seqs)
{
    size_t i = 0;
    while (i < max_seqs && m->s[i].live)
        i++;
    return i;
}

static fz_model fz_m; /* large: static, reset per input */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reader r = {data, size, 0};
    static const attn_dtype types[] = {ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8};
    static const size_t pts[] = {16, 32, 48, 0};
    const uint8_t shape = fz_u8(&r), widths = fz_u8(&r), more = fz_u8(&r);
    const attn_dtype dt = types[shape & 3];
    const size_t P = pts[(shape >> 2) & 3], hk = 1 + ((shape >> 4) & 1), group = 1 + (shape >> 5) % 3;
    const size_t d = 1 + widths % 40, dv = (widths & 0x80) ? 1 + (widths >> 3) % 24 : d;
    const size_t n_pages = 1 + more % FZ_MAX_PAGES, max_seqs = 1 + (more >> 6) * 2; /* 1, 3, 5, 7 */
    const attn_kv_pool_desc pd = {.n_kv_heads = hk, .head_dim = d, .v_dim = dv == d ? 0 : dv, .page_tokens = P,
                                  .n_pages = n_pages, .max_seqs = max_seqs, .dtype = dt};
    attn_kv_pool *p = NULL;
    CHECK(attn_kv_pool_create(&p, &pd) == ATTN_OK, "pool create");
    memset(&fz_m, 0, sizeof fz_m);
    fz_model *m = &fz_m;
    m->P = attn_kv_pool_page_tokens(p);
    m->n_pages = n_pages;
    CHECK(m->P == (P ? P : 256), "page tokens %zu", m->P);
    attn_ctx *ctx = NULL;
    const attn_config cfg = {.num_threads = 2};
    CHECK(attn_ctx_create(&ctx, &cfg) == ATTN_OK, "ctx");
    uint64_t seed = fz_hash(data, size);
    float vmax = 0.0f; /* the largest |value| ever appended */
    for (int step = 0; step < 64 && r.at < r.n; step++) {
        const uint8_t op = fz_u8(&r), a = fz_u8(&r), b = fz_u8(&r);
        const uint32_t id = a % (FZ_SEQS + 1); /* FZ_SEQS and above: never live */
        fz_seq *s = id < FZ_SEQS ? &m->s[id] : NULL;
        const int live = s && s->live;
        switch (op % 6) {
        case 0: { /* new */
            const size_t want = fz_smallest_free(m, max_seqs);
            uint32_t got = 0xdead;
            const attn_status st = attn_seq_new(p, &got);
            CHECK(st == (want < max_seqs ? ATTN_OK : ATTN_ERANGE), "new: %d", st);
            if (st == ATTN_OK) {
                CHECK(got == want, "new gave id %u, not %zu", got, want);
                m->s[want].live = 1;
            } else
                CHECK(got == 0xdead, "*seq written on failure");
            break;
        }
        case 1: { /* fork */
            const size_t want = fz_smallest_free(m, max_seqs);
            uint32_t got = 0xdead;
            const attn_status st = attn_seq_fork(p, id, &got);
            CHECK(st == (!live ? ATTN_EINVAL : want < max_seqs ? ATTN_OK : ATTN_ERANGE), "fork: %d", st);
            if (st == ATTN_OK) {
                CHECK(got == want, "fork gave id %u, not %zu", got, want);
                fz_seq *c = &m->s[want];
                *c = *s;
                for (size_t i = 0; i < fz_pages_for(m, s->len); i++)
                    m->ref[s->pages[i]]++;
            } else
                CHECK(got == 0xdead, "*seq written on failure");
            break;
        }
        case 2: { /* free */
            const attn_status st = attn_seq_free(p, id);
            CHECK(st == (live ? ATTN_OK : ATTN_EINVAL), "free: %d", st);
            if (live) {
                fz_trunc(m, s, 0);
                s->live = 0;
            }
            break;
        }
        case 3: { /* append b % 80 tokens; b >= 240 plants a NaN or infinity */
            const size_t n = b % 80;
            float *k = fz_floats(n * hk * d), *v = fz_floats(n * hk * dv);
            fz_fill(k, n * hk * d, &seed, 4.0f);
            fz_fill(v, n * hk * dv, &seed, 2.0f);
            const int bad = n && b >= 240;
            if (bad)
                ((b & 1) ? k : v)[(b * 7u) % (n * hk * ((b & 1) ? d : dv))] = (b & 2) ? NAN : -INFINITY;
            const attn_status st = attn_seq_append(p, id, k, v, n);
            attn_status want = ATTN_OK;
            size_t need = 0;
            if (live && n) {
                const size_t have = fz_pages_for(m, s->len);
                need = fz_pages_for(m, s->len + n) - have + (s->len % m->P && m->ref[s->pages[have - 1]] > 1);
            }
            if (!live)
                want = ATTN_EINVAL;
            else if (bad && dt == ATTN_I8)
                want = ATTN_EINVAL;
            else if (need > m->n_pages - m->used)
                want = ATTN_ERANGE;
            CHECK(st == want, "append %zu to %u (len %zu, need %zu, free %zu): %d, want %d", n, id,
                  live ? s->len : 0, need, m->n_pages - m->used, st, want);
            if (st == ATTN_OK && n) {
                const size_t have = fz_pages_for(m, s->len), want_pg = fz_pages_for(m, s->len + n);
                if (s->len % m->P && m->ref[s->pages[have - 1]] > 1) {
                    const int pg = fz_take(m);
                    fz_release(m, s->pages[have - 1]);
                    s->pages[have - 1] = pg;
                }
                for (size_t i = have; i < want_pg; i++)
                    s->pages[i] = fz_take(m);
                s->len += n;
                for (size_t i = 0; i < n * hk * dv; i++)
                    vmax = fabsf(v[i]) > vmax && isfinite(v[i]) ? fabsf(v[i]) : vmax;
                if (bad) { /* a non-finite row in a float pool: keep the sequence out of attends from now on */
                    fz_trunc(m, s, 0);
                    CHECK(attn_seq_truncate(p, id, 0) == ATTN_OK, "truncate after a planted NaN");
                }
            }
            free(k);
            free(v);
            break;
        }
        case 4: { /* truncate to b % (len + 2) */
            const size_t len = live ? b % (s->len + 2) : 0;
            const attn_status st = attn_seq_truncate(p, id, len);
            CHECK(st == (live && len <= s->len ? ATTN_OK : ATTN_EINVAL), "truncate: %d", st);
            if (st == ATTN_OK)
                fz_trunc(m, s, len);
            break;
        }
        default: { /* attend: the live non-empty sequences whose bit is set in a */
            uint32_t ids[FZ_SEQS];
            size_t ql[FZ_SEQS], n = 0, rows = 0;
            for (uint32_t i = 0; i < FZ_SEQS; i++)
                if (m->s[i].live && m->s[i].len && ((a >> i) & 1)) {
                    ids[n] = i;
                    ql[n] = 1 + (b >> (i % 4)) % (m->s[i].len < 6 ? m->s[i].len : 6);
                    rows += ql[n++];
                }
            if (!n)
                break;
            const size_t heads = hk * group;
            float slopes[6], sinks[6];
            for (size_t h = 0; h < heads; h++) {
                slopes[h] = 0.1f * (float)(h + 1);
                sinks[h] = (float)h - 1.0f;
            }
            const attn_batch_desc bd = {
                .n_seqs = n, .seqs = ids, .q_lens = (b & 1) ? ql : NULL, .n_heads = heads,
                .mask = (b & 2) ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE, .window = (b & 6) == 6 ? 1 + a % 40 : 0,
                .softcap = (b & 8) ? 3.0f : 0.0f, .alibi_slopes = (b & 16) ? slopes : NULL,
                .sinks = (b & 32) ? sinks : NULL, .math = (b & 64) ? ATTN_MATH_BF16 : ATTN_MATH_F32,
            };
            if (!(b & 1))
                for (size_t i = 0; i < n; i++)
                    ql[i] = 1;
            rows = 0;
            for (size_t i = 0; i < n; i++)
                rows += ql[i];
            float *q = fz_floats(rows * heads * d), *out = fz_floats(rows * heads * dv), *lse = fz_floats(rows * heads);
            fz_fill(q, rows * heads * d, &seed, 1.0f);
            fz_poison(out, rows * heads * dv);
            fz_poison(lse, rows * heads);
            CHECK(attn_batch_attend(ctx, p, &bd, q, out, lse) == ATTN_OK, "attend");
            const float bound = vmax * 1.01f + 1e-6f;
            for (size_t i = 0; i < rows * heads * dv; i++)
                CHECK(isfinite(out[i]) && fabsf(out[i]) <= bound, "out[%zu] = %g, values up to %g", i,
                      (double)out[i], (double)vmax);
            for (size_t i = 0; i < rows * heads; i++)
                CHECK(!isnan(lse[i]) && lse[i] != INFINITY, "lse[%zu] = %g", i, (double)lse[i]);
            for (size_t i = 0, row = 0; i < n; row += ql[i], i++) { /* alone: the same bits */
                attn_batch_desc one = bd;
                one.n_seqs = 1;
                one.seqs = &ids[i];
                one.q_lens = &ql[i];
                float *o1 = fz_floats(ql[i] * heads * dv);
                CHECK(attn_batch_attend(ctx, p, &one, q + row * heads * d, o1, NULL) == ATTN_OK, "attend alone");
                CHECK(!memcmp(o1, out + row * heads * dv, ql[i] * heads * dv * sizeof *o1),
                      "sequence %u alone differs from the batch", ids[i]);
                free(o1);
            }
            free(q);
            free(out);
            free(lse);
            break;
        }
        }
        for (uint32_t i = 0; i < FZ_SEQS; i++)
            CHECK(attn_seq_len(p, i) == (m->s[i].live ? m->s[i].len : 0), "len of %u", i);
        CHECK(attn_kv_pool_free_pages(p) == m->n_pages - m->used, "free pages %zu, model %zu",
              attn_kv_pool_free_pages(p), m->n_pages - m->used);
    }
    attn_kv_pool_destroy(p);
    attn_ctx_destroy(ctx);
    return 0;
}
