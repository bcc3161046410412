/* attn-bench options: parsing, --help, usage errors. Baseline flags only. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench_int.h"

bench_options bench_opt;

#define F32 ATTN_F32, ATTN_MATH_F32
#define BF16 ATTN_BF16, ATTN_MATH_BF16
/* The default set (DESIGN.md §5): the fp32 shapes, the v1 bf16 and i8 rows, each after the shape it is compared with,
 * then the serving shapes. */
static const bench_shape named_shapes[] = {
    /* name, heads, kv heads, q_len, kv_len, head_dim, causal, d_model, dtype, math, sdpa, base, custom, mods,
     * cache_dtype, pool */
    {"seed", 1, 1, 3, 3, 4, 0, 0, F32, 0, "", 0, 0, 0, 0},
    {"P1", 8, 8, 512, 512, 64, 0, 0, F32, 0, "", 0, 0, 0, 0},
    {"P2", 8, 8, 2048, 2048, 128, 0, 0, F32, 0, "", 0, 0, 0, 0},
    {"P3", 8, 8, 2048, 2048, 128, 1, 0, F32, 0, "", 0, 0, 0, 0},
    {"D1", 32, 8, 1, 4096, 128, 1, 0, F32, 0, "", 0, 0, 0, 0},
    {"D2", 32, 8, 1, 32768, 128, 1, 0, F32, 0, "", 0, 0, 0, 0},
    {"P2-bf16", 8, 8, 2048, 2048, 128, 0, 0, BF16, 0, "P2", 0, 0, 0, 0},     /* q, k, v, out BF16, ATTN_MATH_BF16 */
    {"P3-bf16", 8, 8, 2048, 2048, 128, 1, 0, BF16, 0, "P3", 0, 0, 0, 0},
    {"D2-bf16", 32, 8, 1, 32768, 128, 1, 0, BF16, 1, "D2", 0, 0, 0, 0},     /* attn_sdpa on dense BF16 tensors */
    {"D2-i8", 32, 8, 1, 32768, 128, 1, 0, F32, 0, "D2", 0, 0, ATTN_I8, 0}, /* attn_decode from an I8 cache */
    /* Serving (DESIGN.md §5): one F16 pool, 32/8 heads, d 128; kv is the longest sequence (for the --help line). */
    {"S1", 32, 8, 1, 16384, 128, 1, 0, ATTN_F16, ATTN_MATH_F32, 0, "S1/loop", 0, 0, 0, BENCH_POOL_S1},
    {"S2", 32, 8, 512, 16384, 128, 1, 0, ATTN_F16, ATTN_MATH_F32, 0, "", 0, 0, 0, BENCH_POOL_S2},
    {"S3", 32, 8, 1, 128, 128, 1, 0, ATTN_F16, ATTN_MATH_F32, 0, "S3/loop", 0, 0, 0, BENCH_POOL_S3},
};
#define N_NAMED (sizeof named_shapes / sizeof named_shapes[0])

/* Layer shapes: not in the default set, asked for by name or with --layer. Each fp32 layer shape brings its bf16
 * twin (add_layer_twins): weights BF16, ATTN_MATH_BF16, compared with it in vs_f32. */
static const bench_shape layer_shapes[] = {
    {"L1", 16, 16, 2048, 2048, 64, 0, 1024, F32, 0, "", 0, 0, 0, 0},
    {"L1-bf16", 16, 16, 2048, 2048, 64, 0, 1024, BF16, 0, "L1", 0, 0, 0, 0}, /* wq, wk, wv, wo BF16, ATTN_MATH_BF16 */
};
#undef F32
#undef BF16
#define N_LAYER (sizeof layer_shapes / sizeof layer_shapes[0])

/* Score-modifier shapes: not in the default set, asked for by name; each is P2 with one modifier (or all four),
 * compared with P2 in vs_f32 (below 1: the modifier's cost). */
static const bench_shape mod_shapes[] = {
    {"P2-softcap", 8, 8, 2048, 2048, 128, 0, 0, ATTN_F32, ATTN_MATH_F32, 0, "P2", 0, BENCH_MOD_SOFTCAP, 0, 0},
    {"P2-alibi", 8, 8, 2048, 2048, 128, 0, 0, ATTN_F32, ATTN_MATH_F32, 0, "P2", 0, BENCH_MOD_ALIBI, 0, 0},
    {"P2-bias", 8, 8, 2048, 2048, 128, 0, 0, ATTN_F32, ATTN_MATH_F32, 0, "P2", 0, BENCH_MOD_BIAS, 0, 0},
    {"P2-sinks", 8, 8, 2048, 2048, 128, 0, 0, ATTN_F32, ATTN_MATH_F32, 0, "P2", 0, BENCH_MOD_SINKS, 0, 0},
    {"P2-mods", 8, 8, 2048, 2048, 128, 0, 0, ATTN_F32, ATTN_MATH_F32, 0, "P2", 0,
     BENCH_MOD_SOFTCAP | BENCH_MOD_ALIBI | BENCH_MOD_BIAS | BENCH_MOD_SINKS, 0, 0},
};
#define N_MOD (sizeof mod_shapes / sizeof mod_shapes[0])
static void short_usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--shapes LIST] [--shape H,HKV,Q,KV,D[,causal]]... [--isa auto|all|variants|LIST]\n"
            "       [--threads LIST|max] [--reps N] [--warmup N] [--max-seconds S] [--kv-dtype f32|f16|bf16|i8]\n"
            "       [--dtype f32|f16|bf16] [--math f32|bf16] [--layer N,DM,H[,HKV][,causal]]... [--block-q N]\n"
            "       [--block-kv N] [--csv FILE|-] [--json FILE|-] [--peak-ms MS] [--bw-mib N] [--bw-passes N]\n"
            "       [--probe-ms MS] [--seed N] [--quiet] [--help] [--version]\n"
            "       %s --kernels [--isa LIST] [--reps N] [--peak-ms MS] [--seed N]\n"
            "       %s --tune [--isa LEVEL] [--tune-shapes LIST] [--reps N] [--peak-ms MS] [--seed N]\n",
            BENCH_PROG, BENCH_PROG, BENCH_PROG);
}

