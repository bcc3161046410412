/* checkasm: every slot of every kernel table this CPU runs, called directly (not through attn_sdpa) and compared
 * with the scalar slot on random shapes, like dav1d's tests/checkasm. Outputs sit between guard bytes, start
 * poisoned, and the documented "may leave unwritten" and "never reads" contracts of simd/kernels.h are checked as
 * stated. Standalone (no Criterion, never forks) so it also runs under qemu-aarch64 for NEON.
 * Usage: checkasm [cases per slot] (default 300); ATTN_TEST_SEED replays a run. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "half.h"
#include "kernels.h"

/* Guard floats on each side of an output: 64 bytes, so the data stays 64-byte aligned as the kernels need. */
#define CA_GUARD 16

typedef struct ca_buf {
    float *p, *base;
    size_t n;
} ca_buf;

static unsigned long ca_passed, ca_failed;
static const char *ca_variant, *ca_slot;
static uint64_t ca_case;

static void ca_fill_bits(float *p, size_t n, uint32_t bits)
{
    for (size_t i = 0; i < n; i++)
        p[i] = tc_u2f(bits);
}

static float *ca_alloc(ca_buf *b, size_t n)
{
    void *mem = NULL;
    b->n = n;
    if (posix_memalign(&mem, 64, (n + 2 * CA_GUARD) * sizeof(float)) != 0) {
        fprintf(stderr, "checkasm: out of memory\n");
        exit(1);
    }
    b->base = mem;
    b->p = b->base + CA_GUARD;
    ca_fill_bits(b->base, CA_GUARD, TC_GUARD_BITS);
    ca_fill_bits(b->p + n, CA_GUARD, TC_GUARD_BITS);
    ca_fill_bits(b->p, n, TC_POISON_BITS);
    return b->p;
}

static int ca_guards_ok(const ca_buf *b)
{
    for (size_t i = 0; i < CA_GUARD; i++)
        if (tc_f2u(b->base[i]) != TC_GUARD_BITS || tc_f2u(b->p[b->n + i]) != TC_GUARD_BITS)
            return 0;
    return 1;
}

/* A copy of b's data and guards, for the reference run. */
static void ca_clone(ca_buf *dst, const ca_buf *src)
{
    ca_alloc(dst, src->n);
    memcpy(dst->base, src->base, (src->n + 2 * CA_GUARD) * sizeof(float));
}

static void ca_free(ca_buf *b) { free(b->base); }

static int ca_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int ca_fail(const char *fmt, ...)
{
    if (ca_failed < 20) {
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL %s %s case %" PRIu64 ": ", ca_variant, ca_slot, ca_case);
        vprintf(fmt, ap);
        printf("\n");
        va_end(ap);
    }
    return 1;
}

static int ca_close(double got, double want, double mag, double rel)
{
    return fabs(got - want) <= rel * mag + 1e-30 || (isnan(got) && isnan(want));
}

static float ca_uniform(tc_rng *r) { return tc_rng_float(r, -1.0f, 1.0f); }

/* Element i of a row stored as t, and a random value stored as t (rounded the way a KV cache stores it). */
static float ca_ld(const void *p, size_t i, attn_dtype t)
{
    return t == ATTN_F16    ? attn_f16_to_f32(((const uint16_t *)p)[i])
           : t == ATTN_BF16 ? attn_bf16_to_f32(((const uint16_t *)p)[i])
                            : ((const float *)p)[i];
}

static void ca_st(void *p, size_t i, attn_dtype t, float x)
{
    if (t == ATTN_F16)
        ((uint16_t *)p)[i] = attn_f32_to_f16(x);
    else if (t == ATTN_BF16)
        ((uint16_t *)p)[i] = attn_f32_to_bf16(x);
    else
        ((float *)p)[i] = x;
}

static size_t ca_esz(attn_dtype t) { return t == ATTN_F32 ? sizeof(float) : sizeof(uint16_t); }

