/* attn-bench runs: contexts (and what to say when the library rejects the environment), timing one call, the rows of
 * attention and layer shapes. Baseline flags only. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_int.h"
#include "half.h" /* attn_f32_to_bf16 / attn_f32_to_f16: the library's own rounding to nearest even */

/* One fp32 row already timed: what a row with a dtype or math of its own is compared with (vs_f32). */
struct bench_result {
    char shape[96]; /* the row's shape name: "P2", or "L1/proj" for a layer's rows */
    int si, ti;
    double median_s;
    int timeshared;
};

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int bench_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int bench_num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void *bench_alloc64(size_t bytes)
{
    size_t b = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, b ? b : 64);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1): 24 random bits, exactly representable. */
void bench_fill_uniform(float *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((int64_t)(splitmix64(&s) >> 40) - (1 << 23)) * (1.0f / (1 << 23));
}

/* attn_ctx_create(cfg) failed with EINVAL or ENOTSUP. The config is one the bench built, so the environment (or an
 * ISA or variant this CPU lacks) is the cause: the library's own parser knows which, so run it again with
 * ATTN_VERBOSE=1 to let it say so, then list the accepted values and exit 2. */
static _Noreturn void env_failure(const attn_config *cfg, attn_status st, const char *what)
{
    const char *verbose = getenv("ATTN_VERBOSE");
    char old[64], isas[64], levels[128] = "", names[512] = "";
    snprintf(old, sizeof old, "%s", verbose ? verbose : "");
    fprintf(stderr, "%s: attn_ctx_create (%s): %s; with ATTN_VERBOSE=1 the library says:\n", BENCH_PROG, what,
            attn_strerror(st));
    setenv("ATTN_VERBOSE", "1", 1);
    attn_ctx *c = NULL;
    if (attn_ctx_create(&c, cfg) == ATTN_OK) { /* ATTN_VERBOSE=1 fixed it: ATTN_VERBOSE itself was the bad one */
        attn_ctx_destroy(c);
        fprintf(stderr, "%s: ATTN_VERBOSE='%s' is invalid\n", BENCH_PROG, old);
    }
    bench_isa_list(isas, sizeof isas);
    for (int i = 0; i < 32 && strcmp(attn_isa_name((attn_isa)i), "unknown"); i++) { /* the library's ISA names */
        size_t l = strlen(levels);
        snprintf(levels + l, sizeof levels - l, "%s%s", l ? "|" : "", attn_isa_name((attn_isa)i));
    }
    for (size_t i = 0; attn_kernels_name(i); i++) {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", l ? "|" : "", attn_kernels_name(i));
    }
    fprintf(stderr,
            "%s: accepted: ATTN_NUM_THREADS 1..%d, ATTN_ISA %s (this CPU runs %s), ATTN_KERNELS %s, "
            "ATTN_BLOCK_Q/ATTN_BLOCK_KV 1..%d, ATTN_VERBOSE 0|1\n",
            BENCH_PROG, ATTN_MAX_THREADS, levels, isas, names, ATTN_MAX_BLOCK);
    exit(2);
}

attn_ctx *bench_default_ctx(void)
{
    static const attn_config dflt; /* all zero: every setting from the environment, else the library default */
    return bench_make_ctx(&dflt, "default context");
}

attn_ctx *bench_make_ctx(const attn_config *cfg, const char *what)
{
    attn_ctx *ctx = NULL;
    attn_status st = attn_ctx_create(&ctx, cfg);
    if (st == ATTN_OK)
        return ctx;
    if (st == ATTN_ENOTSUP && cfg->isa != ATTN_ISA_AUTO) { /* the ISA asked for, not the environment */
        char isas[64];
        bench_isa_list(isas, sizeof isas);
        fprintf(stderr, "%s: %s: attn_ctx_create: %s (this CPU and build run: %s)\n", BENCH_PROG, what,
                attn_strerror(st), isas);
        exit(2);
    }
    if (st == ATTN_EINVAL || st == ATTN_ENOTSUP)
        env_failure(cfg, st, what);
    fprintf(stderr, "%s: attn_ctx_create (%s): %s\n", BENCH_PROG, what, attn_strerror(st));
    exit(1);
}

