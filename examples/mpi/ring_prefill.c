/* Ring (sequence-parallel) causal prefill over MPI ranks, attn doing all the math and MPI only moving K/V blocks.
 *
 * A sequence of P * n tokens is cut into P blocks of n; rank r holds query block r and, at first, K/V block r. In P
 * steps every K/V block travels once around the ring: at step s rank r computes its queries against block
 * (r - s) mod P with attn_sdpa (explicit positions, lse out) while it sends that block on to rank r + 1 and receives
 * the next from rank r - 1 (MPI_Isend / MPI_Irecv into a second buffer: transfer overlaps compute). Blocks wholly
 * after the queries (causal, above the diagonal) are passed on without computing. The partial results are merged
 * with attn_merge in step order, so the result does not depend on message timing.
 *
 * Rank 0 gathers the output and compares it with one attn_sdpa over the whole sequence (the v0 tolerance,
 * 2e-5 * max(1, |ref|)); it prints the per-step compute and transfer times. Exit status 0 only if it matched.
 *
 *   mpirun -np 4 examples/mpi/ring_prefill [n_per_rank [heads [kv_heads [head_dim]]]]   (default 512 8 2 128)
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "mpi_common.h"

/* [heads][n][d] of tokens [t0, t0 + n). */
static float *make(uint64_t tensor, size_t heads, size_t t0, size_t n, size_t d)
{
    float *p = malloc(heads * n * d * sizeof *p);
    if (!p)
        return NULL;
    for (size_t h = 0; h < heads; h++)
        for (size_t t = 0; t < n; t++)
            for (size_t c = 0; c < d; c++)
                p[(h * n + t) * d + c] = value(tensor, h, t0 + t, c);
    return p;
}

