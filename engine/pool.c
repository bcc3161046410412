/* The paged KV pool (DESIGN.md §3b): fixed-size pages allocated up front, sequences as page tables, pages shared
 * by reference count after a fork and copied by the first holder that appends into a shared, partly filled one.
 * A page holds, per KV head, its keys as panels of ATTN_PAD keys (the layout the score kernels read in place, as
 * in a KV cache), then per KV head its value rows, then for ATTN_I8 the rows' scales; each part 64-byte aligned. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The default page holds a default tile (block_kv 256): tiles never cross pages, so smaller pages mean shorter
 * decode tiles (docs/performance.md has the measurement). */
#define ATTN_POOL_PAGE_DEFAULT 256
#define ATTN_POOL_SEQS_DEFAULT 1024

typedef struct attn_seq {
    size_t len, cap; /* tokens; entries allocated in pt */
    uint32_t *pt;    /* page numbers, ceil(len / page_tokens) of them */
    int live;
} attn_seq;

struct attn_kv_pool {
    attn_kv_pool_desc d; /* defaults resolved */
    attn_kv_src src;     /* the page layout, pt unset */
    char *mem;           /* n_pages * page_bytes */
    uint32_t *ref;       /* holders per page */
    uint32_t *free_pg;   /* stack of free pages */
    size_t n_free;
    attn_seq *seqs;      /* [max_seqs] */
    size_t id_hint;      /* no id below this is free */
    void *tmp;           /* conversion scratch for one row */
    const attn_kernels *kern; /* the CPU's best table: its narrow slots convert appended rows */
};

static size_t attn_round64(size_t x) { return (x + 63) / 64 * 64; }

attn_status attn_kv_pool_create(attn_kv_pool **out, const attn_kv_pool_desc *d)
{
    if (!out || !d || !d->n_kv_heads || !d->head_dim || !d->n_pages || (unsigned)d->dtype > ATTN_I8 ||
        d->page_tokens % ATTN_PAD || d->page_tokens > 4096 || d->max_seqs > ((size_t)1 << 31) ||
        d->n_pages > UINT32_MAX)
        return ATTN_EINVAL;
    attn_kv_pool_desc r = *d;
    r.v_dim = r.v_dim ? r.v_dim : r.head_dim;
    r.page_tokens = r.page_tokens ? r.page_tokens : ATTN_POOL_PAGE_DEFAULT;
    r.max_seqs = r.max_seqs ? r.max_seqs : ATTN_POOL_SEQS_DEFAULT;
    const size_t esz = attn_dtype_size(r.dtype), P = r.page_tokens, hk = r.n_kv_heads;
    size_t kb, vb, page, total;
    if (attn_mul_overflow(P * esz, r.head_dim, &kb) || attn_mul_overflow(P * esz, r.v_dim, &vb) ||
        kb > SIZE_MAX / 2 || vb > SIZE_MAX / 2)
        return ATTN_ERANGE;
    kb = attn_round64(kb);
    vb = attn_round64(vb);
    attn_kv_src s = {.kind = ATTN_KV_PAGED, .fmt = r.dtype, .d = r.head_dim, .ptok = P, .pk0 = 0, .pk_h = kb,
                     .vs = {0, 0, r.v_dim}};
    if (attn_mul_overflow(hk, kb, &s.pv0) || attn_mul_overflow(hk, vb, &page) ||
        __builtin_add_overflow(page, s.pv0, &page))
        return ATTN_ERANGE;
    s.pv_h = vb;
    if (r.dtype == ATTN_I8) { /* the scales: P floats per head, key then value */
        size_t sc;
        if (attn_mul_overflow(hk, P * sizeof(float), &sc))
            return ATTN_ERANGE;
        s.psk = page;
        s.psv = page + sc;
        if (__builtin_add_overflow(s.psv, sc, &page))
            return ATTN_ERANGE;
    }
    s.page_bytes = page;
    if (attn_mul_overflow(page, r.n_pages, &total) || total > PTRDIFF_MAX)
        return ATTN_ERANGE;
    attn_kv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ATTN_ENOMEM;
    p->d = r;
    p->mem = attn_alloc_big(total);
    p->ref = calloc(r.n_pages, sizeof *p->ref);
    p->free_pg = malloc(r.n_pages * sizeof *p->free_pg);
    p->seqs = calloc(r.max_seqs, sizeof *p->seqs);
    p->tmp = malloc(2 * (r.head_dim > r.v_dim ? r.head_dim : r.v_dim));
    p->kern = attn_best_kernels();
    if (!p->mem || !p->ref || !p->free_pg || !p->seqs || !p->tmp) {
        attn_kv_pool_destroy(p);
        return ATTN_ENOMEM;
    }
    s.k = s.v = p->mem;
    p->src = s;
    /* Stacked so that the lowest pages go first. */
    for (size_t i = 0; i < r.n_pages; i++)
        p->free_pg[i] = (uint32_t)(r.n_pages - 1 - i);
    p->n_free = r.n_pages;
    *out = p;
    return ATTN_OK;
}

