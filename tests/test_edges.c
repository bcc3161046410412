/* Numerics at the edges, on every ISA this CPU runs: non-finite inputs stay in the rows that read them (bitwise),
 * scores of +-1e30 and scales of 1e30 / 1e-30 stay finite and pick the maximum, fully masked rows and kv_valid 0
 * give zeros, subnormal inputs match the float64 reference, and the caller's MXCSR (FPCR on AArch64) is never
 * changed (tc_fp_env_check, which kernel-check also runs, so that NEON is checked under qemu).
 *
 * Which rows a non-finite input may change (the wording proposed for attn.h): a NaN or infinity in query row
 * (b, h, i) can change only output row (b, h, i) and probs row (b, h, i). One in key row j or value row j of KV head
 * g in batch b can change only the rows (b, h, i) with h / (n_heads / n_kv_heads) == g whose visible keys include j
 * (j < kv_valid[b], and with CAUSAL p - window < j <= p for the query's position p = i + kv_len - q_len): their
 * output rows, and their probs rows for a key (probs never read V). Every other output and probs row is bitwise
 * what it is without the non-finite value. The tests below check exactly that on the packed-tile, per-block,
 * in-place-row (head_dim a multiple of 16) and split-KV paths. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- helpers --------------------------------------------------------------------------------------------------- */

/* Keys [*lo, *hi) that query row i of batch b sees, from the contract (attn.h). */
static void visible(const attn_sdpa_desc *d, size_t b, size_t i, long long *lo, long long *hi)
{
    const long long pos = (long long)i + (long long)d->kv_len - (long long)d->q_len;
    long long l = 0, h = (long long)d->kv_len;
    if (d->kv_valid && d->kv_valid[b] < h)
        h = d->kv_valid[b];
    if (d->mask == ATTN_MASK_CAUSAL) {
        if (pos + 1 < h)
            h = pos + 1;
        if (d->window && pos - (long long)d->window + 1 > l)
            l = pos - (long long)d->window + 1;
    }
    *lo = l;
    *hi = h;
}

static int sees(const attn_sdpa_desc *d, size_t b, size_t i, size_t j)
{
    long long lo, hi;
    visible(d, b, i, &lo, &hi);
    return (long long)j >= lo && (long long)j < hi;
}

static int same_bits(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (tc_f2u(a[i]) != tc_f2u(b[i]))
            return 0;
    return 1;
}

/* One context per (ISA, blocks). block_q/block_kv 16 makes small shapes pack K/V tiles once per call. */
static attn_ctx *ctx_for(attn_isa isa, int small)
{
    attn_ctx *ctx = NULL;
    cr_assert_eq(tc_ctx_create(&ctx, isa, 1, small ? 16 : 0, small ? 16 : 0), ATTN_OK);
    return ctx;
}

/* The shapes the non-finite tests run: several code paths of attn_sdpa. */
typedef struct edge_shape {
    const char *name;
    attn_sdpa_desc d;
    int small_blocks;
} edge_shape;

static int32_t shape_valid[2] = { 37, 21 };

static size_t edge_shapes(edge_shape out[5])
{
    size_t n = 0;
    /* Packed tiles: several query blocks per KV head, causal with a window and padding, GQA, d 24. */
    out[n] = (edge_shape){ "packed tiles", tc_shape(2, 4, 2, 30, 40, 24, 0), 1 };
    out[n].d.mask = ATTN_MASK_CAUSAL;
    out[n].d.window = 13;
    out[n].d.kv_valid = shape_valid;
    n++;
    /* Per-block packing in one block, BSHD, v_dim != head_dim. */
    out[n] = (edge_shape){ "one block", tc_shape(2, 2, 1, 9, 40, 20, 12), 0 };
    out[n].d.layout = ATTN_LAYOUT_BSHD;
    out[n].d.mask = ATTN_MASK_CAUSAL;
    n++;
    /* head_dim 32: K rows read in place (no transposition), no mask. */
    out[n] = (edge_shape){ "in-place rows", tc_shape(1, 4, 1, 7, 45, 32, 0), 0 };
    n++;
    /* Decode over 2500 keys: split into chunks, merged. */
    out[n] = (edge_shape){ "split KV", tc_shape(1, 4, 2, 2, 2500, 16, 0), 0 };
    out[n].d.mask = ATTN_MASK_CAUSAL;
    n++;
    /* Packed tiles with head_dim 64 and rows of two heads per block. */
    out[n] = (edge_shape){ "packed tiles, d 64", tc_shape(1, 2, 2, 40, 33, 64, 0), 1 };
    out[n].d.mask = ATTN_MASK_CAUSAL;
    n++;
    return n;
}

