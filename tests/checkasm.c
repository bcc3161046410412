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
           : t == ATTN_I8   ? (float)((const int8_t *)p)[i]
                            : ((const float *)p)[i];
}

static void ca_st(void *p, size_t i, attn_dtype t, float x)
{
    if (t == ATTN_F16)
        ((uint16_t *)p)[i] = attn_f32_to_f16(x);
    else if (t == ATTN_BF16)
        ((uint16_t *)p)[i] = attn_f32_to_bf16(x);
    else if (t == ATTN_I8) /* the integers of an int8 row: x in [-1, 1] spread over [-127, 127] */
        ((int8_t *)p)[i] = (int8_t)lrintf(fmaxf(-1.0f, fminf(1.0f, x)) * 127.0f);
    else
        ((float *)p)[i] = x;
}

static size_t ca_esz(attn_dtype t) { return t == ATTN_F32 ? sizeof(float) : t == ATTN_I8 ? 1 : sizeof(uint16_t); }

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

/* Random shape and contents. rows_path: keys as rows kr of type kdt (d a multiple of 16), else panels kt. */
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
        t->k = ca_xalloc(nk * a->ldk * ca_esz(kdt));
        for (size_t i = 0; i < nk * a->ldk; i++)
            ca_st(t->k, i, kdt, ca_uniform(r));
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
        t->kn = ca_xalloc((rows_path ? nk * a->ldk : kelems) * ca_esz(kdt));
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
                              : ca_ld(a->kr, j * a->ldk + c, a->kdt);
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
    /* Sometimes per-key factors (an int8 tile's key scales) that the panel kernels store each score times. */
    float *ksc = !rows_path && tc_rng_below(r, 3) == 0 ? malloc(t.a.nkp * sizeof *ksc) : NULL;
    for (size_t j = 0; ksc && j < t.a.nkp; j++)
        ksc[j] = tc_rng_float(r, 0.0f, 0.05f);
    t.a.ksc = ksc;
    ca_tile ref = ca_tile_twin(&t);
    (rows_path ? attn_kernels_scalar.scores_rows[kdt] : attn_kernels_scalar.scores[kdt])(&ref.a);
    (rows_path ? k->scores_rows[kdt] : k->scores[kdt])(&t.a);
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
            else if (tc_f2u(got) != TC_POISON_BITS &&
                     !ca_close(got, want, ca_absdot(&t, i, j) * (ksc ? ksc[j] : 1.0), 2e-6))
                bad = ca_fail("rows %zu nk %zu d %zu kdt %d ksc %d: s[%zu][%zu] = %.9g, want %.9g", rows, nk, d, kdt,
                              ksc != NULL, i, j, got, want);
        }
    free(ksc);
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
    /* round_p (ATTN_MATH_BF16): weights stored as bfloat16 values, l unchanged; an exp one ulp apart from the
     * scalar one may round to the neighbouring bfloat16, up to 2^-7 of the value away (at a binade's bottom). */
    t.a.round_p = (int)tc_rng_below(r, 2);
    /* Without round_p, sometimes per-key factors (an int8 tile's value scales) the weights are stored times. */
    float *vsc = !t.a.round_p && tc_rng_below(r, 2) ? malloc(a->nkp * sizeof *vsc) : NULL;
    for (size_t j = 0; vsc && j < a->nkp; j++)
        vsc[j] = tc_rng_float(r, 0.0f, 0.05f);
    t.a.vsc = vsc;
    ca_tile ref = ca_tile_twin(&t);
    attn_kernels_scalar.softmax(&ref.a);
    k->softmax(&t.a);
    const double ptol = t.a.round_p ? 1.0 / 128 + 4e-6 : 4e-6;
    int bad = ca_outputs_guarded(&t);
    for (size_t i = 0; i < rows && !bad; i++) {
        if (tc_f2u(t.m.p[i]) != tc_f2u(ref.m.p[i]))
            bad = ca_fail("row %zu: m = %.9g, want %.9g", i, t.m.p[i], ref.m.p[i]);
        else if (!ca_close(t.l.p[i], ref.l.p[i], fabs(ref.l.p[i]), 4e-6))
            bad = ca_fail("row %zu (lo %d hi %d): l = %.9g, want %.9g", i, t.lo[i], t.hi[i], t.l.p[i], ref.l.p[i]);
        for (size_t j = 0; j < a->nkp && !bad; j++) {
            const float got = t.s.p[i * a->nkp + j], want = ref.s.p[i * a->nkp + j];
            if (!ca_close(got, want, fabs(want), ptol) || (want == 0.0f && got != 0.0f) ||
                (t.a.round_p && (tc_f2u(got) & 0xffffu)))
                bad = ca_fail("row %zu (lo %d hi %d) nk %zu round_p %d: p[%zu] = %.9g, want %.9g", i, t.lo[i],
                              t.hi[i], nk, t.a.round_p, j, got, want);
        }
        for (size_t c = 0; c < a->dvp && !bad; c++) {
            const float got = t.o.p[i * a->dvp + c], want = ref.o.p[i * a->dvp + c];
            if (!ca_close(got, want, fabs(want), 2e-6))
                bad = ca_fail("row %zu: o[%zu] = %.9g, want %.9g", i, c, got, want);
        }
    }
    free(vsc);
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

