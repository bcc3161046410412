/* attn_sdpa with F16/BF16 tensors and ATTN_MATH_BF16 (DESIGN 3b "Input dtypes and math modes") on every ISA this CPU
 * runs, against a float64 reference computed from the stored values (rounded to bfloat16 for ATTN_MATH_BF16) by
 * the tests' own conversions (tests/common.c: _Float16 for half, frexp/nearbyint for bfloat16), never the
 * library's. Random shapes from the run's seed cover every q_dtype x kv_dtype x out_dtype (27) in both math modes;
 * outputs are poisoned and guarded in their own element type. Deterministic properties, bitwise:
 *   a. ATTN_MATH_BF16 on fp32 or half inputs == ATTN_MATH_BF16 on the same values rounded to bfloat16 and passed
 *      as BF16 tensors (rounding is the only thing the mode does to its inputs);
 *   b. ATTN_MATH_F32 on half/bfloat16 inputs == ATTN_MATH_F32 on fp32 tensors of the widened values (widening is
 *      exact);
 *   c. P really is rounded: V = 1 gives sum bf16(p) / sum p, not 1 (and 1 in ATTN_MATH_F32);
 *   d. bad dtype or math enums are ATTN_EINVAL with nothing written;
 *   e. ATTN_MATH_BF16 results do not depend on the thread count.
 * a and b hold except on the two decode-sized paths dt_known_path describes (another summation order there; set
 * ATTN_TEST_STRICT_DTYPES=1 to fail those too, ATTN_TEST_DTYPES_VERBOSE=1 to print each). The [stat] lines give,
 * per ISA, math mode and output type, the largest |out - ref| relative to max(1, |ref|) (ATTN_MATH_F32) or to the
 * row's max|v| (ATTN_MATH_BF16), output rounding included, and the largest |probs - ref|. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const attn_dtype dt_types[3] = { ATTN_F32, ATTN_F16, ATTN_BF16 };
#define DT_NCOMBO 27 /* q_dtype x kv_dtype x out_dtype */

static attn_dtype dt_q(int combo) { return dt_types[combo / 9]; }
static attn_dtype dt_kv(int combo) { return dt_types[combo / 3 % 3]; }
static attn_dtype dt_out(int combo) { return dt_types[combo % 3]; }

/* One context per ISA with the default blocks, and one with small blocks: several query blocks then share K/V
 * tiles packed once per call, and every row runs the online softmax over many tiles. The first runs one thread
 * (results do not depend on the count, dtypes::threads checks it; an OpenMP team that spins while Criterion runs
 * another test on the other core made this file 2-5x slower), the second the default count. */
typedef struct dt_ctxs {
    int n;
    attn_isa isa[TC_MAX_ISAS];
    attn_ctx *def[TC_MAX_ISAS], *small[TC_MAX_ISAS];
} dt_ctxs;

static void dt_ctxs_create(dt_ctxs *c)
{
    memset(c, 0, sizeof *c);
    c->n = tc_isas(c->isa);
    for (int i = 0; i < c->n; i++) {
        attn_status s = tc_ctx_create(&c->def[i], c->isa[i], 1, 0, 0);
        cr_assert_eq(s, ATTN_OK, "attn_ctx_create(%s) = %d", attn_isa_name(c->isa[i]), (int)s);
        s = tc_ctx_create(&c->small[i], c->isa[i], 0, 40, 48);
        cr_assert_eq(s, ATTN_OK, "attn_ctx_create(%s, blocks 40x48) = %d", attn_isa_name(c->isa[i]), (int)s);
    }
}

static void dt_ctxs_destroy(dt_ctxs *c)
{
    for (int i = 0; i < c->n; i++) {
        attn_ctx_destroy(c->def[i]);
        attn_ctx_destroy(c->small[i]);
    }
}

/* Errors per math mode, output type and ISA (indexed by attn_isa), and what was covered. */
typedef struct dt_stats {
    tc_stats st[2][3][TC_MAX_ISAS];
    unsigned long checked[2][DT_NCOMBO]; /* (math, combo) runs compared with the reference, all ISAs together */
    unsigned long same_a, same_b;        /* bitwise comparisons of properties a and b that held */
    unsigned long known_a, known_b;      /* and those that differed on a known path (dt_known_path) */
    int known_seen[2];                   /* DT_KNOWN_* printed so far for b [0] and a [1] */
} dt_stats;

