/* attn-bench: what its baseline-flag files share (options.c, probes.c, runs.c, report.c, slots.c, tune.c and
 * attn-bench.c with main). Every global symbol is prefixed bench_; the ISA loops are declared in bench.h. */
#ifndef ATTN_BENCH_INT_H
#define ATTN_BENCH_INT_H

#include <stdint.h>
#include <stdio.h>

#include "attn.h"
#include "bench.h"
#include "internal.h" /* ATTN_MAX_THREADS, ATTN_MAX_BLOCK: the library's own limits */

#define BENCH_PROG "attn-bench"

#define DECODE_MAX_Q 16          /* shapes with q_len <= this are "decode": also reported as K+V GB/s */
#define MIN_REP_S 2e-3           /* a timed rep repeats a fast call until it lasts this long */
#define PROBE_GAP_S 20e-6        /* a clock gap longer than this counts as descheduled time */
#define PROBE_SHARED_FRAC 0.10   /* a thread descheduled more than this share of the probe: time-shared */
#define CORUN_SHARED 0.75        /* per-thread FMA rate with T threads at once below this share of the
                                    1-thread rate: the vCPUs share a core (SMT siblings or fine host slicing,
                                    which leaves no clock gaps) */
#define PEAK_CHUNK_S 50e-6       /* the FMA loop is timed in chunks this long; the median chunk sets the rate */
#define MAX_LIST 64              /* entries in --threads / --isa / --kv-dtype / shapes */
#define MAX_THREADS ATTN_MAX_THREADS
#define MAX_LEVELS 16            /* ISA levels the library names (attn_isa_name until "unknown") */

/* ---- options.c ---- */

typedef struct bench_shape {
    char name[80];
    size_t h, hkv, q, kv, d;
    int causal;
    size_t dm;        /* > 0: a whole self-attention layer of d_model dm over q = kv tokens (head_dim d = dm / h) */
    attn_dtype dtype; /* q, k, v and out of attn_sdpa (F32 for the fp32 shapes and layers) */
    attn_math math;
    int sdpa;         /* 1: a decode-length shape (q_len <= DECODE_MAX_Q) timed through attn_sdpa on dense tensors
                         instead of attn_decode from a KV cache (the shapes with a dtype or math of their own) */
    char base[80];    /* the fp32 shape this one is compared with (vs_f32), "" for none: P2 for P2-bf16 */
    int custom;       /* a --shape row: --dtype and --math expand it */
    int mods;         /* BENCH_MOD_*: score modifiers of attn_sdpa_desc (the P2-softcap ... rows) */
    attn_dtype cache_dtype; /* a cache shape's KV dtype when it has one of its own (D2-i8: ATTN_I8); 0: each
                               --kv-dtype */
    int pool;         /* BENCH_POOL_*: a serving shape over an attn_kv_pool (S1, S2, S3); 0: none */
} bench_shape;

/* The serving shapes of DESIGN.md §5: many sequences in one F16 pool, one attn_batch_attend per call. */
enum { BENCH_POOL_S1 = 1, BENCH_POOL_S2 = 2, BENCH_POOL_S3 = 3 };

/* Score modifiers a row sets: softcap 30, ALiBi slopes 2^-(h+1), a broadcast [q_len][kv_len] bias, sinks 0.5. */
enum { BENCH_MOD_SOFTCAP = 1, BENCH_MOD_ALIBI = 2, BENCH_MOD_BIAS = 4, BENCH_MOD_SINKS = 8 };

/* One --isa entry: a level (kernels NULL: the variant the library picks), or a variant by name. */
typedef struct bench_isa_req {
    attn_isa isa;
    const char *kernels; /* "avx512/zen4" as attn_kernels_name spells it; isa is then its level */
} bench_isa_req;

typedef enum bench_mode { BENCH_ROWS = 0, BENCH_KERNELS, BENCH_TUNE } bench_mode;

typedef struct bench_options {
    bench_mode mode;
    bench_shape shapes[MAX_LIST];
    int n_shapes;
    bench_isa_req isa_req[MAX_LIST]; /* as asked; "all" and "variants" are expanded at parse time */
    int n_isa_req;
    int isa_given;                   /* --isa was on the command line */
    int threads_req[MAX_LIST];       /* 0 = "max" */
    int n_threads_req;
    attn_dtype dtypes[MAX_LIST];     /* --kv-dtype */
    int n_dtypes;
    attn_dtype shape_dtypes[MAX_LIST];  /* --dtype: the tensors of --shape rows; default f32 */
    int n_shape_dtypes;
    attn_math maths[MAX_LIST];       /* --math for --shape rows; none given: each dtype's own (bf16 for bf16) */
    int n_maths;
    int reps, warmup, reps_given;
    double max_seconds;
    int block_q, block_kv;
    const char *csv_path, *json_path;
    double peak_ms;
    size_t bw_mib;
    int bw_passes;
    double probe_ms;
    uint64_t seed;
    int quiet;
    bench_shape tune_shapes[MAX_LIST]; /* --tune-shapes; default P1, P2, P3 */
    int n_tune_shapes;
} bench_options;

