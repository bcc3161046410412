/* attn-bench: times attn_sdpa / attn_decode on the DESIGN.md §5 shapes (or custom ones) per ISA and thread count,
 * and measures the machine's own ceilings in the same run (FMA peak per ISA and thread count, DRAM read bandwidth,
 * whether the host is time-sharing the vCPUs) so that every row is reported against them.
 * Baseline flags only: the ISA-specific loops live in bench/peak_*.c and are called after attn_isa_supported(). */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn.h"
#include "bench.h"

/* ---------------------------------------------------------------------------------------------------------- */
/* Constants                                                                                                  */

#define DECODE_MAX_Q 16          /* shapes with q_len <= this are "decode": also reported as K+V GB/s */
#define MIN_REP_S 2e-3           /* a timed rep repeats a fast call until it lasts this long */
#define PROBE_GAP_S 20e-6        /* a clock gap longer than this counts as descheduled time */
#define PROBE_SHARED_FRAC 0.10   /* a thread descheduled more than this share of the probe: time-shared */
#define CORUN_SHARED 0.75        /* per-thread FMA rate with T threads at once below this share of the
                                    1-thread rate: the vCPUs share a core (SMT siblings or fine host slicing,
                                    which leaves no clock gaps) */
#define PEAK_CHUNK_S 50e-6       /* the FMA loop is timed in chunks this long; the median chunk sets the rate */
#define MAX_LIST 64              /* entries in --threads / --isa / --kv-dtype / shapes */
#define MAX_THREADS 1024
#define FMA_MUL 0.9999f          /* acc = acc*mul + add converges to add/(1-mul) = 1: no denormals, no inf */
#define FMA_ADD 0.0001f

static const char *prog = "attn-bench";

/* ---------------------------------------------------------------------------------------------------------- */
/* Options                                                                                                    */

typedef struct bench_shape {
    char name[64];
    size_t h, hkv, q, kv, d;
    int causal;
    size_t dm; /* > 0: a whole self-attention layer of d_model dm over q = kv tokens (head_dim d = dm / h) */
} bench_shape;

static const bench_shape named_shapes[] = {
    {"seed", 1, 1, 3, 3, 4, 0, 0},
    {"P1", 8, 8, 512, 512, 64, 0, 0},
    {"P2", 8, 8, 2048, 2048, 128, 0, 0},
    {"P3", 8, 8, 2048, 2048, 128, 1, 0},
    {"D1", 32, 8, 1, 4096, 128, 1, 0},
    {"D2", 32, 8, 1, 32768, 128, 1, 0},
};
#define N_NAMED (sizeof named_shapes / sizeof named_shapes[0])

/* Layer shapes (issue 4): not in the default set, asked for by name or with --layer. */
static const bench_shape layer_shapes[] = {
    {"L1", 16, 16, 2048, 2048, 64, 0, 1024},
};
#define N_LAYER (sizeof layer_shapes / sizeof layer_shapes[0])

static struct {
    bench_shape shapes[MAX_LIST];
    int n_shapes;
    attn_isa isa_req[MAX_LIST];       /* as asked; "all" is expanded at parse time */
    int n_isa_req;
    int threads_req[MAX_LIST];        /* 0 = "max" */
    int n_threads_req;
    attn_dtype dtypes[MAX_LIST];
    int n_dtypes;
    int reps, warmup;
    double max_seconds;
    int block_q, block_kv;
    const char *csv_path, *json_path;
    double peak_ms;
    size_t bw_mib;
    int bw_passes;
    double probe_ms;
    uint64_t seed;
    int quiet;
} opt;

static FILE *hout;  /* the human-readable report: stdout, or stderr when --csv - / --json - own stdout */

static void short_usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--shapes LIST] [--shape H,HKV,Q,KV,D[,causal]]... [--isa auto|all|LIST]\n"
            "       [--threads LIST|max] [--reps N] [--warmup N] [--max-seconds S] [--kv-dtype f32|f16|bf16]\n"
            "       [--layer N,DM,H[,HKV][,causal]]... [--block-q N] [--block-kv N] [--csv FILE|-] [--json FILE|-] [--peak-ms MS] [--bw-mib N]\n"
            "       [--bw-passes N] [--probe-ms MS] [--seed N] [--quiet] [--help] [--version]\n",
            prog);
}

static void help(void)
{
    /* One string per line: ISO C only promises 4095-character literals. */
    static const char *const text[] = {
        "",
        "Times attention from libattn (attn_sdpa; attn_decode from a KV cache for decode shapes) on the DESIGN.md",
        "shapes or custom ones, for each ISA and thread count, against this machine's FMA peak and read bandwidth,",
        "both measured in the same run. All shapes: batch 1, fp32, BHSD layout, v_dim = head_dim.",
        "",
        "What to run:",
        "  --shapes LIST        named shapes, comma-separated, case-insensitive, or 'all' (the default set):",
        "                         seed  heads 1/1   q 3     kv 3      d 4    no mask",
        "                         P1    heads 8/8   q 512   kv 512    d 64   no mask",
        "                         P2    heads 8/8   q 2048  kv 2048   d 128  no mask",
        "                         P3    heads 8/8   q 2048  kv 2048   d 128  causal",
        "                         D1    heads 32/8  q 1     kv 4096   d 128  causal (decode, GQA, K+V in L3)",
        "                         D2    heads 32/8  q 1     kv 32768  d 128  causal (decode, GQA, K+V in DRAM)",
        "                       L1 (not in the default set): a self-attention layer, 2048 tokens, d_model",
        "                         1024, 16 heads of 64 (issue 4's projection target); see --layer.",
        "  --layer N,DM,H[,HKV][,causal|none]",
        "                       a custom layer shape (repeatable): tokens, d_model, heads (must divide DM), KV",
        "                       heads (must divide H; default H), mask. Each layer shape gives two rows:",
        "                       NAME/proj, the four projection GEMMs through attn_linear (FLOPs",
        "                       2*N*DM*(2*H*hd + 2*HKV*hd)), and NAME/layer, the whole attn_self_attention",
        "                       (those FLOPs plus the attention's). Named L_nN_dmDM_hH/HKV[_causal].",
        "  --shape H,HKV,Q,KV,D[,causal|none]",
        "                       a custom shape (repeatable): query heads, KV heads (must divide H), q_len,",
        "                       kv_len, head_dim, mask (default none; 1/0 also accepted). Named in the output",
        "                       as hH/HKV_qQ_kvKV_dD[_causal]. --shapes and --shape add up, in the order given;",
        "                       either one replaces the default set.",
        "  --isa auto|all|LIST  kernel sets: 'auto' (default) = the context default (ATTN_ISA, else the best the",
        "                       CPU runs); 'all' = every ISA attn_isa_supported() says this CPU runs; or a list",
        "                       of scalar,avx2,avx512,neon (auto may be mixed in). An ISA this CPU or build",
        "                       lacks is an error (exit 2). Rows show the ISA the context actually uses.",
        "  --threads LIST|max   thread counts, e.g. 1,2,4 or max (= omp_get_max_threads()); default 1,max,",
        "                       duplicates dropped. Each context is created with attn_config{num_threads=T}.",
        "  --kv-dtype f32|f16|bf16",
        "                       KV storage for decode shapes (q_len <= 16); a comma list runs each. Each fills",
        "                       an attn_kv_cache of that dtype (create + append, untimed) and times",
        "                       attn_decode, as a server would. When the build lacks that dtype (ATTN_ENOTSUP)",
        "                       it prints 'skipped: kv-dtype f16 not supported by this build' and goes on (exit 0).",
        "                       Longer shapes always run f32 through attn_sdpa. Default f32.",
        "  --block-q N, --block-kv N",
        "                       attn_config block_q / block_kv (1..4096); default 0 = ATTN_BLOCK_* or the",
        "                       library's tuned default.",
        "",
        "How long:",
        "  --reps N             timed reps per row after warm-up (default 5); median and best are over these.",
        "  --warmup N           untimed calls before the reps (default 1). The last one also calibrates: a call",
        "                       faster than 2 ms is repeated inside each rep until the rep lasts >= 2 ms, and",
        "                       the per-call time is reported. --warmup 0: no calibration, one call per rep,",
        "                       and --max-seconds cannot cut the reps.",
        "  --max-seconds S      cap on one row's timed reps (default 10; 0 = no cap): when warm-up shows that",
        "                       N reps would take longer than S, fewer reps run (at least 1; column 'reps').",
        "                       Warm-ups after one that took longer than S are skipped.",
        "  --peak-ms MS         time per FMA-peak measurement, per ISA and thread count (default 200; 0 skips",
        "                       it: peak columns stay empty).",
        "  --bw-mib N           read-bandwidth array in MiB, far larger than L3 (default 1024; 0 skips it:",
        "                       bw_pct stays empty).",
        "  --bw-passes N        passes over that array per thread count (default 5); best and median printed,",
        "                       and flagged TIME-SHARED when a thread lost > 10% of the best pass.",
        "  --probe-ms MS        time-sharing probe length (default 200; 0 disables it). The probe runs T",
        "                       threads that spin reading CLOCK_MONOTONIC and add up gaps > 20 us as",
        "                       descheduled time, then (for half as long) the fastest FMA loop on T threads at",
        "                       once. A thread descheduled > 10% of the probe, or one running < 75% of its",
        "                       1-thread FMA rate, means the vCPUs are time-shared. It runs at start-up and",
        "                       before and after every row (T = 1 rows: only the clock part, on 1 thread).",
        "  --seed N             PRNG seed for the inputs (default 1); inputs are uniform in [-1, 1).",
        "",
        "Output:",
        "  --csv FILE|-         also write CSV (header line first) with the columns",
        "                       shape,isa,threads,kv_dtype,median_ms,best_ms,gflops,peak_gflops,peak_pct,gbps,bw_pct",
        "                       (gbps and bw_pct empty for non-decode shapes; peak/bw columns empty when",
        "                       their measurement was skipped).",
        "  --json FILE|-        also write a JSON array of objects with those fields (empty = null) plus",
        "                       \"timeshared\" (true/false). With '-' the CSV/JSON owns stdout and the readable",
        "                       report goes to stderr; only one of them may be '-'.",
        "  -q, --quiet          no progress lines on stderr.",
        "  -h, --help           this text.",
        "  --version            print the bench and library versions.",
        "",
        "Columns of the table (and the CSV/JSON fields):",
        "  shape, isa, thr(eads), kv (kv_dtype), reps (reps actually timed)",
        "  median_ms, best_ms   per-call wall time (CLOCK_MONOTONIC), median and minimum over the reps",
        "  GFLOP/s (gflops)     4 * heads * head_dim * unmasked (query,key) pairs / median time; causal is",
        "                       bottom-right: query i sees key j <= i + kv_len - q_len",
        "  peak (peak_gflops)   the machine's FMA peak at T threads: T x the best ISA's measured 1-thread FMA",
        "                       rate (or its T-threads-at-once sum, if higher); not the row ISA's own peak",
        "  %peak (peak_pct)     100 * GFLOP/s / peak",
        "  GB/s (gbps)          decode shapes only: K+V bytes (kv_heads * kv_len * 2 * head_dim * 4, or 2 for",
        "                       f16/bf16) / median time",
        "  %bw (bw_pct)         100 * GB/s / best measured read bandwidth at T threads (D1's K+V fits in L3,",
        "                       so it may exceed 100)",
        "  desch                the largest share of the probe time a thread was descheduled",
        "                       (probes before and after the row)",
        "  corun                rows with T > 1: the slowest thread's FMA rate with T threads at once, as a share",
        "                       of one thread alone (the lower of the two probes); catches vCPUs that share a",
        "                       physical core without ever missing the clock",
        "  ts (timeshared)      '*' (JSON true) when desch > 10% or corun < 75%: the vCPUs were time-shared",
        "                       around the row, so its time (and any scaling read from it) is not the",
        "                       machine's; rerun it when the host is quieter",
        "",
        "Environment: ATTN_ISA (with --isa auto), ATTN_BLOCK_Q, ATTN_BLOCK_KV, ATTN_VERBOSE are read by the",
        "library when each context is created; ATTN_NUM_THREADS is overridden by --threads. OMP_* as usual.",
        "",
        "Exit status: 0 ok (also when a kv-dtype was skipped); 1 a library call failed or memory ran out (the",
        "other rows still run); 2 a bad flag or value, an ISA this CPU/build lacks, or a bad ATTN_* variable.",
    };
    short_usage(stdout);
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
        puts(text[i]);
}

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    short_usage(stderr);
    fprintf(stderr, "Run '%s --help' for what every flag does.\n", prog);
    exit(2);
}

