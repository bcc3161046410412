/* concurrency-check: one context (num_threads 1) shared by 8 pthreads, each making hundreds of mixed calls, every
 * result compared bit for bit with the same call made serially first; then the 8 threads decode concurrently from
 * shared, read-only KV caches. Standalone (no Criterion, never forks); built for ThreadSanitizer by make check-tsan
 * (configure --enable-sanitize=thread --disable-openmp), where any data race ends the run.
 *
 * The mix, per thread, in an order that differs between threads:
 *   - attn_sdpa with probs: a GQA causal prefill that packs K/V tiles once per call (several query blocks), a
 *     split-KV decode, a BSHD shape with a window and kv_valid (head_dim 24: tiles packed per block);
 *   - attn_linear (bias), attn_self_attention (GQA, wo and biases, probs);
 *   - the thread's own KV cache (F32, F16 or BF16 by thread): appends of varying size, each followed by a decode
 *     of the newest position, reset and refilled when full;
 *   - attn_st_open_memory of a valid and of an invalid file, and attn_st_read_f32 (the loader keeps no global
 *     state: the reason for the invalid one must be the serial one; built without jansson, both are refused with
 *     ATTN_ENOTSUP).
 * The shared context's cached workspace is contended throughout (a call that finds it taken allocates its own).
 * ATTN_CONCURRENCY_ITERS sets the calls per thread of the first phase (default 240; the second makes a third of
 * that). Exit status 1 on any mismatch. */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define N_THREADS 8

/* ---- shared, read-only inputs and the serial results ----------------------------------------------------------- */

#define N_SDPA 3
static tc_problem sdpa_p[N_SDPA];
static float *sdpa_out[N_SDPA], *sdpa_probs[N_SDPA];
static int32_t valid2[2] = { 45, 0 };

static float *lin_x, *lin_w, *lin_b, *lin_y;
#define LIN_N 40
#define LIN_IN 48
#define LIN_OUT 56

static attn_layer layer;
static float *layer_x, *layer_mem, *layer_y, *layer_probs;
#define LAYER_N 33

/* The per-thread KV cache sequences: one token stream per dtype, appended in the same chunks by every thread that
 * uses that dtype; expected[t][step] is the decode of the newest position after step `step`. */
#define KV_HK 2
#define KV_GROUP 2
#define KV_D 32
#define KV_CAP 1500
#define KV_STEPS 24
static float *kv_k, *kv_v, *kv_q; /* [KV_CAP][KV_HK][KV_D]; q [KV_HK*KV_GROUP][KV_D] */
static size_t kv_chunk[KV_STEPS];
static float *kv_expected[3][KV_STEPS];

/* The shared read-only caches of the second phase, and their expected decodes for N_SQ query sets. */
#define SHARED_LEN 1500
#define N_SQ 6
static attn_kv_cache *shared[3];
static float *sq[N_SQ];              /* [q_len][heads][KV_D] */
static const size_t sq_len[N_SQ] = { 1, 1, 2, 3, 1, 4 };
static float *sq_expected[3][N_SQ];

/* safetensors images, and what opening them gives (built without jansson the loader refuses every file). */
#if ATTN_HAVE_JANSSON
#define ST_GOOD_STATUS ATTN_OK
#define ST_BAD_STATUS ATTN_EINVAL
#else
#define ST_GOOD_STATUS ATTN_ENOTSUP
#define ST_BAD_STATUS ATTN_ENOTSUP
#endif
static unsigned char st_good[1024], st_bad[256];
static size_t st_good_n, st_bad_n;
static char st_bad_reason[256];
static float st_values[12];

static const attn_ctx *ctx;

static size_t sq_floats(int i) { return sq_len[i] * KV_HK * KV_GROUP * KV_D; }
static const size_t kv_out_floats = KV_HK * KV_GROUP * KV_D;