static void dt_print(const char *what, const dt_stats *s)
{
    for (int m = 0; m < 2; m++)
        for (int o = 0; o < 3; o++) {
            char name[96];
            snprintf(name, sizeof name, "%s math:%s out:%s", what, m ? "bf16" : "f32", tc_dtype_name(dt_types[o]));
            tc_print_stats(name, s->st[m][o]);
        }
    unsigned covered = 0;
    for (int m = 0; m < 2; m++)
        for (int c = 0; c < DT_NCOMBO; c++)
            covered += s->checked[m][c] > 0;
    fprintf(stderr,
            "[stat] %-24s %u/%d (q, kv, out, math) combinations checked; bitwise: %lu property-a and %lu "
            "property-b comparisons held, %lu a and %lu b differed on the known paths (seed %" PRIu64 ")\n",
            what, covered, 2 * DT_NCOMBO, s->same_a, s->same_b, s->known_a, s->known_b, tc_seed());
}

static void dt_assert_covered(const char *what, const dt_stats *s)
{
    for (int m = 0; m < 2; m++)
        for (int c = 0; c < DT_NCOMBO; c++)
            cr_assert(s->checked[m][c] > 0, "%s: q:%s kv:%s out:%s math:%s never checked", what,
                      tc_dtype_name(dt_q(c)), tc_dtype_name(dt_kv(c)), tc_dtype_name(dt_out(c)), m ? "bf16" : "f32");
}

/* The paths where properties a and b do not hold bitwise (found by this file; ATTN_TEST_STRICT_DTYPES=1 makes every
 * difference there a failure again). On both, a block that is its KV head's only query block reads K or V where
 * the caller stored them (engine/sdpa.c attn_tile_at), through a kernel that depends on the stored type, so that
 * the same values are summed in another order; the results then differ in the last bits (and, in ATTN_MATH_BF16,
 * a weight near a bfloat16 tie may round the other way). Both results still pass the reference check, and probs
 * must agree within 4e-6.
 *   DT_KNOWN_K: at most 16 rows (decode-shaped: n_heads / n_kv_heads * q_len <= 16; one block with the contexts
 *     used here) and head_dim a multiple of 16. Keys that need no rounding are read as rows in place
 *     (scores_rows[kv_dtype]); ATTN_MATH_BF16 widens, rounds and transposes fp32 or half keys into a tile
 *     (scores[ATTN_F32]) while bfloat16 keys stay in place: property a differs on the SIMD levels (scalar sums
 *     both alike). Until fa5da35 the in-place path also skipped the rounding of fp32 keys in ATTN_MATH_BF16 (a
 *     contract bug: probs off by up to ~3e-4, out beyond 1e-2 max|v| with large scales); the reference check and
 *     the probs agreement above catch that again, and so does dtypes::inputs_rounded.
 *   DT_KNOWN_V: at most 8 rows (ATTN_FEW_ROWS), v_dim a multiple of 16 and rows that see different keys (causal,
 *     q_len > 1): half/bfloat16 values read in place go through the decode P.V blocking PVH_RB x PVH_NV, fp32 ones
 *     (or the packed, rounded ones of ATTN_MATH_BF16) through PVD_RB x PVD_NV; the rows grouped together share
 *     their common keys and take their ragged ends row by row, so a different grouping sums a row in another
 *     order (avx512 levels: 4 rows vs 2): property b (and a) differ in the last bits. */
enum { DT_KNOWN_K = 1, DT_KNOWN_V = 2 };

static int dt_known_path(const attn_sdpa_desc *d, int prop)
{
    const size_t group = d->n_heads / (d->n_kv_heads ? d->n_kv_heads : d->n_heads);
    const size_t dv = d->v_dim ? d->v_dim : d->head_dim;
    const int k_rows = tc_keys_read_in_place(d);
    const int v_ragged = dv % 16 == 0 && group * d->q_len <= 8 && d->mask == ATTN_MASK_CAUSAL && d->q_len > 1;
    /* The twin's keys and values: bfloat16 (a) or fp32 (b); the same type takes the same path. */
    const int differs = d->kv_dtype != (prop == 'a' ? ATTN_BF16 : ATTN_F32);
    return differs ? (k_rows ? DT_KNOWN_K : 0) | (v_ragged ? DT_KNOWN_V : 0) : 0;
}

