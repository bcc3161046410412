/* attn-bench probes: the machine's own ceilings, measured in the same run as the rows: FMA peak per ISA and thread
 * count, read bandwidth, and whether the host is time-sharing the vCPUs. Baseline flags only: the vector FMA loops
 * live in bench/peak_*.c and are called only after attn_isa_supported() said yes. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench_int.h"

#define FMA_MUL 0.9999f          /* acc = acc*mul + add converges to add/(1-mul) = 1: no denormals, no inf */
#define FMA_ADD 0.0001f

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

static bench_fma_kind fma_kinds[8];
static int n_fma_kinds;

static void add_kind(attn_isa isa, int dot, const char *loop, attn_bench_fma_fn *fn)
{
    fma_kinds[n_fma_kinds++] = (bench_fma_kind){.isa = isa, .dot = dot, .loop = loop, .fn = fn};
}

static void setup_fma_kinds(void)
{
    if (n_fma_kinds)
        return;
    add_kind(ATTN_ISA_SCALAR, 0, "12 chains mul+add, 1 lane", fma_scalar);
#if defined(ATTN_HAVE_AVX2) && ATTN_HAVE_AVX2
    if (attn_isa_supported(ATTN_ISA_AVX2))
        add_kind(ATTN_ISA_AVX2, 0, "12 ymm FMA chains", attn_bench_fma_avx2);
#endif
#if defined(ATTN_HAVE_AVX512) && ATTN_HAVE_AVX512
    if (attn_isa_supported(ATTN_ISA_AVX512))
        add_kind(ATTN_ISA_AVX512, 0, "16 zmm FMA chains", attn_bench_fma_avx512);
#endif
#if defined(ATTN_HAVE_AVX512BF16) && ATTN_HAVE_AVX512BF16
    /* Its fp32 peak is avx512's (fp32 math runs on the AVX-512 kernels); this is its bf16 one. */
    if (attn_isa_supported(ATTN_ISA_AVX512_BF16))
        add_kind(ATTN_ISA_AVX512_BF16, 1, "24 zmm vdpbf16ps chains", attn_bench_dpbf16_avx512bf16);
#endif
#if defined(ATTN_HAVE_NEON) && ATTN_HAVE_NEON
    if (attn_isa_supported(ATTN_ISA_NEON))
        add_kind(ATTN_ISA_NEON, 0, "16 q-reg FMA chains", attn_bench_fma_neon);
#endif
}

/* Runs fn on T threads at once for `seconds`, each timing its own chunks of ~50 us. A thread's rate is its
 * chunk's flops over the median chunk time, so a host that takes the vCPU away for a while (which lands in a
 * few chunks) does not lower it; the descheduled share is reported separately. Returns the sum of rates. */
double bench_measure_fma(attn_bench_fma_fn *fn, int T, double seconds, double *desched_out, double *min_rate)
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
            double t0 = bench_now_s();
            fn(it, FMA_MUL, FMA_ADD, &sink);
            dt = bench_now_s() - t0;
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
        double flops = 0, start = bench_now_s(), t = start;
        int n = 0;
        while (n < cap && (n < 3 || t - start < seconds)) {
            double t0 = t;
            flops = fn(chunk, FMA_MUL, FMA_ADD, &sink);
            t = bench_now_s();
            tt[n++] = t - t0;
        }
        double total = t - start, lost = 0;
        double med = bench_median(tt, n);
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
    bw_n = (bench_opt.bw_mib << 20) / sizeof(float);
    bw_buf = bench_alloc64(bw_n * sizeof(float));
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
    double *g = malloc(sizeof(double) * (size_t)bench_opt.bw_passes);
    double *lost = calloc((size_t)bench_opt.bw_passes, sizeof(double));
    double *ct = malloc(sizeof(double) * max_chunks * (size_t)T);
    *best = *med = *desched = 0;
    if (!g || !lost || !ct) {
        free(g), free(lost), free(ct);
        return;
    }
    for (int pass = 0; pass < bench_opt.bw_passes; pass++) {
        double sum = 0, worst = 0, t0 = bench_now_s();
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
            double *tt = ct + (size_t)tid * max_chunks, start = bench_now_s(), prev = start;
            int n = 0;
            for (size_t i = lo; i < hi; i += BW_CHUNK_FLOATS) {
                size_t e = hi - i < BW_CHUNK_FLOATS ? hi - i : BW_CHUNK_FLOATS;
                sum += read_sum(bw_buf + i, e);
                double t = bench_now_s();
                if (e == BW_CHUNK_FLOATS)
                    tt[n++] = t - prev;
                prev = t;
            }
            if (n > 0 && prev > start) {
                double m = bench_median(tt, n), l = 0;
                for (int c = 0; c < n; c++)
                    if (tt[c] > m + PROBE_GAP_S && tt[c] > 1.5 * m)
                        l += tt[c] - m;
                worst = l / (prev - start);
            }
        }
        double t = bench_now_s() - t0;
        bw_sink = sum;
        g[pass] = (double)bw_n * sizeof(float) / t / 1e9;
        lost[pass] = worst;
    }
    int bi = 0;
    for (int i = 1; i < bench_opt.bw_passes; i++)
        bi = g[i] > g[bi] ? i : bi;
    *best = g[bi];
    *desched = lost[bi];
    *med = bench_median(g, bench_opt.bw_passes);
    free(g), free(lost), free(ct);
    (void)T;
}