static void help(void)
{
    /* One string per line: ISO C only promises 4095-character literals. */
    static const char *const text[] = {
        "",
        "Times attention from libattn (attn_sdpa; attn_decode from a KV cache for decode shapes) on the DESIGN.md",
        "shapes or custom ones, for each ISA and thread count, against this machine's FMA peak and read bandwidth,",
        "both measured in the same run. All shapes: batch 1, BHSD layout, v_dim = head_dim; fp32 unless named -bf16",
        "(or given --dtype/--math).",
        "",
        "What to run:",
        "  --shapes LIST        named shapes, comma-separated, case-insensitive, or 'all' (the default set):",
        "                         seed  heads 1/1   q 3     kv 3      d 4    no mask",
        "                         P1    heads 8/8   q 512   kv 512    d 64   no mask",
        "                         P2    heads 8/8   q 2048  kv 2048   d 128  no mask",
        "                         P3    heads 8/8   q 2048  kv 2048   d 128  causal",
        "                         D1    heads 32/8  q 1     kv 4096   d 128  causal (decode, GQA, K+V in L3)",
        "                         D2    heads 32/8  q 1     kv 32768  d 128  causal (decode, GQA, K+V in DRAM)",
        "                         P2-bf16, P3-bf16  P2, P3 with q, k, v and out BF16 and ATTN_MATH_BF16",
        "                         P2-softcap, P2-alibi, P2-bias, P2-sinks, P2-mods (by name only): P2 with",
        "                                  softcap 30, ALiBi slopes 2^-(h%8+1), a [q][kv] bias broadcast to every",
        "                                  head, sinks 0.5, or all four; vs_f32 is then the ratio to plain P2",
        "                         D2-bf16  D2 through attn_sdpa on dense BF16 q, k, v, out, ATTN_MATH_BF16",
        "                         D2-i8    D2 through attn_decode from an ATTN_I8 KV cache (int8 rows, one fp32",
        "                                  scale per (token, KV head) row of K and of V; GB/s counts both)",
        "                       The -bf16 and -i8 rows are compared with the fp32 row of the same shape (P2,",
        "                       P3, D2 with an f32 KV cache), kernel set and thread count in column vs_f32;",
        "                       each runs right after that row when both are in the run.",
        "                         S1  64 sequences in one F16 attn_kv_pool (8 KV heads, d 128, default page",
        "                             size), lengths 256*2^(s mod 7) (256..16384), 32 query heads, one decode",
        "                             token each through one attn_batch_attend. Row S1/loop: attn_decode over",
        "                             64 F16 attn_kv_caches with the same contents, timed interleaved with S1;",
        "                             S1's vs_f32 is S1/loop's median / S1's",
        "                         S2  S1's sequences plus 4 new ones prefilled in the same call: each gets",
        "                             512 tokens appended (untimed, truncated back to 0 after each rep), then",
        "                             q_lens 512 for those and 1 for the 64 decodes, causal",
        "                         S3  1024 sequences of 32*2^(s mod 3) tokens (32..128), F16, one decode token",
        "                             each; row S3/loop and vs_f32 as for S1",
        "                       Pool rows report tok/s: query rows (tokens) per second; GB/s: K+V bytes read.",
        "                       L1 (not in the default set): a self-attention layer, 2048 tokens, d_model",
        "                         1024, 16 heads of 64 (the projection target); see --layer.",
        "                       L1-bf16  L1 with BF16 weights (attn_layer.w_dtype) and ATTN_MATH_BF16; every fp32",
        "                         layer shape (L1, --layer) brings its -bf16 twin, compared with it in vs_f32.",
        "  --layer N,DM,H[,HKV][,causal|none]",
        "                       a custom layer shape (repeatable): tokens, d_model, heads (must divide DM), KV",
        "                       heads (must divide H; default H), mask. Each layer shape gives two rows:",
        "                       NAME/proj, the four projection GEMMs through attn_linear (FLOPs",
        "                       2*N*DM*(2*H*hd + 2*HKV*hd)), and NAME/layer, the whole attn_self_attention",
        "                       (those FLOPs plus the attention's). Named L_nN_dmDM_hH/HKV[_causal]; its",
        "                       twin L_..-bf16 (BF16 weights, ATTN_MATH_BF16: attn_linear_typed and",
        "                       attn_self_attention with w_dtype/math) follows with its two rows and vs_f32.",
        "  --shape H,HKV,Q,KV,D[,causal|none]",
        "                       a custom shape (repeatable): query heads, KV heads (must divide H), q_len,",
        "                       kv_len, head_dim, mask (default none; 1/0 also accepted). Named in the output",
        "                       as hH/HKV_qQ_kvKV_dD[_causal]. --shapes and --shape add up, in the order given;",
        "                       either one replaces the default set.",
        "  --dtype f32|f16|bf16 the element type of q, k, v and out of every --shape row (a comma list runs each;",
        "                       default f32), inputs rounded to it (nearest even) before timing. Rows in f16 or",
        "                       bf16 are named with -f16 or -bf16. A decode-length row (q_len <= 16) that is not",
        "                       plain f32 (dtype and math) runs attn_sdpa on dense tensors, not attn_decode",
        "                       from a cache (which has no math mode); --kv-dtype does not apply to it.",
        "  --math f32|bf16      attn_sdpa_desc.math of every --shape row (a comma list runs each); default: bf16",
        "                       for --dtype bf16, f32 otherwise. A math other than that default is named too:",
        "                       -mbf16 or -mf32 (h8/8_q2048_kv2048_d128-bf16 is bf16 with bf16 math, like",
        "                       P2-bf16; ..._d128-bf16-mf32 bf16 with fp32 math; ..._d128-mbf16 fp32 tensors,",
        "                       bf16 math). Each is compared with the plain f32 row of the same shape (vs_f32)",
        "                       when that row is in the run (--dtype f32,bf16). Named shapes and layers ignore",
        "                       --dtype and --math.",
        "  --isa auto|all|variants|LIST",
        "                       kernel sets: 'auto' (default) = the context default (ATTN_ISA, else the best the",
        "                       CPU runs); 'all' = every ISA attn_isa_supported() says this CPU runs;",
        "                       'variants' = every kernel variant this CPU runs (attn_kernels_supported); or a",
        "                       list of levels (the names attn_isa_name gives: scalar, avx2, avx512, neon,",
        "                       avx512bf16, amx) and variant names such as avx512/zen4 or avx512bf16/generic",
        "                       (attn_kernels_name's level/variant names; auto, all, variants may be mixed in).",
        "                       An ISA or variant this CPU or build lacks is an error (exit 2). A level runs the",
        "                       variant the library picks for this CPU; a variant name forces that one",
        "                       (attn_config.kernels). Rows show the variant the context uses (attn_ctx_kernels);",
        "                       sets that resolve to the same variant run once. avx512bf16 runs fp32 math on the",
        "                       AVX-512 kernels and math bf16 on its own (vdpbf16ps).",
        "  --threads LIST|max   thread counts, e.g. 1,2,4 or max (= omp_get_max_threads()); default 1,max,",
        "                       duplicates dropped. Each context is created with attn_config{num_threads=T}.",
        "  --kv-dtype f32|f16|bf16|i8",
        "                       KV storage for decode shapes (q_len <= 16); a comma list runs each. Each fills",
        "                       an attn_kv_cache of that dtype (create + append, untimed) and times",
        "                       attn_decode, as a server would. When the build lacks that dtype (ATTN_ENOTSUP)",
        "                       it prints 'skipped: kv-dtype f16 not supported by this build' and goes on (exit 0).",
        "                       Longer shapes run attn_sdpa with their own dtype. Default f32.",
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
        "  --peak-ms MS         time per FMA-peak measurement, per ISA and thread count, and of the bf16 dot",
        "                       peak (vdpbf16ps) where the CPU has avx512bf16 (default 200; 0 skips them: peak",
        "                       columns stay empty).",
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
        "Other runs (instead of the attention rows; --csv/--json do not apply):",
        "  --kernels            times each kernel slot of each kernel variant this CPU runs alone, on 1 thread",
        "                       (only the variants of --isa when given): scores, softmax and P.V on one prefill",
        "                       block (the variant's block_q x block_kv, d 128, fp32 key panels); decode scores",
        "                       and P.V (4 rows x 256 keys, f16 key panels and value rows); scores_rows (4 rows,",
        "                       fp32 key rows); probs, scale, cvt_f16, cvt_bf16 (4096 elements); gemm (96 rows,",
        "                       k 1024, 64 columns). Each slot: --reps reps (default 50) of >= 1 ms each,",
        "                       median and best in ns per score/key/element or GFLOP/s; %peak = of the",
        "                       variant's level's 1-thread FMA peak, measured for --peak-ms first. Prints each",
        "                       variant's table and register blockings first.",
        "  --tune               searches the blockings of one level (--isa LEVEL; default auto: the best this",
        "                       CPU runs, or ATTN_ISA) on this machine: every register blocking of the level",
        "                       (one per distinct kernel table among its variants) x block_q 128,192,256,384,512",
        "                       x block_kv 128,256,512, timing the tune shapes with attn_sdpa on 1 thread. The",
        "                       candidates take turns rep by rep (so drift hits all alike) after one warm-up",
        "                       round; --reps reps per shape (default 3), median per shape; score = geometric",
        "                       mean of GFLOP/s over the shapes. Prints the top 5 (and the default's rank) with",
        "                       their gain over the level's current default (attn_variant_pick: its table,",
        "                       block_q, block_kv) and the registry line for simd/variants.c. With P1,P2,P3:",
        "                       about 20 s for avx512 on a Zen 5 core, about 6 min for scalar.",
        "  --tune-shapes LIST   the shapes --tune times (named attention shapes as for --shapes; default",
        "                       P1,P2,P3). P2-bf16, P3-bf16, D2-bf16 run in bf16 with bf16 math; when all of",
        "                       them are, %peak on avx512bf16 is of the bf16 dot peak.",
        "",
        "Output:",
        "  --csv FILE|-         also write CSV (header line first) with the columns",
        "                       shape,isa,kernels,threads,kv_dtype,median_ms,best_ms,gflops,peak_gflops,peak_pct,",
        "                       gbps,bw_pct (isa = the level, kernels = the variant, as in attn_ctx_kernels);",
        "                       gbps and bw_pct empty for non-decode shapes; peak/bw columns empty when",
        "                       their measurement was skipped; then math, vs_f32 (empty when the row has no fp32",
        "                       row to compare with), peak_kind (fma, fma-level or bf16dot: which peak",
        "                       peak_gflops is; empty when none), roofline_pct, tokens_per_s and tokens_per_gb",
        "                       (pool rows: tokens/s over GB/s, the query rows served per GB of K+V read).",
        "  --json FILE|-        also write a JSON array of objects with those fields (empty = null) plus",
        "                       \"timeshared\" (true/false). With '-' the CSV/JSON owns stdout and the readable",
        "                       report goes to stderr; only one of them may be '-'.",
        "  -q, --quiet          no progress lines on stderr.",
        "  -h, --help           this text.",
        "  --version            print the bench and library versions.",
        "",
        "Columns of the table (and the CSV/JSON fields):",
        "  shape, isa (kernels), thr(eads), kv (kv_dtype), math, reps (reps actually timed); the isa column",
        "                       shows the kernel variant, e.g. avx512/zen5 (CSV/JSON: isa avx512, kernels",
        "                       avx512/zen5); kv is the KV cache's dtype for decode rows, the dtype of q, k, v",
        "                       and out for attn_sdpa rows; math is attn_sdpa_desc.math (f32 for attn_decode)",
        "  median_ms, best_ms   per-call wall time (CLOCK_MONOTONIC), median and minimum over the reps",
        "  GFLOP/s (gflops)     4 * heads * head_dim * unmasked (query,key) pairs / median time; causal is",
        "                       bottom-right: query i sees key j <= i + kv_len - q_len",
        "  vs_f32               rows with a dtype or math of their own: the median time of the fp32 row of",
        "                       the same shape, kernel set and thread count / this row's (2.00x: twice as",
        "                       fast; for D2-bf16 the D2 row from an f32 KV cache); '-' when that row is not",
        "                       in the run",
        "  peak (peak_gflops)   the machine's fp32 FMA peak at T threads: T x the best ISA's measured 1-thread",
        "                       FMA rate (or its T-threads-at-once sum, if higher); not the row ISA's own peak.",
        "                       Rows of a variant asked for by name (or by 'variants') use their level's own",
        "                       peak instead (T x that ISA's 1-thread FMA rate), so variants compare alike;",
        "                       avx512bf16 and amx run fp32 on the AVX-512 kernels, so theirs is avx512's.",
        "                       Rows in ATTN_MATH_BF16 on avx512bf16 (marked b) use the bf16 dot peak: T x",
        "                       the 1-thread vdpbf16ps rate, 64 flops per instruction. MATH_BF16 rows on",
        "                       other levels round to bf16 and use fp32 FMAs: the fp32 FMA peak as above.",
        "  %peak (peak_pct)     100 * GFLOP/s / peak",
        "  GB/s (gbps)          decode and pool shapes: K+V bytes (kv_heads * kv_len * 2 * head_dim * 4, or 2",
        "                       for f16/bf16, 1 for i8 plus a 4-byte scale per (token, KV head) row) / median",
        "  %bw (bw_pct)         100 * GB/s / best measured read bandwidth at T threads (D1's K+V fits in L3,",
        "                       so it may exceed 100)",
        "  roof% (roofline_pct) every row: 100 * max(flops / peak, bytes / read bandwidth) / median, with the",
        "                       row's peak column and the read bandwidth measured at T threads; bytes = the",
        "                       least the call must move (K and V once, q in, out back; a bias; a layer's x,",
        "                       weights and y). '-' when the peak or the bandwidth was not measured (--peak-ms 0,",
        "                       --bw-mib 0). Data in cache (D1) can pass 100",
        "  tok/s (tokens_per_s) pool shapes: query rows (tokens) of one call / median time",
        "  desch                the largest share of the probe time a thread was descheduled",
        "                       (probes before and after the row)",
        "  corun                rows with T > 1: the slowest thread's FMA rate with T threads at once, as a share",
        "                       of one thread alone (the lower of the two probes); catches vCPUs that share a",
        "                       physical core without ever missing the clock",
        "  ts (timeshared)      '*' (JSON true) when desch > 10% or corun < 75%: the vCPUs were time-shared",
        "                       around the row, so its time (and any scaling read from it) is not the",
        "                       machine's; rerun it when the host is quieter",
        "",
        "Environment: ATTN_ISA (with --isa auto), ATTN_KERNELS (with --isa auto or a level), ATTN_BLOCK_Q,",
        "ATTN_BLOCK_KV, ATTN_VERBOSE are read by the library when each context is created; ATTN_NUM_THREADS is",
        "overridden by --threads. The bench first creates a default context: when the library rejects a",
        "variable, the bench asks it why (ATTN_VERBOSE=1), lists the accepted values and exits 2. OMP_* as usual.",
        "",
        "Exit status: 0 ok (also when a kv-dtype was skipped); 1 a library call failed or memory ran out (the",
        "other rows still run); 2 a bad flag or value, an ISA or variant this CPU/build lacks, or a bad ATTN_*",
        "variable. docs/bench.md is the longer manual.",
    };
    short_usage(stdout);
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
        puts(text[i]);
}