/* One problem, in both math modes, on every ISA: the reference check, then property a (ATTN_MATH_BF16 with an
 * input not stored as bfloat16) or b (ATTN_MATH_F32 with an input stored as half or bfloat16) bitwise on the same
 * context. */
static void dt_run_case(const dt_ctxs *cx, const attn_sdpa_desc *shape, int combo, float amp, int want_probs,
                        int small_blocks, uint64_t seed, dt_stats *S)
{
    attn_sdpa_desc d = *shape;
    d.q_dtype = dt_q(combo);
    d.kv_dtype = dt_kv(combo);
    d.out_dtype = dt_out(combo);
    tc_typed t;
    cr_assert(!tc_typed_init(&t, &d), "test out of memory");
    tc_typed_fill(&t, seed, amp);
    for (int m = 0; m < 2; m++) {
        const attn_math math = (attn_math)m;
        t.p.d.math = math;
        tc_typed_ref ref;
        cr_assert(!tc_typed_ref_init(&ref, &t, math, want_probs), "test out of memory");
        /* 'a': the same values rounded to bfloat16, as BF16 tensors; 'b': the widened values as F32 tensors. */
        int prop = 0;
        tc_typed alt;
        if (math == ATTN_MATH_BF16 && (d.q_dtype != ATTN_BF16 || d.kv_dtype != ATTN_BF16))
            prop = 'a';
        else if (math == ATTN_MATH_F32 && (d.q_dtype != ATTN_F32 || d.kv_dtype != ATTN_F32))
            prop = 'b';
        if (prop)
            cr_assert(!tc_typed_convert(&alt, &t, prop == 'a' ? ATTN_BF16 : ATTN_F32,
                                        prop == 'a' ? ATTN_BF16 : ATTN_F32, prop == 'a'),
                      "test out of memory");
        for (int i = 0; i < cx->n; i++) {
            const attn_ctx *ctx = small_blocks ? cx->small[i] : cx->def[i];
            char msg[1024];
            void *out = NULL, *out2 = NULL;
            float *probs = NULL, *probs2 = NULL;
            int bad = tc_typed_check(ctx, &t, &ref, want_probs, &S->st[m][combo % 3][cx->isa[i]], prop ? &out : NULL,
                                     prop ? &probs : NULL, msg, sizeof msg);
            cr_assert(!bad, "%s", msg);
            S->checked[m][combo]++;
            if (!prop)
                continue;
            const attn_status s = tc_typed_run(ctx, &alt, want_probs, &out2, &probs2);
            cr_assert_eq(s, ATTN_OK, "attn_sdpa on the %s twin returned %d", prop == 'a' ? "bf16" : "f32", (int)s);
            bad = tc_typed_same(ctx, &t, out, probs, out2, probs2,
                                prop == 'a' ? "property a (MATH_BF16: these inputs vs their bf16 rounding as BF16 "
                                              "tensors)"
                                            : "property b (MATH_F32: these inputs vs their widened values as F32 "
                                              "tensors)",
                                msg, sizeof msg);
            const int known = dt_known_path(&t.p.d, prop);
            if (bad && known && !tc_typed_strict()) {
                /* Reported, counted and printed once per test and path, not failed: see dt_known_path. Both
                 * results passed the reference check above; probs (never rounded to bfloat16, so a different order
                 * of the score sums moves them by a few ulps only) must still agree closely. */
                if (!(S->known_seen[prop == 'a'] & known) || getenv("ATTN_TEST_DTYPES_VERBOSE"))
                    fprintf(stderr, "[known] %s (path:%s%s)\n", msg, known & DT_KNOWN_K ? " key rows in place" : "",
                            known & DT_KNOWN_V ? " decode P.V grouping by V format" : "");
                for (size_t x = 0; probs && x < t.p.nprobs; x++)
                    cr_assert(fabsf(probs[x] - probs2[x]) <= 4e-6f,
                              "%s, and probs[%zu] differ by more than a different summation order explains: %.9g vs "
                              "%.9g",
                              msg, x, (double)probs[x], (double)probs2[x]);
                S->known_seen[prop == 'a'] |= known;
                if (prop == 'a')
                    S->known_a++;
                else
                    S->known_b++;
            } else {
                cr_assert(!bad, "%s", msg);
                if (prop == 'a')
                    S->same_a++;
                else
                    S->same_b++;
            }
            free(out), free(out2), free(probs), free(probs2);
        }
        if (prop)
            tc_typed_free(&alt);
        tc_typed_ref_free(&ref);
    }
    tc_typed_free(&t);
}