attn_status bench_call_once(const bench_job *j)
{
    if (j->mode) {
        const attn_layer *w = j->layer;
        const size_t n = j->s->q, qw = w->n_heads * w->head_dim, kw = w->n_kv_heads * w->head_dim;
        attn_mask mask = j->s->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
        if (j->mode == 2)
            return attn_self_attention(j->ctx, w, j->x, n, mask, j->y, NULL);
        attn_status st;
        const attn_dtype t = w->w_dtype;
        const attn_math m = w->math;
        if ((st = attn_linear_typed(j->ctx, j->x, n, w->d_model, w->wq, t, w->bq, qw, j->pq, m)) != ATTN_OK ||
            (st = attn_linear_typed(j->ctx, j->x, n, w->d_model, w->wk, t, w->bk, kw, j->pk, m)) != ATTN_OK ||
            (st = attn_linear_typed(j->ctx, j->x, n, w->d_model, w->wv, t, w->bv, kw, j->pv, m)) != ATTN_OK)
            return st;
        return attn_linear_typed(j->ctx, j->pq, n, qw, w->wo, t, w->bo, w->d_model, j->y, m);
    }
    if (j->pool)
        return attn_batch_attend(j->ctx, j->pool, j->batch, (const float *)j->q, (float *)j->out, NULL);
    if (j->caches) { /* the pool shapes' baseline: one attn_decode per sequence, as a server without a pool */
        const size_t row = j->s->h * j->s->d;
        for (size_t i = 0; i < j->n_caches; i++) {
            attn_status st = attn_decode(j->ctx, j->caches[i], (const float *)j->q + i * row, 1, j->s->h,
                                         ATTN_MASK_CAUSAL, (float *)j->out + i * row);
            if (st != ATTN_OK)
                return st;
        }
        return ATTN_OK;
    }
    if (j->cache)
        return attn_decode(j->ctx, j->cache, (const float *)j->q, j->s->q, j->s->h,
                           j->s->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE, (float *)j->out);
    attn_sdpa_desc d;
    memset(&d, 0, sizeof d);
    d.batch = 1;
    d.n_heads = j->s->h;
    d.n_kv_heads = j->s->hkv;
    d.q_len = j->s->q;
    d.kv_len = j->s->kv;
    d.head_dim = j->s->d;
    d.v_dim = j->s->d;
    d.layout = ATTN_LAYOUT_BHSD;
    d.mask = j->s->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
    d.q_dtype = d.kv_dtype = d.out_dtype = j->s->dtype;
    d.math = j->s->math;
    static float per_head[2][4096]; /* ALiBi slopes 2^-(h+1) and sinks 0.5, the same every call */
    if (j->s->mods & (BENCH_MOD_ALIBI | BENCH_MOD_SINKS) && per_head[1][0] == 0.0f)
        for (size_t h = 0; h < 4096; h++)
            per_head[0][h] = ldexpf(1.0f, -(int)(h % 8) - 1), per_head[1][h] = 0.5f;
    if (j->s->mods & BENCH_MOD_SOFTCAP)
        d.softcap = 30.0f;
    if (j->s->mods & BENCH_MOD_ALIBI)
        d.alibi_slopes = per_head[0];
    if (j->s->mods & BENCH_MOD_SINKS)
        d.sinks = per_head[1];
    if (j->s->mods & BENCH_MOD_BIAS) {
        d.bias = j->bias;
        d.bias_stride[2] = j->s->kv; /* one [q][kv] matrix for every batch and head, as a PyTorch attn_mask */
    }
    return attn_sdpa(j->ctx, &d, j->q, j->k, j->v, j->out, NULL);
}

int bench_uses_cache(const bench_shape *s)
{
    return !s->dm && !s->pool && s->q <= DECODE_MAX_Q && !s->sdpa;
}

static size_t dtype_size(attn_dtype t)
{
    return t == ATTN_F32 ? 4 : t == ATTN_I8 ? 1 : 2;
}

/* Bytes of keys and values stored for `tokens` tokens; I8 adds one fp32 scale per (token, KV head) row of K and V. */
static double kv_bytes_of(double tokens, size_t hkv, size_t d, attn_dtype t)
{
    return tokens * (double)hkv * 2.0 * ((double)d * (double)dtype_size(t) + (t == ATTN_I8 ? 4.0 : 0.0));
}

void bench_inputs_free(bench_inputs *in)
{
    if (in->kf != in->k)
        free(in->kf);
    if (in->vf != in->v)
        free(in->vf);
    free(in->q), free(in->k), free(in->v), free(in->out), free(in->bias);
    memset(in, 0, sizeof *in);
}

/* fp32 src into a new buffer of dtype t (rounded to nearest even as the library rounds); src itself for F32. */
static void *convert(float *src, size_t n, attn_dtype t)
{
    if (t == ATTN_F32)
        return src;
    uint16_t *h = bench_alloc64(n * 2);
    if (h)
        for (size_t i = 0; i < n; i++)
            h[i] = t == ATTN_BF16 ? attn_f32_to_bf16(src[i]) : attn_f32_to_f16(src[i]);
    return h;
}

int bench_inputs_make(const bench_shape *s, bench_inputs *in)
{
    const size_t qn = s->h * s->q * s->d, kn = s->hkv * s->kv * s->d, es = dtype_size(s->dtype);
    memset(in, 0, sizeof *in);
    float *q = bench_alloc64(qn * 4), *k = bench_alloc64(kn * 4), *v = bench_alloc64(kn * 4);
    in->out = bench_alloc64(qn * es);
    if (!q || !k || !v || !in->out) {
        free(q), free(k), free(v), free(in->out);
        in->out = NULL;
        return 0;
    }
    /* The same fp32 values for every dtype: a bf16 row's inputs are its fp32 row's, rounded. */
    bench_fill_uniform(q, qn, bench_opt.seed * 4 + 0);
    bench_fill_uniform(k, kn, bench_opt.seed * 4 + 1);
    bench_fill_uniform(v, kn, bench_opt.seed * 4 + 2);
    memset(in->out, 0, qn * es);
    in->q = convert(q, qn, s->dtype), in->k = convert(k, kn, s->dtype), in->v = convert(v, kn, s->dtype);
    in->kf = k, in->vf = v;
    if (in->q != q)
        free(q);
    if (!in->q || !in->k || !in->v) {
        bench_inputs_free(in);
        return 0;
    }
    if (s->mods & BENCH_MOD_BIAS) {
        if (!(in->bias = bench_alloc64(s->q * s->kv * 4))) {
            bench_inputs_free(in);
            return 0;
        }
        bench_fill_uniform(in->bias, s->q * s->kv, bench_opt.seed * 4 + 3);
    }
    if (!bench_uses_cache(s)) { /* only a cache appends the fp32 rows */
        if (in->kf != in->k)
            free(in->kf);
        if (in->vf != in->v)
            free(in->vf);
        in->kf = in->vf = NULL;
    }
    return 1;
}

typedef struct timing {
    double median_s, best_s;
    int reps;
} timing;

/* Untimed work before each warm-up call and each rep (S2: put the prefill sequences back to their start). */
typedef struct bench_prep {
    attn_status (*fn)(void *arg);
    void *arg;
} bench_prep;