typedef enum which { IN_Q = 0, IN_K = 1, IN_V = 2 } which;

/* Puts x into tensor w of p at (b, head, s) — the whole row when c is SIZE_MAX, else element c — runs attn_sdpa on
 * ctx and checks every row the contract says cannot see it against the clean run, bitwise. Returns the number of
 * rows that may change (for the caller's sanity check). */
static size_t nonfinite_case(const attn_ctx *ctx, const edge_shape *es, tc_problem *p, const float *clean_out,
                             const float *clean_probs, which w, size_t b, size_t head, size_t s, size_t c, float x)
{
    const attn_sdpa_desc *d = &p->d;
    const size_t hk = p->n_kv_heads, group = d->n_heads / hk;
    float *t = w == IN_Q ? p->q : w == IN_K ? p->k : p->v;
    const size_t heads = w == IN_Q ? d->n_heads : hk, seq = w == IN_Q ? d->q_len : d->kv_len;
    const size_t width = w == IN_V ? p->v_dim : d->head_dim;
    const size_t c0 = c == SIZE_MAX ? 0 : c, c1 = c == SIZE_MAX ? width : c + 1;
    float saved[128];
    for (size_t k = c0; k < c1; k++) {
        const size_t at = tc_index(d->layout, heads, seq, width, b, head, s, k);
        saved[k] = t[at];
        t[at] = x;
    }
    float *out, *probs;
    cr_assert_eq(tc_run(ctx, p, 1, &out, &probs), ATTN_OK);
    size_t may = 0;
    for (size_t bb = 0; bb < d->batch; bb++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++) {
                int reads;
                if (w == IN_Q)
                    reads = bb == b && h == head && i == s;
                else
                    reads = bb == b && h / group == head && sees(d, bb, i, s);
                const size_t o = tc_index(d->layout, d->n_heads, d->q_len, p->v_dim, bb, h, i, 0);
                const size_t pr = ((bb * d->n_heads + h) * d->q_len + i) * d->kv_len;
                may += (size_t)reads;
                const int out_same = same_bits(out + o, clean_out + o, p->v_dim);
                const int probs_same = same_bits(probs + pr, clean_probs + pr, d->kv_len);
                cr_assert(reads || out_same,
                          "%s, %s: %s %g at b=%zu head=%zu pos=%zu dim=%s changed out row b=%zu h=%zu i=%zu, which "
                          "cannot read it",
                          attn_isa_name(attn_ctx_isa(ctx)), es->name, w == IN_Q ? "q" : w == IN_K ? "k" : "v",
                          (double)x, b, head, s, c == SIZE_MAX ? "all" : "one", bb, h, i);
                cr_assert((reads && w != IN_V) || probs_same,
                          "%s, %s: %s %g at b=%zu head=%zu pos=%zu changed probs row b=%zu h=%zu i=%zu",
                          attn_isa_name(attn_ctx_isa(ctx)), es->name, w == IN_Q ? "q" : w == IN_K ? "k" : "v",
                          (double)x, b, head, s, bb, h, i);
            }
    for (size_t k = c0; k < c1; k++)
        t[tc_index(d->layout, heads, seq, width, b, head, s, k)] = saved[k];
    free(out);
    free(probs);
    return may;
}

/* For every ISA and shape: NaN, +Inf and -Inf in one element and NaN in a whole row, at a row that some queries see
 * and others do not, at a masked (padding) key, and at the first and last rows. */