typedef enum dt_kind { DT_SMALL, DT_DECODE, DT_LARGE } dt_kind;

/* A random shape: odd sizes and multiples of 16 (the kernels' in-place paths need whole vectors), GQA, both
 * layouts, causal and windows, padding, a random scale now and then. */
static attn_sdpa_desc dt_random_shape(tc_rng *r, dt_kind kind, int32_t valid[3])
{
    static const size_t heads[][2] = { { 1, 0 }, { 2, 1 }, { 4, 2 }, { 6, 3 }, { 8, 2 }, { 5, 5 }, { 4, 1 }, { 3, 1 } };
    size_t hi = tc_rng_below(r, sizeof heads / sizeof heads[0]), batch = 1 + tc_rng_below(r, 3), q, kv;
    switch (kind) {
    case DT_SMALL:
        q = 1 + tc_rng_below(r, 48);
        kv = 1 + tc_rng_below(r, 70);
        break;
    case DT_DECODE: /* a few over 1024 keys: split-KV chunks, merged */
        q = 1 + tc_rng_below(r, 16);
        kv = 1 + tc_rng_below(r, tc_rng_below(r, 6) ? 300 : 1500);
        break;
    default: /* long rows; few heads, so that the float64 reference stays quick */
        q = 100 + tc_rng_below(r, 201);
        kv = 100 + tc_rng_below(r, 201);
        hi = tc_rng_below(r, 4);
        batch = 1 + tc_rng_below(r, 2);
        break;
    }
    const size_t hd = tc_rng_below(r, 3) ? 1 + tc_rng_below(r, 130) : 16 * (1 + tc_rng_below(r, 8));
    const size_t dv = tc_rng_below(r, 2)   ? 0
                      : tc_rng_below(r, 3) ? 1 + tc_rng_below(r, 130)
                                           : 16 * (1 + tc_rng_below(r, 8));
    attn_sdpa_desc d = tc_shape(batch, heads[hi][0], heads[hi][1], q, kv, hd, dv);
    d.layout = (attn_layout)tc_rng_below(r, 2);
    if (tc_rng_below(r, 2)) {
        d.mask = ATTN_MASK_CAUSAL;
        d.window = tc_rng_below(r, 3) ? 0 : 1 + tc_rng_below(r, (uint32_t)kv + 2);
    }
    if (tc_rng_below(r, 3) == 0) {
        tc_random_kv_valid(r, valid, d.batch, kv);
        d.kv_valid = valid;
    }
    if (tc_rng_below(r, 4) == 0)
        d.scale = tc_rng_float(r, -1.0f, 1.0f);
    return d;
}

/* n random cases of one kind; combination (offset + i) % 27, so that each is met n / 27 times or more. */
static void dt_random(const char *what, dt_kind kind, unsigned n, uint64_t salt)
{
    dt_ctxs cx;
    dt_ctxs_create(&cx);
    static dt_stats S; /* large: a test runs in its own process */
    memset(&S, 0, sizeof S);
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), salt));
    const unsigned offset = tc_rng_below(&r, DT_NCOMBO);
    for (unsigned i = 0; i < n; i++) {
        int32_t valid[3];
        const attn_sdpa_desc d = dt_random_shape(&r, kind, valid);
        /* Sometimes peaked softmax rows: q and k up to 3 with the default scale (scores of a few units, as a random
         * scale up to 1 on unit inputs gives). Not both: scores of tens carry fp32 rounding errors that move the
         * weights by more than ATTN_MATH_F32's 2e-5 in any summation order (see test_sdpa.c large_logits). */
        const float amp = d.scale == 0.0f && tc_rng_below(&r, 4) == 0 ? 3.0f : 1.0f;
        const int want_probs = kind == DT_LARGE ? tc_rng_below(&r, 3) == 0 : (int)tc_rng_below(&r, 2);
        const int small_blocks = (int)tc_rng_below(&r, 2);
        dt_run_case(&cx, &d, (int)((offset + i) % DT_NCOMBO), amp, want_probs, small_blocks,
                    tc_mix(tc_seed(), salt * 100003u + i), &S);
    }
    dt_print(what, &S);
    if (n >= DT_NCOMBO)
        dt_assert_covered(what, &S);
    dt_ctxs_destroy(&cx);
}

