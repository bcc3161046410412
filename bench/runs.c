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
    return !s->dm && s->q <= DECODE_MAX_Q && !s->sdpa;
}

static size_t dtype_size(attn_dtype t)
{
    return t == ATTN_F32 ? 4 : 2;
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

static attn_status time_job(const bench_job *j, const char *label, timing *t)
{
    attn_status st;
    double call_s = 0;
    for (int w = 0; w < bench_opt.warmup; w++) {
        bench_progress_minor("%s: warm-up %d/%d", label, w + 1, bench_opt.warmup);
        double t0 = bench_now_s();
        if ((st = bench_call_once(j)) != ATTN_OK)
            return st;
        call_s = bench_now_s() - t0;
        if (bench_opt.max_seconds > 0 && call_s > bench_opt.max_seconds)
            break;
    }
    long inner = 1;
    int reps = bench_opt.reps;
    if (call_s > 0) {
        if (call_s < MIN_REP_S) {
            double n = ceil(MIN_REP_S / call_s);
            inner = n > 1e7 ? 10000000L : (long)n;
        }
        if (bench_opt.max_seconds > 0 && call_s * (double)inner * reps > bench_opt.max_seconds) {
            double r = floor(bench_opt.max_seconds / (call_s * (double)inner));
            reps = r < 1 ? 1 : (int)r;
        }
    }
    double *ts = malloc(sizeof(double) * (size_t)reps);
    if (!ts)
        return ATTN_ENOMEM;
    for (int r = 0; r < reps; r++) {
        bench_progress_minor("%s: rep %d/%d", label, r + 1, reps);
        double t0 = bench_now_s();
        for (long i = 0; i < inner; i++)
            if ((st = bench_call_once(j)) != ATTN_OK) {
                free(ts);
                return st;
            }
        ts[r] = (bench_now_s() - t0) / (double)inner;
    }
    double best = ts[0];
    for (int r = 1; r < reps; r++)
        best = ts[r] < best ? ts[r] : best;
    t->best_s = best;
    t->median_s = bench_median(ts, reps);
    t->reps = reps;
    free(ts);
    return ATTN_OK;
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
    static int dtype_skipped[3]; /* per attn_dtype: said once, then skipped quietly */
    const int decode = s->q <= DECODE_MAX_Q, cached = bench_uses_cache(s), sets = p->n_sets * p->n_thr;
    const size_t qn = s->h * s->q * s->d, kn = s->hkv * s->kv * s->d;
    bench_inputs in;
    int failed = 0;
    bench_progress_minor("%s: filling inputs", s->name);
    if (!bench_inputs_make(s, &in)) {
        bench_progress_clear();
        fprintf(stderr, "%s: shape %s: out of memory (%.0f MiB); skipped\n", BENCH_PROG, s->name,
                (double)(2 * qn + 2 * kn) * 4 / (1 << 20));
        p->row_no += (cached ? bench_opt.n_dtypes : 1) * sets;
        return 1;
    }
    double flops = 4.0 * (double)s->h * (double)s->d * bench_unmasked_pairs(s);

    int n_dt = cached ? bench_opt.n_dtypes : 1;
    for (int di = 0; di < n_dt; di++) {
        /* A cache shape's rows: one per --kv-dtype; an attn_sdpa shape's: its own dtype. */
        attn_dtype dt = cached ? bench_opt.dtypes[di] : s->dtype;
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
        double kv_bytes = (double)s->hkv * (double)s->kv * 2.0 * (double)s->d * (double)dtype_size(dt);

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
                bench_emit_row(&r);
            }
        attn_kv_cache_destroy(cache);
    }
    bench_inputs_free(&in);
    return failed;
}

int bench_run_shape(const bench_shape *s, bench_plan *p)
{
    return s->dm ? run_layer_shape(s, p) : run_attn_shape(s, p);
}
