/* A small inference-server-shaped load on attn: W worker threads, each serving R requests. A request is one
 * sequence with its own KV cache: prefill a P-token prompt (append its K/V, then one causal attn_decode with
 * q_len = P), then decode M tokens one at a time (append 1 token's K/V, attn_decode with q_len = 1, each call
 * timed). Inputs are uniform in [-1, 1) from a fixed seed per (worker, request). Prints the prefill and decode
 * throughput of all workers together, p50/p99 per-token decode latency, the ISA and the configuration.
 *
 *   examples/server [--workers N] [--requests R] [--dtype f32|f16|bf16] [--heads H] [--kv-heads HKV]
 *                   [--head-dim D] [--prompt P] [--tokens M] [--threads-per-call T] [--seed S] [--verify]
 *
 * Exit status: 0 ok, 1 a library error (or a failed --verify), 2 bad flags. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attn.h"
#include "flags.h"

typedef struct options {
    long workers, requests, heads, kv_heads, head_dim, prompt, tokens, threads_per_call;
    unsigned long long seed;
    attn_dtype dtype;
    int verify;
} options;

/* What one worker did; written by that worker only, read by main after the join. */
typedef struct worker {
    pthread_t tid;
    int index;
    const options *opt;
    const attn_ctx *ctx;
    double *lat_ms;            /* [requests * tokens]: each attn_decode(q_len 1), in ms */
    size_t n_lat;
    double prefill_s, decode_s, append_s; /* summed over the worker's requests */
    double max_err;            /* --verify: largest |attn_decode - attn_sdpa(f32)| seen */
    attn_status st;            /* first failure, ATTN_OK if none */
    const char *what;          /* the call that failed */
} worker;

/* The workers start together when main says go (or give up when it says abort), and stop early once any fails. */
static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cv = PTHREAD_COND_INITIALIZER;
static int start_state; /* 0 wait, 1 go, -1 abort */
static atomic_int failed;

static const char *const dtype_names[] = {"f32", "f16", "bf16"};

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --workers N           worker threads, 1..1024 (default 2)\n"
            "  --requests R          requests (sequences) per worker (default 4)\n"
            "  --dtype f32|f16|bf16  KV cache storage (default f32)\n"
            "  --heads H             query heads (default 32)\n"
            "  --kv-heads HKV        KV heads, must divide H (default 8)\n"
            "  --head-dim D          head dimension (default 128)\n"
            "  --prompt P            prompt tokens per request, prefilled with one attn_decode (default 512)\n"
            "  --tokens M            tokens decoded one at a time per request (default 64)\n"
            "  --threads-per-call T  attn_config.num_threads of the shared context (default 1; 0: ATTN_NUM_THREADS,\n"
            "                        else OpenMP's default)\n"
            "  --seed S              base of the per-request input seeds (default 1)\n"
            "  --verify              check every attn_decode against attn_sdpa on the fp32 inputs\n"
            "  -h, --help            this text\n",
            argv0);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1): 24 random bits, exact in float. */
static void fill_uniform(float *x, size_t n, uint64_t *s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(splitmix64(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* a * b, or 0 with *ok cleared when it overflows. */
static size_t mulz(size_t a, size_t b, int *ok)
{
    if (b && a > SIZE_MAX / b) {
        *ok = 0;
        return 0;
    }
    return a * b;
}

/* Largest |a - b|; a non-finite value in a gives infinity. */
static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m)
            m = d;
    }
    return m;
}

/* Outputs are convex combinations of V rows in [-1, 1): anything else is a wrong result. */
static int out_of_range(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(x[i] >= -1.0001f && x[i] <= 1.0001f))
            return 1;
    return 0;
}

static int fail(worker *w, const char *what, attn_status st)
{
    w->st = st;
    w->what = what;
    atomic_store(&failed, 1);
    return -1;
}

