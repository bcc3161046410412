/* Sharded-cache decode over MPI ranks: a KV cache too long for one machine, cut into P contiguous shards of F16 keys
 * and values, one per rank. For each new token every rank attends its query (broadcast from rank 0) to its shard
 * with attn_sdpa (explicit positions, lse out); rank 0 gathers the P partial outputs and merges them with attn_merge
 * in rank order, so the result does not depend on message timing. MPI moves only the query and the (out, lse) rows;
 * attn does all the math.
 *
 * Rank 0 checks the merged output against one attn_sdpa over the whole F16 cache (the v0 tolerance,
 * 2e-5 * max(1, |ref|)) and prints the time per token. Exit status 0 only if it matched.
 *
 *   mpirun -np 4 examples/mpi/sharded_decode [tokens [heads [kv_heads [head_dim [steps]]]]]
 *   (default 1048576 tokens, 8/1 heads, head_dim 64, 4 decode steps)
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "mpi_common.h"

/* IEEE half of x (|x| <= 1 here, normal or zero after rounding to nearest even; subnormals rounded too). */
static uint16_t to_half(float x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    const double a = fabs((double)x);
    if (a < ldexp(1.0, -14)) /* subnormal range: multiples of 2^-24 */
        return sign | (uint16_t)nearbyint(ldexp(a, 24));
    int e;
    const double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
    double r = nearbyint(ldexp(m, 11));  /* 11 significant bits */
    if (r >= 2048)
        r /= 2, e++;
    return sign | (uint16_t)((e + 14) << 10 | ((unsigned)r & 1023));
}

/* [heads][n][d] F16 of tokens [t0, t0 + n) of tensor `tensor`. */
static uint16_t *make_half(uint64_t tensor, size_t heads, size_t t0, size_t n, size_t d)
{
    uint16_t *p = malloc(heads * n * d * sizeof *p);
    if (!p)
        return NULL;
    for (size_t h = 0; h < heads; h++)
        for (size_t t = 0; t < n; t++)
            for (size_t c = 0; c < d; c++)
                p[(h * n + t) * d + c] = to_half(value(tensor, h, t0 + t, c));
    return p;
}

int main(int argc, char **argv)
{
    int rank, P;
    mpi_start(&argc, &argv, &rank, &P);
    const size_t T = arg(argc, argv, 1, (size_t)1 << 20), H = arg(argc, argv, 2, 8), HK = arg(argc, argv, 3, 1),
                 d = arg(argc, argv, 4, 64), steps = arg(argc, argv, 5, 4);
    if (T < (size_t)P || !H || !HK || !d || H % HK || !steps) {
        if (rank == 0)
            fprintf(stderr, "sharded_decode: need tokens >= ranks, kv_heads dividing heads, head_dim and steps >= 1\n");
        MPI_Finalize();
        return 2;
    }
    attn_ctx *ctx = NULL;
    if (attn_ctx_create(&ctx, NULL) != ATTN_OK)
        MPI_Abort(MPI_COMM_WORLD, 2);
    /* Shard r: tokens [t0, t0 + n), as even as P allows. */
    const size_t t0 = T * (size_t)rank / (size_t)P, n = T * (size_t)(rank + 1) / (size_t)P - t0;
    uint16_t *k = make_half(1, HK, t0, n, d), *v = make_half(2, HK, t0, n, d);
    float *q = malloc(H * d * sizeof(float)), *part = malloc(H * (d + 1) * sizeof(float)); /* out rows, then lse */
    float *parts = rank == 0 ? malloc((size_t)P * H * (d + 1) * sizeof(float)) : NULL;
    if (!k || !v || !q || !part || (rank == 0 && !parts)) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    int ok = 1;
    double t_steps = 0, err = 0;
    for (size_t s = 0; s < steps; s++) {
        /* The query of the token at position T - 1 (a new one each step), made by rank 0 and sent to all. */
        if (rank == 0)
            for (size_t i = 0; i < H * d; i++)
                q[i] = value(100 + s, i / d, T - 1, i % d);
        MPI_Barrier(MPI_COMM_WORLD);
        const double ts = MPI_Wtime();
        MPI_Bcast(q, (int)(H * d), MPI_FLOAT, 0, MPI_COMM_WORLD);
        const attn_sdpa_desc shard = {
            .batch = 1, .n_heads = H, .n_kv_heads = HK, .q_len = 1, .kv_len = n, .head_dim = d,
            .mask = ATTN_MASK_CAUSAL, .kv_dtype = ATTN_F16, .positions = 1, .q_pos0 = T - 1, .kv_pos0 = t0,
            .lse = part + H * d,
        };
        if (attn_sdpa(ctx, &shard, q, k, v, part, NULL) != ATTN_OK)
            MPI_Abort(MPI_COMM_WORLD, 1);
        MPI_Gather(part, (int)(H * (d + 1)), MPI_FLOAT, parts, (int)(H * (d + 1)), MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            float *acc = parts, *alse = parts + H * d; /* merged into rank 0's slot, in rank order */
            for (int r = 1; r < P; r++) {
                float *o = parts + (size_t)r * H * (d + 1);
                if (attn_merge(H, d, acc, alse, o, o + H * d, acc, alse) != ATTN_OK)
                    MPI_Abort(MPI_COMM_WORLD, 1);
            }
        }
        t_steps += MPI_Wtime() - ts;
        if (rank == 0) { /* the check, untimed: one call over the whole cache */
            uint16_t *K = make_half(1, HK, 0, T, d), *V = make_half(2, HK, 0, T, d);
            float *ref = malloc(H * d * sizeof(float));
            const attn_sdpa_desc whole = {.batch = 1, .n_heads = H, .n_kv_heads = HK, .q_len = 1, .kv_len = T,
                                          .head_dim = d, .mask = ATTN_MASK_CAUSAL, .kv_dtype = ATTN_F16};
            if (!K || !V || !ref || attn_sdpa(ctx, &whole, q, K, V, ref, NULL) != ATTN_OK)
                ok = 0;
            for (size_t i = 0; ok && i < H * d; i++) {
                const double e = fabs((double)parts[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
                err = e > err ? e : err;
            }
            free(K), free(V), free(ref);
        }
    }
    if (rank == 0) {
        ok = ok && err <= 2e-5;
        printf("sharded_decode: %d ranks, %zu tokens of F16 K/V (%.1f MB per rank), %zu/%zu heads, head_dim %zu, "
               "isa %s\n", P, T, 4.0 * (double)HK * (double)(T / (size_t)P) * (double)d / 1e6, H, HK, d,
               attn_isa_name(attn_ctx_isa(ctx)));
        printf("sharded_decode: %.2f ms per token (%zu steps: broadcast, shard attention, gather, merge)\n",
               1e3 * t_steps / (double)steps, steps);
        printf("sharded_decode: max error against one attn_sdpa over the whole cache %.3g (tolerance 2e-05): %s\n",
               err, ok ? "ok" : "FAILED");
    }
    MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(k), free(v), free(q), free(part), free(parts);
    attn_ctx_destroy(ctx);
    MPI_Finalize();
    return ok ? 0 : 1;
}