/* Strict unsigned parse: digits only, no sign, no trailing text, within [lo, hi]. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

static int parse_nonneg_double(const char *s, double hi, double *out)
{
    if (!s || !*s || isspace((unsigned char)*s) || *s == '-')
        return 0;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !(v >= 0) || v > hi)
        return 0;
    *out = v;
    return 1;
}

/* Splits a comma list into at most max tokens, in place. Empty tokens are rejected. */
static int split_list(char *s, char **tok, int max)
{
    int n = 0;
    for (char *p = s;;) {
        char *c = strchr(p, ',');
        if (c)
            *c = '\0';
        if (!*p || n == max)
            return -1;
        tok[n++] = p;
        if (!c)
            return n;
        p = c + 1;
    }
}

/* Copies a comma-list flag value into buf and splits it; a value too long or not a list is a usage error that
 * names the flag and what it expects. */
#define LIST_BUF 1024
static int split_arg(const char *flag, const char *arg, char *buf, char **tok, const char *expected)
{
    if (strlen(arg) >= LIST_BUF)
        usage_error("%s: list too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, MAX_LIST);
    if (n < 0)
        usage_error("%s '%s': expected %s", flag, arg, expected);
    return n;
}

static int mul_ok(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return 0;
    *out = a * b;
    return 1;
}

/* Bytes of the largest buffer of a shape, or 0 if some count overflows. */
static size_t shape_bytes(const bench_shape *s)
{
    size_t qn, kn, t;
    if (!mul_ok(s->h, s->q, &t) || !mul_ok(t, s->d, &qn) || !mul_ok(s->hkv, s->kv, &t) ||
        !mul_ok(t, s->d, &kn))
        return 0;
    size_t m = qn > kn ? qn : kn;
    return m > SIZE_MAX / 4 - 64 ? 0 : m * 4;
}

static void add_shape(const bench_shape *s, const char *flag)
{
    if (opt.n_shapes == MAX_LIST)
        usage_error("%s: at most %d shapes", flag, MAX_LIST);
    opt.shapes[opt.n_shapes++] = *s;
}

static void parse_shapes(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok, "a comma list of seed,P1,P2,P3,D1,D2,L1 or all");
    for (int i = 0; i < n; i++) {
        if (!strcasecmp(tok[i], "all")) {
            for (size_t j = 0; j < N_NAMED; j++)
                add_shape(&named_shapes[j], flag);
            continue;
        }
        size_t j = 0;
        while (j < N_NAMED && strcasecmp(tok[i], named_shapes[j].name))
            j++;
        if (j < N_NAMED) {
            add_shape(&named_shapes[j], flag);
            continue;
        }
        for (j = 0; j < N_LAYER && strcasecmp(tok[i], layer_shapes[j].name); j++)
            ;
        if (j == N_LAYER)
            usage_error("%s: unknown shape '%s' (known: seed, P1, P2, P3, D1, D2, L1, all)", flag, tok[i]);
        add_shape(&layer_shapes[j], flag);
    }
}

static void parse_custom_shape(const char *flag, const char *arg)
{
    char buf[256], *tok[8];
    if (strlen(arg) >= sizeof buf)
        usage_error("%s: value too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, 8);
    if (n != 5 && n != 6)
        usage_error("%s '%s': expected H,HKV,Q,KV,D[,causal|none]", flag, arg);
    uint64_t v[5];
    static const char *what[5] = {"H (query heads)", "HKV (KV heads)", "Q (q_len)", "KV (kv_len)",
                                  "D (head_dim)"};
    for (int i = 0; i < 5; i++)
        if (!parse_u64(tok[i], 1, (uint64_t)1 << 31, &v[i]))
            usage_error("%s '%s': %s must be an integer in 1..2^31, got '%s'", flag, arg, what[i], tok[i]);
    bench_shape s;
    s.h = v[0], s.hkv = v[1], s.q = v[2], s.kv = v[3], s.d = v[4];
    s.causal = 0;
    s.dm = 0;
    if (n == 6) {
        if (!strcasecmp(tok[5], "causal") || !strcmp(tok[5], "1"))
            s.causal = 1;
        else if (strcasecmp(tok[5], "none") && strcmp(tok[5], "0"))
            usage_error("%s '%s': mask must be causal or none, got '%s'", flag, arg, tok[5]);
    }
    if (s.h % s.hkv)
        usage_error("%s '%s': HKV (%zu) must divide H (%zu)", flag, arg, s.hkv, s.h);
    if (!shape_bytes(&s))
        usage_error("%s '%s': buffers too large for this machine's size_t", flag, arg);
    snprintf(s.name, sizeof s.name, "h%zu/%zu_q%zu_kv%zu_d%zu%s", s.h, s.hkv, s.q, s.kv, s.d,
             s.causal ? "_causal" : "");
    add_shape(&s, flag);
}

/* Bytes of the largest buffer a layer shape needs (x, y, the weights, probs are not requested); 0 on overflow. */
static size_t layer_bytes(const bench_shape *s)
{
    size_t x, w, t;
    if (!mul_ok(s->q, s->dm, &x) || !mul_ok(s->h, s->d, &t) || !mul_ok(t, s->dm, &w))
        return 0;
    size_t m = x > w ? x : w;
    return m > SIZE_MAX / 4 - 64 ? 0 : m * 4;
}

static void parse_layer_shape(const char *flag, const char *arg)
{
    char buf[256], *tok[8];
    if (strlen(arg) >= sizeof buf)
        usage_error("%s: value too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, 8);
    if (n < 3 || n > 5)
        usage_error("%s '%s': expected N,DM,H[,HKV][,causal|none]", flag, arg);
    uint64_t v[4] = {0, 0, 0, 0};
    static const char *what[4] = {"N (tokens)", "DM (d_model)", "H (heads)", "HKV (KV heads)"};
    int causal = 0, nnum = n;
    if (n >= 4 && (!strcasecmp(tok[n - 1], "causal") || !strcasecmp(tok[n - 1], "none"))) {
        causal = !strcasecmp(tok[n - 1], "causal");
        nnum = n - 1;
    }
    if (nnum < 3 || nnum > 4)
        usage_error("%s '%s': expected N,DM,H[,HKV][,causal|none]", flag, arg);
    for (int i = 0; i < nnum; i++)
        if (!parse_u64(tok[i], 1, (uint64_t)1 << 31, &v[i]))
            usage_error("%s '%s': %s must be an integer in 1..2^31, got '%s'", flag, arg, what[i], tok[i]);
    bench_shape s;
    memset(&s, 0, sizeof s);
    s.q = s.kv = v[0];
    s.dm = v[1];
    s.h = v[2];
    s.hkv = nnum == 4 ? v[3] : v[2];
    s.causal = causal;
    if (s.dm % s.h)
        usage_error("%s '%s': H (%zu) must divide DM (%zu)", flag, arg, s.h, s.dm);
    if (s.h % s.hkv)
        usage_error("%s '%s': HKV (%zu) must divide H (%zu)", flag, arg, s.hkv, s.h);
    s.d = s.dm / s.h;
    if (!layer_bytes(&s))
        usage_error("%s '%s': buffers too large for this machine's size_t", flag, arg);
    snprintf(s.name, sizeof s.name, "L_n%zu_dm%zu_h%zu/%zu%s", s.q, s.dm, s.h, s.hkv, s.causal ? "_causal" : "");
    add_shape(&s, flag);
}

static int isa_from_name(const char *s, attn_isa *out)
{
    static const attn_isa all[] = {ATTN_ISA_AUTO, ATTN_ISA_SCALAR, ATTN_ISA_AVX2, ATTN_ISA_AVX512,
                                   ATTN_ISA_NEON};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcasecmp(s, attn_isa_name(all[i]))) {
            *out = all[i];
            return 1;
        }
    return 0;
}

static const attn_isa concrete_isas[] = {ATTN_ISA_SCALAR, ATTN_ISA_AVX2, ATTN_ISA_AVX512, ATTN_ISA_NEON};
#define N_CONCRETE (int)(sizeof concrete_isas / sizeof concrete_isas[0])

static void parse_isa(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok, "auto, all, or a comma list of scalar,avx2,avx512,neon");
    opt.n_isa_req = 0;
    for (int i = 0; i < n; i++) {
        if (!strcasecmp(tok[i], "all")) {
            for (int j = 0; j < N_CONCRETE; j++)
                if (attn_isa_supported(concrete_isas[j]) && opt.n_isa_req < MAX_LIST)
                    opt.isa_req[opt.n_isa_req++] = concrete_isas[j];
            continue;
        }
        attn_isa isa;
        if (!isa_from_name(tok[i], &isa))
            usage_error("%s: unknown ISA '%s' (accepted: auto, all, scalar, avx2, avx512, neon)", flag, tok[i]);
        if (opt.n_isa_req < MAX_LIST)
            opt.isa_req[opt.n_isa_req++] = isa;
    }
}