#define MAX_JOBS 2 /* jobs timed together: a pool row and its attn_decode loop */

/* Times n jobs, interleaved rep by rep (job 0's calls, then job 1's), so that drift or a noisy neighbour hits them
 * alike. The last warm-up calibrates each job: calls under MIN_REP_S repeat inside a rep; --max-seconds caps the
 * reps at n x that budget. prep (NULL: none) runs untimed before every warm-up and every rep. */
static attn_status time_jobs(const bench_job *jobs, int n, const bench_prep *prep, const char *label, timing *t)
{
    attn_status st;
    double call_s[MAX_JOBS] = {0}, rep_s = 0;
    for (int w = 0; w < bench_opt.warmup; w++) {
        bench_progress_minor("%s: warm-up %d/%d", label, w + 1, bench_opt.warmup);
        if (prep && (st = prep->fn(prep->arg)) != ATTN_OK)
            return st;
        int slow = 0;
        for (int k = 0; k < n; k++) {
            double t0 = bench_now_s();
            if ((st = bench_call_once(&jobs[k])) != ATTN_OK)
                return st;
            call_s[k] = bench_now_s() - t0;
            slow |= bench_opt.max_seconds > 0 && call_s[k] > bench_opt.max_seconds;
        }
        if (slow)
            break;
    }
    long inner[MAX_JOBS];
    int reps = bench_opt.reps;
    for (int k = 0; k < n; k++) {
        inner[k] = 1;
        if (call_s[k] > 0 && call_s[k] < MIN_REP_S) {
            double c = ceil(MIN_REP_S / call_s[k]);
            inner[k] = c > 1e7 ? 10000000L : (long)c;
        }
        rep_s += call_s[k] * (double)inner[k];
    }
    if (rep_s > 0 && bench_opt.max_seconds > 0 && rep_s * reps > bench_opt.max_seconds * n) {
        double r = floor(bench_opt.max_seconds * n / rep_s);
        reps = r < 1 ? 1 : (int)r;
    }
    double *ts = malloc(sizeof(double) * (size_t)reps * (size_t)n);
    if (!ts)
        return ATTN_ENOMEM;
    for (int r = 0; r < reps; r++) {
        bench_progress_minor("%s: rep %d/%d", label, r + 1, reps);
        if (prep && (st = prep->fn(prep->arg)) != ATTN_OK) {
            free(ts);
            return st;
        }
        for (int k = 0; k < n; k++) {
            double t0 = bench_now_s();
            for (long i = 0; i < inner[k]; i++)
                if ((st = bench_call_once(&jobs[k])) != ATTN_OK) {
                    free(ts);
                    return st;
                }
            ts[k * reps + r] = (bench_now_s() - t0) / (double)inner[k];
        }
    }
    for (int k = 0; k < n; k++) {
        double *v = ts + k * reps, best = v[0];
        for (int r = 1; r < reps; r++)
            best = v[r] < best ? v[r] : best;
        t[k].best_s = best;
        t[k].median_s = bench_median(v, reps);
        t[k].reps = reps;
    }
    free(ts);
    return ATTN_OK;
}

static attn_status time_job(const bench_job *j, const char *label, timing *t)
{
    return time_jobs(j, 1, NULL, label, t);
}

/* Unmasked (query, key) pairs of one head; causal is bottom-right aligned. */
double bench_unmasked_pairs(const bench_shape *s)
{
    if (!s->causal)
        return (double)s->q * (double)s->kv;
    double n = 0;
    for (size_t i = 0; i < s->q; i++) {
        double seen = (double)i + (double)s->kv - (double)s->q + 1;  /* keys 0 .. i + kv - q */
        n += seen < 0 ? 0 : seen > (double)s->kv ? (double)s->kv : seen;
    }
    return n;
}


/* Probes around one row and fills its time-sharing fields. */
static void probe_row(int T, bench_probe_result *pb, bench_row *r, int before, const char *label)
{
    if (bench_opt.probe_ms <= 0)
        return;
    bench_progress_minor("%s: time-sharing probe", label);
    if (before) {
        bench_run_probe(T, pb);
        return;
    }
    bench_probe_result pa;
    bench_run_probe(T, &pa);
    r->probed = 1;
    r->desched = pb->max_frac > pa.max_frac ? pb->max_frac : pa.max_frac;
    r->corun = pb->corun < pa.corun ? pb->corun : pa.corun;
    r->timeshared = pb->shared || pa.shared;
}

/* What every row has: its kernel set, thread count, timing, and GFLOP/s against the peak of what it runs: the
 * fp32 FMA peak (the machine's, or its level's for a variant asked for by name), except that ATTN_MATH_BF16 on the
 * avx512bf16 level runs vdpbf16ps and is rated against the bf16 dot peak. Levels above that (amx) have no loop
 * measuring their bf16 peak yet: their MATH_BF16 rows get none rather than a ceiling they can pass. */
static void fill_row(bench_row *r, bench_plan *p, int si, int ti, const char *shape, const char *dtype,
                     attn_math math, const timing *tm, double flops)
{
    r->shape = shape;
    r->isa = attn_isa_name(p->isas[si]);
    r->kernels = p->kernels[si];
    r->dtype = dtype;
    r->math = bench_math_name(math);
    r->threads = p->threads[ti];
    r->reps = tm->reps;
    r->median_ms = tm->median_s * 1e3;
    r->best_ms = tm->best_s * 1e3;
    r->gflops = flops / tm->median_s / 1e9;
    const int bf16 = math == ATTN_MATH_BF16;
    if (bf16 && p->isas[si] == ATTN_ISA_AVX512_BF16) {
        r->peak = p->dot_peak[ti];
        r->peak_kind = "bf16dot";
        p->any_dot = 1;
    } else if (bf16 && p->isas[si] > ATTN_ISA_AVX512_BF16) {
        r->peak = 0;
        r->peak_kind = NULL;
        p->any_nopeak = 1;
    } else {
        r->peak = p->peak[si][ti];
        r->peak_kind = p->by_variant[si] ? "fma-level" : "fma";
        p->any_bf16_fma |= bf16;
    }
    r->has_peak = r->peak > 0;
    r->peak_pct = r->has_peak ? 100 * r->gflops / r->peak : 0;
}