void bench_usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", BENCH_PROG);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    short_usage(stderr);
    fprintf(stderr, "Run '%s --help' for what every flag does.\n", BENCH_PROG);
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
        bench_usage_error("%s: list too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, MAX_LIST);
    if (n < 0)
        bench_usage_error("%s '%s': expected %s", flag, arg, expected);
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

static void add_shape_to(bench_shape *list, int *n, const bench_shape *s, const char *flag)
{
    if (*n == MAX_LIST)
        bench_usage_error("%s: at most %d shapes", flag, MAX_LIST);
    list[(*n)++] = *s;
}

static void add_shape(const bench_shape *s, const char *flag)
{
    add_shape_to(bench_opt.shapes, &bench_opt.n_shapes, s, flag);
}

/* --shapes into bench_opt.shapes, --tune-shapes into bench_opt.tune_shapes. */
static void parse_shapes(const char *flag, const char *arg, bench_shape *list, int *n_list)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok,
                      "a comma list of seed,P1,P2,P3,D1,D2,P2-bf16,P3-bf16,D2-bf16,D2-i8,S1,S2,S3,P2-softcap,"
                      "P2-alibi,P2-bias,P2-sinks,P2-mods,L1,L1-bf16 or all");
    for (int i = 0; i < n; i++) {
        if (!strcasecmp(tok[i], "all")) {
            for (size_t j = 0; j < N_NAMED; j++)
                add_shape_to(list, n_list, &named_shapes[j], flag);
            continue;
        }
        size_t j = 0;
        while (j < N_NAMED && strcasecmp(tok[i], named_shapes[j].name))
            j++;
        if (j < N_NAMED) {
            add_shape_to(list, n_list, &named_shapes[j], flag);
            continue;
        }
        for (j = 0; j < N_MOD && strcasecmp(tok[i], mod_shapes[j].name); j++)
            ;
        if (j < N_MOD) {
            add_shape_to(list, n_list, &mod_shapes[j], flag);
            continue;
        }
        for (j = 0; j < N_LAYER && strcasecmp(tok[i], layer_shapes[j].name); j++)
            ;
        if (j == N_LAYER)
            bench_usage_error("%s: unknown shape '%s' (known: seed, P1, P2, P3, D1, D2, P2-bf16, P3-bf16, D2-bf16, "
                              "D2-i8, S1, S2, S3, P2-softcap, P2-alibi, P2-bias, P2-sinks, P2-mods, L1, L1-bf16, all)",
                              flag, tok[i]);
        add_shape_to(list, n_list, &layer_shapes[j], flag);
    }
}