static void parse_threads(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST], what[128];
    snprintf(what, sizeof what, "a comma list of thread counts (1..%d) or max", MAX_THREADS);
    int n = split_arg(flag, arg, buf, tok, what);
    opt.n_threads_req = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = 0;
        if (strcasecmp(tok[i], "max") && !parse_u64(tok[i], 1, MAX_THREADS, &v))
            usage_error("%s: bad thread count '%s' (an integer 1..%d, or max)", flag, tok[i], MAX_THREADS);
        opt.threads_req[opt.n_threads_req++] = (int)v;
    }
}

static void parse_dtypes(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok, "f32, f16 or bf16 (or a comma list)");
    opt.n_dtypes = 0;
    for (int i = 0; i < n; i++) {
        attn_dtype t;
        if (!strcasecmp(tok[i], "f32"))
            t = ATTN_F32;
        else if (!strcasecmp(tok[i], "f16"))
            t = ATTN_F16;
        else if (!strcasecmp(tok[i], "bf16"))
            t = ATTN_BF16;
        else
            usage_error("%s: unknown dtype '%s' (accepted: f32, f16, bf16)", flag, tok[i]);
        int dup = 0;
        for (int j = 0; j < opt.n_dtypes; j++)
            dup |= opt.dtypes[j] == t;
        if (!dup)
            opt.dtypes[opt.n_dtypes++] = t;
    }
}

static const char *dtype_name(attn_dtype t)
{
    return t == ATTN_F16 ? "f16" : t == ATTN_BF16 ? "bf16" : "f32";
}

static void parse_args(int argc, char **argv)
{
    opt.reps = 5;
    opt.warmup = 1;
    opt.max_seconds = 10;
    opt.peak_ms = 200;
    opt.bw_mib = 1024;
    opt.bw_passes = 5;
    opt.probe_ms = 200;
    opt.seed = 1;
    opt.isa_req[0] = ATTN_ISA_AUTO;
    opt.n_isa_req = 1;
    opt.threads_req[0] = 1;
    opt.threads_req[1] = 0;
    opt.n_threads_req = 2;
    opt.dtypes[0] = ATTN_F32;
    opt.n_dtypes = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            help();
            exit(0);
        }
        if (!strcmp(a, "--version")) {
            printf("attn-bench (attn %s)\n", attn_version());
            exit(0);
        }
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            opt.quiet = 1;
            continue;
        }
        if (strncmp(a, "--", 2))
            usage_error("unexpected argument '%s'", a);
        /* --flag=value or --flag value */
        char name[64];
        const char *val;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name)
            usage_error("unknown flag '%s'", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        static const char *const known[] = {"--shapes", "--shape", "--isa", "--threads", "--reps", "--warmup",
                                            "--max-seconds", "--kv-dtype", "--block-q", "--block-kv", "--csv",
                                            "--json", "--peak-ms", "--bw-mib", "--bw-passes", "--probe-ms",
                                            "--seed", "--layer"};
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(name, known[k]))
            k++;
        if (k == sizeof known / sizeof known[0])
            usage_error("unknown flag '%s'", name);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            usage_error("%s needs a value", name);

        uint64_t u;
        double d;
        if (!strcmp(name, "--shapes"))
            parse_shapes(name, val);
        else if (!strcmp(name, "--layer"))
            parse_layer_shape(name, val);
        else if (!strcmp(name, "--shape"))
            parse_custom_shape(name, val);
        else if (!strcmp(name, "--isa"))
            parse_isa(name, val);
        else if (!strcmp(name, "--threads"))
            parse_threads(name, val);
        else if (!strcmp(name, "--kv-dtype"))
            parse_dtypes(name, val);
        else if (!strcmp(name, "--csv") || !strcmp(name, "--json")) {
            if (!*val)
                usage_error("%s needs a file name or -", name);
            *(!strcmp(name, "--csv") ? &opt.csv_path : &opt.json_path) = val;
        } else if (!strcmp(name, "--reps")) {
            if (!parse_u64(val, 1, 1000000, &u))
                usage_error("--reps: expected an integer 1..1000000, got '%s'", val);
            opt.reps = (int)u;
        } else if (!strcmp(name, "--warmup")) {
            if (!parse_u64(val, 0, 1000000, &u))
                usage_error("--warmup: expected an integer 0..1000000, got '%s'", val);
            opt.warmup = (int)u;
        } else if (!strcmp(name, "--block-q") || !strcmp(name, "--block-kv")) {
            if (!parse_u64(val, 0, 4096, &u))
                usage_error("%s: expected an integer 1..4096 (0 = default), got '%s'", name, val);
            *(!strcmp(name, "--block-q") ? &opt.block_q : &opt.block_kv) = (int)u;
        } else if (!strcmp(name, "--bw-mib")) {
            if (!parse_u64(val, 0, (uint64_t)1 << 20, &u) || (u << 20) > SIZE_MAX / 2)
                usage_error("--bw-mib: expected an integer 0..1048576 (MiB), got '%s'", val);
            opt.bw_mib = (size_t)u;
        } else if (!strcmp(name, "--bw-passes")) {
            if (!parse_u64(val, 1, 1000, &u))
                usage_error("--bw-passes: expected an integer 1..1000, got '%s'", val);
            opt.bw_passes = (int)u;
        } else if (!strcmp(name, "--seed")) {
            if (!parse_u64(val, 0, UINT64_MAX, &u))
                usage_error("--seed: expected a non-negative integer, got '%s'", val);
            opt.seed = u;
        } else if (!strcmp(name, "--max-seconds")) {
            if (!parse_nonneg_double(val, 1e6, &d))
                usage_error("--max-seconds: expected seconds >= 0, got '%s'", val);
            opt.max_seconds = d;
        } else { /* --peak-ms, --probe-ms */
            if (!parse_nonneg_double(val, 600000, &d))
                usage_error("%s: expected milliseconds 0..600000, got '%s'", name, val);
            *(!strcmp(name, "--peak-ms") ? &opt.peak_ms : &opt.probe_ms) = d;
        }
    }
    if (opt.n_shapes == 0)
        for (size_t j = 0; j < N_NAMED; j++)
            add_shape(&named_shapes[j], "default");
    if (opt.n_isa_req == 0)
        usage_error("--isa all: attn_isa_supported() reports no ISA at all");
    if (opt.csv_path && opt.json_path && !strcmp(opt.csv_path, "-") && !strcmp(opt.json_path, "-"))
        usage_error("--csv - and --json - cannot both write to stdout");
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Small utilities                                                                                            */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int num_procs(void)
{
#ifdef _OPENMP
    return omp_get_num_procs();
#else
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
#endif
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v). */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *alloc64(size_t bytes)
{
    size_t b = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, b ? b : 64);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1): 24 random bits, exactly representable. */
static void fill_uniform(float *p, size_t n, uint64_t seed)
{
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = (float)((int64_t)(splitmix64(&s) >> 40) - (1 << 23)) * (1.0f / (1 << 23));
}

static int stderr_tty;

/* Progress: an overwritten line on a terminal, one line per step otherwise; never mixed into a
 * non-terminal report on stderr. */
static void progress_v(int minor, const char *fmt, va_list ap)
{
    if (opt.quiet || (hout == stderr && !stderr_tty) || (minor && !stderr_tty))
        return;
    if (stderr_tty)
        fputs("\r\033[K", stderr);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputs(stderr_tty ? "" : "\n", stderr);
    fflush(stderr);
}

/* A step worth a line in a log. */
static void progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    progress_v(0, fmt, ap);
    va_end(ap);
}

/* A sub-step (warm-up, rep, probe): shown on a terminal only. */
static void progress_minor(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    progress_v(1, fmt, ap);
    va_end(ap);
}