Test(dtypes, random_small)
{
    dt_random("dtypes::small", DT_SMALL, 2 * DT_NCOMBO, 0xd7a1);
}

Test(dtypes, random_decode)
{
    dt_random("dtypes::decode", DT_DECODE, 2 * DT_NCOMBO, 0xd7a2);
}

Test(dtypes, random_large)
{
    dt_random("dtypes::large", DT_LARGE, 9, 0xd7a3);
}

/* ATTN_MATH_BF16 rounds fp32 and half Q, K and V on every path, the decode-sized ones that read K and V in place
 * included (a path that once skipped the keys: DT_KNOWN_K). q and k up to 3: unrounded keys move probs by 4e-5 to
 * 2e-4, beyond their 2e-5 bound, and probs must also agree within 4e-6 with the same values passed as bfloat16. */
Test(dtypes, inputs_rounded)
{
    static const struct {
        size_t b, h, hk, q, kv, d, dv;
        int causal;
    } shapes[] = {
        { 1, 4, 1, 1, 40, 16, 16, 0 },  /* one query, a GQA group: K and V rows in place */
        { 1, 2, 2, 3, 33, 64, 0, 1 },   /* a few queries, causal */
        { 2, 8, 2, 2, 1100, 32, 48, 1 }, /* split-KV chunks */
        { 1, 3, 1, 1, 60, 17, 5, 0 },   /* odd widths: packed tiles */
        { 2, 4, 2, 37, 50, 48, 32, 1 }, /* prefill-sized */
    };
    static const attn_dtype types[] = { ATTN_F32, ATTN_F16 };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    double worst_twin = 0.0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ti = 0; ti < 2; ti++) {
            attn_sdpa_desc d = tc_shape(shapes[si].b, shapes[si].h, shapes[si].hk, shapes[si].q, shapes[si].kv,
                                        shapes[si].d, shapes[si].dv);
            d.mask = shapes[si].causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.q_dtype = d.kv_dtype = types[ti];
            d.math = ATTN_MATH_BF16;
            tc_typed t, twin;
            tc_typed_ref ref;
            cr_assert(!tc_typed_init(&t, &d));
            tc_typed_fill(&t, tc_mix(tc_seed(), 0x1e0 + si * 2 + ti), 3.0f);
            cr_assert(!tc_typed_convert(&twin, &t, ATTN_BF16, ATTN_BF16, 1));
            cr_assert(!tc_typed_ref_init(&ref, &t, ATTN_MATH_BF16, 1));
            for (int ii = 0; ii < n_isa; ii++) {
                attn_ctx *ctx = NULL;
                cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 0, 0, 0), ATTN_OK);
                char msg[1024];
                void *out, *out2;
                float *probs, *probs2;
                cr_assert(!tc_typed_check(ctx, &t, &ref, 1, &st[isas[ii]], &out, &probs, msg, sizeof msg), "%s", msg);
                cr_assert_eq(tc_typed_run(ctx, &twin, 1, &out2, &probs2), ATTN_OK);
                for (size_t x = 0; x < t.p.nprobs; x++) {
                    const double e = fabs((double)probs[x] - (double)probs2[x]);
                    worst_twin = e > worst_twin ? e : worst_twin;
                    cr_assert(e <= 4e-6, "%s %s q/kv:%s: probs[%zu] = %.9g, with the bfloat16-rounded inputs %.9g",
                              attn_isa_name(isas[ii]), shapes[si].q == 1 ? "decode" : "", tc_dtype_name(types[ti]), x,
                              (double)probs[x], (double)probs2[x]);
                }
                free(out), free(out2), free(probs), free(probs2);
                attn_ctx_destroy(ctx);
            }
            tc_typed_ref_free(&ref);
            tc_typed_free(&twin);
            tc_typed_free(&t);
        }
    tc_print_stats("dtypes::inputs_rounded", st);
    fprintf(stderr, "[stat] %-24s max |probs - probs of the bf16-rounded inputs| %.2e (seed %" PRIu64 ")\n",
            "dtypes::inputs_rounded", worst_twin, tc_seed());
}

