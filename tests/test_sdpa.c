/* attn_sdpa against the float64 reference on every ISA this CPU runs (checkasm style): the same seeded inputs go
 * through each kernel set, outputs are NaN-poisoned and guarded. Shapes cover the edges of the vector widths and
 * tiles (1, 15, 16, 17, 257, 1000+), odd head_dim, GQA, v_dim != head_dim, both layouts and every mask. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <string.h>

#include "common.h"

Test(sdpa, head_dims)
{
    static const size_t dims[] = { 1, 3, 17, 80, 128, 256 };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (int causal = 0; causal <= 1; causal++) {
            attn_sdpa_desc d = tc_shape(1, 2, 0, 19, 23, dims[i], 0);
            d.mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, causal, st);
            /* Exactly one vector-width multiple of keys, and a single key. */
            d = tc_shape(2, 1, 0, 16, 16, dims[i], 0);
            d.mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, !causal, st);
            d = tc_shape(1, 3, 0, 4, 1, dims[i], 0);
            TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, 1, st);
        }
    }
    tc_print_stats("sdpa::head_dims", st);
}

Test(sdpa, lengths)
{
    static const size_t lens[] = { 1, 15, 16, 17, 257 };
    const size_t n = sizeof lens / sizeof lens[0];
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t a = 0; a < n; a++) {
        for (size_t b = 0; b < n; b++) {
            for (int causal = 0; causal <= 1; causal++) {
                /* q_len > kv_len with causal leaves the leading q_len - kv_len rows without keys. */
                attn_sdpa_desc d = tc_shape(1, 2, 1, lens[a], lens[b], (a + b) % 2 ? 24 : 64, 0);
                d.mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
                d.layout = (a + b + (size_t)causal) % 2 ? ATTN_LAYOUT_BSHD : ATTN_LAYOUT_BHSD;
                TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, (int)((a + b + 1) % 2), st);
            }
        }
    }
    tc_print_stats("sdpa::lengths", st);
}

Test(sdpa, long_sequences)
{
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    /* Square causal prefill over 1000+ keys, with probs. */
    attn_sdpa_desc d = tc_shape(1, 2, 0, 1031, 1031, 64, 0);
    d.mask = ATTN_MASK_CAUSAL;
    TC_CR_CHECK(&d, 0, TC_FILL_UNIFORM, 1, st);
    /* Decode: one query over a long GQA cache (the split-KV path). */
    d = tc_shape(1, 8, 2, 1, 1500, 128, 0);
    d.mask = ATTN_MASK_CAUSAL;
    TC_CR_CHECK(&d, 1, TC_FILL_UNIFORM, 1, st);
    /* q_len != kv_len, BSHD, v_dim != head_dim, no mask, no probs. */
    d = tc_shape(1, 1, 0, 1024, 1100, 80, 48);
    d.layout = ATTN_LAYOUT_BSHD;
    TC_CR_CHECK(&d, 2, TC_FILL_UNIFORM, 0, st);
    /* A few queries over 2049 keys with padding, MQA. */
    int32_t valid[2] = { 2049, 1200 };
    d = tc_shape(2, 4, 1, 7, 2049, 64, 0);
    d.kv_valid = valid;
    TC_CR_CHECK(&d, 3, TC_FILL_UNIFORM, 1, st);
    /* Bottom-right causal with q_len < kv_len: the queries see the whole prefix plus their own part. */
    d = tc_shape(1, 2, 2, 300, 1200, 32, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.window = 500;
    TC_CR_CHECK(&d, 4, TC_FILL_UNIFORM, 1, st);
    /* Decode over a long cache whose key range is split across threads: with padding and with a small window most
     * chunks see no key at all, and the merge must skip them (no -inf - -inf = NaN). */
    int32_t valid3[2] = { 2999, 1 };
    d = tc_shape(2, 8, 1, 1, 3000, 64, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.kv_valid = valid3;
    TC_CR_CHECK(&d, 6, TC_FILL_UNIFORM, 1, st);
    d = tc_shape(1, 4, 2, 2, 3000, 32, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.window = 100;
    TC_CR_CHECK(&d, 7, TC_FILL_UNIFORM, 1, st);
    /* The widest head over 1000 keys. */
    d = tc_shape(1, 1, 0, 1000, 1000, 256, 0);
    d.mask = ATTN_MASK_CAUSAL;
    TC_CR_CHECK(&d, 5, TC_FILL_UNIFORM, 0, st);
    tc_print_stats("sdpa::long_sequences", st);
}

Test(sdpa, gqa_and_batch)
{
    static const size_t heads[][2] = { { 8, 2 }, { 4, 1 }, { 6, 3 }, { 4, 4 }, { 4, 0 }, { 8, 8 }, { 3, 1 } };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    tc_rng r;
    tc_rng_init(&r, tc_seed());
    uint64_t id = 0;
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        for (int layout = 0; layout <= 1; layout++) {
            for (int causal = 0; causal <= 1; causal++) {
                int32_t valid[3];
                attn_sdpa_desc d = tc_shape(3, heads[i][0], heads[i][1], 13, 29, 32, 0);
                d.layout = (attn_layout)layout;
                d.mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
                if (causal) {
                    tc_random_kv_valid(&r, valid, 3, 29);
                    d.kv_valid = valid;
                }
                TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, layout, st);
            }
        }
    }
    tc_print_stats("sdpa::gqa_and_batch", st);
}

Test(sdpa, v_dim)
{
    static const size_t dims[][2] = {
        { 64, 32 }, { 17, 80 }, { 3, 1 }, { 128, 256 }, { 1, 7 }, { 80, 0 }, { 16, 17 },
    };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (int layout = 0; layout <= 1; layout++) {
            attn_sdpa_desc d = tc_shape(2, 4, 2, 18, 33, dims[i][0], dims[i][1]);
            d.layout = (attn_layout)layout;
            d.mask = layout ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, 1, st);
            TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, 0, st);
        }
    }
    tc_print_stats("sdpa::v_dim", st);
}