/* Random visible ranges: all keys, none, a prefix (causal), a suffix (window) or a middle piece. */
static void ca_ranges(tc_rng *r, int *lo, int *hi, size_t rows, size_t nk, int all)
{
    for (size_t i = 0; i < rows; i++) {
        const uint32_t k = all ? 0 : tc_rng_below(r, 5);
        int a = 0, b = (int)nk;
        if (k == 1)
            a = b = (int)tc_rng_below(r, (uint32_t)nk + 1);
        else if (k == 2)
            b = (int)tc_rng_below(r, (uint32_t)nk + 1);
        else if (k == 3)
            a = (int)tc_rng_below(r, (uint32_t)nk + 1);
        else if (k == 4) {
            a = (int)tc_rng_below(r, (uint32_t)nk + 1);
            b = a + (int)tc_rng_below(r, (uint32_t)nk - (uint32_t)a + 1);
        }
        lo[i] = a;
        hi[i] = b;
    }
}

/* A tile with its keys as panels (kt) or rows (kr) of type kt_t, values of type vt, and the rows' state. */
typedef struct ca_tile {
    attn_tile_args a;
    ca_buf q, s, o, m, l;
    void *k, *v, *kn, *vn;
    int *lo, *hi;
} ca_tile;

static void *ca_xalloc(size_t bytes)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) {
        fprintf(stderr, "checkasm: out of memory\n");
        exit(1);
    }
    return p;
}