/* round_bf16, the test's own: nearest even on the bits, each half decided apart from the other (not the kernels'
 * add-and-mask); a NaN keeps its sign and top payload bits with the quiet bit set, as vcvtneps2bf16 does, and is
 * never rounded into an infinity. A carry out of the mantissa moves into the exponent, up to infinity. */
static uint32_t ca_round_bf16_ref(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u | 0x00400000u) & 0xffff0000u;
    uint32_t hi = u >> 16;
    const uint32_t lo = u & 0xffffu;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u)))
        hi++;
    return hi << 16;
}

/* A float's bits for round_bf16: every kind, with the cases a vector rounding gets wrong drawn often. */
static uint32_t ca_round_input(tc_rng *r)
{
    const uint32_t sign = (uint32_t)tc_rng_below(r, 2) << 31, hi = tc_rng_below(r, 0x7f80); /* finite high halves */
    switch (tc_rng_below(r, 13)) {
    case 0: return (uint32_t)tc_rng_u64(r);                                    /* any bits */
    case 1: return sign | (hi & ~1u) << 16 | 0x8000u;                          /* a tie, even: stays */
    case 2: return sign | (hi | 1u) << 16 | 0x8000u;                           /* a tie, odd: up */
    case 3: return sign | hi << 16 | (tc_rng_below(r, 2) ? 0x7fffu : 0x8001u); /* either side of a tie */
    case 4: return sign | tc_rng_below(r, 0x800000);                           /* subnormal or zero */
    case 5: return sign | tc_rng_below(r, 0x80) << 16 | 0x8000u;               /* a subnormal tie */
    case 6: return sign | 0x007f8000u | tc_rng_below(r, 0x8000);               /* rounds up to the smallest normal */
    case 7: return sign | 0x7f800000u | (1 + tc_rng_below(r, 0x7fffff));        /* NaN, quiet or signalling */
    case 8: return sign | 0x7f800000u | (1 + tc_rng_below(r, 0xffff));          /* NaN with a zero high payload */
    case 9: return sign | 0x7f800000u;                                          /* infinity */
    case 10: return sign | (0x7f7f0000u + tc_rng_below(r, 0x10000));           /* FLT_MAX's bfloat16 step: from
                                                                                  0x7f7f8000 on, to infinity */
    case 11: return sign | (tc_rng_below(r, 2) ? 0x7f7fffffu : 0x7f7f8000u);   /* FLT_MAX, the tie below it */
    default: return sign | hi << 16 | tc_rng_below(r, 0x10000);                /* any finite */
    }
}

/* round_bf16: bit-exact against the scalar slot and against ca_round_bf16_ref, in place at any alignment, n = 0
 * included, nothing written outside x[0..n). */