static void progress_clear(void)
{
    if (!opt.quiet && stderr_tty) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Machine ceilings: FMA peak, read bandwidth, time-sharing probe                                             */

static volatile float fma_sink;
static volatile double bw_sink;

/* Scalar reference loop (baseline flags): one mul + one add per chain and iteration, counted as 2 flops.
 * SSE scalar intrinsics on x86 so that the compiler cannot pack the chains into vectors. */
#define SCALAR_CHAINS 12
#if defined(__SSE2__)
typedef __m128 scalar_acc;
#define SC_SET(x) _mm_set_ss(x)
#define SC_STEP(c) c = _mm_add_ss(_mm_mul_ss(c, m), a)
#define SC_ADD(x, y) _mm_add_ss(x, y)
#define SC_GET(x) _mm_cvtss_f32(x)
#else
typedef float scalar_acc;
#define SC_SET(x) (x)
#define SC_STEP(c) c = c * m + a
#define SC_ADD(x, y) ((x) + (y))
#define SC_GET(x) (x)
#endif
static double fma_scalar(uint64_t iters, float mul, float add, float *sink)
{
    const float s = *sink;
    const scalar_acc m = SC_SET(mul), a = SC_SET(add);
    scalar_acc c0 = SC_SET(s + 0.01f), c1 = SC_SET(s + 0.02f), c2 = SC_SET(s + 0.03f), c3 = SC_SET(s + 0.04f);
    scalar_acc c4 = SC_SET(s + 0.05f), c5 = SC_SET(s + 0.06f), c6 = SC_SET(s + 0.07f), c7 = SC_SET(s + 0.08f);
    scalar_acc c8 = SC_SET(s + 0.09f), c9 = SC_SET(s + 0.10f), c10 = SC_SET(s + 0.11f), c11 = SC_SET(s + 0.12f);
    for (uint64_t i = 0; i < iters; i++) {
        SC_STEP(c0); SC_STEP(c1); SC_STEP(c2); SC_STEP(c3); SC_STEP(c4); SC_STEP(c5);
        SC_STEP(c6); SC_STEP(c7); SC_STEP(c8); SC_STEP(c9); SC_STEP(c10); SC_STEP(c11);
#if !defined(__SSE2__) && defined(__aarch64__)
        /* keeps the compiler from packing the chains into vectors */
        __asm__ volatile("" : "+w"(c0), "+w"(c1), "+w"(c2), "+w"(c3), "+w"(c4), "+w"(c5), "+w"(c6), "+w"(c7),
                         "+w"(c8), "+w"(c9), "+w"(c10), "+w"(c11));
#endif
    }
    c0 = SC_ADD(SC_ADD(SC_ADD(c0, c1), SC_ADD(c2, c3)), SC_ADD(c4, c5));
    c6 = SC_ADD(SC_ADD(SC_ADD(c6, c7), SC_ADD(c8, c9)), SC_ADD(c10, c11));
    *sink = SC_GET(SC_ADD(c0, c6));
    return (double)iters * SCALAR_CHAINS * 2;
}

typedef struct fma_kind {
    attn_isa isa;
    const char *loop;          /* what the loop does, for the report */
    attn_bench_fma_fn *fn;
    double g1;                 /* GFLOP/s of one thread alone */
    double gflops[MAX_LIST];   /* per --threads entry: sum of per-thread rates with T threads at once */
    double desched[MAX_LIST];  /* largest per-thread descheduled share seen during the measurement */
} fma_kind;

static fma_kind fma_kinds[4];
static int n_fma_kinds;

static void setup_fma_kinds(void)
{
    fma_kinds[n_fma_kinds++] = (fma_kind){ATTN_ISA_SCALAR, "12 chains mul+add, 1 lane", fma_scalar, 0, {0}, {0}};
#if defined(ATTN_HAVE_AVX2) && ATTN_HAVE_AVX2
    if (attn_isa_supported(ATTN_ISA_AVX2))
        fma_kinds[n_fma_kinds++] = (fma_kind){ATTN_ISA_AVX2, "12 ymm FMA chains", attn_bench_fma_avx2, 0, {0}, {0}};
#endif
#if defined(ATTN_HAVE_AVX512) && ATTN_HAVE_AVX512
    if (attn_isa_supported(ATTN_ISA_AVX512))
        fma_kinds[n_fma_kinds++] =
            (fma_kind){ATTN_ISA_AVX512, "16 zmm FMA chains", attn_bench_fma_avx512, 0, {0}, {0}};
#endif
#if defined(ATTN_HAVE_NEON) && ATTN_HAVE_NEON
    if (attn_isa_supported(ATTN_ISA_NEON))
        fma_kinds[n_fma_kinds++] = (fma_kind){ATTN_ISA_NEON, "16 q-reg FMA chains", attn_bench_fma_neon, 0, {0}, {0}};
#endif
}

/* Runs fn on T threads at once for `seconds`, each timing its own chunks of ~50 us. A thread's rate is its
 * chunk's flops over the median chunk time, so a host that takes the vCPU away for a while (which lands in a
 * few chunks) does not lower it; the descheduled share is reported separately. Returns the sum of rates. */
static double measure_fma(attn_bench_fma_fn *fn, int T, double seconds, double *desched_out, double *min_rate)
{
    double want = seconds / PEAK_CHUNK_S * 2 + 64;   /* chunks are >= ~PEAK_CHUNK_S/2 after calibration */
    const int cap = want > (1 << 16) ? 1 << 16 : (int)want;
    double *times = malloc(sizeof(double) * (size_t)cap * (size_t)T);
    double *rate = calloc((size_t)T, sizeof(double)), *desch = calloc((size_t)T, sizeof(double));
    if (!times || !rate || !desch) {
        free(times), free(rate), free(desch);
        *desched_out = *min_rate = 0;
        return 0;
    }
    int team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
#endif
        float sink = 0.5f + 0.001f * (float)tid;
        uint64_t it = 64;
        double dt;
        for (;;) {
            double t0 = now_s();
            fn(it, FMA_MUL, FMA_ADD, &sink);
            dt = now_s() - t0;
            if (dt >= PEAK_CHUNK_S / 4 || it >= ((uint64_t)1 << 34))
                break;
            it *= 2;
        }
        uint64_t chunk = (uint64_t)((double)it * PEAK_CHUNK_S / (dt > 0 ? dt : 1e-9));
        if (chunk < 1)
            chunk = 1;
#ifdef _OPENMP
#pragma omp barrier
#endif
        double *tt = times + (size_t)tid * (size_t)cap;
        double flops = 0, start = now_s(), t = start;
        int n = 0;
        while (n < cap && (n < 3 || t - start < seconds)) {
            double t0 = t;
            flops = fn(chunk, FMA_MUL, FMA_ADD, &sink);
            t = now_s();
            tt[n++] = t - t0;
        }
        double total = t - start, lost = 0;
        double med = median(tt, n);
        for (int i = 0; i < n; i++)
            if (tt[i] > med + PROBE_GAP_S)
                lost += tt[i] - med;
        rate[tid] = flops / med;
        desch[tid] = total > 0 ? lost / total : 0;
        fma_sink = sink;
    }
    double sum = 0, dmax = 0, rmin = rate[0];
    for (int i = 0; i < team; i++) {
        sum += rate[i];
        dmax = desch[i] > dmax ? desch[i] : dmax;
        rmin = rate[i] < rmin ? rate[i] : rmin;
    }
    free(times), free(rate), free(desch);
    *desched_out = dmax;
    *min_rate = rmin;
    return sum;
}

static float *bw_buf;
static size_t bw_n;  /* floats, a multiple of 32 */

static double read_sum(const float *p, size_t n)
{
#if defined(__SSE2__)
    __m128 s0 = _mm_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (size_t i = 0; i < n; i += 32) {
        s0 = _mm_add_ps(s0, _mm_load_ps(p + i));
        s1 = _mm_add_ps(s1, _mm_load_ps(p + i + 4));
        s2 = _mm_add_ps(s2, _mm_load_ps(p + i + 8));
        s3 = _mm_add_ps(s3, _mm_load_ps(p + i + 12));
        s4 = _mm_add_ps(s4, _mm_load_ps(p + i + 16));
        s5 = _mm_add_ps(s5, _mm_load_ps(p + i + 20));
        s6 = _mm_add_ps(s6, _mm_load_ps(p + i + 24));
        s7 = _mm_add_ps(s7, _mm_load_ps(p + i + 28));
    }
    s0 = _mm_add_ps(_mm_add_ps(_mm_add_ps(s0, s1), _mm_add_ps(s2, s3)),
                    _mm_add_ps(_mm_add_ps(s4, s5), _mm_add_ps(s6, s7)));
    float f[4];
    _mm_storeu_ps(f, s0);
    return (double)f[0] + f[1] + f[2] + f[3];
#else
    float s[8] = {0};
    for (size_t i = 0; i < n; i += 32)
        for (int j = 0; j < 32; j++)
            s[j & 7] += p[i + j];
    return (double)s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
#endif
}

/* Slice [lo, hi) of the bandwidth array for thread tid of nt, in whole 128-byte blocks. */
static void bw_slice(int tid, int nt, size_t *lo, size_t *hi)
{
    size_t blocks = bw_n / 32;
    *lo = blocks * (size_t)tid / (size_t)nt * 32;
    *hi = blocks * (size_t)(tid + 1) / (size_t)nt * 32;
}

static int bw_alloc(int T)
{
    bw_n = (opt.bw_mib << 20) / sizeof(float);
    bw_buf = alloc64(bw_n * sizeof(float));
    if (!bw_buf)
        return 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
        size_t lo, hi;
        bw_slice(tid, nt, &lo, &hi);
        for (size_t i = lo; i < hi; i++)   /* real data: untouched pages would all map the zero page */
            bw_buf[i] = 1.0f + (float)(i & 7);
    }
    (void)T;
    return 1;
}

#define BW_CHUNK_FLOATS ((size_t)1 << 18)  /* 1 MiB: each thread times its slice in chunks this big */

/* GB/s of T threads summing disjoint slices of the array; best and median over the passes. Each thread also
 * times its 1 MiB chunks: a chunk much slower than the thread's median one means it lost its CPU meanwhile,
 * and *desched gets the worst thread's lost share in the best pass (memory is shared, so unlike the FMA
 * peak the lost time cannot be taken out of the number; it is only reported). */
static void measure_bw(int T, double *best, double *med, double *desched)
{
    size_t max_chunks = bw_n / BW_CHUNK_FLOATS + 2;
    double *g = malloc(sizeof(double) * (size_t)opt.bw_passes);
    double *lost = calloc((size_t)opt.bw_passes, sizeof(double));
    double *ct = malloc(sizeof(double) * max_chunks * (size_t)T);
    *best = *med = *desched = 0;
    if (!g || !lost || !ct) {
        free(g), free(lost), free(ct);
        return;
    }
    for (int pass = 0; pass < opt.bw_passes; pass++) {
        double sum = 0, worst = 0, t0 = now_s();
#ifdef _OPENMP
#pragma omp parallel num_threads(T) reduction(+ : sum) reduction(max : worst)
#endif
        {
            int tid = 0, nt = 1;
#ifdef _OPENMP
            tid = omp_get_thread_num(), nt = omp_get_num_threads();
#endif
            size_t lo, hi;
            bw_slice(tid, nt, &lo, &hi);
            double *tt = ct + (size_t)tid * max_chunks, start = now_s(), prev = start;
            int n = 0;
            for (size_t i = lo; i < hi; i += BW_CHUNK_FLOATS) {
                size_t e = hi - i < BW_CHUNK_FLOATS ? hi - i : BW_CHUNK_FLOATS;
                sum += read_sum(bw_buf + i, e);
                double t = now_s();
                if (e == BW_CHUNK_FLOATS)
                    tt[n++] = t - prev;
                prev = t;
            }
            if (n > 0 && prev > start) {
                double m = median(tt, n), l = 0;
                for (int c = 0; c < n; c++)
                    if (tt[c] > m + PROBE_GAP_S && tt[c] > 1.5 * m)
                        l += tt[c] - m;
                worst = l / (prev - start);
            }
        }
        double t = now_s() - t0;
        bw_sink = sum;
        g[pass] = (double)bw_n * sizeof(float) / t / 1e9;
        lost[pass] = worst;
    }
    int bi = 0;
    for (int i = 1; i < opt.bw_passes; i++)
        bi = g[i] > g[bi] ? i : bi;
    *best = g[bi];
    *desched = lost[bi];
    *med = median(g, opt.bw_passes);
    free(g), free(lost), free(ct);
    (void)T;
}