Test(sdpa, masks)
{
    static const size_t lens[][2] = { { 17, 17 }, { 5, 40 }, { 40, 5 }, { 1, 33 }, { 33, 1 }, { 16, 16 } };
    static const size_t windows[] = { 0, 1, 2, 7, 100 };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    tc_rng r;
    tc_rng_init(&r, tc_seed() ^ 1);
    for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++) {
        size_t q = lens[l][0], kv = lens[l][1];
        /* kv_valid: none, all empty, all full, random, and a mix of the extremes. */
        for (int kvmode = 0; kvmode < 5; kvmode++) {
            int32_t valid[3];
            for (int b = 0; b < 3; b++) {
                int32_t any = (int32_t)tc_rng_below(&r, (uint32_t)kv + 1);
                valid[b] = kvmode == 1 ? 0 : kvmode == 2 ? (int32_t)kv : any;
            }
            if (kvmode == 4)
                valid[0] = 0, valid[1] = (int32_t)kv;
            for (int m = 0; m < 1 + (int)(sizeof windows / sizeof windows[0]); m++) {
                attn_sdpa_desc d = tc_shape(3, 2, 1, q, kv, 9, 0);
                d.layout = (l + (size_t)m) % 2 ? ATTN_LAYOUT_BSHD : ATTN_LAYOUT_BHSD;
                d.kv_valid = kvmode ? valid : NULL;
                if (m > 0) { /* m == 0: no mask */
                    d.mask = ATTN_MASK_CAUSAL;
                    d.window = windows[m - 1];
                }
                TC_CR_CHECK(&d, id++, TC_FILL_UNIFORM, 1, st);
            }
        }
    }
    tc_print_stats("sdpa::masks", st);
}

Test(sdpa, scale)
{
    static const float scales[] = { 0.5f, -0.7f, 3.0f, 1e-3f, 0.125f, 4.0f };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    for (size_t i = 0; i < sizeof scales / sizeof scales[0]; i++) {
        attn_sdpa_desc d = tc_shape(1, 2, 0, 21, 37, 40, 0);
        d.scale = scales[i];
        d.mask = i % 2 ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
        TC_CR_CHECK(&d, i, TC_FILL_UNIFORM, 1, st);
    }
    tc_print_stats("sdpa::scale", st);
}

