/* Helpers shared by attn-tests and kernel-check: PRNG, guarded buffers, random problems and the float64
 * reference. Plain C11 + POSIX (getpid, clock_gettime); no Criterion and no fork, so it also runs under qemu. */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- seeds and PRNG ---- */

void tc_rng_init(tc_rng *r, uint64_t seed)
{
    r->s = seed;
}

uint64_t tc_rng_u64(tc_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t tc_rng_below(tc_rng *r, uint32_t n)
{
    /* The bias of a 64-bit modulo by a small n is far below anything a test could notice. */
    return (uint32_t)(tc_rng_u64(r) % n);
}

float tc_rng_float(tc_rng *r, float lo, float hi)
{
    double u = (double)(tc_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) with 53 bits */
    return (float)(lo + (hi - lo) * u);
}

uint64_t tc_mix(uint64_t seed, uint64_t i)
{
    tc_rng r;
    tc_rng_init(&r, seed ^ (i * 0xd1b54a32d192ed03ull));
    tc_rng_u64(&r);
    return tc_rng_u64(&r);
}

uint64_t tc_seed(void)
{
    static int have;
    static uint64_t seed;
    if (have)
        return seed;
    const char *env = getenv("ATTN_TEST_SEED");
    if (env && *env) {
        char *end;
        seed = strtoull(env, &end, 0);
        if (*end) {
            fprintf(stderr, "ATTN_TEST_SEED=%s is not an integer; using %" PRIu64 "\n", env, seed);
        }
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = tc_mix((uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec, (uint64_t)getpid());
        /* Keep it short enough to type back in. */
        seed %= 1000000000000ull;
    }
    have = 1;
    return seed;
}

/* ---- ISAs ---- */

int tc_isas(attn_isa out[TC_MAX_ISAS])
{
    int n = 0;
    for (size_t i = 0; attn_kernels_name(i); i++) {
        const char *name = attn_kernels_name(i);
        const size_t lvl = strcspn(name, "/");
        for (int isa = ATTN_ISA_SCALAR; isa < TC_MAX_ISAS; isa++) {
            const char *in = attn_isa_name((attn_isa)isa);
            int seen = 0;
            for (int k = 0; k < n; k++)
                seen |= out[k] == (attn_isa)isa;
            if (!seen && strlen(in) == lvl && !strncmp(name, in, lvl) && attn_isa_supported((attn_isa)isa))
                out[n++] = (attn_isa)isa;
        }
    }
    return n;
}

void tc_isas_skipped(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int isa = ATTN_ISA_SCALAR; isa < TC_MAX_ISAS; isa++) {
        const char *in = attn_isa_name((attn_isa)isa);
        int built = 0;
        for (size_t i = 0; attn_kernels_name(i); i++)
            built |= strcspn(attn_kernels_name(i), "/") == strlen(in) && !strncmp(attn_kernels_name(i), in, strlen(in));
        if (built && !attn_isa_supported((attn_isa)isa) && strlen(buf) + strlen(in) + 2 <= n) {
            strcat(buf, " ");
            strcat(buf, in);
        }
    }
}

attn_sdpa_desc tc_shape(size_t batch, size_t heads, size_t kv_heads, size_t q_len, size_t kv_len, size_t head_dim,
                        size_t v_dim)
{
    attn_sdpa_desc d;
    memset(&d, 0, sizeof d);
    d.batch = batch;
    d.n_heads = heads;
    d.n_kv_heads = kv_heads;
    d.q_len = q_len;
    d.kv_len = kv_len;
    d.head_dim = head_dim;
    d.v_dim = v_dim;
    return d;
}

attn_status tc_ctx_create(attn_ctx **ctx, attn_isa isa, int threads, int block_q, int block_kv)
{
    attn_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.isa = isa;
    cfg.num_threads = threads;
    cfg.block_q = block_q;
    cfg.block_kv = block_kv;
    return attn_ctx_create(ctx, &cfg);
}

/* ---- guarded buffers ---- */

uint32_t tc_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float tc_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void fill_bits(float *p, size_t n, uint32_t bits)
{
    float f = tc_u2f(bits);
    for (size_t i = 0; i < n; i++)
        p[i] = f;
}

static int all_bits(const float *p, size_t n, uint32_t bits)
{
    for (size_t i = 0; i < n; i++)
        if (tc_f2u(p[i]) != bits)
            return 0;
    return 1;
}

int tc_buf_alloc(tc_buf *b, size_t n)
{
    b->n = n;
    b->base = malloc((n + 2 * TC_GUARD) * sizeof(float));
    if (!b->base) {
        b->p = NULL;
        return -1;
    }
    b->p = b->base + TC_GUARD;
    fill_bits(b->base, TC_GUARD, TC_GUARD_BITS);
    fill_bits(b->p + n, TC_GUARD, TC_GUARD_BITS);
    fill_bits(b->p, n, TC_POISON_BITS);
    return 0;
}

void tc_buf_fill_bits(tc_buf *b, uint32_t bits)
{
    fill_bits(b->p, b->n, bits);
}

int tc_buf_guards_ok(const tc_buf *b)
{
    return all_bits(b->base, TC_GUARD, TC_GUARD_BITS) && all_bits(b->p + b->n, TC_GUARD, TC_GUARD_BITS);
}

int tc_buf_all_bits(const tc_buf *b, uint32_t bits)
{
    return all_bits(b->p, b->n, bits);
}

void tc_buf_free(tc_buf *b)
{
    free(b->base);
    b->base = b->p = NULL;
    b->n = 0;
}

/* ---- problems ---- */

size_t tc_index(attn_layout layout, size_t heads, size_t seq, size_t dim, size_t b, size_t h, size_t s, size_t x)
{
    if (layout == ATTN_LAYOUT_BSHD)
        return ((b * seq + s) * heads + h) * dim + x;
    return ((b * heads + h) * seq + s) * dim + x;
}

int tc_problem_init(tc_problem *p, const attn_sdpa_desc *d)
{
    memset(p, 0, sizeof *p);
    p->d = *d;
    p->n_kv_heads = d->n_kv_heads ? d->n_kv_heads : d->n_heads;
    p->v_dim = d->v_dim ? d->v_dim : d->head_dim;
    p->nq = d->batch * d->n_heads * d->q_len * d->head_dim;
    p->nk = d->batch * p->n_kv_heads * d->kv_len * d->head_dim;
    p->nv = d->batch * p->n_kv_heads * d->kv_len * p->v_dim;
    p->nout = d->batch * d->n_heads * d->q_len * p->v_dim;
    p->nprobs = d->batch * d->n_heads * d->q_len * d->kv_len;
    /* One float in: malloc's alignment is the best case, and kernels must handle any float pointer. */
    p->q_alloc = malloc((p->nq + 1) * sizeof(float));
    p->k_alloc = malloc((p->nk + 1) * sizeof(float));
    p->v_alloc = malloc((p->nv + 1) * sizeof(float));
    if (d->kv_valid) {
        p->kv_valid = malloc(d->batch * sizeof(int32_t));
        if (p->kv_valid)
            memcpy(p->kv_valid, d->kv_valid, d->batch * sizeof(int32_t));
    }
    p->d.kv_valid = p->kv_valid;
    if (!p->q_alloc || !p->k_alloc || !p->v_alloc || (d->kv_valid && !p->kv_valid)) {
        tc_problem_free(p);
        return -1;
    }
    p->q = p->q_alloc + 1;
    p->k = p->k_alloc + 1;
    p->v = p->v_alloc + 1;
    return 0;
}

void tc_problem_fill(tc_problem *p, uint64_t seed, tc_fill kind)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    p->seed = seed;
    if (kind == TC_FILL_INT_QK) {
        for (size_t i = 0; i < p->nq; i++)
            p->q[i] = (float)((int)tc_rng_below(&r, 17) - 8);
        for (size_t i = 0; i < p->nk; i++)
            p->k[i] = (float)((int)tc_rng_below(&r, 17) - 8);
    } else {
        for (size_t i = 0; i < p->nq; i++)
            p->q[i] = tc_rng_float(&r, -1.0f, 1.0f);
        for (size_t i = 0; i < p->nk; i++)
            p->k[i] = tc_rng_float(&r, -1.0f, 1.0f);
    }
    for (size_t i = 0; i < p->nv; i++)
        p->v[i] = tc_rng_float(&r, -1.0f, 1.0f);
}

void tc_problem_free(tc_problem *p)
{
    free(p->q_alloc);
    free(p->k_alloc);
    free(p->v_alloc);
    free(p->kv_valid);
    memset(p, 0, sizeof *p);
}

void tc_random_kv_valid(tc_rng *r, int32_t *kv_valid, size_t batch, size_t kv_len)
{
    for (size_t b = 0; b < batch; b++) {
        switch (tc_rng_below(r, 4)) {
        case 0: kv_valid[b] = 0; break;
        case 1: kv_valid[b] = (int32_t)kv_len; break;
        default: kv_valid[b] = (int32_t)tc_rng_below(r, (uint32_t)kv_len + 1); break;
        }
    }
}