/* roofline_pct: the time the row would take at the ceilings measured for its thread count, max(flops / peak,
 * bytes / read bandwidth), as a share of its median. bytes: what the call must read and write at least (K and V,
 * Q and out, ...). Left empty unless both ceilings were measured: no made-up ceiling. */
static void fill_roof(bench_row *r, const bench_plan *p, int ti, double flops, double bytes)
{
    if (!r->has_peak || !p->have_bw || !(p->bw_best[ti] > 0))
        return;
    const double t_flops = flops / (r->peak * 1e9), t_bytes = bytes / (p->bw_best[ti] * 1e9);
    r->has_roof = 1;
    r->roof_pct = 100 * (t_flops > t_bytes ? t_flops : t_bytes) / (r->median_ms * 1e-3);
}

/* vs_f32: an fp32 row is kept; a row with a base looks up the base's row of the same set and thread count. name and
 * base: the row's shape name and its base's ("" for none): a shape's, or for a layer's rows "L1/proj" and the like. */
static void record_or_compare(bench_plan *p, bench_row *r, const char *name, const char *base, int si, int ti,
                              int f32_row, double median_s)
{
    /* after probe_row: r->timeshared is this row's */
    if (f32_row && !base[0]) {
        if (p->n_res == p->cap_res) {
            int cap = p->cap_res ? 2 * p->cap_res : 64;
            struct bench_result *n = realloc(p->res, sizeof *n * (size_t)cap);
            if (!n)
                return; /* only the vs_f32 column of later rows is lost */
            p->res = n, p->cap_res = cap;
        }
        struct bench_result *e = &p->res[p->n_res++];
        snprintf(e->shape, sizeof e->shape, "%s", name);
        e->si = si, e->ti = ti, e->median_s = median_s, e->timeshared = r->timeshared;
        return;
    }
    if (!base[0])
        return;
    r->has_base = 1;
    for (int i = p->n_res - 1; i >= 0; i--)
        if (p->res[i].si == si && p->res[i].ti == ti && !strcmp(p->res[i].shape, base)) {
            r->has_ratio = 1;
            r->ratio = p->res[i].median_s / median_s;
            r->base_shared = p->res[i].timeshared;
            p->any_base_shared |= r->base_shared;
            return;
        }
    p->any_ratio_missing = 1;
}

/* A layer shape's two rows per kernel set and thread count: NAME/proj, the four projections through
 * attn_linear_typed (Q, K, V from x, the output projection from a [N][H*hd] input), and NAME/layer, the whole
 * attn_self_attention, both with the shape's weight dtype and math (the -bf16 twins: BF16 weights, ATTN_MATH_BF16,
 * compared with NAME/proj and NAME/layer of their fp32 base in vs_f32). Weights and inputs uniform in [-1, 1)
 * scaled by 1/sqrt(fan_in), biases included; a twin's weights are the same values rounded to bf16 (untimed, once).
 * Returns 1 if anything failed. */
