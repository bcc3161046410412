/* long-check: sizes where 32-bit index arithmetic would break. Standalone (no Criterion, never forks); make check
 * runs it in native builds only (tests/checks.mk: qemu would take many minutes).
 *
 * 1. Decode over a KV cache of 1,048,576 tokens stored as F16: 2 KV heads of 64, 8 query heads (GQA, 4 per KV head),
 *    the last 2 positions decoded with the causal mask. Every value is on a grid that half represents exactly, so
 *    the cache holds exactly the values appended and the float64 reference reads the same (F16-rounded) K and V,
 *    regenerated from a counter-based hash rather than kept. V carries a ramp along the positions, so that a key
 *    range dropped or read twice moves the output far past the tolerance, and a few "needle" keys (aligned with one
 *    query head's q, at the start, the middle and the end of the cache) take a large share of their head's weight.
 *    Every output element of every head is checked.
 * 2. A prefill with probs whose q_len x kv_len elements pass 2^31 (8 GiB of probs: when MemAvailable in
 *    /proc/meminfo is at least 12 GiB), or else one whose probs byte offsets pass 2^31 (2 GiB); ATTN_LONG_PREFILL=big
 *    or small forces one. Sampled rows (the first, the last, the rows around the 2^31-byte, 2^32-byte and
 *    2^31-element offsets, a few random ones) are checked, output and probs, against the float64 reference, and
 *    every probs row must sum to 1 (a row left unwritten sums to 0).
 * Runs on the context's default ISA and thread count (ATTN_ISA, ATTN_NUM_THREADS). Exit status 1 on failure. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Peak resident set (VmHWM) in MiB, or -1. */
static long peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* MemAvailable in MiB, or -1. */
static long mem_available_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* ---- 1. decode over 2^20 F16 tokens ---------------------------------------------------------------------------- */

#define DEC_LEN ((size_t)1 << 20)
#define DEC_HK 2
#define DEC_GROUP 4
#define DEC_H (DEC_HK * DEC_GROUP)
#define DEC_D 64
#define DEC_QLEN 2
#define DEC_CHUNK 4096

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t dec_seed;
static float dec_q[DEC_QLEN][DEC_H][DEC_D];

/* Key or value row of token t, KV head g, as 64 floats, each exactly a half: K = k/512, V = (k ± ramp)/2048 with
 * |k| <= 1024 and ramp = t >> 10 (11 significant bits at most). Needles: K = +-3.5, the signs of one query head's
 * q (position 0 of the two decoded), so that head's score there is large (about 14). */
static int dec_needle(size_t t, size_t g, size_t *head)
{
    static const size_t at[3] = { 17, ((size_t)1 << 19) + 5, DEC_LEN - 3 };
    for (size_t i = 0; i < 3; i++)
        if (t == at[i]) {
            *head = g * DEC_GROUP + (i + g) % DEC_GROUP;
            return 1;
        }
    return 0;
}

static void dec_row(size_t t, size_t g, float *k, float *v)
{
    const uint64_t base = hash64(dec_seed ^ ((uint64_t)t * DEC_HK + g) * 0x9e3779b97f4a7c15ull);
    size_t head;
    const int needle = dec_needle(t, g, &head);
    const float ramp = (float)(t >> 10);
    for (size_t c = 0; c < DEC_D; c += 4) {
        uint64_t hk = hash64(base + c), hv = hash64(base + c + 0x100000001ull);
        for (size_t u = 0; u < 4; u++, hk >>= 16, hv >>= 16) {
            const int kk = (int)(hk & 2047) - 1024, vv = (int)(hv & 1023) - 512;
            k[c + u] = (float)kk / 512.0f;
            v[c + u] = ((float)vv + ((c + u) % 2 ? ramp : -ramp)) / 2048.0f;
        }
    }
    if (needle)
        for (size_t c = 0; c < DEC_D; c++)
            k[c] = dec_q[0][head][c] > 0.0f ? 3.5f : dec_q[0][head][c] < 0.0f ? -3.5f : 0.0f;
}

