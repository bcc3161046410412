/* The KV cache and attn_decode, on every ISA and storage type: decode against the float64 reference computed on K/V
 * rounded to the storage type by an independent conversion (the compiler's _Float16 for half, frexp/nearbyint for
 * bfloat16, a double-precision row quantisation for int8), chunked appends, all-or-nothing capacity errors, reset, argument errors, and bitwise thread-count
 * independence, and 8 threads sharing one context giving the serial results bit for bit. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const attn_dtype dtypes[] = { ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8 };
static const char *const dtype_names[] = { "f32", "f16", "bf16", "i8" };
#define N_DTYPES (sizeof dtypes / sizeof dtypes[0])


Test(kvcache, decode_vs_reference, .timeout = 240)
{
    static const tc_kv_case cases[] = {
        { 2, 4, 64, 300, 1, ATTN_MASK_CAUSAL },   /* decode, key rows read in place (f32) or widened per tile */
        { 1, 8, 128, 2500, 1, ATTN_MASK_CAUSAL }, /* split-KV chunks */
        { 2, 2, 17, 100, 5, ATTN_MASK_CAUSAL },   /* head_dim not a vector multiple: the transposing pack */
        { 4, 1, 32, 1030, 3, ATTN_MASK_NONE },
        { 2, 4, 64, 400, 200, ATTN_MASK_CAUSAL }, /* a prompt through the cache: K/V packed once per call */
        { 2, 4, 64, 300, 16, ATTN_MASK_CAUSAL },  /* 64 rows, one block: stored rows in place, prefill blocking */
        /* 1 and 2 query rows per KV head (16 and 8 keys per score micro-kernel), an odd number of vectors per row,
         * lengths that leave keys over after every micro-kernel and cross split-KV chunks */
        { 3, 1, 48, 1100, 1, ATTN_MASK_CAUSAL },
        { 2, 2, 80, 333, 1, ATTN_MASK_CAUSAL },
    };
    attn_isa isas[TC_MAX_ISAS];
    const int n = tc_isas(isas);
    char msg[512];
    for (int i = 0; i < n; i++)
        for (size_t t = 0; t < N_DTYPES; t++) {
            double worst = 0.0;
            for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
                const tc_kv_case *kc = &cases[k];
                attn_ctx *ctx = NULL;
                cr_assert_eq(tc_ctx_create(&ctx, isas[i], 2, 0, 0), ATTN_OK);
                const int bad = tc_check_decode(ctx, dtypes[t], kc, tc_mix(tc_seed(), k * 3 + t), &worst, msg,
                                                sizeof msg);
                attn_ctx_destroy(ctx);
                cr_assert(!bad,
                          "ATTN_TEST_SEED=%llu isa=%s dtype=%s hk=%zu group=%zu d=%zu len=%zu q_len=%zu: %s",
                          (unsigned long long)tc_seed(), attn_isa_name(isas[i]), dtype_names[t], kc->hk, kc->group,
                          kc->d, kc->len, kc->q_len, msg);
            }
            fprintf(stderr, "[stat] kvcache::decode %-6s %-4s: %zu cases, max err out %.2e\n", attn_isa_name(isas[i]),
                    dtype_names[t], sizeof cases / sizeof cases[0], worst);
        }
}

/* Tiles that do not start on a 16-key panel of the cache's keys (block_kv 100: the pack gathers key by key) and
 * tiles that do but are not multiples of 64 keys (block_kv 48), in decode, split-KV and a prompt through the cache
 * (K packed once per call). */