static int run_layer_shape(const bench_shape *s, bench_plan *p)
{
    const size_t n = s->q, dm = s->dm, qw = s->h * s->d, kw = s->hkv * s->d;
    float *x = bench_alloc64(n * dm * 4), *wq = bench_alloc64(qw * dm * 4), *wk = bench_alloc64(kw * dm * 4),
          *wv = bench_alloc64(kw * dm * 4), *wo = bench_alloc64(dm * qw * 4),
          *b = bench_alloc64((qw + 2 * kw + dm) * 4), *pq = bench_alloc64(n * qw * 4), *pk = bench_alloc64(n * kw * 4),
          *pv = bench_alloc64(n * kw * 4), *y = bench_alloc64(n * dm * 4);
    int failed = 0;
    if (!x || !wq || !wk || !wv || !wo || !b || !pq || !pk || !pv || !y) {
        bench_progress_clear();
        fprintf(stderr, "%s: shape %s: out of memory; skipped\n", BENCH_PROG, s->name);
        failed = 1;
        p->row_no += 2 * p->n_sets * p->n_thr;
        goto done;
    }
    bench_progress_minor("%s: filling inputs", s->name);
    bench_fill_uniform(x, n * dm, bench_opt.seed * 8 + 0);
    bench_fill_uniform(wq, qw * dm, bench_opt.seed * 8 + 1);
    bench_fill_uniform(wk, kw * dm, bench_opt.seed * 8 + 2);
    bench_fill_uniform(wv, kw * dm, bench_opt.seed * 8 + 3);
    bench_fill_uniform(wo, dm * qw, bench_opt.seed * 8 + 4);
    bench_fill_uniform(b, qw + 2 * kw + dm, bench_opt.seed * 8 + 5);
    {
        const float fd = 1.0f / sqrtf((float)dm), fq = 1.0f / sqrtf((float)qw);
        for (size_t i = 0; i < qw * dm; i++)
            wq[i] *= fd, wo[i] *= fq;
        for (size_t i = 0; i < kw * dm; i++)
            wk[i] *= fd, wv[i] *= fd;
    }
    /* The weights in the shape's dtype (fp32: the arrays themselves). */
    void *tq = convert(wq, qw * dm, s->dtype), *tk = convert(wk, kw * dm, s->dtype),
         *tv = convert(wv, kw * dm, s->dtype), *to = convert(wo, dm * qw, s->dtype);
    if (!tq || !tk || !tv || !to) {
        bench_progress_clear();
        fprintf(stderr, "%s: shape %s: out of memory; skipped\n", BENCH_PROG, s->name);
        failed = 1;
        p->row_no += 2 * p->n_sets * p->n_thr;
        goto done_w;
    }
    attn_layer w;
    memset(&w, 0, sizeof w);
    w.d_model = dm, w.n_heads = s->h, w.n_kv_heads = s->hkv, w.head_dim = s->d;
    w.wq = tq, w.wk = tk, w.wv = tv, w.wo = to;
    w.bq = b, w.bk = b + qw, w.bv = b + qw + kw, w.bo = b + qw + 2 * kw;
    w.w_dtype = s->dtype;
    w.math = s->math;
    bench_shape attn_part = *s; /* the attention inside the layer, for its FLOPs */
    const double proj_flops = 2.0 * (double)n * (double)dm * (double)(2 * qw + 2 * kw);
    const double layer_flops = proj_flops + 4.0 * (double)s->h * (double)s->d * bench_unmasked_pairs(&attn_part);
    /* Least traffic: x, the weights and biases in, y out; the projections also write q, k, v and read q back. */
    const double w_bytes = (double)(2 * qw + 2 * kw) * (double)dm * (double)dtype_size(s->dtype) +
                           (double)(qw + 2 * kw + dm) * 4, io_bytes = 2.0 * (double)n * (double)dm * 4;
    const double proj_bytes = w_bytes + io_bytes + (double)n * (double)(2 * qw + 2 * kw) * 4,
                 layer_bytes = w_bytes + io_bytes;
    for (int mode = 1; mode <= 2; mode++) {
        char name[96], base[96] = "";
        snprintf(name, sizeof name, "%s/%s", s->name, mode == 1 ? "proj" : "layer");
        if (s->base[0])
            snprintf(base, sizeof base, "%s/%s", s->base, mode == 1 ? "proj" : "layer");
        for (int si = 0; si < p->n_sets; si++)
            for (int ti = 0; ti < p->n_thr; ti++) {
                const int T = p->threads[ti];
                char label[160];
                snprintf(label, sizeof label, "[%d/%d] %s %s T=%d", ++p->row_no, p->n_rows, name, p->kernels[si],
                         T);
                bench_progress("%s", label);
                bench_job j;
                memset(&j, 0, sizeof j);
                j.s = s, j.ctx = p->ctxs[si][ti], j.dtype = ATTN_F32, j.mode = mode, j.layer = &w, j.x = x;
                j.pq = pq, j.pk = pk, j.pv = pv, j.y = y;
                bench_row r;
                memset(&r, 0, sizeof r);
                bench_probe_result pb;
                probe_row(T, &pb, &r, 1, label);
                timing tm;
                attn_status st = time_job(&j, label, &tm);
                if (st != ATTN_OK) {
                    bench_progress_clear();
                    fprintf(stderr, "%s: shape %s, --isa %s, --threads %d: %s: %s\n", BENCH_PROG, name,
                            p->kernels[si], T, mode == 1 ? "attn_linear_typed" : "attn_self_attention",
                            attn_strerror(st));
                    failed = 1;
                    continue;
                }
                probe_row(T, &pb, &r, 0, label);
                p->any_shared |= r.timeshared;
                fill_row(&r, p, si, ti, name, bench_dtype_name(s->dtype), s->math, &tm,
                         mode == 1 ? proj_flops : layer_flops);
                fill_roof(&r, p, ti, mode == 1 ? proj_flops : layer_flops, mode == 1 ? proj_bytes : layer_bytes);
                record_or_compare(p, &r, name, base, si, ti, s->dtype == ATTN_F32 && s->math == ATTN_MATH_F32,
                                  tm.median_s);
                bench_emit_row(&r);
            }
    }
done_w:
    if (tq != wq)
        free(tq);
    if (tk != wk)
        free(tk);
    if (tv != wv)
        free(tv);
    if (to != wo)
        free(to);
done:
    free(x), free(wq), free(wk), free(wv), free(wo), free(b), free(pq), free(pk), free(pv), free(y);
    return failed;
}

/* An attention shape's rows: attn_sdpa, or for decode shapes attn_decode from a KV cache of each --kv-dtype (skipped
 * with a note when this build lacks the dtype). Returns 1 if anything failed. */
