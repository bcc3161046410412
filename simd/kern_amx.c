/* The AMX kernel table (Intel Sapphire Rapids and later): the AVX-512 table's slots (compiled once, in
 * kern_avx512.c) for ATTN_MATH_F32, and for ATTN_MATH_BF16 both products on AMX-BF16 tiles (tdpbf16ps: a 16x32
 * bfloat16 tile times a 32x16 one into 16x16 fp32 sums), the softmax on AVX-512 between them. Blocks of 32 query
 * rows x 32 keys (scores) or 32 output columns (P.V) keep four accumulator tiles, two A and two B tiles: each tile
 * load feeds two products. What does not fill whole tiles (the last rows of a block, a key panel or key pairs past
 * the last 32, dimensions past the last 32, keys only some rows of a group see) runs through the vdpbf16ps kernels
 * of tile_bf16p.h, so the operand layouts are kernels.h's bf16p ones and packing is the avx512bf16 table's.
 * Compiled with the avx512bf16 flags and -mamx-tile -mamx-bf16; runs only after attn_cpu_flags() saw AMX-TILE,
 * AMX-BF16, the OS saving tile state and Linux granting this process the tile data (arch_prctl), and AVX512_BF16.
 * Every call loads its own tile configuration and releases the tiles before it returns.
 *
 * With -DATTN_AMX_EMULATE (configure --enable-amx-emulation, tests only) the tile instructions are C functions
 * following Intel's pseudo-code (amx_emul.h), so the kernels' layouts and shapes run through the whole test suite on
 * a CPU without AMX; real tiles are checked only on a machine that has them. */
#include "vec_avx512.h"
#include "block_avx512.h"
#define ATTN_SFX amx
#define ATTN_KERNELS_ISA ATTN_ISA_AMX
#define ATTN_SLOTS_OF avx512
#include "kernels.h"
ATTN_DECL_PACK_BF16P(attn_pack_bf16p_avx512bf16);
ATTN_DECL_SCORES(attn_scores_rows_bf16p_avx512bf16);
ATTN_DECL_PV(attn_pv_rows_bf16p_avx512bf16);
static ATTN_DECL_SCORES(attn_scores_bf16p_amx_tiles);
static ATTN_DECL_PV(attn_pv_bf16p_amx_tiles);
#define ATTN_EXTRA_SLOTS                                                                                        \
    .scores_bf16p = attn_scores_bf16p_amx_tiles, .pv_bf16p = attn_pv_bf16p_amx_tiles,                          \
    .pack_bf16p = attn_pack_bf16p_avx512bf16, .scores_rows_bf16p = attn_scores_rows_bf16p_avx512bf16,           \
    .pv_rows_bf16p = attn_pv_rows_bf16p_avx512bf16,
#include "tile_simd.h"
#include "vec_avx512bf16.h"
#include "tile_bf16p.h"

#ifdef ATTN_AMX_EMULATE
#include "amx_emul.h"
#endif

/* Tiles: 0-3 accumulators (C[row half][column half]), 4-5 A (the two 16-row halves), 6-7 B (the two 16-column
 * halves); every tile 16 rows of 64 bytes. */
#define T_C00 0 /* numbers, not enum constants: GCC pastes them into the instruction's register name */
#define T_C01 1
#define T_C10 2
#define T_C11 3
#define T_A0 4
#define T_A1 5
#define T_B0 6
#define T_B1 7
#define AMX_R 16 /* rows per tile */
#define AMX_W 16 /* 32-bit words per tile row: 16 fp32 sums, or 16 bfloat16 pairs */

/* The 64-byte tile configuration (palette 1): bytes 16.. hold each tile's bytes per row, 48.. its rows. */
typedef struct attn_amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} attn_amx_cfg;
_Static_assert(sizeof(attn_amx_cfg) == 64, "AMX tile configuration is 64 bytes");

/* Every tile the same shape, so one constant configuration serves every call. */
static const attn_amx_cfg attn_amx_cfg_all = {
    .palette = 1,
    .colsb = {AMX_W * 4, AMX_W * 4, AMX_W * 4, AMX_W * 4, AMX_W * 4, AMX_W * 4, AMX_W * 4, AMX_W * 4},
    .rows = {AMX_R, AMX_R, AMX_R, AMX_R, AMX_R, AMX_R, AMX_R, AMX_R},
};

/* GCC 12's tileloadd does not tell the compiler it reads memory: a compiler barrier before tile loads keeps the
 * stores that wrote their operands ahead of them. */