static int check_decode(const attn_ctx *ctx, double *seconds_lib)
{
    const double t0 = now();
    tc_rng r;
    tc_rng_init(&r, tc_mix(dec_seed, 1));
    for (size_t i = 0; i < DEC_QLEN; i++)
        for (size_t h = 0; h < DEC_H; h++)
            for (size_t c = 0; c < DEC_D; c++)
                dec_q[i][h][c] = (float)((int)tc_rng_below(&r, 2049) - 1024) / 1024.0f;

    attn_kv_cache *cache = NULL;
    attn_status s = attn_kv_cache_create(&cache, DEC_HK, DEC_D, DEC_LEN, ATTN_F16);
    float *kb = malloc(DEC_CHUNK * DEC_HK * DEC_D * sizeof *kb), *vb = malloc(DEC_CHUNK * DEC_HK * DEC_D * sizeof *vb);
    double *sc = malloc(DEC_QLEN * DEC_H * DEC_LEN * sizeof *sc); /* reference scores */
    if (s != ATTN_OK || !kb || !vb || !sc) {
        printf("FAIL decode: cache of %zu tokens: %s\n", DEC_LEN, s != ATTN_OK ? attn_strerror(s) : "out of memory");
        attn_kv_cache_destroy(cache);
        free(kb), free(vb), free(sc);
        return 1;
    }
    for (size_t t0c = 0; t0c < DEC_LEN && s == ATTN_OK; t0c += DEC_CHUNK) {
        for (size_t t = 0; t < DEC_CHUNK; t++)
            for (size_t g = 0; g < DEC_HK; g++)
                dec_row(t0c + t, g, kb + (t * DEC_HK + g) * DEC_D, vb + (t * DEC_HK + g) * DEC_D);
        s = attn_kv_cache_append(cache, kb, vb, DEC_CHUNK);
    }
    float out[DEC_QLEN][DEC_H][DEC_D];
    const double t1 = now();
    if (s == ATTN_OK)
        s = attn_decode(ctx, cache, &dec_q[0][0][0], DEC_QLEN, DEC_H, ATTN_MASK_CAUSAL, &out[0][0][0]);
    const double t2 = now();
    *seconds_lib = t2 - t1;
    attn_kv_cache_destroy(cache);
    if (s != ATTN_OK) {
        printf("FAIL decode over %zu tokens: %s\n", DEC_LEN, attn_strerror(s));
        free(kb), free(vb), free(sc);
        return 1;
    }

    /* The reference, key row by key row: pass 1 scores and maxima, pass 2 weights and sums. Query i sits at
     * position DEC_LEN - DEC_QLEN + i and sees keys up to it. */
    const double scale = 1.0 / 8.0;
    double mx[DEC_QLEN][DEC_H], l[DEC_QLEN][DEC_H], acc[DEC_QLEN][DEC_H][DEC_D];
    for (size_t i = 0; i < DEC_QLEN; i++)
        for (size_t h = 0; h < DEC_H; h++) {
            mx[i][h] = -INFINITY;
            l[i][h] = 0.0;
            memset(acc[i][h], 0, sizeof acc[i][h]);
        }
    float k[DEC_D], v[DEC_D];
    for (size_t t = 0; t < DEC_LEN; t++)
        for (size_t g = 0; g < DEC_HK; g++) {
            dec_row(t, g, k, v);
            for (size_t i = 0; i < DEC_QLEN; i++) {
                if (t > DEC_LEN - DEC_QLEN + i)
                    continue;
                for (size_t h = g * DEC_GROUP; h < (g + 1) * DEC_GROUP; h++) {
                    double d = 0.0;
                    for (size_t c = 0; c < DEC_D; c++)
                        d += (double)dec_q[i][h][c] * (double)k[c];
                    d *= scale;
                    sc[(i * DEC_H + h) * DEC_LEN + t] = d;
                    mx[i][h] = d > mx[i][h] ? d : mx[i][h];
                }
            }
        }
    double needle_share = 0.0;
    for (size_t t = 0; t < DEC_LEN; t++)
        for (size_t g = 0; g < DEC_HK; g++) {
            dec_row(t, g, k, v);
            for (size_t i = 0; i < DEC_QLEN; i++) {
                if (t > DEC_LEN - DEC_QLEN + i)
                    continue;
                for (size_t h = g * DEC_GROUP; h < (g + 1) * DEC_GROUP; h++) {
                    const double w = exp(sc[(i * DEC_H + h) * DEC_LEN + t] - mx[i][h]);
                    l[i][h] += w;
                    for (size_t c = 0; c < DEC_D; c++)
                        acc[i][h][c] += w * (double)v[c];
                }
            }
        }
    /* How much weight the needles take (a check on the test itself: they must matter). */
    for (size_t g = 0; g < DEC_HK; g++)
        for (size_t t = 0; t < DEC_LEN; t++) {
            size_t head;
            if (dec_needle(t, g, &head))
                needle_share += exp(sc[(0 * DEC_H + head) * DEC_LEN + t] - mx[0][head]) / l[0][head] / (3.0 * DEC_HK);
        }
    double worst = 0.0;
    int bad = 0;
    for (size_t i = 0; i < DEC_QLEN && !bad; i++)
        for (size_t h = 0; h < DEC_H && !bad; h++) {
            double rmax = 1.0;
            for (size_t c = 0; c < DEC_D; c++)
                rmax = fabs(acc[i][h][c] / l[i][h]) > rmax ? fabs(acc[i][h][c] / l[i][h]) : rmax;
            for (size_t c = 0; c < DEC_D && !bad; c++) {
                const double ref = acc[i][h][c] / l[i][h], e = fabs((double)out[i][h][c] - ref) / rmax;
                worst = e > worst ? e : worst;
                if (!(e <= TC_TOL)) {
                    printf("FAIL decode over %zu F16 tokens: out[i=%zu h=%zu c=%zu] = %.9g, reference %.9g\n", DEC_LEN,
                           i, h, c, (double)out[i][h][c], ref);
                    bad = 1;
                }
            }
        }
    printf("long-check: decode, F16 cache of %zu tokens x %d KV heads x %d (%d query heads, %d positions, causal): "
           "max err %.2e, needles hold %.0f%% of their heads' weight; decode %.3f s, all %.1f s\n",
           DEC_LEN, DEC_HK, DEC_D, DEC_H, DEC_QLEN, worst, 100.0 * needle_share, *seconds_lib, now() - t0);
    if (!bad && needle_share < 0.05) {
        printf("FAIL decode: the needles take only %.2f%% of the weight: the test data is wrong\n", 100 * needle_share);
        bad = 1;
    }
    free(kb), free(vb), free(sc);
    return bad;
}