static void nonfinite(which w)
{
    static const float values[3] = { NAN, INFINITY, -INFINITY };
    edge_shape shapes[5];
    const size_t ns = edge_shapes(shapes);
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++)
        for (size_t si = 0; si < ns; si++) {
            const edge_shape *es = &shapes[si];
            attn_ctx *ctx = ctx_for(isas[ii], es->small_blocks);
            tc_problem p;
            cr_assert_eq(tc_problem_init(&p, &es->d), 0);
            tc_problem_fill(&p, tc_mix(tc_seed(), 600 + si), TC_FILL_UNIFORM);
            float *out0, *probs0;
            cr_assert_eq(tc_run(ctx, &p, 1, &out0, &probs0), ATTN_OK);
            const attn_sdpa_desc *d = &p.d;
            const size_t hk = p.n_kv_heads, seq = w == IN_Q ? d->q_len : d->kv_len;
            const size_t heads = w == IN_Q ? d->n_heads : hk, width = w == IN_V ? p.v_dim : d->head_dim;
            const size_t b = d->batch - 1;
            /* Positions: the middle (seen by later queries only, when causal), the first, the last; for K and V
             * also one past kv_valid (padding: no query sees it). */
            size_t pos[4] = { seq / 2, 0, seq - 1, seq }, npos = 3;
            if (w != IN_Q && d->kv_valid && (size_t)d->kv_valid[b] < d->kv_len)
                pos[npos++] = (size_t)d->kv_valid[b];
            size_t may_total = 0;
            for (size_t pi = 0; pi < npos; pi++)
                for (int vi = 0; vi < 4; vi++) {
                    const float x = values[vi % 3];
                    const size_t c = vi == 3 ? SIZE_MAX : (pi * 7 + (size_t)vi) % width;
                    const size_t may = nonfinite_case(ctx, es, &p, out0, probs0, w, b, heads - 1, pos[pi], c, x);
                    may_total += may;
                    if (w != IN_Q && pi == 3)
                        cr_assert_eq(may, 0, "a padding key is visible to %zu rows", may);
                }
            cr_assert(may_total > 0, "%s: no row reads the non-finite values: the test is wrong", es->name);
            /* And the problem is back to its clean state. */
            float *out1, *probs1;
            cr_assert_eq(tc_run(ctx, &p, 1, &out1, &probs1), ATTN_OK);
            cr_assert(same_bits(out0, out1, p.nout) && same_bits(probs0, probs1, p.nprobs));
            free(out0), free(probs0), free(out1), free(probs1);
            tc_problem_free(&p);
            attn_ctx_destroy(ctx);
        }
}

Test(edges, nonfinite_key_rows, .timeout = 240) { nonfinite(IN_K); }
Test(edges, nonfinite_value_rows, .timeout = 240) { nonfinite(IN_V); }
Test(edges, nonfinite_query_rows, .timeout = 240) { nonfinite(IN_Q); }

/* ---- huge scores ----------------------------------------------------------------------------------------------- */

/* q and k on an integer design whose scores are distinct by wide margins: q[0] = 1, k_j[0] = sign * 256 * (perm(j)
 * + 1), other elements in {-1, 0, 1} (their part of a score is below 128). Everything is multiplied by amp. The
 * maximum visible score is unique; returns nothing, the caller finds it from the integers. */