static int ca_check_round(const attn_kernels *k, tc_rng *r)
{
    const size_t n = tc_rng_below(r, 8) == 0 ? 0 : tc_rng_below(r, 2) ? 1 + tc_rng_below(r, 40)
                                                                       : 1 + tc_rng_below(r, 300);
    const size_t off = tc_rng_below(r, 16);
    uint32_t *in = malloc((n + 1) * sizeof *in);
    ca_buf x, xref;
    ca_alloc(&x, n + off);
    for (size_t i = 0; i < n; i++) {
        in[i] = ca_round_input(r);
        x.p[off + i] = tc_u2f(in[i]);
    }
    ca_clone(&xref, &x);
    attn_kernels_scalar.round_bf16(xref.p + off, n);
    k->round_bf16(x.p + off, n);
    int bad = ca_guards_ok(&x) && ca_guards_ok(&xref) ? 0 : ca_fail("n %zu offset %zu: write outside x", n, off);
    for (size_t i = 0; i < off && !bad; i++)
        if (tc_f2u(x.p[i]) != TC_POISON_BITS)
            bad = ca_fail("n %zu offset %zu: x[%zu] before the start written", n, off, i);
    for (size_t i = 0; i < n && !bad; i++) {
        const uint32_t got = tc_f2u(x.p[off + i]), scalar = tc_f2u(xref.p[off + i]), want = ca_round_bf16_ref(in[i]);
        /* The reference against tests/common.c's frexp/nearbyint rounding (NaNs aside): the test checks itself. */
        const uint32_t other = (uint32_t)tc_bf16_bits(tc_u2f(in[i])) << 16;
        if (got != scalar)
            bad = ca_fail("n %zu offset %zu: x[%zu] 0x%08x -> 0x%08x, the scalar slot gives 0x%08x", n, off, i, in[i],
                          got, scalar);
        else if (got != want)
            bad = ca_fail("n %zu offset %zu: x[%zu] 0x%08x -> 0x%08x, want 0x%08x (nearest even; NaN quieted)", n,
                          off, i, in[i], got, want);
        else if (!isnan(tc_u2f(in[i])) && other != want)
            bad = ca_fail("test bug: 0x%08x rounds to 0x%08x here but 0x%08x by tc_bf16_bits", in[i], want, other);
    }
    free(in);
    ca_free(&x);
    ca_free(&xref);
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

/* narrow[t]: dst = src * f rounded to t, bit-exact against the scalar slot and the test's own conversions, nothing
 * written outside dst[0..n). */
static int ca_check_narrow(const attn_kernels *k, tc_rng *r, attn_dtype t)
{
    const size_t n = tc_rng_below(r, 8) == 0 ? 0 : 1 + tc_rng_below(r, tc_rng_below(r, 2) ? 40 : 300);
    const size_t off = tc_rng_below(r, 16);
    const float f = tc_rng_below(r, 3) == 0 ? 1.0f : tc_rng_float(r, -4.0f, 4.0f);
    float *src = malloc((n + 1) * sizeof *src);
    uint16_t *dst = malloc((n + off + 16) * sizeof *dst), *ref = malloc((n + 1) * sizeof *ref);
    for (size_t i = 0; i < n; i++)
        src[i] = tc_u2f(ca_round_input(r));
    for (size_t i = 0; i < n + off + 16; i++)
        dst[i] = 0x5a5a;
    attn_kernels_scalar.narrow[t](ref, src, n, f);
    k->narrow[t](dst + off, src, n, f);
    int bad = 0;
    for (size_t i = 0; i < n + off + 16 && !bad; i++)
        if ((i < off || i >= off + n) && dst[i] != 0x5a5a)
            bad = ca_fail("n %zu offset %zu: dst[%zd] written outside", n, off, (ptrdiff_t)i - (ptrdiff_t)off);
    for (size_t i = 0; i < n && !bad; i++) {
        const float x = src[i] * f;
        const uint16_t want = t == ATTN_BF16 ? (uint16_t)(ca_round_bf16_ref(tc_f2u(x)) >> 16) : attn_f32_to_f16(x);
        const int nan = t == ATTN_F16 ? (want & 0x7c00u) == 0x7c00u && (want & 0x3ffu)
                                      : (want & 0x7f80u) == 0x7f80u && (want & 0x7fu);
        /* A NaN may come back with another payload (F16C's), but a NaN of the same sign. */
        const uint16_t got = dst[off + i];
        const int same = got == want || (nan && ((got ^ want) & 0x8000u) == 0 &&
                                          (t == ATTN_F16 ? (got & 0x7c00u) == 0x7c00u && (got & 0x3ffu)
                                                         : (got & 0x7f80u) == 0x7f80u && (got & 0x7fu)));
        if (!nan && got != ref[i])
            bad = ca_fail("n %zu: %.9g * %.9g -> 0x%04x, the scalar slot gives 0x%04x", n, src[i], f, got, ref[i]);
        else if (!same)
            bad = ca_fail("n %zu: %.9g * %.9g -> 0x%04x, want 0x%04x", n, src[i], f, dst[off + i], want);
    }
    free(src);
    free(dst);
    free(ref);
    return bad;
}

/* The bfloat16 pair layouts of kernels.h (scores_bf16p), built here element by element. */
static uint32_t ca_pair(uint16_t even, uint16_t odd) { return (uint32_t)even | (uint32_t)odd << 16; }

static uint16_t ca_bf16_rand(tc_rng *r) { return attn_f32_to_bf16(ca_uniform(r)); }

/* scores_bf16p, pv_bf16p, pack_bf16p (absent on tables without bfloat16 dot products: all three or none). Scores
 * against float64 sums of the bfloat16 products times the scale; P.V against float64 from the weights rounded to
 * bfloat16, with NaN planted in every weight a row cannot see and in every value no row sees; the pack bit-exact
 * against the layouts built here. */
static int ca_check_bf16p(const attn_kernels *k, tc_rng *r)
{
    if (!k->scores_bf16p || !k->pv_bf16p)
        return k->scores_bf16p || k->pv_bf16p ? ca_fail("scores_bf16p and pv_bf16p: one without the other") : 0;
    const size_t rows = 1 + tc_rng_below(r, 80), nk = 1 + tc_rng_below(r, 300), d = 1 + tc_rng_below(r, 140);
    const size_t dv = 1 + tc_rng_below(r, 140), dvp = (dv + 15) / 16 * 16, nkp = (nk + 15) / 16 * 16, d2 = (d + 1) / 2;
    uint16_t *kr = malloc(nk * d * 2), *vr = malloc(nk * dv * 2), *q = malloc(rows * d2 * 4);
    uint32_t *kt = aligned_alloc(64, (nkp * d2 * 4 + 127) / 64 * 64), *vp = aligned_alloc(64, (nkp / 2 * dvp * 4 + 127) / 64 * 64);
    uint32_t *kt2 = aligned_alloc(64, (nkp * d2 * 4 + 127) / 64 * 64), *vp2 = aligned_alloc(64, (nkp / 2 * dvp * 4 + 127) / 64 * 64);
    int *lo = malloc(rows * sizeof *lo), *hi = malloc(rows * sizeof *hi);
    ca_buf s, o;
    ca_alloc(&s, rows * nkp);
    ca_alloc(&o, rows * dvp);
    for (size_t i = 0; i < nk * d; i++)
        kr[i] = ca_bf16_rand(r);
    for (size_t i = 0; i < nk * dv; i++)
        vr[i] = ca_bf16_rand(r);
    for (size_t i = 0; i < rows * d2 * 2; i++)
        ((uint16_t *)q)[i] = i % (d2 * 2) < d ? ca_bf16_rand(r) : 0;
    memset(kt, 0, nkp * d2 * 4);
    memset(vp, 0, nkp / 2 * dvp * 4);
    for (size_t j = 0; j < nk; j++)
        for (size_t c = 0; c < d; c += 2)
            kt[j / 16 * d2 * 16 + c / 2 * 16 + j % 16] = ca_pair(kr[j * d + c], c + 1 < d ? kr[j * d + c + 1] : 0);
    for (size_t j = 0; j < nk; j++)
        for (size_t c = 0; c < dv; c++)
            ((uint16_t *)vp)[(j / 2 * dvp + c) * 2 + j % 2] = vr[j * dv + c];
    int bad = 0;
    if (k->pack_bf16p) { /* 0xa5 poison: every word of the layout must be written, the guard word after it not */
        const size_t ldk = d + tc_rng_below(r, 3), ldv = dv + tc_rng_below(r, 3);
        uint16_t *k2 = malloc(nk * ldk * 2 + 2), *v2 = malloc(nk * ldv * 2 + 2);
        for (size_t j = 0; j < nk; j++) {
            memcpy(k2 + j * ldk, kr + j * d, d * 2);
            memcpy(v2 + j * ldv, vr + j * dv, dv * 2);
        }
        memset(kt2, 0xa5, nkp * d2 * 4 + 64);
        memset(vp2, 0xa5, nkp / 2 * dvp * 4 + 64);
        k->pack_bf16p(kt2, vp2, k2, ldk, v2, ldv, nk, d, dv, dvp);
        for (size_t i = 0; i < nkp * d2 && !bad; i++)
            if (kt2[i] != kt[i])
                bad = ca_fail("pack nk %zu d %zu: K word %zu 0x%08x, want 0x%08x", nk, d, i, kt2[i], kt[i]);
        for (size_t i = 0; i < (nk + 1) / 2 * dvp && !bad; i++)
            if (vp2[i] != vp[i])
                bad = ca_fail("pack nk %zu dv %zu: V word %zu 0x%08x, want 0x%08x", nk, dv, i, vp2[i], vp[i]);
        if (!bad && (kt2[nkp * d2] != 0xa5a5a5a5u || vp2[(nk + 1) / 2 * dvp] != 0xa5a5a5a5u))
            bad = ca_fail("pack nk %zu: written past the layout", nk);
        free(k2);
        free(v2);
    }
    ca_ranges(r, lo, hi, rows, nk, tc_rng_below(r, 3) == 0);
    attn_tile_args a = {.rows = rows, .d = d, .nk = nk, .nkp = nkp, .dvp = dvp, .q = (const float *)(void *)q,
                        .kt = kt, .vp = vp, .ldv = dvp, .kdt = ATTN_BF16, .vdt = ATTN_BF16, .lo = lo, .hi = hi,
                        .s = s.p, .o = o.p, .scale = tc_rng_float(r, 0.05f, 1.0f)};
    k->scores_bf16p(&a);
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = (size_t)lo[i]; j < (size_t)hi[i] && !bad; j++) {
            double want = 0, mag = 0;
            for (size_t c = 0; c < d; c++) {
                const double p = (double)attn_bf16_to_f32(((uint16_t *)q)[i * d2 * 2 + c]) * attn_bf16_to_f32(kr[j * d + c]);
                want += p;
                mag += fabs(p);
            }
            if (!ca_close(s.p[i * nkp + j], want * a.scale, mag * a.scale, 1e-5))
                bad = ca_fail("scores rows %zu nk %zu d %zu: s[%zu][%zu] = %.9g, want %.9g", rows, nk, d, i, j,
                              s.p[i * nkp + j], want * a.scale);
        }
    if (!ca_guards_ok(&s) && !bad)
        bad = ca_fail("scores: write outside s");
    /* P.V: weights in [0, 1] where a row sees its key, NaN elsewhere; values of keys no row sees are NaN. */
    int *seen = calloc(nkp, sizeof *seen);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = (size_t)lo[i]; j < (size_t)hi[i]; j++)
            seen[j] = 1;
    for (size_t j = 0; j < nk; j++)
        for (size_t c = 0; c < dv && !seen[j]; c++)
            ((uint16_t *)vp)[(j / 2 * dvp + c) * 2 + j % 2] = 0x7fc1;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < nkp; j++)
            s.p[i * nkp + j] = (int)j >= lo[i] && (int)j < hi[i] ? tc_rng_float(r, 0.0f, 1.0f) : NAN;
    double *w = malloc(rows * nkp * sizeof *w), *o0 = malloc(rows * dvp * sizeof *o0);
    for (size_t i = 0; i < rows * nkp; i++)
        w[i] = attn_bf16_to_f32(attn_f32_to_bf16(s.p[i]));
    for (size_t i = 0; i < rows * dvp; i++)
        o0[i] = o.p[i] = ca_uniform(r);
    k->pv_bf16p(&a);
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t c = 0; c < dv && !bad; c++) {
            double want = o0[i * dvp + c], mag = fabs(want);
            for (size_t j = (size_t)lo[i]; j < (size_t)hi[i]; j++) {
                want += w[i * nkp + j] * attn_bf16_to_f32(vr[j * dv + c]);
                mag += fabs(w[i * nkp + j] * attn_bf16_to_f32(vr[j * dv + c]));
            }
            if (!ca_close(o.p[i * dvp + c], want, mag, 1e-5) || isnan(o.p[i * dvp + c]))
                bad = ca_fail("pv rows %zu nk %zu dv %zu: o[%zu][%zu] = %.9g, want %.9g (row sees [%d, %d))", rows, nk,
                              dv, i, c, o.p[i * dvp + c], want, lo[i], hi[i]);
        }
    if (!ca_guards_ok(&o) && !bad)
        bad = ca_fail("pv: write outside o");
    free(seen);
    free(w);
    free(o0);
    free(kr);
    free(vr);
    free(q);
    free(kt);
    free(vp);
    free(kt2);
    free(vp2);
    free(lo);
    free(hi);
    ca_free(&s);
    ca_free(&o);
    return bad;
}