/* ---- 2. prefill with probs past 2^31 --------------------------------------------------------------------------- */

static int check_prefill(const attn_ctx *ctx, int big)
{
    const double t0 = now();
    /* kv_len odd, so that the 2^31-byte, 2^32-byte and 2^31-element offsets fall inside rows, not between them. */
    const size_t kv_len = 65537, q_len = big ? 32768 : 8200, d = 16;
    attn_sdpa_desc desc = tc_shape(1, 1, 0, q_len, kv_len, d, 0);
    tc_problem p;
    if (tc_problem_init(&p, &desc)) {
        printf("FAIL prefill: out of memory\n");
        return 1;
    }
    tc_problem_fill(&p, tc_mix(tc_seed(), 2), TC_FILL_UNIFORM);
    for (size_t i = 0; i < p.nk; i++)
        p.k[i] *= 2.0f; /* scores of a few units: probs spread over many orders of magnitude */
    const size_t nprobs = q_len * kv_len, bytes = nprobs * sizeof(float);
    printf("long-check: prefill %s: q_len %zu x kv_len %zu = %zu probs (%s 2^31 elements), %.2f GiB\n",
           big ? "(big)" : "(small)", q_len, kv_len, nprobs, nprobs > ((size_t)1 << 31) ? "past" : "under",
           (double)bytes / (1u << 30));
    float *out = malloc(p.nout * sizeof *out);
    float *probs = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!out || probs == MAP_FAILED) {
        printf("FAIL prefill: cannot allocate %zu bytes of probs\n", bytes);
        free(out);
        tc_problem_free(&p);
        return 1;
    }
    /* No MADV_HUGEPAGE: with THP's defrag on madvise, faulting 8 GiB in took 2.5 times as long (compaction). */
    /* Rows to check: first, last, those holding the 2^31-byte, 2^32-byte and 2^31-element offsets and their
     * neighbours, a few drawn at random. */
    size_t rows[24], nrows = 0;
    const size_t marks[3] = { ((size_t)1 << 31) / sizeof(float), ((size_t)1 << 32) / sizeof(float), (size_t)1 << 31 };
    rows[nrows++] = 0;
    rows[nrows++] = q_len - 1;
    for (int m = 0; m < 3; m++)
        if (marks[m] < nprobs) {
            const size_t row = marks[m] / kv_len;
            rows[nrows++] = row - 1;
            rows[nrows++] = row;
            if (row + 1 < q_len)
                rows[nrows++] = row + 1;
        }
    tc_rng r;
    tc_rng_init(&r, tc_mix(tc_seed(), 3));
    while (nrows < 16)
        rows[nrows++] = tc_rng_below(&r, (uint32_t)q_len);
    size_t kept = 0; /* without repeats */
    for (size_t i = 0; i < nrows; i++) {
        size_t k = 0;
        while (k < kept && rows[k] != rows[i])
            k++;
        if (k == kept)
            rows[kept++] = rows[i];
    }
    nrows = kept;
    for (size_t i = 0; i < nrows; i++) /* untouched elements of a sampled row would stay NaN */
        for (size_t j = 0; j < kv_len; j++)
            probs[rows[i] * kv_len + j] = tc_u2f(TC_POISON_BITS);
    for (size_t i = 0; i < p.nout; i++)
        out[i] = tc_u2f(TC_POISON_BITS);

    const double t1 = now();
    const attn_status s = attn_sdpa(ctx, &p.d, p.q, p.k, p.v, out, probs);
    const double t2 = now();
    int bad = 0;
    if (s != ATTN_OK) {
        printf("FAIL prefill: attn_sdpa returned %s\n", attn_strerror(s));
        bad = 1;
    }
    double *ro = malloc(d * sizeof *ro), *rp = malloc(kv_len * sizeof *rp), *scratch = malloc(kv_len * sizeof *rp);
    double eo = 0.0, ep = 0.0;
    for (size_t n = 0; n < nrows && !bad; n++) {
        const size_t i = rows[n];
        if (!ro || !rp || !scratch || tc_ref_row(&p, 0, 0, i, ro, rp, scratch) <= 0) {
            printf("FAIL prefill: reference row %zu\n", i);
            bad = 1;
            break;
        }
        const float *o = out + i * d, *pr = probs + i * kv_len;
        for (size_t c = 0; c < d && !bad; c++) {
            const double e = fabs((double)o[c] - ro[c]);
            eo = e > eo ? e : eo;
            if (!(e <= TC_TOL)) {
                printf("FAIL prefill: out[%zu][%zu] = %.9g, reference %.9g\n", i, c, (double)o[c], ro[c]);
                bad = 1;
            }
        }
        for (size_t j = 0; j < kv_len && !bad; j++) {
            const double e = fabs((double)pr[j] - rp[j]);
            ep = e > ep ? e : ep;
            if (!(e <= TC_TOL)) {
                printf("FAIL prefill: probs[%zu][%zu] (element %zu, byte %zu) = %.9g, reference %.9g\n", i, j,
                       i * kv_len + j, (i * kv_len + j) * sizeof(float), (double)pr[j], rp[j]);
                bad = 1;
            }
        }
    }
    /* Every row written: each sums to 1. */
    size_t worst_row = 0;
    double worst_sum = 1.0;
    for (size_t i = 0; i < q_len && !bad; i++) {
        const float *pr = probs + i * kv_len;
        double sum = 0.0;
        for (size_t j = 0; j < kv_len; j++)
            sum += pr[j];
        if (!(fabs(sum - 1.0) <= fabs(worst_sum - 1.0))) {
            worst_sum = sum;
            worst_row = i;
        }
    }
    if (!bad && !(fabs(worst_sum - 1.0) <= 1e-4)) {
        printf("FAIL prefill: probs row %zu sums to %.9g\n", worst_row, worst_sum);
        bad = 1;
    }
    printf("long-check: prefill: %zu sampled rows max err out %.2e probs %.2e (rows", nrows, eo, ep);
    for (size_t n = 0; n < nrows; n++)
        printf(" %zu", rows[n]);
    printf("), every row sums to 1 within %.1e; attn_sdpa %.1f s, all %.1f s\n", fabs(worst_sum - 1.0), t2 - t1,
           now() - t0);
    free(ro), free(rp), free(scratch);
    munmap(probs, bytes);
    free(out);
    tc_problem_free(&p);
    return bad;
}

