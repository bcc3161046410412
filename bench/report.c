/* attn-bench report: progress lines on stderr, the machine summary, the table, CSV and JSON. Baseline flags only. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_int.h"

FILE *bench_hout;

static int stderr_tty;  /* progress overwrites one line on a terminal */

/* Progress: an overwritten line on a terminal, one line per step otherwise; never mixed into a
 * non-terminal report on stderr. */
static void progress_v(int minor, const char *fmt, va_list ap)
{
    if (bench_opt.quiet || (bench_hout == stderr && !stderr_tty) || (minor && !stderr_tty))
        return;
    if (stderr_tty)
        fputs("\r\033[K", stderr);
    fprintf(stderr, "%s: ", BENCH_PROG);
    vfprintf(stderr, fmt, ap);
    fputs(stderr_tty ? "" : "\n", stderr);
    fflush(stderr);
}

/* A step worth a line in a log. */
void bench_progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    progress_v(0, fmt, ap);
    va_end(ap);
}

/* A sub-step (warm-up, rep, probe): shown on a terminal only. */
void bench_progress_minor(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    progress_v(1, fmt, ap);
    va_end(ap);
}

void bench_progress_clear(void)
{
    if (!bench_opt.quiet && stderr_tty) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}


static FILE *csv_f, *json_f;
static int json_rows;
static int name_w = 5, isa_w = 7; /* widths of the shape and isa columns: the longest name in the run */

static FILE *open_out(const char *path, const char *flag)
{
    if (!strcmp(path, "-"))
        return stdout;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: %s %s: %s\n", BENCH_PROG, flag, path, strerror(errno));
        exit(2);
    }
    return f;
}