void tc_desc_str(const attn_sdpa_desc *d, char *buf, size_t len)
{
    int n = snprintf(buf, len, "b=%zu h=%zu kvh=%zu q=%zu kv=%zu d=%zu dv=%zu %s %s", d->batch, d->n_heads,
                     d->n_kv_heads, d->q_len, d->kv_len, d->head_dim, d->v_dim,
                     d->layout == ATTN_LAYOUT_BSHD ? "BSHD" : d->layout == ATTN_LAYOUT_BHSD ? "BHSD" : "layout?",
                     d->mask == ATTN_MASK_CAUSAL ? "causal" : d->mask == ATTN_MASK_NONE ? "nomask" : "mask?");
    if (n < 0 || (size_t)n >= len)
        return;
    if (d->window)
        n += snprintf(buf + n, len - (size_t)n, " win=%zu", d->window);
    if ((size_t)n < len && d->scale != 0.0f)
        n += snprintf(buf + n, len - (size_t)n, " scale=%g", (double)d->scale);
    if ((size_t)n < len && d->kv_valid) {
        n += snprintf(buf + n, len - (size_t)n, " kv_valid=[");
        for (size_t b = 0; b < d->batch && b < 8 && (size_t)n < len; b++)
            n += snprintf(buf + n, len - (size_t)n, "%s%d", b ? "," : "", (int)d->kv_valid[b]);
        if ((size_t)n < len)
            n += snprintf(buf + n, len - (size_t)n, "%s]", d->batch > 8 ? ",..." : "");
    }
    /* Element types and math mode, when any is not the v0 default. */
    if ((size_t)n < len && (d->q_dtype || d->kv_dtype || d->out_dtype || d->math))
        n += snprintf(buf + n, len - (size_t)n, " q:%s kv:%s out:%s math:%s", tc_dtype_name(d->q_dtype),
                      tc_dtype_name(d->kv_dtype), tc_dtype_name(d->out_dtype),
                      d->math == ATTN_MATH_F32 ? "f32" : d->math == ATTN_MATH_BF16 ? "bf16" : "?");
}

/* ---- the reference ---- */

/* Keys [*lo, *hi) are the ones query row i of batch b sees, straight from the contract: bottom-right causal
 * position p = i + kv_len - q_len (even with kv_valid), window p - window < j <= p, right padding j < kv_valid. */
static void visible_range(const tc_problem *p, size_t b, size_t i, long long *lo, long long *hi)
{
    const attn_sdpa_desc *d = &p->d;
    long long pos = (long long)i + (long long)d->kv_len - (long long)d->q_len;
    long long l = 0, h = (long long)d->kv_len;
    if (p->kv_valid && p->kv_valid[b] < h)
        h = p->kv_valid[b];
    if (d->mask == ATTN_MASK_CAUSAL) {
        if (pos + 1 < h)
            h = pos + 1;
        if (d->window && pos - (long long)d->window + 1 > l)
            l = pos - (long long)d->window + 1;
    }
    *lo = l;
    *hi = h;
}

long tc_ref_row(const tc_problem *p, size_t b, size_t h, size_t i, double *ref_out, double *ref_probs,
                double *scratch)
{
    const attn_sdpa_desc *d = &p->d;
    size_t hk = h / (d->n_heads / p->n_kv_heads);
    long long lo, hi;
    visible_range(p, b, i, &lo, &hi);
    for (size_t c = 0; c < p->v_dim; c++)
        ref_out[c] = 0.0;
    if (ref_probs)
        for (size_t j = 0; j < d->kv_len; j++)
            ref_probs[j] = 0.0;
    if (hi <= lo)
        return 0;

    double scale = d->scale != 0.0f ? (double)d->scale : 1.0 / sqrt((double)d->head_dim);
    const float *qr = p->q + tc_index(d->layout, d->n_heads, d->q_len, d->head_dim, b, h, i, 0);
    double m = -INFINITY;
    int nonfinite = 0;
    for (long long j = lo; j < hi; j++) {
        const float *kr = p->k + tc_index(d->layout, p->n_kv_heads, d->kv_len, d->head_dim, b, hk, (size_t)j, 0);
        const float *vr = p->v + tc_index(d->layout, p->n_kv_heads, d->kv_len, p->v_dim, b, hk, (size_t)j, 0);
        double s = 0.0;
        for (size_t x = 0; x < d->head_dim; x++)
            s += (double)qr[x] * (double)kr[x];
        s *= scale;
        scratch[j] = s;
        if (!isfinite(s))
            nonfinite = 1;
        else if (s > m)
            m = s;
        for (size_t c = 0; c < p->v_dim; c++)
            if (!isfinite(vr[c]))
                nonfinite = 1;
    }
    if (nonfinite)
        return -1;
    double l = 0.0;
    for (long long j = lo; j < hi; j++) {
        scratch[j] = exp(scratch[j] - m);
        l += scratch[j];
    }
    for (long long j = lo; j < hi; j++) {
        const float *vr = p->v + tc_index(d->layout, p->n_kv_heads, d->kv_len, p->v_dim, b, hk, (size_t)j, 0);
        double w = scratch[j] / l;
        if (ref_probs)
            ref_probs[j] = w;
        for (size_t c = 0; c < p->v_dim; c++)
            ref_out[c] += w * (double)vr[c];
    }
    return (long)(hi - lo);
}

/* ---- the check ---- */

#if defined(__GNUC__)
static int fail(char *msg, size_t len, const attn_ctx *ctx, const tc_problem *p, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
#endif

static int fail(char *msg, size_t len, const attn_ctx *ctx, const tc_problem *p, const char *fmt, ...)
{
    char shape[512];
    tc_desc_str(&p->d, shape, sizeof shape);
    int n = snprintf(msg, len, "ATTN_TEST_SEED=%" PRIu64 " case_seed=%" PRIu64 " isa=%s [%s]: ", tc_seed(),
                     p->seed, attn_isa_name(attn_ctx_isa(ctx)), shape);
    if (n >= 0 && (size_t)n < len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + n, len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static float *copy_floats(const float *src, size_t n)
{
    float *dst = malloc((n ? n : 1) * sizeof(float));
    if (dst && n)
        memcpy(dst, src, n * sizeof(float));
    return dst;
}

typedef struct worst {
    double err;
    size_t b, h, i, c;
    double got, ref;
} worst;

static void note(worst *w, double err, size_t b, size_t h, size_t i, size_t c, double got, double ref)
{
    if (!(err <= w->err)) { /* NaN sticks as the worst */
        if (isnan(w->err))
            return;
        w->err = err;
        w->b = b, w->h = h, w->i = i, w->c = c;
        w->got = got, w->ref = ref;
    }
}

static int compare(const attn_ctx *ctx, const tc_problem *p, const float *out, const float *probs, tc_stats *st,
                   char *msg, size_t len)
{
    const attn_sdpa_desc *d = &p->d;
    double *ref_out = malloc(p->v_dim * sizeof(double));
    double *ref_probs = malloc(d->kv_len * sizeof(double));
    double *scratch = malloc(d->kv_len * sizeof(double));
    if (!ref_out || !ref_probs || !scratch) {
        free(ref_out), free(ref_probs), free(scratch);
        return fail(msg, len, ctx, p, "test out of memory");
    }
    worst wo = { 0 }, wp = { 0 };
    double max_ref = 0.0, rowsum_err = 0.0;
    size_t nonfinite = 0;
    int bad = 0;

    for (size_t b = 0; b < d->batch && !bad; b++) {
        for (size_t h = 0; h < d->n_heads && !bad; h++) {
            for (size_t i = 0; i < d->q_len && !bad; i++) {
                long n = tc_ref_row(p, b, h, i, ref_out, probs ? ref_probs : NULL, scratch);
                if (n < 0) {
                    nonfinite++;
                    continue;
                }
                const float *o = out + tc_index(d->layout, d->n_heads, d->q_len, p->v_dim, b, h, i, 0);
                const float *pr = probs ? probs + ((b * d->n_heads + h) * d->q_len + i) * d->kv_len : NULL;
                if (n == 0) {
                    /* The contract says all-zero, never NaN: no tolerance here. */
                    for (size_t c = 0; c < p->v_dim && !bad; c++)
                        if (o[c] != 0.0f)
                            bad = fail(msg, len, ctx, p, "row b=%zu h=%zu i=%zu sees no key but out[%zu] = %g", b,
                                       h, i, c, (double)o[c]);
                    for (size_t j = 0; pr && j < d->kv_len && !bad; j++)
                        if (pr[j] != 0.0f)
                            bad = fail(msg, len, ctx, p, "row b=%zu h=%zu i=%zu sees no key but probs[%zu] = %g",
                                       b, h, i, j, (double)pr[j]);
                    continue;
                }
                for (size_t c = 0; c < p->v_dim; c++) {
                    if (fabs(ref_out[c]) > max_ref)
                        max_ref = fabs(ref_out[c]);
                    note(&wo, fabs((double)o[c] - ref_out[c]), b, h, i, c, o[c], ref_out[c]);
                }
                if (!pr)
                    continue;
                long long lo, hi;
                visible_range(p, b, i, &lo, &hi);
                double sum = 0.0;
                for (size_t j = 0; j < d->kv_len && !bad; j++) {
                    if ((long long)j < lo || (long long)j >= hi) {
                        if (pr[j] != 0.0f)
                            bad = fail(msg, len, ctx, p, "probs[b=%zu h=%zu i=%zu j=%zu] = %g for a masked key", b,
                                       h, i, j, (double)pr[j]);
                        continue;
                    }
                    sum += pr[j];
                    note(&wp, fabs((double)pr[j] - ref_probs[j]), b, h, i, j, pr[j], ref_probs[j]);
                }
                double e = fabs(sum - 1.0);
                if (!bad && !(e <= TC_ROWSUM_TOL))
                    bad = fail(msg, len, ctx, p, "probs row b=%zu h=%zu i=%zu sums to %.9g", b, h, i, sum);
                if (e > rowsum_err)
                    rowsum_err = e;
            }
        }
    }
    double norm = max_ref > 1.0 ? max_ref : 1.0;
    if (!bad && !(wo.err <= TC_TOL * norm))
        bad = fail(msg, len, ctx, p, "out[b=%zu h=%zu i=%zu c=%zu] = %.9g, reference %.9g: error %.3g > %.3g", wo.b,
                   wo.h, wo.i, wo.c, wo.got, wo.ref, wo.err, TC_TOL * norm);
    if (!bad && !(wp.err <= TC_TOL))
        bad = fail(msg, len, ctx, p, "probs[b=%zu h=%zu i=%zu j=%zu] = %.9g, reference %.9g: error %.3g > %.3g",
                   wp.b, wp.h, wp.i, wp.c, wp.got, wp.ref, wp.err, TC_TOL);
    if (st) {
        st->cases++;
        if (wo.err / norm > st->err_out || isnan(wo.err))
            st->err_out = wo.err / norm;
        if (wp.err > st->err_probs || isnan(wp.err))
            st->err_probs = wp.err;
        if (rowsum_err > st->err_rowsum)
            st->err_rowsum = rowsum_err;
        st->nonfinite_rows += nonfinite;
    }
    free(ref_out), free(ref_probs), free(scratch);
    return bad;
}

int tc_check(const attn_ctx *ctx, const tc_problem *p, int want_probs, tc_stats *st, char *msg, size_t len)
{
    tc_buf out = { 0 }, probs = { 0 };
    float *q0 = copy_floats(p->q, p->nq), *k0 = copy_floats(p->k, p->nk), *v0 = copy_floats(p->v, p->nv);
    int bad = 0;
    if (!q0 || !k0 || !v0 || tc_buf_alloc(&out, p->nout) || (want_probs && tc_buf_alloc(&probs, p->nprobs))) {
        bad = fail(msg, len, ctx, p, "test out of memory");
        goto done;
    }
    attn_status s = attn_sdpa(ctx, &p->d, p->q, p->k, p->v, out.p, want_probs ? probs.p : NULL);
    if (s != ATTN_OK) {
        bad = fail(msg, len, ctx, p, "attn_sdpa returned %d (%s)", (int)s, attn_strerror(s));
        goto done;
    }
    if (!tc_buf_guards_ok(&out))
        bad = fail(msg, len, ctx, p, "write outside out[0..%zu)", p->nout);
    else if (want_probs && !tc_buf_guards_ok(&probs))
        bad = fail(msg, len, ctx, p, "write outside probs[0..%zu)", p->nprobs);
    else if (memcmp(q0, p->q, p->nq * sizeof(float)) || memcmp(k0, p->k, p->nk * sizeof(float)) ||
             memcmp(v0, p->v, p->nv * sizeof(float)))
        bad = fail(msg, len, ctx, p, "an input was written");
    else
        bad = compare(ctx, p, out.p, want_probs ? probs.p : NULL, st, msg, len);
done:
    free(q0), free(k0), free(v0);
    tc_buf_free(&out);
    if (want_probs)
        tc_buf_free(&probs);
    return bad;
}

int tc_check_isas(const tc_problem *p, int want_probs, tc_stats st[TC_MAX_ISAS], char *msg, size_t len)
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++) {
        attn_ctx *ctx = NULL;
        attn_status s = tc_ctx_create(&ctx, isas[i], 0, 0, 0);
        if (s != ATTN_OK) {
            snprintf(msg, len, "attn_ctx_create(isa=%s) returned %d (%s)", attn_isa_name(isas[i]), (int)s,
                     attn_strerror(s));
            return 1;
        }
        int bad = tc_check(ctx, p, want_probs, st ? &st[isas[i]] : NULL, msg, len);
        attn_ctx_destroy(ctx);
        if (bad)
            return 1;
    }
    return 0;
}

attn_status tc_run(const attn_ctx *ctx, const tc_problem *p, int want_probs, float **out, float **probs)
{
    *out = malloc((p->nout ? p->nout : 1) * sizeof(float));
    *probs = want_probs ? malloc((p->nprobs ? p->nprobs : 1) * sizeof(float)) : NULL;
    if (!*out || (want_probs && !*probs)) {
        free(*out), free(*probs);
        *out = *probs = NULL;
        return ATTN_ENOMEM;
    }
    fill_bits(*out, p->nout, TC_POISON_BITS);
    if (*probs)
        fill_bits(*probs, p->nprobs, TC_POISON_BITS);
    return attn_sdpa(ctx, &p->d, p->q, p->k, p->v, *out, *probs);
}

void tc_stats_merge(tc_stats *into, const tc_stats *from)
{
    into->cases += from->cases;
    if (from->err_out > into->err_out || isnan(from->err_out))
        into->err_out = from->err_out;
    if (from->err_probs > into->err_probs || isnan(from->err_probs))
        into->err_probs = from->err_probs;
    if (from->err_rowsum > into->err_rowsum)
        into->err_rowsum = from->err_rowsum;
    into->nonfinite_rows += from->nonfinite_rows;
}

void tc_stats_str(attn_isa isa, const tc_stats *st, char *buf, size_t len)
{
    snprintf(buf, len, "%-6s: %4lu cases, max err out %.2e probs %.2e rowsum %.2e", attn_isa_name(isa), st->cases,
             st->err_out, st->err_probs, st->err_rowsum);
}

int tc_check_desc(const attn_sdpa_desc *d, uint64_t case_id, tc_fill kind, int want_probs, tc_stats st[TC_MAX_ISAS],
                  char *msg, size_t len)
{
    tc_problem p;
    if (tc_problem_init(&p, d)) {
        snprintf(msg, len, "test out of memory");
        return 1;
    }
    tc_problem_fill(&p, tc_mix(tc_seed(), case_id), kind);
    int bad = tc_check_isas(&p, want_probs, st, msg, len);
    tc_problem_free(&p);
    return bad;
}

void tc_print_stats(const char *what, const tc_stats st[TC_MAX_ISAS])
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++) {
        char line[256];
        tc_stats_str(isas[i], &st[isas[i]], line, sizeof line);
        fprintf(stderr, "[stat] %-24s %s (seed %" PRIu64 ")\n", what, line, tc_seed());
    }
}