/* Random shape and contents. rows_path: keys as rows kr (fp32, d a multiple of 16), else panels kt. */
static void ca_tile_make(ca_tile *t, tc_rng *r, size_t rows, size_t nk, size_t d, size_t dv, attn_dtype kdt,
                         attn_dtype vdt, int rows_path, int all_visible)
{
    memset(t, 0, sizeof *t);
    attn_tile_args *a = &t->a;
    a->rows = rows;
    a->d = d;
    a->nk = nk;
    a->nkp = (nk + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD;
    a->dvp = (dv + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD;
    a->kdt = kdt;
    a->vdt = vdt;
    float *q = ca_alloc(&t->q, rows * d);
    for (size_t i = 0; i < rows * d; i++)
        q[i] = ca_uniform(r);
    a->q = q;
    const size_t kelems = rows_path ? 0 : d * a->nkp;
    if (rows_path) {
        a->ldk = d + ATTN_PAD * tc_rng_below(r, 3);
        t->k = ca_xalloc(nk * a->ldk * sizeof(float));
        for (size_t i = 0; i < nk * a->ldk; i++)
            ((float *)t->k)[i] = ca_uniform(r);
        a->kr = t->k;
    } else {
        t->k = ca_xalloc(kelems * ca_esz(kdt));
        for (size_t j = 0; j < a->nkp; j++) /* keys nk..nkp-1 are zero, as the contract says */
            for (size_t c = 0; c < d; c++)
                ca_st(t->k, j / ATTN_PAD * d * ATTN_PAD + c * ATTN_PAD + j % ATTN_PAD, kdt,
                      j < nk ? ca_uniform(r) : 0.0f);
        a->kt = t->k;
    }
    /* V: dvp columns, zero from dv on when the rows are padded; ldv may exceed dvp. */
    a->ldv = a->dvp + ATTN_PAD * tc_rng_below(r, 2) + (vdt == ATTN_F32 ? 0 : tc_rng_below(r, 3));
    t->v = ca_xalloc(nk * a->ldv * ca_esz(vdt));
    for (size_t j = 0; j < nk; j++)
        for (size_t c = 0; c < a->ldv; c++)
            ca_st(t->v, j * a->ldv + c, vdt, c < dv ? ca_uniform(r) : 0.0f);
    a->vp = t->v;
    /* Sometimes a next tile to prefetch: the kernels may only prefetch from it, never change a result. */
    if (tc_rng_below(r, 2)) {
        a->knn = 1 + tc_rng_below(r, (uint32_t)nk);
        t->kn = ca_xalloc(rows_path ? nk * a->ldk * sizeof(float) : kelems * ca_esz(kdt));
        t->vn = ca_xalloc(nk * a->ldv * ca_esz(vdt));
        a->kn = t->kn;
        a->vn = t->vn;
    }
    t->lo = malloc(rows * sizeof(int));
    t->hi = malloc(rows * sizeof(int));
    ca_ranges(r, t->lo, t->hi, rows, nk, all_visible);
    a->lo = t->lo;
    a->hi = t->hi;
    a->s = ca_alloc(&t->s, rows * a->nkp);
    a->o = ca_alloc(&t->o, rows * a->dvp);
    a->m = ca_alloc(&t->m, rows);
    a->l = ca_alloc(&t->l, rows);
}

static void ca_tile_free(ca_tile *t)
{
    ca_free(&t->q);
    ca_free(&t->s);
    ca_free(&t->o);
    ca_free(&t->m);
    ca_free(&t->l);
    free(t->k);
    free(t->v);
    free(t->kn);
    free(t->vn);
    free(t->lo);
    free(t->hi);
}

/* The same tile with its own copies of every output (inputs shared), for the reference slot. */
static ca_tile ca_tile_twin(const ca_tile *t)
{
    ca_tile u = *t;
    ca_clone(&u.s, &t->s);
    ca_clone(&u.o, &t->o);
    ca_clone(&u.m, &t->m);
    ca_clone(&u.l, &t->l);
    u.a.s = u.s.p;
    u.a.o = u.o.p;
    u.a.m = u.m.p;
    u.a.l = u.l.p;
    return u;
}

static void ca_twin_free(ca_tile *u)
{
    ca_free(&u->s);
    ca_free(&u->o);
    ca_free(&u->m);
    ca_free(&u->l);
}

static int ca_outputs_guarded(const ca_tile *t)
{
    if (!ca_guards_ok(&t->s) || !ca_guards_ok(&t->o) || !ca_guards_ok(&t->m) || !ca_guards_ok(&t->l))
        return ca_fail("write outside an output (s, o, m or l)");
    return 0;
}

/* sum_c |q[r][c] k[j][c]|: the scale of the rounding differences between two summation orders. */
static double ca_absdot(const ca_tile *t, size_t r, size_t j)
{
    const attn_tile_args *a = &t->a;
    double m = 0;
    for (size_t c = 0; c < a->d && (a->kt || j < a->nk); c++) {
        const float k = a->kt ? ca_ld(a->kt, j / ATTN_PAD * a->d * ATTN_PAD + c * ATTN_PAD + j % ATTN_PAD, a->kdt)
                              : ((const float *)a->kr)[j * a->ldk + c];
        m += fabs((double)a->q[r * a->d + c] * k);
    }
    return m;
}

/* scores / scores_rows: every score a row sees matches the reference; one its row does not see may keep its
 * poison (the blocks "no row of their group can see") but is never anything else; rows path: every score of a
 * key, and zeros from nk on. */
static int ca_check_scores(const attn_kernels *k, tc_rng *r, int rows_path, attn_dtype kdt)
{
    const size_t rows = 1 + tc_rng_below(r, tc_rng_below(r, 2) ? 8 : 40);
    const size_t nk = 1 + tc_rng_below(r, 300);
    const size_t d = rows_path ? ATTN_PAD * (1 + tc_rng_below(r, 10)) : 1 + tc_rng_below(r, 160);
    ca_tile t;
    ca_tile_make(&t, r, rows, nk, d, 16, kdt, ATTN_F32, rows_path, tc_rng_below(r, 3) == 0);
    ca_tile ref = ca_tile_twin(&t);
    (rows_path ? attn_kernels_scalar.scores_rows : attn_kernels_scalar.scores[kdt])(&ref.a);
    (rows_path ? k->scores_rows : k->scores[kdt])(&t.a);
    int bad = ca_outputs_guarded(&t);
    const size_t nkp = t.a.nkp;
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = 0; j < nkp && !bad; j++) {
            const float got = t.s.p[i * nkp + j], want = ref.s.p[i * nkp + j];
            const int must = rows_path || ((int)j >= t.lo[i] && (int)j < t.hi[i]); /* else: may be skipped */
            if (rows_path && j >= nk && got != 0.0f)
                bad = ca_fail("rows %zu nk %zu: s[%zu][%zu] = %g past nk, want 0", rows, nk, i, j, got);
            else if (must && tc_f2u(got) == TC_POISON_BITS)
                bad = ca_fail("rows %zu nk %zu d %zu kdt %d: s[%zu][%zu] unwritten", rows, nk, d, kdt, i, j);
            else if (tc_f2u(got) != TC_POISON_BITS && !ca_close(got, want, ca_absdot(&t, i, j), 2e-6))
                bad = ca_fail("rows %zu nk %zu d %zu kdt %d: s[%zu][%zu] = %.9g, want %.9g", rows, nk, d, kdt, i, j,
                              got, want);
        }
    ca_twin_free(&ref);
    ca_tile_free(&t);
    return bad;
}

/* softmax: m exact, s and l and the rescaled o to SLEEF's exp accuracy; rows that see nothing keep m, l, o and
 * get zeros; nothing past the rows' outputs is written. */
static int ca_check_softmax(const attn_kernels *k, tc_rng *r)
{
    const size_t rows = 1 + tc_rng_below(r, 20), nk = 1 + tc_rng_below(r, 300);
    ca_tile t;
    ca_tile_make(&t, r, rows, nk, 1, 1 + tc_rng_below(r, 100), ATTN_F32, ATTN_F32, 0, 0);
    const attn_tile_args *a = &t.a;
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < a->nkp; j++) /* scores, with huge ones that must not overflow exp */
            t.s.p[i * a->nkp + j] = tc_rng_below(r, 50) ? 8.0f * ca_uniform(r) : 1e30f * ca_uniform(r);
        const int first = tc_rng_below(r, 3) == 0;
        t.m.p[i] = first ? -INFINITY : 4.0f * ca_uniform(r);
        t.l.p[i] = first ? 0.0f : 1.0f + 10.0f * tc_rng_float(r, 0.0f, 1.0f);
        for (size_t c = 0; c < a->dvp; c++)
            t.o.p[i * a->dvp + c] = ca_uniform(r);
    }
    ca_tile ref = ca_tile_twin(&t);
    attn_kernels_scalar.softmax(&ref.a);
    k->softmax(&t.a);
    int bad = ca_outputs_guarded(&t);
    for (size_t i = 0; i < rows && !bad; i++) {
        if (tc_f2u(t.m.p[i]) != tc_f2u(ref.m.p[i]))
            bad = ca_fail("row %zu: m = %.9g, want %.9g", i, t.m.p[i], ref.m.p[i]);
        else if (!ca_close(t.l.p[i], ref.l.p[i], fabs(ref.l.p[i]), 4e-6))
            bad = ca_fail("row %zu (lo %d hi %d): l = %.9g, want %.9g", i, t.lo[i], t.hi[i], t.l.p[i], ref.l.p[i]);
        for (size_t j = 0; j < a->nkp && !bad; j++) {
            const float got = t.s.p[i * a->nkp + j], want = ref.s.p[i * a->nkp + j];
            if (!ca_close(got, want, fabs(want), 4e-6) || (want == 0.0f && got != 0.0f))
                bad = ca_fail("row %zu (lo %d hi %d) nk %zu: p[%zu] = %.9g, want %.9g", i, t.lo[i], t.hi[i], nk, j,
                              got, want);
        }
        for (size_t c = 0; c < a->dvp && !bad; c++) {
            const float got = t.o.p[i * a->dvp + c], want = ref.o.p[i * a->dvp + c];
            if (!ca_close(got, want, fabs(want), 2e-6))
                bad = ca_fail("row %zu: o[%zu] = %.9g, want %.9g", i, c, got, want);
        }
    }
    ca_twin_free(&ref);
    ca_tile_free(&t);
    return bad;
}