Test(kvcache, decode_odd_block_kv, .timeout = 240)
{
    static const tc_kv_case cases[] = {
        { 2, 4, 64, 300, 1, ATTN_MASK_CAUSAL },
        { 1, 8, 128, 2500, 1, ATTN_MASK_CAUSAL },
        { 2, 2, 17, 100, 5, ATTN_MASK_CAUSAL },
        { 2, 4, 64, 400, 200, ATTN_MASK_CAUSAL },
        { 3, 1, 48, 1100, 3, ATTN_MASK_NONE },
    };
    static const int blocks[] = { 100, 48 };
    attn_isa isas[TC_MAX_ISAS];
    const int n = tc_isas(isas);
    char msg[512];
    for (int i = 0; i < n; i++)
        for (size_t t = 0; t < N_DTYPES; t++)
            for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
                double worst = 0.0;
                for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
                    const tc_kv_case *kc = &cases[k];
                    attn_ctx *ctx = NULL;
                    cr_assert_eq(tc_ctx_create(&ctx, isas[i], 2, 0, blocks[b]), ATTN_OK);
                    const int bad = tc_check_decode(ctx, dtypes[t], kc, tc_mix(tc_seed(), 100 + k * 7 + t * 2 + b),
                                                    &worst, msg, sizeof msg);
                    attn_ctx_destroy(ctx);
                    cr_assert(!bad,
                              "ATTN_TEST_SEED=%llu isa=%s dtype=%s block_kv=%d hk=%zu group=%zu d=%zu len=%zu "
                              "q_len=%zu: %s",
                              (unsigned long long)tc_seed(), attn_isa_name(isas[i]), dtype_names[t], blocks[b], kc->hk,
                              kc->group, kc->d, kc->len, kc->q_len, msg);
                }
                fprintf(stderr, "[stat] kvcache::odd_block_kv %-6s %-4s block_kv %3d: %zu cases, max err out %.2e\n",
                        attn_isa_name(isas[i]), dtype_names[t], blocks[b], sizeof cases / sizeof cases[0], worst);
            }
}

/* Decodes one query (all heads) from c into a malloc'd array. */
static float *decode1(const attn_ctx *ctx, const attn_kv_cache *c, const float *q, size_t heads, size_t d)
{
    float *o = malloc(heads * d * sizeof *o);
    cr_assert_eq(attn_decode(ctx, c, q, 1, heads, ATTN_MASK_CAUSAL, o), ATTN_OK);
    return o;
}

Test(kvcache, capacity_append_and_reset)
{
    const size_t hk = 2, d = 16, heads = 4, cap = 10;
    float k[12 * 2 * 16], v[12 * 2 * 16], q[4 * 16];
    tc_rng r;
    tc_rng_init(&r, tc_seed());
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        k[i] = tc_rng_float(&r, -1, 1);
        v[i] = tc_rng_float(&r, -1, 1);
    }
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = tc_rng_float(&r, -1, 1);
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    for (size_t t = 0; t < N_DTYPES; t++) {
        attn_kv_cache *c = NULL;
        cr_assert_eq(attn_kv_cache_create(&c, hk, d, cap, dtypes[t]), ATTN_OK);
        cr_assert_eq(attn_kv_cache_append(c, k, v, 0), ATTN_OK, "appending 0 tokens is a no-op");
        cr_assert_eq(attn_kv_cache_append(c, NULL, NULL, 0), ATTN_OK);
        cr_assert_eq(attn_kv_cache_len(c), 0);
        cr_assert_eq(attn_kv_cache_append(c, k, v, 7), ATTN_OK);
        float *before = decode1(ctx, c, q, heads, d);
        /* 4 more do not fit in 10: nothing is appended, what is there stays. */
        cr_assert_eq(attn_kv_cache_append(c, k + 7 * hk * d, v + 7 * hk * d, 4), ATTN_ERANGE);
        cr_assert_eq(attn_kv_cache_len(c), 7);
        float *after = decode1(ctx, c, q, heads, d);
        cr_assert(memcmp(before, after, heads * d * sizeof *after) == 0, "a refused append changed the cache");
        cr_assert_eq(attn_kv_cache_append(c, k + 7 * hk * d, v + 7 * hk * d, 3), ATTN_OK, "exactly full");
        cr_assert_eq(attn_kv_cache_len(c), cap);
        cr_assert_eq(attn_kv_cache_append(c, k, v, 1), ATTN_ERANGE);
        cr_assert_eq(attn_kv_cache_append(c, k, NULL, 1), ATTN_EINVAL);
        cr_assert_eq(attn_kv_cache_append(NULL, k, v, 1), ATTN_EINVAL);
        /* Reset, then the same 7 tokens: the same result as the first time, bit for bit. */
        attn_kv_cache_reset(c);
        cr_assert_eq(attn_kv_cache_len(c), 0);
        cr_assert_eq(attn_kv_cache_append(c, k, v, 7), ATTN_OK);
        float *again = decode1(ctx, c, q, heads, d);
        cr_assert(memcmp(before, again, heads * d * sizeof *again) == 0, "reset + append differs from fresh");
        free(before);
        free(after);
        free(again);
        attn_kv_cache_destroy(c);
    }
    attn_ctx_destroy(ctx);
}