void attn_kv_pool_destroy(attn_kv_pool *p)
{
    if (!p)
        return;
    for (size_t i = 0; p->seqs && i < p->d.max_seqs; i++)
        free(p->seqs[i].pt);
    free(p->seqs);
    free(p->mem);
    free(p->ref);
    free(p->free_pg);
    free(p->tmp);
    free(p);
}

size_t attn_kv_pool_free_pages(const attn_kv_pool *p) { return p ? p->n_free : 0; }

size_t attn_kv_pool_page_tokens(const attn_kv_pool *p) { return p ? p->d.page_tokens : 0; }

size_t attn_kv_pool_dims_(const attn_kv_pool *p, size_t *n_kv_heads, size_t *head_dim, size_t *v_dim)
{
    if (!p)
        return 0;
    if (n_kv_heads)
        *n_kv_heads = p->d.n_kv_heads;
    if (head_dim)
        *head_dim = p->d.head_dim;
    if (v_dim)
        *v_dim = p->d.v_dim;
    return p->d.n_kv_heads;
}

size_t attn_pool_max_seqs(const attn_kv_pool *p) { return p->d.max_seqs; }

static attn_seq *attn_seq_at(const attn_kv_pool *p, uint32_t seq)
{
    return p && seq < p->d.max_seqs && p->seqs[seq].live ? &p->seqs[seq] : NULL;
}

int attn_seq_live_(const attn_kv_pool *p, uint32_t seq) { return attn_seq_at(p, seq) != NULL; }

const uint32_t *attn_pool_pages(const attn_kv_pool *p, uint32_t seq, size_t *len)
{
    const attn_seq *s = attn_seq_at(p, seq);
    if (!s)
        return NULL;
    *len = s->len;
    return s->pt ? s->pt : (const uint32_t *)p->ref; /* never NULL for a live sequence; an empty one reads none */
}

void attn_pool_src(const attn_kv_pool *p, attn_kv_src *src) { *src = p->src; }

size_t attn_seq_len(const attn_kv_pool *p, uint32_t seq)
{
    const attn_seq *s = attn_seq_at(p, seq);
    return s ? s->len : 0;
}

static size_t attn_pages_for(const attn_kv_pool *p, size_t len)
{
    return len / p->d.page_tokens + (len % p->d.page_tokens != 0);
}

/* Room for want pages in s's page table (a larger table changes nothing else). */
static attn_status attn_seq_reserve(attn_seq *s, size_t want)
{
    if (want <= s->cap)
        return ATTN_OK;
    size_t cap = s->cap ? s->cap : 4;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 / sizeof(uint32_t) ? want : cap * 2;
    uint32_t *pt = realloc(s->pt, cap * sizeof *pt);
    if (!pt)
        return ATTN_ENOMEM;
    s->pt = pt;
    s->cap = cap;
    return ATTN_OK;
}

attn_dtype attn_pool_dtype(const attn_kv_pool *p) { return p->d.dtype; }