static float *new_uniform(size_t n, uint64_t seed, float scale)
{
    float *p = malloc(n * sizeof *p);
    tc_rng r;
    tc_rng_init(&r, seed);
    for (size_t i = 0; p && i < n; i++)
        p[i] = scale * tc_rng_float(&r, -1.0f, 1.0f);
    return p;
}

static int build_safetensors(void)
{
    /* "a": F32 [2, 3]; "b": F16 [6]. */
    const char *hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                      "\"b\":{\"dtype\":\"F16\",\"shape\":[6],\"data_offsets\":[24,36]},"
                      "\"__metadata__\":{\"k\":\"v\"}}";
    const size_t hn = strlen(hdr);
    for (int i = 0; i < 8; i++)
        st_good[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(st_good + 8, hdr, hn);
    unsigned char *p = st_good + 8 + hn;
    for (int i = 0; i < 6; i++) {
        st_values[i] = (float)(i - 2) * 0.375f;
        const uint32_t u = tc_f2u(st_values[i]);
        for (int b = 0; b < 4; b++)
            *p++ = (unsigned char)(u >> (8 * b));
    }
    for (int i = 0; i < 6; i++) {
        st_values[6 + i] = (float)(i + 1) * 0.5f;
        _Float16 h = (_Float16)st_values[6 + i];
        uint16_t u;
        memcpy(&u, &h, 2);
        *p++ = (unsigned char)(u & 0xff);
        *p++ = (unsigned char)(u >> 8);
    }
    st_good_n = (size_t)(p - st_good);
    /* Invalid: data_offsets past the end. */
    const char *bad = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,800]}}";
    const size_t bn = strlen(bad);
    for (int i = 0; i < 8; i++)
        st_bad[i] = (unsigned char)((uint64_t)bn >> (8 * i));
    memcpy(st_bad + 8, bad, bn);
    memset(st_bad + 8 + bn, 0, 8);
    st_bad_n = 8 + bn + 8;
    attn_st *f = NULL;
    attn_status s = attn_st_open_memory(&f, st_bad, st_bad_n, st_bad_reason, sizeof st_bad_reason);
    if (s != ST_BAD_STATUS) {
        if (s == ATTN_OK)
            attn_st_close(f);
        fprintf(stderr, "concurrency-check: the invalid safetensors image gave %s\n", attn_strerror(s));
        return -1;
    }
    if ((s = attn_st_open_memory(&f, st_good, st_good_n, NULL, 0)) != ST_GOOD_STATUS) {
        fprintf(stderr, "concurrency-check: the valid safetensors image gave %s\n", attn_strerror(s));
        return -1;
    }
    attn_st_close(f);
    return 0;
}

