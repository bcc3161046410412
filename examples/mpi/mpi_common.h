/* What the MPI examples share: inputs made from global indices alone (every rank makes its own shard, rank 0 the
 * whole tensor, with the same values), integer arguments, and the start of an MPI program. */
#ifndef ATTN_EXAMPLES_MPI_COMMON_H
#define ATTN_EXAMPLES_MPI_COMMON_H
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>

/* Element (h, t, c) of tensor number `tensor`, uniform in [-1, 1). */
static float value(uint64_t tensor, uint64_t h, uint64_t t, uint64_t c)
{
    uint64_t x = tensor * 0x9e3779b97f4a7c15ull ^ h * 0xbf58476d1ce4e5b9ull ^ t * 0x94d049bb133111ebull ^ c;
    x ^= x >> 31, x *= 0xd6e8feb86659fd39ull, x ^= x >> 29;
    return (float)((double)(x >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* argv[i] as an integer, or def when it is not given. */
static size_t arg(int argc, char **argv, int i, size_t def)
{
    return argc > i ? (size_t)strtoull(argv[i], NULL, 10) : def;
}

static void mpi_start(int *argc, char ***argv, int *rank, int *size)
{
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
}
#endif