Test(kvcache, argument_errors)
{
    attn_kv_cache *const sentinel = (attn_kv_cache *)&sentinel;
    attn_kv_cache *c = sentinel;
    cr_assert_eq(attn_kv_cache_create(NULL, 2, 8, 16, ATTN_F32), ATTN_EINVAL);
    cr_assert_eq(attn_kv_cache_create(&c, 0, 8, 16, ATTN_F32), ATTN_EINVAL);
    cr_assert_eq(attn_kv_cache_create(&c, 2, 0, 16, ATTN_F32), ATTN_EINVAL);
    cr_assert_eq(attn_kv_cache_create(&c, 2, 8, 0, ATTN_F32), ATTN_EINVAL);
    cr_assert_eq(attn_kv_cache_create(&c, 2, 8, 16, (attn_dtype)7), ATTN_EINVAL);
    cr_assert_eq(attn_kv_cache_create(&c, 2, 8, SIZE_MAX / 4, ATTN_F16), ATTN_ERANGE);
    cr_assert_eq(attn_kv_cache_create(&c, SIZE_MAX / 2, 3, 16, ATTN_F32), ATTN_ERANGE);
    cr_assert_eq(c, sentinel, "*out written on error");
    attn_kv_cache_destroy(NULL);
    attn_kv_cache_reset(NULL);
    cr_assert_eq(attn_kv_cache_len(NULL), 0);

    cr_assert_eq(attn_kv_cache_create(&c, 2, 8, 16, ATTN_BF16), ATTN_OK);
    float kv[3 * 2 * 8] = { 0 }, q[3 * 4 * 8] = { 0 };
    cr_assert_eq(attn_kv_cache_append(c, kv, kv, 3), ATTN_OK);
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    tc_buf out;
    cr_assert_eq(tc_buf_alloc(&out, 4 * 4 * 8), 0);
    cr_assert_eq(attn_decode(NULL, c, q, 1, 4, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, NULL, q, 1, 4, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, NULL, 1, 4, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, q, 1, 4, ATTN_MASK_CAUSAL, NULL), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, q, 0, 4, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, q, 1, 0, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, q, 1, 3, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL, "3 heads over 2 KV heads");
    cr_assert_eq(attn_decode(ctx, c, q, 1, 4, (attn_mask)5, out.p), ATTN_EINVAL);
    cr_assert_eq(attn_decode(ctx, c, q, 4, 4, ATTN_MASK_CAUSAL, out.p), ATTN_EINVAL, "4 queries, 3 positions");
    cr_assert(tc_buf_all_bits(&out, TC_POISON_BITS) && tc_buf_guards_ok(&out), "out written on error");
    cr_assert_eq(attn_decode(ctx, c, q, 3, 4, ATTN_MASK_CAUSAL, out.p), ATTN_OK);
    tc_buf_free(&out);
    attn_ctx_destroy(ctx);
    attn_kv_cache_destroy(c);
}

Test(kvcache, decode_thread_independent, .timeout = 240)
{
    const size_t hk = 2, d = 64, heads = 8, len = 3000;
    float *k = malloc(len * hk * d * sizeof *k), *v = malloc(len * hk * d * sizeof *v), q[8 * 64];
    tc_rng r;
    tc_rng_init(&r, tc_seed() ^ 7);
    for (size_t i = 0; i < len * hk * d; i++) {
        k[i] = tc_rng_float(&r, -2, 2);
        v[i] = tc_rng_float(&r, -1, 1);
    }
    for (size_t i = 0; i < heads * d; i++)
        q[i] = tc_rng_float(&r, -1, 1);
    attn_isa isas[TC_MAX_ISAS];
    const int n = tc_isas(isas);
    for (size_t t = 0; t < N_DTYPES; t++) {
        attn_kv_cache *c = NULL;
        cr_assert_eq(attn_kv_cache_create(&c, hk, d, len, dtypes[t]), ATTN_OK);
        cr_assert_eq(attn_kv_cache_append(c, k, v, len), ATTN_OK);
        for (int i = 0; i < n; i++) {
            float *first = NULL;
            for (int th = 1; th <= 4; th++) {
                attn_ctx *ctx = NULL;
                cr_assert_eq(tc_ctx_create(&ctx, isas[i], th, 0, 0), ATTN_OK);
                float *o = decode1(ctx, c, q, heads, d);
                attn_ctx_destroy(ctx);
                if (!first) {
                    first = o;
                    continue;
                }
                cr_assert(memcmp(first, o, heads * d * sizeof *o) == 0, "isa=%s dtype=%s: %d threads differ",
                          attn_isa_name(isas[i]), dtype_names[t], th);
                free(o);
            }
            free(first);
        }
        attn_kv_cache_destroy(c);
    }
    free(k);
    free(v);
}