typedef struct probe_result {
    int threads;
    double frac[MAX_THREADS];  /* descheduled share per thread */
    double max_frac;
    double corun;              /* slowest thread's FMA rate with T at once / 1-thread rate; 0: not measured */
    int shared;
} probe_result;

static const fma_kind *probe_kind;  /* the fastest FMA loop, with its 1-thread rate; NULL: no co-run check */

/* T threads spin on CLOCK_MONOTONIC for the probe time; a gap between two consecutive readings longer than
 * PROBE_GAP_S is time the thread did not run (the guest scheduler or the host took its CPU). Then, for half
 * that time, the T threads run the fastest FMA loop at once and the slowest one's rate is compared with one
 * thread alone. */
static void run_probe(int T, probe_result *r)
{
    const double dur = opt.probe_ms * 1e-3;
    r->threads = T;
    r->max_frac = 0;
    int team = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
#endif
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
#endif
        double start = now_s(), prev = start, t = start, lost = 0;
        while (t - start < dur) {
            t = now_s();
            if (t - prev > PROBE_GAP_S)
                lost += t - prev;
            prev = t;
        }
        if (tid < MAX_THREADS)
            r->frac[tid] = lost / (t - start);
    }
    r->threads = team;
    for (int i = 0; i < team && i < MAX_THREADS; i++)
        r->max_frac = r->frac[i] > r->max_frac ? r->frac[i] : r->max_frac;
    /* Co-run check: two vCPUs on one physical core never miss the clock, they just both run at half speed. */
    r->corun = 0;
    if (probe_kind && probe_kind->g1 > 0 && T > 1) {
        double d, rmin;
        measure_fma(probe_kind->fn, T, dur / 2, &d, &rmin);
        r->corun = rmin / 1e9 / probe_kind->g1;
    }
    r->shared = r->max_frac > PROBE_SHARED_FRAC || (r->corun > 0 && r->corun < CORUN_SHARED);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Contexts and the environment                                                                               */

typedef struct env_rule {
    const char *name, *accepted;
    long lo, hi;      /* integer range, when words is NULL */
    const char *words;
} env_rule;

static const env_rule env_rules[] = {
    {"ATTN_NUM_THREADS", "an integer >= 1", 1, 1L << 30, NULL},
    {"ATTN_ISA", "auto, scalar, avx2, avx512, neon (one this CPU runs)", 0, 0, "auto scalar avx2 avx512 neon"},
    {"ATTN_BLOCK_Q", "an integer 1..4096", 1, 4096, NULL},
    {"ATTN_BLOCK_KV", "an integer 1..4096", 1, 4096, NULL},
    {"ATTN_VERBOSE", "0 or 1", 0, 1, NULL},
};
#define N_ENV_RULES (int)(sizeof env_rules / sizeof env_rules[0])

static int env_value_ok(const env_rule *r, const char *v)
{
    if (r->words) {
        char w[32];
        for (const char *p = r->words; *p;) {
            size_t n = strcspn(p, " ");
            if (n < sizeof w) {
                memcpy(w, p, n);
                w[n] = '\0';
                if (!strcasecmp(v, w)) {
                    attn_isa isa;
                    return isa_from_name(w, &isa) && attn_isa_supported(isa);
                }
            }
            p += n + (p[n] == ' ');
        }
        return 0;
    }
    uint64_t u;
    return parse_u64(v, (uint64_t)r->lo, (uint64_t)r->hi, &u);
}

static void supported_list(char *buf, size_t n)
{
    buf[0] = '\0';
    for (int j = 0; j < N_CONCRETE; j++)
        if (attn_isa_supported(concrete_isas[j])) {
            size_t l = strlen(buf);
            snprintf(buf + l, n - l, "%s%s", l ? ", " : "", attn_isa_name(concrete_isas[j]));
        }
}

/* attn_ctx_create failed in a way the config cannot explain: name the ATTN_* variable and exit 2. */
static void env_failure(attn_status st, const char *what)
{
    fprintf(stderr, "%s: attn_ctx_create (%s): %s\n", prog, what, attn_strerror(st));
    int found = 0;
    for (int i = 0; i < N_ENV_RULES; i++) {
        const char *v = getenv(env_rules[i].name);
        if (v && !env_value_ok(&env_rules[i], v)) {
            char acc[96];
            if (env_rules[i].words) {   /* ATTN_ISA: what this CPU and build really run */
                strcpy(acc, "auto, ");
                supported_list(acc + 6, sizeof acc - 6);
            } else {
                snprintf(acc, sizeof acc, "%s", env_rules[i].accepted);
            }
            fprintf(stderr, "%s: environment variable %s='%s' is not accepted; accepted values: %s\n", prog,
                    env_rules[i].name, v, acc);
            found = 1;
        }
    }
    if (!found) {
        fprintf(stderr, "%s: the library rejected the environment; ATTN_* variables set and accepted values:\n",
                prog);
        for (int i = 0; i < N_ENV_RULES; i++) {
            const char *v = getenv(env_rules[i].name);
            if (v)
                fprintf(stderr, "  %s='%s' (accepted: %s)\n", env_rules[i].name, v, env_rules[i].accepted);
        }
        fprintf(stderr, "  (ATTN_VERBOSE=1 makes the library say why)\n");
    }
    exit(2);
}