void bench_print_table_header(const bench_plan *p)
{
    for (int s = 0; s < bench_opt.n_shapes; s++) {
        int l = (int)strlen(bench_opt.shapes[s].name) + (bench_opt.shapes[s].dm || bench_opt.shapes[s].pool ? 6 : 0);
        /* "/layer", "/loop" */
        name_w = l > name_w ? l : name_w;
    }
    for (int i = 0; i < p->n_sets; i++) {
        int l = (int)strlen(p->kernels[i]);
        isa_w = l > isa_w ? l : isa_w;
    }
    fprintf(bench_hout, "\n%-*s %-*s %4s %-4s %-4s %4s %11s %11s %9s %7s %9s %6s %8s %6s %6s %9s %6s %5s %s\n",
            name_w, "shape", isa_w, "isa", "thr", "kv", "math", "reps", "median_ms", "best_ms", "GFLOP/s", "vs_f32",
            "peak", "%peak", "GB/s", "%bw", "roof%", "tok/s", "desch", "corun", "ts");
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

void bench_emit_row(const bench_row *r)
{
    char peak[24] = "-", pct[16] = "-", gbps[16] = "-", bwp[16] = "-", des[16] = "-", cor[16] = "-", vs[16] = "",
         roof[16] = "-", tps[16] = "-";
    if (r->has_roof)
        snprintf(roof, sizeof roof, "%.1f", r->roof_pct);
    if (r->has_tps)
        snprintf(tps, sizeof tps, "%.4g", r->tps);
    if (r->has_peak) {
        /* b: the bf16 dot peak (the footer says which peak each kind of row is rated against) */
        snprintf(peak, sizeof peak, "%.1f%s", r->peak, r->peak_kind && !strcmp(r->peak_kind, "bf16dot") ? "b" : " ");
        snprintf(pct, sizeof pct, "%.1f", r->peak_pct);
    }
    if (r->has_ratio)
        snprintf(vs, sizeof vs, "%.2fx%s", r->ratio, r->base_shared ? "*" : "");
    else if (r->has_base)
        snprintf(vs, sizeof vs, "-");
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
    bench_progress_clear();
    fprintf(bench_hout, "%-*s %-*s %4d %-4s %-4s %4d %11.5g %11.5g %9.4g %7s %9s %6s %8s %6s %6s %9s %6s %5s %s\n",
            name_w, r->shape, isa_w, r->kernels, r->threads, r->dtype, r->math, r->reps, r->median_ms, r->best_ms,
            r->gflops, vs, peak, pct, gbps, bwp, roof, tps, des, cor, r->timeshared ? "*" : "");
    fflush(bench_hout);
    if (csv_f) {
        fprintf(csv_f, "%s,%s,%s,%d,%s,", r->shape, r->isa, r->kernels, r->threads, r->dtype);
        csv_num(csv_f, 1, r->median_ms, 0);
        csv_num(csv_f, 1, r->best_ms, 0);
        csv_num(csv_f, 1, r->gflops, 0);
        csv_num(csv_f, r->has_peak, r->peak, 0);
        csv_num(csv_f, r->has_peak, r->peak_pct, 0);
        csv_num(csv_f, r->is_decode, r->gbps, 0);
        csv_num(csv_f, r->is_decode && r->has_bw, r->bw_pct, 0);
        fprintf(csv_f, "%s,", r->math);
        csv_num(csv_f, r->has_ratio, r->ratio, 0);
        fprintf(csv_f, "%s,", r->has_peak && r->peak_kind ? r->peak_kind : "");
        csv_num(csv_f, r->has_roof, r->roof_pct, 0);
        csv_num(csv_f, r->has_tps, r->tps, 0);
        csv_num(csv_f, r->has_tps, r->tok_per_gb, 1);
        fflush(csv_f);
    }
    if (json_f) {
        fputs(json_rows++ ? ",\n  {\"shape\": " : "[\n  {\"shape\": ", json_f);
        json_str(json_f, r->shape);
        fputs(", \"isa\": ", json_f);
        json_str(json_f, r->isa);
        fputs(", \"kernels\": ", json_f);
        json_str(json_f, r->kernels);
        fprintf(json_f, ", \"threads\": %d, \"kv_dtype\": ", r->threads);
        json_str(json_f, r->dtype);
        json_num(json_f, "median_ms", 1, r->median_ms);
        json_num(json_f, "best_ms", 1, r->best_ms);
        json_num(json_f, "gflops", 1, r->gflops);
        json_num(json_f, "peak_gflops", r->has_peak, r->peak);
        json_num(json_f, "peak_pct", r->has_peak, r->peak_pct);
        json_num(json_f, "gbps", r->is_decode, r->gbps);
        json_num(json_f, "bw_pct", r->is_decode && r->has_bw, r->bw_pct);
        fputs(", \"math\": ", json_f);
        json_str(json_f, r->math);
        json_num(json_f, "vs_f32", r->has_ratio, r->ratio);
        fputs(", \"peak_kind\": ", json_f);
        if (r->has_peak && r->peak_kind)
            json_str(json_f, r->peak_kind);
        else
            fputs("null", json_f);
        json_num(json_f, "roofline_pct", r->has_roof, r->roof_pct);
        json_num(json_f, "tokens_per_s", r->has_tps, r->tps);
        json_num(json_f, "tokens_per_gb", r->has_tps, r->tok_per_gb);
        fprintf(json_f, ", \"timeshared\": %s}", r->timeshared ? "true" : "false");
        fflush(json_f);
    }
}

void bench_cpu_model(char *buf, size_t n)
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


void bench_open_outputs(void)
{
    stderr_tty = isatty(2);
    bench_hout = (bench_opt.csv_path && !strcmp(bench_opt.csv_path, "-")) ||
                         (bench_opt.json_path && !strcmp(bench_opt.json_path, "-"))
                     ? stderr
                     : stdout;
    if (bench_opt.csv_path) {
        csv_f = open_out(bench_opt.csv_path, "--csv");
        fputs("shape,isa,kernels,threads,kv_dtype,median_ms,best_ms,gflops,peak_gflops,peak_pct,gbps,bw_pct,math,vs_f32,"
              "peak_kind,roofline_pct,tokens_per_s,tokens_per_gb\n",
              csv_f);
        fflush(csv_f);
    }
    if (bench_opt.json_path)
        json_f = open_out(bench_opt.json_path, "--json");
}

/* What this machine is and what the run will use. */
void bench_print_machine(const bench_plan *p, const char *auto_kernels)
{
    char model[256];
    bench_cpu_model(model, sizeof model);
    fprintf(bench_hout, "attn-bench: attn %s\n", attn_version());
    fprintf(bench_hout, "cpu        %s, %d logical CPUs, OpenMP max threads %d\n", model, bench_num_procs(),
            bench_max_threads());
    fprintf(bench_hout, "isa        ");
    const attn_isa *lv;
    const int nl = bench_isa_levels(&lv);
    for (int j = 0; j < nl; j++)
        fprintf(bench_hout, "%s %s%s", attn_isa_name(lv[j]), attn_isa_supported(lv[j]) ? "yes" : "no",
                j + 1 < nl ? ", " : "");
    fprintf(bench_hout, "; auto -> %s\n", auto_kernels);
    fprintf(bench_hout, "kernels    ");
    for (size_t i = 0; attn_kernels_name(i); i++)
        fprintf(bench_hout, "%s%s%s", i ? ", " : "", attn_kernels_name(i),
                attn_kernels_supported(attn_kernels_name(i)) ? "" : " (not on this CPU)");
    fputc('\n', bench_hout);
    if (p) { /* NULL for --kernels and --tune: they run on 1 thread */
        int t_max = 1;
        for (int i = 0; i < p->n_thr; i++)
            t_max = p->threads[i] > t_max ? p->threads[i] : t_max;
        fprintf(bench_hout, "threads    ");
        for (int i = 0; i < p->n_thr; i++)
            fprintf(bench_hout, "%d%s", p->threads[i], i + 1 < p->n_thr ? ", " : "");
        if (t_max > bench_num_procs())
            fprintf(bench_hout, "  (more threads than CPUs: oversubscribed)");
        fputc('\n', bench_hout);
    }
    static const char *const vars[] = {"ATTN_NUM_THREADS", "ATTN_ISA", "ATTN_KERNELS", "ATTN_BLOCK_Q",
                                       "ATTN_BLOCK_KV", "ATTN_VERBOSE", "OMP_NUM_THREADS", "OMP_PROC_BIND",
                                       "OMP_PLACES", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"};
    int any = 0;
    fprintf(bench_hout, "env        ");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v)
            fprintf(bench_hout, "%s%s=%s", any++ ? " " : "", vars[i], v);
    }
    fprintf(bench_hout, "%s\n", any ? "" : "(no ATTN_*/OMP_* variables set)");
    fflush(bench_hout);
}