int main(int argc, char **argv)
{
    int rank, P;
    mpi_start(&argc, &argv, &rank, &P);
    const size_t n = arg(argc, argv, 1, 512), H = arg(argc, argv, 2, 8), HK = arg(argc, argv, 3, 2),
                 d = arg(argc, argv, 4, 128), N = n * (size_t)P;
    if (!n || !H || !HK || !d || H % HK) {
        if (rank == 0)
            fprintf(stderr, "ring_prefill: need n, heads, kv_heads (dividing heads), head_dim >= 1\n");
        MPI_Finalize();
        return 2;
    }
    attn_ctx *ctx = NULL;
    attn_status st = attn_ctx_create(&ctx, NULL);
    if (st != ATTN_OK) {
        fprintf(stderr, "rank %d: attn_ctx_create: %s\n", rank, attn_strerror(st));
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const size_t kvn = HK * n * d, rows = H * n;
    float *q = make(0, H, (size_t)rank * n, n, d);
    float *kv[2] = {malloc(2 * kvn * sizeof(float)), malloc(2 * kvn * sizeof(float))}; /* K then V */
    float *acc = malloc(rows * d * sizeof(float)), *alse = malloc(rows * sizeof(float));
    float *part = malloc(rows * d * sizeof(float)), *plse = malloc(rows * sizeof(float));
    if (!q || !kv[0] || !kv[1] || !acc || !alse || !part || !plse) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    float *k0 = make(1, HK, (size_t)rank * n, n, d), *v0 = make(2, HK, (size_t)rank * n, n, d);
    memcpy(kv[0], k0, kvn * sizeof(float));
    memcpy(kv[0] + kvn, v0, kvn * sizeof(float));
    free(k0), free(v0);

    const int next = (rank + 1) % P, prev = (rank + P - 1) % P;
    double t_compute = 0, t_wait = 0;
    int have = 0; /* acc holds a partial result */
    MPI_Barrier(MPI_COMM_WORLD);
    const double t_start = MPI_Wtime();
    for (int s = 0; s < P; s++) {
        const int src = (rank - s + P) % P; /* the K/V block in kv[s % 2] */
        MPI_Request req[2];
        int nreq = 0;
        if (s + 1 < P) { /* pass this block on, take the next: both overlap the compute below */
            MPI_Irecv(kv[(s + 1) % 2], (int)(2 * kvn), MPI_FLOAT, prev, s, MPI_COMM_WORLD, &req[nreq++]);
            MPI_Isend(kv[s % 2], (int)(2 * kvn), MPI_FLOAT, next, s, MPI_COMM_WORLD, &req[nreq++]);
        }
        const double t0 = MPI_Wtime();
        if (src <= rank) { /* blocks after the queries are wholly masked: skipped */
            const attn_sdpa_desc desc = {
                .batch = 1, .n_heads = H, .n_kv_heads = HK, .q_len = n, .kv_len = n, .head_dim = d,
                .mask = ATTN_MASK_CAUSAL, .positions = 1, .q_pos0 = (size_t)rank * n, .kv_pos0 = (size_t)src * n,
                .lse = have ? plse : alse,
            };
            st = attn_sdpa(ctx, &desc, q, kv[s % 2], kv[s % 2] + kvn, have ? part : acc, NULL);
            if (st == ATTN_OK && have)
                st = attn_merge(rows, d, acc, alse, part, plse, acc, alse);
            if (st != ATTN_OK) {
                fprintf(stderr, "rank %d step %d: %s\n", rank, s, attn_strerror(st));
                MPI_Abort(MPI_COMM_WORLD, 1);
            }
            have = 1;
        }
        const double t1 = MPI_Wtime();
        MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
        t_compute += t1 - t0;
        t_wait += MPI_Wtime() - t1;
    }
    const double t_total = MPI_Wtime() - t_start;

    /* Rank 0 gathers the output ([H][n][d] per rank) and checks it against one call over the whole sequence. */
    float *all = rank == 0 ? malloc((size_t)P * rows * d * sizeof(float)) : NULL;
    MPI_Gather(acc, (int)(rows * d), MPI_FLOAT, all, (int)(rows * d), MPI_FLOAT, 0, MPI_COMM_WORLD);
    double stats[3] = {t_compute, t_wait, t_total}, max_stats[3];
    MPI_Reduce(stats, max_stats, 3, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    int ok = 1;
    if (rank == 0) {
        float *Q = make(0, H, 0, N, d), *K = make(1, HK, 0, N, d), *V = make(2, HK, 0, N, d);
        float *ref = malloc(H * N * d * sizeof(float));
        const attn_sdpa_desc whole = {.batch = 1, .n_heads = H, .n_kv_heads = HK, .q_len = N, .kv_len = N,
                                      .head_dim = d, .mask = ATTN_MASK_CAUSAL};
        const double tr = MPI_Wtime();
        if (!Q || !K || !V || !ref || attn_sdpa(ctx, &whole, Q, K, V, ref, NULL) != ATTN_OK) {
            fprintf(stderr, "ring_prefill: the single-process reference failed\n");
            ok = 0;
        }
        const double t_ref = MPI_Wtime() - tr;
        double err = 0;
        for (int r = 0; ok && r < P; r++)
            for (size_t h = 0; h < H; h++)
                for (size_t t = 0; t < n; t++)
                    for (size_t c = 0; c < d; c++) {
                        const double got = all[(((size_t)r * H + h) * n + t) * d + c],
                                     want = ref[(h * N + (size_t)r * n + t) * d + c];
                        const double e = fabs(got - want) / fmax(1.0, fabs(want));
                        err = e > err ? e : err;
                    }
        ok = ok && err <= 2e-5;
        const double kv_bytes = 2.0 * (double)kvn * sizeof(float);
        printf("ring_prefill: %d ranks x %zu tokens (%zu total), %zu/%zu heads, head_dim %zu, isa %s\n", P, n, N, H,
               HK, d, attn_isa_name(attn_ctx_isa(ctx)));
        printf("ring_prefill: %.1f ms in all (slowest rank), per rank at most %.1f ms computing and %.1f ms waiting "
               "for K/V; one K/V block is %.2f MB; one process: %.1f ms\n", 1e3 * max_stats[2], 1e3 * max_stats[0],
               1e3 * max_stats[1],
               kv_bytes / 1e6, 1e3 * t_ref);
        printf("ring_prefill: max error against one attn_sdpa over the whole sequence %.3g (tolerance 2e-05): %s\n",
               err, ok ? "ok" : "FAILED");
        free(Q), free(K), free(V), free(ref), free(all);
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(q), free(kv[0]), free(kv[1]), free(acc), free(alse), free(part), free(plse);
    attn_ctx_destroy(ctx);
    MPI_Finalize();
    return ok ? 0 : 1;
}
