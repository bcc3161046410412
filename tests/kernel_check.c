/* kernel-check: every ISA this CPU runs against the float64 reference on a sweep of small shapes, like dav1d's
 * checkasm. Standalone (no Criterion, never forks) so it also runs under qemu-aarch64 for the NEON kernels.
 * Exit status 1 on any failure, with the seed and the case; ATTN_TEST_SEED replays a run. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "mha_fixtures.h"

static const size_t dims[] = { 1, 3, 17, 64 };
static const size_t lens[] = { 1, 5, 16, 17, 100 };
#define N_DIMS (sizeof dims / sizeof dims[0])
#define N_LENS (sizeof lens / sizeof lens[0])

/* Case c of the sweep: head_dim and both lengths walk the tables, the rest is drawn from the case's seed. */
static void make_case(uint64_t seed, size_t c, attn_sdpa_desc *d, int32_t valid[2], int *want_probs)
{
    static const size_t heads[][2] = { { 1, 0 }, { 2, 2 }, { 4, 2 }, { 4, 1 }, { 3, 1 } };
    tc_rng r;
    tc_rng_init(&r, tc_mix(seed, c));
    memset(d, 0, sizeof *d);
    size_t h = tc_rng_below(&r, sizeof heads / sizeof heads[0]);
    d->batch = 1 + tc_rng_below(&r, 2);
    d->n_heads = heads[h][0];
    d->n_kv_heads = heads[h][1];
    d->head_dim = dims[c % N_DIMS];
    d->q_len = lens[(c / N_DIMS) % N_LENS];
    d->kv_len = lens[(c / (N_DIMS * N_LENS)) % N_LENS];
    d->v_dim = tc_rng_below(&r, 3) ? 0 : dims[tc_rng_below(&r, N_DIMS)];
    d->layout = (attn_layout)tc_rng_below(&r, 2);
    if (tc_rng_below(&r, 2)) {
        d->mask = ATTN_MASK_CAUSAL;
        if (tc_rng_below(&r, 4) == 0)
            d->window = 1 + tc_rng_below(&r, (uint32_t)d->kv_len + 1);
    }
    if (tc_rng_below(&r, 3) == 0) {
        tc_random_kv_valid(&r, valid, d->batch, d->kv_len);
        d->kv_valid = valid;
    }
    *want_probs = (int)tc_rng_below(&r, 2);
}

/* attn_self_attention on every torch.nn.MultiheadAttention fixture (tests/mha_fixtures.h), with probs and without,
 * on each ISA: the projection GEMM and the whole layer of each kernel set, NEON included under qemu. Adds one pass
 * or failure per (ISA, fixture, probs) to *passed / *failed. */
static void check_mha_fixtures(const attn_isa *isas, int n_isa, int threads, unsigned long *passed,
                               unsigned long *failed)
{
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        if (tc_ctx_create(&ctx, isas[ii], threads, 0, 0) != ATTN_OK) {
            printf("FAIL %s: attn_ctx_create for the layer fixtures\n", attn_isa_name(isas[ii]));
            (*failed)++;
            continue;
        }
        tc_layer_stats st = { 0 };
        unsigned long isa_failed = 0;
        for (size_t fi = 0; fi < MHA_N_FIXTURES; fi++) {
            const mha_fixture *f = &mha_fixtures[fi];
            attn_layer w;
            memset(&w, 0, sizeof w);
            w.d_model = f->d_model;
            w.n_heads = f->n_heads;
            w.n_kv_heads = f->n_kv_heads;
            w.head_dim = f->head_dim;
            w.wq = f->wq, w.wk = f->wk, w.wv = f->wv, w.wo = f->wo;
            w.bq = f->bq, w.bk = f->bk, w.bv = f->bv, w.bo = f->bo;
            const size_t ny = f->n_tokens * f->d_model, np = f->n_heads * f->n_tokens * f->n_tokens;
            double *ry = malloc(ny * sizeof *ry), *rp = malloc(np * sizeof *rp);
            for (size_t i = 0; ry && rp && i < ny; i++)
                ry[i] = f->y[i];
            for (size_t i = 0; ry && rp && i < np; i++)
                rp[i] = f->probs[i];
            for (int probs = 1; probs >= 0; probs--) {
                char msg[1024];
                if (!ry || !rp) {
                    snprintf(msg, sizeof msg, "out of memory");
                } else if (!tc_check_layer(ctx, &w, f->x, f->n_tokens, f->mask, probs, ry, rp, TC_LAYER_TOL, &st,
                                           msg, sizeof msg)) {
                    (*passed)++;
                    continue;
                }
                printf("FAIL torch fixture %s%s: %s\n", f->name, probs ? " (probs)" : "", msg);
                isa_failed++;
            }
            free(ry);
            free(rp);
        }
        printf("%-6s: %zu torch MultiheadAttention fixtures, max err y %.2e probs %.2e rowsum %.2e, %lu failed\n",
               attn_isa_name(isas[ii]), (size_t)MHA_N_FIXTURES, st.err_y, st.err_probs, st.err_rowsum, isa_failed);
        *failed += isa_failed;
        attn_ctx_destroy(ctx);
    }
}

