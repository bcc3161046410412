/* A continuous-batching server loop on attn's paged KV pool. Requests arrive at random (Poisson per step) with random
 * prompt and generation lengths; every step builds one attn_batch_attend call that mixes the decodes of all running
 * requests with chunks of prompts being prefilled. Some requests start from a shared system prompt by forking it
 * (attn_seq_fork) instead of prefilling it; finished requests free their sequence; when an append runs out of pages
 * the youngest request is preempted (freed) and requeued, to be prefilled again later. Q, K and V are random: no
 * model, only the scheduling and the attention cost. The schedule depends only on --seed, never on timing.
 *
 *   examples/server [--steps N] [--seed S] [--pool-pages N] [--page-tokens N] [--threads T] [--rate R]
 *                   [--prompt MIN[,MAX]] [--tokens MIN[,MAX]] [--prefix P] [--fork-share F] [--chunk C]
 *                   [--step-tokens B] [--max-running N] [--dtype f32|f16|bf16|i8] [--heads H] [--kv-heads HKV]
 *                   [--head-dim D] [--verify]
 *
 * Exit status: 0 ok, 1 a library error (or a failed --verify), 2 bad flags. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attn.h"
#include "flags.h"

#define PREFIX_ID UINT32_MAX /* the system prompt's K/V stream, shared by every forked request */

typedef struct options {
    long steps, pool_pages, page_tokens, threads, prompt_min, prompt_max, tokens_min, tokens_max, prefix, chunk,
        step_tokens, max_running, heads, kv_heads, head_dim;
    double rate, fork_share;
    unsigned long long seed;
    attn_dtype dtype;
    int verify;
} options;

typedef struct request {
    uint32_t id;        /* arrival number: seeds its K/V */
    size_t prompt, gen; /* prompt tokens (the system prompt's included when forked), tokens to generate */
    int forked;         /* its first --prefix tokens are the system prompt's pages, shared */
    size_t len;         /* tokens in its sequence */
    size_t generated;   /* decoded so far; kept across preemption (their K/V is recomputed as prompt) */
    uint32_t seq;
} request;

/* A FIFO of requests by pointer; preempted ones go back to the front. */
typedef struct queue {
    request **r;
    size_t head, n, cap;
} queue;

static const char *const dtype_names[] = {"f32", "f16", "bf16", "i8"};

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [options]\n"
            "  --steps N             scheduler steps (default 128)\n"
            "  --seed S              arrivals, lengths, Q/K/V (default 1); the schedule depends on nothing else\n"
            "  --pool-pages N        pages in the KV pool (default 64)\n"
            "  --page-tokens N       tokens per page, a multiple of 16 up to 4096 (default 0: the library's)\n"
            "  --threads T           attn_config.num_threads (default 0: ATTN_NUM_THREADS, else all CPUs)\n"
            "  --rate R              mean new requests per step, Poisson (default 0.25)\n"
            "  --prompt MIN[,MAX]    prompt tokens, uniform (default 16,512)\n"
            "  --tokens MIN[,MAX]    tokens to generate, uniform (default 16,128)\n"
            "  --prefix P            system-prompt tokens, prefilled once (default 256; 0: none)\n"
            "  --fork-share F        share of requests that fork the system prompt before their own prompt\n"
            "                        (default 0.5)\n"
            "  --chunk C             prompt tokens of one request per step at most (default 512)\n"
            "  --step-tokens B       query rows per step: prompt chunks fill what decodes leave (default 512)\n"
            "  --max-running N       requests holding a sequence at once (default 64)\n"
            "  --dtype f32|f16|bf16|i8  pool storage (default f16)\n"
            "  --heads H, --kv-heads HKV, --head-dim D  (default 32, 8, 128)\n"
            "  --verify              check the first and last sequence of every step against attn_sdpa\n"
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

static double uniform01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
}