#define ATTN_AMX_BARRIER() __asm__ volatile("" ::: "memory")

/* ---- scores: s = scale * (q . k) ---- */

/* Rows r0..r0+32 x keys j0..j0+32 over the first d2f pair words (a multiple of 16), unscaled, into s. */
static void attn_amx_scores_block(const attn_tile_args *a, size_t r0, size_t j0, size_t d2, size_t d2f)
{
    const uint32_t *q = (const uint32_t *)(const void *)a->q + r0 * d2, *kt = a->kt;
    const size_t qs = d2 * 4, ss = a->nkp * 4;
    ATTN_AMX_BARRIER();
    _tile_zero(T_C00);
    _tile_zero(T_C01);
    _tile_zero(T_C10);
    _tile_zero(T_C11);
    for (size_t c = 0; c < d2f; c += AMX_W) {
        _tile_loadd(T_A0, q + c, qs);
        _tile_loadd(T_A1, q + AMX_R * d2 + c, qs);
        _tile_loadd(T_B0, kt + ATTN_KP(j0, c, d2), AMX_W * 4); /* 16 pair rows of one key panel */
        _tile_loadd(T_B1, kt + ATTN_KP(j0 + ATTN_PAD, c, d2), AMX_W * 4);
        _tile_dpbf16ps(T_C00, T_A0, T_B0);
        _tile_dpbf16ps(T_C01, T_A0, T_B1);
        _tile_dpbf16ps(T_C10, T_A1, T_B0);
        _tile_dpbf16ps(T_C11, T_A1, T_B1);
    }
    float *s = a->s + r0 * a->nkp + j0;
    _tile_stored(T_C00, s, ss);
    _tile_stored(T_C01, s + AMX_W, ss);
    _tile_stored(T_C10, s + AMX_R * a->nkp, ss);
    _tile_stored(T_C11, s + AMX_R * a->nkp + AMX_W, ss);
}

/* The same block's pair words d2f..d2 (vdpbf16ps, onto the tile sums), then the scale. */
static void attn_amx_scores_finish(const attn_tile_args *a, size_t r0, size_t j0, size_t d2, size_t d2f)
{
    const uint32_t *q = (const uint32_t *)(const void *)a->q, *kt = a->kt;
    const V sc = V_BCAST(a->scale);
    for (size_t r = r0; r < r0 + 2 * AMX_R; r++) {
        float *s = a->s + r * a->nkp + j0;
        V acc0 = V_LOAD(s), acc1 = V_LOAD(s + VW);
        for (size_t c = d2f; c < d2; c++) {
            const W x = W_BCAST(q[r * d2 + c]);
            acc0 = V_DP(acc0, x, W_LOAD(kt + ATTN_KP(j0, c, d2)));
            acc1 = V_DP(acc1, x, W_LOAD(kt + ATTN_KP(j0 + ATTN_PAD, c, d2)));
        }
        V_STORE(s, V_MUL(acc0, sc));
        V_STORE(s + VW, V_MUL(acc1, sc));
    }
}

static ATTN_DECL_SCORES(attn_scores_bf16p_amx_tiles)
{
    if (a->rows < 2 * AMX_R || a->nkp < 2 * ATTN_PAD) {
        ATTN_FN(scores_bf16p)(a); /* decode-sized: vdpbf16ps */
        return;
    }
    const size_t d2 = (a->d + 1) / 2, d2f = d2 / AMX_W * AMX_W;
    _tile_loadconfig(&attn_amx_cfg_all);
    size_t r0 = 0;
    for (; r0 + 2 * AMX_R <= a->rows; r0 += 2 * AMX_R) {
        size_t j0 = 0;
        for (; j0 + 2 * ATTN_PAD <= a->nkp; j0 += 2 * ATTN_PAD) {
            if (attn_sc_unseen(a, r0, j0, j0 + 2 * ATTN_PAD, 2 * AMX_R))
                continue;
            attn_amx_scores_block(a, r0, j0, d2, d2f);
            attn_amx_scores_finish(a, r0, j0, d2, d2f);
        }
        if (j0 < a->nkp) /* one 16-key panel left */
            for (size_t r = r0; r < r0 + 2 * AMX_R; r += 4)
                if (!attn_sc_unseen(a, r, j0, a->nkp, 4))
                    attn_scp_micro(a, r, j0, 4, 1);
    }
    _tile_release();
    attn_scp_from(a, r0);
}

/* ---- P.V: o += p . v ---- */