/* pv: o += p v over each row's visible keys. The weights a row cannot see are NaN, and so are the values of keys
 * no row sees: a kernel that read either would put NaN into o. */
static int ca_check_pv(const attn_kernels *k, tc_rng *r, attn_dtype vdt)
{
    const size_t rows = 1 + tc_rng_below(r, tc_rng_below(r, 2) ? 8 : 40), nk = 1 + tc_rng_below(r, 200);
    const size_t dv = 1 + tc_rng_below(r, 160);
    ca_tile t;
    ca_tile_make(&t, r, rows, nk, 1, dv, ATTN_F32, vdt, 0, tc_rng_below(r, 3) == 0);
    const attn_tile_args *a = &t.a;
    int hi_max = 0;
    for (size_t i = 0; i < rows; i++) {
        hi_max = t.hi[i] > hi_max ? t.hi[i] : hi_max;
        for (size_t j = 0; j < a->nkp; j++)
            t.s.p[i * a->nkp + j] = (int)j >= t.lo[i] && (int)j < t.hi[i] ? tc_rng_float(r, 0.0f, 1.0f) : NAN;
        for (size_t c = 0; c < a->dvp; c++)
            t.o.p[i * a->dvp + c] = ca_uniform(r);
    }
    for (size_t j = (size_t)hi_max; j < nk; j++)
        for (size_t c = 0; c < dv; c++)
            ca_st(t.v, j * a->ldv + c, vdt, NAN);
    ca_tile ref = ca_tile_twin(&t);
    attn_kernels_scalar.pv[vdt](&ref.a);
    k->pv[vdt](&t.a);
    int bad = ca_outputs_guarded(&t);
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t c = 0; c < a->dvp && !bad; c++) {
            double mag = fabs(ref.o.p[i * a->dvp + c]) + 1.0; /* the initial o is within [-1, 1] */
            for (int j = t.lo[i]; j < t.hi[i]; j++)
                mag += fabs((double)t.s.p[i * a->nkp + (size_t)j] * ca_ld(t.v, (size_t)j * a->ldv + c, vdt));
            const float got = t.o.p[i * a->dvp + c], want = ref.o.p[i * a->dvp + c];
            if (isnan(got) || !ca_close(got, want, mag, 2e-6))
                bad = ca_fail("rows %zu nk %zu dv %zu vdt %d ldv %zu: o[%zu][%zu] = %.9g, want %.9g", rows, nk, dv,
                              vdt, a->ldv, i, c, got, want);
        }
    ca_twin_free(&ref);
    ca_tile_free(&t);
    return bad;
}

