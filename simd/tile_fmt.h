/* The score and P.V kernels of one storage format, included by tile_simd.h once per format with its traits:
 * FMT (the name suffix: f32, f16, bf16), FMT_ESZ (bytes per element), FMT_LD(base, i) (VW elements from element i,
 * any alignment, widened to fp32), FMT_LDP(base, i) (the same from a 64-byte aligned key panel), FMT_PF_PANELS
 * (1: prefetch the next tile's key panels), FMT_PF_COPIES (times each next-tile value line is prefetched),
 * FMT_PVD_RB x FMT_PVD_NV (the decode P.V blocking). Every name here carries the format's suffix, so a format is
 * one more include, never a branch inside a micro-kernel. */
#define ATTN_F(name) ATTN_CAT(name##_, FMT)
/* A slot: attn_<op>_<format>_<isa suffix>, e.g. attn_scores_f16_avx512. */
#define ATTN_SLOT(op) ATTN_CAT(ATTN_CAT(attn_##op##_, FMT), ATTN_CAT(_, ATTN_SFX))

/* s[r0..r0+RB)[j0..j0+NV*VW) = q . kt over the whole head_dim, kt in this format. PF: prefetch the same lines of the
 * next tile's panels (kn: a KV cache's half or bfloat16 panels read in place) as this micro-kernel reads them;
 * fp32 panels (FMT_PF_PANELS 0) stream in order with the hardware prefetchers alone (software prefetch made D2 f32
 * 13% slower, while half panels without it were 11% slower). */