static void design(tc_problem *p, float amp, float sign, uint64_t seed, int *score)
{
    const attn_sdpa_desc *d = &p->d;
    const size_t hk = p->n_kv_heads, n = d->kv_len;
    tc_rng r;
    tc_rng_init(&r, seed);
    size_t *perm = malloc(n * sizeof *perm);
    cr_assert_not_null(perm);
    for (size_t b = 0; b < d->batch; b++)
        for (size_t g = 0; g < hk; g++) {
            for (size_t j = 0; j < n; j++)
                perm[j] = j;
            for (size_t j = n; j > 1; j--) {
                const size_t o = tc_rng_below(&r, (uint32_t)j), t = perm[j - 1];
                perm[j - 1] = perm[o];
                perm[o] = t;
            }
            for (size_t j = 0; j < n; j++)
                for (size_t c = 0; c < d->head_dim; c++) {
                    const float kv = c == 0 ? sign * 256.0f * (float)(perm[j] + 1) : (float)((int)tc_rng_below(&r, 3) - 1);
                    p->k[tc_index(d->layout, hk, n, d->head_dim, b, g, j, c)] = amp * kv;
                }
        }
    for (size_t b = 0; b < d->batch; b++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++)
                for (size_t c = 0; c < d->head_dim; c++)
                    p->q[tc_index(d->layout, d->n_heads, d->q_len, d->head_dim, b, h, i, c)] =
                        amp * (c == 0 ? 1.0f : (float)((int)tc_rng_below(&r, 3) - 1));
    /* Integer scores, to find each row's maximum exactly (scores up to 256 * n + 127 fit an int). */
    const size_t group = d->n_heads / hk;
    for (size_t b = 0; b < d->batch; b++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++)
                for (size_t j = 0; j < n; j++) {
                    long s = 0;
                    for (size_t c = 0; c < d->head_dim; c++)
                        s += (long)(p->q[tc_index(d->layout, d->n_heads, d->q_len, d->head_dim, b, h, i, c)] / amp) *
                             (long)(p->k[tc_index(d->layout, hk, n, d->head_dim, b, h / group, j, c)] / amp);
                    score[((b * d->n_heads + h) * d->q_len + i) * n + j] = (int)s;
                }
    free(perm);
}

/* Every row that sees a key: out is exactly V of its best visible key, probs exactly one-hot there; rows that see
 * none are zero; everything finite. */
static void check_one_hot(const attn_ctx *ctx, const tc_problem *p, const int *score, const char *what)
{
    const attn_sdpa_desc *d = &p->d;
    const size_t hk = p->n_kv_heads, group = d->n_heads / hk;
    float *out, *probs;
    cr_assert_eq(tc_run(ctx, p, 1, &out, &probs), ATTN_OK);
    for (size_t b = 0; b < d->batch; b++)
        for (size_t h = 0; h < d->n_heads; h++)
            for (size_t i = 0; i < d->q_len; i++) {
                long long lo, hi;
                visible(d, b, i, &lo, &hi);
                const float *o = out + tc_index(d->layout, d->n_heads, d->q_len, p->v_dim, b, h, i, 0);
                const size_t pr0 = ((b * d->n_heads + h) * d->q_len + i) * d->kv_len;
                const float *pr = probs + pr0;
                long long best = -1;
                for (long long j = lo; j < hi; j++)
                    if (best < 0 || score[pr0 + (size_t)j] > score[pr0 + (size_t)best])
                        best = j;
                for (size_t j = 0; j < d->kv_len; j++) {
                    const float want = (long long)j == best ? 1.0f : 0.0f;
                    cr_assert(pr[j] == want, "%s, %s: probs[b=%zu h=%zu i=%zu j=%zu] = %g, expected %g (best key %lld)",
                              attn_isa_name(attn_ctx_isa(ctx)), what, b, h, i, j, (double)pr[j], (double)want, best);
                }
                for (size_t c = 0; c < p->v_dim; c++) {
                    const float want = best < 0 ? 0.0f
                                                : p->v[tc_index(d->layout, hk, d->kv_len, p->v_dim, b, h / group,
                                                                (size_t)best, c)];
                    cr_assert(isfinite(o[c]) && (tc_f2u(o[c]) == tc_f2u(want) || (o[c] == 0.0f && want == 0.0f)),
                              "%s, %s: out[b=%zu h=%zu i=%zu c=%zu] = %.9g, expected V of key %lld = %.9g",
                              attn_isa_name(attn_ctx_isa(ctx)), what, b, h, i, c, (double)o[c], best, (double)want);
                }
            }
    free(out);
    free(probs);
}

/* Scores of about +-1e30 (q and k of about 1e13: q k^T itself is huge) and, on moderate integers, a scale of 1e30:
 * softmax must pick the maximum and stay finite, on the packed, one-block and split-KV paths. */