extern bench_options bench_opt;

void bench_parse_args(int argc, char **argv);
void bench_usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
const char *bench_dtype_name(attn_dtype t);
/* Rows one shape gives per kernel set and thread count. */
int bench_shape_rows(const bench_shape *s);
const char *bench_math_name(attn_math m);
/* Every ISA level the library has a name for (attn_isa_name), AUTO excluded, in enum order; returns the count. */
int bench_isa_levels(const attn_isa **levels);
/* "scalar, avx2, avx512, avx512bf16": the ISAs this CPU and build run. */
void bench_isa_list(char *buf, size_t n);
/* The level of a variant name, from its part before the slash; ATTN_ISA_AUTO if none matches. */
attn_isa bench_variant_level(const char *name);

/* ---- runs.c: contexts, timing, the rows of attention shapes ---- */

double bench_now_s(void);
int bench_max_threads(void);
int bench_num_procs(void);
double bench_median(double *v, int n); /* sorts v */
void *bench_alloc64(size_t bytes);     /* 64-byte aligned, free() */
void bench_fill_uniform(float *p, size_t n, uint64_t seed);

/* A default context (zeroed attn_config): exits 2 naming the ATTN_* variable when the library rejects the
 * environment. The caller destroys it. */
attn_ctx *bench_default_ctx(void);
/* attn_ctx_create(cfg) or exit: 2 for a bad ATTN_* variable or an ISA/variant this CPU lacks, 1 otherwise. */
attn_ctx *bench_make_ctx(const attn_config *cfg, const char *what);

/* One call to time: attn_sdpa, attn_decode from a cache, or a layer's projections / whole self-attention. */
typedef struct bench_job {
    const bench_shape *s;
    const attn_ctx *ctx;
    attn_dtype dtype;            /* sdpa: q, k, v and out (the shape's); decode: the cache's */
    attn_math math;
    const void *q, *k, *v;       /* decode: q fp32 */
    const float *bias;           /* BENCH_MOD_BIAS */
    void *out;
    const attn_kv_cache *cache;  /* decode shapes */
    int mode;                    /* layer shapes: 1 the four projections (attn_linear), 2 attn_self_attention */
    const attn_layer *layer;
    const float *x;
    float *pq, *pk, *pv, *y;     /* mode 1: projection outputs */
    const attn_kv_pool *pool;    /* pool shapes: one attn_batch_attend over batch (q, out fp32) */
    const attn_batch_desc *batch;
    attn_kv_cache *const *caches;/* pool shapes' baseline: attn_decode (q_len 1) over each of n_caches caches */
    size_t n_caches;
} bench_job;

attn_status bench_call_once(const bench_job *j);
/* 1 if s is timed as attn_decode from a KV cache of each --kv-dtype, 0 for attn_sdpa (and layers). */
int bench_uses_cache(const bench_shape *s);

/* The inputs of an attention shape: q, k, v uniform in [-1, 1) from the --seed PRNG, then rounded to nearest even
 * into the shape's dtype (untimed, once); out zeroed. The fp32 k and v stay (kf, vf) only for cache shapes, which
 * append them. */
typedef struct bench_inputs {
    void *q, *k, *v, *out;
    float *kf, *vf;
    float *bias; /* BENCH_MOD_BIAS: [q][kv] */
} bench_inputs;
int bench_inputs_make(const bench_shape *s, bench_inputs *in); /* 0: out of memory (everything freed) */
void bench_inputs_free(bench_inputs *in);
/* Unmasked (query, key) pairs of one head; causal is bottom-right aligned. */
double bench_unmasked_pairs(const bench_shape *s);

/* The kernel sets and thread counts of a run, their contexts and the ceilings rows are reported against. */
typedef struct bench_plan {
    int threads[MAX_LIST], n_thr;
    int n_sets;
    attn_ctx *ctxs[MAX_LIST][MAX_LIST];   /* [set][thread index] */
    attn_isa isas[MAX_LIST];              /* per set: its level */
    const char *kernels[MAX_LIST];        /* per set: attn_ctx_kernels */
    int by_variant[MAX_LIST];             /* per set: asked for by variant name, so rated against its level's peak */
    double peak[MAX_LIST][MAX_LIST];      /* per set and thread index, GFLOP/s, of fp32 rows; 0: not measured */
    double dot_peak[MAX_LIST];            /* per thread index: the bf16 dot peak (MATH_BF16 rows on avx512bf16) */
    int any_dot, any_bf16_fma, any_nopeak;/* rows rated against the dot peak / bf16 math against an FMA peak / none */
    int any_ratio_missing;                /* a row with a base whose fp32 row was not in the run */
    int any_base_shared;                  /* a vs_f32 divided by a time-shared fp32 row */
    struct bench_result *res;             /* the fp32 rows so far, for the vs_f32 column */
    int n_res, cap_res;
    int have_bw;
    double bw_best[MAX_LIST];             /* per thread index, GB/s */
    int n_rows, row_no, any_shared;       /* progress [row_no/n_rows]; a row was time-shared */
} bench_plan;