/* A server: 8 threads share one context, each serving its own sequences (prefill, then decode steps) with caches
 * of every dtype; every output must equal, bit for bit, the same calls made serially. */
#define SRV_THREADS 8
#define SRV_STEPS 24
#define SRV_HK 2
#define SRV_H 4
#define SRV_D 32
#define SRV_PROMPT 40

typedef struct srv_job {
    const attn_ctx *ctx;
    unsigned id;
    float *outs; /* [SRV_STEPS][SRV_H][SRV_D] */
    int status;
} srv_job;

static void *srv_run(void *arg)
{
    srv_job *job = arg;
    const size_t row = SRV_HK * SRV_D, len = SRV_PROMPT + SRV_STEPS;
    float *k = malloc(len * row * sizeof *k), *v = malloc(len * row * sizeof *v);
    float *q = malloc(SRV_PROMPT * SRV_H * SRV_D * sizeof *q), *pout = malloc(SRV_PROMPT * SRV_H * SRV_D * sizeof *q);
    attn_kv_cache *c = NULL;
    job->status = !k || !v || !q || !pout;
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 1000 + job->id));
    for (size_t i = 0; !job->status && i < len * row; i++) {
        k[i] = tc_rng_float(&r, -2, 2);
        v[i] = tc_rng_float(&r, -1, 1);
    }
    for (size_t i = 0; !job->status && i < SRV_PROMPT * SRV_H * SRV_D; i++)
        q[i] = tc_rng_float(&r, -1, 1);
    if (!job->status)
        job->status = attn_kv_cache_create(&c, SRV_HK, SRV_D, len, dtypes[job->id % N_DTYPES]);
    if (!job->status)
        job->status = attn_kv_cache_append(c, k, v, SRV_PROMPT);
    if (!job->status)
        job->status = attn_decode(job->ctx, c, q, SRV_PROMPT, SRV_H, ATTN_MASK_CAUSAL, pout);
    for (size_t t = 0; t < SRV_STEPS && !job->status; t++) {
        job->status = attn_kv_cache_append(c, k + (SRV_PROMPT + t) * row, v + (SRV_PROMPT + t) * row, 1);
        if (!job->status) /* the step's query: the prompt's output for position t, so the chain depends on all */
            job->status = attn_decode(job->ctx, c, pout + t * SRV_H * SRV_D, 1, SRV_H, ATTN_MASK_CAUSAL,
                                      job->outs + t * SRV_H * SRV_D);
    }
    attn_kv_cache_destroy(c);
    free(k);
    free(v);
    free(q);
    free(pout);
    return NULL;
}

Test(kvcache, concurrent_callers_match_serial, .timeout = 240)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(tc_ctx_create(&ctx, ATTN_ISA_AUTO, 1, 0, 0), ATTN_OK);
    const size_t n = SRV_STEPS * SRV_H * SRV_D;
    for (int round = 0; round < 4; round++) {
        srv_job serial[SRV_THREADS], par[SRV_THREADS];
        pthread_t th[SRV_THREADS];
        for (unsigned i = 0; i < SRV_THREADS; i++) {
            serial[i] = (srv_job){ ctx, i + 8u * (unsigned)round, malloc(n * sizeof(float)), 0 };
            par[i] = (srv_job){ ctx, i + 8u * (unsigned)round, malloc(n * sizeof(float)), 0 };
            srv_run(&serial[i]);
            cr_assert_eq(serial[i].status, 0);
        }
        for (unsigned i = 0; i < SRV_THREADS; i++)
            cr_assert_eq(pthread_create(&th[i], NULL, srv_run, &par[i]), 0);
        for (unsigned i = 0; i < SRV_THREADS; i++) {
            cr_assert_eq(pthread_join(th[i], NULL), 0);
            cr_assert_eq(par[i].status, 0, "thread %u: status %d", i, par[i].status);
            cr_assert(memcmp(serial[i].outs, par[i].outs, n * sizeof(float)) == 0,
                      "ATTN_TEST_SEED=%llu thread %u (dtype %s): concurrent results differ from serial ones",
                      (unsigned long long)tc_seed(), i, dtype_names[par[i].id % 3]);
            free(serial[i].outs);
            free(par[i].outs);
        }
    }
    attn_ctx_destroy(ctx);
}
