/* ATTN_MATH_BF16 on bfloat16 dot-product instructions (x86 vdpbf16ps, Arm BFDOT), written once over a vocabulary the
 * ISA file defines before including it, after tile_simd.h: W (a vector of VW pair words), W_LOAD(p) (VW words from
 * a 64-byte aligned uint32_t pointer), W_BCAST(u) (one word in every lane), V_DP(acc, a, b) (lane i: acc + the
 * products of the two bfloat16 halves of word i of a and b, summed in fp32), W_EVEN(w) / W_ODD(w) (the lower /
 * upper halves widened to fp32), W_PACK2(lo, hi) (2 VW floats, already rounded to bfloat16 by V_RBF16, as VW words in
 * order), W_STOREU(p, w); optionally W_RPACK2(lo, hi), the same from unrounded floats in one conversion (it may
 * read subnormal weights as zero: the dot products read subnormal bfloat16 as zero anyway). Each dot-product
 * instruction does the work of two fp32 FMAs. Pairs run along the reduction: Q.K^T pairs adjacent dimensions, P.V
 * adjacent keys; the layouts are kernels.h's (scores_bf16p). */

/* Element offset (in words) of key j's column c2 in the pair panels of kt. */
#define ATTN_KP(j, c2, d2) ((j) / ATTN_PAD * (d2) * ATTN_PAD + (c2) * ATTN_PAD + (j) % ATTN_PAD)

/* s[r0..r0+RB)[j0..j0+VW NV) = scale * (q . k) over d2 pair words. */
ATTN_INLINE void attn_scp_micro(const attn_tile_args *a, size_t r0, size_t j0, const int RB, const int NV)
{
    V acc[SC_RB][SC_NV];
#pragma GCC unroll 16
    for (int r = 0; r < SC_RB; r++) /* whole, or GCC 12 warns of lanes NV leaves unused */
#pragma GCC unroll 16
        for (int v = 0; v < SC_NV; v++)
            acc[r][v] = V_ZERO();
    const size_t d2 = (a->d + 1) / 2;
    const uint32_t *q = (const uint32_t *)(const void *)a->q + r0 * d2, *k = a->kt;
    for (size_t c = 0; c < d2; c++) {
        W b[SC_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = W_LOAD(k + ATTN_KP(j0 + (size_t)v * VW, c, d2));
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const W x = W_BCAST(q[r * d2 + c]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_DP(acc[r][v], x, b[v]);
        }
    }
    const V sc = V_BCAST(a->scale);
    float *s = a->s + r0 * a->nkp + j0;
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(s + r * a->nkp + v * VW, V_MUL(acc[r][v], sc));
}

ATTN_INLINE void attn_scp_rows(const attn_tile_args *a, size_t r0, const int RB)
{
    size_t j0 = 0;
    for (; j0 + SC_NV * VW <= a->nkp; j0 += SC_NV * VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + SC_NV * VW, RB))
            attn_scp_micro(a, r0, j0, RB, SC_NV);
    for (; j0 < a->nkp; j0 += VW)
        if (!attn_sc_unseen(a, r0, j0, j0 + VW, RB))
            attn_scp_micro(a, r0, j0, RB, 1);
}

/* Rows r0.. to the end of the block. */
ATTN_INLINE void attn_scp_from(const attn_tile_args *a, size_t r0)
{
    for (; r0 + SC_RB <= a->rows; r0 += SC_RB)
        attn_scp_rows(a, r0, SC_RB);
#define ATTN_SCP_TAIL(RB) attn_scp_rows(a, r0, RB)
    ATTN_TAIL(a->rows - r0, SC_RB, ATTN_SCP_TAIL)
#undef ATTN_SCP_TAIL
}

static ATTN_DECL_SCORES(ATTN_FN(scores_bf16p)) { attn_scp_from(a, 0); }

/* o[r0..r0+RB)[c0..c0+VW NV) += sum over key pairs [j2lo, j2hi) of p pair . v pair; p: row r's pair words at
 * (uint32_t *)(s + r * nkp). */