static int prepare(uint64_t seed)
{
    attn_sdpa_desc d[N_SDPA];
    d[0] = tc_shape(1, 4, 2, 70, 90, 32, 0); /* several query blocks of 32 rows: K/V tiles packed once per call */
    d[0].mask = ATTN_MASK_CAUSAL;
    d[1] = tc_shape(1, 4, 1, 1, 1500, 16, 0); /* decode: split into key chunks */
    d[1].mask = ATTN_MASK_CAUSAL;
    d[2] = tc_shape(2, 3, 3, 20, 50, 24, 20); /* BSHD, window, padding (one sequence fully masked) */
    d[2].layout = ATTN_LAYOUT_BSHD;
    d[2].mask = ATTN_MASK_CAUSAL;
    d[2].window = 9;
    d[2].kv_valid = valid2;
    for (int i = 0; i < N_SDPA; i++) {
        if (tc_problem_init(&sdpa_p[i], &d[i]))
            return -1;
        tc_problem_fill(&sdpa_p[i], tc_mix(seed, (uint64_t)i), TC_FILL_UNIFORM);
        if (tc_run(ctx, &sdpa_p[i], 1, &sdpa_out[i], &sdpa_probs[i]) != ATTN_OK)
            return -1;
    }

    lin_x = new_uniform(LIN_N * LIN_IN, tc_mix(seed, 10), 1.0f);
    lin_w = new_uniform(LIN_OUT * LIN_IN, tc_mix(seed, 11), 0.3f);
    lin_b = new_uniform(LIN_OUT, tc_mix(seed, 12), 1.0f);
    lin_y = malloc(LIN_N * LIN_OUT * sizeof *lin_y);
    if (!lin_x || !lin_w || !lin_b || !lin_y || attn_linear(ctx, lin_x, LIN_N, LIN_IN, lin_w, lin_b, LIN_OUT, lin_y))
        return -1;

    layer = (attn_layer){ .d_model = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8 };
    size_t sizes[8];
    layer.wq = layer.wk = layer.wv = layer.wo = layer.bq = layer.bk = layer.bv = layer.bo = lin_x; /* for the sizes */
    tc_layer_sizes(&layer, sizes);
    size_t total = 0;
    for (int i = 0; i < 8; i++)
        total += sizes[i];
    layer_mem = new_uniform(total, tc_mix(seed, 20), 0.3f);
    layer_x = new_uniform(LAYER_N * 32, tc_mix(seed, 21), 1.0f);
    layer_y = malloc(LAYER_N * 32 * sizeof *layer_y);
    layer_probs = malloc(4 * LAYER_N * LAYER_N * sizeof *layer_probs);
    if (!layer_mem || !layer_x || !layer_y || !layer_probs)
        return -1;
    const float *part[8];
    for (size_t i = 0, o = 0; i < 8; o += sizes[i], i++)
        part[i] = layer_mem + o;
    layer.wq = part[0], layer.wk = part[1], layer.wv = part[2], layer.wo = part[3]; /* const void * since v1 */
    layer.bq = part[4], layer.bk = part[5], layer.bv = part[6], layer.bo = part[7];
    if (attn_self_attention(ctx, &layer, layer_x, LAYER_N, ATTN_MASK_CAUSAL, layer_y, layer_probs) != ATTN_OK)
        return -1;

    kv_k = new_uniform(KV_CAP * KV_HK * KV_D, tc_mix(seed, 30), 2.0f);
    kv_v = new_uniform(KV_CAP * KV_HK * KV_D, tc_mix(seed, 31), 1.0f);
    kv_q = new_uniform(kv_out_floats, tc_mix(seed, 32), 1.0f);
    if (!kv_k || !kv_v || !kv_q)
        return -1;
    tc_rng r;
    tc_rng_init(&r, tc_mix(seed, 33));
    size_t at = 0;
    for (int s = 0; s < KV_STEPS; s++) {
        kv_chunk[s] = 1 + tc_rng_below(&r, KV_CAP / KV_STEPS); /* at most KV_CAP in all */
        at += kv_chunk[s];
    }
    if (at > KV_CAP)
        return -1;
    for (int t = 0; t < 3; t++) {
        attn_kv_cache *c = NULL;
        if (attn_kv_cache_create(&c, KV_HK, KV_D, KV_CAP, (attn_dtype)t) != ATTN_OK)
            return -1;
        at = 0;
        for (int s = 0; s < KV_STEPS; s++) {
            kv_expected[t][s] = malloc(kv_out_floats * sizeof(float));
            if (!kv_expected[t][s] ||
                attn_kv_cache_append(c, kv_k + at * KV_HK * KV_D, kv_v + at * KV_HK * KV_D, kv_chunk[s]) != ATTN_OK ||
                attn_decode(ctx, c, kv_q, 1, KV_HK * KV_GROUP, ATTN_MASK_CAUSAL, kv_expected[t][s]) != ATTN_OK) {
                attn_kv_cache_destroy(c);
                return -1;
            }
            at += kv_chunk[s];
        }
        attn_kv_cache_destroy(c);
    }

    float *sk = new_uniform(SHARED_LEN * KV_HK * KV_D, tc_mix(seed, 40), 2.0f);
    float *sv = new_uniform(SHARED_LEN * KV_HK * KV_D, tc_mix(seed, 41), 1.0f);
    if (!sk || !sv)
        return -1;
    for (int i = 0; i < N_SQ; i++)
        if (!(sq[i] = new_uniform(sq_floats(i), tc_mix(seed, 50 + (uint64_t)i), 1.0f)))
            return -1;
    for (int t = 0; t < 3; t++) {
        if (attn_kv_cache_create(&shared[t], KV_HK, KV_D, SHARED_LEN, (attn_dtype)t) != ATTN_OK ||
            attn_kv_cache_append(shared[t], sk, sv, SHARED_LEN) != ATTN_OK)
            return -1;
        for (int i = 0; i < N_SQ; i++) {
            sq_expected[t][i] = malloc(sq_floats(i) * sizeof(float));
            if (!sq_expected[t][i] || attn_decode(ctx, shared[t], sq[i], sq_len[i], KV_HK * KV_GROUP,
                                                  i % 2 ? ATTN_MASK_NONE : ATTN_MASK_CAUSAL, sq_expected[t][i]))
                return -1;
        }
    }
    free(sk), free(sv);
    return build_safetensors();
}