/* ---- the KV cache ---- */

float tc_stored(attn_dtype t, float x)
{
    if (t == ATTN_F16)
        return (float)(_Float16)x;
    if (t == ATTN_BF16) {
        if (isnan(x) || isinf(x) || x == 0.0f)
            return x;
        int e;
        (void)frexp((double)x, &e); /* x = m 2^e, 0.5 <= |m| < 1: bfloat16 keeps 8 significant bits, */
        const int q = e - 8 < -133 ? -133 : e - 8; /* down to its smallest subnormal step, 2^-133 */
        return (float)ldexp(nearbyint(ldexp((double)x, -q)), q);
    }
    return x;
}

void tc_stored_row(attn_dtype t, float *x, size_t n)
{
    if (t != ATTN_I8) {
        for (size_t i = 0; i < n; i++)
            x[i] = tc_stored(t, x[i]);
        return;
    }
    float mx = 0.0f;
    for (size_t i = 0; i < n; i++)
        mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    const float s = mx / 127.0f; /* as the library: an fp32 division, then x / s rounded to the nearest even */
    for (size_t i = 0; i < n; i++)
        x[i] = s == 0.0f ? 0.0f : (float)(fmax(-127.0, fmin(127.0, nearbyint((double)(x[i] / s)))) * (double)s);
}

int tc_check_decode(const attn_ctx *ctx, attn_dtype t, const tc_kv_case *kc, uint64_t seed, double *worst,
                    char *msg, size_t len)
{
    const size_t h = kc->hk * kc->group, row = kc->hk * kc->d;
    attn_sdpa_desc d = tc_shape(1, h, kc->hk, kc->q_len, kc->len, kc->d, 0);
    d.layout = ATTN_LAYOUT_BSHD;
    d.mask = kc->mask;
    tc_problem p;
    attn_kv_cache *c = NULL;
    tc_buf out = { 0 };
    double *ref = NULL, *scratch = NULL;
    int bad = 1;
    if (tc_problem_init(&p, &d)) {
        snprintf(msg, len, "out of memory");
        return 1;
    }
    tc_problem_fill(&p, seed, TC_FILL_UNIFORM);
    for (size_t i = 0; i < p.nk; i++)
        p.k[i] *= 3.0f; /* scores of a few units, so that rounding K shows */
    attn_status st = attn_kv_cache_create(&c, kc->hk, kc->d, kc->len + 3, t);
    if (st != ATTN_OK) {
        snprintf(msg, len, "attn_kv_cache_create gave %d", (int)st);
        goto done;
    }
    tc_rng r;
    tc_rng_init(&r, seed ^ 0x5eedu);
    for (size_t n, at = 0; at < kc->len; at += n) {
        n = 1 + tc_rng_below(&r, 97);
        n = n > kc->len - at ? kc->len - at : n;
        if ((st = attn_kv_cache_append(c, p.k + at * row, p.v + at * row, n)) != ATTN_OK ||
            attn_kv_cache_len(c) != at + n) {
            snprintf(msg, len, "append of %zu at %zu gave %d, length %zu", n, at, (int)st, attn_kv_cache_len(c));
            goto done;
        }
    }
    for (size_t i = 0; i < p.nk; i += kc->d) { /* the reference sees what the cache stores */
        tc_stored_row(t, p.k + i, kc->d);
        tc_stored_row(t, p.v + i, kc->d);
    }
    ref = malloc(kc->d * sizeof *ref);
    scratch = malloc(2 * kc->len * sizeof *scratch);
    if (!ref || !scratch || tc_buf_alloc(&out, p.nout)) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    if ((st = attn_decode(ctx, c, p.q, kc->q_len, h, kc->mask, out.p)) != ATTN_OK) {
        snprintf(msg, len, "attn_decode gave %d", (int)st);
        goto done;
    }
    if (!tc_buf_guards_ok(&out)) {
        snprintf(msg, len, "guard around out overwritten");
        goto done;
    }
    for (size_t hh = 0; hh < h; hh++)
        for (size_t i = 0; i < kc->q_len; i++) {
            tc_ref_row(&p, 0, hh, i, ref, NULL, scratch);
            double mx = 1.0;
            for (size_t x = 0; x < kc->d; x++)
                mx = fabs(ref[x]) > mx ? fabs(ref[x]) : mx;
            for (size_t x = 0; x < kc->d; x++) {
                const float got = out.p[tc_index(ATTN_LAYOUT_BSHD, h, kc->q_len, kc->d, 0, hh, i, x)];
                const double e = fabs((double)got - ref[x]) / mx;
                *worst = e > *worst ? e : *worst;
                if (!(e <= 2e-5)) {
                    snprintf(msg, len, "h=%zu i=%zu x=%zu: %.9g vs reference %.9g", hh, i, x, (double)got, ref[x]);
                    goto done;
                }
            }
        }
    bad = 0;
done:
    free(ref);
    free(scratch);
    if (out.base)
        tc_buf_free(&out);
    attn_kv_cache_destroy(c);
    tc_problem_free(&p);
    return bad;
}