/* scores_rows_bf16p and pv_rows_bf16p (both or neither): decode-sized blocks against bfloat16 key and value rows read
 * in place, at an odd element offset (2-byte aligned) and with row strides past the row, checked like bf16p: NaN in
 * every weight a row cannot see and in every value no row sees. */
static int ca_check_bf16r(const attn_kernels *k, tc_rng *r)
{
    if (!k->scores_rows_bf16p || !k->pv_rows_bf16p)
        return k->scores_rows_bf16p || k->pv_rows_bf16p ? ca_fail("scores_rows_bf16p without pv_rows_bf16p") : 0;
    const size_t rows = 1 + tc_rng_below(r, 16), nk = 1 + tc_rng_below(r, 300), d = 32 * (1 + tc_rng_below(r, 5));
    const size_t dvp = 32 * (1 + tc_rng_below(r, 5)), nkp = (nk + 15) / 16 * 16;
    const size_t ldk = d + tc_rng_below(r, 3), ldv = dvp + tc_rng_below(r, 3);
    uint16_t *kbuf = malloc((nk * ldk + 1) * 2), *vbuf = malloc((nk * ldv + 1) * 2), *q = malloc(rows * d * 2);
    uint16_t *kr = kbuf + 1, *vr = vbuf + 1; /* 2-byte aligned rows */
    int *lo = malloc(rows * sizeof *lo), *hi = malloc(rows * sizeof *hi), *seen = calloc(nkp, sizeof *seen);
    ca_buf s, o;
    ca_alloc(&s, rows * nkp);
    ca_alloc(&o, rows * dvp);
    for (size_t i = 0; i < nk * ldk; i++)
        kr[i] = ca_bf16_rand(r);
    for (size_t i = 0; i < nk * ldv; i++)
        vr[i] = ca_bf16_rand(r);
    for (size_t i = 0; i < rows * d; i++)
        q[i] = ca_bf16_rand(r);
    ca_ranges(r, lo, hi, rows, nk, tc_rng_below(r, 3) == 0);
    attn_tile_args a = {.rows = rows, .d = d, .nk = nk, .nkp = nkp, .dvp = dvp, .q = (const float *)(void *)q,
                        .kr = kr, .ldk = ldk, .vp = vr, .ldv = ldv, .kdt = ATTN_BF16, .vdt = ATTN_BF16, .lo = lo,
                        .hi = hi, .s = s.p, .o = o.p, .scale = tc_rng_float(r, 0.05f, 1.0f)};
    k->scores_rows_bf16p(&a);
    int bad = 0;
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = 0; j < nkp && !bad; j++) {
            double want = 0, mag = 0;
            for (size_t c = 0; j < nk && c < d; c++) {
                const double p = (double)attn_bf16_to_f32(q[i * d + c]) * attn_bf16_to_f32(kr[j * ldk + c]);
                want += p;
                mag += fabs(p);
            }
            if (!ca_close(s.p[i * nkp + j], want * a.scale, mag * a.scale, 1e-5))
                bad = ca_fail("scores_rows rows %zu nk %zu d %zu: s[%zu][%zu] = %.9g, want %.9g", rows, nk, d, i, j,
                              s.p[i * nkp + j], want * a.scale);
        }
    if (!ca_guards_ok(&s) && !bad)
        bad = ca_fail("scores_rows: write outside s");
    for (size_t i = 0; i < rows; i++)
        for (size_t j = (size_t)lo[i]; j < (size_t)hi[i]; j++)
            seen[j] = 1;
    for (size_t j = 0; j < nk; j++)
        for (size_t c = 0; c < dvp && !seen[j]; c++)
            vr[j * ldv + c] = 0x7fc1;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < nkp; j++)
            s.p[i * nkp + j] = (int)j >= lo[i] && (int)j < hi[i] ? tc_rng_float(r, 0.0f, 1.0f) : NAN;
    double *w = malloc(rows * nkp * sizeof *w), *o0 = malloc(rows * dvp * sizeof *o0);
    for (size_t i = 0; i < rows * nkp; i++)
        w[i] = attn_bf16_to_f32(attn_f32_to_bf16(s.p[i]));
    for (size_t i = 0; i < rows * dvp; i++)
        o0[i] = o.p[i] = ca_uniform(r);
    k->pv_rows_bf16p(&a);
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t c = 0; c < dvp && !bad; c++) {
            double want = o0[i * dvp + c], mag = fabs(want);
            for (size_t j = (size_t)lo[i]; j < (size_t)hi[i]; j++) {
                want += w[i * nkp + j] * attn_bf16_to_f32(vr[j * ldv + c]);
                mag += fabs(w[i * nkp + j] * attn_bf16_to_f32(vr[j * ldv + c]));
            }
            if (!ca_close(o.p[i * dvp + c], want, mag, 1e-5) || isnan(o.p[i * dvp + c]))
                bad = ca_fail("pv_rows rows %zu nk %zu dv %zu: o[%zu][%zu] = %.9g, want %.9g (row sees [%d, %d))",
                              rows, nk, dvp, i, c, o.p[i * dvp + c], want, lo[i], hi[i]);
        }
    if (!ca_guards_ok(&o) && !bad)
        bad = ca_fail("pv_rows: write outside o");
    free(kbuf), free(vbuf), free(q), free(lo), free(hi), free(seen), free(w), free(o0);
    ca_free(&s);
    ca_free(&o);
    return bad;
}