/* ---- F16/BF16 tensors and ATTN_MATH_BF16 -------------------------------------------------------------------
 * Every (q_dtype, kv_dtype, out_dtype) once, each in both math modes, on every ISA, against the float64 reference
 * from the stored (and, for ATTN_MATH_BF16, bfloat16-rounded) values with the contract's tolerances
 * (tc_typed_check): the widening of half and bfloat16 tiles, the rounding of Q, K, V and P, and the rounded outputs
 * of each kernel set, NEON's under qemu included. Small shapes (qemu), drawn from the run's seed; one pass or
 * failure per (ISA, case, math mode). */
static void check_dtypes(const attn_isa *isas, int n_isa, int threads, uint64_t seed, unsigned long *passed,
                         unsigned long *failed)
{
    static const attn_dtype types[3] = { ATTN_F32, ATTN_F16, ATTN_BF16 };
    static const size_t heads[][2] = { { 1, 0 }, { 2, 1 }, { 4, 2 }, { 3, 3 }, { 4, 1 } };
    static const size_t widths[] = { 1, 7, 16, 33, 64, 80 };
    attn_ctx *ctx[TC_MAX_ISAS] = { NULL };
    tc_stats st[TC_MAX_ISAS][2];
    unsigned long isa_failed[TC_MAX_ISAS] = { 0 };
    memset(st, 0, sizeof st);
    for (int ii = 0; ii < n_isa; ii++)
        if (tc_ctx_create(&ctx[ii], isas[ii], threads, ii % 2 ? 24 : 0, ii % 2 ? 32 : 0) != ATTN_OK) {
            printf("FAIL %s: attn_ctx_create for the dtype checks\n", attn_isa_name(isas[ii]));
            ctx[ii] = NULL;
            (*failed)++;
        }
    tc_rng r;
    tc_rng_init(&r, tc_mix(seed, 0xd7e5));
    const unsigned offset = tc_rng_below(&r, 27);
    for (unsigned c = 0; c < 27; c++) {
        const unsigned combo = (offset + c) % 27;
        const size_t h = tc_rng_below(&r, sizeof heads / sizeof heads[0]);
        const size_t q = tc_rng_below(&r, 2) ? 1 + tc_rng_below(&r, 8) : 1 + tc_rng_below(&r, 40);
        attn_sdpa_desc d = tc_shape(1 + tc_rng_below(&r, 2), heads[h][0], heads[h][1], q, 1 + tc_rng_below(&r, 90),
                                    widths[tc_rng_below(&r, 6)], tc_rng_below(&r, 2) ? 0 : widths[tc_rng_below(&r, 6)]);
        int32_t valid[2];
        d.layout = (attn_layout)tc_rng_below(&r, 2);
        if (tc_rng_below(&r, 2)) {
            d.mask = ATTN_MASK_CAUSAL;
            d.window = tc_rng_below(&r, 4) ? 0 : 1 + tc_rng_below(&r, (uint32_t)d.kv_len);
        }
        if (tc_rng_below(&r, 3) == 0) {
            tc_random_kv_valid(&r, valid, d.batch, d.kv_len);
            d.kv_valid = valid;
        }
        d.q_dtype = types[combo / 9];
        d.kv_dtype = types[combo / 3 % 3];
        d.out_dtype = types[combo % 3];
        const int want_probs = (int)tc_rng_below(&r, 2);
        tc_typed t;
        if (tc_typed_init(&t, &d)) {
            printf("FAIL dtype case %u: out of memory\n", c);
            (*failed)++;
            continue;
        }
        tc_typed_fill(&t, tc_mix(seed ^ 0xd7e5, c), tc_rng_below(&r, 3) ? 1.0f : 3.0f);
        for (int m = 0; m < 2; m++) {
            tc_typed_ref ref;
            t.p.d.math = (attn_math)m;
            if (tc_typed_ref_init(&ref, &t, (attn_math)m, want_probs)) {
                printf("FAIL dtype case %u: out of memory\n", c);
                (*failed)++;
                continue;
            }
            for (int ii = 0; ii < n_isa; ii++) {
                char msg[1024];
                tc_stats one = { 0 };
                if (!ctx[ii])
                    continue;
                const int bad = tc_typed_check(ctx[ii], &t, &ref, want_probs, &one, NULL, NULL, msg, sizeof msg);
                if (bad) {
                    if (isa_failed[ii] < 5)
                        printf("FAIL dtype case %u%s: %s\n", c, want_probs ? " (probs)" : "", msg);
                    isa_failed[ii]++;
                    (*failed)++;
                } else {
                    tc_stats_merge(&st[ii][m], &one);
                    (*passed)++;
                }
            }
            tc_typed_ref_free(&ref);
        }
        tc_typed_free(&t);
    }
    for (int ii = 0; ii < n_isa; ii++) {
        if (!ctx[ii])
            continue;
        printf("%-6s: 27 q/kv/out dtype cases (f32/f16/bf16) x math f32/bf16, max err out %.2e (f32, of max(1,|ref|)) "
               "%.2e (bf16, of max|v|), probs %.2e / %.2e, %lu failed\n",
               attn_isa_name(isas[ii]), st[ii][0].err_out, st[ii][1].err_out, st[ii][0].err_probs,
               st[ii][1].err_probs, isa_failed[ii]);
        attn_ctx_destroy(ctx[ii]);
    }
}