/* ---- typed tensors ---- */

uint16_t tc_f16_bits(float x)
{
    const _Float16 h = (_Float16)x;
    uint16_t u;
    memcpy(&u, &h, sizeof u);
    return u;
}

float tc_f16_value(uint16_t u)
{
    _Float16 h;
    memcpy(&h, &u, sizeof h);
    return (float)h;
}

uint16_t tc_bf16_bits(float x)
{
    if (isnan(x))
        return (uint16_t)((tc_f2u(x) >> 16) | 0x40u);
    /* tc_stored gives the nearest bfloat16 value (or the infinity it overflows to): its low half is zero. */
    return (uint16_t)(tc_f2u(tc_stored(ATTN_BF16, x)) >> 16);
}

float tc_bf16_value(uint16_t h)
{
    return tc_u2f((uint32_t)h << 16);
}

float tc_bf16_round(float x)
{
    return tc_bf16_value(tc_bf16_bits(x));
}

size_t tc_dtype_size(attn_dtype t)
{
    return t == ATTN_F16 || t == ATTN_BF16 ? sizeof(uint16_t) : sizeof(float);
}

const char *tc_dtype_name(attn_dtype t)
{
    return t == ATTN_F32 ? "f32" : t == ATTN_F16 ? "f16" : t == ATTN_BF16 ? "bf16" : "?";
}

float tc_elem_get(const void *p, attn_dtype t, size_t i)
{
    if (t == ATTN_F16)
        return tc_f16_value(((const uint16_t *)p)[i]);
    if (t == ATTN_BF16)
        return tc_bf16_value(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

void tc_elem_set(void *p, attn_dtype t, size_t i, float x)
{
    if (t == ATTN_F16)
        ((uint16_t *)p)[i] = tc_f16_bits(x);
    else if (t == ATTN_BF16)
        ((uint16_t *)p)[i] = tc_bf16_bits(x);
    else
        ((float *)p)[i] = x;
}

/* The raw bits of element i (16 or 32 of them), and setting them. */
static uint32_t elem_bits(const void *p, attn_dtype t, size_t i)
{
    if (tc_dtype_size(t) == sizeof(uint16_t))
        return ((const uint16_t *)p)[i];
    uint32_t u;
    memcpy(&u, (const float *)p + i, sizeof u);
    return u;
}

static void elem_set_bits(void *p, attn_dtype t, size_t i, uint32_t bits)
{
    if (tc_dtype_size(t) == sizeof(uint16_t))
        ((uint16_t *)p)[i] = (uint16_t)bits;
    else
        memcpy((float *)p + i, &bits, sizeof bits);
}

static uint32_t poison_bits(attn_dtype t)
{
    return t == ATTN_F16 ? TC_F16_POISON : t == ATTN_BF16 ? TC_BF16_POISON : TC_POISON_BITS;
}

static uint32_t guard_bits(attn_dtype t)
{
    return t == ATTN_F16 ? TC_F16_GUARD : t == ATTN_BF16 ? TC_BF16_GUARD : TC_GUARD_BITS;
}

/* An output of n elements of type t with TC_GUARD guard elements on each side (an odd count: the pointer the
 * library sees is 2 or 4 bytes past a 16-byte boundary), poisoned. */
typedef struct tbuf {
    unsigned char *base;
    void *p;
    size_t n;
    attn_dtype t;
} tbuf;

static int tbuf_alloc(tbuf *b, size_t n, attn_dtype t)
{
    const size_t es = tc_dtype_size(t);
    b->n = n;
    b->t = t;
    b->base = malloc((n + 2 * TC_GUARD) * es);
    if (!b->base) {
        b->p = NULL;
        return -1;
    }
    b->p = b->base + TC_GUARD * es;
    for (size_t i = 0; i < n + 2 * TC_GUARD; i++)
        elem_set_bits(b->base, t, i, i < TC_GUARD || i >= TC_GUARD + n ? guard_bits(t) : poison_bits(t));
    return 0;
}

static int tbuf_guards_ok(const tbuf *b)
{
    for (size_t i = 0; i < TC_GUARD; i++)
        if (elem_bits(b->base, b->t, i) != guard_bits(b->t) ||
            elem_bits(b->base, b->t, TC_GUARD + b->n + i) != guard_bits(b->t))
            return 0;
    return 1;
}

static void tbuf_free(tbuf *b)
{
    free(b->base);
    b->base = NULL;
    b->p = NULL;
}

/* Typed storage for n elements, one element past the start of the allocation. */
static void *typed_alloc(size_t n, attn_dtype t, void **base)
{
    const size_t es = tc_dtype_size(t);
    *base = malloc((n + 1) * es);
    return *base ? (char *)*base + es : NULL;
}

int tc_typed_init(tc_typed *t, const attn_sdpa_desc *d)
{
    memset(t, 0, sizeof *t);
    if (tc_problem_init(&t->p, d))
        return -1;
    t->q = typed_alloc(t->p.nq, d->q_dtype, &t->q_alloc);
    t->k = typed_alloc(t->p.nk, d->kv_dtype, &t->k_alloc);
    t->v = typed_alloc(t->p.nv, d->kv_dtype, &t->v_alloc);
    if (!t->q || !t->k || !t->v) {
        tc_typed_free(t);
        return -1;
    }
    return 0;
}

/* vals[0..n) rounded to t, stored into dst and written back as the stored values. */
static void typed_put(void *dst, attn_dtype t, float *vals, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tc_elem_set(dst, t, i, vals[i]);
        vals[i] = tc_elem_get(dst, t, i);
    }
}

void tc_typed_store(tc_typed *t)
{
    typed_put(t->q, t->p.d.q_dtype, t->p.q, t->p.nq);
    typed_put(t->k, t->p.d.kv_dtype, t->p.k, t->p.nk);
    typed_put(t->v, t->p.d.kv_dtype, t->p.v, t->p.nv);
}

void tc_typed_fill(tc_typed *t, uint64_t seed, float amp)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    t->p.seed = seed;
    for (size_t i = 0; i < t->p.nq; i++)
        t->p.q[i] = tc_rng_float(&r, -amp, amp);
    for (size_t i = 0; i < t->p.nk; i++)
        t->p.k[i] = tc_rng_float(&r, -amp, amp);
    for (size_t i = 0; i < t->p.nv; i++)
        t->p.v[i] = tc_rng_float(&r, -1.0f, 1.0f);
    tc_typed_store(t);
}

int tc_typed_convert(tc_typed *dst, const tc_typed *src, attn_dtype qdt, attn_dtype kvdt, int round_bf16)
{
    attn_sdpa_desc d = src->p.d;
    d.q_dtype = qdt;
    d.kv_dtype = kvdt;
    if (tc_typed_init(dst, &d))
        return -1;
    dst->p.seed = src->p.seed;
    for (size_t i = 0; i < src->p.nq; i++)
        dst->p.q[i] = round_bf16 ? tc_bf16_round(src->p.q[i]) : src->p.q[i];
    for (size_t i = 0; i < src->p.nk; i++)
        dst->p.k[i] = round_bf16 ? tc_bf16_round(src->p.k[i]) : src->p.k[i];
    for (size_t i = 0; i < src->p.nv; i++)
        dst->p.v[i] = round_bf16 ? tc_bf16_round(src->p.v[i]) : src->p.v[i];
    tc_typed_store(dst);
    return 0;
}

void tc_typed_free(tc_typed *t)
{
    free(t->q_alloc);
    free(t->k_alloc);
    free(t->v_alloc);
    tc_problem_free(&t->p);
    memset(t, 0, sizeof *t);
}

void tc_typed_ref_free(tc_typed_ref *r)
{
    free(r->out);
    free(r->probs);
    free(r->vmax);
    free(r->nvis);
    memset(r, 0, sizeof *r);
}

int tc_typed_ref_init(tc_typed_ref *r, const tc_typed *t, attn_math math, int want_probs)
{
    const attn_sdpa_desc *d = &t->p.d;
    const size_t rows = d->batch * d->n_heads * d->q_len, dv = t->p.v_dim, group = d->n_heads / t->p.n_kv_heads;
    memset(r, 0, sizeof *r);
    r->math = math;
    r->out = malloc((t->p.nout ? t->p.nout : 1) * sizeof *r->out);
    r->probs = want_probs ? malloc((t->p.nprobs ? t->p.nprobs : 1) * sizeof *r->probs) : NULL;
    r->vmax = malloc(rows * sizeof *r->vmax);
    r->nvis = malloc(rows * sizeof *r->nvis);
    double *row = malloc(dv * sizeof *row), *scratch = malloc(d->kv_len * sizeof *scratch);
    tc_problem rp;
    int have_rp = 0, bad = !r->out || (want_probs && !r->probs) || !r->vmax || !r->nvis || !row || !scratch;
    const tc_problem *p = &t->p;
    if (!bad && math == ATTN_MATH_BF16) {
        /* The reference reads q, k and v rounded to bfloat16 (values already bfloat16 stay as they are). */
        if (tc_problem_init(&rp, d)) {
            bad = 1;
        } else {
            have_rp = 1;
            for (size_t i = 0; i < p->nq; i++)
                rp.q[i] = tc_bf16_round(p->q[i]);
            for (size_t i = 0; i < p->nk; i++)
                rp.k[i] = tc_bf16_round(p->k[i]);
            for (size_t i = 0; i < p->nv; i++)
                rp.v[i] = tc_bf16_round(p->v[i]);
            p = &rp;
        }
    }
    for (size_t b = 0; b < d->batch && !bad; b++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++) {
                const size_t ri = (b * d->n_heads + h) * d->q_len + i;
                r->nvis[ri] = tc_ref_row(p, b, h, i, row, r->probs ? r->probs + ri * d->kv_len : NULL, scratch);
                memcpy(r->out + tc_index(d->layout, d->n_heads, d->q_len, dv, b, h, i, 0), row, dv * sizeof *row);
                long long lo, hi;
                visible_range(p, b, i, &lo, &hi);
                double mx = 0.0;
                for (long long j = lo; j < hi; j++) {
                    const float *vr = p->v + tc_index(d->layout, p->n_kv_heads, d->kv_len, dv, b, h / group,
                                                      (size_t)j, 0);
                    for (size_t c = 0; c < dv; c++)
                        mx = fabs((double)vr[c]) > mx ? fabs((double)vr[c]) : mx;
                }
                r->vmax[ri] = mx;
            }
    if (have_rp)
        tc_problem_free(&rp);
    free(row), free(scratch);
    if (bad) {
        tc_typed_ref_free(r);
        return -1;
    }
    return 0;
}