/* o[r0..r0+32) += p . v over key pairs [j2lo, j2hi) (a multiple of 16 of them), 32 output columns at a time (16 for
 * the last when dvp is an odd multiple of 16). */
static void attn_amx_pv_block(const attn_tile_args *a, size_t r0, size_t j2lo, size_t j2hi)
{
    const uint32_t *p = (const uint32_t *)(const void *)(a->s + r0 * a->nkp), *vp = a->vp;
    const size_t ps = a->nkp * 4, vs = a->ldv * 4, os = a->dvp * 4;
    ATTN_AMX_BARRIER();
    for (size_t c0 = 0; c0 < a->dvp; c0 += 2 * AMX_W) {
        const int two = c0 + 2 * AMX_W <= a->dvp;
        float *o = a->o + r0 * a->dvp + c0;
        _tile_loadd(T_C00, o, os);
        _tile_loadd(T_C10, o + AMX_R * a->dvp, os);
        if (two) {
            _tile_loadd(T_C01, o + AMX_W, os);
            _tile_loadd(T_C11, o + AMX_R * a->dvp + AMX_W, os);
        }
        for (size_t j2 = j2lo; j2 < j2hi; j2 += AMX_R) {
            _tile_loadd(T_A0, p + j2, ps);
            _tile_loadd(T_A1, p + AMX_R * a->nkp + j2, ps);
            _tile_loadd(T_B0, vp + j2 * a->ldv + c0, vs);
            _tile_dpbf16ps(T_C00, T_A0, T_B0);
            _tile_dpbf16ps(T_C10, T_A1, T_B0);
            if (two) {
                _tile_loadd(T_B1, vp + j2 * a->ldv + c0 + AMX_W, vs);
                _tile_dpbf16ps(T_C01, T_A0, T_B1);
                _tile_dpbf16ps(T_C11, T_A1, T_B1);
            }
        }
        _tile_stored(T_C00, o, os);
        _tile_stored(T_C10, o + AMX_R * a->dvp, os);
        if (two) {
            _tile_stored(T_C01, o + AMX_W, os);
            _tile_stored(T_C11, o + AMX_R * a->dvp + AMX_W, os);
        }
    }
}

/* Rows r0..r0+32: the key pairs all of them see, in whole 16-pair steps on tiles, the pairs left of that range on
 * vdpbf16ps for the whole group, each row's ragged ends row by row (as attn_pvp_group), so no row reads a key it
 * cannot see. */
static void attn_amx_pv_group(const attn_tile_args *a, size_t r0)
{
    int clo = a->lo[r0], chi = a->hi[r0];
    for (size_t r = r0 + 1; r < r0 + 2 * AMX_R; r++) {
        clo = a->lo[r] > clo ? a->lo[r] : clo;
        chi = a->hi[r] < chi ? a->hi[r] : chi;
    }
    clo += clo % 2;
    chi -= chi % 2;
    if (clo >= chi) {
        for (size_t r = r0; r < r0 + 2 * AMX_R; r++)
            attn_pvp_row(a, r, (size_t)a->lo[r], (size_t)a->hi[r]);
        return;
    }
    const size_t j2lo = (size_t)clo / 2, j2hi = (size_t)chi / 2, j2t = j2lo + (j2hi - j2lo) / AMX_R * AMX_R;
    if (j2t > j2lo)
        attn_amx_pv_block(a, r0, j2lo, j2t);
    if (j2t < j2hi)
        for (size_t r = r0; r < r0 + 2 * AMX_R; r += 4)
            attn_pvp_pairs(a, r, j2t, j2hi, 4);
    for (size_t r = r0; r < r0 + 2 * AMX_R; r++) {
        attn_pvp_row(a, r, (size_t)a->lo[r], (size_t)clo);
        attn_pvp_row(a, r, (size_t)chi, (size_t)a->hi[r]);
    }
}

static ATTN_DECL_PV(attn_pv_bf16p_amx_tiles)
{
    if (a->rows < 2 * AMX_R) {
        ATTN_FN(pv_bf16p)(a); /* decode-sized: vdpbf16ps */
        return;
    }
    attn_pvp_pack_p(a);
    _tile_loadconfig(&attn_amx_cfg_all);
    size_t r0 = 0;
    for (; r0 + 2 * AMX_R <= a->rows; r0 += 2 * AMX_R)
        attn_amx_pv_group(a, r0);
    _tile_release();
    attn_pvp_from(a, r0);
}