static int run_attn_shape(const bench_shape *s, bench_plan *p)
{
    static int dtype_skipped[4]; /* per attn_dtype: said once, then skipped quietly */
    const int decode = s->q <= DECODE_MAX_Q, cached = bench_uses_cache(s), sets = p->n_sets * p->n_thr;
    const size_t qn = s->h * s->q * s->d, kn = s->hkv * s->kv * s->d;
    bench_inputs in;
    int failed = 0;
    bench_progress_minor("%s: filling inputs", s->name);
    if (!bench_inputs_make(s, &in)) {
        bench_progress_clear();
        fprintf(stderr, "%s: shape %s: out of memory (%.0f MiB); skipped\n", BENCH_PROG, s->name,
                (double)(2 * qn + 2 * kn) * 4 / (1 << 20));
        p->row_no += bench_shape_rows(s) * sets;
        return 1;
    }
    double flops = 4.0 * (double)s->h * (double)s->d * bench_unmasked_pairs(s);

    int n_dt = bench_shape_rows(s);
    for (int di = 0; di < n_dt; di++) {
        /* A cache shape's rows: one per --kv-dtype (or its own, D2-i8); an attn_sdpa shape's: its own dtype. */
        attn_dtype dt = cached ? (s->cache_dtype ? s->cache_dtype : bench_opt.dtypes[di]) : s->dtype;
        attn_kv_cache *cache = NULL;
        if (cached) {
            attn_status st = dtype_skipped[dt] ? ATTN_ENOTSUP
                                               : attn_kv_cache_create(&cache, s->hkv, s->d, s->kv, dt);
            const char *where = "attn_kv_cache_create";
            if (st == ATTN_OK) {
                bench_progress_minor("%s: appending %zu tokens to the %s KV cache", s->name, s->kv,
                                     bench_dtype_name(dt));
                st = attn_kv_cache_append(cache, in.kf, in.vf, s->kv);   /* k, v reused as [kv][hkv][d] */
                where = "attn_kv_cache_append";
            }
            if (st != ATTN_OK) {
                attn_kv_cache_destroy(cache);
                p->row_no += sets;
                if (st == ATTN_ENOTSUP) {
                    if (!dtype_skipped[dt]) {
                        bench_progress_clear();
                        fprintf(bench_hout, "skipped: kv-dtype %s not supported by this build (%s: %s)\n",
                                bench_dtype_name(dt), where, attn_strerror(st));
                    }
                    dtype_skipped[dt] = 1;
                } else {
                    bench_progress_clear();
                    fprintf(stderr, "%s: shape %s, --kv-dtype %s: %s: %s\n", BENCH_PROG, s->name,
                            bench_dtype_name(dt), where, attn_strerror(st));
                    failed = 1;
                }
                continue;
            }
        }
        double kv_bytes = kv_bytes_of((double)s->kv, s->hkv, s->d, dt);
        /* Least traffic: K and V once, q in and out back (in their dtype; cache rows: fp32), and the bias. */
        double min_bytes = kv_bytes + 2.0 * (double)qn * (double)dtype_size(cached ? ATTN_F32 : dt) +
                           (s->mods & BENCH_MOD_BIAS ? (double)s->q * (double)s->kv * 4 : 0);

        for (int si = 0; si < p->n_sets; si++)
            for (int ti = 0; ti < p->n_thr; ti++) {
                int T = p->threads[ti];
                char label[160];
                snprintf(label, sizeof label, "[%d/%d] %s %s T=%d %s%s", ++p->row_no, p->n_rows, s->name,
                         p->kernels[si], T, bench_dtype_name(dt), s->math == ATTN_MATH_BF16 ? " math bf16" : "");
                bench_progress("%s", label);
                bench_job j = {.s = s, .ctx = p->ctxs[si][ti], .dtype = dt, .math = s->math, .q = in.q, .k = in.k,
                               .v = in.v, .out = in.out, .cache = cache, .bias = in.bias};
                bench_row r;
                memset(&r, 0, sizeof r);
                bench_probe_result pb;
                probe_row(T, &pb, &r, 1, label);
                timing tm;
                attn_status st = time_job(&j, label, &tm);
                if (st != ATTN_OK) {
                    bench_progress_clear();
                    fprintf(stderr, "%s: shape %s, --isa %s, --threads %d, --kv-dtype %s: %s: %s\n", BENCH_PROG,
                            s->name, p->kernels[si], T, bench_dtype_name(dt), cache ? "attn_decode" : "attn_sdpa",
                            attn_strerror(st));
                    failed = 1;
                    continue;
                }
                probe_row(T, &pb, &r, 0, label);
                p->any_shared |= r.timeshared;
                fill_row(&r, p, si, ti, s->name, bench_dtype_name(dt), s->math, &tm, flops);
                record_or_compare(p, &r, s->name, s->base, si, ti,
                                  dt == ATTN_F32 && s->math == ATTN_MATH_F32 && !s->mods, tm.median_s);
                r.is_decode = decode;
                r.gbps = kv_bytes / tm.median_s / 1e9;
                r.has_bw = p->have_bw && p->bw_best[ti] > 0;
                r.bw_pct = r.has_bw ? 100 * r.gbps / p->bw_best[ti] : 0;
                fill_roof(&r, p, ti, flops, min_bytes);
                bench_emit_row(&r);
            }
        attn_kv_cache_destroy(cache);
    }
    bench_inputs_free(&in);
    return failed;
}

/* A serving shape's sequences (DESIGN.md §5), set up once per shape and shared by every kernel set and thread count:
 * S1 and S3 in a pool and, with the same contents, one attn_kv_cache each (the baseline loop); S2 the same pool as S1
 * plus n_pre sequences that prep refills with PREFILL_TOKENS each before every rep. */
#define S2_PREFILL_SEQS 4
#define PREFILL_TOKENS 512

typedef struct pool_bench {
    attn_kv_pool *pool;
    size_t n_dec, n_pre;       /* decode sequences (ids[0..n_dec)), then the prefill ones */
    uint32_t *ids;
    size_t *q_lens;            /* S2: 1 per decode, PREFILL_TOKENS per prefill sequence; else NULL */
    attn_kv_cache **caches;    /* S1, S3: [n_dec] */
    float *q, *out;            /* [query rows][heads][d] */
    float *pre_k, *pre_v;      /* S2: [n_pre][PREFILL_TOKENS][hkv][d] */
    size_t hkv_d;              /* floats per token of K (and of V) */
    double tokens;             /* keys and values held by the sequences a call reads */
    double q_rows, flops;
} pool_bench;

/* The length of decode sequence i: 256 * 2^(i mod 7) for S1 and S2, 32 * 2^(i mod 3) for S3. */
static size_t pool_seq_len(int kind, size_t i)
{
    return kind == BENCH_POOL_S3 ? (size_t)32 << (i % 3) : (size_t)256 << (i % 7);
}

