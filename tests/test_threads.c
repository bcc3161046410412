/* Thread-count independence and calls from inside the caller's OpenMP team. Each output row is computed by one
 * thread in a fixed order (split-KV merges in a fixed order too), so results must be bitwise equal for any
 * num_threads, and a call from inside a parallel region runs on the calling thread alone with the same result. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"

#define N_PROBLEMS 5

static int32_t valid2[2] = { 131, 77 };
static int32_t valid1[1] = { 3500 }; /* query at 3999 sees keys 3300..3499 */

static attn_sdpa_desc problem_desc(int i)
{
    attn_sdpa_desc d;
    switch (i) {
    case 0: /* prefill: many query blocks, padding, GQA, BSHD */
        d = tc_shape(2, 4, 2, 67, 131, 40, 0);
        d.mask = ATTN_MASK_CAUSAL;
        d.kv_valid = valid2;
        d.layout = ATTN_LAYOUT_BSHD;
        break;
    case 1: /* decode over a long GQA cache: batch * kv_heads < threads, so the key range may be split */
        d = tc_shape(1, 8, 2, 1, 3001, 64, 0);
        d.mask = ATTN_MASK_CAUSAL;
        break;
    case 2: /* MQA decode, a few queries, no mask */
        d = tc_shape(1, 4, 1, 3, 2000, 32, 0);
        break;
    case 3: /* decode with padding and a window: most key chunks of a split see nothing */
        d = tc_shape(1, 4, 1, 1, 4000, 16, 0);
        d.mask = ATTN_MASK_CAUSAL;
        d.window = 700;
        d.kv_valid = valid1;
        break;
    default: /* one head, one sequence: nothing to split but query blocks */
        d = tc_shape(1, 1, 0, 300, 300, 17, 0);
        d.mask = ATTN_MASK_CAUSAL;
        d.window = 50;
        break;
    }
    return d;
}

/* Index of the first element whose bits differ, or n. */
static size_t first_diff(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tc_f2u(a[i]) != tc_f2u(b[i]))
            return i;
    return n;
}

Test(threads, deterministic, .timeout = 240)
{
    static const int threads[] = { 2, 3, 4 };
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    for (int pi = 0; pi < N_PROBLEMS; pi++) {
        attn_sdpa_desc d = problem_desc(pi);
        char desc[512];
        tc_desc_str(&d, desc, sizeof desc);
        tc_problem p;
        cr_assert_eq(tc_problem_init(&p, &d), 0);
        tc_problem_fill(&p, tc_mix(tc_seed(), (uint64_t)pi), TC_FILL_UNIFORM);
        for (int ii = 0; ii < n_isa; ii++) {
            int probs = pi != 2; /* one without probs: the no-probs path may be a different loop */
            float *out1, *probs1;
            attn_ctx *ctx = NULL;
            cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 1, 0, 0), ATTN_OK);
            cr_assert_eq(tc_run(ctx, &p, probs, &out1, &probs1), ATTN_OK);
            attn_ctx_destroy(ctx);
            for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
                float *outn, *probsn;
                cr_assert_eq(tc_ctx_create(&ctx, isas[ii], threads[t], 0, 0), ATTN_OK);
                cr_assert_eq(attn_ctx_threads(ctx), threads[t]);
                cr_assert_eq(tc_run(ctx, &p, probs, &outn, &probsn), ATTN_OK);
                attn_ctx_destroy(ctx);
                size_t e = first_diff(out1, outn, p.nout);
                cr_assert(e == p.nout,
                          "ATTN_TEST_SEED=%llu isa=%s [%s]: out[%zu] with %d threads %.9g, 1 thread %.9g",
                          (unsigned long long)tc_seed(), attn_isa_name(isas[ii]), desc, e, threads[t],
                          (double)outn[e], (double)out1[e]);
                e = probs ? first_diff(probs1, probsn, p.nprobs) : 0;
                cr_assert(!probs || e == p.nprobs,
                          "ATTN_TEST_SEED=%llu isa=%s [%s]: probs[%zu] with %d threads %.9g, 1 thread %.9g",
                          (unsigned long long)tc_seed(), attn_isa_name(isas[ii]), desc, e, threads[t],
                          (double)probsn[e], (double)probs1[e]);
                free(outn);
                free(probsn);
            }
            free(out1);
            free(probs1);
        }
        tc_problem_free(&p);
    }
}

/* A server that runs one request per OpenMP thread shares one context across its team. */
Test(threads, inside_omp_parallel, .timeout = 240)
{
#ifndef _OPENMP
    cr_skip_test("tests built without -fopenmp");
#else
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    tc_problem p[N_PROBLEMS];
    for (int i = 0; i < N_PROBLEMS; i++) {
        attn_sdpa_desc d = problem_desc(i);
        cr_assert_eq(tc_problem_init(&p[i], &d), 0);
        tc_problem_fill(&p[i], tc_mix(tc_seed(), 100 + (uint64_t)i), TC_FILL_UNIFORM);
    }
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        float *out[N_PROBLEMS], *probs[N_PROBLEMS];
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 2, 0, 0), ATTN_OK);
        for (int i = 0; i < N_PROBLEMS; i++)
            cr_assert_eq(tc_run(ctx, &p[i], 1, &out[i], &probs[i]), ATTN_OK);
        for (int rep = 0; rep < 2; rep++) {
            float *pout[N_PROBLEMS], *pprobs[N_PROBLEMS];
            attn_status st[N_PROBLEMS];
            int team = 0;
            /* Each thread owns its buffers; only ctx is shared. Results are checked after the region because
             * Criterion's asserts must not jump out of an OpenMP thread. */
#pragma omp parallel for num_threads(N_PROBLEMS) schedule(static, 1) reduction(max : team)
            for (int i = 0; i < N_PROBLEMS; i++) {
                team = omp_get_num_threads();
                st[i] = tc_run(ctx, &p[i], 1, &pout[i], &pprobs[i]);
            }
            for (int i = 0; i < N_PROBLEMS; i++) {
                char desc[512];
                tc_desc_str(&p[i].d, desc, sizeof desc);
                cr_assert_eq(st[i], ATTN_OK, "isa=%s [%s]: %s", attn_isa_name(isas[ii]), desc,
                             attn_strerror(st[i]));
                cr_assert(first_diff(out[i], pout[i], p[i].nout) == p[i].nout &&
                              first_diff(probs[i], pprobs[i], p[i].nprobs) == p[i].nprobs,
                          "ATTN_TEST_SEED=%llu isa=%s [%s]: result inside a team of %d differs from a serial call",
                          (unsigned long long)tc_seed(), attn_isa_name(isas[ii]), desc, team);
                free(pout[i]);
                free(pprobs[i]);
            }
        }
        for (int i = 0; i < N_PROBLEMS; i++) {
            free(out[i]);
            free(probs[i]);
        }
        attn_ctx_destroy(ctx);
    }
    /* And the serial results are right, not just stable. */
    for (int i = 0; i < N_PROBLEMS; i++) {
        char msg[1024];
        cr_assert(!tc_check_isas(&p[i], 1, NULL, msg, sizeof msg), "%s", msg);
        tc_problem_free(&p[i]);
    }
#endif
}
