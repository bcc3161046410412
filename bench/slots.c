/* attn-bench --kernels: every kernel slot of every variant this CPU runs, timed alone on 1 thread (DESIGN.md §2:
 * "every kernel slot is ... timed alone by the bench"), against the 1-thread FMA peak of the variant's level. The
 * slots are called through the variant's table (simd/kernels.h) only after attn_kernels_supported said the CPU runs
 * it, so this file keeps baseline flags. Buffers are sized by the contracts of attn_tile_args and attn_gemm_args. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench_int.h"

#define SLOT_D 128          /* head_dim of every tile: q/k width and value width (dvp, ldv) */
#define DEC_ROWS 4          /* decode: the query heads of one GQA group (32/8 in D1/D2) */
#define DEC_KEYS 256        /* decode: keys per tile */
#define N_ELEM 4096         /* probs, scale, cvt: elements per call */
#define GEMM_ROWS 96
#define GEMM_K 1024
#define GEMM_NC 64
#define SLOT_REP_S 1e-3     /* a rep repeats the call until it lasts this long */
#define SLOT_REPS 50        /* reps per slot unless --reps says otherwise */

/* A table's slots for a storage format (attn_dtype). */
#define SCORES(k, fmt) ((k)->scores[fmt])
#define PV(k, fmt) ((k)->pv[fmt])
#define CVT(k, fmt) ((k)->cvt[fmt])

enum { S_SCORES, S_SOFTMAX, S_PV, S_DEC_SCORES, S_DEC_PV, S_SCORES_ROWS, S_PROBS, S_SCALE, S_CVT_F16, S_CVT_BF16,
       S_GEMM };

/* Everything one variant's slots read and write, 64-byte aligned. */
typedef struct slot_bufs {
    const attn_kernels *k;
    attn_tile_args pre, dec, rows, prb; /* prefill block, decode scores/P.V, scores_rows, probs */
    attn_gemm_args g;
    float *q, *kt, *kr, *vp, *s, *m, *l, *o, *sd, *od, *md, *ld, *dst, *src, *gc;
    uint16_t *kt16, *vp16, *h16, *b16;
    int *lo, *hi, *hi256; /* every key visible: hi = block_kv for the prefill block, 256 for the small tiles */
} slot_bufs;

/* IEEE half of x (|x| < 2), truncated, tiny values flushed to zero: the inputs only need to be finite and varied. */
static uint16_t to_f16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const int e = (int)((u >> 23) & 0xff) - 127 + 15;
    return e <= 0 ? sign : (uint16_t)(sign | (unsigned)e << 10 | ((u >> 13) & 0x3ff));
}

static uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)(u >> 16);
}

/* n key rows of d floats into the panels of attn_tile_args.kt (key j, dim c at (j/16)*d*16 + c*16 + j%16), as fp32
 * or, when p16 is not NULL, as half. Also the GEMM's packed b (attn_gemm_args.bp: the same layout). */
static void pack_panels(float *p32, uint16_t *p16, const float *rows, size_t n, size_t d)
{
    for (size_t j = 0; j < n; j++)
        for (size_t c = 0; c < d; c++) {
            size_t at = j / ATTN_PAD * d * ATTN_PAD + c * ATTN_PAD + j % ATTN_PAD;
            if (p16)
                p16[at] = to_f16(rows[j * d + c]);
            else
                p32[at] = rows[j * d + c];
        }
}