int main(void)
{
    const double t0 = now();
    dec_seed = tc_seed();
    attn_ctx *ctx = NULL;
    const attn_status s = attn_ctx_create(&ctx, NULL);
    if (s != ATTN_OK) {
        printf("long-check: attn_ctx_create: %s\n", attn_strerror(s));
        return 1;
    }
    const long avail = mem_available_mib();
    const char *force = getenv("ATTN_LONG_PREFILL");
    int big = avail >= 12 * 1024;
    if (force && !strcmp(force, "big"))
        big = 1;
    else if (force && !strcmp(force, "small"))
        big = 0;
    printf("long-check: attn %s, isa %s, %d threads, seed %" PRIu64 " (replay with ATTN_TEST_SEED=%" PRIu64
           "), MemAvailable %ld MiB: %s prefill%s\n",
           attn_version(), attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx), dec_seed, dec_seed, avail,
           big ? "the big (probs past 2^31 elements, 8 GiB)" : "the small (probs past 2^31 bytes, 2 GiB)",
           force && *force ? " (ATTN_LONG_PREFILL)" : big ? "" : " (under 12 GiB available)");
    fflush(stdout);
    double lib = 0.0;
    int bad = check_decode(ctx, &lib);
    fflush(stdout);
    bad |= check_prefill(ctx, big);
    attn_ctx_destroy(ctx);
    printf("long-check: %s in %.1f s, peak RSS %ld MiB\n", bad ? "FAILED" : "passed", now() - t0, peak_rss_mib());
    return bad;
}