/* ---- the threads ----------------------------------------------------------------------------------------------- */

typedef struct worker {
    int id;
    unsigned long iters, calls, mismatches;
    char first[512];
    pthread_t thread;
} worker;

static pthread_barrier_t start;
static int phase;

static void mismatch(worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mismatch(worker *w, const char *fmt, ...)
{
    if (!w->mismatches++) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first, sizeof w->first, fmt, ap);
        va_end(ap);
    }
}

/* Index of the first element whose bits differ, or n. */
static size_t first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tc_f2u(a[i]) != tc_f2u(b[i]))
            return i;
    return n;
}

static void expect_same(worker *w, const char *what, const float *got, const float *want, size_t n)
{
    const size_t i = first_diff(got, want, n);
    if (i < n)
        mismatch(w, "%s: element %zu is %.9g, serially %.9g", what, i, (double)got[i], (double)want[i]);
}

static void expect_ok(worker *w, const char *what, attn_status s)
{
    if (s != ATTN_OK)
        mismatch(w, "%s returned %d (%s)", what, (int)s, attn_strerror(s));
}

typedef struct bufs {
    float *out, *probs;
    attn_kv_cache *cache;
    size_t kv_at;
    int kv_step;
} bufs;

static void one_call(worker *w, bufs *b, unsigned long it)
{
    const unsigned kind = (unsigned)((it * 5 + (unsigned long)w->id * 3) % 8);
    w->calls++;
    switch (kind) {
    case 0: case 1: case 2: {
        const tc_problem *p = &sdpa_p[kind];
        expect_ok(w, "attn_sdpa", attn_sdpa(ctx, &p->d, p->q, p->k, p->v, b->out, b->probs));
        expect_same(w, kind == 0 ? "attn_sdpa prefill out" : kind == 1 ? "attn_sdpa decode out" : "attn_sdpa BSHD out",
                    b->out, sdpa_out[kind], p->nout);
        expect_same(w, "attn_sdpa probs", b->probs, sdpa_probs[kind], p->nprobs);
        break;
    }
    case 3:
        expect_ok(w, "attn_linear", attn_linear(ctx, lin_x, LIN_N, LIN_IN, lin_w, lin_b, LIN_OUT, b->out));
        expect_same(w, "attn_linear y", b->out, lin_y, LIN_N * LIN_OUT);
        break;
    case 4:
        expect_ok(w, "attn_self_attention",
                  attn_self_attention(ctx, &layer, layer_x, LAYER_N, ATTN_MASK_CAUSAL, b->out, b->probs));
        expect_same(w, "attn_self_attention y", b->out, layer_y, LAYER_N * 32);
        expect_same(w, "attn_self_attention probs", b->probs, layer_probs, 4 * LAYER_N * LAYER_N);
        break;
    case 5: {
        attn_st *f = NULL;
        char err[256] = "";
        float vals[12];
        attn_status s = attn_st_open_memory(&f, st_good, st_good_n, err, sizeof err);
        if (s != ST_GOOD_STATUS)
            mismatch(w, "attn_st_open_memory of the valid image returned %d (%s)", (int)s, attn_strerror(s));
        if (s == ATTN_OK) {
            expect_ok(w, "attn_st_read_f32", attn_st_read_f32(f, "a", vals, 6));
            expect_ok(w, "attn_st_read_f32", attn_st_read_f32(f, "b", vals + 6, 6));
            expect_same(w, "attn_st_read_f32", vals, st_values, 12);
            const char *m = attn_st_metadata(f, "k");
            if (!m || strcmp(m, "v"))
                mismatch(w, "attn_st_metadata gave %s", m ? m : "NULL");
            attn_st_close(f);
        }
        s = attn_st_open_memory(&f, st_bad, st_bad_n, err, sizeof err);
        if (s != ST_BAD_STATUS || strcmp(err, st_bad_reason))
            mismatch(w, "the invalid image gave %d \"%s\", serially \"%s\"", (int)s, err, st_bad_reason);
        break;
    }
    default: { /* 6, 7: the thread's own cache */
        const int t = w->id % 3;
        if (b->kv_step == KV_STEPS) {
            attn_kv_cache_reset(b->cache);
            b->kv_step = 0;
            b->kv_at = 0;
        }
        const size_t n = kv_chunk[b->kv_step], row = KV_HK * KV_D;
        expect_ok(w, "attn_kv_cache_append",
                  attn_kv_cache_append(b->cache, kv_k + b->kv_at * row, kv_v + b->kv_at * row, n));
        b->kv_at += n;
        if (attn_kv_cache_len(b->cache) != b->kv_at)
            mismatch(w, "cache length %zu, expected %zu", attn_kv_cache_len(b->cache), b->kv_at);
        expect_ok(w, "attn_decode", attn_decode(ctx, b->cache, kv_q, 1, KV_HK * KV_GROUP, ATTN_MASK_CAUSAL, b->out));
        expect_same(w, t == 0 ? "own F32 cache decode" : t == 1 ? "own F16 cache decode" : "own BF16 cache decode",
                    b->out, kv_expected[t][b->kv_step], kv_out_floats);
        b->kv_step++;
        break;
    }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    bufs b = { 0 };
    const size_t nbuf = 32768; /* floats: the largest output, the prefill's probs (4 * 70 * 90), fits */
    b.out = malloc(nbuf * sizeof(float));
    b.probs = malloc(nbuf * sizeof(float));
    if (!b.out || !b.probs || attn_kv_cache_create(&b.cache, KV_HK, KV_D, KV_CAP, (attn_dtype)(w->id % 3))) {
        mismatch(w, "out of memory");
        pthread_barrier_wait(&start);
        goto done;
    }
    pthread_barrier_wait(&start);
    if (phase == 1) {
        for (unsigned long it = 0; it < w->iters; it++)
            one_call(w, &b, it);
    } else {
        for (unsigned long it = 0; it < w->iters; it++) {
            const int t = (int)((it + (unsigned long)w->id) % 3), i = (int)((it * 7 + (unsigned long)w->id) % N_SQ);
            w->calls++;
            expect_ok(w, "attn_decode (shared cache)",
                      attn_decode(ctx, shared[t], sq[i], sq_len[i], KV_HK * KV_GROUP,
                                  i % 2 ? ATTN_MASK_NONE : ATTN_MASK_CAUSAL, b.out));
            expect_same(w, t == 0 ? "shared F32 cache decode" : t == 1 ? "shared F16 cache decode"
                                                                       : "shared BF16 cache decode",
                        b.out, sq_expected[t][i], sq_floats(i));
            if (attn_kv_cache_len(shared[t]) != SHARED_LEN)
                mismatch(w, "a shared cache's length changed to %zu", attn_kv_cache_len(shared[t]));
        }
    }
done:
    attn_kv_cache_destroy(b.cache);
    free(b.out);
    free(b.probs);
    return NULL;
}

static int run_phase(int which, unsigned long iters, unsigned long *calls)
{
    worker w[N_THREADS];
    phase = which;
    if (pthread_barrier_init(&start, NULL, N_THREADS) != 0)
        return -1;
    int started = 0;
    for (int i = 0; i < N_THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        w[i].iters = iters;
    }
    for (; started < N_THREADS; started++)
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0)
            break;
    if (started < N_THREADS) {
        fprintf(stderr, "concurrency-check: pthread_create failed\n");
        exit(1); /* the started threads wait at the barrier forever */
    }
    unsigned long bad = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(w[i].thread, NULL);
        *calls += w[i].calls;
        if (w[i].mismatches) {
            printf("FAIL thread %d: %lu mismatches; first: %s\n", i, w[i].mismatches, w[i].first);
            bad += w[i].mismatches;
        }
    }
    pthread_barrier_destroy(&start);
    return bad ? 1 : 0;
}