void bench_print_footer(const bench_plan *p)
{
    int any_variant = 0;
    for (int i = 0; i < p->n_sets; i++)
        any_variant |= p->by_variant[i];
    bench_progress_clear();
    fprintf(bench_hout, "\nGFLOP/s = 4*heads*head_dim*unmasked pairs / median; peak = T x the best ISA's 1-thread fp32 "
                        "FMA rate;\nGB/s = K+V bytes / median (decode and pool shapes; 2 bytes per bf16/f16 element, "
                        "i8: 1 + a 4-byte scale\nper row); %%bw = of the best measured read bandwidth at T threads.\n"
                        "roof%% = 100 * max(flops / peak, least bytes / read bandwidth) / median, both ceilings those "
                        "measured at T\n(least bytes: K, V, Q and out once); '-' when either was not measured. tok/s "
                        "= query rows per second\n(pool shapes).\n");
    if (any_variant)
        fprintf(bench_hout, "Variants asked for by name (--isa LEVEL/VARIANT or variants): peak = T x their level's "
                            "1-thread fp32 FMA rate\n(avx512's for avx512bf16, which runs fp32 math on the AVX-512 "
                            "kernels).\n");
    if (p->any_dot)
        fprintf(bench_hout, "Peak marked b: math bf16 rows on avx512bf16 are rated against the bf16 dot peak, T x the "
                            "1-thread vdpbf16ps\nrate (64 flops per zmm instruction); every other row against the "
                            "fp32 FMA peak.\n");
    if (p->any_bf16_fma)
        fprintf(bench_hout, "Math bf16 rows on levels without vdpbf16ps (scalar, avx2, avx512, neon) round to bf16 and "
                            "use fp32 FMAs:\nrated against the fp32 FMA peak, as fp32 rows.\n");
    if (p->any_nopeak)
        fprintf(bench_hout, "Math bf16 rows above avx512bf16 (amx) have no peak: no loop measures their bf16 rate "
                            "yet.\n");
    fprintf(bench_hout, "vs_f32 = median of the fp32 row of the same shape, kernel set and T (D2-bf16, D2-i8: D2 "
                        "from an f32 KV\ncache; S1, S3: their /loop row) / this row's median: above 1 is faster.%s\n",
            p->any_ratio_missing ? " '-': that fp32 row was not in this run (add P2, P3, D2 or the\nplain --shape "
                                   "row, --dtype f32,...)." : "");
    if (p->any_base_shared)
        fprintf(bench_hout, "vs_f32 marked *: the fp32 row it compares with was time-shared (its ts column): the "
                            "ratio is not the\nmachine's either.\n");
    if (p->any_shared)
        fprintf(bench_hout,
                "* time-shared: a probe before or after this row saw a thread descheduled > %.0f%% of the time "
                "(desch), or\n  threads running at once slower than %.0f%% of one alone (corun): the CPUs were "
                "shared, so its time\n  (and any scaling read from it) is not the machine's. Rerun when the host is "
                "quieter.\n",
                100 * PROBE_SHARED_FRAC, 100 * CORUN_SHARED);
    fflush(bench_hout);
}

void bench_close_outputs(void)
{
    if (json_f) {
        fputs(json_rows ? "\n]\n" : "[]\n", json_f);
        if (json_f != stdout)
            fclose(json_f);
    }
    if (csv_f && csv_f != stdout)
        fclose(csv_f);
}