/* probs: dst[r][j] for j < nk only; what lies between nk and ld stays as it was. */
static int ca_check_probs(const attn_kernels *k, tc_rng *r)
{
    const size_t rows = 1 + tc_rng_below(r, 12), nk = 1 + tc_rng_below(r, 200);
    ca_tile t;
    ca_tile_make(&t, r, rows, nk, 1, 16, ATTN_F32, ATTN_F32, 0, 0);
    const attn_tile_args *a = &t.a;
    for (size_t i = 0; i < rows; i++) {
        float mx = -INFINITY;
        for (size_t j = 0; j < a->nkp; j++) {
            t.s.p[i * a->nkp + j] = 6.0f * ca_uniform(r);
            if ((int)j >= t.lo[i] && (int)j < t.hi[i])
                mx = fmaxf(mx, t.s.p[i * a->nkp + j]);
        }
        t.m.p[i] = mx;
        t.l.p[i] = 1.0f + tc_rng_float(r, 0.0f, 40.0f);
    }
    const size_t ld = nk + tc_rng_below(r, 20);
    ca_buf dst, dref;
    ca_alloc(&dst, rows * ld);
    ca_tile ref = ca_tile_twin(&t);
    ca_clone(&dref, &dst);
    attn_kernels_scalar.probs(&ref.a, dref.p, ld);
    k->probs(&t.a, dst.p, ld);
    int bad = ca_guards_ok(&dst) ? 0 : ca_fail("write outside dst");
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = 0; j < ld && !bad; j++) {
            const float got = dst.p[i * ld + j], want = dref.p[i * ld + j];
            if (j >= nk ? tc_f2u(got) != TC_POISON_BITS : !ca_close(got, want, fabs(want), 4e-6))
                bad = ca_fail("rows %zu nk %zu ld %zu: dst[%zu][%zu] = %.9g, want %.9g", rows, nk, ld, i, j, got,
                              want);
        }
    ca_free(&dst);
    ca_free(&dref);
    ca_twin_free(&ref);
    ca_tile_free(&t);
    return bad;
}