static void slot_free(slot_bufs *b)
{
    void *all[] = {b->q, b->kt, b->kr, b->vp, b->s, b->m, b->l, b->o, b->sd, b->od, b->md, b->ld, b->dst, b->src,
                   b->gc, b->kt16, b->vp16, b->h16, b->b16, b->lo, b->hi, b->hi256, (void *)b->g.a, (void *)b->g.bp,
                   (void *)b->g.bias};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* Buffers and tile arguments for variant v: a prefill block of block_q rows x block_kv keys, and the small shapes. */
static int slot_setup(slot_bufs *b, const attn_variant *v)
{
    memset(b, 0, sizeof *b);
    b->k = v->kern;
    const size_t rows = (size_t)v->block_q, nk = (size_t)v->block_kv, nkp = (nk + ATTN_PAD - 1) / ATTN_PAD * ATTN_PAD;
    const size_t d = SLOT_D, keys = nkp > DEC_KEYS ? nkp : DEC_KEYS, maxr = rows > 16 ? rows : 16;
    b->q = bench_alloc64(maxr * d * 4);
    b->kr = bench_alloc64(keys * d * 4);       /* key rows, also the source of the panels */
    b->kt = bench_alloc64(keys * d * 4);       /* zero past nk: calloc'd below */
    b->kt16 = bench_alloc64(keys * d * 2);
    b->vp = bench_alloc64(keys * d * 4);
    b->vp16 = bench_alloc64(keys * d * 2);
    b->s = bench_alloc64(maxr * keys * 4);
    b->o = bench_alloc64(maxr * d * 4);
    b->m = bench_alloc64(maxr * 4), b->l = bench_alloc64(maxr * 4);
    b->lo = bench_alloc64(maxr * sizeof(int)), b->hi = bench_alloc64(maxr * sizeof(int));
    b->hi256 = bench_alloc64(maxr * sizeof(int));
    b->sd = bench_alloc64(DEC_ROWS * DEC_KEYS * 4), b->od = bench_alloc64(DEC_ROWS * d * 4);
    b->md = bench_alloc64(DEC_ROWS * 4), b->ld = bench_alloc64(DEC_ROWS * 4);
    b->dst = bench_alloc64(N_ELEM * 4), b->src = bench_alloc64(N_ELEM * 4);
    b->h16 = bench_alloc64(N_ELEM * 2), b->b16 = bench_alloc64(N_ELEM * 2);
    float *ga = bench_alloc64(GEMM_ROWS * GEMM_K * 4), *gb = bench_alloc64(GEMM_K * GEMM_NC * 4);
    float *bias = bench_alloc64(GEMM_NC * 4);
    b->gc = bench_alloc64(GEMM_ROWS * GEMM_NC * 4);
    b->g.a = ga, b->g.bp = gb, b->g.bias = bias;
    if (!b->q || !b->kr || !b->kt || !b->kt16 || !b->vp || !b->vp16 || !b->s || !b->o || !b->m || !b->l || !b->lo ||
        !b->hi || !b->hi256 || !b->sd || !b->od || !b->md || !b->ld || !b->dst || !b->src || !b->h16 || !b->b16 ||
        !ga || !gb || !bias || !b->gc)
        return 0;

    /* Inputs uniform in [-1, 1); q scaled by 1/sqrt(d) as the engine does, so exp sees realistic scores. */
    const uint64_t seed = bench_opt.seed * 16;
    bench_fill_uniform(b->q, maxr * d, seed + 0);
    for (size_t i = 0; i < maxr * d; i++)
        b->q[i] *= 1.0f / sqrtf((float)d);
    bench_fill_uniform(b->kr, keys * d, seed + 1);
    memset(b->kt, 0, keys * d * 4);
    memset(b->kt16, 0, keys * d * 2);
    pack_panels(b->kt, NULL, b->kr, nk, d);
    pack_panels(NULL, b->kt16, b->kr, DEC_KEYS, d);
    bench_fill_uniform(b->vp, keys * d, seed + 2);
    for (size_t i = 0; i < keys * d; i++)
        b->vp16[i] = to_f16(b->vp[i]);
    bench_fill_uniform(b->src, N_ELEM, seed + 3);
    for (size_t i = 0; i < N_ELEM; i++)
        b->h16[i] = to_f16(b->src[i]), b->b16[i] = to_bf16(b->src[i]);
    bench_fill_uniform(ga, GEMM_ROWS * GEMM_K, seed + 4);
    float *w = bench_alloc64(GEMM_K * GEMM_NC * 4);
    if (!w)
        return 0;
    bench_fill_uniform(w, GEMM_K * GEMM_NC, seed + 5);  /* b as columns of k: column j at w[j * k] */
    pack_panels(gb, NULL, w, GEMM_NC, GEMM_K);
    free(w);
    bench_fill_uniform(bias, GEMM_NC, seed + 6);
    memset(b->o, 0, maxr * d * 4);
    memset(b->od, 0, DEC_ROWS * d * 4);
    for (size_t r = 0; r < maxr; r++)
        b->lo[r] = 0, b->hi[r] = (int)nk, b->hi256[r] = DEC_KEYS;

    /* The prefill block: scores, softmax and P.V on the same s, m, l, o. */
    attn_tile_args *a = &b->pre;
    a->rows = rows, a->d = d, a->nk = nk, a->nkp = nkp, a->dvp = d;
    a->q = b->q, a->kt = b->kt, a->vp = b->vp, a->ldv = d, a->kdt = ATTN_F32, a->vdt = ATTN_F32;
    a->lo = b->lo, a->hi = b->hi, a->s = b->s, a->m = b->m, a->l = b->l, a->o = b->o;
    /* Decode: 4 rows against f16 key panels and f16 value rows, as read in place from a KV cache. */
    a = &b->dec;
    a->rows = DEC_ROWS, a->d = d, a->nk = DEC_KEYS, a->nkp = DEC_KEYS, a->dvp = d;
    a->q = b->q, a->kt = b->kt16, a->vp = b->vp16, a->ldv = d, a->kdt = ATTN_F16, a->vdt = ATTN_F16;
    a->lo = b->lo, a->hi = b->hi256, a->s = b->sd, a->m = b->md, a->l = b->ld, a->o = b->od;
    /* scores_rows: the same 4 rows against fp32 key rows used in place. */
    b->rows = b->dec;
    b->rows.kt = NULL, b->rows.kr = b->kr, b->rows.ldk = d, b->rows.kdt = ATTN_F32, b->rows.vp = NULL;
    /* probs: 4096 scores, 16 rows x 256 keys (the f16 panels: 256 keys whatever the variant's block_kv). */
    b->prb = b->pre;
    b->prb.rows = N_ELEM / DEC_KEYS, b->prb.nk = b->prb.nkp = DEC_KEYS, b->prb.hi = b->hi256;
    b->prb.kt = b->kt16, b->prb.kdt = ATTN_F16;
    b->g.rows = GEMM_ROWS, b->g.k = GEMM_K, b->g.nc = b->g.ncp = GEMM_NC, b->g.lda = GEMM_K;
    b->g.c = b->gc, b->g.ldc = GEMM_NC;
    return 1;
}

/* Prepares what a slot reads from the slots before it: softmax needs scores, P.V probabilities, probs the final m
 * and l. Untimed. */
static void slot_prepare(slot_bufs *b, int slot)
{
    const attn_kernels *k = b->k;
    attn_tile_args *a = &b->pre;
    if (slot == S_SOFTMAX) {
        SCORES(k, a->kdt)(a);
    } else if (slot == S_PV || slot == S_DEC_PV) {
        a = slot == S_PV ? &b->pre : &b->dec;
        for (size_t r = 0; r < a->rows; r++)
            a->m[r] = -INFINITY, a->l[r] = 0;
        SCORES(k, a->kdt)(a);
        k->softmax(a);
    } else if (slot == S_PROBS) {
        attn_tile_args *p = &b->prb;
        SCORES(k, p->kdt)(p);
        for (size_t r = 0; r < p->rows; r++) {
            const float *s = p->s + r * p->nkp;
            float mx = -INFINITY, sum = 0;
            for (size_t j = 0; j < p->nk; j++)
                mx = s[j] > mx ? s[j] : mx;
            for (size_t j = 0; j < p->nk; j++)
                sum += expf(s[j] - mx);
            p->m[r] = mx, p->l[r] = sum;
        }
    }
}

static void slot_call(slot_bufs *b, int slot)
{
    const attn_kernels *k = b->k;
    switch (slot) {
    case S_SCORES: SCORES(k, b->pre.kdt)(&b->pre); break;
    case S_SOFTMAX:
        /* A fresh row state each call (a few hundred floats); s drifts to probabilities after the first call and
         * stays finite, which costs the same exps as scores would. */
        for (size_t r = 0; r < b->pre.rows; r++)
            b->m[r] = -INFINITY, b->l[r] = 0;
        k->softmax(&b->pre);
        break;
    case S_PV: PV(k, b->pre.vdt)(&b->pre); break;
    case S_DEC_SCORES: SCORES(k, b->dec.kdt)(&b->dec); break;
    case S_DEC_PV: PV(k, b->dec.vdt)(&b->dec); break;
    case S_SCORES_ROWS: k->scores_rows[ATTN_F32](&b->rows); break;
    case S_PROBS: k->probs(&b->prb, b->dst, DEC_KEYS); break;
    case S_SCALE: k->scale(b->dst, b->src, N_ELEM, 0.5f); break;
    case S_CVT_F16: CVT(k, ATTN_F16)(b->dst, b->h16, N_ELEM); break;
    case S_CVT_BF16: CVT(k, ATTN_BF16)(b->dst, b->b16, N_ELEM); break;
    case S_GEMM: k->gemm(&b->g); break;
    }
}

/* Median and best seconds per call over reps of >= SLOT_REP_S each. */
static int time_slot(slot_bufs *b, int slot, int reps, double *med, double *best)
{
    double *ts = malloc(sizeof(double) * (size_t)reps);
    if (!ts)
        return 0;
    slot_prepare(b, slot);
    /* Warm-up and calibration: double the repeat count until a rep lasts half the target, then scale it. */
    long inner = 1;
    double t0, dt;
    for (;;) {
        t0 = bench_now_s();
        for (long i = 0; i < inner; i++)
            slot_call(b, slot);
        dt = bench_now_s() - t0;
        if (dt >= SLOT_REP_S / 2 || inner >= (1L << 30))
            break;
        inner *= 2;
    }
    if (dt < SLOT_REP_S)
        inner = (long)ceil((double)inner * SLOT_REP_S / (dt > 0 ? dt : 1e-9));
    for (int r = 0; r < reps; r++) {
        t0 = bench_now_s();
        for (long i = 0; i < inner; i++)
            slot_call(b, slot);
        ts[r] = (bench_now_s() - t0) / (double)inner;
    }
    *best = ts[0];
    for (int r = 1; r < reps; r++)
        *best = ts[r] < *best ? ts[r] : *best;
    *med = bench_median(ts, reps);
    free(ts);
    return 1;
}

/* The table's rows: a slot's timing in ns per unit, or in GFLOP/s (scores gets both, from one timing). */
typedef struct slot_row {
    int slot;
    const char *name, *shape, *unit;
    int block; /* 1: the prefill block, its block_q x block_kv before the shape */
    int flop;  /* 1: GFLOP/s (and %peak); 0: ns per score, key or element */
    int timed; /* 0: the same timing as the row before, in another unit */
} slot_row;

static const slot_row slot_rows[] = {
    {S_SCORES, "scores", "d128 f32 panels", "ns/score", 1, 0, 1},
    {S_SCORES, "scores", "d128 f32 panels", "GFLOP/s", 1, 1, 0},
    {S_SOFTMAX, "softmax", "", "ns/score", 1, 0, 1},
    {S_PV, "pv", "dv128 f32 rows", "GFLOP/s", 1, 1, 1},
    {S_DEC_SCORES, "scores", "4x256 d128 f16 panels", "ns/key", 0, 0, 1},
    {S_DEC_PV, "pv", "4x256 dv128 f16 rows", "ns/key", 0, 0, 1},
    {S_SCORES_ROWS, "scores_rows", "4x256 d128 f32 rows", "ns/key", 0, 0, 1},
    {S_PROBS, "probs", "16x256", "ns/elem", 0, 0, 1},
    {S_SCALE, "scale", "4096", "ns/elem", 0, 0, 1},
    {S_CVT_F16, "cvt_f16", "4096", "ns/elem", 0, 0, 1},
    {S_CVT_BF16, "cvt_bf16", "4096", "ns/elem", 0, 0, 1},
    {S_GEMM, "gemm", "96x1024 x 1024x64", "GFLOP/s", 0, 1, 1},
};

/* What one call of slot does: its flops when flop, else the units it is reported per (scores, keys, elements). */
static double per_call(int slot, int flop, const attn_variant *v)
{
    const double block = (double)v->block_q * v->block_kv;
    switch (slot) {
    case S_SCORES: case S_SOFTMAX: case S_PV: return flop ? 2.0 * block * SLOT_D : block;
    case S_DEC_SCORES: case S_DEC_PV: case S_SCORES_ROWS: return DEC_KEYS;
    case S_GEMM: return 2.0 * GEMM_ROWS * GEMM_K * GEMM_NC;
    default: return N_ELEM;
    }
}

/* The variants --isa asked for (a level: all of its variants; auto: the default context's level); all without it. */
static int wanted(const attn_variant *v, attn_isa auto_level)
{
    if (!attn_kernels_supported(v->name))
        return 0;
    if (!bench_opt.isa_given)
        return 1;
    for (int i = 0; i < bench_opt.n_isa_req; i++) {
        const bench_isa_req *rq = &bench_opt.isa_req[i];
        if (rq->kernels ? !strcasecmp(rq->kernels, v->name)
                        : v->level == (rq->isa == ATTN_ISA_AUTO ? auto_level : rq->isa))
            return 1;
    }
    return 0;
}

int bench_kernels_main(attn_isa auto_level)
{
    const int reps = bench_opt.reps_given ? bench_opt.reps : SLOT_REPS;
    /* The peaks of the levels in play first, before the slots warm anything up. */
    fprintf(bench_hout, "FMA peak   1 thread, GFLOP/s:");
    attn_isa seen[MAX_LIST];
    int n_seen = 0;
    for (size_t j = 0; attn_variant_at(j); j++) {
        const attn_variant *v = attn_variant_at(j);
        int dup = 0;
        for (int i = 0; i < n_seen; i++)
            dup |= seen[i] == v->level;
        if (dup || !wanted(v, auto_level) || n_seen == MAX_LIST)
            continue;
        seen[n_seen++] = v->level;
        double pk = bench_peak1(v->level);
        bench_progress_clear();
        if (pk > 0)
            fprintf(bench_hout, " %s %.1f", attn_isa_name(v->level), pk);
        if (pk > 0 && v->level == ATTN_ISA_AVX512_BF16) /* its slots here are fp32: avx512's FMA peak rates them */
            fprintf(bench_hout, " (avx512's FMA; bf16 dot %.1f)", bench_dot_peak1());
    }
    fprintf(bench_hout, "%s\n", bench_opt.peak_ms > 0 ? "" : " not measured (--peak-ms 0)");

    fprintf(bench_hout, "\nRegister blockings (rows x vectors of the ISA's width) and blocks (block_q x block_kv):\n");
    fprintf(bench_hout, "%-16s %-26s %-7s %-5s %-10s %s\n", "variant", "table", "scores", "P.V", "decode P.V",
            "blocks");
    int n_var = 0;
    for (size_t j = 0; attn_variant_at(j); j++) {
        const attn_variant *v = attn_variant_at(j);
        if (!wanted(v, auto_level))
            continue;
        char sc[16], pv[16], pvd[16];
        snprintf(sc, sizeof sc, "%dx%d", v->kern->sc_rb, v->kern->sc_nv);
        snprintf(pv, sizeof pv, "%dx%d", v->kern->pv_rb, v->kern->pv_nv);
        snprintf(pvd, sizeof pvd, "%dx%d", v->kern->pvd_rb, v->kern->pvd_nv);
        fprintf(bench_hout, "%-16s %-26s %-7s %-5s %-10s %dx%d\n", v->name, v->kern->table, sc, pv, pvd, v->block_q,
                v->block_kv);
        n_var++;
    }
    if (!n_var) {
        fprintf(stderr, "%s: --kernels --isa: no kernel variant of those runs on this CPU\n", BENCH_PROG);
        return 2;
    }

    fprintf(bench_hout, "\nEach slot alone, 1 thread: median and best of %d reps of >= %.0f ms; %%peak = median "
                        "GFLOP/s of the level's 1-thread FMA peak\n", reps, SLOT_REP_S * 1e3);
    fprintf(bench_hout, "%-16s %-12s %-30s %10s %10s %-9s %6s\n", "variant", "slot", "shape", "median", "best", "unit",
            "%peak");
    int failed = 0;
    for (size_t j = 0; attn_variant_at(j); j++) {
        const attn_variant *v = attn_variant_at(j);
        if (!wanted(v, auto_level))
            continue;
        slot_bufs b;
        if (!slot_setup(&b, v)) {
            slot_free(&b);
            fprintf(stderr, "%s: --kernels %s: out of memory\n", BENCH_PROG, v->name);
            failed = 1;
            continue;
        }
        double med = 0, best = 0;
        for (size_t r = 0; r < sizeof slot_rows / sizeof slot_rows[0]; r++) {
            const slot_row *sr = &slot_rows[r];
            if (sr->timed) {
                bench_progress_minor("%s %s", v->name, sr->name);
                if (!time_slot(&b, sr->slot, reps, &med, &best)) {
                    fprintf(stderr, "%s: --kernels: out of memory\n", BENCH_PROG);
                    failed = 1;
                    break;
                }
            }
            const double per = per_call(sr->slot, sr->flop, v);
            const double m = sr->flop ? per / med / 1e9 : med * 1e9 / per;
            const double bb = sr->flop ? per / best / 1e9 : best * 1e9 / per;
            char pct[16] = "-", shape[64];
            snprintf(shape, sizeof shape, "%s", sr->shape);
            if (sr->block)
                snprintf(shape, sizeof shape, "%dx%d %s", v->block_q, v->block_kv, sr->shape);
            if (sr->flop && bench_peak1(v->level) > 0)
                snprintf(pct, sizeof pct, "%.1f", 100 * m / bench_peak1(v->level));
            bench_progress_clear();
            fprintf(bench_hout, "%-16s %-12s %-30s %10.4g %10.4g %-9s %6s\n", v->name, sr->name, shape, m, bb,
                    sr->unit, pct);
            fflush(bench_hout);
        }
        slot_free(&b);
    }
    return failed;
}