static void parse_custom_shape(const char *flag, const char *arg)
{
    char buf[256], *tok[8] = {0};
    if (strlen(arg) >= sizeof buf)
        bench_usage_error("%s: value too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, 8);
    if (n != 5 && n != 6)
        bench_usage_error("%s '%s': expected H,HKV,Q,KV,D[,causal|none]", flag, arg);
    uint64_t v[5];
    static const char *what[5] = {"H (query heads)", "HKV (KV heads)", "Q (q_len)", "KV (kv_len)",
                                  "D (head_dim)"};
    for (int i = 0; i < 5; i++)
        if (!parse_u64(tok[i], 1, (uint64_t)1 << 31, &v[i]))
            bench_usage_error("%s '%s': %s must be an integer in 1..2^31, got '%s'", flag, arg, what[i], tok[i]);
    bench_shape s;
    memset(&s, 0, sizeof s);
    s.h = v[0], s.hkv = v[1], s.q = v[2], s.kv = v[3], s.d = v[4];
    s.custom = 1; /* --dtype and --math expand it after parsing */
    if (n == 6) {
        if (!strcasecmp(tok[5], "causal") || !strcmp(tok[5], "1"))
            s.causal = 1;
        else if (strcasecmp(tok[5], "none") && strcmp(tok[5], "0"))
            bench_usage_error("%s '%s': mask must be causal or none, got '%s'", flag, arg, tok[5]);
    }
    if (s.h % s.hkv)
        bench_usage_error("%s '%s': HKV (%zu) must divide H (%zu)", flag, arg, s.hkv, s.h);
    if (!shape_bytes(&s))
        bench_usage_error("%s '%s': buffers too large for this machine's size_t", flag, arg);
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
    char buf[256], *tok[8] = {0};
    if (strlen(arg) >= sizeof buf)
        bench_usage_error("%s: value too long", flag);
    strcpy(buf, arg);
    int n = split_list(buf, tok, 8);
    if (n < 3 || n > 5)
        bench_usage_error("%s '%s': expected N,DM,H[,HKV][,causal|none]", flag, arg);
    uint64_t v[4] = {0, 0, 0, 0};
    static const char *what[4] = {"N (tokens)", "DM (d_model)", "H (heads)", "HKV (KV heads)"};
    int causal = 0, nnum = n;
    if (n >= 4 && (!strcasecmp(tok[n - 1], "causal") || !strcasecmp(tok[n - 1], "none"))) {
        causal = !strcasecmp(tok[n - 1], "causal");
        nnum = n - 1;
    }
    if (nnum < 3 || nnum > 4)
        bench_usage_error("%s '%s': expected N,DM,H[,HKV][,causal|none]", flag, arg);
    for (int i = 0; i < nnum; i++)
        if (!parse_u64(tok[i], 1, (uint64_t)1 << 31, &v[i]))
            bench_usage_error("%s '%s': %s must be an integer in 1..2^31, got '%s'", flag, arg, what[i], tok[i]);
    bench_shape s;
    memset(&s, 0, sizeof s);
    s.q = s.kv = v[0];
    s.dm = v[1];
    s.h = v[2];
    s.hkv = nnum == 4 ? v[3] : v[2];
    s.causal = causal;
    if (s.dm % s.h)
        bench_usage_error("%s '%s': H (%zu) must divide DM (%zu)", flag, arg, s.h, s.dm);
    if (s.h % s.hkv)
        bench_usage_error("%s '%s': HKV (%zu) must divide H (%zu)", flag, arg, s.hkv, s.h);
    s.d = s.dm / s.h;
    if (!layer_bytes(&s))
        bench_usage_error("%s '%s': buffers too large for this machine's size_t", flag, arg);
    snprintf(s.name, sizeof s.name, "L_n%zu_dm%zu_h%zu/%zu%s", s.q, s.dm, s.h, s.hkv, s.causal ? "_causal" : "");
    add_shape(&s, flag);
}

/* The levels come from the library: every attn_isa after AUTO that attn_isa_name knows ("scalar", ..., "avx512bf16",
 * "amx"), so a level added to attn.h is accepted by --isa and listed without a change here. */
int bench_isa_levels(const attn_isa **levels)
{
    static attn_isa all[MAX_LEVELS];
    static int n;
    if (!n)
        for (int i = 1; i <= MAX_LEVELS && strcmp(attn_isa_name((attn_isa)i), "unknown"); i++)
            all[n++] = (attn_isa)i;
    *levels = all;
    return n;
}

static int isa_from_name(const char *s, attn_isa *out)
{
    const attn_isa *lv;
    const int n = bench_isa_levels(&lv);
    if (!strcasecmp(s, attn_isa_name(ATTN_ISA_AUTO))) {
        *out = ATTN_ISA_AUTO;
        return 1;
    }
    for (int i = 0; i < n; i++)
        if (!strcasecmp(s, attn_isa_name(lv[i]))) {
            *out = lv[i];
            return 1;
        }
    return 0;
}

/* The level names, ", "-separated (all of them, or only those this CPU and build run). */
static void level_list(char *buf, size_t n, int runnable)
{
    const attn_isa *lv;
    const int nl = bench_isa_levels(&lv);
    buf[0] = '\0';
    for (int j = 0; j < nl; j++)
        if (!runnable || attn_isa_supported(lv[j])) {
            size_t l = strlen(buf);
            snprintf(buf + l, n - l, "%s%s", l ? ", " : "", attn_isa_name(lv[j]));
        }
}

void bench_isa_list(char *buf, size_t n)
{
    level_list(buf, n, 1);
}

attn_isa bench_variant_level(const char *name)
{
    char level[32];
    size_t n = strcspn(name, "/");
    attn_isa isa;
    if (n >= sizeof level)
        return ATTN_ISA_AUTO;
    memcpy(level, name, n);
    level[n] = '\0';
    return isa_from_name(level, &isa) ? isa : ATTN_ISA_AUTO;
}

/* The built-in variant names (only those this CPU runs, if runnable), comma-separated. */
static void variant_list(char *buf, size_t n, int runnable)
{
    buf[0] = '\0';
    for (size_t i = 0; attn_kernels_name(i); i++)
        if (!runnable || attn_kernels_supported(attn_kernels_name(i))) {
            size_t l = strlen(buf);
            snprintf(buf + l, n - l, "%s%s", l ? ", " : "", attn_kernels_name(i));
        }
}

static void add_isa_req(attn_isa isa, const char *kernels)
{
    if (bench_opt.n_isa_req < MAX_LIST)
        bench_opt.isa_req[bench_opt.n_isa_req++] = (bench_isa_req){isa, kernels};
}

static void parse_isa(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST], names[512], levels[128];
    int n = split_arg(flag, arg, buf, tok, "auto, all, variants, or a comma list of ISAs and kernel variants");
    bench_opt.n_isa_req = 0;
    bench_opt.isa_given = 1;
    for (int i = 0; i < n; i++) {
        if (!strcasecmp(tok[i], "all")) {
            const attn_isa *lv;
            const int nl = bench_isa_levels(&lv);
            for (int j = 0; j < nl; j++)
                if (attn_isa_supported(lv[j]))
                    add_isa_req(lv[j], NULL);
            continue;
        }
        if (!strcasecmp(tok[i], "variants")) {
            for (size_t j = 0; attn_kernels_name(j); j++)
                if (attn_kernels_supported(attn_kernels_name(j)))
                    add_isa_req(bench_variant_level(attn_kernels_name(j)), attn_kernels_name(j));
            continue;
        }
        attn_isa isa;
        if (isa_from_name(tok[i], &isa)) {
            add_isa_req(isa, NULL);
            continue;
        }
        size_t j = 0;
        while (attn_kernels_name(j) && strcasecmp(tok[i], attn_kernels_name(j)))
            j++;
        const char *v = attn_kernels_name(j);
        if (!v) {
            variant_list(names, sizeof names, 0);
            level_list(levels, sizeof levels, 0);
            bench_usage_error("%s: unknown ISA or kernel variant '%s' (accepted: auto, all, variants, %s, %s)", flag,
                              tok[i], levels, names);
        }
        if (!attn_kernels_supported(v)) {
            variant_list(names, sizeof names, 1);
            bench_usage_error("%s: this CPU does not run kernel variant %s (it runs: %s)", flag, v, names);
        }
        add_isa_req(bench_variant_level(v), v);
    }
}