double tc_typed_tol(attn_math math, attn_dtype out, double ref, double vmax)
{
    double tol = math == ATTN_MATH_BF16 ? 1e-2 * vmax : TC_TOL * (fabs(ref) > 1.0 ? fabs(ref) : 1.0);
    if (out == ATTN_F16)
        tol += ldexp(fabs(ref), -11);
    else if (out == ATTN_BF16)
        tol += ldexp(fabs(ref), -8);
    return tol;
}

static void *copy_bytes(const void *src, size_t n)
{
    void *dst = malloc(n ? n : 1);
    if (dst && n)
        memcpy(dst, src, n);
    return dst;
}

int tc_typed_check(const attn_ctx *ctx, const tc_typed *t, const tc_typed_ref *ref, int want_probs, tc_stats *st,
                   void **keep_out, float **keep_probs, char *msg, size_t len)
{
    const tc_problem *p = &t->p;
    const attn_sdpa_desc *d = &p->d;
    const attn_dtype odt = d->out_dtype;
    const size_t qbytes = p->nq * tc_dtype_size(d->q_dtype), kbytes = p->nk * tc_dtype_size(d->kv_dtype),
                 vbytes = p->nv * tc_dtype_size(d->kv_dtype);
    if (keep_out)
        *keep_out = NULL;
    if (keep_probs)
        *keep_probs = NULL;
    if (d->math != ref->math || (want_probs && !ref->probs))
        return fail(msg, len, ctx, p, "test bug: the reference is for another math mode or has no probs");
    tbuf out = { 0 };
    tc_buf probs = { 0 };
    void *q0 = copy_bytes(t->q, qbytes), *k0 = copy_bytes(t->k, kbytes), *v0 = copy_bytes(t->v, vbytes);
    int bad = 0;
    if (!q0 || !k0 || !v0 || tbuf_alloc(&out, p->nout, odt) || (want_probs && tc_buf_alloc(&probs, p->nprobs))) {
        bad = fail(msg, len, ctx, p, "test out of memory");
        goto done;
    }
    attn_status s = attn_sdpa(ctx, d, t->q, t->k, t->v, out.p, want_probs ? probs.p : NULL);
    if (s != ATTN_OK) {
        bad = fail(msg, len, ctx, p, "attn_sdpa returned %d (%s)", (int)s, attn_strerror(s));
        goto done;
    }
    if (!tbuf_guards_ok(&out)) {
        bad = fail(msg, len, ctx, p, "write outside out[0..%zu)", p->nout);
        goto done;
    }
    if (want_probs && !tc_buf_guards_ok(&probs)) {
        bad = fail(msg, len, ctx, p, "write outside probs[0..%zu)", p->nprobs);
        goto done;
    }
    if (memcmp(q0, t->q, qbytes) || memcmp(k0, t->k, kbytes) || memcmp(v0, t->v, vbytes)) {
        bad = fail(msg, len, ctx, p, "an input was written");
        goto done;
    }
    double worst_rel = 0.0, worst_p = 0.0, worst_sum = 0.0;
    size_t nonfinite = 0;
    for (size_t b = 0; b < d->batch && !bad; b++)
        for (size_t h = 0; h < d->n_heads && !bad; h++)
            for (size_t i = 0; i < d->q_len && !bad; i++) {
                const size_t ri = (b * d->n_heads + h) * d->q_len + i;
                const size_t o0 = tc_index(d->layout, d->n_heads, d->q_len, p->v_dim, b, h, i, 0);
                const float *pr = want_probs ? probs.p + ri * d->kv_len : NULL;
                const double *rp = want_probs ? ref->probs + ri * d->kv_len : NULL;
                const long nv = ref->nvis[ri];
                if (nv < 0) {
                    nonfinite++;
                    continue;
                }
                if (nv == 0) { /* all zero, never NaN: no tolerance */
                    for (size_t c = 0; c < p->v_dim && !bad; c++)
                        if (tc_elem_get(out.p, odt, o0 + c) != 0.0f)
                            bad = fail(msg, len, ctx, p, "row b=%zu h=%zu i=%zu sees no key but out[%zu] = %g "
                                       "(bits 0x%x)", b, h, i, c, (double)tc_elem_get(out.p, odt, o0 + c),
                                       (unsigned)elem_bits(out.p, odt, o0 + c));
                    for (size_t j = 0; pr && j < d->kv_len && !bad; j++)
                        if (pr[j] != 0.0f)
                            bad = fail(msg, len, ctx, p, "row b=%zu h=%zu i=%zu sees no key but probs[%zu] = %g", b,
                                       h, i, j, (double)pr[j]);
                    continue;
                }
                const double vmax = ref->vmax[ri];
                for (size_t c = 0; c < p->v_dim && !bad; c++) {
                    const double got = tc_elem_get(out.p, odt, o0 + c), want = ref->out[o0 + c];
                    const double err = fabs(got - want), tol = tc_typed_tol(d->math, odt, want, vmax);
                    const double unit = d->math == ATTN_MATH_BF16 ? (vmax > 0.0 ? vmax : 1.0)
                                                                  : (fabs(want) > 1.0 ? fabs(want) : 1.0);
                    if (!(err / unit <= worst_rel))
                        worst_rel = isnan(worst_rel) ? worst_rel : err / unit;
                    if (!(err <= tol))
                        bad = fail(msg, len, ctx, p,
                                   "out[b=%zu h=%zu i=%zu c=%zu] = %.9g (bits 0x%x), reference %.9g: error %.3g > "
                                   "%.3g (max|v| of the row %.3g)",
                                   b, h, i, c, got, (unsigned)elem_bits(out.p, odt, o0 + c), want, err, tol, vmax);
                }
                if (!pr)
                    continue;
                long long lo, hi;
                visible_range(p, b, i, &lo, &hi);
                double sum = 0.0;
                for (size_t j = 0; j < d->kv_len && !bad; j++) {
                    if ((long long)j < lo || (long long)j >= hi) {
                        if (pr[j] != 0.0f)
                            bad = fail(msg, len, ctx, p, "probs[b=%zu h=%zu i=%zu j=%zu] = %g for a masked key", b,
                                       h, i, j, (double)pr[j]);
                        continue;
                    }
                    sum += pr[j];
                    const double e = fabs((double)pr[j] - rp[j]);
                    if (!(e <= worst_p))
                        worst_p = isnan(worst_p) ? worst_p : e;
                    if (!(e <= TC_TOL))
                        bad = fail(msg, len, ctx, p, "probs[b=%zu h=%zu i=%zu j=%zu] = %.9g, reference %.9g: error "
                                   "%.3g > %.3g", b, h, i, j, (double)pr[j], rp[j], e, TC_TOL);
                }
                const double e = fabs(sum - 1.0);
                if (!bad && !(e <= TC_ROWSUM_TOL))
                    bad = fail(msg, len, ctx, p, "probs row b=%zu h=%zu i=%zu sums to %.9g", b, h, i, sum);
                worst_sum = e > worst_sum ? e : worst_sum;
            }
    if (st) {
        st->cases++;
        if (worst_rel > st->err_out || isnan(worst_rel))
            st->err_out = worst_rel;
        if (worst_p > st->err_probs || isnan(worst_p))
            st->err_probs = worst_p;
        if (worst_sum > st->err_rowsum)
            st->err_rowsum = worst_sum;
        st->nonfinite_rows += nonfinite;
    }
    if (!bad && keep_out) {
        *keep_out = copy_bytes(out.p, p->nout * tc_dtype_size(odt));
        if (want_probs && keep_probs)
            *keep_probs = copy_bytes(probs.p, p->nprobs * sizeof(float));
        if (!*keep_out || (want_probs && keep_probs && !*keep_probs)) {
            free(*keep_out);
            *keep_out = NULL;
            if (keep_probs) {
                free(*keep_probs);
                *keep_probs = NULL;
            }
            bad = fail(msg, len, ctx, p, "test out of memory");
        }
    }
done:
    free(q0), free(k0), free(v0);
    tbuf_free(&out);
    if (want_probs)
        tc_buf_free(&probs);
    return bad;
}

int tc_keys_read_in_place(const attn_sdpa_desc *d)
{
    const size_t group = d->n_heads / (d->n_kv_heads ? d->n_kv_heads : d->n_heads);
    return d->head_dim % 16 == 0 && group * d->q_len <= 16;
}

int tc_typed_strict(void)
{
    const char *e = getenv("ATTN_TEST_STRICT_DTYPES");
    return e && *e && strcmp(e, "0") != 0;
}

attn_status tc_typed_run(const attn_ctx *ctx, const tc_typed *t, int want_probs, void **out, float **probs)
{
    const tc_problem *p = &t->p;
    const attn_dtype odt = p->d.out_dtype;
    *out = malloc((p->nout ? p->nout : 1) * tc_dtype_size(odt));
    *probs = want_probs ? malloc((p->nprobs ? p->nprobs : 1) * sizeof(float)) : NULL;
    if (!*out || (want_probs && !*probs)) {
        free(*out), free(*probs);
        *out = NULL;
        *probs = NULL;
        return ATTN_ENOMEM;
    }
    for (size_t i = 0; i < p->nout; i++)
        elem_set_bits(*out, odt, i, poison_bits(odt));
    for (size_t i = 0; *probs && i < p->nprobs; i++)
        (*probs)[i] = tc_u2f(TC_POISON_BITS);
    return attn_sdpa(ctx, &p->d, t->q, t->k, t->v, *out, *probs);
}