Test(edges, huge_scores, .timeout = 240)
{
    static int32_t valid[2] = { 50, 31 };
    attn_sdpa_desc shapes[3];
    shapes[0] = tc_shape(2, 4, 2, 30, 50, 16, 0);
    shapes[0].mask = ATTN_MASK_CAUSAL;
    shapes[0].window = 17;
    shapes[0].kv_valid = valid;
    shapes[1] = tc_shape(1, 2, 0, 9, 70, 20, 8);
    shapes[1].layout = ATTN_LAYOUT_BSHD;
    shapes[2] = tc_shape(1, 4, 1, 1, 2300, 32, 0);
    shapes[2].mask = ATTN_MASK_CAUSAL;
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++)
        for (int si = 0; si < 3; si++) {
            attn_ctx *ctx = ctx_for(isas[ii], si == 0);
            tc_problem p;
            cr_assert_eq(tc_problem_init(&p, &shapes[si]), 0);
            tc_problem_fill(&p, tc_mix(tc_seed(), 700 + (uint64_t)si), TC_FILL_UNIFORM); /* V */
            int *score = malloc(p.nprobs * sizeof *score);
            cr_assert_not_null(score);
            /* 2^43: q, k and every product exact; scores 2^86 * (up to 256 * 2300) / sqrt(d): about 1e30. */
            const float amp = 0x1p43f;
            design(&p, amp, 1.0f, tc_mix(tc_seed(), 710 + (uint64_t)si), score);
            check_one_hot(ctx, &p, score, "scores about +1e30");
            design(&p, amp, -1.0f, tc_mix(tc_seed(), 720 + (uint64_t)si), score);
            check_one_hot(ctx, &p, score, "scores about -1e30");
            design(&p, 1.0f, 1.0f, tc_mix(tc_seed(), 730 + (uint64_t)si), score);
            p.d.scale = 1e30f;
            check_one_hot(ctx, &p, score, "scale 1e30");
            p.d.scale = 0.0f;
            free(score);
            tc_problem_free(&p);
            attn_ctx_destroy(ctx);
        }
}

/* A scale of 1e-30: every score is about 0, the weights uniform over the visible keys; against the reference. */
Test(edges, tiny_scale, .timeout = 120)
{
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    attn_sdpa_desc d = tc_shape(2, 4, 2, 33, 47, 24, 0);
    d.mask = ATTN_MASK_CAUSAL;
    d.scale = 1e-30f;
    TC_CR_CHECK(&d, 800, TC_FILL_UNIFORM, 1, st);
    d = tc_shape(1, 4, 1, 1, 2100, 16, 0);
    d.scale = 1e-30f;
    TC_CR_CHECK(&d, 801, TC_FILL_UNIFORM, 1, st);
    /* (A scale of 1e30 is in huge_scores, on scores without ties: with ties, fp32 rounding of q * scale breaks them
     * by about 1e24, and the float64 reference, which keeps them, is no longer the answer.) */
    tc_print_stats("edges::tiny_scale", st);
}

/* ---- fully masked ---------------------------------------------------------------------------------------------- */

static size_t count_empty_rows(const attn_sdpa_desc *d)
{
    size_t n = 0;
    for (size_t b = 0; b < d->batch; b++)
        for (size_t i = 0; i < d->q_len; i++) {
            long long lo, hi;
            visible(d, b, i, &lo, &hi);
            n += hi <= lo;
        }
    return n;
}