ATTN_INLINE void attn_pvp_micro(const attn_tile_args *a, size_t r0, size_t c0, size_t j2lo, size_t j2hi,
                                const int RB, const int NV)
{
    V acc[PV_RB][PV_NV];
#pragma GCC unroll 16
    for (int r = 0; r < PV_RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < PV_NV; v++)
            acc[r][v] = r < RB && v < NV ? V_LOAD(a->o + (r0 + r) * a->dvp + c0 + v * VW) : V_ZERO();
    const uint32_t *p = (const uint32_t *)(const void *)(a->s + r0 * a->nkp);
    const uint32_t *vp = (const uint32_t *)a->vp + c0;
    for (size_t j2 = j2lo; j2 < j2hi; j2++) {
        W b[PV_NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            b[v] = W_LOAD(vp + j2 * a->ldv + (size_t)v * VW);
#pragma GCC unroll 16
        for (int r = 0; r < RB; r++) {
            const W x = W_BCAST(p[r * a->nkp + j2]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                acc[r][v] = V_DP(acc[r][v], x, b[v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < RB; r++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++)
            V_STORE(a->o + (r0 + r) * a->dvp + c0 + v * VW, acc[r][v]);
}

ATTN_INLINE void attn_pvp_pairs(const attn_tile_args *a, size_t r0, size_t j2lo, size_t j2hi, const int RB)
{
    if (j2lo >= j2hi)
        return;
    size_t c0 = 0;
    for (; c0 + PV_NV * VW <= a->dvp; c0 += PV_NV * VW)
        attn_pvp_micro(a, r0, c0, j2lo, j2hi, RB, PV_NV);
    for (; c0 < a->dvp; c0 += VW)
        attn_pvp_micro(a, r0, c0, j2lo, j2hi, RB, 1);
}

/* o[r] += p[r][j] v[j] for one key j whose pair partner row r cannot see: an fp32 FMA of the two bfloat16 values,
 * the same exact product the dot-product instruction forms. */
static void attn_pvp_one(const attn_tile_args *a, size_t r, size_t j)
{
    const uint32_t w = ((const uint32_t *)(const void *)(a->s + r * a->nkp))[j / 2];
    const V x = V_BCAST(attn_bf16_to_f32((uint16_t)(j % 2 ? w >> 16 : w)));
    const uint32_t *vp = (const uint32_t *)a->vp + j / 2 * a->ldv;
    for (size_t c0 = 0; c0 < a->dvp; c0 += VW) {
        const W pair = W_LOAD(vp + c0);
        float *o = a->o + r * a->dvp + c0;
        V_STORE(o, V_FMA(x, j % 2 ? W_ODD(pair) : W_EVEN(pair), V_LOAD(o)));
    }
}

/* Row r over keys [jlo, jhi): whole pairs through the dot products, a lone key at either end by itself, so the
 * row never reads a key it cannot see (a NaN or infinity there would reach it through a zero weight). */
static void attn_pvp_row(const attn_tile_args *a, size_t r, size_t jlo, size_t jhi)
{
    if (jlo >= jhi)
        return;
    if (jlo % 2)
        attn_pvp_one(a, r, jlo++);
    if (jhi > jlo && jhi % 2)
        attn_pvp_one(a, r, --jhi);
    attn_pvp_pairs(a, r, jlo / 2, jhi / 2, 1);
}

/* Rows r0..r0+RB: the key pairs every row sees through the blocked kernel, each row's ragged ends row by row. */
ATTN_INLINE void attn_pvp_group(const attn_tile_args *a, size_t r0, const int RB)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (int r = 1; r < RB; r++) {
        clo = a->lo[r0 + r] > clo ? a->lo[r0 + r] : clo;
        chi = a->hi[r0 + r] < chi ? a->hi[r0 + r] : chi;
    }
    clo += clo % 2; /* whole pairs only */
    chi -= chi % 2;
    if (clo >= chi) {
        for (int r = 0; r < RB; r++)
            attn_pvp_row(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)a->hi[r0 + r]);
        return;
    }
    attn_pvp_pairs(a, r0, (size_t)clo / 2, (size_t)chi / 2, RB);
    for (int r = 0; r < RB; r++) {
        attn_pvp_row(a, r0 + r, (size_t)a->lo[r0 + r], (size_t)clo);
        attn_pvp_row(a, r0 + r, (size_t)chi, (size_t)a->hi[r0 + r]);
    }
}

/* The softmax left fp32 weights in s; each row becomes bfloat16 pair words in place (rounded to nearest even by
 * V_RBF16, ATTN_MATH_BF16's rounding of P, the same bits as round_bf16). Words are written behind the floats still
 * to be read. */
ATTN_INLINE void attn_pvp_pack_p(const attn_tile_args *a)
{
    for (size_t r = 0; r < a->rows; r++) {
        float *s = a->s + r * a->nkp;
        uint32_t *w = (uint32_t *)(void *)s;
        for (size_t j0 = 0; j0 < a->nkp; j0 += 2 * VW) {
#ifdef W_RPACK2
            W_STOREU(w + j0 / 2, W_RPACK2(V_LOAD(s + j0), j0 + VW < a->nkp ? V_LOAD(s + j0 + VW) : V_ZERO()));
#else
            const V lo = V_RBF16(V_LOAD(s + j0));
            const V hi = j0 + VW < a->nkp ? V_RBF16(V_LOAD(s + j0 + VW)) : V_ZERO();
            W_STOREU(w + j0 / 2, W_PACK2(lo, hi));
#endif
        }
    }
}

/* Rows r0.. to the end of the block, their weights already pair words. */
ATTN_INLINE void attn_pvp_from(const attn_tile_args *a, size_t r0)
{
    for (; r0 + PV_RB <= a->rows; r0 += PV_RB)
        attn_pvp_group(a, r0, PV_RB);
#define ATTN_PVP_TAIL(RB) attn_pvp_group(a, r0, RB)
    ATTN_TAIL(a->rows - r0, PV_RB, ATTN_PVP_TAIL)
#undef ATTN_PVP_TAIL
}

static ATTN_DECL_PV(ATTN_FN(pv_bf16p))
{
    attn_pvp_pack_p(a);
    attn_pvp_from(a, 0);
}