/* scale: exact (one multiply per element), at any alignment, nothing written past n. */
static int ca_check_scale(const attn_kernels *k, tc_rng *r)
{
    const size_t n = tc_rng_below(r, 100), off = tc_rng_below(r, 16);
    ca_buf src, dst;
    ca_alloc(&src, n + off);
    ca_alloc(&dst, n + off);
    for (size_t i = 0; i < n + off; i++)
        src.p[i] = 100.0f * ca_uniform(r);
    const float f = ca_uniform(r);
    k->scale(dst.p + off, src.p + off, n, f);
    int bad = ca_guards_ok(&dst) ? 0 : ca_fail("write outside dst");
    for (size_t i = 0; i < n + off && !bad; i++)
        if (i < off ? tc_f2u(dst.p[i]) != TC_POISON_BITS : tc_f2u(dst.p[i]) != tc_f2u(src.p[i] * f))
            bad = ca_fail("n %zu offset %zu: dst[%zu] = %.9g, want %.9g", n, off, i, dst.p[i], src.p[i] * f);
    ca_free(&src);
    ca_free(&dst);
    return bad;
}

/* cvt_f16 / cvt_bf16: bit-exact widening of every kind of half (random bits: NaNs, infinities, subnormals). */
static int ca_check_cvt(const attn_kernels *k, tc_rng *r, attn_dtype t)
{
    const size_t n = tc_rng_below(r, 100), off = tc_rng_below(r, 16);
    uint16_t *src = malloc((n + off + 1) * sizeof *src);
    ca_buf dst;
    ca_alloc(&dst, n + off);
    for (size_t i = 0; i < n + off; i++)
        src[i] = (uint16_t)tc_rng_u64(r);
    k->cvt[t](dst.p + off, src + off, n);
    int bad = ca_guards_ok(&dst) ? 0 : ca_fail("write outside dst");
    for (size_t i = 0; i < n + off && !bad; i++) {
        const float want = t == ATTN_BF16 ? attn_bf16_to_f32(src[i]) : attn_f16_to_f32(src[i]);
        const int ok = i < off ? tc_f2u(dst.p[i]) == TC_POISON_BITS
                               : tc_f2u(dst.p[i]) == tc_f2u(want) || (isnan(dst.p[i]) && isnan(want));
        if (!ok)
            bad = ca_fail("n %zu: 0x%04x -> 0x%08x, want 0x%08x", n, src[i], tc_f2u(dst.p[i]), tc_f2u(want));
    }
    free(src);
    ca_free(&dst);
    return bad;
}

/* gemm: c = bias + a b on columns < nc; columns nc..ldc of c keep what they held. */
static int ca_check_gemm(const attn_kernels *k, tc_rng *r)
{
    const size_t rows = 1 + tc_rng_below(r, 30), kk = 1 + tc_rng_below(r, 130);
    const size_t ncp = ATTN_PAD * (1 + tc_rng_below(r, 6)), nc = ncp - tc_rng_below(r, ATTN_PAD);
    const size_t lda = kk + tc_rng_below(r, 5), ldc = nc + tc_rng_below(r, 20);
    float *a = malloc(rows * lda * sizeof *a);
    for (size_t i = 0; i < rows * lda; i++)
        a[i] = ca_uniform(r);
    float *bp = ca_xalloc(ncp * kk * sizeof *bp), *bias = NULL;
    for (size_t i = 0; i < ncp * kk; i++) /* columns from nc on are zero, as packed */
        bp[i] = i % ATTN_PAD + i / (kk * ATTN_PAD) * ATTN_PAD < nc ? ca_uniform(r) : 0.0f;
    if (tc_rng_below(r, 2)) {
        bias = ca_xalloc(ncp * sizeof *bias);
        for (size_t j = 0; j < ncp; j++)
            bias[j] = j < nc ? ca_uniform(r) : 0.0f;
    }
    ca_buf c, cref;
    ca_alloc(&c, rows * ldc);
    ca_clone(&cref, &c);
    attn_gemm_args g = {.rows = rows, .k = kk, .nc = nc, .ncp = ncp, .a = a, .lda = lda, .bp = bp, .bias = bias,
                        .c = cref.p, .ldc = ldc};
    attn_kernels_scalar.gemm(&g);
    g.c = c.p;
    k->gemm(&g);
    int bad = ca_guards_ok(&c) ? 0 : ca_fail("write outside c");
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = 0; j < ldc && !bad; j++) {
            double mag = bias && j < nc ? fabs(bias[j]) : 0;
            for (size_t x = 0; x < kk && j < nc; x++)
                mag += fabs((double)a[i * lda + x] * bp[j / ATTN_PAD * kk * ATTN_PAD + x * ATTN_PAD + j % ATTN_PAD]);
            const float got = c.p[i * ldc + j], want = cref.p[i * ldc + j];
            if (j >= nc ? tc_f2u(got) != TC_POISON_BITS : !ca_close(got, want, mag, 2e-6))
                bad = ca_fail("rows %zu k %zu nc %zu ncp %zu: c[%zu][%zu] = %.9g, want %.9g", rows, kk, nc, ncp, i,
                              j, got, want);
        }
    free(a);
    free(bp);
    free(bias);
    ca_free(&c);
    ca_free(&cref);
    return bad;
}