attn_status attn_pool_prepare(attn_kv_pool *p, size_t n, const uint32_t *seqs, const size_t *n_new)
{
    size_t need = 0, ncopied = 0;
    uint32_t *copied = n ? malloc(n * sizeof *copied) : NULL; /* shared pages an earlier append copies away from */
    if (n && !copied)
        return ATTN_ENOMEM;
    attn_status st = ATTN_OK;
    for (size_t i = 0; i < n && st == ATTN_OK; i++) {
        attn_seq *s = attn_seq_at(p, seqs[i]);
        const size_t have = attn_pages_for(p, s->len);
        if (n_new[i] > SIZE_MAX - s->len - p->d.page_tokens) {
            st = ATTN_ERANGE;
            break;
        }
        const size_t want = attn_pages_for(p, s->len + n_new[i]);
        need += want - have;
        if (n_new[i] && s->len % p->d.page_tokens) { /* a copy when its last page is still shared by then */
            const uint32_t pg = s->pt[have - 1];
            uint32_t holders = p->ref[pg];
            for (size_t c = 0; c < ncopied; c++)
                holders -= copied[c] == pg;
            if (holders > 1) {
                need++;
                copied[ncopied++] = pg;
            }
        }
        if (need > p->n_free)
            st = ATTN_ERANGE;
        else
            st = attn_seq_reserve(s, want) != ATTN_OK ? ATTN_ENOMEM : ATTN_OK;
    }
    free(copied);
    return st;
}

/* The smallest free id, or max_seqs when all are live. */
static size_t attn_free_id(attn_kv_pool *p)
{
    while (p->id_hint < p->d.max_seqs && p->seqs[p->id_hint].live)
        p->id_hint++;
    return p->id_hint;
}

attn_status attn_seq_new(attn_kv_pool *p, uint32_t *seq)
{
    if (!p || !seq)
        return ATTN_EINVAL;
    const size_t id = attn_free_id(p);
    if (id == p->d.max_seqs)
        return ATTN_ERANGE;
    p->seqs[id] = (attn_seq){.live = 1};
    *seq = (uint32_t)id;
    return ATTN_OK;
}

attn_status attn_seq_fork(attn_kv_pool *p, uint32_t src, uint32_t *seq)
{
    const attn_seq *s = attn_seq_at(p, src);
    if (!s || !seq)
        return ATTN_EINVAL;
    const size_t id = attn_free_id(p), n = attn_pages_for(p, s->len);
    if (id == p->d.max_seqs)
        return ATTN_ERANGE;
    uint32_t *pt = NULL;
    if (n && !(pt = malloc(n * sizeof *pt)))
        return ATTN_ENOMEM;
    if (n)
        memcpy(pt, s->pt, n * sizeof *pt);
    for (size_t i = 0; i < n; i++)
        p->ref[pt[i]]++;
    p->seqs[id] = (attn_seq){.len = s->len, .cap = n, .pt = pt, .live = 1};
    *seq = (uint32_t)id;
    return ATTN_OK;
}

static void attn_page_release(attn_kv_pool *p, uint32_t pg)
{
    if (--p->ref[pg] == 0)
        p->free_pg[p->n_free++] = pg;
}

static uint32_t attn_page_take(attn_kv_pool *p)
{
    const uint32_t pg = p->free_pg[--p->n_free];
    p->ref[pg] = 1;
    return pg;
}

attn_status attn_seq_free(attn_kv_pool *p, uint32_t seq)
{
    attn_seq *s = attn_seq_at(p, seq);
    if (!s)
        return ATTN_EINVAL;
    for (size_t i = 0, n = attn_pages_for(p, s->len); i < n; i++)
        attn_page_release(p, s->pt[i]);
    free(s->pt);
    *s = (attn_seq){0};
    p->id_hint = seq < p->id_hint ? seq : p->id_hint;
    return ATTN_OK;
}

attn_status attn_seq_truncate(attn_kv_pool *p, uint32_t seq, size_t len)
{
    attn_seq *s = attn_seq_at(p, seq);
    if (!s || len > s->len)
        return ATTN_EINVAL;
    for (size_t i = attn_pages_for(p, len), n = attn_pages_for(p, s->len); i < n; i++)
        attn_page_release(p, s->pt[i]);
    s->len = len;
    return ATTN_OK;
}