/* ---- c. P is rounded to bfloat16 before P.V ---- */

/* Scores q * k_j of one query row (exact in fp32 here), the softmax weights p_j = exp(s_j - max s): with every V
 * entry 1, ATTN_MATH_BF16 gives sum_j bf16(p_j) / sum_j p_j (attn.h: the row sums come from the unrounded
 * weights), the weights rounded from fp32 as the kernels compute them. */
static double dt_p_expect(float q, const float *k, size_t n)
{
    double m = -INFINITY, sum = 0.0, sum_r = 0.0;
    for (size_t j = 0; j < n; j++)
        m = (double)(q * k[j]) > m ? (double)(q * k[j]) : m;
    for (size_t j = 0; j < n; j++) {
        const double p = exp((double)(q * k[j]) - m);
        sum += p;
        sum_r += tc_bf16_round((float)p);
    }
    return sum_r / sum;
}

/* Where p lies between its two bfloat16 neighbours: (bf16(p) - p) / ulp, in [-0.5, 0.5]. */
static double dt_bf16_frac(double p)
{
    const double r = tc_bf16_round((float)p);
    int e;
    (void)frexp(p, &e);
    return (r - p) / ldexp(1.0, e - 8);
}

Test(dtypes, p_rounding)
{
    static const float qv[] = { 1.0f, -1.0f };
    const size_t nq = sizeof qv / sizeof qv[0], dv = 5;
    float k[256];
    double expect[sizeof qv / sizeof qv[0]];
    size_t n = 0;
    /* Keys in [0, 1], bfloat16 values (rounding q and k changes nothing), 0 and 1 among them (so the row maxima are
     * 0 and the largest weight is exactly 1), the others chosen so that both rows' weights exp(k - 1) and exp(-k)
     * round up by more than a fifth of a bfloat16 step: rounding P then moves the result by about 1e-3, far from 1,
     * while each weight stays far from a rounding tie (an exp off by an fp32 ulp rounds the same way). */
    k[n++] = 0.0f;
    k[n++] = 1.0f;
    for (uint32_t h = 0x3d80u; h < 0x3f80u && n < 64; h++) { /* bfloat16 values from 1/16 up to 1 */
        const float x = tc_bf16_value((uint16_t)h);
        if (dt_bf16_frac(exp((double)x - 1.0)) > 0.2 && dt_bf16_frac(exp(-(double)x)) > 0.2)
            k[n++] = x;
    }
    for (size_t i = 0; i < nq; i++) {
        expect[i] = dt_p_expect(qv[i], k, n);
        cr_assert(fabs(expect[i] - 1.0) > 3e-4, "test data: %zu keys, q=%g: sum bf16(p)/sum p = %.9g is too close to 1",
                  n, (double)qv[i], expect[i]);
    }
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    static const attn_dtype types[] = { ATTN_F32, ATTN_F16, ATTN_BF16 };
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 0, 0, 256), ATTN_OK); /* one tile: block_kv >= kv_len */
        double worst = 0.0, closest = INFINITY, worst_f32 = 0.0;
        for (size_t ti = 0; ti < 3; ti++)
            for (int layout = 0; layout < 2; layout++) {
                attn_sdpa_desc d = tc_shape(1, 1, 0, nq, n, 1, dv);
                d.scale = 1.0f;
                d.layout = (attn_layout)layout;
                d.q_dtype = d.kv_dtype = types[ti];
                tc_typed t;
                cr_assert(!tc_typed_init(&t, &d));
                for (size_t i = 0; i < nq; i++)
                    t.p.q[i] = qv[i];
                for (size_t j = 0; j < n; j++)
                    t.p.k[j] = k[j];
                for (size_t x = 0; x < t.p.nv; x++)
                    t.p.v[x] = 1.0f;
                tc_typed_store(&t);
                for (size_t j = 0; j < n; j++)
                    cr_assert_eq(t.p.k[j], k[j], "test data: key %zu is not exact in %s", j,
                                 tc_dtype_name(types[ti]));
                for (int m = 0; m < 2; m++) {
                    t.p.d.math = (attn_math)m;
                    void *out;
                    float *probs;
                    cr_assert_eq(tc_typed_run(ctx, &t, 0, &out, &probs), ATTN_OK);
                    for (size_t i = 0; i < nq; i++)
                        for (size_t c = 0; c < dv; c++) {
                            const double o = ((const float *)out)[tc_index(d.layout, 1, nq, dv, 0, 0, i, c)];
                            if (m == ATTN_MATH_F32) {
                                worst_f32 = fmax(worst_f32, fabs(o - 1.0));
                                cr_assert(fabs(o - 1.0) <= 1e-6, "%s %s q=%g: MATH_F32 out[%zu] = %.9g, want 1",
                                          attn_isa_name(isas[ii]), tc_dtype_name(types[ti]), (double)qv[i], c, o);
                                continue;
                            }
                            const double e = fabs(o - expect[i]) / expect[i];
                            worst = fmax(worst, e);
                            closest = fmin(closest, fabs(o - 1.0));
                            cr_assert(e <= 1e-5,
                                      "%s %s q=%g n=%zu: MATH_BF16 out[%zu] = %.9g, want sum bf16(p)/sum p = %.9g "
                                      "(relative error %.3g)",
                                      attn_isa_name(isas[ii]), tc_dtype_name(types[ti]), (double)qv[i], n, c, o,
                                      expect[i], e);
                            cr_assert(fabs(o - 1.0) > 1e-4,
                                      "%s %s q=%g: MATH_BF16 out[%zu] = %.9g: P was not rounded (want %.9g)",
                                      attn_isa_name(isas[ii]), tc_dtype_name(types[ti]), (double)qv[i], c, o,
                                      expect[i]);
                        }
                    free(out);
                }
                tc_typed_free(&t);
            }
        fprintf(stderr,
                "[stat] %-24s %-6s: %zu keys, MATH_BF16 max rel err vs sum bf16(p)/sum p %.2e (|out - 1| >= %.2e), "
                "MATH_F32 max |out - 1| %.2e (seed %" PRIu64 ")\n",
                "dtypes::p_rounding", attn_isa_name(isas[ii]), n, worst, closest, worst_f32, tc_seed());
        attn_ctx_destroy(ctx);
    }
}

