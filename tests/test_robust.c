/* Rows that see no key and non-finite inputs: the contract says empty rows are all-zero (never NaN) and a
 * non-finite input reaches only the rows whose scores read it. A hang here is a failure too (timeouts). */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "common.h"

/* tc_check demands bitwise-zero out and probs rows wherever the reference sees no key. */
Test(robust, fully_masked_rows, .timeout = 120)
{
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    /* kv_valid 0: the whole sequence is padding. */
    int32_t valid[3] = { 9, 0, 0 };
    attn_sdpa_desc d = tc_shape(3, 4, 2, 9, 9, 20, 0);
    d.kv_valid = valid;
    TC_CR_CHECK(&d, 0, TC_FILL_UNIFORM, 1, st);
    d.mask = ATTN_MASK_CAUSAL;
    TC_CR_CHECK(&d, 1, TC_FILL_UNIFORM, 0, st);
    /* q_len > kv_len with causal: the first q_len - kv_len rows come before every key. */
    d = tc_shape(1, 2, 0, 40, 3, 16, 0);
    d.mask = ATTN_MASK_CAUSAL;
    TC_CR_CHECK(&d, 2, TC_FILL_UNIFORM, 1, st);
    d.layout = ATTN_LAYOUT_BSHD;
    TC_CR_CHECK(&d, 3, TC_FILL_UNIFORM, 0, st);
    /* Window past the padding: query at p sees (p - window, p] and keys < kv_valid; for p >= kv_valid + window
     * that is empty, so empty rows sit after non-empty ones. */
    int32_t valid2[2] = { 3, 12 };
    d = tc_shape(2, 2, 1, 30, 30, 8, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.window = 2;
    d.kv_valid = valid2;
    TC_CR_CHECK(&d, 4, TC_FILL_UNIFORM, 1, st);
    /* Everything masked, with large logits: no 0/0 anywhere. */
    int32_t none[2] = { 0, 0 };
    d = tc_shape(2, 2, 0, 5, 7, 4, 0);
    d.kv_valid = none;
    d.scale = 1024.0f;
    TC_CR_CHECK(&d, 5, TC_FILL_INT_QK, 1, st);
    tc_print_stats("robust::fully_masked_rows", st);
}

/* Puts value x at element (b, h, s, c) of a [batch][heads][seq][dim] tensor in the problem's layout. */
static void poke(tc_problem *p, float *t, size_t heads, size_t seq, size_t dim, size_t b, size_t h, size_t s,
                 size_t c, float x)
{
    t[tc_index(p->d.layout, heads, seq, dim, b, h, s, c)] = x;
}

/* Runs one problem with a non-finite input on every ISA: tc_check compares every row whose reference reads only
 * finite numbers (and skips the others), and the number of skipped rows must be exactly the expected one. */
static void check_nonfinite(tc_problem *p, size_t expect_rows, const char *what)
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++) {
        for (int probs = 0; probs <= 1; probs++) {
            attn_ctx *ctx = NULL;
            cr_assert_eq(tc_ctx_create(&ctx, isas[i], 0, 0, 0), ATTN_OK);
            tc_stats st = { 0 };
            char msg[1024];
            int bad = tc_check(ctx, p, probs, &st, msg, sizeof msg);
            attn_ctx_destroy(ctx);
            cr_assert(!bad, "%s: %s", what, msg);
            cr_assert_eq(st.nonfinite_rows, expect_rows,
                         "%s: isa %s: %zu rows read a non-finite input, expected %zu", what,
                         attn_isa_name(isas[i]), st.nonfinite_rows, expect_rows);
        }
    }
}

Test(robust, nan_key, .timeout = 120)
{
    for (int layout = 0; layout <= 1; layout++) {
        tc_problem p;
        attn_sdpa_desc d = tc_shape(2, 4, 2, 12, 12, 19, 0);
        d.mask = ATTN_MASK_CAUSAL;
        d.layout = (attn_layout)layout;
        cr_assert_eq(tc_problem_init(&p, &d), 0);
        tc_problem_fill(&p, tc_mix(tc_seed(), (uint64_t)layout), TC_FILL_UNIFORM);
        /* Key 5 of KV head 1 in batch 0: read by query heads 2 and 3 (GQA), rows 5..11 only (causal). Rows 0..4
         * must be finite and exact. */
        poke(&p, p.k, 2, 12, 19, 0, 1, 5, 3, NAN);
        check_nonfinite(&p, 2 * 7, "NaN in k[b=0][kvh=1][j=5]");
        tc_problem_free(&p);
    }
}

Test(robust, nonfinite_query_and_value, .timeout = 120)
{
    tc_problem p;
    attn_sdpa_desc d = tc_shape(1, 2, 0, 10, 16, 8, 0);
    d.mask = ATTN_MASK_CAUSAL;
    cr_assert_eq(tc_problem_init(&p, &d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), 10), TC_FILL_UNIFORM);
    /* A NaN query touches its own row only. */
    poke(&p, p.q, 2, 10, 8, 0, 0, 4, 0, NAN);
    check_nonfinite(&p, 1, "NaN in q[h=0][i=4]");
    /* An infinite query: its scores are +-Inf or NaN; still its row only. */
    poke(&p, p.q, 2, 10, 8, 0, 0, 4, 0, INFINITY);
    check_nonfinite(&p, 1, "Inf in q[h=0][i=4]");
    poke(&p, p.q, 2, 10, 8, 0, 0, 4, 0, 0.5f);
    /* Inf in value row 9 of head 1: query i sits at i + 6, so rows 3..9 of head 1 read it. */
    poke(&p, p.v, 2, 16, 8, 0, 1, 9, 2, INFINITY);
    check_nonfinite(&p, 7, "Inf in v[h=1][j=9]");
    tc_problem_free(&p);
}

/* Masked keys are not read by the row's scores, so garbage there (uninitialised padding, future tokens, keys
 * that fell out of the window) must not reach the output. */
Test(robust, nan_in_masked_keys, .timeout = 120)
{
    tc_problem p;
    int32_t valid[2] = { 6, 13 };
    attn_sdpa_desc d = tc_shape(2, 2, 1, 13, 13, 12, 0);
    d.kv_valid = valid;
    cr_assert_eq(tc_problem_init(&p, &d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), 20), TC_FILL_UNIFORM);
    for (size_t j = 6; j < 13; j++) { /* batch 0's padding */
        poke(&p, p.k, 1, 13, 12, 0, 0, j, j % 12, NAN);
        poke(&p, p.v, 1, 13, 12, 0, 0, j, (j + 1) % 12, (j % 2) ? INFINITY : NAN);
    }
    check_nonfinite(&p, 0, "NaN/Inf in padding (kv_valid)");
    tc_problem_free(&p);

    /* Causal + window 4 with a NaN in key 2: rows at positions 2..5 read it, the earlier ones (future key) and
     * the later ones (key out of the window) must be finite and exact. */
    d = tc_shape(1, 1, 0, 20, 20, 12, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.window = 4;
    cr_assert_eq(tc_problem_init(&p, &d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), 21), TC_FILL_UNIFORM);
    poke(&p, p.k, 1, 20, 12, 0, 0, 2, 7, NAN);
    poke(&p, p.v, 1, 20, 12, 0, 0, 2, 0, INFINITY);
    check_nonfinite(&p, 4, "NaN in k[j=2] with causal window 4");
    tc_problem_free(&p);
}