static const bench_fma_kind *probe_kind;  /* the fastest FMA loop, with its 1-thread rate; NULL: no co-run check */

/* T threads spin on CLOCK_MONOTONIC for the probe time; a gap between two consecutive readings longer than
 * PROBE_GAP_S is time the thread did not run (the guest scheduler or the host took its CPU). Then, for half
 * that time, the T threads run the fastest FMA loop at once and the slowest one's rate is compared with one
 * thread alone. */
void bench_run_probe(int T, bench_probe_result *r)
{
    const double dur = bench_opt.probe_ms * 1e-3;
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
        double start = bench_now_s(), prev = start, t = start, lost = 0;
        while (t - start < dur) {
            t = bench_now_s();
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
        bench_measure_fma(probe_kind->fn, T, dur / 2, &d, &rmin);
        r->corun = rmin / 1e9 / probe_kind->g1;
    }
    r->shared = r->max_frac > PROBE_SHARED_FRAC || (r->corun > 0 && r->corun < CORUN_SHARED);
}


static int have_peak;

/* The level whose fp32 FMA loop rates level's fp32 rows: the levels above avx512 run fp32 on the AVX-512 kernels. */
static attn_isa fp32_level(attn_isa level)
{
    return level == ATTN_ISA_AVX512_BF16 || level == ATTN_ISA_AMX ? ATTN_ISA_AVX512 : level;
}

static double peak1_of(attn_isa level, int dot)
{
    setup_fma_kinds();
    for (int i = 0; i < n_fma_kinds && bench_opt.peak_ms > 0; i++)
        if (fma_kinds[i].isa == level && fma_kinds[i].dot == dot) {
            if (fma_kinds[i].g1 <= 0) {
                double d, rmin;
                bench_progress_minor("measuring the %s %s peak on 1 thread", attn_isa_name(level),
                                     dot ? "bf16 dot" : "FMA");
                fma_kinds[i].g1 = bench_measure_fma(fma_kinds[i].fn, 1, bench_opt.peak_ms * 1e-3, &d, &rmin) / 1e9;
            }
            return fma_kinds[i].g1;
        }
    return 0;
}

double bench_peak1(attn_isa level)
{
    return peak1_of(fp32_level(level), 0);
}

double bench_dot_peak1(void)
{
    return peak1_of(ATTN_ISA_AVX512_BF16, 1);
}