/* ---- d. bad enums ---- */

Test(dtypes, bad_enums)
{
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    attn_sdpa_desc d = tc_shape(2, 2, 1, 5, 7, 8, 3);
    d.q_dtype = ATTN_BF16;
    d.kv_dtype = ATTN_F16;
    tc_typed t;
    cr_assert(!tc_typed_init(&t, &d));
    tc_typed_fill(&t, tc_mix(tc_seed(), 0xbad), 1.0f);
    /* Room for fp32 out and probs with guards: nothing of it may change. */
    const size_t n = t.p.nout + t.p.nprobs + 2 * TC_GUARD;
    uint32_t *buf = malloc(n * sizeof *buf), *copy = malloc(n * sizeof *copy);
    cr_assert(buf && copy);
    static const int bad_types[] = { 3, -1, 7, 0x10000 };
    static const int bad_maths[] = { 2, -1, 3 };
    unsigned long calls = 0;
    for (int ii = 0; ii < n_isa; ii++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 0, 0, 0), ATTN_OK);
        for (int field = 0; field < 4; field++) {
            const int *vals = field < 3 ? bad_types : bad_maths;
            const size_t nv =
                field < 3 ? sizeof bad_types / sizeof bad_types[0] : sizeof bad_maths / sizeof bad_maths[0];
            for (size_t vi = 0; vi < nv; vi++)
                for (int with_probs = 0; with_probs < 2; with_probs++) {
                    attn_sdpa_desc bd = t.p.d;
                    switch (field) {
                    case 0: bd.q_dtype = (attn_dtype)vals[vi]; break;
                    case 1: bd.kv_dtype = (attn_dtype)vals[vi]; break;
                    case 2: bd.out_dtype = (attn_dtype)vals[vi]; break;
                    default: bd.math = (attn_math)vals[vi]; break;
                    }
                    for (size_t i = 0; i < n; i++)
                        buf[i] = copy[i] = TC_POISON_BITS ^ (uint32_t)(i * 0x9e3779b9u);
                    float *out = (float *)(buf + TC_GUARD), *probs = out + t.p.nout;
                    const attn_status s = attn_sdpa(ctx, &bd, t.q, t.k, t.v, out, with_probs ? probs : NULL);
                    static const char *const names[] = { "q_dtype", "kv_dtype", "out_dtype", "math" };
                    cr_assert_eq(s, ATTN_EINVAL, "%s: %s = %d gave %d, want ATTN_EINVAL", attn_isa_name(isas[ii]),
                                 names[field], vals[vi], (int)s);
                    cr_assert(!memcmp(buf, copy, n * sizeof *buf), "%s: %s = %d: out or probs written",
                              attn_isa_name(isas[ii]), names[field], vals[vi]);
                    calls++;
                }
        }
        attn_ctx_destroy(ctx);
    }
    fprintf(stderr, "[stat] %-24s %lu calls with a bad q/kv/out dtype or math: all ATTN_EINVAL, nothing written\n",
            "dtypes::bad_enums", calls);
    free(buf), free(copy);
    tc_typed_free(&t);
}