/* ---- robustness checks: the caller's FP control state and subnormal inputs, per ISA ----------------
 * tc_fp_env_check (tests/common.c) on every ISA: no call changes the calling thread's MXCSR (FTZ/DAZ set and clear)
 * or, on AArch64 (NEON under qemu included), FPCR; subnormal inputs match the float64 reference. One pass or
 * failure per ISA. */
static void check_fp_env(const attn_isa *isas, int n_isa, int threads, unsigned long *passed, unsigned long *failed)
{
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        char msg[1024];
        if (tc_ctx_create(&ctx, isas[ii], threads, 0, 0) != ATTN_OK) {
            printf("FAIL %s: attn_ctx_create for the FP environment check\n", attn_isa_name(isas[ii]));
            (*failed)++;
            continue;
        }
        if (tc_fp_env_check(ctx, msg, sizeof msg)) {
            printf("FAIL %s FP environment / subnormals: %s\n", attn_isa_name(isas[ii]), msg);
            (*failed)++;
        } else {
            printf("%-6s: FP control state (0x%08x) kept, flushing off and on, subnormal inputs as the reference\n",
                   attn_isa_name(isas[ii]), (unsigned)tc_fp_control());
            (*passed)++;
        }
        attn_ctx_destroy(ctx);
    }
}
/* ---- end of the robustness checks' block ---- */