/* S2's prep: the prefill sequences back to empty, then their chunk appended, so that every rep is the same call. */
static attn_status pool_refill(void *arg)
{
    pool_bench *b = arg;
    attn_status st = ATTN_OK;
    for (size_t i = 0; i < b->n_pre && st == ATTN_OK; i++) {
        const uint32_t id = b->ids[b->n_dec + i];
        const size_t off = i * PREFILL_TOKENS * b->hkv_d;
        st = attn_seq_truncate(b->pool, id, 0);
        if (st == ATTN_OK)
            st = attn_seq_append(b->pool, id, b->pre_k + off, b->pre_v + off, PREFILL_TOKENS);
    }
    return st;
}

static void pool_bench_free(pool_bench *b)
{
    for (size_t i = 0; b->caches && i < b->n_dec; i++)
        attn_kv_cache_destroy(b->caches[i]);
    attn_kv_pool_destroy(b->pool);
    free(b->ids), free(b->q_lens), free(b->caches), free(b->q), free(b->out), free(b->pre_k), free(b->pre_v);
    memset(b, 0, sizeof *b);
}

/* Fills the pool (and the caches) once: random K and V from the --seed PRNG, a stream per sequence. On failure says
 * which call failed in *what and frees everything. */
static attn_status pool_bench_make(const bench_shape *s, pool_bench *b, const char **what)
{
    const int kind = s->pool;
    memset(b, 0, sizeof *b);
    b->n_dec = kind == BENCH_POOL_S3 ? 1024 : 64;
    b->n_pre = kind == BENCH_POOL_S2 ? S2_PREFILL_SEQS : 0;
    b->hkv_d = s->hkv * s->d;
    const size_t n_all = b->n_dec + b->n_pre;
    attn_status st;

    /* The library's default page size, from a one-page pool: the pool below gets exactly the pages it needs. */
    attn_kv_pool_desc pd = {.n_kv_heads = s->hkv, .head_dim = s->d, .n_pages = 1, .dtype = s->dtype};
    *what = "attn_kv_pool_create";
    if ((st = attn_kv_pool_create(&b->pool, &pd)) != ATTN_OK)
        return st;
    const size_t pt = attn_kv_pool_page_tokens(b->pool);
    attn_kv_pool_destroy(b->pool);
    b->pool = NULL;
    size_t max_len = PREFILL_TOKENS;
    pd.n_pages = b->n_pre * ((PREFILL_TOKENS + pt - 1) / pt);
    for (size_t i = 0; i < b->n_dec; i++) {
        const size_t len = pool_seq_len(kind, i);
        pd.n_pages += (len + pt - 1) / pt;
        max_len = len > max_len ? len : max_len;
        b->tokens += (double)len;
        b->flops += 4.0 * (double)s->h * (double)s->d * (double)len; /* one query sees the whole sequence */
    }
    pd.max_seqs = n_all;
    b->tokens += (double)(b->n_pre * PREFILL_TOKENS);
    b->flops += (double)b->n_pre * 4.0 * (double)s->h * (double)s->d * (PREFILL_TOKENS * (PREFILL_TOKENS + 1.0) / 2);
    b->q_rows = (double)(b->n_dec + b->n_pre * PREFILL_TOKENS);

    const size_t q_n = (size_t)b->q_rows * s->h * s->d;
    float *k = bench_alloc64(max_len * b->hkv_d * 4), *v = bench_alloc64(max_len * b->hkv_d * 4);
    b->ids = calloc(n_all, sizeof *b->ids);
    b->q = bench_alloc64(q_n * 4);
    b->out = bench_alloc64(q_n * 4);
    int ok = k && v && b->ids && b->q && b->out;
    if (b->n_pre) {
        b->q_lens = malloc(n_all * sizeof *b->q_lens);
        b->pre_k = bench_alloc64(b->n_pre * PREFILL_TOKENS * b->hkv_d * 4);
        b->pre_v = bench_alloc64(b->n_pre * PREFILL_TOKENS * b->hkv_d * 4);
        ok = ok && b->q_lens && b->pre_k && b->pre_v;
    } else {
        b->caches = calloc(b->n_dec, sizeof *b->caches);
        ok = ok && b->caches;
    }
    *what = ok ? "attn_kv_pool_create" : "malloc";
    st = ok ? attn_kv_pool_create(&b->pool, &pd) : ATTN_ENOMEM;
    for (size_t i = 0; i < n_all && st == ATTN_OK; i++) {
        const size_t len = i < b->n_dec ? pool_seq_len(kind, i) : 0;
        const uint64_t seed = bench_opt.seed * 0x10000 + 16 + 2 * i;
        bench_progress_minor("%s: filling sequence %zu/%zu (%zu tokens)", s->name, i + 1, n_all, len);
        *what = "attn_seq_new";
        if ((st = attn_seq_new(b->pool, &b->ids[i])) != ATTN_OK)
            break;
        if (i >= b->n_dec) { /* a prefill sequence: its chunk is appended by pool_refill before each call */
            const size_t off = (i - b->n_dec) * PREFILL_TOKENS * b->hkv_d;
            bench_fill_uniform(b->pre_k + off, PREFILL_TOKENS * b->hkv_d, seed);
            bench_fill_uniform(b->pre_v + off, PREFILL_TOKENS * b->hkv_d, seed + 1);
            continue;
        }
        bench_fill_uniform(k, len * b->hkv_d, seed);
        bench_fill_uniform(v, len * b->hkv_d, seed + 1);
        *what = "attn_seq_append";
        if ((st = attn_seq_append(b->pool, b->ids[i], k, v, len)) != ATTN_OK)
            break;
        if (b->caches) {
            *what = "attn_kv_cache_create";
            if ((st = attn_kv_cache_create(&b->caches[i], s->hkv, s->d, len, s->dtype)) != ATTN_OK)
                break;
            *what = "attn_kv_cache_append";
            st = attn_kv_cache_append(b->caches[i], k, v, len);
        }
    }
    free(k), free(v);
    if (st != ATTN_OK) {
        pool_bench_free(b);
        return st;
    }
    for (size_t i = 0; b->q_lens && i < n_all; i++)
        b->q_lens[i] = i < b->n_dec ? 1 : PREFILL_TOKENS;
    bench_fill_uniform(b->q, q_n, bench_opt.seed * 0x10000 + 15);
    memset(b->out, 0, q_n * 4);
    return ATTN_OK;
}