static void parse_threads(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST], what[128];
    snprintf(what, sizeof what, "a comma list of thread counts (1..%d) or max", MAX_THREADS);
    int n = split_arg(flag, arg, buf, tok, what);
    bench_opt.n_threads_req = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = 0;
        if (strcasecmp(tok[i], "max") && !parse_u64(tok[i], 1, MAX_THREADS, &v))
            bench_usage_error("%s: bad thread count '%s' (an integer 1..%d, or max)", flag, tok[i], MAX_THREADS);
        bench_opt.threads_req[bench_opt.n_threads_req++] = (int)v;
    }
}

/* --kv-dtype into bench_opt.dtypes (i8 allowed: KV storage only), --dtype into bench_opt.shape_dtypes. */
static void parse_dtypes(const char *flag, const char *arg, attn_dtype *list, int *n_list, int i8)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok, i8 ? "f32, f16, bf16 or i8 (or a comma list)"
                                              : "f32, f16 or bf16 (or a comma list)");
    *n_list = 0;
    for (int i = 0; i < n; i++) {
        attn_dtype t;
        if (!strcasecmp(tok[i], "f32"))
            t = ATTN_F32;
        else if (!strcasecmp(tok[i], "f16"))
            t = ATTN_F16;
        else if (!strcasecmp(tok[i], "bf16"))
            t = ATTN_BF16;
        else if (i8 && !strcasecmp(tok[i], "i8"))
            t = ATTN_I8;
        else
            bench_usage_error("%s: unknown dtype '%s' (accepted: f32, f16, bf16%s)", flag, tok[i], i8 ? ", i8" : "");
        int dup = 0;
        for (int j = 0; j < *n_list; j++)
            dup |= list[j] == t;
        if (!dup)
            list[(*n_list)++] = t;
    }
}