/* Logits around 1e6. Random floats times 1e3 would make scores whose fp32 rounding (ulp ~0.06..0.1) legitimately
 * reorders near-ties and moves softmax weights far beyond any tolerance, so no fp32 kernel could pass a fair check.
 * Instead q and k are integers in [-8, 8] and scale is 1024, a power of two: every partial dot product is an
 * integer below 2^24 and scaling is exact, so each fp32 score is exact in any summation order, ties are exact
 * ties, and all other weights underflow to 0. The 2e-5 tolerance then tests the max-subtraction (no overflow, no
 * NaN) and the equal split between tied keys, which is what large logits break in a naive softmax. */
Test(sdpa, large_logits)
{
    static const size_t dims[] = { 1, 3, 16, 64 };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (int causal = 0; causal <= 1; causal++) {
            attn_sdpa_desc d = tc_shape(2, 4, 2, 33, causal ? 33 : 70, dims[i], 0);
            d.scale = 1024.0f;
            d.mask = causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.layout = causal ? ATTN_LAYOUT_BSHD : ATTN_LAYOUT_BHSD;
            TC_CR_CHECK(&d, id++, TC_FILL_INT_QK, 1, st);
        }
    }
    /* Long rows: the running max changes many times across tiles. */
    attn_sdpa_desc d = tc_shape(1, 2, 0, 40, 600, 8, 0);
    d.scale = 1024.0f;
    TC_CR_CHECK(&d, id++, TC_FILL_INT_QK, 1, st);
    tc_print_stats("sdpa::large_logits", st);
}

/* Random shapes from the run's seed: combinations the fixed tables above do not reach. */
Test(sdpa, random_shapes)
{
    static const size_t heads[][2] = { { 1, 0 }, { 2, 1 }, { 4, 2 }, { 6, 3 }, { 8, 2 }, { 5, 5 }, { 4, 1 } };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    tc_rng r;
    tc_rng_init(&r, tc_seed() ^ 2);
    for (uint64_t id = 0; id < 150; id++) {
        int32_t valid[3];
        size_t hi = tc_rng_below(&r, sizeof heads / sizeof heads[0]);
        size_t q = 1 + tc_rng_below(&r, tc_rng_below(&r, 4) ? 48 : 200);
        size_t kv = 1 + tc_rng_below(&r, tc_rng_below(&r, 4) ? 48 : 300);
        attn_sdpa_desc d = tc_shape(1 + tc_rng_below(&r, 3), heads[hi][0], heads[hi][1], q, kv,
                                 1 + tc_rng_below(&r, 96), tc_rng_below(&r, 2) ? 0 : 1 + tc_rng_below(&r, 96));
        d.layout = (attn_layout)tc_rng_below(&r, 2);
        if (tc_rng_below(&r, 2)) {
            d.mask = ATTN_MASK_CAUSAL;
            d.window = tc_rng_below(&r, 3) ? 0 : 1 + tc_rng_below(&r, (uint32_t)kv + 2);
        }
        if (tc_rng_below(&r, 3) == 0) {
            tc_random_kv_valid(&r, valid, d.batch, kv);
            d.kv_valid = valid;
        }
        if (tc_rng_below(&r, 4) == 0)
            d.scale = tc_rng_float(&r, -1.0f, 1.0f); /* up to ~10x the default at d = 96 */
        TC_CR_CHECK(&d, 1000 + id, TC_FILL_UNIFORM, (int)tc_rng_below(&r, 2), st);
    }
    tc_print_stats("sdpa::random_shapes", st);
}

/* Every tc_check compares q, k, v with copies taken before the call; this test makes that property visible by
 * name, on the widest mix of options. */
Test(sdpa, inputs_unchanged)
{
    int32_t valid[2] = { 20, 9 };
    attn_sdpa_desc d = tc_shape(2, 4, 2, 11, 20, 17, 5);
    d.mask = ATTN_MASK_CAUSAL;
    d.window = 6;
    d.kv_valid = valid;
    for (int layout = 0; layout <= 1; layout++) {
        d.layout = (attn_layout)layout;
        TC_CR_CHECK(&d, (uint64_t)layout, TC_FILL_UNIFORM, 1, NULL);
        TC_CR_CHECK(&d, (uint64_t)layout, TC_FILL_UNIFORM, 0, NULL);
    }
}