/* A serving shape's rows per kernel set and thread count: NAME, one attn_batch_attend over the pool (32 query heads,
 * causal; S2 mixes prefill chunks and decodes), and for S1 and S3 NAME/loop, attn_decode over the same sequences in
 * caches, timed interleaved with it; NAME's vs_f32 is NAME/loop's median over its own. tok/s counts query rows.
 * Returns 1 if anything failed. */
static int run_pool_shape(const bench_shape *s, bench_plan *p)
{
    const int sets = p->n_sets * p->n_thr, rows = bench_shape_rows(s);
    pool_bench b;
    const char *what = "";
    bench_progress_minor("%s: filling the pool", s->name);
    attn_status st = pool_bench_make(s, &b, &what);
    if (st != ATTN_OK) {
        bench_progress_clear();
        fprintf(stderr, "%s: shape %s: %s: %s; skipped\n", BENCH_PROG, s->name, what, attn_strerror(st));
        p->row_no += rows * sets;
        return 1;
    }
    const double kv_bytes = kv_bytes_of(b.tokens, s->hkv, s->d, s->dtype),
                 min_bytes = kv_bytes + 2.0 * b.q_rows * (double)(s->h * s->d) * 4; /* + q in, out back */
    attn_batch_desc bd = {.n_seqs = b.n_dec + b.n_pre, .seqs = b.ids, .q_lens = b.q_lens, .n_heads = s->h,
                          .mask = ATTN_MASK_CAUSAL, .math = s->math};
    const bench_prep refill = {pool_refill, &b};
    char loop_name[96];
    snprintf(loop_name, sizeof loop_name, "%s/loop", s->name);
    int failed = 0;
    for (int si = 0; si < p->n_sets; si++)
        for (int ti = 0; ti < p->n_thr; ti++) {
            const int T = p->threads[ti];
            char label[160];
            snprintf(label, sizeof label, "[%d/%d] %s %s T=%d", p->row_no + 1, p->n_rows, s->name, p->kernels[si], T);
            p->row_no += rows;
            bench_progress("%s", label);
            bench_job jobs[MAX_JOBS] = {
                {.s = s, .ctx = p->ctxs[si][ti], .dtype = s->dtype, .q = b.q, .out = b.out, .pool = b.pool,
                 .batch = &bd},
                {.s = s, .ctx = p->ctxs[si][ti], .dtype = s->dtype, .q = b.q, .out = b.out, .caches = b.caches,
                 .n_caches = b.n_dec},
            };
            bench_row r[MAX_JOBS];
            memset(r, 0, sizeof r);
            bench_probe_result pb;
            probe_row(T, &pb, &r[0], 1, label);
            timing tm[MAX_JOBS];
            st = time_jobs(jobs, rows, b.n_pre ? &refill : NULL, label, tm);
            if (st != ATTN_OK) {
                bench_progress_clear();
                fprintf(stderr, "%s: shape %s, --isa %s, --threads %d: attn_batch_attend%s: %s\n", BENCH_PROG,
                        s->name, p->kernels[si], T, b.n_pre ? " (or its refill: attn_seq_truncate, attn_seq_append)"
                        : " or attn_decode", attn_strerror(st));
                failed = 1;
                continue;
            }
            probe_row(T, &pb, &r[0], 0, label);
            p->any_shared |= r[0].timeshared;
            for (int k = 0; k < rows; k++) {
                if (k) { /* one probe around both: the loop row shares it */
                    r[k].probed = r[0].probed, r[k].desched = r[0].desched, r[k].corun = r[0].corun;
                    r[k].timeshared = r[0].timeshared;
                }
                fill_row(&r[k], p, si, ti, k ? loop_name : s->name, bench_dtype_name(s->dtype), s->math, &tm[k],
                         b.flops);
                r[k].is_decode = 1;
                r[k].gbps = kv_bytes / tm[k].median_s / 1e9;
                r[k].has_bw = p->have_bw && p->bw_best[ti] > 0;
                r[k].bw_pct = r[k].has_bw ? 100 * r[k].gbps / p->bw_best[ti] : 0;
                r[k].has_tps = 1;
                r[k].tps = b.q_rows / tm[k].median_s;
                r[k].tok_per_gb = b.q_rows / (kv_bytes / 1e9);
                fill_roof(&r[k], p, ti, b.flops, min_bytes);
            }
            if (rows > 1) { /* NAME against its loop, timed in the same reps */
                r[0].has_base = r[0].has_ratio = 1;
                r[0].ratio = tm[1].median_s / tm[0].median_s;
                r[0].base_shared = r[0].timeshared;
                p->any_base_shared |= r[0].base_shared;
            }
            for (int k = 0; k < rows; k++)
                bench_emit_row(&r[k]);
        }
    pool_bench_free(&b);
    return failed;
}

int bench_run_shape(const bench_shape *s, bench_plan *p)
{
    return s->dm ? run_layer_shape(s, p) : s->pool ? run_pool_shape(s, p) : run_attn_shape(s, p);
}