int tc_typed_same(const attn_ctx *ctx, const tc_typed *t, const void *out_a, const float *probs_a,
                  const void *out_b, const float *probs_b, const char *what, char *msg, size_t len)
{
    const tc_problem *p = &t->p;
    const attn_sdpa_desc *d = &p->d;
    const attn_dtype odt = d->out_dtype;
    for (size_t x = 0; x < p->nout; x++) {
        const uint32_t a = elem_bits(out_a, odt, x), b = elem_bits(out_b, odt, x);
        if (a == b)
            continue;
        /* (b, h, i, c) of element x in the output's layout. */
        size_t c = x % p->v_dim, r = x / p->v_dim, bb, h, i;
        if (d->layout == ATTN_LAYOUT_BSHD)
            h = r % d->n_heads, i = r / d->n_heads % d->q_len, bb = r / d->n_heads / d->q_len;
        else
            i = r % d->q_len, h = r / d->q_len % d->n_heads, bb = r / d->q_len / d->n_heads;
        return fail(msg, len, ctx, p, "%s: out[b=%zu h=%zu i=%zu c=%zu] differs: 0x%x (%.9g) vs 0x%x (%.9g)", what,
                    bb, h, i, c, (unsigned)a, (double)tc_elem_get(out_a, odt, x), (unsigned)b,
                    (double)tc_elem_get(out_b, odt, x));
    }
    for (size_t x = 0; probs_a && probs_b && x < p->nprobs; x++)
        if (tc_f2u(probs_a[x]) != tc_f2u(probs_b[x])) {
            const size_t j = x % d->kv_len, r = x / d->kv_len;
            return fail(msg, len, ctx, p, "%s: probs[b=%zu h=%zu i=%zu j=%zu] differ: %.9g vs %.9g", what,
                        r / d->q_len / d->n_heads, r / d->q_len % d->n_heads, r % d->q_len, j, (double)probs_a[x],
                        (double)probs_b[x]);
        }
    return 0;
}

/* ---- the self-attention layer ---- */

size_t tc_layer_width(const attn_layer *w)
{
    return w->wo ? w->d_model : w->n_heads * w->head_dim;
}

void tc_layer_sizes(const attn_layer *w, size_t sizes[8])
{
    const size_t hk = w->n_kv_heads ? w->n_kv_heads : w->n_heads;
    const size_t qw = w->n_heads * w->head_dim, kw = hk * w->head_dim, dm = w->d_model;
    const float *const p[8] = { w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->bo };
    const size_t n[8] = { qw * dm, kw * dm, kw * dm, dm * qw, qw, kw, kw, dm };
    for (int i = 0; i < 8; i++)
        sizes[i] = p[i] ? n[i] : 0;
}

/* out[r][j] = b[j] + sum_i x[r][i] w[j][i] in double; b may be NULL. */
static void ref_linear(const float *x, size_t rows, size_t k, const float *w, const float *b, size_t n, double *out)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++) {
            double t = b ? (double)b[j] : 0.0;
            for (size_t i = 0; i < k; i++)
                t += (double)x[r * k + i] * (double)w[j * k + i];
            out[r * n + j] = t;
        }
}

int tc_ref_layer(const attn_layer *w, const float *x, size_t n, attn_mask mask, double *y, double *probs)
{
    const size_t h = w->n_heads, hk = w->n_kv_heads ? w->n_kv_heads : h, hd = w->head_dim, dm = w->d_model;
    const size_t qw = h * hd, kw = hk * hd, group = h / hk;
    double *q = malloc(n * qw * sizeof *q), *k = malloc(n * kw * sizeof *k), *v = malloc(n * kw * sizeof *v);
    double *o = malloc(n * qw * sizeof *o), *s = malloc(n * sizeof *s);
    int bad = -1;
    if (!q || !k || !v || !o || !s)
        goto done;
    ref_linear(x, n, dm, w->wq, w->bq, qw, q);
    ref_linear(x, n, dm, w->wk, w->bk, kw, k);
    ref_linear(x, n, dm, w->wv, w->bv, kw, v);
    const double scale = 1.0 / sqrt((double)hd);
    for (size_t hh = 0; hh < h; hh++) {
        const size_t g = hh / group; /* the KV head this query head reads */
        for (size_t i = 0; i < n; i++) {
            const size_t seen = mask == ATTN_MASK_CAUSAL ? i + 1 : n;
            double mx = -INFINITY, sum = 0.0;
            for (size_t j = 0; j < seen; j++) {
                double t = 0.0;
                for (size_t c = 0; c < hd; c++)
                    t += q[i * qw + hh * hd + c] * k[j * kw + g * hd + c];
                s[j] = t * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (size_t j = 0; j < seen; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (size_t j = 0; j < n; j++) {
                const double pj = j < seen ? s[j] / sum : 0.0;
                if (probs)
                    probs[(hh * n + i) * n + j] = pj;
                s[j] = pj;
            }
            for (size_t c = 0; c < hd; c++) {
                double t = 0.0;
                for (size_t j = 0; j < seen; j++)
                    t += s[j] * v[j * kw + g * hd + c];
                o[i * qw + hh * hd + c] = t;
            }
        }
    }
    if (w->wo) {
        for (size_t r = 0; r < n; r++)
            for (size_t j = 0; j < dm; j++) {
                double t = w->bo ? (double)w->bo[j] : 0.0;
                for (size_t c = 0; c < qw; c++)
                    t += o[r * qw + c] * (double)((const float *)w->wo)[j * qw + c];
                y[r * dm + j] = t;
            }
    } else {
        memcpy(y, o, n * qw * sizeof *y);
    }
    bad = 0;
done:
    free(q), free(k), free(v), free(o), free(s);
    return bad;
}

static int layer_fail(char *msg, size_t len, const attn_ctx *ctx, const attn_layer *w, size_t n, attn_mask mask,
                      const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int layer_fail(char *msg, size_t len, const attn_ctx *ctx, const attn_layer *w, size_t n, attn_mask mask,
                      const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(msg, len, "%s, %d threads, layer n=%zu d_model=%zu h=%zu/%zu hd=%zu%s%s%s: %s (seed %" PRIu64 ")",
             attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx), n, w->d_model, w->n_heads,
             w->n_kv_heads ? w->n_kv_heads : w->n_heads, w->head_dim, w->wo ? "" : " no-wo",
             w->bq || w->bk || w->bv || w->bo ? " bias" : "", mask == ATTN_MASK_CAUSAL ? " causal" : "", what,
             tc_seed());
    return 1;
}

int tc_check_layer(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n, attn_mask mask,
                   int want_probs, const double *ref_y, const double *ref_probs, double tol, tc_layer_stats *st,
                   char *msg, size_t len)
{
    const size_t width = tc_layer_width(w), h = w->n_heads, ny = n * width, np = h * n * n;
    const float *const in[9] = { x, w->wq, w->wk, w->wv, w->wo, w->bq, w->bk, w->bv, w->bo };
    size_t inn[9];
    tc_layer_sizes(w, inn + 1);
    inn[0] = n * w->d_model;
    float *copy[9] = { 0 };
    tc_buf y = { 0 }, probs = { 0 };
    int bad = 0;
    for (int i = 0; i < 9; i++)
        if (in[i] && !(copy[i] = copy_floats(in[i], inn[i])))
            bad = 1;
    if (bad || tc_buf_alloc(&y, ny) || (want_probs && tc_buf_alloc(&probs, np))) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "test out of memory");
        goto done;
    }
    attn_status s = attn_self_attention(ctx, w, x, n, mask, y.p, want_probs ? probs.p : NULL);
    if (s != ATTN_OK) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "attn_self_attention returned %d (%s)", (int)s,
                         attn_strerror(s));
        goto done;
    }
    if (!tc_buf_guards_ok(&y)) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "write outside y[0..%zu)", ny);
        goto done;
    }
    if (want_probs && !tc_buf_guards_ok(&probs)) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "write outside probs[0..%zu)", np);
        goto done;
    }
    for (int i = 0; i < 9; i++)
        if (in[i] && memcmp(copy[i], in[i], inn[i] * sizeof(float))) {
            static const char *const names[9] = { "x", "wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo" };
            bad = layer_fail(msg, len, ctx, w, n, mask, "input %s was written", names[i]);
            goto done;
        }
    double max_ref = 0.0, ey = 0.0, ep = 0.0, er = 0.0;
    size_t wy = 0, wp = 0;
    for (size_t i = 0; i < ny; i++) {
        const double e = fabs((double)y.p[i] - ref_y[i]);
        max_ref = fabs(ref_y[i]) > max_ref ? fabs(ref_y[i]) : max_ref;
        if (!(e <= ey)) { /* NaN (a forgotten element) sticks */
            ey = e;
            wy = i;
            if (isnan(e))
                break;
        }
    }
    const double norm = max_ref > 1.0 ? max_ref : 1.0;
    if (!(ey <= tol * norm)) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "y[%zu][%zu] = %.9g, reference %.9g: error %.3g > %.3g",
                         wy / width, wy % width, (double)y.p[wy], ref_y[wy], ey, tol * norm);
        goto done;
    }
    for (size_t hh = 0; want_probs && hh < h; hh++)
        for (size_t i = 0; i < n; i++) {
            const float *pr = probs.p + (hh * n + i) * n;
            const double *rp = ref_probs + (hh * n + i) * n;
            const size_t seen = mask == ATTN_MASK_CAUSAL ? i + 1 : n;
            double sum = 0.0;
            for (size_t j = 0; j < n; j++) {
                if (j >= seen) {
                    if (pr[j] != 0.0f) {
                        bad = layer_fail(msg, len, ctx, w, n, mask, "probs[h=%zu i=%zu j=%zu] = %g for a masked key",
                                         hh, i, j, (double)pr[j]);
                        goto done;
                    }
                    continue;
                }
                sum += pr[j];
                const double e = fabs((double)pr[j] - rp[j]);
                if (!(e <= ep) && !isnan(ep)) { /* NaN sticks */
                    ep = e;
                    wp = (hh * n + i) * n + j;
                }
            }
            const double e = fabs(sum - 1.0);
            if (!(e <= TC_ROWSUM_TOL)) {
                bad = layer_fail(msg, len, ctx, w, n, mask, "probs row h=%zu i=%zu sums to %.9g", hh, i, sum);
                goto done;
            }
            er = e > er ? e : er;
        }
    if (!(ep <= tol)) {
        bad = layer_fail(msg, len, ctx, w, n, mask, "probs[h=%zu i=%zu j=%zu] = %.9g, reference %.9g: error %.3g > %.3g",
                         wp / (n * n), wp / n % n, wp % n, (double)probs.p[wp], ref_probs[wp], ep, tol);
        goto done;
    }
    if (st) {
        st->cases++;
        st->err_y = ey / norm > st->err_y ? ey / norm : st->err_y;
        st->err_probs = ep > st->err_probs ? ep : st->err_probs;
        st->err_rowsum = er > st->err_rowsum ? er : st->err_rowsum;
    }