void bench_measure_peaks(const int *threads, int n_thr, double *machine_peak)
{
    setup_fma_kinds();
    have_peak = bench_opt.peak_ms > 0;
    const bench_fma_kind *best = NULL;
    if (have_peak || bench_opt.probe_ms > 0) {
        /* One thread alone first: T x this is what T threads on T real cores can do. */
        double secs = have_peak ? bench_opt.peak_ms * 1e-3 : 0.05, d, rmin;
        for (int k = 0; k < n_fma_kinds; k++) {
            bench_progress_minor("measuring the %s FMA peak on 1 thread", attn_isa_name(fma_kinds[k].isa));
            fma_kinds[k].g1 = bench_measure_fma(fma_kinds[k].fn, 1, secs, &d, &rmin) / 1e9;
            for (int t = 0; t < n_thr; t++)
                if (threads[t] == 1) {
                    fma_kinds[k].gflops[t] = fma_kinds[k].g1;
                    fma_kinds[k].desched[t] = d;
                }
            if (!fma_kinds[k].dot && (!best || fma_kinds[k].g1 > best->g1)) /* fp32: the co-run probe's loop */
                best = &fma_kinds[k];
        }
        probe_kind = best;
    }
    if (have_peak) {
        for (int k = 0; k < n_fma_kinds; k++)
            for (int t = 0; t < n_thr; t++) {
                double rmin;
                if (threads[t] > 1) {
                    bench_progress_minor("measuring the %s FMA peak on %d threads",
                                         attn_isa_name(fma_kinds[k].isa), threads[t]);
                    double g = bench_measure_fma(fma_kinds[k].fn, threads[t], bench_opt.peak_ms * 1e-3,
                                                 &fma_kinds[k].desched[t], &rmin);
                    fma_kinds[k].gflops[t] = g / 1e9;
                }
                /* T x one thread, unless T at once did better (a 1-thread run that lost its core) */
                double p = fma_kinds[k].g1 * threads[t];
                p = fma_kinds[k].gflops[t] > p ? fma_kinds[k].gflops[t] : p;
                fma_kinds[k].peak[t] = p;
                if (!fma_kinds[k].dot) /* the machine's peak is fp32: the dot loop rates MATH_BF16 rows only */
                    machine_peak[t] = p > machine_peak[t] ? p : machine_peak[t];
            }
        bench_progress_clear();
        fprintf(bench_hout,
                "FMA peak   GFLOP/s, T threads at once: per-thread rate of the median %.0f-us chunk in %.0f ms, "
                "summed\n           (desched = worst thread's lost time, which does not lower the rate)\n",
                PEAK_CHUNK_S * 1e6, bench_opt.peak_ms);
        fprintf(bench_hout, "           %-10s %-26s", "isa", "loop");
        for (int t = 0; t < n_thr; t++)
            fprintf(bench_hout, " %9d thr %8s", threads[t], "desched");
        fputc('\n', bench_hout);
        for (int k = 0; k < n_fma_kinds; k++) {
            if (fma_kinds[k].dot)
                continue;
            fprintf(bench_hout, "           %-10s %-26s", attn_isa_name(fma_kinds[k].isa), fma_kinds[k].loop);
            for (int t = 0; t < n_thr; t++)
                fprintf(bench_hout, " %13.1f %7.1f%%%s", fma_kinds[k].gflops[t], 100 * fma_kinds[k].desched[t],
                        fma_kinds[k].gflops[t] < CORUN_SHARED * threads[t] * fma_kinds[k].g1 ? "!" : " ");
            fputc('\n', bench_hout);
        }
        fprintf(bench_hout, "           %-10s %-26s", "machine", "T x best 1-thread (= peak)");
        for (int t = 0; t < n_thr; t++)
            fprintf(bench_hout, " %13.1f %9s", machine_peak[t], "");
        fputc('\n', bench_hout);
        /* The bf16 dot peak: its own lines, not in the machine's fp32 peak; the rows in math bf16 on avx512bf16 are
         * rated against it (T x its 1-thread rate, or T at once if higher). */
        for (int k = 0; k < n_fma_kinds; k++) {
            if (!fma_kinds[k].dot)
                continue;
            fprintf(bench_hout, "bf16 dot   peak GFLOP/s, measured as above, 64 flops per vdpbf16ps zmm (32 bf16 "
                                "products + 32 adds):\n           the peak of math bf16 rows on %s, not part of the "
                                "machine's fp32 peak\n", attn_isa_name(fma_kinds[k].isa));
            fprintf(bench_hout, "           %-10s %-26s", attn_isa_name(fma_kinds[k].isa), fma_kinds[k].loop);
            for (int t = 0; t < n_thr; t++)
                fprintf(bench_hout, " %13.1f %7.1f%%%s", fma_kinds[k].gflops[t], 100 * fma_kinds[k].desched[t],
                        fma_kinds[k].gflops[t] < CORUN_SHARED * threads[t] * fma_kinds[k].g1 ? "!" : " ");
            fputc('\n', bench_hout);
            fprintf(bench_hout, "           %-10s %-26s", "bf16 dot", "T x 1-thread (= its peak)");
            for (int t = 0; t < n_thr; t++)
                fprintf(bench_hout, " %13.1f %9s", fma_kinds[k].peak[t], "");
            fputc('\n', bench_hout);
        }
        int flagged = 0;
        for (int k = 0; k < n_fma_kinds; k++)
            for (int t = 0; t < n_thr; t++)
                flagged |= fma_kinds[k].gflops[t] < CORUN_SHARED * threads[t] * fma_kinds[k].g1;
        if (flagged)
            fprintf(bench_hout, "           ! below %.0f%% of T x the 1-thread rate: the threads shared cores while "
                                "measured (time-shared)\n", 100 * CORUN_SHARED);
    } else {
        fprintf(bench_hout, "FMA peak   not measured (--peak-ms 0)\n");
    }
    fflush(bench_hout);
}