/* Creates the context for (isa, T) or exits: 2 for a bad ATTN_* variable or an ISA this CPU/build lacks. */
static attn_ctx *make_ctx(attn_isa isa, int T)
{
    attn_config cfg = {.num_threads = T, .isa = isa, .block_q = opt.block_q, .block_kv = opt.block_kv};
    attn_ctx *ctx = NULL;
    attn_status st = attn_ctx_create(&ctx, &cfg);
    if (st == ATTN_OK)
        return ctx;
    char what[160], sup[64];
    snprintf(what, sizeof what, "--isa %s, --threads %d%s", attn_isa_name(isa), T,
             opt.block_q || opt.block_kv ? ", --block-q/--block-kv" : "");
    supported_list(sup, sizeof sup);
    if (st == ATTN_ENOTSUP && isa != ATTN_ISA_AUTO) {
        fprintf(stderr, "%s: --isa %s: attn_ctx_create: %s (this CPU and build run: %s)\n", prog,
                attn_isa_name(isa), attn_strerror(st), sup);
        exit(2);
    }
    if (st == ATTN_ENOTSUP || st == ATTN_EINVAL)
        env_failure(st, what);
    fprintf(stderr, "%s: attn_ctx_create (%s): %s\n", prog, what, attn_strerror(st));
    exit(1);
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Timing one row                                                                                             */

typedef struct job {
    const bench_shape *s;
    const attn_ctx *ctx;
    attn_dtype dtype;
    const float *q, *k, *v;
    float *out;
    const attn_kv_cache *cache;  /* decode shapes */
    int mode;                    /* layer shapes: 1 the four projections (attn_linear), 2 attn_self_attention */
    const attn_layer *layer;
    const float *x;
    float *pq, *pk, *pv, *y;     /* mode 1: projection outputs */
} job;

static attn_status call_once(const job *j)
{
    if (j->mode) {
        const attn_layer *w = j->layer;
        const size_t n = j->s->q, qw = w->n_heads * w->head_dim, kw = w->n_kv_heads * w->head_dim;
        attn_mask mask = j->s->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
        if (j->mode == 2)
            return attn_self_attention(j->ctx, w, j->x, n, mask, j->y, NULL);
        attn_status st;
        if ((st = attn_linear(j->ctx, j->x, n, w->d_model, w->wq, w->bq, qw, j->pq)) != ATTN_OK ||
            (st = attn_linear(j->ctx, j->x, n, w->d_model, w->wk, w->bk, kw, j->pk)) != ATTN_OK ||
            (st = attn_linear(j->ctx, j->x, n, w->d_model, w->wv, w->bv, kw, j->pv)) != ATTN_OK)
            return st;
        return attn_linear(j->ctx, j->pq, n, qw, w->wo, w->bo, w->d_model, j->y);
    }
    if (j->cache)
        return attn_decode(j->ctx, j->cache, j->q, j->s->q, j->s->h, j->s->causal ? ATTN_MASK_CAUSAL
                                                                                 : ATTN_MASK_NONE,
                           j->out);
    attn_sdpa_desc d;
    memset(&d, 0, sizeof d);
    d.batch = 1;
    d.n_heads = j->s->h;
    d.n_kv_heads = j->s->hkv;
    d.q_len = j->s->q;
    d.kv_len = j->s->kv;
    d.head_dim = j->s->d;
    d.v_dim = j->s->d;
    d.layout = ATTN_LAYOUT_BHSD;
    d.mask = j->s->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE;
    return attn_sdpa(j->ctx, &d, j->q, j->k, j->v, j->out, NULL);
}

typedef struct timing {
    double median_s, best_s;
    int reps;
} timing;

static attn_status time_job(const job *j, const char *label, timing *t)
{
    attn_status st;
    double call_s = 0;
    for (int w = 0; w < opt.warmup; w++) {
        progress_minor("%s: warm-up %d/%d", label, w + 1, opt.warmup);
        double t0 = now_s();
        if ((st = call_once(j)) != ATTN_OK)
            return st;
        call_s = now_s() - t0;
        if (opt.max_seconds > 0 && call_s > opt.max_seconds)
            break;
    }
    long inner = 1;
    int reps = opt.reps;
    if (call_s > 0) {
        if (call_s < MIN_REP_S) {
            double n = ceil(MIN_REP_S / call_s);
            inner = n > 1e7 ? 10000000L : (long)n;
        }
        if (opt.max_seconds > 0 && call_s * (double)inner * reps > opt.max_seconds) {
            double r = floor(opt.max_seconds / (call_s * (double)inner));
            reps = r < 1 ? 1 : (int)r;
        }
    }
    double *ts = malloc(sizeof(double) * (size_t)reps);
    if (!ts)
        return ATTN_ENOMEM;
    for (int r = 0; r < reps; r++) {
        progress_minor("%s: rep %d/%d", label, r + 1, reps);
        double t0 = now_s();
        for (long i = 0; i < inner; i++)
            if ((st = call_once(j)) != ATTN_OK) {
                free(ts);
                return st;
            }
        ts[r] = (now_s() - t0) / (double)inner;
    }
    double best = ts[0];
    for (int r = 1; r < reps; r++)
        best = ts[r] < best ? ts[r] : best;
    t->best_s = best;
    t->median_s = median(ts, reps);
    t->reps = reps;
    free(ts);
    return ATTN_OK;
}

/* Unmasked (query, key) pairs of one head; causal is bottom-right aligned. */
static double unmasked_pairs(const bench_shape *s)
{
    if (!s->causal)
        return (double)s->q * (double)s->kv;
    double n = 0;
    for (size_t i = 0; i < s->q; i++) {
        double seen = (double)i + (double)s->kv - (double)s->q + 1;  /* keys 0 .. i + kv - q */
        n += seen < 0 ? 0 : seen > (double)s->kv ? (double)s->kv : seen;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------------------- */
/* Output                                                                                                     */

typedef struct row {
    const char *shape, *isa, *dtype;
    int threads, reps;
    double median_ms, best_ms, gflops;
    int has_peak;
    double peak, peak_pct;
    int is_decode, has_bw;
    double gbps, bw_pct;
    int probed, timeshared;
    double desched, corun;     /* worse of the probes before and after the row; corun only for T > 1 */
} row;

static FILE *csv_f, *json_f;
static int json_rows;
static int name_w = 5;

static FILE *open_out(const char *path, const char *flag)
{
    if (!strcmp(path, "-"))
        return stdout;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: %s %s: %s\n", prog, flag, path, strerror(errno));
        exit(2);
    }
    return f;
}

static void print_table_header(void)
{
    fprintf(hout, "\n%-*s %-7s %4s %-4s %4s %11s %11s %9s %8s %6s %8s %6s %6s %5s %s\n", name_w, "shape", "isa",
            "thr", "kv", "reps", "median_ms", "best_ms", "GFLOP/s", "peak", "%peak", "GB/s", "%bw", "desch", "corun",
            "ts");
}

static void csv_num(FILE *f, int has, double v, int last)
{
    if (has)
        fprintf(f, "%.6g", v);
    fputc(last ? '\n' : ',', f);
}

static void json_num(FILE *f, const char *key, int has, double v)
{
    if (has)
        fprintf(f, ", \"%s\": %.6g", key, v);
    else
        fprintf(f, ", \"%s\": null", key);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        if ((unsigned char)*s >= 0x20)
            fputc(*s, f);
    }
    fputc('"', f);
}

static void emit_row(const row *r)
{
    char peak[16] = "-", pct[16] = "-", gbps[16] = "-", bwp[16] = "-", des[16] = "-", cor[16] = "-";
    if (r->has_peak) {
        snprintf(peak, sizeof peak, "%.1f", r->peak);
        snprintf(pct, sizeof pct, "%.1f", r->peak_pct);
    }
    if (r->is_decode) {
        snprintf(gbps, sizeof gbps, "%.2f", r->gbps);
        if (r->has_bw)
            snprintf(bwp, sizeof bwp, "%.1f", r->bw_pct);
    }
    if (r->probed) {
        snprintf(des, sizeof des, "%.1f%%", 100 * r->desched);
        if (r->corun > 0)
            snprintf(cor, sizeof cor, "%.0f%%", 100 * r->corun);
    }
    progress_clear();
    fprintf(hout, "%-*s %-7s %4d %-4s %4d %11.5g %11.5g %9.4g %8s %6s %8s %6s %6s %5s %s\n", name_w, r->shape,
            r->isa, r->threads, r->dtype, r->reps, r->median_ms, r->best_ms, r->gflops, peak, pct, gbps, bwp, des,
            cor, r->timeshared ? "*" : "");
    fflush(hout);
    if (csv_f) {
        fprintf(csv_f, "%s,%s,%d,%s,", r->shape, r->isa, r->threads, r->dtype);
        csv_num(csv_f, 1, r->median_ms, 0);
        csv_num(csv_f, 1, r->best_ms, 0);
        csv_num(csv_f, 1, r->gflops, 0);
        csv_num(csv_f, r->has_peak, r->peak, 0);
        csv_num(csv_f, r->has_peak, r->peak_pct, 0);
        csv_num(csv_f, r->is_decode, r->gbps, 0);
        csv_num(csv_f, r->is_decode && r->has_bw, r->bw_pct, 1);
        fflush(csv_f);
    }
    if (json_f) {
        fputs(json_rows++ ? ",\n  {\"shape\": " : "[\n  {\"shape\": ", json_f);
        json_str(json_f, r->shape);
        fputs(", \"isa\": ", json_f);
        json_str(json_f, r->isa);
        fprintf(json_f, ", \"threads\": %d, \"kv_dtype\": ", r->threads);
        json_str(json_f, r->dtype);
        json_num(json_f, "median_ms", 1, r->median_ms);
        json_num(json_f, "best_ms", 1, r->best_ms);
        json_num(json_f, "gflops", 1, r->gflops);
        json_num(json_f, "peak_gflops", r->has_peak, r->peak);
        json_num(json_f, "peak_pct", r->has_peak, r->peak_pct);
        json_num(json_f, "gbps", r->is_decode, r->gbps);
        json_num(json_f, "bw_pct", r->is_decode && r->has_bw, r->bw_pct);
        fprintf(json_f, ", \"timeshared\": %s}", r->timeshared ? "true" : "false");
        fflush(json_f);
    }
}

/* Probes around one row and fills its time-sharing fields. */
static void probe_row(int T, probe_result *pb, row *r, int before)
{
    if (opt.probe_ms <= 0)
        return;
    if (before) {
        run_probe(T, pb);
        return;
    }
    probe_result pa;
    run_probe(T, &pa);
    r->probed = 1;
    r->desched = pb->max_frac > pa.max_frac ? pb->max_frac : pa.max_frac;
    r->corun = pb->corun < pa.corun ? pb->corun : pa.corun;
    r->timeshared = pb->shared || pa.shared;
}

/* A layer shape's two rows per ISA and thread count: NAME/proj, the four projections through attn_linear (Q, K, V
 * from x, the output projection from a [N][H*hd] input), and NAME/layer, the whole attn_self_attention. Weights and
 * inputs uniform in [-1, 1) scaled by 1/sqrt(fan_in), biases included. Returns 1 if anything failed. */
static int run_layer_shape(const bench_shape *s, const attn_isa *isas, int n_isa, const int *threads, int n_thr,
                           attn_ctx *ctxs[MAX_LIST][MAX_LIST], const double *machine_peak, int have_peak,
                           int *row_no, int n_rows, int *any_shared)
{
    const size_t n = s->q, dm = s->dm, qw = s->h * s->d, kw = s->hkv * s->d;
    float *x = alloc64(n * dm * 4), *wq = alloc64(qw * dm * 4), *wk = alloc64(kw * dm * 4),
          *wv = alloc64(kw * dm * 4), *wo = alloc64(dm * qw * 4), *b = alloc64((qw + 2 * kw + dm) * 4),
          *pq = alloc64(n * qw * 4), *pk = alloc64(n * kw * 4), *pv = alloc64(n * kw * 4), *y = alloc64(n * dm * 4);
    int failed = 0;
    if (!x || !wq || !wk || !wv || !wo || !b || !pq || !pk || !pv || !y) {
        progress_clear();
        fprintf(stderr, "%s: shape %s: out of memory; skipped\n", prog, s->name);
        failed = 1;
        *row_no += 2 * n_isa * n_thr;
        goto done;
    }
    progress_minor("%s: filling inputs", s->name);
    fill_uniform(x, n * dm, opt.seed * 8 + 0);
    fill_uniform(wq, qw * dm, opt.seed * 8 + 1);
    fill_uniform(wk, kw * dm, opt.seed * 8 + 2);
    fill_uniform(wv, kw * dm, opt.seed * 8 + 3);
    fill_uniform(wo, dm * qw, opt.seed * 8 + 4);
    fill_uniform(b, qw + 2 * kw + dm, opt.seed * 8 + 5);
    {
        const float fd = 1.0f / sqrtf((float)dm), fq = 1.0f / sqrtf((float)qw);
        for (size_t i = 0; i < qw * dm; i++)
            wq[i] *= fd, wo[i] *= fq;
        for (size_t i = 0; i < kw * dm; i++)
            wk[i] *= fd, wv[i] *= fd;
    }
    const attn_layer w = {dm, s->h, s->hkv, s->d, wq, wk, wv, wo, b, b + qw, b + qw + kw, b + qw + 2 * kw};
    bench_shape attn_part = *s; /* the attention inside the layer, for its FLOPs */
    const double proj_flops = 2.0 * (double)n * (double)dm * (double)(2 * qw + 2 * kw);
    const double layer_flops = proj_flops + 4.0 * (double)s->h * (double)s->d * unmasked_pairs(&attn_part);
    for (int mode = 1; mode <= 2; mode++) {
        char name[80];
        snprintf(name, sizeof name, "%s/%s", s->name, mode == 1 ? "proj" : "layer");
        for (int ii = 0; ii < n_isa; ii++)
            for (int ti = 0; ti < n_thr; ti++) {
                const int T = threads[ti];
                char label[160];
                snprintf(label, sizeof label, "[%d/%d] %s %s T=%d", ++*row_no, n_rows, name,
                         attn_isa_name(isas[ii]), T);
                progress("%s", label);
                job j;
                memset(&j, 0, sizeof j);
                j.s = s, j.ctx = ctxs[ii][ti], j.dtype = ATTN_F32, j.mode = mode, j.layer = &w, j.x = x;
                j.pq = pq, j.pk = pk, j.pv = pv, j.y = y;
                row r;
                memset(&r, 0, sizeof r);
                probe_result pb;
                probe_row(T, &pb, &r, 1);
                timing tm;
                attn_status st = time_job(&j, label, &tm);
                if (st != ATTN_OK) {
                    progress_clear();
                    fprintf(stderr, "%s: shape %s, --isa %s, --threads %d: %s: %s\n", prog, name,
                            attn_isa_name(isas[ii]), T, mode == 1 ? "attn_linear" : "attn_self_attention",
                            attn_strerror(st));
                    failed = 1;
                    continue;
                }
                probe_row(T, &pb, &r, 0);
                *any_shared |= r.timeshared;
                r.shape = name;
                r.isa = attn_isa_name(isas[ii]);
                r.dtype = "f32";
                r.threads = T;
                r.reps = tm.reps;
                r.median_ms = tm.median_s * 1e3;
                r.best_ms = tm.best_s * 1e3;
                r.gflops = (mode == 1 ? proj_flops : layer_flops) / tm.median_s / 1e9;
                r.has_peak = have_peak && machine_peak[ti] > 0;
                r.peak = machine_peak[ti];
                r.peak_pct = r.has_peak ? 100 * r.gflops / r.peak : 0;
                emit_row(&r);
            }
    }
done:
    free(x), free(wq), free(wk), free(wv), free(wo), free(b), free(pq), free(pk), free(pv), free(y);
    return failed;
}

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10) || !strncmp(line, "Model\t", 6)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ' || *c == '\t')
                    c++;
                c[strcspn(c, "\n")] = '\0';
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