done:
    for (int i = 0; i < 9; i++)
        free(copy[i]);
    if (y.base)
        tc_buf_free(&y);
    if (probs.base)
        tc_buf_free(&probs);
    return bad;
}

void tc_layer_stats_merge(tc_layer_stats *into, const tc_layer_stats *from)
{
    into->cases += from->cases;
    into->err_y = from->err_y > into->err_y ? from->err_y : into->err_y;
    into->err_probs = from->err_probs > into->err_probs ? from->err_probs : into->err_probs;
    into->err_rowsum = from->err_rowsum > into->err_rowsum ? from->err_rowsum : into->err_rowsum;
}

void tc_layer_stats_str(attn_isa isa, const tc_layer_stats *st, char *buf, size_t len)
{
    snprintf(buf, len, "%-6s: %4lu cases, max err y %.2e probs %.2e rowsum %.2e", attn_isa_name(isa), st->cases,
             st->err_y, st->err_probs, st->err_rowsum);
}

/* ==== robustness checks: fault-check, concurrency-check, long-check, test_edges.c ==================== */

#include <strings.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

int tc_isas_env(attn_isa out[TC_MAX_ISAS])
{
    attn_isa all[TC_MAX_ISAS];
    const int n = tc_isas(all);
    const char *e = getenv("ATTN_ISA");
    int m = 0;
    for (int i = 0; i < n; i++)
        if (!e || !*e || !strcasecmp(e, "auto") || !strcasecmp(e, attn_isa_name(all[i])))
            out[m++] = all[i];
    return m;
}

#define TC_MXCSR_CONTROL 0xffc0u /* DAZ (bit 6), exception masks, rounding control, FTZ (bit 15) */
#define TC_MXCSR_FLUSH 0x8040u   /* FTZ | DAZ */
#define TC_FPCR_FLUSH ((1u << 24) | (1u << 19)) /* FZ | FZ16 (FZ16 is RES0 without FEAT_FP16) */
#if defined(__x86_64__) || defined(__i386__)
#define TC_FLUSH_BIT TC_MXCSR_FLUSH
#else
#define TC_FLUSH_BIT (1u << 24)
#endif

uint32_t tc_fp_control(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return _mm_getcsr() & TC_MXCSR_CONTROL;
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    return (uint32_t)fpcr;
#else
    return 0;
#endif
}

int tc_fp_set_flush(int on)
{
#if defined(__x86_64__) || defined(__i386__)
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(on ? csr | TC_MXCSR_FLUSH : csr & ~TC_MXCSR_FLUSH);
    return !!(tc_fp_control() & TC_FLUSH_BIT) == !!on ? 0 : -1; /* valgrind ignores FTZ/DAZ */
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(fpcr));
    fpcr = on ? fpcr | TC_FPCR_FLUSH : fpcr & ~(uint64_t)TC_FPCR_FLUSH;
    __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
    return !!(tc_fp_control() & TC_FLUSH_BIT) == !!on ? 0 : -1;
#else
    (void)on;
    return -1;
#endif
}

/* Every computing entry point once, with the control state compared around each call. */
static int fp_calls(const attn_ctx *ctx, const attn_ctx *small, int flush, char *msg, size_t len)
{
    static const char *const name[] = { "attn_sdpa (packed tiles, probs)", "attn_sdpa (one block, probs)",
                                        "attn_sdpa (split KV, probs)", "attn_kv_cache_append F32",
                                        "attn_decode F32", "attn_kv_cache_append F16", "attn_decode F16",
                                        "attn_kv_cache_append BF16", "attn_decode BF16", "attn_linear",
                                        "attn_self_attention" };
    attn_sdpa_desc pre = tc_shape(1, 2, 1, 40, 50, 24, 0), dec = tc_shape(1, 4, 2, 1, 2100, 32, 0);
    pre.mask = dec.mask = ATTN_MASK_CAUSAL;
    tc_problem pp, pd;
    int bad = 0, have_pp = !tc_problem_init(&pp, &pre), have_pd = !tc_problem_init(&pd, &dec);
    const size_t nout = 2100 * 4 * 32, nprobs = 4 * 2100;
    float *out = malloc(nout * sizeof *out), *probs = malloc((nprobs > 4 * 60 * 60 ? nprobs : 4 * 60 * 60) * 4);
    float *w = malloc(4 * 32 * 64 * sizeof *w);
    if (!have_pp || !have_pd || !out || !probs || !w) {
        snprintf(msg, len, "test out of memory");
        bad = 1;
        goto done;
    }
    tc_problem_fill(&pp, 11, TC_FILL_UNIFORM);
    tc_problem_fill(&pd, 12, TC_FILL_UNIFORM);
    pd.v[5] = 1e-40f; /* a few subnormals on the way, and a huge score */
    pd.k[7] = 3e-39f;
    pp.q[3] = 40.0f;
    for (size_t i = 0; i < 4 * 32 * 64; i++)
        w[i] = (float)((int)(i % 13) - 6) * 0.05f;
    attn_layer layer = { .d_model = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8 };
    layer.wq = w, layer.wk = w + 1024, layer.wv = w + 2048, layer.wo = w + 3072, layer.bq = w + 5000;
    for (int c = 0; c < 11 && !bad; c++) {
        const uint32_t before = tc_fp_control();
        attn_status s = ATTN_OK;
        attn_kv_cache *kc = NULL;
        switch (c) {
        case 0: s = attn_sdpa(small, &pp.d, pp.q, pp.k, pp.v, out, probs); break;
        case 1: s = attn_sdpa(ctx, &pp.d, pp.q, pp.k, pp.v, out, probs); break;
        case 2: s = attn_sdpa(ctx, &pd.d, pd.q, pd.k, pd.v, out, probs); break;
        case 3: case 5: case 7:
        case 4: case 6: case 8: {
            const attn_dtype t = (attn_dtype)((c - 3) / 2);
            /* pd's K and V are [kv head][position][dim]: for the cache, read them as [position][kv head * 32]
             * (other values, the same bits: all that matters here is the control state). */
            s = attn_kv_cache_create(&kc, 2, 32, 2100, t);
            const uint32_t mid = tc_fp_control();
            if (s == ATTN_OK && mid != before) {
                snprintf(msg, len, "attn_kv_cache_create changed the FP control state from 0x%08x to 0x%08x "
                         "(flush %s)", (unsigned)before, (unsigned)mid, flush ? "on" : "off");
                bad = 1;
            }
            if (s == ATTN_OK)
                s = attn_kv_cache_append(kc, pd.k, pd.v, 2100);
            if (s == ATTN_OK && c % 2 == 0) /* decode: 4, 6, 8 */
                s = attn_decode(ctx, kc, pd.q, 1, 4, ATTN_MASK_CAUSAL, out);
            attn_kv_cache_destroy(kc);
            break;
        }
        case 9: s = attn_linear(ctx, pd.k, 64, 32, w, w + 4000, 50, out); break;
        default: s = attn_self_attention(ctx, &layer, pd.v, 60, ATTN_MASK_CAUSAL, out, probs); break;
        }
        const uint32_t after = tc_fp_control();
        if (bad)
            break;
        if (s != ATTN_OK) {
            snprintf(msg, len, "%s returned %d (%s)", name[c], (int)s, attn_strerror(s));
            bad = 1;
        } else if (after != before) {
            snprintf(msg, len, "%s changed the caller's FP control state from 0x%08x to 0x%08x (flush %s)", name[c],
                     (unsigned)before, (unsigned)after, flush ? "on" : "off");
            bad = 1;
        }
    }
done:
    if (have_pp)
        tc_problem_free(&pp);
    if (have_pd)
        tc_problem_free(&pd);
    free(out), free(probs), free(w);
    return bad;
}

/* attn_sdpa on p against the float64 reference, each element within rtol of its row's largest reference value
 * (out) or of itself (probs), plus atol: unlike tc_check's max(1, |ref|), this sees values near the subnormal
 * range being flushed. */