int main(void)
{
    const uint64_t seed = tc_seed();
    const char *e = getenv("ATTN_CONCURRENCY_ITERS");
    unsigned long iters = e && *e ? strtoul(e, NULL, 10) : 240;
    if (!iters)
        iters = 1;
    attn_ctx *c = NULL;
    /* Blocks of 32 query rows and 64 keys: the prefill shape gets several blocks per KV head (packed tiles). */
    attn_status s = tc_ctx_create(&c, ATTN_ISA_AUTO, 1, 32, 64);
    if (s != ATTN_OK) {
        printf("concurrency-check: attn_ctx_create: %s\n", attn_strerror(s));
        return 1;
    }
    ctx = c;
    printf("concurrency-check: attn %s, isa %s, %d threads x %lu calls, seed %" PRIu64
           " (replay with ATTN_TEST_SEED=%" PRIu64 ")\n",
           attn_version(), attn_isa_name(attn_ctx_isa(ctx)), N_THREADS, iters, seed, seed);
    if (prepare(seed)) {
        printf("concurrency-check: the serial runs failed (out of memory?)\n");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned long calls1 = 0, calls2 = 0;
    int bad = run_phase(1, iters, &calls1);
    bad |= run_phase(2, iters / 3 ? iters / 3 : 1, &calls2);
    clock_gettime(CLOCK_MONOTONIC, &t1);

    for (int i = 0; i < N_SDPA; i++) {
        tc_problem_free(&sdpa_p[i]);
        free(sdpa_out[i]), free(sdpa_probs[i]);
    }
    free(lin_x), free(lin_w), free(lin_b), free(lin_y);
    free(layer_x), free(layer_mem), free(layer_y), free(layer_probs);
    free(kv_k), free(kv_v), free(kv_q);
    for (int t = 0; t < 3; t++) {
        for (int s2 = 0; s2 < KV_STEPS; s2++)
            free(kv_expected[t][s2]);
        for (int i = 0; i < N_SQ; i++)
            free(sq_expected[t][i]);
        attn_kv_cache_destroy(shared[t]);
    }
    for (int i = 0; i < N_SQ; i++)
        free(sq[i]);
    attn_ctx_destroy(c);
    printf("concurrency-check: %lu mixed calls on one shared context, %lu decodes of shared caches, %.1f s: %s\n",
           calls1, calls2, (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
           bad ? "MISMATCHES" : "all bitwise equal to the serial results");
    return bad;
}