/* ---------------------------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    stderr_tty = isatty(2);
    hout = (opt.csv_path && !strcmp(opt.csv_path, "-")) || (opt.json_path && !strcmp(opt.json_path, "-"))
               ? stderr
               : stdout;

    /* Thread counts: resolve "max", drop duplicates. */
    int threads[MAX_LIST], n_thr = 0;
    for (int i = 0; i < opt.n_threads_req; i++) {
        int t = opt.threads_req[i] ? opt.threads_req[i] : max_threads();
        int dup = 0;
        for (int j = 0; j < n_thr; j++)
            dup |= threads[j] == t;
        if (!dup)
            threads[n_thr++] = t;
    }
    int t_max = 1;
    for (int i = 0; i < n_thr; i++)
        t_max = threads[i] > t_max ? threads[i] : t_max;

    /* Contexts, created up front so that a bad ISA or environment fails before minutes of measuring. */
    attn_ctx *ctxs[MAX_LIST][MAX_LIST];
    attn_isa isas[MAX_LIST];
    int n_isa = 0;
    for (int i = 0; i < opt.n_isa_req; i++) {
        attn_ctx *c0 = make_ctx(opt.isa_req[i], threads[0]);
        attn_isa real = attn_ctx_isa(c0);
        int dup = 0;
        for (int j = 0; j < n_isa; j++)
            dup |= isas[j] == real;
        if (dup) {
            attn_ctx_destroy(c0);
            continue;
        }
        ctxs[n_isa][0] = c0;
        for (int t = 1; t < n_thr; t++)
            ctxs[n_isa][t] = make_ctx(opt.isa_req[i], threads[t]);
        isas[n_isa++] = real;
    }
    /* What --isa auto would pick; only reported, so a failure here (a bad ATTN_ISA while --isa names the ISAs
     * explicitly) is not fatal. */
    attn_ctx *dflt = NULL;
    attn_config dcfg = {.num_threads = 1, .isa = ATTN_ISA_AUTO, .block_q = opt.block_q, .block_kv = opt.block_kv};
    attn_status dst = attn_ctx_create(&dflt, &dcfg);
    char auto_isa[96];
    snprintf(auto_isa, sizeof auto_isa, dst == ATTN_OK ? "%s" : "none (attn_ctx_create: %s)",
             dst == ATTN_OK ? attn_isa_name(attn_ctx_isa(dflt)) : attn_strerror(dst));
    attn_ctx_destroy(dflt);

    if (opt.csv_path) {
        csv_f = open_out(opt.csv_path, "--csv");
        fputs("shape,isa,threads,kv_dtype,median_ms,best_ms,gflops,peak_gflops,peak_pct,gbps,bw_pct\n", csv_f);
        fflush(csv_f);
    }
    if (opt.json_path)
        json_f = open_out(opt.json_path, "--json");

    /* ---- what this machine is ---- */
    char model[256];
    cpu_model(model, sizeof model);
    fprintf(hout, "attn-bench: attn %s\n", attn_version());
    fprintf(hout, "cpu        %s, %d logical CPUs, OpenMP max threads %d\n", model, num_procs(), max_threads());
    fprintf(hout, "isa        ");
    for (int j = 0; j < N_CONCRETE; j++)
        fprintf(hout, "%s %s%s", attn_isa_name(concrete_isas[j]), attn_isa_supported(concrete_isas[j]) ? "yes" : "no",
                j + 1 < N_CONCRETE ? ", " : "");
    fprintf(hout, "; auto -> %s\n", auto_isa);
    fprintf(hout, "threads    ");
    for (int i = 0; i < n_thr; i++)
        fprintf(hout, "%d%s", threads[i], i + 1 < n_thr ? ", " : "");
    if (t_max > num_procs())
        fprintf(hout, "  (more threads than CPUs: oversubscribed)");
    fputc('\n', hout);
    {
        static const char *const vars[] = {"ATTN_NUM_THREADS", "ATTN_ISA", "ATTN_BLOCK_Q", "ATTN_BLOCK_KV",
                                           "ATTN_VERBOSE", "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES",
                                           "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
        int any = 0;
        fprintf(hout, "env        ");
        for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
            const char *v = getenv(vars[i]);
            if (v)
                fprintf(hout, "%s%s=%s", any++ ? " " : "", vars[i], v);
        }
        fprintf(hout, "%s\n", any ? "" : "(no ATTN_*/OMP_* variables set)");
    }
    fflush(hout);

    /* FMA peaks: every ISA this CPU runs, at every thread count. */
    setup_fma_kinds();
    double machine_peak[MAX_LIST] = {0};
    int have_peak = opt.peak_ms > 0;
    const fma_kind *best = NULL;
    if (have_peak || opt.probe_ms > 0) {
        /* One thread alone first: T x this is what T threads on T real cores can do. */
        double secs = have_peak ? opt.peak_ms * 1e-3 : 0.05, d, rmin;
        for (int k = 0; k < n_fma_kinds; k++) {
            progress_minor("measuring the %s FMA peak on 1 thread", attn_isa_name(fma_kinds[k].isa));
            fma_kinds[k].g1 = measure_fma(fma_kinds[k].fn, 1, secs, &d, &rmin) / 1e9;
            for (int t = 0; t < n_thr; t++)
                if (threads[t] == 1) {
                    fma_kinds[k].gflops[t] = fma_kinds[k].g1;
                    fma_kinds[k].desched[t] = d;
                }
            if (!best || fma_kinds[k].g1 > best->g1)
                best = &fma_kinds[k];
        }
        probe_kind = best;
    }
    if (have_peak) {
        for (int k = 0; k < n_fma_kinds; k++)
            for (int t = 0; t < n_thr; t++) {
                double rmin;
                if (threads[t] > 1) {
                    progress_minor("measuring the %s FMA peak on %d threads", attn_isa_name(fma_kinds[k].isa),
                                   threads[t]);
                    fma_kinds[k].gflops[t] = measure_fma(fma_kinds[k].fn, threads[t], opt.peak_ms * 1e-3,
                                                         &fma_kinds[k].desched[t], &rmin) / 1e9;
                }
                /* T x one thread, unless T at once did better (a 1-thread run that lost its core) */
                double p = fma_kinds[k].g1 * threads[t];
                p = fma_kinds[k].gflops[t] > p ? fma_kinds[k].gflops[t] : p;
                machine_peak[t] = p > machine_peak[t] ? p : machine_peak[t];
            }
        progress_clear();
        fprintf(hout, "FMA peak   GFLOP/s, T threads at once: per-thread rate of the median %.0f-us chunk in %.0f ms, "
                      "summed\n           (desched = worst thread's lost time, which does not lower the rate)\n",
                PEAK_CHUNK_S * 1e6, opt.peak_ms);
        fprintf(hout, "           %-7s %-26s", "isa", "loop");
        for (int t = 0; t < n_thr; t++)
            fprintf(hout, " %9d thr %8s", threads[t], "desched");
        fputc('\n', hout);
        for (int k = 0; k < n_fma_kinds; k++) {
            fprintf(hout, "           %-7s %-26s", attn_isa_name(fma_kinds[k].isa), fma_kinds[k].loop);
            for (int t = 0; t < n_thr; t++)
                fprintf(hout, " %13.1f %7.1f%%%s", fma_kinds[k].gflops[t], 100 * fma_kinds[k].desched[t],
                        fma_kinds[k].gflops[t] < CORUN_SHARED * threads[t] * fma_kinds[k].g1 ? "!" : " ");
            fputc('\n', hout);
        }
        fprintf(hout, "           %-7s %-26s", "machine", "T x best 1-thread (= peak)");
        for (int t = 0; t < n_thr; t++)
            fprintf(hout, " %13.1f %9s", machine_peak[t], "");
        fputc('\n', hout);
        int flagged = 0;
        for (int k = 0; k < n_fma_kinds; k++)
            for (int t = 0; t < n_thr; t++)
                flagged |= fma_kinds[k].gflops[t] < CORUN_SHARED * threads[t] * fma_kinds[k].g1;
        if (flagged)
            fprintf(hout, "           ! below %.0f%% of T x the 1-thread rate: the threads shared cores while "
                          "measured (time-shared)\n", 100 * CORUN_SHARED);
    } else {
        fprintf(hout, "FMA peak   not measured (--peak-ms 0)\n");
    }
    fflush(hout);

    /* Read bandwidth. */
    double bw_best[MAX_LIST] = {0}, bw_med[MAX_LIST] = {0}, bw_desched[MAX_LIST] = {0};
    int have_bw = opt.bw_mib > 0;
    if (have_bw) {
        progress_minor("allocating and touching the %zu MiB bandwidth array", opt.bw_mib);
        if (!bw_alloc(t_max)) {
            progress_clear();
            fprintf(stderr, "%s: --bw-mib %zu: out of memory; bandwidth not measured\n", prog, opt.bw_mib);
            have_bw = 0;
        } else {
            for (int t = 0; t < n_thr; t++) {
                progress_minor("measuring read bandwidth on %d thread(s)", threads[t]);
                measure_bw(threads[t], &bw_best[t], &bw_med[t], &bw_desched[t]);
            }
            free(bw_buf);
            bw_buf = NULL;
            progress_clear();
            fprintf(hout, "read BW    GB/s summing a %zu MiB array, %d passes (best / median; desched = worst "
                          "thread's lost time in the best pass)\n", opt.bw_mib, opt.bw_passes);
            for (int t = 0; t < n_thr; t++)
                fprintf(hout, "           %4d thr %8.1f / %-8.1f desched %.1f%%%s\n", threads[t], bw_best[t],
                        bw_med[t], 100 * bw_desched[t],
                        bw_desched[t] > PROBE_SHARED_FRAC ? "  TIME-SHARED: this bandwidth is too low" : "");
        }
    }
    if (!have_bw)
        fprintf(hout, "read BW    not measured\n");

    /* Time-sharing probe. */
    int probe_t = t_max > 1 ? t_max : (num_procs() >= 2 ? 2 : 1);
    if (opt.probe_ms > 0) {
        static probe_result pr;
        progress_minor("time-sharing probe");
        run_probe(probe_t, &pr);
        progress_clear();
        fprintf(hout, "probe      %d threads spinning %.0f ms, descheduled (gaps > %.0f us):", pr.threads,
                opt.probe_ms, PROBE_GAP_S * 1e6);
        for (int i = 0; i < pr.threads && i < MAX_THREADS; i++)
            fprintf(hout, " %.1f%%", 100 * pr.frac[i]);
        if (pr.corun > 0)
            fprintf(hout, ";\n           %s FMA loop on %d threads at once: slowest thread at %.0f%% of 1-thread rate",
                    attn_isa_name(probe_kind->isa), pr.threads, 100 * pr.corun);
        fprintf(hout, " -> %s\n", pr.shared ? "TIME-SHARED now: multi-thread rows may not scale"
                                            : "not time-shared");
    } else {
        fprintf(hout, "probe      disabled (--probe-ms 0)\n");
    }
    fflush(hout);

    /* ---- the rows ---- */
    for (int s = 0; s < opt.n_shapes; s++) {
        int l = (int)strlen(opt.shapes[s].name) + (opt.shapes[s].dm ? 6 : 0); /* "/layer" */
        name_w = l > name_w ? l : name_w;
    }
    int n_rows = 0;
    for (int s = 0; s < opt.n_shapes; s++)
        n_rows += (opt.shapes[s].dm ? 2 : opt.shapes[s].q <= DECODE_MAX_Q ? opt.n_dtypes : 1) * n_isa * n_thr;
    print_table_header();
    fflush(hout);

    int failed = 0, any_shared = 0, row_no = 0;
    int dtype_skipped[3] = {0, 0, 0};
    for (int si = 0; si < opt.n_shapes; si++) {
        const bench_shape *s = &opt.shapes[si];
        if (s->dm) {
            int r = run_layer_shape(s, isas, n_isa, threads, n_thr, ctxs, machine_peak, have_peak, &row_no,
                                    n_rows, &any_shared);
            failed |= r;
            continue;
        }
        int decode = s->q <= DECODE_MAX_Q;
        size_t qn = s->h * s->q * s->d, kn = s->hkv * s->kv * s->d;
        float *q = alloc64(qn * 4), *k = alloc64(kn * 4), *v = alloc64(kn * 4), *out = alloc64(qn * 4);
        if (!q || !k || !v || !out) {
            progress_clear();
            fprintf(stderr, "%s: shape %s: out of memory (%.0f MiB); skipped\n", prog, s->name,
                    (double)(2 * qn + 2 * kn) * 4 / (1 << 20));
            free(q), free(k), free(v), free(out);
            failed = 1;
            row_no += (decode ? opt.n_dtypes : 1) * n_isa * n_thr;
            continue;
        }
        progress_minor("%s: filling inputs", s->name);
        fill_uniform(q, qn, opt.seed * 4 + 0);
        fill_uniform(k, kn, opt.seed * 4 + 1);
        fill_uniform(v, kn, opt.seed * 4 + 2);
        memset(out, 0, qn * 4);
        double flops = 4.0 * (double)s->h * (double)s->d * unmasked_pairs(s);

        int n_dt = decode ? opt.n_dtypes : 1;
        for (int di = 0; di < n_dt; di++) {
            attn_dtype dt = decode ? opt.dtypes[di] : ATTN_F32;
            attn_kv_cache *cache = NULL;
            if (decode) {
                attn_status st = dtype_skipped[dt] ? ATTN_ENOTSUP
                                                   : attn_kv_cache_create(&cache, s->hkv, s->d, s->kv, dt);
                const char *where = "attn_kv_cache_create";
                if (st == ATTN_OK) {
                    progress_minor("%s: appending %zu tokens to the %s KV cache", s->name, s->kv, dtype_name(dt));
                    st = attn_kv_cache_append(cache, k, v, s->kv);   /* k, v reused as [kv][hkv][d] */
                    where = "attn_kv_cache_append";
                }
                if (st != ATTN_OK) {
                    attn_kv_cache_destroy(cache);
                    row_no += n_isa * n_thr;
                    if (st == ATTN_ENOTSUP) {
                        if (!dtype_skipped[dt]) {
                            progress_clear();
                            fprintf(hout, "skipped: kv-dtype %s not supported by this build (%s: %s)\n",
                                    dtype_name(dt), where, attn_strerror(st));
                        }
                        dtype_skipped[dt] = 1;
                    } else {
                        progress_clear();
                        fprintf(stderr, "%s: shape %s, --kv-dtype %s: %s: %s\n", prog, s->name, dtype_name(dt),
                                where, attn_strerror(st));
                        failed = 1;
                    }
                    continue;
                }
            }
            double kv_bytes = (double)s->hkv * (double)s->kv * 2.0 * (double)s->d * (dt == ATTN_F32 ? 4 : 2);

            for (int ii = 0; ii < n_isa; ii++)
                for (int ti = 0; ti < n_thr; ti++) {
                    int T = threads[ti];
                    char label[160];
                    snprintf(label, sizeof label, "[%d/%d] %s %s T=%d %s", ++row_no, n_rows, s->name,
                             attn_isa_name(isas[ii]), T, dtype_name(dt));
                    progress("%s", label);
                    job j = {.s = s, .ctx = ctxs[ii][ti], .dtype = dt, .q = q, .k = k, .v = v, .out = out, .cache = cache};
                    row r;
                    memset(&r, 0, sizeof r);
                    probe_result pb, pa;
                    if (opt.probe_ms > 0) {
                        progress_minor("%s: time-sharing probe", label);
                        run_probe(T, &pb);
                    }
                    timing tm;
                    attn_status st = time_job(&j, label, &tm);
                    if (st != ATTN_OK) {
                        progress_clear();
                        fprintf(stderr, "%s: shape %s, --isa %s, --threads %d, --kv-dtype %s: %s: %s\n", prog,
                                s->name, attn_isa_name(isas[ii]), T, dtype_name(dt),
                                cache ? "attn_decode" : "attn_sdpa", attn_strerror(st));
                        failed = 1;
                        continue;
                    }
                    if (opt.probe_ms > 0) {
                        progress_minor("%s: time-sharing probe", label);
                        run_probe(T, &pa);
                        r.probed = 1;
                        r.desched = pb.max_frac > pa.max_frac ? pb.max_frac : pa.max_frac;
                        r.corun = pb.corun < pa.corun ? pb.corun : pa.corun;
                        r.timeshared = pb.shared || pa.shared;
                        any_shared |= r.timeshared;
                    }
                    r.shape = s->name;
                    r.isa = attn_isa_name(isas[ii]);
                    r.dtype = dtype_name(dt);
                    r.threads = T;
                    r.reps = tm.reps;
                    r.median_ms = tm.median_s * 1e3;
                    r.best_ms = tm.best_s * 1e3;
                    r.gflops = flops / tm.median_s / 1e9;
                    r.has_peak = have_peak && machine_peak[ti] > 0;
                    r.peak = machine_peak[ti];
                    r.peak_pct = r.has_peak ? 100 * r.gflops / r.peak : 0;
                    r.is_decode = decode;
                    r.gbps = kv_bytes / tm.median_s / 1e9;
                    r.has_bw = have_bw && bw_best[ti] > 0;
                    r.bw_pct = r.has_bw ? 100 * r.gbps / bw_best[ti] : 0;
                    emit_row(&r);
                }
            attn_kv_cache_destroy(cache);
        }
        free(q), free(k), free(v), free(out);
    }
    progress_clear();

    fprintf(hout, "\nGFLOP/s = 4*heads*head_dim*unmasked pairs / median; peak = T x the best ISA's 1-thread FMA "
                  "rate;\nGB/s = K+V bytes / median (decode shapes); %%bw = of the best measured read bandwidth "
                  "at T threads.\n");
    if (any_shared)
        fprintf(hout, "* time-shared: a probe before or after this row saw a thread descheduled > %.0f%% of the time "
                      "(desch), or\n  threads running at once slower than %.0f%% of one alone (corun): the CPUs were shared, "
                      "so its time\n  (and any scaling read from it) is not the machine's. Rerun when the host is "
                      "quieter.\n",
                100 * PROBE_SHARED_FRAC, 100 * CORUN_SHARED);
    fflush(hout);

    if (json_f) {
        fputs(json_rows ? "\n]\n" : "[]\n", json_f);
        if (json_f != stdout)
            fclose(json_f);
    }
    if (csv_f && csv_f != stdout)
        fclose(csv_f);
    for (int i = 0; i < n_isa; i++)
        for (int t = 0; t < n_thr; t++)
            attn_ctx_destroy(ctxs[i][t]);
    return failed ? 1 : 0;
}