/* modify: softcap, ALiBi and bias on each row's visible scores against float64, the bias rows malloc'ed exactly to
 * the tile's last key (ASan builds see a read past it), positions past 2^24 from key 0 included. */
static int ca_check_modify(const attn_kernels *k, tc_rng *r)
{
    const size_t rows = 1 + tc_rng_below(r, 20), nk = 1 + tc_rng_below(r, 300), nkp = (nk + 15) / 16 * 16;
    const size_t t0 = tc_rng_below(r, 2) ? 0 : tc_rng_below(r, 5000);
    int *lo = malloc(rows * sizeof *lo), *hi = malloc(rows * sizeof *hi);
    float *slope = malloc(rows * sizeof *slope), **brow = malloc(rows * sizeof *brow);
    int64_t *rel = malloc(rows * sizeof *rel);
    ca_buf s;
    ca_alloc(&s, rows * nkp);
    ca_ranges(r, lo, hi, rows, nk, tc_rng_below(r, 3) == 0);
    const int use_cap = tc_rng_below(r, 2), use_alibi = tc_rng_below(r, 2), use_bias = tc_rng_below(r, 2);
    const float cap = tc_rng_float(r, 0.5f, 50.0f);
    for (size_t i = 0; i < rows; i++) {
        slope[i] = tc_rng_float(r, -1.0f, 1.0f);
        rel[i] = (int64_t)tc_rng_below(r, 1u << 20) - (1 << 19) - (int64_t)t0;
        brow[i] = malloc(nk * sizeof(float)); /* keys t0 .. t0 + nk of the row, at brow[i] - t0 */
        for (size_t j = 0; j < nk; j++)
            brow[i][j] = tc_rng_below(r, 10) ? tc_rng_float(r, -3.0f, 3.0f) : -INFINITY;
        brow[i] -= t0;
    }
    for (size_t i = 0; i < rows * nkp; i++)
        s.p[i] = tc_rng_float(r, -40.0f, 40.0f);
    float *s0 = malloc(rows * nkp * sizeof *s0);
    memcpy(s0, s.p, rows * nkp * sizeof *s0);
    const attn_score_mods md = {.softcap = use_cap ? cap : 0.0f, .inv_cap = use_cap ? 1.0f / cap : 0.0f,
                                .slope = use_alibi ? slope : NULL, .rel = rel,
                                .bias = use_bias ? (const float *const *)brow : NULL, .t0 = t0};
    const attn_tile_args a = {.rows = rows, .nk = nk, .nkp = nkp, .lo = lo, .hi = hi, .s = s.p, .mods = &md};
    k->modify(&a);
    int bad = 0;
    for (size_t i = 0; i < rows && !bad; i++)
        for (size_t j = (size_t)lo[i]; j < (size_t)hi[i] && !bad; j++) {
            double want = s0[i * nkp + j], mag;
            if (use_cap)
                want = cap * tanh(want / cap);
            mag = fabs(want);
            if (use_alibi) {
                const double dist = (double)(rel[i] + (int64_t)t0 + (int64_t)j);
                want += slope[i] * dist;
                mag += fabs(slope[i] * dist);
            }
            if (use_bias) {
                want += brow[i][t0 + j];
                mag += fabs(brow[i][t0 + j]);
            }
            const float got = s.p[i * nkp + j];
            if (isinf(want) ? got != want : !ca_close(got, want, mag, 4e-6))
                bad = ca_fail("modify rows %zu nk %zu (cap %d, alibi %d, bias %d): s[%zu][%zu] = %.9g, want %.9g",
                              rows, nk, use_cap, use_alibi, use_bias, i, j, got, want);
        }
    if (!ca_guards_ok(&s) && !bad)
        bad = ca_fail("modify: write outside s");
    for (size_t i = 0; i < rows; i++)
        free(brow[i] + t0);
    free(lo), free(hi), free(slope), free(brow), free(rel), free(s0);
    ca_free(&s);
    return bad;
}