static void parse_maths(const char *flag, const char *arg)
{
    char buf[LIST_BUF], *tok[MAX_LIST];
    int n = split_arg(flag, arg, buf, tok, "f32 or bf16 (or a comma list)");
    bench_opt.n_maths = 0;
    for (int i = 0; i < n; i++) {
        attn_math m;
        if (!strcasecmp(tok[i], "f32"))
            m = ATTN_MATH_F32;
        else if (!strcasecmp(tok[i], "bf16"))
            m = ATTN_MATH_BF16;
        else
            bench_usage_error("%s: unknown math '%s' (accepted: f32, bf16)", flag, tok[i]);
        int dup = 0;
        for (int j = 0; j < bench_opt.n_maths; j++)
            dup |= bench_opt.maths[j] == m;
        if (!dup)
            bench_opt.maths[bench_opt.n_maths++] = m;
    }
}

const char *bench_dtype_name(attn_dtype t)
{
    return t == ATTN_F16 ? "f16" : t == ATTN_BF16 ? "bf16" : t == ATTN_I8 ? "i8" : "f32";
}

int bench_shape_rows(const bench_shape *s)
{
    if (s->dm)
        return 2; /* NAME/proj, NAME/layer */
    if (s->pool)
        return s->pool == BENCH_POOL_S2 ? 1 : 2; /* S1, S3: the batch and its attn_decode loop */
    return bench_uses_cache(s) && !s->cache_dtype ? bench_opt.n_dtypes : 1;
}

const char *bench_math_name(attn_math m)
{
    return m == ATTN_MATH_BF16 ? "bf16" : "f32";
}

/* --dtype and --math: each --shape row becomes one row per dtype and math, in place. The plain f32 row keeps its
 * name; the others add -DTYPE, and -mMATH when the math is not the dtype's own (bf16 for bf16, f32 otherwise), and are
 * compared with the plain row. A decode-length row other than plain f32 runs attn_sdpa (attn_decode has no math). */