/* Window and kv_valid combinations where some rows see no key: tc_check wants those rows exactly zero. */
Test(edges, all_keys_masked, .timeout = 240)
{
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    static int32_t v1[2] = { 5, 40 }, v2[1] = { 100 }, v3[3] = { 0, 64, 1 }, v4[3] = { 0, 7, 1 };
    attn_sdpa_desc d[5];
    /* Window past the padding: queries at p >= kv_valid + window see nothing. */
    d[0] = tc_shape(2, 4, 2, 40, 40, 16, 0);
    d[0].mask = ATTN_MASK_CAUSAL;
    d[0].window = 3;
    d[0].kv_valid = v1;
    /* The same in a split-KV decode: the window lies wholly past kv_valid. */
    d[1] = tc_shape(1, 4, 1, 2, 3000, 16, 0);
    d[1].mask = ATTN_MASK_CAUSAL;
    d[1].window = 700;
    d[1].kv_valid = v2;
    /* Causal with q_len > kv_len and a window of 1, one sequence all padding, one with a single key. */
    d[2] = tc_shape(3, 2, 0, 70, 64, 8, 0);
    d[2].mask = ATTN_MASK_CAUSAL;
    d[2].window = 1;
    d[2].kv_valid = v3;
    d[2].layout = ATTN_LAYOUT_BSHD;
    /* Packed tiles (many query blocks) with the first rows before every key. */
    d[3] = tc_shape(1, 2, 1, 300, 200, 32, 0);
    d[3].mask = ATTN_MASK_CAUSAL;
    d[3].window = 40;
    /* kv_valid 0 with a huge scale: no 0/0 anywhere. */
    d[4] = tc_shape(3, 2, 0, 5, 7, 4, 0);
    d[4].kv_valid = v4;
    d[4].scale = 1e30f;
    for (int i = 0; i < 5; i++) {
        cr_assert(count_empty_rows(&d[i]) > 0, "shape %d has no fully masked row: the test is wrong", i);
        TC_CR_CHECK(&d[i], 900 + (uint64_t)i, TC_FILL_UNIFORM, 1, st);
        TC_CR_CHECK(&d[i], 910 + (uint64_t)i, TC_FILL_UNIFORM, 0, st);
    }
    tc_print_stats("edges::all_keys_masked", st);
}

/* kv_valid 0 for every sequence: out and probs all zero, on every path (small blocks pack tiles). */
Test(edges, kv_valid_zero, .timeout = 120)
{
    static int32_t none[2] = { 0, 0 }, none1[1] = { 0 };
    attn_sdpa_desc d[3];
    d[0] = tc_shape(2, 4, 2, 40, 50, 16, 0);
    d[0].kv_valid = none;
    d[1] = tc_shape(2, 2, 0, 33, 33, 24, 0);
    d[1].kv_valid = none;
    d[1].mask = ATTN_MASK_CAUSAL;
    d[1].window = 5;
    d[1].layout = ATTN_LAYOUT_BSHD;
    d[2] = tc_shape(1, 4, 1, 1, 2500, 64, 0);
    d[2].kv_valid = none1;
    d[2].mask = ATTN_MASK_CAUSAL;
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++)
        for (int small = 0; small < 2; small++)
            for (int i = 0; i < 3; i++) {
                attn_ctx *ctx = ctx_for(isas[ii], small);
                tc_problem p;
                cr_assert_eq(tc_problem_init(&p, &d[i]), 0);
                tc_problem_fill(&p, tc_mix(tc_seed(), 950 + (uint64_t)i), TC_FILL_UNIFORM);
                float *out, *probs;
                cr_assert_eq(tc_run(ctx, &p, 1, &out, &probs), ATTN_OK);
                for (size_t k = 0; k < p.nout; k++)
                    cr_assert(out[k] == 0.0f, "%s shape %d: out[%zu] = %g", attn_isa_name(isas[ii]), i, k,
                              (double)out[k]);
                for (size_t k = 0; k < p.nprobs; k++)
                    cr_assert(probs[k] == 0.0f, "%s shape %d: probs[%zu] = %g", attn_isa_name(isas[ii]), i, k,
                              (double)probs[k]);
                free(out), free(probs);
                tc_problem_free(&p);
                attn_ctx_destroy(ctx);
            }
}

/* ---- the floating-point environment and subnormals ------------------------------------------------------------- */

Test(edges, fp_env_and_subnormals, .timeout = 240)
{
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    for (int ii = 0; ii < n_isa; ii++)
        for (int threads = 1; threads <= 2; threads++) {
            attn_ctx *ctx = NULL;
            cr_assert_eq(tc_ctx_create(&ctx, isas[ii], threads, 0, 0), ATTN_OK);
            char msg[1024];
            const int bad = tc_fp_env_check(ctx, msg, sizeof msg);
            cr_assert(!bad, "%s, %d threads: %s", attn_isa_name(isas[ii]), threads, msg);
            attn_ctx_destroy(ctx);
        }
}