/* Every slot of attn_kernels, the per-format ones once per format. */
enum {
    CA_SCORES_ROWS = 2 * ATTN_NFMT, CA_SOFTMAX, CA_PROBS, CA_SCALE, CA_CVT, CA_GEMM = CA_CVT + ATTN_NFMT - 1, CA_NSLOT
};
static const char *const ca_slots[CA_NSLOT] = {
    "scores_f32", "scores_f16", "scores_bf16", "pv_f32", "pv_f16", "pv_bf16", "scores_rows", "softmax", "probs",
    "scale",      "cvt_f16",    "cvt_bf16",    "gemm"};
_Static_assert(ATTN_NFMT == 3, "name the slots of a new storage format in ca_slots");

static int ca_run_slot(const attn_kernels *k, int slot, tc_rng *r)
{
    if (slot < ATTN_NFMT)
        return ca_check_scores(k, r, 0, (attn_dtype)slot);
    if (slot < 2 * ATTN_NFMT)
        return ca_check_pv(k, r, (attn_dtype)(slot - ATTN_NFMT));
    switch (slot) {
    case CA_SCORES_ROWS: return ca_check_scores(k, r, 1, ATTN_F32);
    case CA_SOFTMAX: return ca_check_softmax(k, r);
    case CA_PROBS: return ca_check_probs(k, r);
    case CA_SCALE: return ca_check_scale(k, r);
    case CA_GEMM: return ca_check_gemm(k, r);
    default: return ca_check_cvt(k, r, (attn_dtype)(slot - CA_CVT + 1)); /* the widening slots: F16, BF16 */
    }
}

int main(int argc, char **argv)
{
    const unsigned long cases = argc > 1 ? strtoul(argv[1], NULL, 10) : 300;
    const uint64_t seed = tc_seed();
    printf("checkasm: attn %s, seed %" PRIu64 " (replay with ATTN_TEST_SEED=%" PRIu64 "), %lu cases per slot\n",
           attn_version(), seed, seed, cases);
    /* Each kernel table once, under the first variant that uses it; the scalar table is the reference and is
     * checked against itself only for guards and contracts. */
    const attn_kernels *done[64];
    size_t ndone = 0;
    for (size_t vi = 0; attn_variant_at(vi); vi++) {
        const attn_variant *v = attn_variant_at(vi);
        int seen = 0;
        for (size_t i = 0; i < ndone; i++)
            seen |= done[i] == v->kern;
        if (!attn_level_runs(v->level)) {
            printf("checkasm: %-16s not run: this CPU lacks %s\n", v->name, attn_isa_name(v->level));
            continue;
        }
        if (seen) {
            printf("checkasm: %-16s its table %s was checked above\n", v->name, v->kern->table);
            continue;
        }
        done[ndone++] = v->kern;
        ca_variant = v->name;
        for (int slot = 0; slot < CA_NSLOT; slot++) {
            ca_slot = ca_slots[slot];
            const unsigned long before = ca_failed;
            for (unsigned long c = 0; c < cases; c++) {
                tc_rng r;
                ca_case = c;
                tc_rng_init(&r, tc_mix(seed, (uint64_t)vi * 1000003u + (uint64_t)slot * 7919u + c));
                if (ca_run_slot(v->kern, slot, &r))
                    ca_failed++;
                else
                    ca_passed++;
            }
            printf("checkasm: %-16s %-12s %s\n", v->name, ca_slot, ca_failed == before ? "ok" : "FAILED");
        }
    }
    printf("checkasm: %lu passed, %lu failed\n", ca_passed, ca_failed);
    return ca_failed ? 1 : 0;
}