/* Checks out ([q_len][H][D], queries at the last q_len of kv_len positions) against attn_sdpa on the fp32 inputs. */
static int verify(worker *w, const float *q, const float *k, const float *v, size_t q_len, size_t kv_len,
                  const float *out, float *ref)
{
    const options *o = w->opt;
    attn_sdpa_desc d = {
        .batch = 1, .n_heads = (size_t)o->heads, .n_kv_heads = (size_t)o->kv_heads, .q_len = q_len,
        .kv_len = kv_len, .head_dim = (size_t)o->head_dim, .layout = ATTN_LAYOUT_BSHD, .mask = ATTN_MASK_CAUSAL,
    };
    attn_status st = attn_sdpa(w->ctx, &d, q, k, v, ref, NULL);
    if (st != ATTN_OK)
        return fail(w, "attn_sdpa (--verify)", st);
    double e = max_abs_diff(out, ref, q_len * (size_t)o->heads * (size_t)o->head_dim);
    if (!(e <= w->max_err))
        w->max_err = e; /* also catches NaN/inf */
    return 0;
}

/* One request: a fresh cache, prefill, then decode. The buffers are the worker's, sized for one request. */
static int serve(worker *w, long r, float *k, float *v, float *q, float *out, float *ref)
{
    const options *o = w->opt;
    const size_t H = (size_t)o->heads, HKV = (size_t)o->kv_heads, D = (size_t)o->head_dim;
    const size_t P = (size_t)o->prompt, M = (size_t)o->tokens, kv_row = HKV * D, q_row = H * D;

    uint64_t s = (uint64_t)o->seed * 0x100000001b3u ^ ((uint64_t)w->index << 32) ^ (uint64_t)r;
    fill_uniform(k, (P + M) * kv_row, &s);
    fill_uniform(v, (P + M) * kv_row, &s);
    fill_uniform(q, (P + M) * q_row, &s);

    attn_kv_cache *c;
    attn_status st = attn_kv_cache_create(&c, HKV, D, P + M, o->dtype);
    if (st != ATTN_OK)
        return fail(w, "attn_kv_cache_create", st);

    /* Prefill: the prompt's K/V into the cache, then its P queries attend causally to it in one call. */
    double t0 = now_s();
    st = attn_kv_cache_append(c, k, v, P);
    if (st == ATTN_OK)
        st = attn_decode(w->ctx, c, q, P, H, ATTN_MASK_CAUSAL, out);
    w->prefill_s += now_s() - t0;
    if (st != ATTN_OK) {
        attn_kv_cache_destroy(c);
        return fail(w, "prefill (attn_kv_cache_append, attn_decode)", st);
    }
    if (out_of_range(out, P * q_row)) {
        attn_kv_cache_destroy(c);
        return fail(w, "prefill output check (values outside [-1, 1])", ATTN_OK);
    }
    if (o->verify && verify(w, q, k, v, P, P, out, ref)) {
        attn_kv_cache_destroy(c);
        return -1;
    }

    /* Decode: one token at a time; the new token's query is the cache's last position. */
    for (size_t t = 0; t < M && !atomic_load(&failed); t++) {
        const size_t pos = P + t;
        double a0 = now_s();
        st = attn_kv_cache_append(c, k + pos * kv_row, v + pos * kv_row, 1);
        double a1 = now_s();
        if (st != ATTN_OK) {
            attn_kv_cache_destroy(c);
            return fail(w, "attn_kv_cache_append", st);
        }
        st = attn_decode(w->ctx, c, q + pos * q_row, 1, H, ATTN_MASK_CAUSAL, out);
        double a2 = now_s();
        if (st != ATTN_OK) {
            attn_kv_cache_destroy(c);
            return fail(w, "attn_decode", st);
        }
        w->append_s += a1 - a0;
        w->decode_s += a2 - a1;
        w->lat_ms[w->n_lat++] = 1e3 * (a2 - a1);
        if (attn_kv_cache_len(c) != pos + 1) {
            attn_kv_cache_destroy(c);
            return fail(w, "attn_kv_cache_len check (wrong length after append)", ATTN_OK);
        }
        if (out_of_range(out, q_row)) {
            attn_kv_cache_destroy(c);
            return fail(w, "decode output check (values outside [-1, 1])", ATTN_OK);
        }
        if (o->verify && verify(w, q + pos * q_row, k, v, 1, pos + 1, out, ref)) {
            attn_kv_cache_destroy(c);
            return -1;
        }
    }
    attn_kv_cache_destroy(c);
    return 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    const options *o = w->opt;
    const size_t H = (size_t)o->heads, HKV = (size_t)o->kv_heads, D = (size_t)o->head_dim;
    const size_t P = (size_t)o->prompt, M = (size_t)o->tokens;

    pthread_mutex_lock(&start_mu);
    while (start_state == 0)
        pthread_cond_wait(&start_cv, &start_mu);
    int go = start_state > 0;
    pthread_mutex_unlock(&start_mu);
    if (!go)
        return NULL;

    /* Sizes were checked for overflow by main. */
    float *k = malloc((P + M) * HKV * D * sizeof(float));
    float *v = malloc((P + M) * HKV * D * sizeof(float));
    float *q = malloc((P + M) * H * D * sizeof(float));
    float *out = malloc(P * H * D * sizeof(float));
    float *ref = o->verify ? malloc(P * H * D * sizeof(float)) : NULL;
    if (!k || !v || !q || !out || (o->verify && !ref))
        fail(w, "malloc (request buffers)", ATTN_ENOMEM);
    else
        for (long r = 0; r < o->requests && !atomic_load(&failed); r++)
            if (serve(w, r, k, v, q, out, ref))
                break;
    free(k);
    free(v);
    free(q);
    free(out);
    free(ref);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *x, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return x[rank ? rank - 1 : 0];
}

