/* attn-bench --tune: searches one level's blockings on this machine. Candidates are every register blocking of the
 * level (one per distinct kernel table among its variants) times a grid of cache blockings (block_q x block_kv);
 * each is timed with attn_sdpa on 1 thread on the tune shapes, the candidates taking turns rep by rep so that drift
 * (clock, a noisy neighbour) hits them all alike. Prints the best ones against the level's current default and the
 * registry line for simd/variants.c. Baseline flags only. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_int.h"

#define TUNE_REPS 3 /* reps per candidate and shape unless --reps says otherwise */
#define TUNE_TOP 5

static const int grid_q[] = {128, 192, 256, 384, 512};
static const int grid_kv[] = {128, 256, 512};
#define MAX_CANDS (8 * 15 + 1) /* up to 8 tables x the grid, plus a default outside the grid */

typedef struct cand {
    const attn_variant *v; /* the first variant of the level with this table */
    int bq, bkv;
    attn_ctx *ctx;
    long inner[MAX_LIST];  /* calls per rep, per shape: fast shapes repeat to >= MIN_REP_S */
    double *t;             /* seconds per call, [shape][rep] */
    double gflops[MAX_LIST];
    double score;          /* geometric mean of gflops over the shapes */
} cand;

static int by_score(const void *a, const void *b)
{
    const cand *x = *(const cand *const *)a, *y = *(const cand *const *)b;
    return (x->score < y->score) - (x->score > y->score);
}

static void add_cand(cand *c, int *n, const attn_variant *v, int bq, int bkv, attn_isa level)
{
    attn_config cfg = {.num_threads = 1, .isa = level, .block_q = bq, .block_kv = bkv, .kernels = v->name};
    char what[96];
    snprintf(what, sizeof what, "--tune: %s, block_q %d, block_kv %d", v->name, bq, bkv);
    memset(&c[*n], 0, sizeof c[*n]);
    c[*n].v = v, c[*n].bq = bq, c[*n].bkv = bkv;
    c[*n].ctx = bench_make_ctx(&cfg, what);
    (*n)++;
}

/* One timed rep of candidate c on shape si: inner calls, seconds per call. */
static double time_rep(const cand *c, const bench_job *jobs, int si, long inner)
{
    bench_job j = jobs[si];
    j.ctx = c->ctx;
    double t0 = bench_now_s();
    for (long i = 0; i < inner; i++)
        if (bench_call_once(&j) != ATTN_OK) {
            fprintf(stderr, "%s: --tune: attn_sdpa failed (%s, %dx%d, %s)\n", BENCH_PROG, c->v->name, c->bq, c->bkv,
                    j.s->name);
            exit(1);
        }
    return (bench_now_s() - t0) / (double)inner;
}

