/* attn-bench: times attn_sdpa / attn_decode on the DESIGN.md §5 shapes (or custom ones) per ISA or kernel variant and
 * thread count, and measures the machine's own ceilings in the same run (FMA peak per ISA and thread count, DRAM read
 * bandwidth, whether the host is time-sharing the vCPUs) so that every row is reported against them. --kernels times
 * each kernel slot alone, --tune searches a level's blockings. This file has main(); options.c, probes.c, runs.c,
 * report.c, slots.c and tune.c the rest. Baseline flags only: the ISA-specific loops live in bench/peak_*.c and are
 * called after attn_isa_supported(). */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_int.h"

/* The contexts of every kernel set and thread count, created up front so that a bad ISA, variant or environment
 * fails before minutes of measuring. Requests that resolve to the same variant run once. */
static void make_sets(bench_plan *p)
{
    for (int i = 0; i < bench_opt.n_isa_req; i++) {
        const bench_isa_req *rq = &bench_opt.isa_req[i];
        const int s = p->n_sets;
        for (int t = 0; t < p->n_thr; t++) {
            attn_config cfg = {.num_threads = p->threads[t], .isa = rq->isa, .block_q = bench_opt.block_q,
                               .block_kv = bench_opt.block_kv, .kernels = rq->kernels};
            char what[160];
            snprintf(what, sizeof what, "--isa %s, --threads %d%s", rq->kernels ? rq->kernels : attn_isa_name(rq->isa),
                     p->threads[t], bench_opt.block_q || bench_opt.block_kv ? ", --block-q/--block-kv" : "");
            p->ctxs[s][t] = bench_make_ctx(&cfg, what);
            if (t > 0)
                continue;
            int dup = 0;
            for (int j = 0; j < s; j++)
                dup |= !strcmp(p->kernels[j], attn_ctx_kernels(p->ctxs[s][0]));
            if (dup) {
                attn_ctx_destroy(p->ctxs[s][0]);
                break;
            }
            p->kernels[s] = attn_ctx_kernels(p->ctxs[s][0]);
            p->isas[s] = attn_ctx_isa(p->ctxs[s][0]);
            p->by_variant[s] = rq->kernels != NULL;
            p->n_sets++;
        }
    }
}

int main(int argc, char **argv)
{
    static bench_plan plan; /* large: contexts and ceilings for up to MAX_LIST sets and thread counts */
    bench_plan *p = &plan;
    bench_parse_args(argc, argv);
    bench_open_outputs();

    /* The library parses the ATTN_* variables: a default context fails here, naming the bad one, before anything is
     * measured. */
    attn_ctx *dflt = bench_default_ctx();
    char auto_kernels[64];
    snprintf(auto_kernels, sizeof auto_kernels, "%s", attn_ctx_kernels(dflt));
    const attn_isa auto_level = attn_ctx_isa(dflt);
    attn_ctx_destroy(dflt);
    if (bench_opt.mode) {
        bench_print_machine(NULL, auto_kernels);
        return bench_opt.mode == BENCH_KERNELS ? bench_kernels_main(auto_level) : bench_tune_main(auto_level);
    }

    /* Thread counts: resolve "max", drop duplicates. */
    for (int i = 0; i < bench_opt.n_threads_req; i++) {
        int t = bench_opt.threads_req[i] ? bench_opt.threads_req[i] : bench_max_threads();
        int dup = 0;
        for (int j = 0; j < p->n_thr; j++)
            dup |= p->threads[j] == t;
        if (!dup)
            p->threads[p->n_thr++] = t;
    }
    int t_max = 1;
    for (int i = 0; i < p->n_thr; i++)
        t_max = p->threads[i] > t_max ? p->threads[i] : t_max;
    make_sets(p);

    bench_print_machine(p, auto_kernels);
    double machine_peak[MAX_LIST] = {0};
    bench_measure_peaks(p->threads, p->n_thr, machine_peak);
    for (int s = 0; s < p->n_sets; s++)
        for (int t = 0; t < p->n_thr; t++)
            p->peak[s][t] = p->by_variant[s] ? bench_level_peak(p->isas[s], t) : machine_peak[t];
    for (int t = 0; t < p->n_thr; t++)
        p->dot_peak[t] = bench_dot_peak(t);
    p->have_bw = bench_measure_bw(p->threads, p->n_thr, p->bw_best);
    bench_startup_probe(t_max > 1 ? t_max : (bench_num_procs() >= 2 ? 2 : 1));

    for (int s = 0; s < bench_opt.n_shapes; s++) {
        const bench_shape *sh = &bench_opt.shapes[s];
        p->n_rows += bench_shape_rows(sh) * p->n_sets * p->n_thr;
    }
    bench_print_table_header(p);
    fflush(bench_hout);
    int failed = 0;
    for (int s = 0; s < bench_opt.n_shapes; s++)
        failed |= bench_run_shape(&bench_opt.shapes[s], p);
    bench_print_footer(p);
    bench_close_outputs();
    for (int s = 0; s < p->n_sets; s++)
        for (int t = 0; t < p->n_thr; t++)
            attn_ctx_destroy(p->ctxs[s][t]);
    free(p->res);
    return failed ? 1 : 0;
}