static void expand_custom_shapes(void)
{
    static bench_shape out[MAX_LIST];
    int n = 0;
    for (int i = 0; i < bench_opt.n_shapes; i++) {
        const bench_shape *s = &bench_opt.shapes[i];
        if (!s->custom) {
            add_shape_to(out, &n, s, "--shape");
            continue;
        }
        for (int a = 0; a < bench_opt.n_shape_dtypes; a++) {
            const attn_dtype dt = bench_opt.shape_dtypes[a];
            const attn_math own = dt == ATTN_BF16 ? ATTN_MATH_BF16 : ATTN_MATH_F32;
            const int nm = bench_opt.n_maths ? bench_opt.n_maths : 1;
            for (int b = 0; b < nm; b++) {
                bench_shape e = *s;
                e.dtype = dt;
                e.math = bench_opt.n_maths ? bench_opt.maths[b] : own;
                const int plain = dt == ATTN_F32 && e.math == ATTN_MATH_F32;
                e.sdpa = !plain && e.q <= DECODE_MAX_Q;
                snprintf(e.base, sizeof e.base, "%s", plain ? "" : s->name);
                snprintf(e.name, sizeof e.name, "%s%s%s%s%s", s->name, dt != ATTN_F32 ? "-" : "",
                         dt != ATTN_F32 ? bench_dtype_name(dt) : "", e.math != own ? "-m" : "",
                         e.math != own ? bench_math_name(e.math) : "");
                add_shape_to(out, &n, &e, "--shape with --dtype/--math");
            }
        }
    }
    memcpy(bench_opt.shapes, out, sizeof out[0] * (size_t)n);
    bench_opt.n_shapes = n;
}

/* Every fp32 layer shape (L1, --layer) gets its bf16 twin NAME-bf16 (weights BF16, ATTN_MATH_BF16, vs_f32 against
 * it) right after it, unless the run names that twin itself. */
static void add_layer_twins(void)
{
    static bench_shape out[MAX_LIST];
    int n = 0;
    for (int i = 0; i < bench_opt.n_shapes; i++) {
        const bench_shape *s = &bench_opt.shapes[i];
        add_shape_to(out, &n, s, "a layer shape with its -bf16 twin");
        if (!s->dm || s->dtype != ATTN_F32 || s->math != ATTN_MATH_F32 || s->base[0])
            continue;
        bench_shape e = *s;
        e.dtype = ATTN_BF16;
        e.math = ATTN_MATH_BF16;
        snprintf(e.base, sizeof e.base, "%s", s->name);
        snprintf(e.name, sizeof e.name, "%.*s-bf16", (int)sizeof e.name - 6, s->name);
        int named = 0;
        for (int j = 0; j < bench_opt.n_shapes; j++)
            named |= !strcmp(bench_opt.shapes[j].name, e.name);
        if (!named)
            add_shape_to(out, &n, &e, "a layer shape with its -bf16 twin");
    }
    memcpy(bench_opt.shapes, out, sizeof out[0] * (size_t)n);
    bench_opt.n_shapes = n;
}

/* A shape compared with an fp32 one (base) that comes later in the list moves to just after it, so that its vs_f32
 * column can be filled in as it is printed; everything else keeps the order given. */
static void order_after_bases(void)
{
    static bench_shape out[MAX_LIST];
    int n = 0, placed[MAX_LIST] = {0};
    const int ns = bench_opt.n_shapes;
    for (int i = 0; i < ns; i++) {
        const bench_shape *s = &bench_opt.shapes[i];
        if (placed[i])
            continue;
        int later = 0, earlier = 0;
        for (int j = 0; j < ns && s->base[0]; j++)
            if (!strcmp(bench_opt.shapes[j].name, s->base))
                *(j < i ? &earlier : &later) = 1;
        if (later && !earlier)
            continue; /* placed after its base below */
        out[n++] = *s;
        placed[i] = 1;
        for (int k = 0; k < i; k++) /* the shapes compared with this one that were listed before it */
            if (!placed[k] && !strcmp(bench_opt.shapes[k].base, s->name)) {
                out[n++] = bench_opt.shapes[k];
                placed[k] = 1;
            }
    }
    memcpy(bench_opt.shapes, out, sizeof out[0] * (size_t)n);
    bench_opt.n_shapes = n;
}