int main(void)
{
    const uint64_t seed = tc_seed();
    /* The sweep three times over: every (head_dim, q_len, kv_len) meets three draws of the other options. */
    const size_t n_cases = 3 * N_DIMS * N_LENS * N_LENS;
    attn_isa isas[TC_MAX_ISAS];
    int n_isa = tc_isas(isas);
    /* One thread unless ATTN_NUM_THREADS asks for more: this checks kernels, attn-tests checks threading, and an
     * OpenMP team spinning on a busy machine (or under qemu) costs far more than these small cases. */
    int threads = getenv("ATTN_NUM_THREADS") ? 0 : 1;
    unsigned long passed = 0, failed = 0;

    printf("kernel-check: attn %s, seed %" PRIu64 " (replay with ATTN_TEST_SEED=%" PRIu64 ")\n", attn_version(),
           seed, seed);
    char skipped[128];
    tc_isas_skipped(skipped, sizeof skipped);
    if (skipped[0])
        printf("kernel-check: built but skipped, this CPU lacks them:%s\n", skipped);
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        attn_status s = tc_ctx_create(&ctx, isas[ii], threads, 0, 0);
        if (s != ATTN_OK || attn_ctx_isa(ctx) != isas[ii]) {
            printf("FAIL %s: attn_ctx_create gave %d (%s)\n", attn_isa_name(isas[ii]), (int)s, attn_strerror(s));
            attn_ctx_destroy(ctx);
            failed++;
            continue;
        }
        tc_stats st = { 0 };
        unsigned long isa_failed = 0;
        for (size_t c = 0; c < n_cases; c++) {
            attn_sdpa_desc d;
            int32_t valid[2];
            int want_probs;
            tc_problem p;
            char msg[1024];
            make_case(seed, c, &d, valid, &want_probs);
            if (tc_problem_init(&p, &d)) {
                printf("FAIL %s case %zu: out of memory\n", attn_isa_name(isas[ii]), c);
                isa_failed++;
                continue;
            }
            tc_problem_fill(&p, tc_mix(seed ^ 0x5eed, c), TC_FILL_UNIFORM);
            if (tc_check(ctx, &p, want_probs, &st, msg, sizeof msg)) {
                if (isa_failed < 10) /* the first few say it all; a broken kernel would fail hundreds */
                    printf("FAIL case %zu%s: %s\n", c, want_probs ? " (probs)" : "", msg);
                isa_failed++;
            }
            tc_problem_free(&p);
        }
        attn_ctx_destroy(ctx);
        char line[256];
        tc_stats_str(isas[ii], &st, line, sizeof line);
        printf("%s, %lu failed\n", line, isa_failed);
        passed += n_cases - isa_failed;
        failed += isa_failed;
    }
    /* Decode through a KV cache in each storage type: the widening kernels (vcvt_f32_f16 / shifts / vmovl on NEON), the
     * cache's key panels read in place (default block_kv) and packed across panels (block_kv 100). */
    static const tc_kv_case kv_cases[] = {
        { 2, 4, 64, 150, 1, ATTN_MASK_CAUSAL }, { 1, 2, 17, 40, 3, ATTN_MASK_CAUSAL }, { 2, 1, 32, 1100, 2, 0 },
    };
    static const attn_dtype kv_types[] = { ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8 };
    for (int iib = 0; iib < 2 * n_isa; iib++) {
        const int ii = iib / 2, bkv = iib % 2 ? 100 : 0;
        attn_ctx *ctx = NULL;
        if (tc_ctx_create(&ctx, isas[ii], threads, 0, bkv) != ATTN_OK) {
            failed++;
            continue;
        }
        double worst = 0.0;
        for (size_t t = 0; t < sizeof kv_types / sizeof kv_types[0]; t++)
            for (size_t k = 0; k < sizeof kv_cases / sizeof kv_cases[0]; k++) {
                char msg[512];
                if (tc_check_decode(ctx, kv_types[t], &kv_cases[k], tc_mix(seed ^ 0xcac4e, t * 8 + k), &worst, msg,
                                    sizeof msg)) {
                    printf("FAIL %s kv cache dtype %zu case %zu block_kv %d: %s\n", attn_isa_name(isas[ii]), t, k, bkv,
                           msg);
                    failed++;
                } else {
                    passed++;
                }
            }
        printf("%-6s: decode through f32/f16/bf16/i8 caches (block_kv %s), max err out %.2e\n", attn_isa_name(isas[ii]),
               bkv ? "100" : "default", worst);
        attn_ctx_destroy(ctx);
    }
    check_dtypes(isas, n_isa, threads, seed, &passed, &failed);
    check_mha_fixtures(isas, n_isa, threads, &passed, &failed);
    check_fp_env(isas, n_isa, threads, &passed, &failed); /* the caller's FP state and subnormals */
    printf("kernel-check: %lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