/* ---- e. the thread count changes no bit ---- */

Test(dtypes, threads)
{
    static const struct {
        size_t b, h, hk, q, kv, d, dv;
        int layout, causal, bq, bkv;
        int32_t valid[3];
    } shapes[] = {
        /* several query blocks sharing packed tiles, padding */
        { 2, 6, 2, 150, 170, 72, 40, 1, 1, 32, 64, { 170, 91, 0 } },
        /* decode over 2100 keys: split-KV chunks merged in order, K and V read in place */
        { 1, 8, 2, 2, 2100, 64, 64, 0, 1, 0, 0, { 0, 0, 0 } },
        /* batch 3, odd widths, no mask, many small tiles */
        { 3, 4, 4, 37, 300, 33, 0, 0, 0, 16, 48, { 0, 0, 0 } },
    };
    /* (q, kv, out): bfloat16 tensors (the case asked for), and the rounding done by the library. */
    static const attn_dtype types[][3] = {
        { ATTN_BF16, ATTN_BF16, ATTN_BF16 }, { ATTN_BF16, ATTN_BF16, ATTN_F32 }, { ATTN_F32, ATTN_F16, ATTN_F16 } };
    static const int threads[] = { 1, 2, 3 };
    attn_isa isas[TC_MAX_ISAS];
    const int n_isa = tc_isas(isas);
    unsigned long same = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
            attn_sdpa_desc d = tc_shape(shapes[si].b, shapes[si].h, shapes[si].hk, shapes[si].q, shapes[si].kv,
                                        shapes[si].d, shapes[si].dv);
            d.layout = (attn_layout)shapes[si].layout;
            d.mask = shapes[si].causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
            d.kv_valid = shapes[si].valid[0] ? shapes[si].valid : NULL;
            d.q_dtype = types[ti][0];
            d.kv_dtype = types[ti][1];
            d.out_dtype = types[ti][2];
            d.math = ATTN_MATH_BF16;
            tc_typed t;
            cr_assert(!tc_typed_init(&t, &d));
            tc_typed_fill(&t, tc_mix(tc_seed(), 0x7e4d + si * 8 + ti), 2.0f);
            const int want_probs = ti != 1;
            for (int ii = 0; ii < n_isa; ii++) {
                void *out0 = NULL;
                float *probs0 = NULL;
                for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
                    attn_ctx *ctx = NULL;
                    cr_assert_eq(tc_ctx_create(&ctx, isas[ii], threads[k], shapes[si].bq, shapes[si].bkv), ATTN_OK);
                    void *out;
                    float *probs;
                    cr_assert_eq(tc_typed_run(ctx, &t, want_probs, &out, &probs), ATTN_OK);
                    if (k == 0) {
                        out0 = out, probs0 = probs;
                    } else {
                        char msg[1024], what[64];
                        snprintf(what, sizeof what, "%d threads vs 1", threads[k]);
                        const int bad = tc_typed_same(ctx, &t, out0, probs0, out, probs, what, msg, sizeof msg);
                        cr_assert(!bad, "%s", msg);
                        same++;
                        free(out), free(probs);
                    }
                    attn_ctx_destroy(ctx);
                }
                free(out0), free(probs0);
            }
            tc_typed_free(&t);
        }
    fprintf(stderr, "[stat] %-24s %lu MATH_BF16 results bitwise equal with 2 and 3 threads as with 1 (seed %" PRIu64
                    ")\n", "dtypes::threads", same, tc_seed());
}