/* Token pos of sequence s: its key row into the panel (zeroing a fresh panel, whose keys past the length are then
 * read as zero, as in a KV cache) and its value row, for every KV head. */
static void attn_pool_store(attn_kv_pool *p, const attn_seq *s, size_t pos, const float *k, const float *v)
{
    const attn_kv_src *src = &p->src;
    const size_t d = p->d.head_dim, dv = p->d.v_dim, esz = attn_dtype_size(p->d.dtype), P = p->d.page_tokens;
    char *page = p->mem + s->pt[pos / P] * src->page_bytes;
    for (size_t h = 0; h < p->d.n_kv_heads; h++) {
        char *panel = page + src->pk0 + h * src->pk_h + pos % P / ATTN_PAD * d * ATTN_PAD * esz;
        if (pos % ATTN_PAD == 0) { /* and the panel's scales: tiles read whole panels of them */
            memset(panel, 0, d * ATTN_PAD * esz);
            if (p->d.dtype == ATTN_I8) {
                memset(page + src->psk + (h * P + pos % P) * sizeof(float), 0, ATTN_PAD * sizeof(float));
                memset(page + src->psv + (h * P + pos % P) * sizeof(float), 0, ATTN_PAD * sizeof(float));
            }
        }
        const float ks =
            attn_store_kv(p->d.dtype, panel + pos % ATTN_PAD * esz, k + h * d, d, ATTN_PAD, p->tmp, p->kern);
        const float vs = attn_store_kv(p->d.dtype, page + src->pv0 + h * src->pv_h + pos % P * dv * esz, v + h * dv,
                                       dv, 1, p->tmp, p->kern);
        if (p->d.dtype == ATTN_I8) {
            ((float *)(void *)(page + src->psk))[h * P + pos % P] = ks;
            ((float *)(void *)(page + src->psv))[h * P + pos % P] = vs;
        }
    }
}

attn_status attn_seq_append(attn_kv_pool *p, uint32_t seq, const float *k, const float *v, size_t n_tokens)
{
    attn_seq *s = attn_seq_at(p, seq);
    if (!s || (n_tokens && (!k || !v)))
        return ATTN_EINVAL;
    if (!n_tokens)
        return ATTN_OK;
    const size_t P = p->d.page_tokens, hk = p->d.n_kv_heads, d = p->d.head_dim, dv = p->d.v_dim;
    size_t nk, nv;
    if (n_tokens > SIZE_MAX - s->len - P || attn_mul_overflow(n_tokens, hk * d, &nk) ||
        attn_mul_overflow(n_tokens, hk * dv, &nv))
        return ATTN_ERANGE;
    if (p->d.dtype == ATTN_I8 && (!attn_all_finite(k, nk) || !attn_all_finite(v, nv)))
        return ATTN_EINVAL;
    const size_t have = attn_pages_for(p, s->len), want = attn_pages_for(p, s->len + n_tokens);
    const int cow = s->len % P && p->ref[s->pt[have - 1]] > 1;
    if (want - have + (size_t)cow > p->n_free)
        return ATTN_ERANGE;
    if (attn_seq_reserve(s, want) != ATTN_OK)
        return ATTN_ENOMEM;
    if (cow) { /* the first holder to append into a shared, partly filled page takes a copy of it */
        const uint32_t old = s->pt[have - 1], pg = attn_page_take(p);
        memcpy(p->mem + pg * p->src.page_bytes, p->mem + old * p->src.page_bytes, p->src.page_bytes);
        attn_page_release(p, old);
        s->pt[have - 1] = pg;
    }
    for (size_t t = 0; t < n_tokens; t++) {
        const size_t pos = s->len + t;
        if (pos % P == 0)
            s->pt[pos / P] = attn_page_take(p);
        attn_pool_store(p, s, pos, k + t * hk * d, v + t * hk * dv);
    }
    s->len += n_tokens;
    return ATTN_OK;
}