void bench_parse_args(int argc, char **argv)
{
    bench_opt.reps = 5;
    bench_opt.warmup = 1;
    bench_opt.max_seconds = 10;
    bench_opt.peak_ms = 200;
    bench_opt.bw_mib = 1024;
    bench_opt.bw_passes = 5;
    bench_opt.probe_ms = 200;
    bench_opt.seed = 1;
    bench_opt.isa_req[0] = (bench_isa_req){ATTN_ISA_AUTO, NULL};
    bench_opt.n_isa_req = 1;
    bench_opt.threads_req[0] = 1;
    bench_opt.threads_req[1] = 0;
    bench_opt.n_threads_req = 2;
    bench_opt.dtypes[0] = ATTN_F32;
    bench_opt.n_dtypes = 1;
    bench_opt.shape_dtypes[0] = ATTN_F32;
    bench_opt.n_shape_dtypes = 1;
    int dtype_given = 0;

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
            bench_opt.quiet = 1;
            continue;
        }
        if (!strcmp(a, "--kernels") || !strcmp(a, "--tune")) {
            bench_mode m = !strcmp(a, "--kernels") ? BENCH_KERNELS : BENCH_TUNE;
            if (bench_opt.mode && bench_opt.mode != m)
                bench_usage_error("--kernels and --tune are separate runs: give one of them");
            bench_opt.mode = m;
            continue;
        }
        if (strncmp(a, "--", 2))
            bench_usage_error("unexpected argument '%s'", a);
        /* --flag=value or --flag value */
        char name[64];
        const char *val;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name)
            bench_usage_error("unknown flag '%s'", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        static const char *const known[] = {"--shapes", "--shape", "--isa", "--threads", "--reps", "--warmup",
                                            "--max-seconds", "--kv-dtype", "--block-q", "--block-kv", "--csv",
                                            "--json", "--peak-ms", "--bw-mib", "--bw-passes", "--probe-ms",
                                            "--seed", "--layer", "--tune-shapes", "--dtype", "--math"};
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(name, known[k]))
            k++;
        if (k == sizeof known / sizeof known[0])
            bench_usage_error("unknown flag '%s'", name);
        if (eq)
            val = eq + 1;
        else if (i + 1 < argc)
            val = argv[++i];
        else
            bench_usage_error("%s needs a value", name);

        uint64_t u;
        double d;
        if (!strcmp(name, "--shapes"))
            parse_shapes(name, val, bench_opt.shapes, &bench_opt.n_shapes);
        else if (!strcmp(name, "--tune-shapes")) {
            bench_opt.n_tune_shapes = 0;
            parse_shapes(name, val, bench_opt.tune_shapes, &bench_opt.n_tune_shapes);
        } else if (!strcmp(name, "--layer"))
            parse_layer_shape(name, val);
        else if (!strcmp(name, "--shape"))
            parse_custom_shape(name, val);
        else if (!strcmp(name, "--isa"))
            parse_isa(name, val);
        else if (!strcmp(name, "--threads"))
            parse_threads(name, val);
        else if (!strcmp(name, "--kv-dtype"))
            parse_dtypes(name, val, bench_opt.dtypes, &bench_opt.n_dtypes, 1);
        else if (!strcmp(name, "--dtype")) {
            parse_dtypes(name, val, bench_opt.shape_dtypes, &bench_opt.n_shape_dtypes, 0);
            dtype_given = 1;
        } else if (!strcmp(name, "--math"))
            parse_maths(name, val);
        else if (!strcmp(name, "--csv") || !strcmp(name, "--json")) {
            if (!*val)
                bench_usage_error("%s needs a file name or -", name);
            *(!strcmp(name, "--csv") ? &bench_opt.csv_path : &bench_opt.json_path) = val;
        } else if (!strcmp(name, "--reps")) {
            if (!parse_u64(val, 1, 1000000, &u))
                bench_usage_error("--reps: expected an integer 1..1000000, got '%s'", val);
            bench_opt.reps = (int)u;
            bench_opt.reps_given = 1;
        } else if (!strcmp(name, "--warmup")) {
            if (!parse_u64(val, 0, 1000000, &u))
                bench_usage_error("--warmup: expected an integer 0..1000000, got '%s'", val);
            bench_opt.warmup = (int)u;
        } else if (!strcmp(name, "--block-q") || !strcmp(name, "--block-kv")) {
            if (!parse_u64(val, 0, ATTN_MAX_BLOCK, &u))
                bench_usage_error("%s: expected an integer 1..%d (0 = default), got '%s'", name, ATTN_MAX_BLOCK, val);
            *(!strcmp(name, "--block-q") ? &bench_opt.block_q : &bench_opt.block_kv) = (int)u;
        } else if (!strcmp(name, "--bw-mib")) {
            if (!parse_u64(val, 0, (uint64_t)1 << 20, &u) || (u << 20) > SIZE_MAX / 2)
                bench_usage_error("--bw-mib: expected an integer 0..1048576 (MiB), got '%s'", val);
            bench_opt.bw_mib = (size_t)u;
        } else if (!strcmp(name, "--bw-passes")) {
            if (!parse_u64(val, 1, 1000, &u))
                bench_usage_error("--bw-passes: expected an integer 1..1000, got '%s'", val);
            bench_opt.bw_passes = (int)u;
        } else if (!strcmp(name, "--seed")) {
            if (!parse_u64(val, 0, UINT64_MAX, &u))
                bench_usage_error("--seed: expected a non-negative integer, got '%s'", val);
            bench_opt.seed = u;
        } else if (!strcmp(name, "--max-seconds")) {
            if (!parse_nonneg_double(val, 1e6, &d))
                bench_usage_error("--max-seconds: expected seconds >= 0, got '%s'", val);
            bench_opt.max_seconds = d;
        } else { /* --peak-ms, --probe-ms */
            if (!parse_nonneg_double(val, 600000, &d))
                bench_usage_error("%s: expected milliseconds 0..600000, got '%s'", name, val);
            *(!strcmp(name, "--peak-ms") ? &bench_opt.peak_ms : &bench_opt.probe_ms) = d;
        }
    }
    int any_custom = 0;
    for (int i = 0; i < bench_opt.n_shapes; i++)
        any_custom |= bench_opt.shapes[i].custom;
    if ((dtype_given || bench_opt.n_maths) && !any_custom)
        bench_usage_error("--dtype and --math apply to --shape rows: give a --shape (P2-bf16, P3-bf16 and D2-bf16 "
                          "are the named bf16 rows)");
    expand_custom_shapes();
    add_layer_twins();
    if (bench_opt.n_shapes == 0)
        for (size_t j = 0; j < N_NAMED; j++)
            add_shape(&named_shapes[j], "default");
    order_after_bases();
    if (bench_opt.n_isa_req == 0)
        bench_usage_error("--isa all: attn_isa_supported() reports no ISA at all");
    if (bench_opt.csv_path && bench_opt.json_path && !strcmp(bench_opt.csv_path, "-") &&
        !strcmp(bench_opt.json_path, "-"))
        bench_usage_error("--csv - and --json - cannot both write to stdout");
    if (bench_opt.mode && (bench_opt.csv_path || bench_opt.json_path))
        bench_usage_error("--csv and --json write the attention rows; --kernels and --tune print tables only");
    if (bench_opt.n_tune_shapes && bench_opt.mode != BENCH_TUNE)
        bench_usage_error("--tune-shapes goes with --tune");
    for (int i = 0; i < bench_opt.n_tune_shapes; i++)
        if (bench_opt.tune_shapes[i].dm || bench_opt.tune_shapes[i].pool || bench_opt.tune_shapes[i].cache_dtype)
            bench_usage_error("--tune-shapes: %s is not an attn_sdpa shape (a layer, pool or KV cache one); --tune "
                              "times attn_sdpa", bench_opt.tune_shapes[i].name);
    if (bench_opt.mode == BENCH_TUNE) {
        if (bench_opt.n_isa_req != 1 || bench_opt.isa_req[0].kernels)
            bench_usage_error("--tune --isa: one level (auto or a level such as avx512), not a list or variant");
        if (!bench_opt.n_tune_shapes) /* the default: short prefill, long prefill, long causal prefill */
            for (size_t j = 1; j <= 3; j++)
                add_shape_to(bench_opt.tune_shapes, &bench_opt.n_tune_shapes, &named_shapes[j], "--tune");
    }
}