static int parse_args(int argc, char **argv, options *o)
{
    static const struct {
        const char *name;
        size_t off;
        long lo, hi;
    } nums[] = {
        {"--workers", offsetof(options, workers), 1, 1024},
        {"--requests", offsetof(options, requests), 1, 1000000},
        {"--heads", offsetof(options, heads), 1, 65536},
        {"--kv-heads", offsetof(options, kv_heads), 1, 65536},
        {"--head-dim", offsetof(options, head_dim), 1, 65536},
        {"--prompt", offsetof(options, prompt), 1, 1L << 30},
        {"--tokens", offsetof(options, tokens), 1, 1L << 30},
        {"--threads-per-call", offsetof(options, threads_per_call), 0, 1024},
    };
    for (int i = 1; i < argc; i++) {
        const char *val;
        int missing = 0, done = 0;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout, argv[0]);
            exit(0);
        }
        if (!strcmp(argv[i], "--verify")) {
            o->verify = 1;
            continue;
        }
        for (size_t j = 0; j < sizeof nums / sizeof nums[0] && !done; j++) {
            if ((val = flag_value(argc, argv, &i, nums[j].name, &missing)) != NULL) {
                if (parse_long(val, nums[j].lo, nums[j].hi, (long *)((char *)o + nums[j].off))) {
                    fprintf(stderr, "%s: %s takes an integer in %ld..%ld, not '%s'\n", argv[0], nums[j].name,
                            nums[j].lo, nums[j].hi, val);
                    return -1;
                }
                done = 1;
            } else if (missing) {
                fprintf(stderr, "%s: %s needs a value\n", argv[0], nums[j].name);
                return -1;
            }
        }
        if (done)
            continue;
        if ((val = flag_value(argc, argv, &i, "--dtype", &missing)) != NULL) {
            size_t j = 0;
            while (j < 3 && strcmp(val, dtype_names[j]))
                j++;
            if (j == 3) {
                fprintf(stderr, "%s: --dtype takes f32, f16 or bf16, not '%s'\n", argv[0], val);
                return -1;
            }
            o->dtype = (attn_dtype)j;
            continue;
        }
        if (!missing && (val = flag_value(argc, argv, &i, "--seed", &missing)) != NULL) {
            char *end;
            errno = 0;
            o->seed = strtoull(val, &end, 10);
            if (errno || end == val || *end || *val < '0' || *val > '9') {
                fprintf(stderr, "%s: --seed takes a non-negative integer, not '%s'\n", argv[0], val);
                return -1;
            }
            continue;
        }
        if (missing)
            fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
        else
            fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
        return -1;
    }
    if (o->heads % o->kv_heads) {
        fprintf(stderr, "%s: --kv-heads (%ld) must divide --heads (%ld)\n", argv[0], o->kv_heads, o->heads);
        return -1;
    }
    /* Every buffer a worker allocates must have a byte count that fits size_t. */
    int ok = 1;
    size_t n = (size_t)o->prompt + (size_t)o->tokens;
    mulz(mulz(mulz(n, (size_t)o->heads, &ok), (size_t)o->head_dim, &ok), sizeof(float), &ok);
    if (!ok || (size_t)o->requests * (size_t)o->tokens > SIZE_MAX / sizeof(double)) {
        fprintf(stderr, "%s: these sizes overflow this machine's address space\n", argv[0]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o = {
        .workers = 2, .requests = 4, .heads = 32, .kv_heads = 8, .head_dim = 128, .prompt = 512, .tokens = 64,
        .threads_per_call = 1, .seed = 1, .dtype = ATTN_F32,
    };
    if (parse_args(argc, argv, &o)) {
        usage(stderr, argv[0]);
        return 2;
    }

    /* One context for the whole server: it is immutable and thread-safe, so every worker shares it.
     * num_threads = 1 by default, because the server already has its own parallelism: each worker thread keeps a
     * core busy, and with num_threads = T every call would start an OpenMP team of T threads of its own (libgomp
     * keeps one pool per calling thread), so W workers would run W x T threads on the cores: oversubscription,
     * threads descheduled inside barriers, and worse latency than one thread per call. (A server whose workers
     * are themselves an OpenMP parallel region needs no setting: attn runs a call made from inside a parallel
     * region on the calling thread alone.) --threads-per-call T > 1 is for few workers on many cores. */
    attn_config cfg = {.num_threads = (int)o.threads_per_call};
    attn_ctx *ctx;
    attn_status st = attn_ctx_create(&ctx, &cfg);
    if (st != ATTN_OK) {
        fprintf(stderr, "%s: attn_ctx_create: %s\n", argv[0], attn_strerror(st));
        return 1;
    }

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("attn %s server: %ld workers x %ld requests, kv cache %s, heads %ld/%ld, head_dim %ld, prompt %ld, "
           "tokens %ld%s\n",
           attn_version(), o.workers, o.requests, dtype_names[o.dtype], o.heads, o.kv_heads, o.head_dim, o.prompt,
           o.tokens, o.verify ? ", verify" : "");
    printf("isa %s, %d thread%s per call (one shared context), %ld CPUs online\n", attn_isa_name(attn_ctx_isa(ctx)),
           attn_ctx_threads(ctx), attn_ctx_threads(ctx) == 1 ? "" : "s", cpus);
    if (cpus > 0 && o.workers * (long)attn_ctx_threads(ctx) > cpus)
        printf("note: %ld workers x %d threads per call > %ld CPUs: oversubscribed, latencies include waiting\n",
               o.workers, attn_ctx_threads(ctx), cpus);
    fflush(stdout);

    const size_t W = (size_t)o.workers, lat_per_worker = (size_t)o.requests * (size_t)o.tokens;
    worker *ws = calloc(W, sizeof *ws);
    int rc = 0;
    if (!ws) {
        fprintf(stderr, "%s: %s\n", argv[0], attn_strerror(ATTN_ENOMEM));
        attn_ctx_destroy(ctx);
        return 1;
    }
    size_t started = 0;
    for (; started < W; started++) {
        worker *w = &ws[started];
        w->index = (int)started;
        w->opt = &o;
        w->ctx = ctx;
        w->lat_ms = malloc(lat_per_worker * sizeof(double));
        if (!w->lat_ms) {
            fprintf(stderr, "%s: %s\n", argv[0], attn_strerror(ATTN_ENOMEM));
            break;
        }
        int e = pthread_create(&w->tid, NULL, worker_main, w);
        if (e) {
            fprintf(stderr, "%s: pthread_create: %s\n", argv[0], strerror(e));
            free(w->lat_ms);
            w->lat_ms = NULL;
            break;
        }
    }
    pthread_mutex_lock(&start_mu);
    start_state = started == W ? 1 : -1;
    pthread_cond_broadcast(&start_cv);
    pthread_mutex_unlock(&start_mu);
    double t0 = now_s();
    for (size_t i = 0; i < started; i++)
        pthread_join(ws[i].tid, NULL);
    double wall = now_s() - t0;

    if (started < W) {
        rc = 1;
        goto done;
    }
    for (size_t i = 0; i < W; i++) {
        const worker *w = &ws[i];
        if (!w->what)
            continue;
        if (w->st == ATTN_ENOTSUP && !strcmp(w->what, "attn_kv_cache_create"))
            fprintf(stderr, "%s: kv cache not supported by this build (dtype %s): %s\n", argv[0],
                    dtype_names[o.dtype], attn_strerror(w->st));
        else if (w->st != ATTN_OK)
            fprintf(stderr, "%s: worker %zu: %s: %s\n", argv[0], i, w->what, attn_strerror(w->st));
        else
            fprintf(stderr, "%s: worker %zu: %s\n", argv[0], i, w->what);
        rc = 1;
        goto done; /* the first failure is the cause; the others stopped because of it */
    }

    /* Throughput of all workers together: each worker's tokens over its own time in that phase, summed (the
     * workers run the phase at the same time). Latency: every decode call of every worker. */
    double prefill_tps = 0, decode_tps = 0, append_s = 0, max_err = 0;
    size_t n_lat = 0;
    for (size_t i = 0; i < W; i++) {
        prefill_tps += (double)(o.requests * o.prompt) / ws[i].prefill_s;
        decode_tps += (double)(o.requests * o.tokens) / ws[i].decode_s;
        append_s += ws[i].append_s;
        if (!(ws[i].max_err <= max_err))
            max_err = ws[i].max_err;
        n_lat += ws[i].n_lat;
    }
    double *lat = malloc(n_lat * sizeof(double));
    if (!lat) {
        fprintf(stderr, "%s: %s\n", argv[0], attn_strerror(ATTN_ENOMEM));
        rc = 1;
        goto done;
    }
    for (size_t i = 0, j = 0; i < W; j += ws[i].n_lat, i++)
        memcpy(lat + j, ws[i].lat_ms, ws[i].n_lat * sizeof(double));
    qsort(lat, n_lat, sizeof(double), cmp_double);

    printf("prefill: %ld tokens, %.1f tokens/s (attn_kv_cache_append + attn_decode q_len %ld, causal)\n",
           o.workers * o.requests * o.prompt, prefill_tps, o.prompt);
    printf("decode:  %zu tokens, %.1f tokens/s (%.1f per worker; attn_decode q_len 1 over %ld..%ld cached "
           "tokens)\n",
           n_lat, decode_tps, decode_tps / (double)W, o.prompt + 1, o.prompt + o.tokens);
    printf("decode latency per token: p50 %.3f ms, p99 %.3f ms, max %.3f ms (append 1 token: mean %.4f ms, not "
           "included)\n",
           percentile(lat, n_lat, 50), percentile(lat, n_lat, 99), lat[n_lat - 1], 1e3 * append_s / (double)n_lat);
    printf("wall: %.3f s, %.1f requests/s\n", wall, (double)(o.workers * o.requests) / wall);
    free(lat);
    if (o.verify) {
        /* K/V rounded to the storage type move the output by about that type's relative precision. */
        const double tol = o.dtype == ATTN_F32 ? 1e-4 : o.dtype == ATTN_F16 ? 4e-3 : 3e-2;
        printf("verify: max |attn_decode - attn_sdpa(fp32 inputs)| = %.3g (tolerance %.0e): %s\n", max_err, tol,
               max_err <= tol ? "ok" : "FAILED");
        if (!(max_err <= tol))
            rc = 1;
    }

done:
    for (size_t i = 0; i < W; i++)
        free(ws[i].lat_ms);
    free(ws);
    attn_ctx_destroy(ctx);
    return rc;
}