ATTN_INLINE void ATTN_F(attn_sc_micro)(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int NV,
                                       const int PF)
{
    V acc[SC_RB > SCD_RB ? SC_RB : SCD_RB][SC_NV > SCD_NV ? SC_NV : SCD_NV];
    float *s = a->s + r0 * a->nkp + j0;
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = V_ZERO();
    const size_t esz = FMT_ESZ, cl = 64 / (ATTN_PAD * esz);
    const float *q = a->q + r0 * a->d;
    size_t kt[SC_NV > SCD_NV ? SC_NV : SCD_NV]; /* element offsets of the NV panels' columns */
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
        const size_t j = j0 + (size_t)v * VW;
        kt[v] = j / ATTN_PAD * a->d * ATTN_PAD + j % ATTN_PAD;
    }
    const int pf = PF && FMT_PF_PANELS && a->kn && j0 < a->knn;
    /* A decode block of a few rows against one vector of keys has only RB accumulator chains, too few to cover the
     * FMA latency: even and odd dimensions then sum into two sets, added at the end. */
    const int two = NV == 1 && RB <= 4;
    V acc2[SC_RB > SCD_RB ? SC_RB : SCD_RB];
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
        acc2[r] = V_ZERO();
    size_t c = 0;
    for (; two && c + 2 <= a->d; c += 2) {
        if (pf && c % cl == 0)
            __builtin_prefetch((const char *)a->kn + (kt[0] + c * ATTN_PAD) * esz, 0, 2);
        if (pf && (c + 1) % cl == 0)
            __builtin_prefetch((const char *)a->kn + (kt[0] + (c + 1) * ATTN_PAD) * esz, 0, 2);
        const V b0 = FMT_LDP(a->kt, kt[0] + c * ATTN_PAD), b1 = FMT_LDP(a->kt, kt[0] + (c + 1) * ATTN_PAD);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            acc[r][0] = V_FMA(V_BCAST(q[r * a->d + c]), b0, acc[r][0]);
            acc2[r] = V_FMA(V_BCAST(q[r * a->d + c + 1]), b1, acc2[r]);
        }
    }
    for (; c < a->d; c++) {
        if (pf && c % cl == 0)
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                __builtin_prefetch((const char *)a->kn + (kt[v] + c * ATTN_PAD) * esz, 0, 2);
        V b[SC_NV > SCD_NV ? SC_NV : SCD_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = FMT_LDP(a->kt, kt[v] + c * ATTN_PAD);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const V x = V_BCAST(q[r * a->d + c]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_FMA(x, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
        if (two)
            acc[r][0] = V_ADD(acc[r][0], acc2[r]);
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(s + r * a->nkp + v * VW, a->ksc ? V_MUL(acc[r][v], V_LOADU(a->ksc + j0 + v * VW)) : acc[r][v]);
}

/* One row group against every slice of keys it sees: its queries stay in L1, each score is stored once, and the
 * K panels stream from L2 (a 64-key slice is 32 KiB at head_dim 128). The other order (64-dim passes over a K
 * slice kept in L1 while every row group went by, scores reloaded and summed) was P2 1-2%, P3 1% and AVX2 P2
 * 2-3% slower (best of 4 interleaved 1-thread runs). */
ATTN_INLINE void ATTN_F(attn_sc_rows)(const attn_tile_args *a, size_t r0, const int RB, const int NV, const int PF)
{
    size_t j0 = 0;
    for (; j0 + NV * VW <= a->nkp; j0 += NV * VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + NV * VW, RB))
            ATTN_F(attn_sc_micro)(a, r0, j0, RB, NV, PF);
    for (; j0 < a->nkp; j0 += VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + VW, RB))
            ATTN_F(attn_sc_micro)(a, r0, j0, RB, 1, PF);
}

/* Every row group against the tile; the first group issues the next tile's prefetches (decode: the only one,
 * with one panel per micro-kernel). */
ATTN_SLOT_LINK ATTN_DECL_SCORES(ATTN_SLOT(scores))
{
    if (a->rows <= SCD_RB) {
#define ATTN_SCD(RB) ATTN_F(attn_sc_rows)(a, 0, RB, SCD_NV, 1)
        ATTN_TAIL(a->rows, SCD_RB + 1, ATTN_SCD)
#undef ATTN_SCD
        return;
    }
    size_t r0 = 0;
    for (; r0 + SC_RB <= a->rows; r0 += SC_RB)
        if (r0 == 0)
            ATTN_F(attn_sc_rows)(a, r0, SC_RB, SC_NV, 1);
        else
            ATTN_F(attn_sc_rows)(a, r0, SC_RB, SC_NV, 0);
#define ATTN_SC_TAIL(RB) ATTN_F(attn_sc_rows)(a, r0, RB, SC_NV, r0 == 0)
    ATTN_TAIL(a->rows - r0, SC_RB, ATTN_SC_TAIL)
#undef ATTN_SC_TAIL
}


/* s[r0..r0+RB)[j0..j0+JB) = q . k, one key row at a time, front to back: the hardware prefetchers follow each row's
 * lines in order (reading fp32 rows interleaved, a line of each in turn, made D1 f32 40% slower). PF: prefetch the
 * next tile's key rows j0..j0+JB (the first row group of a tile does), one cache line per line read here. */
ATTN_INLINE void ATTN_F(attn_sr_micro)(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int JB,
                               const int PF)
{
    const size_t esz = FMT_ESZ;
    const size_t kn = PF && a->kn && j0 < a->knn ? a->knn - j0 : 0; /* next-tile rows from j0 on that exist */
    const char *knp = kn ? (const char *)a->kn + j0 * a->ldk * esz : NULL;
    const int NA = (RB * JB + VW - 1) / VW * VW; /* accumulators, zero-padded to whole reductions */
    V acc[SR_NACC];
#pragma GCC unroll 64
    for (int i = 0; i < NA; i++)
        acc[i] = V_ZERO();
#pragma GCC unroll 64
    for (int t = 0; t < JB; t++)
        for (size_t c = 0; c < a->d; c += VW) {
            const V k = FMT_LD(a->kr, (j0 + t) * a->ldk + c);
            if (c % (64 / esz) == 0 && (size_t)t < kn)
                __builtin_prefetch(knp + ((size_t)t * a->ldk + c) * esz, 0, 2);
#pragma GCC unroll 16
            for (int r = 0; r < RB; r++)
                acc[r * JB + t] = V_FMA(V_LOAD(a->q + (r0 + r) * a->d + c), k, acc[r * JB + t]);
        }
    attn_sr_store(a, r0, j0, RB, JB, acc);
}

/* Rows r0..r0+RB against every key of the tile, JB keys at a time, then the leftover keys one by one. */
ATTN_INLINE void ATTN_F(attn_sr_rows)(const attn_tile_args *a, size_t r0, const int RB, const int JB, const int PF)
{
    size_t j0 = 0;
    for (; j0 + (size_t)JB <= a->nk; j0 += (size_t)JB)
        ATTN_F(attn_sr_micro)(a, r0, j0, RB, JB, PF);
    for (; j0 < a->nk; j0++)
        ATTN_F(attn_sr_micro)(a, r0, j0, RB, 1, PF);
    for (int r = 0; r < RB; r++)
        memset(a->s + (r0 + r) * a->nkp + a->nk, 0, (a->nkp - a->nk) * sizeof(float));
}

/* Up to SR_RB rows (a GQA group at one position: the usual decode block) in one pass over the keys, taking more
 * keys per step when there are fewer rows; more rows go SR_RB at a time, the first group issuing the prefetches. */
ATTN_SLOT_LINK ATTN_DECL_SCORES(ATTN_SLOT(scores_rows))
{
    if (a->rows <= SR_RB) {
#define ATTN_SR_ONE(RB) ATTN_F(attn_sr_rows)(a, 0, RB, SR_JBF(RB), 1)
        if (a->rows == SR_RB)
            ATTN_SR_ONE(SR_RB);
        else
            ATTN_TAIL(a->rows, SR_RB, ATTN_SR_ONE)
#undef ATTN_SR_ONE
        return;
    }
    size_t r0 = 0;
    for (; r0 + SR_RB <= a->rows; r0 += SR_RB)
        if (r0 == 0)
            ATTN_F(attn_sr_rows)(a, r0, SR_RB, SR_JB, 1);
        else
            ATTN_F(attn_sr_rows)(a, r0, SR_RB, SR_JB, 0);
#define ATTN_SR_TAIL(RB) ATTN_F(attn_sr_rows)(a, r0, RB, SR_JB, 0)
    ATTN_TAIL(a->rows - r0, SR_RB, ATTN_SR_TAIL)
#undef ATTN_SR_TAIL
}

/* o[r0..r0+RB)[c0..c0+NV*VW) += sum_{j in [jlo, jhi)} s[r][j] * v[j] */
ATTN_INLINE void ATTN_F(attn_pv_micro)(const attn_tile_args *a, size_t r0, size_t c0, size_t jlo, size_t jhi,
                                       const int RB, const int NV, const int PF)
{
    V acc[PV_RBMAX][PV_NVMAX];
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            acc[r][v] = V_LOAD(a->o + (r0 + r) * a->dvp + c0 + v * VW);
    const float *p = a->s + r0 * a->nkp;
    /* PF (decode-sized blocks): each full row group and column strip prefetches its share of the lines of the next
     * tile's value row j as it reads value row j, so the prefetches spread over the whole P.V. fp32 rows have each
     * line issued twice, by two different calls: fp32 decode is bound by memory, the prefetches outrun it and some
     * are dropped, and the second issue re-requests those (D2 f32 50.7 -> 45.5 ns per key and KV head; f16 lost
     * 3% the same way). */
    const size_t esz = FMT_ESZ, strip = (size_t)NV * VW;
    const char *pfp = NULL;
    size_t pfn = 0, pfj = jlo; /* pfn lines of next row j from pfp + j * ldv, for j < pfj */
    const size_t ngr = PF ? a->rows / (size_t)RB : 0, nst = PF ? a->dvp / strip : 0, nsl = ngr * nst;
    if (PF && a->vn && r0 + (size_t)RB <= ngr * RB && c0 + strip <= nst * strip) {
        const size_t sl = r0 / (size_t)RB * nst + c0 / strip, lines = (a->dvp * esz + 63) / 64;
        const size_t copies = FMT_PF_COPIES, from = lines * copies * sl / nsl;
        pfn = lines * copies * (sl + 1) / nsl - from;
        pfn = pfn > lines - from % lines ? lines - from % lines : pfn; /* within the row */
        pfp = (const char *)a->vn + from % lines * 64;
        pfj = a->knn < jhi ? a->knn : jhi;
    }
    const size_t pfs = a->ldv * esz;
    for (size_t j = jlo; j < jhi; j++) {
        /* Up to 4 lines straight-line, the rest (wide fp32 slices) in a loop: as a loop of pfn trips (2 lines
         * for f16 at head_dim 128), the prefetches cost P.V 1.7 cycles per key of 4 rows even with every line
         * in L2 (35.4 -> 32.7). */
        if (PF && j < pfj) {
            const char *pp = pfp + j * pfs;
#pragma GCC unroll 4
            for (size_t l = 0; l < 4; l++)
                if (l < pfn)
                    __builtin_prefetch(pp + l * 64, 0, 2);
            for (size_t l = 4; l < pfn; l++)
                __builtin_prefetch(pp + l * 64, 0, 2);
        }
        V b[PV_NVMAX];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = FMT_LD(a->vp, j * a->ldv + c0 + (size_t)v * VW);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const V x = V_BCAST(p[r * a->nkp + j]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_FMA(x, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(a->o + (r0 + r) * a->dvp + c0 + v * VW, acc[r][v]);
}

ATTN_INLINE void ATTN_F(attn_pv_rows)(const attn_tile_args *a, size_t r0, size_t jlo, size_t jhi, const int RB,
                                      const int NV, const int PF)
{
    if (jlo >= jhi)
        return;
    size_t c0 = 0;
    for (; c0 + NV * VW <= a->dvp; c0 += NV * VW)
        ATTN_F(attn_pv_micro)(a, r0, c0, jlo, jhi, RB, NV, PF);
    for (; c0 < a->dvp; c0 += VW)
        ATTN_F(attn_pv_micro)(a, r0, c0, jlo, jhi, RB, 1, PF);
}

/* Rows r0..r0+RB: the keys every one of them sees go through the blocked kernel; each row's ragged ends (causal
 * and window boundaries) go row by row, so no row ever reads a key it cannot see. */
ATTN_INLINE void ATTN_F(attn_pv_group)(const attn_tile_args *a, size_t r0, const int RB, const int NV, const int PF)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (int r = 1; r < RB; r++) {
        clo = a->lo[r0 + r] > clo ? a->lo[r0 + r] : clo;
        chi = a->hi[r0 + r] < chi ? a->hi[r0 + r] : chi;
    }
    if (clo >= chi) {
        for (int r = 0; r < RB; r++)
            ATTN_F(attn_pv_rows)(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)a->hi[r0 + r], 1, NV, PF);
        return;
    }
    ATTN_F(attn_pv_rows)(a, r0, (size_t)clo, (size_t)chi, RB, NV, PF);
    for (int r = 0; r < RB; r++) {
        ATTN_F(attn_pv_rows)(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)clo, 1, NV, PF);
        ATTN_F(attn_pv_rows)(a, r0 + r, (size_t)chi, (size_t)a->hi[r0 + r], 1, NV, PF);
    }
}

/* Every row group of RB rows, then the tail, over column chunks of NV vectors. */
ATTN_INLINE void ATTN_F(attn_pv_blocked)(const attn_tile_args *a, const int RB, const int NV, const int PF)
{
    size_t r0 = 0;
    for (; r0 + (size_t)RB <= a->rows; r0 += (size_t)RB)
        ATTN_F(attn_pv_group)(a, r0, RB, NV, PF);
#define ATTN_PV_TAIL(R) ATTN_F(attn_pv_group)(a, r0, R, NV, PF)
    ATTN_TAIL(a->rows - r0, RB, ATTN_PV_TAIL)
#undef ATTN_PV_TAIL
}

/* Decode-sized blocks: V comes from memory once per tile, so the row groups are wide (PVD_NV vectors cover a whole
 * row of up to 128 values) and each V row is read in one piece rather than in column strips. They are compiled as
 * functions of their own, so that their prefetch arithmetic leaves the code of the larger blocks as it was (inlined
 * together, prefill P2 ran 1.3% slower). */
static __attribute__((noinline)) void ATTN_F(attn_pv_few)(const attn_tile_args *a)
{
    ATTN_F(attn_pv_blocked)(a, FMT_PVD_RB, FMT_PVD_NV, 1);
}

ATTN_SLOT_LINK ATTN_DECL_PV(ATTN_SLOT(pv))
{
    if (a->rows <= ATTN_FEW_ROWS)
        ATTN_F(attn_pv_few)(a);
    else
        ATTN_F(attn_pv_blocked)(a, PV_RB, PV_NV, 0);
}

#undef ATTN_F
#undef ATTN_SLOT
#undef FMT
#undef FMT_ESZ
#undef FMT_LD
#undef FMT_LDP
#undef FMT_PF_PANELS
#undef FMT_PF_COPIES
#undef FMT_PVD_RB
#undef FMT_PVD_NV
