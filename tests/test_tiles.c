/* The edges of the engine's blocking, on every ISA: key counts around each tile size (block_kv) and around the
 * split-KV chunk (1024 keys rounded up to a multiple of block_kv), GQA groups folded into row blocks of odd sizes
 * (block_q), the 16-key K panels and head_dims that are not whole vectors (17, 80), and bitwise thread-count
 * independence of split-KV decode. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static attn_sdpa_desc shape(size_t batch, size_t heads, size_t kv_heads, size_t q_len, size_t kv_len,
                            size_t head_dim, attn_mask mask)
{
    attn_sdpa_desc d = tc_shape(batch, heads, kv_heads, q_len, kv_len, head_dim, 0);
    d.mask = mask;
    return d;
}

/* Checks d on every ISA with a context of the given blocking. */
static void check_blocked(const attn_sdpa_desc *d, uint64_t id, int block_q, int block_kv, int probs,
                          tc_stats st[TC_MAX_ISAS])
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    tc_problem p;
    cr_assert_eq(tc_problem_init(&p, d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), id), TC_FILL_UNIFORM);
    for (int i = 0; i < n; i++) {
        attn_ctx *ctx = NULL;
        char msg[1024];
        cr_assert_eq(tc_ctx_create(&ctx, isas[i], 1, block_q, block_kv), ATTN_OK);
        int bad = tc_check(ctx, &p, probs, &st[isas[i]], msg, sizeof msg);
        attn_ctx_destroy(ctx);
        cr_assert(!bad, "block_q=%d block_kv=%d: %s", block_q, block_kv, msg);
    }
    tc_problem_free(&p);
}

Test(tiles, lengths_around_tiles, .timeout = 240)
{
    static const int bkvs[] = { 16, 33, 128 };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t i = 0; i < sizeof bkvs / sizeof bkvs[0]; i++) {
        const size_t b = (size_t)bkvs[i];
        const size_t lens[] = { b - 1, b, b + 1, 2 * b + 1 };
        for (size_t l = 0; l < 4; l++)
            for (int causal = 0; causal <= 1; causal++) {
                /* Many query blocks share the KV head, so the packed-once path runs (V in place at d 80). */
                attn_sdpa_desc d = shape(1, 2, 1, lens[l], lens[l], l % 2 ? 80 : 17,
                                         causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE);
                check_blocked(&d, id++, 8, bkvs[i], (int)(l % 2), st);
            }
    }
    tc_print_stats("tiles::lengths_around_tiles", st);
}

Test(tiles, split_kv_chunks, .timeout = 240)
{
    /* Decode-like shapes (every query of a KV head in one block) past one chunk: boundaries at 1024 keys with
     * block_kv 128, at 1029 with block_kv 7, at 1100 with block_kv 100. */
    static const struct { int bkv; size_t kv[4]; } cases[] = {
        { 128, { 1023, 1024, 1025, 2049 } },
        { 7, { 1029, 1030, 2058, 3000 } },
        { 100, { 1099, 1100, 1101, 2300 } },
    };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (size_t k = 0; k < 4; k++) {
            /* head_dim 64: key rows read in place; 24: the transposing pack. Probs on half of them. */
            attn_sdpa_desc d = shape(2, 8, 2, k % 2 ? 1 : 3, cases[c].kv[k], k < 2 ? 64 : 24,
                                     k == 1 ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE);
            int32_t valid[2] = { (int32_t)cases[c].kv[k], (int32_t)(cases[c].kv[k] / 2 + 3) };
            if (k == 1)
                d.window = 700; /* the window starts inside a chunk */
            if (k == 2) /* only here: kv_valid or causal would hide a last chunk that runs past kv_len */
                d.kv_valid = valid;
            check_blocked(&d, id++, 0, cases[c].bkv, (int)(k % 2), st);
        }
    tc_print_stats("tiles::split_kv_chunks", st);
}

Test(tiles, gqa_folding, .timeout = 240)
{
    /* Groups of 1, 4 and 8 query heads folded into blocks of 1, 3 and 64 rows (a block smaller than a group
     * still takes one query position). */
    static const size_t groups[][2] = { { 4, 4 }, { 8, 2 }, { 8, 1 } };
    static const int bqs[] = { 1, 3, 64 };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t g = 0; g < 3; g++)
        for (size_t b = 0; b < 3; b++) {
            attn_sdpa_desc d = shape(1, groups[g][0], groups[g][1], 37, 45, 32, ATTN_MASK_CAUSAL);
            d.layout = b % 2 ? ATTN_LAYOUT_BSHD : ATTN_LAYOUT_BHSD;
            check_blocked(&d, id++, bqs[b], 16, 1, st);
        }
    tc_print_stats("tiles::gqa_folding", st);
}