int bench_tune_main(attn_isa auto_level)
{
    const attn_isa level = bench_opt.isa_req[0].isa == ATTN_ISA_AUTO ? auto_level : bench_opt.isa_req[0].isa;
    const attn_variant *dflt = attn_variant_pick(level);
    if (!dflt) {
        char isas[64];
        bench_isa_list(isas, sizeof isas);
        fprintf(stderr, "%s: --tune --isa %s: this CPU and build do not run it (they run: %s)\n", BENCH_PROG,
                attn_isa_name(level), isas);
        return 2;
    }
    const int reps = bench_opt.reps_given ? bench_opt.reps : TUNE_REPS, ns = bench_opt.n_tune_shapes;

    /* Candidates: each distinct table of the level x the grid, and the default if the grid misses it. */
    static cand cands[MAX_CANDS];
    int nc = 0, n_tables = 0;
    cand *def = NULL;
    for (size_t i = 0; attn_variant_at(i); i++) {
        const attn_variant *v = attn_variant_at(i);
        int dup = 0;
        for (size_t j = 0; j < i; j++)
            dup |= attn_variant_at(j)->level == level && attn_variant_at(j)->kern == v->kern;
        if (v->level != level || dup || nc + 16 > MAX_CANDS)
            continue;
        n_tables++;
        for (size_t a = 0; a < sizeof grid_q / sizeof grid_q[0]; a++)
            for (size_t b = 0; b < sizeof grid_kv / sizeof grid_kv[0]; b++)
                add_cand(cands, &nc, v, grid_q[a], grid_kv[b], level);
    }
    for (int i = 0; i < nc; i++)
        if (cands[i].v->kern == dflt->kern && cands[i].bq == dflt->block_q && cands[i].bkv == dflt->block_kv)
            def = &cands[i];
    if (!def) {
        add_cand(cands, &nc, dflt, dflt->block_q, dflt->block_kv, level);
        def = &cands[nc - 1];
    }

    /* Inputs per shape, uniform in [-1, 1), in the shape's dtype (P2-bf16: bf16 with bf16 math); every shape runs
     * attn_sdpa, decode-length ones on dense tensors. */
    bench_job jobs[MAX_LIST];
    double flops[MAX_LIST];
    static bench_inputs bufs[MAX_LIST];
    for (int s = 0; s < ns; s++) {
        const bench_shape *sh = &bench_opt.tune_shapes[s];
        bench_shape dense = *sh;
        dense.sdpa = 1; /* no fp32 copies kept for a cache */
        if (!bench_inputs_make(&dense, &bufs[s])) {
            fprintf(stderr, "%s: --tune: shape %s: out of memory\n", BENCH_PROG, sh->name);
            return 1;
        }
        jobs[s] = (bench_job){.s = sh, .dtype = sh->dtype, .math = sh->math, .q = bufs[s].q, .k = bufs[s].k,
                              .v = bufs[s].v, .out = bufs[s].out};
        flops[s] = 4.0 * (double)sh->h * (double)sh->d * bench_unmasked_pairs(sh);
    }
    for (int c = 0; c < nc; c++)
        if (!(cands[c].t = malloc(sizeof(double) * (size_t)(ns * reps)))) {
            fprintf(stderr, "%s: --tune: out of memory\n", BENCH_PROG);
            return 1;
        }

    /* %peak: of the bf16 dot peak when every tune shape is math bf16 on avx512bf16 (vdpbf16ps), else of the fp32 FMA
     * peak (avx512's for the levels above it). */
    int all_dot = level == ATTN_ISA_AVX512_BF16;
    for (int s = 0; s < ns; s++)
        all_dot &= bench_opt.tune_shapes[s].math == ATTN_MATH_BF16;
    const double peak = all_dot ? bench_dot_peak1() : bench_peak1(level);
    bench_progress_clear();
    fprintf(bench_hout, "\ntune       level %s: %d register blocking(s) x %zu block_q x %zu block_kv = %d candidates, "
                        "1 thread; %d rep(s) per shape\n           default %s %dx%d (attn_variant_pick); shapes",
            attn_isa_name(level), n_tables, sizeof grid_q / sizeof grid_q[0], sizeof grid_kv / sizeof grid_kv[0], nc,
            reps, dflt->name, dflt->block_q, dflt->block_kv);
    for (int s = 0; s < ns; s++)
        fprintf(bench_hout, "%s%s", s ? "," : " ", bench_opt.tune_shapes[s].name);
    if (peak > 0)
        fprintf(bench_hout, "; %s %s peak (1 thread) %.1f GFLOP/s\n", attn_isa_name(level),
                all_dot ? "bf16 dot" : "fp32 FMA", peak);
    else
        fprintf(bench_hout, "; peak not measured\n");
    fflush(bench_hout);

    /* Warm-up round (also sets each candidate's calls per rep), then the timed rounds: every candidate in turn. */
    for (int s = 0; s < ns; s++)
        for (int c = 0; c < nc; c++) {
            bench_progress_minor("warm-up: %s, candidate %d/%d", bench_opt.tune_shapes[s].name, c + 1, nc);
            double once = time_rep(&cands[c], jobs, s, 1);
            cands[c].inner[s] = once > 0 && once < MIN_REP_S ? (long)ceil(MIN_REP_S / once) : 1;
        }
    for (int r = 0; r < reps; r++)
        for (int s = 0; s < ns; s++) {
            bench_progress("rep %d/%d, %s: %d candidates", r + 1, reps, bench_opt.tune_shapes[s].name, nc);
            for (int c = 0; c < nc; c++)
                cands[c].t[s * reps + r] = time_rep(&cands[c], jobs, s, cands[c].inner[s]);
        }
    bench_progress_clear();

    cand *order[MAX_CANDS];
    for (int c = 0; c < nc; c++) {
        double logsum = 0;
        for (int s = 0; s < ns; s++) {
            cands[c].gflops[s] = flops[s] / bench_median(cands[c].t + s * reps, reps) / 1e9;
            logsum += log(cands[c].gflops[s]);
        }
        cands[c].score = exp(logsum / ns);
        order[c] = &cands[c];
    }
    qsort(order, (size_t)nc, sizeof order[0], by_score);

    fprintf(bench_hout, "\n%-4s %-26s %7s %8s", "rank", "table", "block_q", "block_kv");
    for (int s = 0; s < ns; s++)
        fprintf(bench_hout, " %9s", bench_opt.tune_shapes[s].name);
    fprintf(bench_hout, " %9s %6s %7s\n", "geomean", "%peak", "gain");
    for (int i = 0; i < nc; i++) {
        const cand *c = order[i];
        if (i >= TUNE_TOP && c != def)
            continue;
        fprintf(bench_hout, "%-4d %-26s %7d %8d", i + 1, c->v->kern->table, c->bq, c->bkv);
        for (int s = 0; s < ns; s++)
            fprintf(bench_hout, " %9.4g", c->gflops[s]);
        char pct[16] = "-";
        if (peak > 0)
            snprintf(pct, sizeof pct, "%.1f", 100 * c->score / peak);
        fprintf(bench_hout, " %9.4g %6s %+6.1f%%%s\n", c->score, pct, 100 * (c->score / def->score - 1),
                c == def ? "  <- default" : "");
    }
    fprintf(bench_hout, "GFLOP/s per shape (4*heads*head_dim*unmasked pairs / median), geomean over the shapes; gain = "
                        "over the default.\n");

    /* The registry line: the variant this CPU gets now, with the winner's table and blocks. */
    const cand *best = order[0];
    /* A generic pick has no CPU test to hang the result on: the line is then a new variant, NAME to fill in. */
    char lvl[32], model[128], name[32];
    snprintf(lvl, sizeof lvl, "%s", level == ATTN_ISA_AVX512_BF16 ? "avx512_bf16" : attn_isa_name(level));
    for (char *p = lvl; *p; p++) /* the enum constant: ATTN_ISA_AVX512, ATTN_ISA_AVX512_BF16 */
        *p = (char)toupper((unsigned char)*p);
    snprintf(name, sizeof name, "%s", dflt->prefer ? strchr(dflt->name, '/') + 1 : "NAME");
    bench_cpu_model(model, sizeof model);
    if (dflt->prefer)
        fprintf(bench_hout, "\nregistry line for simd/variants.c (replaces the %s line):\n", dflt->name);
    else
        fprintf(bench_hout, "\nregistry line for simd/variants.c (this CPU gets %s: add a variant NAME with its own "
                            "CPU test attn_is_NAME rather than change the generic line):\n", dflt->name);
    fprintf(bench_hout,
            "    {ATTN_ISA_%s, \"%s/%s\", &%s, attn_is_%s, %d, %d, ATTN_SPLIT,\n     \"attn-bench --tune on %s, 1 "
            "thread: %.4g GFLOP/s geomean, %+.1f%% over %dx%d\"},\n",
            lvl, attn_isa_name(level), name, best->v->kern->table, name, best->bq, best->bkv, model, best->score,
            100 * (best->score / def->score - 1), dflt->block_q, dflt->block_kv);
    if (best == def)
        fprintf(bench_hout, "(the default is already the best candidate: nothing to change)\n");
    fflush(bench_hout);

    for (int c = 0; c < nc; c++) {
        attn_ctx_destroy(cands[c].ctx);
        free(cands[c].t);
    }
    for (int s = 0; s < ns; s++)
        bench_inputs_free(&bufs[s]);
    return 0;
}