/* Every slot of attn_kernels, the per-format ones once per format. */
enum {
    CA_SCORES_ROWS = 2 * ATTN_NFMT, CA_SOFTMAX = CA_SCORES_ROWS + ATTN_NFMT, CA_PROBS, CA_SCALE, CA_CVT,
    CA_ROUND = CA_CVT + 2, CA_GEMM, CA_NARROW, CA_BF16P = CA_NARROW + 2, CA_BF16R, CA_MODIFY, CA_NSLOT
};
static const char *const ca_slots[CA_NSLOT] = {
    "scores_f32", "scores_f16", "scores_bf16", "scores_i8", "pv_f32", "pv_f16", "pv_bf16", "pv_i8",
    "scores_rows_f32", "scores_rows_f16", "scores_rows_bf16", "scores_rows_i8", "softmax", "probs", "scale",
    "cvt_f16", "cvt_bf16", "round_bf16", "gemm", "narrow_f16", "narrow_bf16", "bf16p", "bf16 rows", "modify"};
_Static_assert(ATTN_NFMT == 4, "name the slots of a new storage format in ca_slots");

static int ca_run_slot(const attn_kernels *k, int slot, tc_rng *r)
{
    if (slot < ATTN_NFMT)
        return ca_check_scores(k, r, 0, (attn_dtype)slot);
    if (slot < 2 * ATTN_NFMT)
        return ca_check_pv(k, r, (attn_dtype)(slot - ATTN_NFMT));
    if (slot < CA_SOFTMAX)
        return ca_check_scores(k, r, 1, (attn_dtype)(slot - CA_SCORES_ROWS));
    switch (slot) {
    case CA_SOFTMAX: return ca_check_softmax(k, r);
    case CA_PROBS: return ca_check_probs(k, r);
    case CA_SCALE: return ca_check_scale(k, r);
    case CA_ROUND: return ca_check_round(k, r);
    case CA_GEMM: return ca_check_gemm(k, r);
    case CA_BF16P: return ca_check_bf16p(k, r);
    case CA_BF16R: return ca_check_bf16r(k, r);
    case CA_MODIFY: return ca_check_modify(k, r);
    case CA_NARROW: return ca_check_narrow(k, r, ATTN_F16);
    case CA_NARROW + 1: return ca_check_narrow(k, r, ATTN_BF16);
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