static int fp_check_rel(const attn_ctx *ctx, const tc_problem *p, double rtol, double atol, const char *what,
                        char *msg, size_t len)
{
    const attn_sdpa_desc *d = &p->d;
    float *out = NULL, *probs = NULL;
    double *ro = malloc(p->v_dim * sizeof *ro), *rp = malloc(d->kv_len * sizeof *rp);
    double *scratch = malloc(d->kv_len * sizeof *scratch);
    int bad = 0;
    attn_status s = ATTN_ENOMEM;
    if (!ro || !rp || !scratch || (s = tc_run(ctx, p, 1, &out, &probs)) != ATTN_OK) {
        snprintf(msg, len, "%s: attn_sdpa returned %d (%s)", what, (int)s, attn_strerror(s));
        bad = 1;
    }
    double rowmax_seen = 0.0;
    for (size_t b = 0; b < d->batch && !bad; b++)
        for (size_t h = 0; h < d->n_heads && !bad; h++)
            for (size_t i = 0; i < d->q_len && !bad; i++) {
                if (tc_ref_row(p, b, h, i, ro, rp, scratch) <= 0)
                    continue;
                const float *o = out + tc_index(d->layout, d->n_heads, d->q_len, p->v_dim, b, h, i, 0);
                const float *pr = probs + ((b * d->n_heads + h) * d->q_len + i) * d->kv_len;
                double mx = 0.0;
                for (size_t c = 0; c < p->v_dim; c++)
                    mx = fabs(ro[c]) > mx ? fabs(ro[c]) : mx;
                rowmax_seen = mx > rowmax_seen ? mx : rowmax_seen;
                for (size_t c = 0; c < p->v_dim && !bad; c++)
                    if (!(fabs((double)o[c] - ro[c]) <= rtol * mx + atol)) {
                        snprintf(msg, len, "%s: out[b=%zu h=%zu i=%zu c=%zu] = %.9g, reference %.9g (row max %.3g)",
                                 what, b, h, i, c, (double)o[c], ro[c], mx);
                        bad = 1;
                    }
                for (size_t j = 0; j < d->kv_len && !bad; j++)
                    if (!(fabs((double)pr[j] - rp[j]) <= rtol * rp[j] + atol + (rp[j] > 1e-30 ? TC_TOL : 0.0))) {
                        snprintf(msg, len, "%s: probs[b=%zu h=%zu i=%zu j=%zu] = %.9g, reference %.9g", what, b, h, i,
                                 j, (double)pr[j], rp[j]);
                        bad = 1;
                    }
            }
    if (!bad && !(rowmax_seen > 0.0)) {
        snprintf(msg, len, "%s: the reference is all zero: the test data is wrong", what);
        bad = 1;
    }
    free(out), free(probs), free(ro), free(rp), free(scratch);
    return bad;
}

/* tc_stored, also right for fp32 subnormals stored as bfloat16: those keep a fixed spacing of 2^-133 (7 stored
 * mantissa bits below the smallest normal exponent), fewer than the 8 significant bits tc_stored rounds to. */
static float fp_stored(attn_dtype t, float x)
{
    if (t == ATTN_BF16 && x != 0.0f && fabsf(x) < 0x1p-126f)
        return (float)ldexp(nearbyint(ldexp((double)x, 133)), -133);
    return tc_stored(t, x);
}

/* A KV cache of type t holding V values around vscale (subnormal in that type, or in fp32), decoded and compared
 * with the float64 reference on the values as stored, relative to each row's size. */
static int fp_check_cache(const attn_ctx *ctx, attn_dtype t, float vscale, const char *what, char *msg, size_t len)
{
    const size_t hk = 2, group = 2, dd = 32, n = 300, qn = 2, h = hk * group;
    attn_sdpa_desc d = tc_shape(1, h, hk, qn, n, dd, 0);
    d.layout = ATTN_LAYOUT_BSHD;
    d.mask = ATTN_MASK_CAUSAL;
    tc_problem p;
    attn_kv_cache *c = NULL;
    float *out = NULL;
    double *ro = malloc(dd * sizeof *ro), *scratch = malloc(n * sizeof *scratch);
    int bad = 1;
    if (tc_problem_init(&p, &d)) {
        free(ro), free(scratch);
        snprintf(msg, len, "test out of memory");
        return 1;
    }
    tc_problem_fill(&p, 77, TC_FILL_UNIFORM);
    for (size_t i = 0; i < p.nv; i++)
        p.v[i] *= vscale;
    attn_status s = attn_kv_cache_create(&c, hk, dd, n, t);
    if (s == ATTN_OK)
        s = attn_kv_cache_append(c, p.k, p.v, n); /* BSHD: [position][kv head][dim], the cache's input layout */
    out = malloc(qn * h * dd * sizeof *out);
    if (s == ATTN_OK && (!out || !ro || !scratch))
        s = ATTN_ENOMEM;
    if (s == ATTN_OK)
        s = attn_decode(ctx, c, p.q, qn, h, ATTN_MASK_CAUSAL, out);
    if (s != ATTN_OK) {
        snprintf(msg, len, "%s: %d (%s)", what, (int)s, attn_strerror(s));
        goto done;
    }
    for (size_t i = 0; i < p.nk; i++) {
        p.k[i] = fp_stored(t, p.k[i]);
        p.v[i] = fp_stored(t, p.v[i]);
    }
    for (size_t hh = 0; hh < h; hh++)
        for (size_t i = 0; i < qn; i++) {
            tc_ref_row(&p, 0, hh, i, ro, NULL, scratch);
            double mx = 0.0;
            for (size_t x = 0; x < dd; x++)
                mx = fabs(ro[x]) > mx ? fabs(ro[x]) : mx;
            for (size_t x = 0; x < dd; x++) {
                const float got = out[tc_index(ATTN_LAYOUT_BSHD, h, qn, dd, 0, hh, i, x)];
                if (!(mx > 0.0) || !(fabs((double)got - ro[x]) <= 1e-4 * mx + 0x1p-146)) {
                    snprintf(msg, len, "%s: out[h=%zu i=%zu x=%zu] = %.9g, reference %.9g (row max %.3g)", what, hh, i,
                             x, (double)got, ro[x], mx);
                    goto done;
                }
            }
        }
    bad = 0;
done:
    attn_kv_cache_destroy(c);
    tc_problem_free(&p);
    free(out), free(ro), free(scratch);
    return bad;
}

/* Subnormal inputs, flushing off: results as the float64 reference says. */
static int fp_denormals(const attn_ctx *ctx, const attn_ctx *small, char *msg, size_t len)
{
    int bad = 0;
    /* 1: V rows of subnormals (|v| < 2^-130), on the packed and the one-block path: outputs are subnormal. */
    attn_sdpa_desc d = tc_shape(2, 2, 1, 23, 37, 16, 0);
    d.mask = ATTN_MASK_CAUSAL;
    tc_problem p;
    if (tc_problem_init(&p, &d)) {
        snprintf(msg, len, "test out of memory");
        return 1;
    }
    tc_problem_fill(&p, 1, TC_FILL_UNIFORM);
    for (size_t i = 0; i < p.nv; i++)
        p.v[i] = ldexpf(p.v[i], -130);
    bad = fp_check_rel(ctx, &p, 1e-4, 0x1p-146, "subnormal V", msg, len) ||
          fp_check_rel(small, &p, 1e-4, 0x1p-146, "subnormal V, packed tiles", msg, len);
    /* 2: K and Q of subnormals (scores of 2^-260 and less: zero, so uniform weights); V normal. */
    if (!bad) {
        tc_problem_fill(&p, 2, TC_FILL_UNIFORM);
        for (size_t i = 0; i < p.nk; i++)
            p.k[i] = ldexpf(p.k[i], -128);
        bad = fp_check_rel(ctx, &p, 2e-5, 0.0, "subnormal K", msg, len);
        for (size_t i = 0; i < p.nq && !bad; i++)
            p.q[i] = ldexpf(p.q[i], -128);
        bad = bad || fp_check_rel(small, &p, 2e-5, 0.0, "subnormal Q and K", msg, len);
    }
    tc_problem_free(&p);
    /* 3: scores spread over 0 .. -97.5, so the last keys' weights are subnormal (exp(-87.5) < 2^-126), and a scale
     * that is itself subnormal. */
    if (!bad) {
        attn_sdpa_desc e = tc_shape(1, 1, 0, 3, 40, 1, 16);
        e.scale = 1.0f;
        if (tc_problem_init(&p, &e)) {
            snprintf(msg, len, "test out of memory");
            return 1;
        }
        tc_problem_fill(&p, 3, TC_FILL_UNIFORM);
        for (size_t i = 0; i < 3; i++)
            p.q[i] = 1.0f;
        for (size_t j = 0; j < 40; j++)
            p.k[j] = -2.5f * (float)j;
        bad = fp_check_rel(ctx, &p, 1e-3, 0x1p-146, "subnormal probs", msg, len);
        p.d.scale = 1e-40f; /* itself subnormal: so are the scaled q (1e-40) and the scores */
        bad = bad || fp_check_rel(small, &p, 2e-5, 0.0, "subnormal scale", msg, len);
        tc_problem_free(&p);
    }
    /* 4: KV caches whose stored V values are subnormal in their own type: half below 2^-14, bfloat16 and fp32 below
     * 2^-126. */
    if (!bad)
        bad = fp_check_cache(ctx, ATTN_F16, 0x1p-16f, "F16 cache of subnormal halves", msg, len) ||
              fp_check_cache(ctx, ATTN_BF16, 0x1p-128f, "BF16 cache of subnormals", msg, len) ||
              fp_check_cache(ctx, ATTN_F32, 0x1p-128f, "F32 cache of subnormals", msg, len);
    return bad;
}

int tc_fp_env_check(const attn_ctx *ctx, char *msg, size_t len)
{
    attn_ctx *small = NULL;
    const uint32_t saved = tc_fp_control();
    int bad = 0;
    attn_status s = tc_ctx_create(&small, attn_ctx_isa(ctx), attn_ctx_threads(ctx), 16, 16);
    if (s != ATTN_OK) {
        snprintf(msg, len, "attn_ctx_create: %s", attn_strerror(s));
        return 1;
    }
    for (int flush = 0; flush < 2 && !bad; flush++) {
        /* No such controls here, or they do not stick (valgrind emulates MXCSR without FTZ/DAZ): the calls still run
         * and must leave the state alone, with flushing off only. */
        if (tc_fp_set_flush(flush) != 0 && flush)
            break;
        bad = fp_calls(ctx, small, flush, msg, len);
    }
    if (!bad && tc_fp_set_flush(0) == 0)
        bad = fp_denormals(ctx, small, msg, len);
    /* Put the caller's state back whatever happened (the tests run on in this thread). */
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr((_mm_getcsr() & ~TC_MXCSR_CONTROL) | saved);
#elif defined(__aarch64__)
    {
        const uint64_t fpcr = saved;
        __asm__ __volatile__("msr fpcr, %0" : : "r"(fpcr));
    }
#endif
    attn_ctx_destroy(small);
    return bad;
}