static size_t uniform_in(uint64_t *s, long lo, long hi)
{
    return (size_t)lo + (size_t)(splitmix64(s) % (uint64_t)(hi - lo + 1));
}

/* Knuth's method: fine for the small means a step sees. */
static long poisson(uint64_t *s, double mean)
{
    const double limit = exp(-mean);
    long k = 0;
    for (double p = uniform01(s); p > limit; p *= uniform01(s))
        k++;
    return k;
}

/* Uniform in [-1, 1): 24 random bits, exact in float. */
static void fill_uniform(float *x, size_t n, uint64_t s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(splitmix64(&s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* K and V of tokens [pos, pos + n) of a request: a stream per (seed, request, position), so a preempted request
 * recomputes the same values and --verify can rebuild any sequence. Positions under the system prompt's length of
 * a forked request are the system prompt's. */
static void token_kv(const options *o, const request *r, size_t pos, size_t n, float *k, float *v)
{
    const size_t row = (size_t)(o->kv_heads * o->head_dim);
    for (size_t t = 0; t < n; t++) {
        const size_t p = pos + t;
        const uint64_t who = r && !(r->forked && p < (size_t)o->prefix) ? r->id : PREFIX_ID;
        const uint64_t s = ((uint64_t)o->seed * 0x9e3779b97f4a7c15u) ^ (who << 32) ^ (uint64_t)p;
        fill_uniform(k + t * row, row, s * 2);
        fill_uniform(v + t * row, row, s * 2 + 1);
    }
}

static int queue_push(queue *q, request *r, int front)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 64;
        request **n = malloc(cap * sizeof *n);
        if (!n)
            return -1;
        for (size_t i = 0; i < q->n; i++)
            n[i] = q->r[(q->head + i) % q->cap];
        free(q->r);
        q->r = n, q->cap = cap, q->head = 0;
    }
    if (front) {
        q->head = (q->head + q->cap - 1) % q->cap;
        q->r[q->head] = r;
    } else {
        q->r[(q->head + q->n) % q->cap] = r;
    }
    q->n++;
    return 0;
}

static request *queue_pop(queue *q)
{
    request *r = q->r[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return r;
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

/* "MIN" or "MIN,MAX" within [lo, hi], MIN <= MAX. */
static int parse_range(const char *s, long lo, long hi, long *a, long *b)
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return -1;
    strcpy(buf, s);
    char *c = strchr(buf, ',');
    if (c)
        *c = '\0';
    if (parse_long(buf, lo, hi, a) || parse_long(c ? c + 1 : buf, lo, hi, b) || *a > *b)
        return -1;
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    static const struct {
        const char *name;
        size_t off;
        long lo, hi;
    } nums[] = {
        {"--steps", offsetof(options, steps), 1, 100000000},
        {"--pool-pages", offsetof(options, pool_pages), 1, 1L << 30},
        {"--page-tokens", offsetof(options, page_tokens), 0, 4096},
        {"--threads", offsetof(options, threads), 0, 1024},
        {"--prefix", offsetof(options, prefix), 0, 1L << 20},
        {"--chunk", offsetof(options, chunk), 1, 1L << 20},
        {"--step-tokens", offsetof(options, step_tokens), 1, 1L << 20},
        {"--max-running", offsetof(options, max_running), 1, 1L << 20},
        {"--heads", offsetof(options, heads), 1, 4096},
        {"--kv-heads", offsetof(options, kv_heads), 1, 4096},
        {"--head-dim", offsetof(options, head_dim), 1, 4096},
    };
    static const struct {
        const char *name;
        size_t lo_off, hi_off;
    } ranges[] = {
        {"--prompt", offsetof(options, prompt_min), offsetof(options, prompt_max)},
        {"--tokens", offsetof(options, tokens_min), offsetof(options, tokens_max)},
    };
    static const struct {
        const char *name;
        size_t off;
        double hi;
    } reals[] = {
        {"--rate", offsetof(options, rate), 64},
        {"--fork-share", offsetof(options, fork_share), 1},
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
        for (size_t j = 0; j < sizeof nums / sizeof nums[0] && !done && !missing; j++) {
            if ((val = flag_value(argc, argv, &i, nums[j].name, &missing)) == NULL)
                continue;
            if (parse_long(val, nums[j].lo, nums[j].hi, (long *)((char *)o + nums[j].off))) {
                fprintf(stderr, "%s: %s takes an integer in %ld..%ld, not '%s'\n", argv[0], nums[j].name, nums[j].lo,
                        nums[j].hi, val);
                return -1;
            }
            done = 1;
        }
        for (size_t j = 0; j < sizeof ranges / sizeof ranges[0] && !done && !missing; j++) {
            if ((val = flag_value(argc, argv, &i, ranges[j].name, &missing)) == NULL)
                continue;
            long *lo = (long *)((char *)o + ranges[j].lo_off), *hi = (long *)((char *)o + ranges[j].hi_off);
            if (parse_range(val, 1, 1L << 24, lo, hi)) {
                fprintf(stderr, "%s: %s takes MIN or MIN,MAX (1..%ld, MIN <= MAX), not '%s'\n", argv[0],
                        ranges[j].name, 1L << 24, val);
                return -1;
            }
            done = 1;
        }
        for (size_t j = 0; j < sizeof reals / sizeof reals[0] && !done && !missing; j++) {
            if ((val = flag_value(argc, argv, &i, reals[j].name, &missing)) == NULL)
                continue;
            char *end;
            double x = strtod(val, &end);
            if (end == val || *end || !(x >= 0) || x > reals[j].hi) {
                fprintf(stderr, "%s: %s takes a number in 0..%g, not '%s'\n", argv[0], reals[j].name, reals[j].hi,
                        val);
                return -1;
            }
            *(double *)((char *)o + reals[j].off) = x;
            done = 1;
        }
        if (done)
            continue;
        if (!missing && (val = flag_value(argc, argv, &i, "--dtype", &missing)) != NULL) {
            size_t j = 0;
            while (j < 4 && strcmp(val, dtype_names[j]))
                j++;
            if (j == 4) {
                fprintf(stderr, "%s: --dtype takes f32, f16, bf16 or i8, not '%s'\n", argv[0], val);
                return -1;
            }
            o->dtype = (attn_dtype)j;
            continue;
        }
        if (!missing && (val = flag_value(argc, argv, &i, "--seed", &missing)) != NULL) {
            char *end;
            o->seed = strtoull(val, &end, 10);
            if (end == val || *end || *val < '0' || *val > '9') {
                fprintf(stderr, "%s: --seed takes a non-negative integer, not '%s'\n", argv[0], val);
                return -1;
            }
            continue;
        }
        if (missing)
            fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
        else if (!strncmp(argv[i], "--workers", 9) || !strncmp(argv[i], "--requests", 10) ||
                 !strncmp(argv[i], "--threads-per-call", 18))
            fprintf(stderr, "%s: %s is gone: the server is one scheduler loop over a pool now (--threads, --steps, "
                            "--rate)\n", argv[0], argv[i]);
        else
            fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
        return -1;
    }
    if (o->heads % o->kv_heads) {
        fprintf(stderr, "%s: --kv-heads (%ld) must divide --heads (%ld)\n", argv[0], o->kv_heads, o->heads);
        return -1;
    }
    if (o->page_tokens % 16) {
        fprintf(stderr, "%s: --page-tokens must be a multiple of 16 (or 0), not %ld\n", argv[0], o->page_tokens);
        return -1;
    }
    return 0;
}

/* The server's state: the pool, the queues, and what it has counted. */
typedef struct server {
    const options *o;
    const attn_ctx *ctx;
    attn_kv_pool *pool;
    size_t page_tokens, n_pages;
    uint32_t prefix_seq;
    request *reqs;             /* every request that arrived, by id */
    size_t n_reqs, cap_reqs;
    queue waiting;
    request **running;         /* oldest admitted first */
    size_t n_running;
    size_t preemptions, forks, rejected, finished, prefill_tokens, decode_tokens;
} server;

/* Frees r's sequence and puts it at the front of the queue: its prompt and the tokens it generated so far are
 * prefilled again when it is readmitted. */
static attn_status preempt(server *sv, size_t i)
{
    request *r = sv->running[i];
    attn_status st = attn_seq_free(sv->pool, r->seq);
    if (st != ATTN_OK)
        return st;
    r->len = 0;
    memmove(sv->running + i, sv->running + i + 1, (sv->n_running - i - 1) * sizeof *sv->running);
    sv->n_running--;
    sv->preemptions++;
    return queue_push(&sv->waiting, r, 1) ? ATTN_ENOMEM : ATTN_OK;
}

/* Pages r needs alone, start to finish (a forked one may copy the system prompt's last, partly filled page). */
static size_t pages_alone(const server *sv, const request *r)
{
    return (r->prompt + r->gen + sv->page_tokens - 1) / sv->page_tokens + (size_t)r->forked;
}

/* New arrivals of this step, at the back of the queue. */
static attn_status arrive(server *sv, uint64_t *rng)
{
    const options *o = sv->o;
    const size_t prefix_pages = (size_t)(o->prefix + (long)sv->page_tokens - 1) / sv->page_tokens;
    for (long n = poisson(rng, o->rate); n > 0; n--) {
        if (sv->n_reqs == sv->cap_reqs) { /* requests stay where they are: the queues point into this array */
            fprintf(stderr, "server: more than %zu arrivals\n", sv->cap_reqs);
            return ATTN_ERANGE;
        }
        request *r = &sv->reqs[sv->n_reqs];
        memset(r, 0, sizeof *r);
        r->id = (uint32_t)sv->n_reqs++;
        r->forked = o->prefix > 0 && uniform01(rng) < o->fork_share;
        r->prompt = uniform_in(rng, o->prompt_min, o->prompt_max) + (r->forked ? (size_t)o->prefix : 0);
        r->gen = uniform_in(rng, o->tokens_min, o->tokens_max);
        if (pages_alone(sv, r) + prefix_pages > sv->n_pages) { /* could never finish, even alone */
            sv->rejected++;
            continue;
        }
        if (queue_push(&sv->waiting, r, 0))
            return ATTN_ENOMEM;
    }
    return ATTN_OK;
}

/* Admits waiting requests, oldest first, while there are ids and running slots and the free pages hold the rest of
 * its prompt (so that a new request does not at once push out an older one). */
static attn_status admit(server *sv)
{
    while (sv->waiting.n && sv->n_running < (size_t)sv->o->max_running) {
        request *r = sv->waiting.r[sv->waiting.head];
        const size_t own = r->prompt + r->generated - (r->forked ? (size_t)sv->o->prefix : 0);
        if ((own + sv->page_tokens - 1) / sv->page_tokens + (size_t)r->forked > attn_kv_pool_free_pages(sv->pool))
            break;
        attn_status st = r->forked ? attn_seq_fork(sv->pool, sv->prefix_seq, &r->seq) : attn_seq_new(sv->pool, &r->seq);
        if (st == ATTN_ERANGE)
            break; /* out of ids: the next step */
        if (st != ATTN_OK)
            return st;
        sv->forks += (size_t)r->forked;
        r->len = r->forked ? (size_t)sv->o->prefix : 0;
        queue_pop(&sv->waiting);
        sv->running[sv->n_running++] = r;
    }
    return ATTN_OK;
}

/* One step's batch: which request, its query rows (its newest positions). */
typedef struct batch {
    request **req;
    uint32_t *seqs;
    size_t *q_lens;
    size_t n, rows;
} batch;

/* Appends n tokens to r, preempting the youngest running request while the pool is out of pages. Returns 1 when r
 * itself was the youngest and got preempted, 0 when appended; *st is the failure otherwise. */
static int append_or_preempt(server *sv, batch *b, request *r, size_t n, float *k, float *v, double *t_append,
                             attn_status *st)
{
    token_kv(sv->o, r, r->len, n, k, v);
    for (;;) {
        double t0 = now_s();
        *st = attn_seq_append(sv->pool, r->seq, k, v, n);
        *t_append += now_s() - t0;
        if (*st != ATTN_ERANGE)
            return 0;
        const size_t y = sv->n_running - 1;
        request *victim = sv->running[y];
        for (size_t i = 0; i < b->n; i++) /* already in this step's batch: take it out again */
            if (b->req[i] == victim) {
                b->rows -= b->q_lens[i];
                memmove(b->req + i, b->req + i + 1, (b->n - i - 1) * sizeof *b->req);
                memmove(b->q_lens + i, b->q_lens + i + 1, (b->n - i - 1) * sizeof *b->q_lens);
                b->n--;
                break;
            }
        if ((*st = preempt(sv, y)) != ATTN_OK)
            return 0;
        if (victim == r)
            return 1;
    }
}

/* Checks batch entry e's output rows against attn_sdpa over the sequence's K/V, rebuilt from the seeds. */
static int verify_entry(const server *sv, const batch *b, size_t e, const float *q, const float *out, float *kbuf,
                        float *vbuf, float *ref, double *max_err)
{
    const options *o = sv->o;
    const request *r = b->req[e];
    const size_t row = (size_t)(o->heads * o->head_dim);
    size_t first = 0;
    for (size_t i = 0; i < e; i++)
        first += b->q_lens[i];
    token_kv(o, r, 0, r->len, kbuf, vbuf);
    attn_sdpa_desc d = {.batch = 1, .n_heads = (size_t)o->heads, .n_kv_heads = (size_t)o->kv_heads,
                        .q_len = b->q_lens[e], .kv_len = r->len, .head_dim = (size_t)o->head_dim,
                        .layout = ATTN_LAYOUT_BSHD, .mask = ATTN_MASK_CAUSAL};
    attn_status st = attn_sdpa(sv->ctx, &d, q + first * row, kbuf, vbuf, ref, NULL);
    if (st != ATTN_OK) {
        fprintf(stderr, "server: attn_sdpa (--verify): %s\n", attn_strerror(st));
        return -1;
    }
    for (size_t i = 0; i < b->q_lens[e] * row; i++) {
        double err = fabs((double)out[first * row + i] - (double)ref[i]);
        if (!(err <= *max_err))
            *max_err = isfinite(err) ? err : INFINITY;
    }
    return 0;
}

int main(int argc, char **argv)
{
    /* The defaults run in a few seconds on 2 cores and fill the pool now and then, so preemption happens too. */
    options o = {.steps = 128, .pool_pages = 64, .threads = 0, .prompt_min = 16, .prompt_max = 512,
                 .tokens_min = 16, .tokens_max = 128, .prefix = 256, .chunk = 512, .step_tokens = 512,
                 .max_running = 64, .heads = 32, .kv_heads = 8, .head_dim = 128, .rate = 0.25, .fork_share = 0.5,
                 .seed = 1, .dtype = ATTN_F16};
    if (parse_args(argc, argv, &o)) {
        fprintf(stderr, "Run '%s --help' for the flags.\n", argv[0]);
        return 2;
    }
    attn_config cfg = {.num_threads = (int)o.threads};
    attn_ctx *ctx = NULL;
    attn_status st = attn_ctx_create(&ctx, &cfg);
    if (st != ATTN_OK) {
        fprintf(stderr, "%s: attn_ctx_create: %s\n", argv[0], attn_strerror(st));
        return 1;
    }
    server sv = {.o = &o, .ctx = ctx};
    const attn_kv_pool_desc pd = {.n_kv_heads = (size_t)o.kv_heads, .head_dim = (size_t)o.head_dim,
                                  .page_tokens = (size_t)o.page_tokens, .n_pages = (size_t)o.pool_pages,
                                  .max_seqs = (size_t)o.max_running + 1, .dtype = o.dtype};
    const size_t kv_row = (size_t)(o.kv_heads * o.head_dim), q_row = (size_t)(o.heads * o.head_dim);
    const size_t max_rows = (size_t)o.step_tokens + (size_t)o.max_running; /* a step's decodes always run */
    size_t max_len = (size_t)(o.prompt_max + o.tokens_max + o.prefix); /* the longest sequence, for --verify */
    const size_t kv_n = (size_t)o.chunk > max_len ? (size_t)o.chunk : max_len;
    sv.cap_reqs = (size_t)(o.rate * (double)o.steps * 2 + 64 + 8 * sqrt(o.rate * (double)o.steps));
    sv.reqs = malloc(sv.cap_reqs * sizeof *sv.reqs);
    sv.running = malloc((size_t)o.max_running * sizeof *sv.running);
    batch b = {.req = malloc((size_t)o.max_running * sizeof *b.req),
               .seqs = malloc((size_t)o.max_running * sizeof *b.seqs),
               .q_lens = malloc((size_t)o.max_running * sizeof *b.q_lens)};
    float *q = malloc(max_rows * q_row * sizeof(float)), *out = malloc(max_rows * q_row * sizeof(float));
    float *k = malloc(kv_n * kv_row * sizeof(float)), *v = malloc(kv_n * kv_row * sizeof(float));
    float *ref = o.verify ? malloc((size_t)o.chunk * q_row * sizeof(float)) : NULL;
    double *lat = malloc((size_t)o.steps * sizeof *lat);
    int rc = 1;
    if (!sv.reqs || !sv.running || !b.req || !b.seqs || !b.q_lens || !q || !out || !k || !v || !lat ||
        (o.verify && !ref)) {
        fprintf(stderr, "%s: %s\n", argv[0], attn_strerror(ATTN_ENOMEM));
        goto done;
    }
    if ((st = attn_kv_pool_create(&sv.pool, &pd)) != ATTN_OK) {
        fprintf(stderr, "%s: attn_kv_pool_create (%ld pages, dtype %s): %s\n", argv[0], o.pool_pages,
                dtype_names[o.dtype], attn_strerror(st));
        goto done;
    }
    sv.page_tokens = attn_kv_pool_page_tokens(sv.pool);
    sv.n_pages = (size_t)o.pool_pages;

    /* The system prompt: prefilled once, outside the steps; forked requests share its pages. */
    if (o.prefix > 0) {
        token_kv(&o, NULL, 0, (size_t)o.prefix, k, v);
        if ((st = attn_seq_new(sv.pool, &sv.prefix_seq)) != ATTN_OK ||
            (st = attn_seq_append(sv.pool, sv.prefix_seq, k, v, (size_t)o.prefix)) != ATTN_OK) {
            fprintf(stderr, "%s: the %ld-token system prompt does not fit the pool: %s\n", argv[0], o.prefix,
                    attn_strerror(st));
            goto done;
        }
    }
    /* Bytes per token and KV head row: the elements, and for I8 one fp32 scale; K and V. */
    const double row_bytes = (double)o.head_dim * (o.dtype == ATTN_F32 ? 4 : o.dtype == ATTN_I8 ? 1 : 2) +
                             (o.dtype == ATTN_I8 ? 4 : 0);
    const double pool_mib = (double)o.pool_pages * (double)sv.page_tokens * (double)o.kv_heads * 2 * row_bytes /
                            (1 << 20);
    printf("attn %s server: continuous batching on one %s pool of %ld pages x %zu tokens (%.0f MiB), heads %ld/%ld, "
           "head_dim %ld\n",
           attn_version(), dtype_names[o.dtype], o.pool_pages, sv.page_tokens, pool_mib, o.heads, o.kv_heads,
           o.head_dim);
    printf("isa %s, %d thread%s per call; %ld steps, %.2f arrivals/step, prompt %ld..%ld, generate %ld..%ld, chunk "
           "%ld, %ld rows/step, system prompt %ld tokens forked by %.0f%%%s\n",
           attn_ctx_kernels(ctx), attn_ctx_threads(ctx), attn_ctx_threads(ctx) == 1 ? "" : "s", o.steps, o.rate,
           o.prompt_min, o.prompt_max, o.tokens_min, o.tokens_max, o.chunk, o.step_tokens, o.prefix,
           100 * o.fork_share, o.verify ? ", verify" : "");
    fflush(stdout);

    uint64_t sched_rng = o.seed * 0x2545f4914f6cdd1du + 1, q_rng = o.seed * 0x9e3779b97f4a7c15u + 7;
    double busy_s = 0, append_s = 0, max_err = 0, pages_sum = 0;
    size_t pages_peak = 0, batch_sum = 0, n_lat = 0; /* n_lat: steps that ran a batch (idle ones have none) */
    for (long step = 0; step < o.steps; step++) {
        if ((st = arrive(&sv, &sched_rng)) != ATTN_OK || (st = admit(&sv)) != ATTN_OK) {
            fprintf(stderr, "%s: step %ld: admitting requests: %s\n", argv[0], step, attn_strerror(st));
            goto done;
        }
        /* Decodes first (they hold pages and users wait on each token), then prompt chunks in the rows left. */
        double t_append = 0;
        b.n = b.rows = 0;
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < sv.n_running; i++) {
                request *r = sv.running[i];
                const size_t known = r->prompt + r->generated, budget = (size_t)o.step_tokens;
                const int decoding = r->len >= known; /* past known: it decoded in pass 0 */
                if (decoding != (pass == 0))
                    continue;
                size_t n = decoding ? 1 : known - r->len;
                n = n < (size_t)o.chunk ? n : (size_t)o.chunk;
                if (!decoding && b.rows + n > budget)
                    n = b.rows < budget ? budget - b.rows : 0;
                if (!n)
                    continue;
                if (append_or_preempt(&sv, &b, r, n, k, v, &t_append, &st)) {
                    i--; /* r left the running list: the next request moved into slot i */
                    continue;
                }
                if (st != ATTN_OK) {
                    fprintf(stderr, "%s: step %ld: attn_seq_append: %s\n", argv[0], step, attn_strerror(st));
                    goto done;
                }
                r->len += n;
                b.req[b.n] = r;
                b.q_lens[b.n++] = n;
                b.rows += n;
            }
        if (b.n) {
            for (size_t i = 0; i < b.n; i++)
                b.seqs[i] = b.req[i]->seq;
            for (size_t i = 0; i < b.rows * q_row; i++)
                q[i] = (float)(splitmix64(&q_rng) >> 40) * (2.0f / 16777216.0f) - 1.0f;
            const attn_batch_desc bd = {.n_seqs = b.n, .seqs = b.seqs, .q_lens = b.q_lens,
                                        .n_heads = (size_t)o.heads, .mask = ATTN_MASK_CAUSAL};
            double t0 = now_s();
            st = attn_batch_attend(ctx, sv.pool, &bd, q, out, NULL);
            double t_attend = now_s() - t0;
            if (st != ATTN_OK) {
                fprintf(stderr, "%s: step %ld: attn_batch_attend (%zu sequences, %zu rows): %s\n", argv[0], step,
                        b.n, b.rows, attn_strerror(st));
                goto done;
            }
            if (o.verify && (verify_entry(&sv, &b, 0, q, out, k, v, ref, &max_err) ||
                             verify_entry(&sv, &b, b.n - 1, q, out, k, v, ref, &max_err)))
                goto done;
            lat[n_lat] = t_append + t_attend;
            busy_s += lat[n_lat++];
            append_s += t_append;
        }
        batch_sum += b.n;
        /* Account the step: prompt rows, decoded tokens, and requests that are done. */
        for (size_t i = 0; i < b.n; i++) {
            request *r = b.req[i];
            if (r->len > r->prompt + r->generated) { /* a decode: its token's K/V went in this step */
                r->generated++;
                sv.decode_tokens++;
            } else {
                sv.prefill_tokens += b.q_lens[i];
            }
        }
        for (size_t i = 0; i < sv.n_running;) {
            request *r = sv.running[i];
            if (r->generated < r->gen || r->len < r->prompt + r->generated) {
                i++;
                continue;
            }
            if ((st = attn_seq_free(sv.pool, r->seq)) != ATTN_OK) {
                fprintf(stderr, "%s: step %ld: attn_seq_free: %s\n", argv[0], step, attn_strerror(st));
                goto done;
            }
            memmove(sv.running + i, sv.running + i + 1, (sv.n_running - i - 1) * sizeof *sv.running);
            sv.n_running--;
            sv.finished++;
        }
        const size_t used = sv.n_pages - attn_kv_pool_free_pages(sv.pool);
        pages_peak = used > pages_peak ? used : pages_peak;
        pages_sum += (double)used;
    }

    qsort(lat, n_lat, sizeof *lat, cmp_double);
    printf("requests: %zu arrived, %zu finished, %zu running, %zu waiting, %zu rejected (too long for the pool); "
           "%zu forks of the system prompt, %zu preemptions\n",
           sv.n_reqs, sv.finished, sv.n_running, sv.waiting.n, sv.rejected, sv.forks, sv.preemptions);
    printf("prefill: %zu tokens, %.1f tokens/s; decode: %zu tokens, %.1f tokens/s (each over the %.3f s the steps "
           "took: appends and attn_batch_attend)\n",
           sv.prefill_tokens, busy_s > 0 ? (double)sv.prefill_tokens / busy_s : 0.0, sv.decode_tokens,
           busy_s > 0 ? (double)sv.decode_tokens / busy_s : 0.0, busy_s);
    if (n_lat)
        printf("step latency: p50 %.3f ms, p99 %.3f ms, max %.3f ms over %zu steps with work (%.1f sequences per "
               "step on average; appends %.1f%% of the time)\n",
               1e3 * percentile(lat, n_lat, 50), 1e3 * percentile(lat, n_lat, 99), 1e3 * lat[n_lat - 1], n_lat,
               (double)batch_sum / (double)n_lat, busy_s > 0 ? 100 * append_s / busy_s : 0.0);
    else
        printf("step latency: no step had work (no request arrived)\n");
    printf("pool use: peak %zu pages (%.1f%%), mean %.1f pages (%.1f%%) of %zu, the system prompt's included\n",
           pages_peak, 100.0 * (double)pages_peak / (double)sv.n_pages, pages_sum / (double)o.steps,
           100.0 * pages_sum / (double)o.steps / (double)sv.n_pages, sv.n_pages);
    rc = 0;
    if (o.verify) {
        /* K/V rounded to the storage type move the output by about that type's relative precision. */
        const double tol = o.dtype == ATTN_F32 ? 1e-4 : o.dtype == ATTN_F16 ? 4e-3 : 3e-2;
        printf("verify: max |attn_batch_attend - attn_sdpa(fp32 inputs)| = %.3g (tolerance %.0e): %s\n", max_err,
               tol, max_err <= tol ? "ok" : "FAILED");
        rc = max_err <= tol ? 0 : 1;
    }

done:
    attn_kv_pool_destroy(sv.pool);
    attn_ctx_destroy(ctx);
    free(sv.reqs), free(sv.running), free(sv.waiting.r), free(b.req), free(b.seqs), free(b.q_lens);
    free(q), free(out), free(k), free(v), free(ref), free(lat);
    return rc;
}