Test(tiles, decode_thread_independent, .timeout = 240)
{
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    attn_sdpa_desc d = shape(1, 8, 2, 1, 5000, 64, ATTN_MASK_CAUSAL);
    tc_problem p;
    cr_assert_eq(tc_problem_init(&p, &d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), 99), TC_FILL_UNIFORM);
    for (int i = 0; i < n; i++) {
        float *ref = NULL, *refp = NULL;
        for (int t = 1; t <= 5; t++) {
            attn_ctx *ctx = NULL;
            float *out, *probs;
            cr_assert_eq(tc_ctx_create(&ctx, isas[i], t, 0, 0), ATTN_OK);
            cr_assert_eq(tc_run(ctx, &p, 1, &out, &probs), ATTN_OK);
            attn_ctx_destroy(ctx);
            if (!ref) {
                ref = out;
                refp = probs;
                continue;
            }
            cr_assert(memcmp(ref, out, p.nout * sizeof *out) == 0, "isa=%s: out differs with %d threads",
                      attn_isa_name(isas[i]), t);
            cr_assert(memcmp(refp, probs, p.nprobs * sizeof *probs) == 0, "isa=%s: probs differ with %d threads",
                      attn_isa_name(isas[i]), t);
            free(out);
            free(probs);
        }
        free(ref);
        free(refp);
    }
    tc_problem_free(&p);
}

/* A decode batch whose sequences end at different keys (kv_valid 0, 1, mid-chunk, all): the work list skips the
 * chunks past each sequence's end, yet each sequence's output is bitwise what a call for that sequence alone gives
 * (the same chunks and tiles from key 0), for any thread count, and within tolerance of float64. */
Test(tiles, ragged_decode_batch, .timeout = 240)
{
    enum { B = 4, H = 8, HK = 2, KV = 3000, D = 64 };
    static const int32_t ends[B] = { 0, 1, 1500, KV };
    attn_isa isas[TC_MAX_ISAS];
    const int n = tc_isas(isas);
    attn_sdpa_desc d = shape(B, H, HK, 1, KV, D, ATTN_MASK_NONE);
    d.kv_valid = ends;
    tc_problem p;
    cr_assert_eq(tc_problem_init(&p, &d), 0);
    tc_problem_fill(&p, tc_mix(tc_seed(), 1234), TC_FILL_UNIFORM);
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    for (int i = 0; i < n; i++) {
        char msg[1024];
        float *ref = NULL;
        for (int t = 1; t <= 3; t++) {
            attn_ctx *ctx = NULL;
            float *out, *probs;
            cr_assert_eq(tc_ctx_create(&ctx, isas[i], t, 0, 0), ATTN_OK);
            if (t == 1)
                cr_assert(!tc_check(ctx, &p, 0, &st[isas[i]], msg, sizeof msg), "%s", msg);
            cr_assert_eq(tc_run(ctx, &p, 0, &out, &probs), ATTN_OK);
            if (!ref) {
                ref = out;
            } else {
                cr_assert(memcmp(ref, out, p.nout * sizeof *out) == 0, "isa=%s: out differs with %d threads",
                          attn_isa_name(isas[i]), t);
                free(out);
            }
            /* Each sequence alone: its own rows of q, its first ends[b] keys and values. */
            for (int b = 0; b < B && t == 1; b++) {
                const float *o = ref + (size_t)b * H * D;
                if (!ends[b]) {
                    for (size_t x = 0; x < (size_t)H * D; x++)
                        cr_assert_eq(o[x], 0.0f, "isa=%s: sequence %d sees no key, out[%zu] = %g",
                                     attn_isa_name(isas[i]), b, x, (double)o[x]);
                    continue;
                }
                const size_t len = (size_t)ends[b];
                float *k1 = malloc((size_t)HK * len * D * sizeof *k1), *v1 = malloc((size_t)HK * len * D * sizeof *v1);
                float *o1 = malloc((size_t)H * D * sizeof *o1);
                cr_assert(k1 && v1 && o1);
                for (size_t h = 0; h < HK; h++) {
                    memcpy(k1 + h * len * D, p.k + ((size_t)b * HK + h) * KV * D, len * D * sizeof *k1);
                    memcpy(v1 + h * len * D, p.v + ((size_t)b * HK + h) * KV * D, len * D * sizeof *v1);
                }
                attn_sdpa_desc d1 = shape(1, H, HK, 1, len, D, ATTN_MASK_NONE);
                cr_assert_eq(attn_sdpa(ctx, &d1, p.q + (size_t)b * H * D, k1, v1, o1, NULL), ATTN_OK);
                cr_assert(memcmp(o, o1, (size_t)H * D * sizeof *o1) == 0,
                          "isa=%s: sequence %d (%zu keys) differs from the call for it alone",
                          attn_isa_name(isas[i]), b, len);
                free(k1), free(v1), free(o1);
            }
            attn_ctx_destroy(ctx);
        }
        free(ref);
    }
    tc_print_stats("tiles::ragged_decode_batch", st);
    tc_problem_free(&p);
}