/* All rows of one shape (attention or layer); returns 1 if anything failed. */
int bench_run_shape(const bench_shape *s, bench_plan *p);

/* ---- probes.c: the machine's ceilings ---- */

typedef struct bench_fma_kind {
    attn_isa isa;
    int dot;                   /* 1: the bf16 dot-product loop (not an fp32 FMA peak: not in the machine's peak) */
    const char *loop;          /* what the loop does, for the report */
    attn_bench_fma_fn *fn;
    double g1;                 /* GFLOP/s of one thread alone */
    double gflops[MAX_LIST];   /* per --threads entry: sum of per-thread rates with T threads at once */
    double desched[MAX_LIST];  /* largest per-thread descheduled share seen during the measurement */
    double peak[MAX_LIST];     /* per --threads entry: max(T x g1, gflops): this level's peak */
} bench_fma_kind;

typedef struct bench_probe_result {
    int threads;
    double frac[MAX_THREADS];  /* descheduled share per thread */
    double max_frac;
    double corun;              /* slowest thread's FMA rate with T at once / 1-thread rate; 0: not measured */
    int shared;
} bench_probe_result;

/* The 1-thread fp32 FMA peak of level in GFLOP/s, measured for --peak-ms on first use; 0 with --peak-ms 0 or when
 * this CPU does not run the level. Levels above avx512 run fp32 on the AVX-512 kernels: theirs is avx512's. */
double bench_peak1(attn_isa level);
/* The 1-thread bf16 dot-product peak (vdpbf16ps) in GFLOP/s, measured on first use; 0 when not measured or not run. */
double bench_dot_peak1(void);
double bench_measure_fma(attn_bench_fma_fn *fn, int T, double seconds, double *desched_out, double *min_rate);
/* FMA peaks of every ISA at every thread count (prints them); fills machine_peak per thread index. */
void bench_measure_peaks(const int *threads, int n_thr, double *machine_peak);
/* This level's fp32 FMA peak at thread index ti (after bench_measure_peaks; avx512's for the levels above it); 0 if
 * not measured. */
double bench_level_peak(attn_isa isa, int ti);
/* The bf16 dot peak at thread index ti (after bench_measure_peaks); 0 if not measured or this CPU has none. */
double bench_dot_peak(int ti);
/* Read bandwidth at every thread count (prints it); 0 if not measured. */
int bench_measure_bw(const int *threads, int n_thr, double *bw_best);
/* The start-up time-sharing probe on T threads (prints it). */
void bench_startup_probe(int T);
void bench_run_probe(int T, bench_probe_result *r);

/* ---- report.c: progress lines, the table, CSV and JSON ---- */

extern FILE *bench_hout; /* the human-readable report: stdout, or stderr when --csv - / --json - own stdout */

void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));       /* a step worth a line */
void bench_progress_minor(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* on a terminal only */
void bench_progress_clear(void);

typedef struct bench_row {
    const char *shape, *isa, *kernels, *dtype, *math;
    int threads, reps;
    double median_ms, best_ms, gflops;
    int has_base, has_ratio;   /* has_base: the row is compared with an fp32 row (which may not be in the run) */
    int base_shared;           /* the fp32 row of vs_f32 was time-shared */
    double ratio;              /* vs_f32: the median of the base shape's fp32 row (same set, T) / this median */
    int has_peak;
    double peak, peak_pct;
    const char *peak_kind;     /* "fma" (the machine's), "fma-level" (the level's), "bf16dot"; NULL: none */
    int is_decode, has_bw;     /* is_decode: the row has a GB/s (decode and pool rows) */
    double gbps, bw_pct;
    int has_roof;              /* both ceilings were measured at the row's T */
    double roof_pct;           /* 100 * max(flops / peak, bytes / bandwidth) / median */
    int has_tps;               /* pool rows: query rows (tokens) per second */
    double tps, tok_per_gb;    /* tok_per_gb: tokens / s over GB / s, the query rows served per GB read */
    int probed, timeshared;
    double desched, corun;     /* worse of the probes before and after the row; corun only for T > 1 */
} bench_row;

/* Picks bench_hout, opens --csv / --json and writes the CSV header. */
void bench_open_outputs(void);
void bench_print_machine(const bench_plan *p, const char *auto_kernels);
void bench_print_table_header(const bench_plan *p);
void bench_emit_row(const bench_row *r);
void bench_print_footer(const bench_plan *p);
void bench_close_outputs(void);
void bench_cpu_model(char *buf, size_t n);

/* ---- slots.c, tune.c: the --kernels and --tune modes ---- */

/* auto_level: the level of a default context (what --isa auto means). Return the exit status. */
int bench_kernels_main(attn_isa auto_level);
int bench_tune_main(attn_isa auto_level);

#endif