double bench_level_peak(attn_isa isa, int ti)
{
    isa = fp32_level(isa);
    for (int k = 0; have_peak && k < n_fma_kinds; k++)
        if (fma_kinds[k].isa == isa && !fma_kinds[k].dot)
            return fma_kinds[k].peak[ti];
    return 0;
}

double bench_dot_peak(int ti)
{
    for (int k = 0; have_peak && k < n_fma_kinds; k++)
        if (fma_kinds[k].dot)
            return fma_kinds[k].peak[ti];
    return 0;
}

int bench_measure_bw(const int *threads, int n_thr, double *bw_best)
{
    int t_max = 1;
    for (int i = 0; i < n_thr; i++)
        t_max = threads[i] > t_max ? threads[i] : t_max;
    double bw_med[MAX_LIST] = {0}, bw_desched[MAX_LIST] = {0};
    int have_bw = bench_opt.bw_mib > 0;
    if (have_bw) {
        bench_progress_minor("allocating and touching the %zu MiB bandwidth array", bench_opt.bw_mib);
        if (!bw_alloc(t_max)) {
            bench_progress_clear();
            fprintf(stderr, "%s: --bw-mib %zu: out of memory; bandwidth not measured\n", BENCH_PROG, bench_opt.bw_mib);
            have_bw = 0;
        } else {
            for (int t = 0; t < n_thr; t++) {
                bench_progress_minor("measuring read bandwidth on %d thread(s)", threads[t]);
                measure_bw(threads[t], &bw_best[t], &bw_med[t], &bw_desched[t]);
            }
            free(bw_buf);
            bw_buf = NULL;
            bench_progress_clear();
            fprintf(bench_hout, "read BW    GB/s summing a %zu MiB array, %d passes (best / median; desched = worst "
                                "thread's lost time in the best pass)\n", bench_opt.bw_mib, bench_opt.bw_passes);
            for (int t = 0; t < n_thr; t++)
                fprintf(bench_hout, "           %4d thr %8.1f / %-8.1f desched %.1f%%%s\n", threads[t], bw_best[t],
                        bw_med[t], 100 * bw_desched[t],
                        bw_desched[t] > PROBE_SHARED_FRAC ? "  TIME-SHARED: this bandwidth is too low" : "");
        }
    }
    if (!have_bw)
        fprintf(bench_hout, "read BW    not measured\n");
    return have_bw;
}

void bench_startup_probe(int probe_t)
{
    if (bench_opt.probe_ms > 0) {
        static bench_probe_result pr;
        bench_progress_minor("time-sharing probe");
        bench_run_probe(probe_t, &pr);
        bench_progress_clear();
        fprintf(bench_hout, "probe      %d threads spinning %.0f ms, descheduled (gaps > %.0f us):", pr.threads,
                bench_opt.probe_ms, PROBE_GAP_S * 1e6);
        for (int i = 0; i < pr.threads && i < MAX_THREADS; i++)
            fprintf(bench_hout, " %.1f%%", 100 * pr.frac[i]);
        if (pr.corun > 0)
            fprintf(bench_hout,
                    ";\n           %s FMA loop on %d threads at once: slowest thread at %.0f%% of 1-thread rate",
                    attn_isa_name(probe_kind->isa), pr.threads, 100 * pr.corun);
        fprintf(bench_hout, " -> %s\n",
                pr.shared ? "TIME-SHARED now: multi-thread rows may not scale" : "not time-shared");
    } else {
        fprintf(bench_hout, "probe      disabled (--probe-ms 0)\n");
    }
    fflush(bench_hout);
}
