/* attn_sdpa: validation, then the online-softmax driver. Work items form a list ragged over sequences: (sequence,
 * KV head, block of query positions, key chunk); the query heads of a GQA group are folded into the rows of one
 * block so they share every packed K/V tile. Each item is computed by one thread in a fixed order, so results do
 * not depend on the thread count. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef ATTN_HAVE_OPENMP
#include <omp.h>
#endif

#include "half.h"
#include "internal.h"

/* Most rows a block may have for attn_sdpa to read keys as rows in place (scores_rows); larger blocks
 * transpose each tile once and run the register-blocked score kernel. */
#define ATTN_KR_ROWS 16

/* Consecutive split-KV items one thread takes at a time: at most one KV head's chunks, and at least four runs per
 * thread when there are enough items. */
static size_t attn_chunk_run(size_t items, size_t nchunks, int nt)
{
    size_t run = items / ((size_t)nt * 4);
    run = run > nchunks ? nchunks : run;
    return run < 1 ? 1 : run;
}

/* One sequence's share of the work list: items first .. first + nqb * kv_heads * nchunks - 1. Sequences may differ
 * in their number of chunks (kv_valid cuts a sequence's keys; a paged pool's sequences differ in length), so the
 * list is ragged and a batch of unequal sequences is still one parallel region. */
typedef struct attn_work {
    size_t first, nqb, nchunks;
    int split;    /* split-KV: the items store partial results, merged per KV head afterwards */
    size_t pfirst; /* with split: the partial result of item first + i is number pfirst + i */
} attn_work;

/* One sequence of a batched call (attn_batch_attend): its lengths, its first row of q, out and lse, its pages. */
typedef struct attn_bseq {
    size_t q_len, kv_len, row0;
    const uint32_t *pt;
} attn_bseq;

/* A work item: the rows of query block qb of KV head kvh of sequence b, against key chunk c. */
typedef struct attn_item {
    size_t b, kvh, qb, c;
} attn_item;

static attn_strides attn_layout_strides(attn_layout layout, size_t heads, size_t len, size_t width)
{
    attn_strides st;
    if (layout == ATTN_LAYOUT_BHSD) {
        st.s = width;
        st.h = len * width;
    } else {
        st.h = width;
        st.s = heads * width;
    }
    st.b = heads * len * width;
    return st;
}

/* Everything a block needs, resolved once per call. */
typedef struct attn_job {
    const attn_kernels *kern;
    const void *q;
    attn_kv_src src;                /* where the keys and values live */
    void *out;
    float *probs;
    attn_dtype qdt, odt;            /* element types of q and out */
    int round_q, round_kv;          /* ATTN_MATH_BF16: round Q (K and V) to bfloat16 as they are widened (inputs
                                       stored as bfloat16 already are) */
    int round_p;                    /* ATTN_MATH_BF16: the softmax stores its weights rounded (attn_tile_args) */
    int bf16p;                      /* ATTN_MATH_BF16 on the table's bfloat16 dot-product slots: q, K and V in
                                       bfloat16 pairs (kernels.h scores_bf16p), always packed */
    int bf16r;                      /* the same for a decode-sized block whose K and V are bfloat16 rows read in
                                       place (scores_rows_bf16p, pv_rows_bf16p) */
    int dot;                        /* bf16p or bf16r: q rows are pair words, and the P.V slot rounds P */
    int bf16p_ok;                   /* the table has the bf16p slots and the math wants them */
    int i8f;                        /* ATTN_I8 read as stored integers: scores and weights take the row scales
                                       (not in ATTN_MATH_BF16, which rounds the dequantised values) */
    size_t bkv0;                    /* keys per tile before the cut to kv_len */
    const attn_ctx *ctx;
    const attn_bseq *bseq;          /* NULL, or a batched call's sequences: attn_view gives each its own job */
    size_t part_rows;               /* rows of a split-KV partial result */
    const int32_t *kv_valid;
    int64_t qpos0, kpos0;           /* positions of query 0 and key 0 (attn_sdpa_desc.positions) */
    float *lse;                     /* NULL, or row (b, h, i) at lse_st[0] * b + lse_st[1] * h + lse_st[2] * i */
    size_t lse_st[3];
    const float *sinks;             /* NULL or [heads] */
    float softcap;                  /* score modifiers, as attn_sdpa_desc; mods: any of them */
    const float *slopes, *bias;
    size_t bias_st[3];
    int mods;
    attn_strides qs, os;
    size_t batch, heads, kv_heads, group, q_len, kv_len, d, dv, dvp, window;
    int causal;
    float scale;
    size_t nq, rows_max, bkv, bkvp; /* query positions per block, rows per block, keys per tile */
    size_t scratch_floats;          /* per thread */
    float *packed;                  /* NULL, or every K/V tile packed once per call: [batch][kv_heads][tile] */
    int k_in_place;                 /* read K where it is stored: one query block per KV head, and either a cache's
                                       panels or few rows (decode); a larger block packs its own tiles, since the
                                       key-row kernel is built for a GQA group, not for a prefill block */
    int v_in_place;                 /* the shared packing holds K only: V is contiguous fp32 rows of whole vectors,
                                       read where they are stored (copying them cost P1-P3 2-4% of their time; rows
                                       a multiple of 4 KiB apart, as BSHD gives, alias in L1: AVX2 P2 was 18%
                                       slower reading those in place) */
    size_t ntiles, tile_floats;
    size_t chunk, nchunks;          /* split-KV: keys per chunk (a multiple of bkv) and the most chunks of any
                                       sequence; nchunks 1: off */
    const attn_work *work;          /* [batch + 1]: each sequence's items; work[batch].first = all items */
    float *part;                    /* split-KV partial results, part_floats per (batch, KV head, chunk) */
    size_t part_floats;
} attn_job;

/* Per-thread scratch, carved from one 64-byte aligned allocation; every piece a multiple of 16 floats. */
typedef struct attn_scratch {
    float *q, *s, *kt, *vp, *o, *m, *l;
    float *kr; /* one key row gathered from a cache's panels or stored as half/bfloat16, widened to fp32, for the
                  transposing pack */
    int *lo, *hi;
    int64_t *alo, *ahi; /* absolute visible key range per row */
    float *slope;       /* score modifiers per row (attn_score_mods) */
    int64_t *rel;
    const float **brow;
    float *fs; /* ATTN_I8: one tile's key or value row scales, gathered across pages */
} attn_scratch;

/* Sizes of the pieces in floats, in the order attn_scratch_carve lays them out; 0 on overflow. */
static size_t attn_scratch_size(const attn_job *j)
{
    size_t parts[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, total = 0;
    if (attn_mul_overflow(j->rows_max, j->d, &parts[0]) || attn_mul_overflow(j->rows_max, j->bkvp, &parts[1]) ||
        attn_mul_overflow(j->d, j->bkvp, &parts[2]) || attn_mul_overflow(j->bkvp, j->dvp, &parts[3]) ||
        attn_mul_overflow(j->rows_max, j->dvp, &parts[4]))
        return 0;
    parts[5] = parts[6] = parts[7] = parts[8] = j->rows_max; /* m, l, lo, hi */
    parts[9] = parts[10] = 2 * j->rows_max;                  /* alo, ahi: int64 */
    parts[11] = j->d > j->dv ? j->d : j->dv; /* kr: one key or value row, widened, for the packs */
    parts[12] = j->rows_max;                 /* slope */
    parts[13] = parts[14] = 2 * j->rows_max; /* rel, brow: 8 bytes each */
    parts[15] = j->bkvp;                     /* fs */
    _Static_assert(sizeof(float *) <= 2 * sizeof(float), "a bias row pointer takes two floats of scratch");
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t p = attn_round16(parts[i]);
        if (p < parts[i] || __builtin_add_overflow(total, p, &total))
            return 0;
    }
    return total;
}

static attn_scratch attn_scratch_carve(const attn_job *j, float *base)
{
    attn_scratch sc;
    float *p = base;
#define ATTN_TAKE(n) (p += attn_round16(n), p - attn_round16(n))
    sc.q = ATTN_TAKE(j->rows_max * j->d);
    sc.s = ATTN_TAKE(j->rows_max * j->bkvp);
    sc.kt = ATTN_TAKE(j->d * j->bkvp);
    sc.vp = ATTN_TAKE(j->bkvp * j->dvp);
    sc.o = ATTN_TAKE(j->rows_max * j->dvp);
    sc.m = ATTN_TAKE(j->rows_max);
    sc.l = ATTN_TAKE(j->rows_max);
    sc.lo = (int *)ATTN_TAKE(j->rows_max);
    sc.hi = (int *)ATTN_TAKE(j->rows_max);
    sc.alo = (int64_t *)ATTN_TAKE(2 * j->rows_max);
    sc.ahi = (int64_t *)ATTN_TAKE(2 * j->rows_max);
    sc.kr = ATTN_TAKE(j->d > j->dv ? j->d : j->dv);
    sc.slope = ATTN_TAKE(j->rows_max);
    sc.rel = (int64_t *)(void *)ATTN_TAKE(2 * j->rows_max);
    sc.brow = (const float **)(void *)ATTN_TAKE(2 * j->rows_max);
    sc.fs = ATTN_TAKE(j->bkvp);
#undef ATTN_TAKE
    return sc;
}

/* The factor an ATTN_I8 key (v 0) or value (v 1) row t is widened with: its scale when the values are dequantised
 * before use (ATTN_MATH_BF16 rounds them), 1 when the integers are kept and the engine applies the scale. */
static int attn_i8_deq(const attn_job *j) { return j->src.fmt == ATTN_I8 && !j->i8f; }

static float attn_i8_factor(const attn_job *j, int v, size_t kvh, size_t t)
{
    return attn_i8_deq(j) ? *attn_src_scale(&j->src, v, kvh, t) : 1.0f;
}

/* Key t of KV head kvh gathered from its stored panel, widened to fp32 in row[0..d). */
static void attn_panel_key(const attn_job *j, float *row, size_t b, size_t kvh, size_t t)
{
    const void *src = attn_src_kpanel(&j->src, b, kvh, t);
    const attn_dtype f = j->src.fmt;
    const float s = attn_i8_factor(j, 0, kvh, t);
    for (size_t c = 0, i = t % ATTN_PAD; c < j->d; c++, i += ATTN_PAD)
        row[c] = f == ATTN_F16    ? attn_f16_to_f32(((const uint16_t *)src)[i])
                 : f == ATTN_BF16 ? attn_bf16_to_f32(((const uint16_t *)src)[i])
                 : f == ATTN_I8   ? (float)((const int8_t *)src)[i] * s
                                  : ((const float *)src)[i];
    if (j->round_kv)
        j->kern->round_bf16(row, j->d);
}

/* dst[0..n) = a stored key or value row widened to fp32 (int8 times s; rounded to bfloat16 for ATTN_MATH_BF16). */
static void attn_kv_widen(const attn_job *j, float *dst, const void *src, size_t n, float s)
{
    if (j->src.fmt == ATTN_F32)
        memcpy(dst, src, n * sizeof(float));
    else if (j->src.fmt == ATTN_I8)
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)((const int8_t *)src)[i] * s;
    else
        j->kern->cvt[j->src.fmt](dst, src, n);
    if (j->round_kv)
        j->kern->round_bf16(dst, n);
}

/* Values [t0, t0+nk) of one KV head as fp32 rows of dvp, zero from column dv on. */
static void attn_pack_v(const attn_job *j, float *vp, size_t b, size_t kvh, size_t t0, size_t nk)
{
    for (size_t t = 0; t < nk; t++) {
        attn_kv_widen(j, vp + t * j->dvp, attn_src_vrow(&j->src, b, kvh, t0 + t), j->dv,
                      attn_i8_factor(j, 1, kvh, t0 + t));
        memset(vp + t * j->dvp + j->dv, 0, (j->dvp - j->dv) * sizeof(float));
    }
}

/* Packs keys [t0, t0+nk) of one KV head: kt in panels (see attn_tile_args.kt, zero keys up to nkp) and vp[j][c]
 * (zero columns from dv up to dvp). row: d floats of scratch for widening a stored key row. */
static void attn_pack_tile(const attn_job *j, float *kt, float *vp, float *row, size_t b, size_t kvh, size_t t0,
                           size_t nk, size_t nkp)
{
    const size_t panel = j->d * ATTN_PAD;
    if (attn_src_panels(&j->src) && t0 % ATTN_PAD == 0 && !attn_i8_deq(j)) {
        /* Stored panels line up with the tile's: widen them whole, then zero the keys from nk on. */
        for (size_t p = 0; p < nkp / ATTN_PAD; p++)
            attn_kv_widen(j, kt + p * panel, attn_src_kpanel(&j->src, b, kvh, t0 + p * ATTN_PAD), panel, 1.0f);
        for (size_t c = 0; nk < nkp && c < j->d; c++)
            memset(kt + (nkp / ATTN_PAD - 1) * panel + c * ATTN_PAD + nk % ATTN_PAD, 0,
                   (ATTN_PAD - nk % ATTN_PAD) * sizeof(float));
    } else {
        if (nk < nkp)
            memset(kt + nk / ATTN_PAD * panel, 0, panel * sizeof(float));
        for (size_t t = 0; t < nk; t++) {
            const float *k = row;
            if (attn_src_panels(&j->src)) /* a tile across stored panels (block_kv not a multiple of ATTN_PAD) */
                attn_panel_key(j, row, b, kvh, t0 + t);
            else if (j->src.fmt != ATTN_F32 || j->round_kv)
                attn_kv_widen(j, row, attn_src_krow(&j->src, b, kvh, t0 + t), j->d, 1.0f);
            else
                k = attn_src_krow(&j->src, b, kvh, t0 + t);
            attn_panel_row(kt, k, j->d, t);
        }
    }
    if (vp)
        attn_pack_v(j, vp, b, kvh, t0, nk);
}

/* Packs keys and values [t0, t0+nk) of one KV head as bfloat16 pairs (kernels.h scores_bf16p, pv_bf16p): kt in
 * pair panels, vp in key pairs of dvp columns, zero keys up to nkp and zero columns from dv. row: max(d, dv)
 * floats of scratch. The values were rounded to bfloat16 as they were widened, so the conversion is exact. */
static void attn_pack_tile_bf16p(const attn_job *j, void *kt, void *vp, float *row, size_t b, size_t kvh,
                                 size_t t0, size_t nk, size_t nkp)
{
    const size_t d2 = (j->d + 1) / 2, panel = d2 * ATTN_PAD * 2; /* halves per panel */
    uint16_t *k = kt, *v = vp;
    if (nk < nkp)
        memset(k + nk / ATTN_PAD * panel, 0, panel * sizeof *k);
    /* bfloat16 rows, the common case, are copied as they are: a key row's adjacent dimensions are already pairs. */
    const int copy = j->src.fmt == ATTN_BF16 && !attn_src_panels(&j->src);
    if (copy && j->kern->pack_bf16p) {
        const attn_kv_src *s = &j->src;
        j->kern->pack_bf16p(kt, vp, attn_src_krow(s, b, kvh, t0), s->ks.s, vp ? attn_src_vrow(s, b, kvh, t0) : NULL,
                            s->vs.s, nk, j->d, j->dv, j->dvp);
        if (vp) /* the key pairs from round_up(nk, 2) to nkp */
            memset((uint32_t *)vp + (nk + 1) / 2 * j->dvp, 0, (nkp - (nk + 1) / 2 * 2) / 2 * j->dvp * 4);
        return;
    }
    for (size_t t = 0; copy && t < nk; t++) {
        const uint16_t *src = attn_src_krow(&j->src, b, kvh, t0 + t);
        uint16_t *dst = k + t / ATTN_PAD * panel + t % ATTN_PAD * 2;
        for (size_t c = 0; c < j->d; c++)
            dst[c / 2 * ATTN_PAD * 2 + c % 2] = src[c];
        if (j->d % 2)
            dst[j->d / 2 * ATTN_PAD * 2 + 1] = 0;
    }
    for (size_t t = 0; !copy && t < nk; t++) {
        if (attn_src_panels(&j->src))
            attn_panel_key(j, row, b, kvh, t0 + t);
        else
            attn_kv_widen(j, row, attn_src_krow(&j->src, b, kvh, t0 + t), j->d, 1.0f);
        uint16_t *dst = k + t / ATTN_PAD * panel + t % ATTN_PAD * 2;
        for (size_t c = 0; c < j->d; c++)
            dst[c / 2 * ATTN_PAD * 2 + c % 2] = attn_f32_to_bf16(row[c]);
        if (j->d % 2)
            dst[j->d / 2 * ATTN_PAD * 2 + 1] = 0;
    }
    if (!vp)
        return;
    memset(v + nk / 2 * j->dvp * 2, 0, (nkp - nk / 2 * 2) * j->dvp * sizeof *v);
    for (size_t t = 0; copy && t < nk; t++) {
        const uint16_t *src = attn_src_vrow(&j->src, b, kvh, t0 + t);
        uint16_t *dst = v + t / 2 * j->dvp * 2 + t % 2;
        for (size_t c = 0; c < j->dv; c++)
            dst[2 * c] = src[c];
        for (size_t c = j->dv; c < j->dvp; c++)
            dst[2 * c] = 0;
    }
    for (size_t t = 0; !copy && t < nk; t++) {
        attn_kv_widen(j, row, attn_src_vrow(&j->src, b, kvh, t0 + t), j->dv, attn_i8_factor(j, 1, kvh, t0 + t));
        uint16_t *dst = v + t / 2 * j->dvp * 2 + t % 2;
        for (size_t c = 0; c < j->dv; c++)
            dst[2 * c] = attn_f32_to_bf16(row[c]);
        for (size_t c = j->dv; c < j->dvp; c++)
            dst[2 * c] = 0;
    }
}

/* Points a at the tile starting at key t0 (a multiple of bkv): the call's shared packing when there is one, else
 * the stored rows in place where whole vectors allow, else this thread's scratch, packed now. */
static void attn_tile_at(const attn_job *j, const attn_scratch *sc, attn_tile_args *a, size_t b, size_t kvh,
                         size_t t0, int with_v)
{
    a->nk = j->kv_len - t0 < j->bkv ? j->kv_len - t0 : j->bkv;
    a->nkp = attn_round16(a->nk);
    a->ldv = j->dvp;
    if (j->packed) {
        const float *base = j->packed + ((b * j->kv_heads + kvh) * j->ntiles + t0 / j->bkv) * j->tile_floats;
        a->kt = base;
        a->vp = base + j->d * j->bkvp;
        a->kdt = a->vdt = ATTN_F32;
        if (j->v_in_place) {
            a->vp = attn_src_vrow(&j->src, b, kvh, t0);
            a->ldv = j->src.vs.s;
        }
        return;
    }
    if (j->bf16p) {
        a->kt = sc->kt;
        a->vp = with_v ? sc->vp : NULL;
        a->kdt = a->vdt = ATTN_BF16;
        attn_pack_tile_bf16p(j, sc->kt, a->vp ? sc->vp : NULL, sc->kr, b, kvh, t0, a->nk, a->nkp);
        return;
    }
    /* A block alone with its KV head (decode): read K where it is stored, as stored (the kernels widen half and
     * bfloat16 in registers), rather than copy it: a cache's key panels when the tile starts on one, else key rows
     * of whole vectors. V rows likewise. Several blocks that lost the shared packing to a failed allocation still
     * transpose K, so that their sums run in the same order as with it (same bits); so does a tile that starts
     * inside a cache panel. V rows are summed in the same order from either place. */
    const int panels = attn_src_panels(&j->src), contig = attn_src_contig(&j->src, t0, a->nk);
    const int k_pan = j->k_in_place && panels && t0 % ATTN_PAD == 0 && !j->round_kv && contig;
    const int k_rows = j->k_in_place && !panels && j->d % ATTN_PAD == 0 && !j->round_kv;
    const int v_rows = j->dv == j->dvp && !j->round_kv && contig;
    a->kt = k_rows ? NULL : sc->kt;
    a->kdt = a->vdt = ATTN_F32;
    if (k_pan) {
        a->kt = attn_src_kpanel(&j->src, b, kvh, t0);
        a->kdt = j->src.fmt;
    } else if (k_rows) {
        a->kr = attn_src_krow(&j->src, b, kvh, t0);
        a->ldk = j->src.ks.s;
        a->kdt = j->src.fmt;
    } else {
        attn_pack_tile(j, sc->kt, NULL, sc->kr, b, kvh, t0, a->nk, a->nkp);
    }
    a->vp = NULL;
    if (!with_v)
        return;
    if (v_rows) {
        a->vp = attn_src_vrow(&j->src, b, kvh, t0);
        a->ldv = j->src.vs.s;
        a->vdt = j->src.fmt;
        return;
    }
    a->vp = sc->vp;
    attn_pack_v(j, sc->vp, b, kvh, t0, a->nk);
}

/* Per-row visible range inside tile [t0, t0+nk). */
static void attn_tile_ranges(const attn_scratch *sc, size_t rows, int64_t t0, int64_t nk)
{
    for (size_t r = 0; r < rows; r++) {
        int64_t lo = sc->alo[r] - t0, hi = sc->ahi[r] - t0;
        lo = lo < 0 ? 0 : lo;
        hi = hi > nk ? nk : hi;
        if (hi <= lo)
            lo = hi = 0;
        sc->lo[r] = (int)lo;
        sc->hi[r] = (int)hi;
    }
}

/* The rows of one work block: the query positions [q0, q0 + nq) of every head of KV group kvh in batch b. */
typedef struct attn_rows {
    size_t b, kvh, q0, nq, n; /* n = group * nq; row r is head kvh*group + r/nq, position q0 + r%nq */
    int64_t ulo, uhi;         /* union of the rows' visible keys; ulo >= uhi: none */
    int64_t pf_end;           /* key rows before this may be prefetched (the last tile prefetches the first tile of
                                 the next chunk when this thread takes it next); at least uhi */
    const void *xkn, *xvn;    /* NULL, or the first keys and values of the thread's next item (another KV head or
                                 sequence), xknn of them, which the last tile prefetches */
    size_t xknn;
} attn_rows;

/* dst[0..d) = scale * query row at element e of q, widened to fp32 (rounded to bfloat16 first for
 * ATTN_MATH_BF16: the scale multiplies the rounded query, so the fp32 score is scale * (q . k) up to rounding).
 * On the bfloat16 dot-product slots: the rounded row as pair words, unscaled. */
static void attn_q_row(const attn_job *j, float *dst, size_t e, float *row)
{
    if (j->dot) { /* dst is the row's ceil(d/2) pair words, row d floats of scratch; the scores kernel scales */
        uint16_t *h = (uint16_t *)(void *)dst;
        if (j->qdt == ATTN_BF16) {
            memcpy(h, (const uint16_t *)j->q + e, j->d * sizeof *h);
            if (j->d % 2)
                h[j->d] = 0;
            return;
        }
        if (j->qdt == ATTN_F32)
            memcpy(row, (const float *)j->q + e, j->d * sizeof(float));
        else
            j->kern->cvt[j->qdt](row, (const uint16_t *)j->q + e, j->d);
        for (size_t c = 0; c < j->d; c++)
            h[c] = attn_f32_to_bf16(row[c]);
        if (j->d % 2)
            h[j->d] = 0;
        return;
    }
    if (j->qdt == ATTN_F32 && !j->round_q) {
        j->kern->scale(dst, (const float *)j->q + e, j->d, j->scale);
        return;
    }
    if (j->qdt == ATTN_F32)
        memcpy(dst, (const float *)j->q + e, j->d * sizeof(float));
    else
        j->kern->cvt[j->qdt](dst, (const uint16_t *)j->q + e, j->d);
    if (j->round_q)
        j->kern->round_bf16(dst, j->d);
    j->kern->scale(dst, dst, j->d, j->scale);
}

/* Scaled query copies, each row's visible keys within [kfrom, kto), and a fresh online-softmax state. */
static attn_rows attn_rows_setup(const attn_job *j, const attn_scratch *sc, size_t b, size_t kvh, size_t qb,
                                 int64_t kfrom, int64_t kto)
{
    attn_rows rw = {.b = b, .kvh = kvh, .q0 = qb * j->nq, .ulo = INT64_MAX, .uhi = 0, .xkn = NULL};
    rw.nq = j->q_len - rw.q0 < j->nq ? j->q_len - rw.q0 : j->nq;
    rw.n = j->group * rw.nq;
    if (kto > (int64_t)j->kv_len)
        kto = (int64_t)j->kv_len;
    if (j->kv_valid && j->kv_valid[b] < kto)
        kto = j->kv_valid[b];
    for (size_t r = 0; r < rw.n; r++) {
        const size_t h = kvh * j->group + r / rw.nq, i = rw.q0 + r % rw.nq;
        float *qr = j->dot ? (float *)(void *)((uint32_t *)(void *)sc->q + r * ((j->d + 1) / 2)) : sc->q + r * j->d;
        attn_q_row(j, qr, b * j->qs.b + h * j->qs.h + i * j->qs.s, sc->kr);
        /* p: the query's position in key-index units (key j sits at kpos0 + j); all positions are below 2^62, so
         * neither p nor p - window overflows. */
        const int64_t p = j->qpos0 + (int64_t)i - j->kpos0;
        const int64_t w = j->window < ((uint64_t)1 << 62) ? (int64_t)j->window : (int64_t)1 << 62;
        int64_t lo = kfrom, hi = kto;
        if (j->causal && p + 1 < hi)
            hi = p + 1;
        if (j->window && p - w + 1 > lo)
            lo = p - w + 1;
        if (hi <= lo)
            lo = hi = 0;
        sc->alo[r] = lo;
        sc->ahi[r] = hi;
        if (j->slopes) {
            sc->slope[r] = j->slopes[h];
            sc->rel[r] = -p; /* key 0's position minus the query's */
        }
        if (j->bias)
            sc->brow[r] = j->bias + b * j->bias_st[0] + h * j->bias_st[1] + i * j->bias_st[2];
        if (lo < hi) {
            rw.ulo = lo < rw.ulo ? lo : rw.ulo;
            rw.uhi = hi > rw.uhi ? hi : rw.uhi;
        }
        sc->m[r] = -INFINITY;
        sc->l[r] = 0.0f;
    }
    memset(sc->o, 0, rw.n * j->dvp * sizeof(float));
    rw.pf_end = rw.uhi;
    return rw;
}

static attn_tile_args attn_rows_args(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    attn_tile_args a = {
        .rows = rw->n, .d = j->d, .dvp = j->dvp, .q = sc->q, .lo = sc->lo, .hi = sc->hi, .s = sc->s, .m = sc->m,
        .l = sc->l, .o = sc->o, .scale = j->scale, .round_p = j->round_p && !j->dot, /* pv_bf16p rounds */
    };
    return a;
}

/* ATTN_I8 kept as integers: the scales of the tile's keys (v 0) or value rows (v 1), nkp of them, for the kernels
 * to multiply each score or weight by (attn_tile_args.ksc, vsc): where they are stored when the tile starts on a
 * panel of one page (or a cache), else gathered, padded with zeros. */
static const float *attn_i8_scales(const attn_job *j, const attn_scratch *sc, const attn_tile_args *a, size_t kvh,
                                   size_t t0, int v)
{
    if (t0 % ATTN_PAD == 0 && attn_src_contig(&j->src, t0, a->nkp))
        return attn_src_scale(&j->src, v, kvh, t0);
    for (size_t t = 0; t < a->nk; t++)
        sc->fs[t] = *attn_src_scale(&j->src, v, kvh, t0 + t);
    memset(sc->fs + a->nk, 0, (a->nkp - a->nk) * sizeof(float));
    return sc->fs;
}

/* The scores of the tile at key t0 in a->s, through the slot for where the tile lives, then the score modifiers. */
static void attn_tile_scores(const attn_job *j, const attn_scratch *sc, attn_tile_args *a, size_t kvh, size_t t0)
{
    a->ksc = j->i8f ? attn_i8_scales(j, sc, a, kvh, t0, 0) : NULL; /* int8 keys live in panels: scores[] */
    (j->bf16p   ? j->kern->scores_bf16p
     : j->bf16r ? j->kern->scores_rows_bf16p
     : a->kt    ? j->kern->scores[a->kdt]
                : j->kern->scores_rows[a->kdt])(a);
    a->ksc = NULL;
    if (!j->mods)
        return;
    const attn_score_mods md = {
        .softcap = j->softcap, .inv_cap = j->softcap != 0.0f ? 1.0f / j->softcap : 0.0f,
        .slope = j->slopes ? sc->slope : NULL, .rel = sc->rel, .bias = j->bias ? sc->brow : NULL, .t0 = t0,
    };
    a->mods = &md;
    j->kern->modify(a);
    a->mods = NULL;
}

/* The first tile to visit: tiles start at multiples of bkv, and those no row can see are skipped whole. */
static int64_t attn_rows_tfirst(const attn_job *j, const attn_rows *rw)
{
    return rw->ulo < rw->uhi ? rw->ulo / (int64_t)j->bkv * (int64_t)j->bkv : rw->uhi;
}

/* The first lines of the next tile in another page (fp32, whose kernels leave streams to the hardware prefetchers:
 * those stop at a page's end and take several misses to start again). */
static void attn_page_prefetch(const attn_job *j, const attn_rows *rw, size_t tn)
{
    const char *k = attn_src_kpanel(&j->src, rw->b, rw->kvh, tn), *v = attn_src_vrow(&j->src, rw->b, rw->kvh, tn);
    for (size_t l = 0; l < 64; l++) {
        __builtin_prefetch(k + l * 64, 0, 2);
        __builtin_prefetch(v + l * 64, 0, 2);
    }
}

/* The online softmax over every tile the rows can see: leaves m, l and the unnormalised o in sc. */
static void attn_rows_run(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    attn_tile_args a = attn_rows_args(j, sc, rw);
    for (int64_t t0 = attn_rows_tfirst(j, rw); t0 < rw->uhi; t0 += (int64_t)j->bkv) {
        attn_tile_at(j, sc, &a, rw->b, rw->kvh, (size_t)t0, 1);
        attn_tile_ranges(sc, rw->n, t0, (int64_t)a.nk);
        /* K read in place (decode): the kernels prefetch the next tile's keys while they compute this one's
         * (value rows too when attn_tile_at reads them in place rather than packing them into sc->vp). */
        const int64_t tn = t0 + (int64_t)j->bkv;
        a.kn = a.vn = NULL;
        if (!j->packed && a.kt != sc->kt && tn < rw->pf_end &&
            attn_src_contig(&j->src, (size_t)tn, (size_t)(rw->pf_end - tn) < j->bkv ? (size_t)(rw->pf_end - tn) : j->bkv)) {
            a.kn = attn_src_panels(&j->src) ? attn_src_kpanel(&j->src, rw->b, rw->kvh, (size_t)tn)
                                            : attn_src_krow(&j->src, rw->b, rw->kvh, (size_t)tn);
            a.vn = a.vp != sc->vp ? attn_src_vrow(&j->src, rw->b, rw->kvh, (size_t)tn) : NULL;
            a.knn = (size_t)(rw->pf_end - tn) < j->bkv ? (size_t)(rw->pf_end - tn) : j->bkv;
        } else if (tn >= rw->pf_end && rw->xkn && a.kt != sc->kt && a.kt) {
            a.kn = rw->xkn;
            a.vn = a.vp != sc->vp ? rw->xvn : NULL;
            a.knn = rw->xknn;
        }
        if (j->src.kind == ATTN_KV_PAGED && j->src.fmt == ATTN_F32 && tn < rw->uhi && (size_t)tn % j->src.ptok == 0 &&
            a.kt != sc->kt)
            attn_page_prefetch(j, rw, (size_t)tn);
        attn_tile_scores(j, sc, &a, rw->kvh, (size_t)t0);
        a.vsc = j->i8f ? attn_i8_scales(j, sc, &a, rw->kvh, (size_t)t0, 1) : NULL;
        j->kern->softmax(&a);
        a.vsc = NULL;
        (j->bf16p ? j->kern->pv_bf16p : j->bf16r ? j->kern->pv_rows_bf16p : j->kern->pv[a.vdt])(&a);
    }
}

static void *attn_out_row(const attn_job *j, const attn_rows *rw, size_t r)
{
    const size_t h = rw->kvh * j->group + r / rw->nq, i = rw->q0 + r % rw->nq;
    return (char *)j->out + (rw->b * j->os.b + h * j->os.h + i * j->os.s) * attn_dtype_size(j->odt);
}

static float *attn_probs_row(const attn_job *j, const attn_rows *rw, size_t r)
{
    const size_t h = rw->kvh * j->group + r / rw->nq, i = rw->q0 + r % rw->nq;
    return j->probs + ((rw->b * j->heads + h) * j->q_len + i) * j->kv_len;
}

/* lse = m + log l (sinks excluded), then each row's sink joins its denominator l, which the output and probs
 * divide by; a row that sees no key gets lse -inf and keeps its l (the sink does not give it an output). */
static void attn_rows_finish(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    for (size_t r = 0; r < rw->n; r++) {
        if (sc->m[r] == -INFINITY) /* a bias masked every key the row sees: as if it saw none */
            sc->alo[r] = sc->ahi[r] = 0;
        const int none = sc->alo[r] >= sc->ahi[r];
        const size_t h = rw->kvh * j->group + r / rw->nq, i = rw->q0 + r % rw->nq;
        if (j->lse)
            j->lse[rw->b * j->lse_st[0] + h * j->lse_st[1] + i * j->lse_st[2]] = none ? -INFINITY : sc->m[r] + logf(sc->l[r]);
        if (j->sinks && !none)
            sc->l[r] += expf(j->sinks[h] - sc->m[r]);
    }
}

/* out = o / l; a row that sees no key gets zeros, never NaN. */
static void attn_rows_write(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    attn_rows_finish(j, sc, rw);
    for (size_t r = 0; r < rw->n; r++) {
        void *orow = attn_out_row(j, rw, r);
        if (sc->alo[r] >= sc->ahi[r]) {
            memset(orow, 0, j->dv * attn_dtype_size(j->odt));
            continue;
        }
        if (j->odt == ATTN_F32) {
            j->kern->scale(orow, sc->o + r * j->dvp, j->dv, 1.0f / sc->l[r]);
            continue;
        }
        j->kern->narrow[j->odt](orow, sc->o + r * j->dvp, j->dv, 1.0f / sc->l[r]); /* rounded once */
    }
}

/* Probabilities need each row's final max and sum (in sc->m, sc->l), so they take a second pass over the tiles;
 * the rows must have been set up over the whole key range. */
static void attn_rows_probs(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    const int64_t tfirst = attn_rows_tfirst(j, rw), bkv = (int64_t)j->bkv;
    int64_t tend = tfirst + (rw->uhi - tfirst + bkv - 1) / bkv * bkv;
    tend = tend < (int64_t)j->kv_len ? tend : (int64_t)j->kv_len;
    for (size_t r = 0; r < rw->n; r++) {
        float *prow = attn_probs_row(j, rw, r);
        memset(prow, 0, (size_t)tfirst * sizeof(float));
        memset(prow + tend, 0, (j->kv_len - (size_t)tend) * sizeof(float));
    }
    attn_tile_args a = attn_rows_args(j, sc, rw);
    for (int64_t t0 = tfirst; t0 < rw->uhi; t0 += bkv) {
        attn_tile_at(j, sc, &a, rw->b, rw->kvh, (size_t)t0, 0);
        attn_tile_ranges(sc, rw->n, t0, (int64_t)a.nk);
        attn_tile_scores(j, sc, &a, rw->kvh, (size_t)t0);
        for (size_t g = 0; g < j->group; g++) { /* the rows of one head are evenly strided in probs */
            attn_tile_args ah = a;
            const size_t r0 = g * rw->nq;
            ah.rows = rw->nq;
            ah.s = a.s + r0 * a.nkp;
            ah.m = a.m + r0;
            ah.l = a.l + r0;
            ah.lo = a.lo + r0;
            ah.hi = a.hi + r0;
            j->kern->probs(&ah, attn_probs_row(j, rw, r0) + t0, j->kv_len);
        }
    }
}

/* Item it of the list: its sequence by bisection over the first items (the last sequence starting at or before
 * it: empty sequences are skipped), then its place within the sequence. Query blocks go latest first (with causal
 * masks those cost most, so dynamic scheduling balances); chunks of one KV head are consecutive. */
static attn_item attn_item_at(const attn_job *j, size_t it)
{
    size_t lo = 0, hi = j->batch;
    while (hi - lo > 1) {
        const size_t mid = lo + (hi - lo) / 2;
        if (j->work[mid].first <= it)
            lo = mid;
        else
            hi = mid;
    }
    const attn_work *w = &j->work[lo];
    const size_t k = it - w->first, per_qb = j->kv_heads * w->nchunks;
    const attn_item x = {.b = lo, .qb = w->nqb - 1 - k / per_qb, .kvh = k % per_qb / w->nchunks,
                         .c = k % w->nchunks};
    return x;
}

/* Key chunks of sequence b: 1 without split-KV; else chunks up to its last key only (kv_valid may end it early,
 * or at 0: no chunk at all). */
static size_t attn_seq_chunks(const attn_job *j, size_t b)
{
    const size_t kv_end = j->kv_valid ? (size_t)j->kv_valid[b] : j->kv_len;
    return j->nchunks == 1 ? 1 : (kv_end + j->chunk - 1) / j->chunk;
}

/* Split-KV partial result number i (attn_work.pfirst; of a sequence's only query block): o [part_rows][dvp], then
 * m, l and "saw a key" per row. */
static float *attn_part(const attn_job *j, size_t i)
{
    return j->part + i * j->part_floats;
}

static void attn_part_store(const attn_job *j, const attn_scratch *sc, const attn_rows *rw, float *part)
{
    const size_t n = rw->n;
    memcpy(part, sc->o, n * j->dvp * sizeof(float));
    float *m = part + j->part_rows * j->dvp, *l = m + j->part_rows, *seen = l + j->part_rows;
    for (size_t r = 0; r < n; r++) {
        m[r] = sc->m[r];
        l[r] = sc->l[r];
        seen[r] = sc->alo[r] < sc->ahi[r] && sc->m[r] != -INFINITY; /* a -inf bias may mask all */
    }
}

/* o += x * w over n floats (a multiple of ATTN_PAD): a fixed-length inner loop, so that the baseline build
 * vectorises it. */
static void attn_axpy(float *restrict o, const float *restrict x, float w, size_t n)
{
    for (size_t k = 0; k < n; k += ATTN_PAD)
        for (size_t i = 0; i < ATTN_PAD; i++)
            o[k + i] += x[k + i] * w;
}

/* Merges the chunks of one (b, kvh) in chunk order (so the result does not depend on the thread count) into
 * sc's m, l, o (fresh from attn_rows_setup), and marks rows that saw no key at all with alo = ahi = 0. Chunk by
 * chunk, so that the partials (long gone from the caches) stream in order from memory; each element still sums
 * its chunks in chunk order. sc->lo holds "row saw a key" meanwhile (the tile ranges are rebuilt before use). */
static void attn_part_merge(const attn_job *j, const attn_scratch *sc, const attn_rows *rw)
{
    const size_t n = rw->n, rm = j->part_rows, nc = j->work[rw->b].nchunks;
    const size_t first = j->work[rw->b].pfirst + rw->kvh * nc; /* this KV head's chunks, in order */
    for (size_t r = 0; r < n; r++)
        sc->lo[r] = 0;
    for (size_t c = 0; c < nc; c++) {
        const float *p = attn_part(j, first + c) + rm * j->dvp;
        for (size_t r = 0; r < n; r++)
            if (p[2 * rm + r] != 0.0f) {
                sc->lo[r] = 1;
                sc->m[r] = p[r] > sc->m[r] ? p[r] : sc->m[r];
            }
    }
    for (size_t c = 0; c < nc; c++) {
        const float *po = attn_part(j, first + c), *p = po + rm * j->dvp;
        for (size_t r = 0; r < n; r++) {
            if (p[2 * rm + r] == 0.0f)
                continue;
            const float w = expf(p[r] - sc->m[r]);
            sc->l[r] += p[rm + r] * w;
            attn_axpy(sc->o + r * j->dvp, po + r * j->dvp, w, j->dvp);
        }
    }
    for (size_t r = 0; r < n; r++)
        if (!sc->lo[r])
            sc->alo[r] = sc->ahi[r] = 0;
}

/* Element count a*b*c*d, then bytes; 1 if either overflows size_t. */
static int attn_count_overflows(size_t a, size_t b, size_t c, size_t d)
{
    size_t n;
    return attn_mul_overflow(a, b, &n) || attn_mul_overflow(n, c, &n) || attn_mul_overflow(n, d, &n) ||
           attn_mul_overflow(n, sizeof(float), &n);
}

/* The math mode's rounding points and slots, and the default scale. */
static void attn_job_math(attn_job *j, const attn_ctx *ctx, attn_math math)
{
    const int bf = math == ATTN_MATH_BF16;
    j->ctx = ctx;
    j->round_q = bf && j->qdt != ATTN_BF16;
    j->round_kv = bf && j->src.fmt != ATTN_BF16;
    j->round_p = bf;
    j->bf16p_ok = bf && ctx->kern->scores_bf16p && ctx->kern->pv_bf16p;
    j->i8f = j->src.fmt == ATTN_I8 && !bf;
    j->group = j->heads / j->kv_heads;
    j->dvp = attn_round16(j->dv);
    if (j->scale == 0.0f)
        j->scale = (float)(1.0 / sqrt((double)j->d));
}

/* What follows from the lengths q_len and kv_len: query positions per block, keys per tile, where K is read, the
 * slots, the split-KV cut. It depends on the shape, the context and the storage only, never on the thread count
 * or, in a batched call, on the other sequences. */
static void attn_job_shape(attn_job *j)
{
    const attn_ctx *ctx = j->ctx;
    j->nq = (size_t)ctx->block_q / j->group;
    j->nq = j->nq < 1 ? 1 : j->nq > j->q_len ? j->q_len : j->nq;
    j->bkv = j->bkv0 < j->kv_len ? j->bkv0 : j->kv_len;
    const size_t nqb = (j->q_len + j->nq - 1) / j->nq;
    j->k_in_place = nqb == 1 && (attn_src_panels(&j->src) || j->group * j->nq <= ATTN_KR_ROWS);
    /* Decode-sized blocks read K and V where they are stored (widened in registers), whatever the math: packing
     * pairs for the bfloat16 dot products would cost a copy of the cache per call. */
    j->bf16p = j->bf16p_ok && !j->k_in_place;
    /* ... except a block whose K and V are bfloat16 rows (attn_tile_at reads them in place): their pairs along d
     * are adjacent already, and V's along keys are two rows interleaved in registers. */
    j->bf16r = j->round_p && j->k_in_place && j->src.fmt == ATTN_BF16 && !attn_src_panels(&j->src) &&
               j->d % 32 == 0 && j->dv % 32 == 0 && ctx->kern->scores_rows_bf16p && ctx->kern->pv_rows_bf16p;
    j->dot = j->bf16p || j->bf16r;
    /* Split-KV: when one block holds all the queries of a KV head (decode), its keys are cut into chunks of a
     * fixed size, so that a few KV heads still feed every thread; the chunks' partial results are merged in chunk
     * order. The cut depends on the shape and block_kv only, never on the thread count. */
    j->chunk = (ctx->var->split_keys + j->bkv - 1) / j->bkv * j->bkv;
    j->nchunks = nqb == 1 && j->kv_len > j->chunk ? (j->kv_len + j->chunk - 1) / j->chunk : 1;
}

/* The job of sequence b: j itself, or for a batched call a copy with that sequence's lengths, rows and pages (the
 * scratch layout stays the call's). */
static const attn_job *attn_view(const attn_job *j, size_t b, attn_job *v)
{
    if (!j->bseq)
        return j;
    const attn_bseq *s = &j->bseq[b];
    *v = *j;
    v->q_len = s->q_len;
    v->kv_len = s->kv_len;
    v->qpos0 = (int64_t)(s->kv_len - s->q_len);
    v->q = (const float *)j->q + s->row0 * j->qs.s;
    v->out = (float *)j->out + s->row0 * j->os.s;
    v->lse = j->lse ? j->lse + s->row0 * j->heads : NULL;
    v->src.pt = s->pt;
    attn_job_shape(v);
    v->rows_max = j->rows_max;
    v->bkvp = j->bkvp;
    return v;
}

/* For item it, whose thread takes item it + 1 next (runs of run items), where that item starts reading when it
 * reads keys in place from panels (a KV cache or pool): so that this item's last tile prefetches them, and memory
 * keeps streaming from one short sequence to the next. A decode item's query and output rows are prefetched now. */
static void attn_next_prefetch(const attn_job *j, size_t it, size_t run, size_t items, attn_rows *rw)
{
    if ((it + 1) % run == 0 || it + 1 >= items)
        return;
    const attn_item x = attn_item_at(j, it + 1);
    attn_job tmp;
    const attn_job *v = attn_view(j, x.b, &tmp);
    if (v->q_len == 1 && !j->work[x.b].split) { /* a decode item of another KV head: its query and output rows */
        const size_t qb = v->d * attn_dtype_size(v->qdt), ob = v->dv * attn_dtype_size(v->odt);
        for (size_t g = 0; g < v->group; g++) {
            const size_t h = x.kvh * v->group + g;
            const char *qr = (const char *)v->q + (x.b * v->qs.b + h * v->qs.h) * attn_dtype_size(v->qdt);
            const char *orow = (const char *)v->out + (x.b * v->os.b + h * v->os.h) * attn_dtype_size(v->odt);
            for (size_t l = 0; l < qb; l += 64)
                __builtin_prefetch(qr + l, 0, 3);
            for (size_t l = 0; l < ob; l += 64)
                __builtin_prefetch(orow + l, 1, 3);
        }
    }
    const size_t t0 = j->work[x.b].split ? x.c * v->chunk : 0;
    if (!v->k_in_place || v->packed || !attn_src_panels(&v->src) || v->round_kv || v->dot || t0 >= v->kv_len)
        return;
    const size_t n = v->kv_len - t0 < v->bkv ? v->kv_len - t0 : v->bkv;
    if (!attn_src_contig(&v->src, t0, n))
        return;
    rw->xkn = attn_src_kpanel(&v->src, x.b, x.kvh, t0);
    rw->xvn = attn_src_vrow(&v->src, x.b, x.kvh, t0);
    rw->xknn = n;
}

/* The driver: the work list of every sequence, the workspace, then one parallel region. j's call-wide fields
 * (shape of the largest block and tile, rows_max, bkvp) are set. */
static attn_status attn_run(const attn_ctx *ctx, attn_job *jin)
{
    attn_job j = *jin, tmp;
    j.scratch_floats = attn_scratch_size(&j);
    if (!j.scratch_floats)
        return ATTN_ERANGE;
    const size_t hk = j.kv_heads, per_qb = j.batch * hk;
    size_t items = 0, parts = 0, max_chunks = 1, work_bytes;
    int any_split = 0, all_decode = 1; /* a sequence of split-KV items (perhaps none: kv_valid may leave it no key) */
    j.part_rows = 0;
    for (size_t b = 0; b < j.batch; b++) {
        const attn_job *v = attn_view(&j, b, &tmp);
        const size_t nqb = (v->q_len + v->nq - 1) / v->nq, nc = attn_seq_chunks(v, b);
        size_t n;
        if (attn_mul_overflow(nqb, hk, &n) || attn_mul_overflow(n, nc, &n) || __builtin_add_overflow(items, n, &items))
            return ATTN_ERANGE;
        all_decode &= nqb == 1 && v->k_in_place;
        if (v->nchunks > 1) {
            any_split = 1;
            parts += hk * nc; /* at most items */
            j.part_rows = v->group * v->nq > j.part_rows ? v->group * v->nq : j.part_rows;
            max_chunks = nc > max_chunks ? nc : max_chunks;
        }
    }
    if (attn_mul_overflow(j.batch + 1, sizeof(attn_work), &work_bytes) || work_bytes > SIZE_MAX - 63)
        return ATTN_ERANGE;
    work_bytes = (work_bytes + 63) / 64 * 64;
    const int nt = attn_call_threads(ctx, items > per_qb ? items : per_qb);
    /* One workspace holds every thread's scratch, the split-KV partials and, when several query blocks read the
     * same KV head, its K/V tiles packed once for all of them (transposing K per block cost about a quarter of
     * the block's FMAs). Without memory for the packing, each block packs its own tiles. A batched call packs per
     * block: its sequences' tiles differ. */
    size_t scratch_bytes, part_bytes = 0, pack_bytes = 0, npack = 0;
    if (attn_mul_overflow(j.scratch_floats, (size_t)nt * sizeof(float), &scratch_bytes))
        return ATTN_ERANGE;
    if (parts) {
        j.part_floats = attn_round16(j.part_rows * (j.dvp + 3));
        if (attn_mul_overflow(parts, j.part_floats * sizeof(float), &part_bytes))
            return ATTN_ERANGE;
    }
    const size_t nqb = (j.q_len + j.nq - 1) / j.nq;
    j.ntiles = (j.kv_len + j.bkv - 1) / j.bkv;
    j.v_in_place = j.src.fmt == ATTN_F32 && !j.round_kv && !j.bf16p && j.dv == j.dvp && j.src.vs.s == j.dv;
    j.tile_floats = attn_round16(j.bkvp * (j.d + (j.v_in_place ? 0 : j.dvp)));
    if (nqb > 1 && !j.bseq &&
        (j.tile_floats >= SIZE_MAX / 8 || attn_mul_overflow(per_qb, j.ntiles, &npack) ||
         attn_mul_overflow(npack, j.tile_floats * sizeof(float), &pack_bytes)))
        pack_bytes = 0;
    if (j.bseq)
        pack_bytes = 0;
    size_t bytes;
    if (__builtin_add_overflow(scratch_bytes, part_bytes, &bytes) || __builtin_add_overflow(bytes, work_bytes, &bytes))
        return ATTN_ERANGE;
    int cached;
    float *ws = NULL;
    if (pack_bytes && !__builtin_add_overflow(bytes, pack_bytes, &bytes))
        ws = attn_ws_acquire(ctx, bytes, &cached);
    if (!ws) {
        bytes = scratch_bytes + part_bytes + work_bytes;
        pack_bytes = npack = 0;
        if (!(ws = attn_ws_acquire(ctx, bytes, &cached)))
            return ATTN_ENOMEM;
    }
    float *scratch = ws; /* all three sizes are multiples of 64 bytes */
    j.part = part_bytes ? ws + scratch_bytes / sizeof(float) : NULL;
    attn_work *work = (attn_work *)(void *)(ws + (scratch_bytes + part_bytes) / sizeof(float));
    j.packed = pack_bytes ? ws + (scratch_bytes + part_bytes + work_bytes) / sizeof(float) : NULL;
    for (size_t b = 0, first = 0, pfirst = 0; b <= j.batch; b++) {
        if (b == j.batch) {
            work[b] = (attn_work){.first = first};
            break;
        }
        const attn_job *v = attn_view(&j, b, &tmp);
        const size_t nqbs = (v->q_len + v->nq - 1) / v->nq, nc = attn_seq_chunks(v, b);
        work[b] = (attn_work){.first = first, .nqb = nqbs, .nchunks = nc, .split = v->nchunks > 1, .pfirst = pfirst};
        first += hk * nqbs * nc;
        pfirst += work[b].split ? hk * nc : 0;
    }
    j.work = work;
    /* Runs of consecutive chunks go to one thread, so that each chunk's last tile can prefetch the next chunk's
     * first (D2 f16 2-3% faster); a few runs per thread still balance the load; a batch of short decodes likewise
     * runs items of consecutive sequences. Else one item at a time: latest query block first, which with causal
     * masks cost most, so dynamic scheduling balances. */
    const size_t run = any_split                ? attn_chunk_run(items, max_chunks, nt)
                       : j.bseq && all_decode ? attn_chunk_run(items, 16, nt)
                                              : 1;

#ifdef ATTN_HAVE_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        int tid = 0;
#ifdef ATTN_HAVE_OPENMP
        tid = omp_get_thread_num();
#endif
        const attn_scratch sc = attn_scratch_carve(&j, scratch + (size_t)tid * j.scratch_floats);
        attn_job vt;
        if (j.packed) {
#ifdef ATTN_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
            for (size_t it = 0; it < npack; it++) {
                const size_t t0 = it % j.ntiles * j.bkv, nk = j.kv_len - t0 < j.bkv ? j.kv_len - t0 : j.bkv;
                float *kt = j.packed + it * j.tile_floats;
                if (j.bf16p)
                    attn_pack_tile_bf16p(&j, kt, kt + j.d * j.bkvp, sc.kr, it / j.ntiles / hk, it / j.ntiles % hk,
                                         t0, nk, attn_round16(nk));
                else
                    attn_pack_tile(&j, kt, j.v_in_place ? NULL : kt + j.d * j.bkvp, sc.kr, it / j.ntiles / hk,
                                   it / j.ntiles % hk, t0, nk, attn_round16(nk));
            }
        }
#ifdef ATTN_HAVE_OPENMP
#pragma omp for schedule(dynamic, run)
#endif
        for (size_t it = 0; it < items; it++) {
            const attn_item x = attn_item_at(&j, it);
            const attn_work *w = &j.work[x.b];
            const attn_job *v = attn_view(&j, x.b, &vt);
            if (!w->split) {
                attn_rows rw = attn_rows_setup(v, &sc, x.b, x.kvh, x.qb, 0, (int64_t)v->kv_len);
                if (run > 1)
                    attn_next_prefetch(&j, it, run, items, &rw);
                attn_rows_run(v, &sc, &rw);
                attn_rows_write(v, &sc, &rw);
                if (v->probs)
                    attn_rows_probs(v, &sc, &rw);
                continue;
            }
            const int64_t from = (int64_t)(x.c * v->chunk), to = (int64_t)(x.c * v->chunk + v->chunk);
            attn_rows rw = attn_rows_setup(v, &sc, x.b, x.kvh, 0, from, to);
            if ((it + 1) % run != 0 && x.c + 1 < w->nchunks && rw.uhi == to)
                rw.pf_end = to + (int64_t)v->bkv < (int64_t)v->kv_len ? to + (int64_t)v->bkv : (int64_t)v->kv_len;
            else
                attn_next_prefetch(&j, it, run, items, &rw);
            attn_rows_run(v, &sc, &rw);
            attn_part_store(v, &sc, &rw, attn_part(&j, w->pfirst + (it - w->first)));
        }
        if (any_split) {
#ifdef ATTN_HAVE_OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
            for (size_t bh = 0; bh < per_qb; bh++) {
                if (!j.work[bh / hk].split)
                    continue;
                const attn_job *v = attn_view(&j, bh / hk, &vt);
                attn_rows rw = attn_rows_setup(v, &sc, bh / hk, bh % hk, 0, 0, (int64_t)v->kv_len);
                attn_part_merge(v, &sc, &rw);
                attn_rows_write(v, &sc, &rw);
                if (v->probs)
                    attn_rows_probs(v, &sc, &rw);
            }
        }
    }
    attn_ws_release(ctx, ws, cached);
    return ATTN_OK;
}

attn_status attn_sdpa(const attn_ctx *ctx, const attn_sdpa_desc *d, const void *q, const void *k, const void *v,
                      void *out, float *probs)
{
    if (!d || !k || !v || (unsigned)d->kv_dtype > ATTN_BF16) /* int8 is KV storage only */
        return ATTN_EINVAL;
    const attn_kv_src src = {.kind = ATTN_KV_DENSE, .fmt = d->kv_dtype, .k = k, .v = v, .d = d->head_dim};
    return attn_sdpa_src(ctx, d, q, &src, out, probs);
}

attn_status attn_sdpa_src(const attn_ctx *ctx, const attn_sdpa_desc *d, const void *q, const attn_kv_src *src,
                          void *out, float *probs)
{
    if (!ctx || !d || !q || !src || !src->k || !src->v || !out || (unsigned)src->fmt > ATTN_I8 ||
        (unsigned)d->q_dtype > ATTN_BF16 || (unsigned)d->out_dtype > ATTN_BF16 ||
        (unsigned)d->math > ATTN_MATH_BF16 ||
        (src->kind == ATTN_KV_CACHE && (d->batch != 1 || src->ks.h % (ATTN_PAD * src->d))))
        return ATTN_EINVAL;
    const size_t hk = d->n_kv_heads ? d->n_kv_heads : d->n_heads, dv = d->v_dim ? d->v_dim : d->head_dim;
    if (!d->batch || !d->n_heads || !d->q_len || !d->kv_len || !d->head_dim || !hk || d->n_heads % hk)
        return ATTN_EINVAL;
    if ((unsigned)d->layout > ATTN_LAYOUT_BSHD || (unsigned)d->mask > ATTN_MASK_CAUSAL ||
        (d->window && d->mask != ATTN_MASK_CAUSAL) || !isfinite(d->scale) || (unsigned)d->positions > 1 ||
        !(d->softcap >= 0.0f && d->softcap < INFINITY))
        return ATTN_EINVAL;
    const size_t pos_max = (size_t)1 << 62;
    if (d->positions && (d->q_len > pos_max || d->q_pos0 > pos_max - d->q_len || d->kv_len > pos_max ||
                         d->kv_pos0 > pos_max - d->kv_len))
        return ATTN_ERANGE;
    if (attn_count_overflows(d->batch, d->n_heads, d->q_len, d->head_dim) ||
        attn_count_overflows(d->batch, hk, d->kv_len, d->head_dim) ||
        attn_count_overflows(d->batch, hk, d->kv_len, dv) || attn_count_overflows(d->batch, d->n_heads, d->q_len, dv) ||
        (probs && attn_count_overflows(d->batch, d->n_heads, d->q_len, d->kv_len)))
        return ATTN_ERANGE;
    if (d->bias) { /* the bias's last element must be addressable: (batch-1, n_heads-1, q_len-1, kv_len-1) */
        size_t last = d->kv_len - 1, t;
        if (attn_mul_overflow(d->batch - 1, d->bias_stride[0], &t) || __builtin_add_overflow(last, t, &last) ||
            attn_mul_overflow(d->n_heads - 1, d->bias_stride[1], &t) || __builtin_add_overflow(last, t, &last) ||
            attn_mul_overflow(d->q_len - 1, d->bias_stride[2], &t) || __builtin_add_overflow(last, t, &last) ||
            attn_mul_overflow(last + 1, sizeof(float), &t))
            return ATTN_ERANGE;
    }
    if (d->kv_valid)
        for (size_t b = 0; b < d->batch; b++)
            if (d->kv_valid[b] < 0 || (uint64_t)d->kv_valid[b] > d->kv_len)
                return ATTN_EINVAL;

    attn_job j = {
        .kern = ctx->kern, .q = q, .src = *src, .out = out, .probs = probs, .kv_valid = d->kv_valid, .lse = d->lse,
        .lse_st = {d->n_heads * d->q_len, d->q_len, 1},
        .sinks = d->sinks, .softcap = d->softcap, .slopes = d->alibi_slopes, .bias = d->bias,
        .bias_st = {d->bias_stride[0], d->bias_stride[1], d->bias_stride[2]},
        .mods = d->softcap != 0.0f || d->alibi_slopes || d->bias,
        .qpos0 = d->positions ? (int64_t)d->q_pos0 : (int64_t)d->kv_len - (int64_t)d->q_len,
        .kpos0 = d->positions ? (int64_t)d->kv_pos0 : 0,
        .qdt = d->q_dtype, .odt = d->out_dtype, .batch = d->batch, .heads = d->n_heads, .kv_heads = hk,
        .q_len = d->q_len, .kv_len = d->kv_len, .d = d->head_dim, .dv = dv, .window = d->window,
        .causal = d->mask == ATTN_MASK_CAUSAL, .scale = d->scale, .bkv0 = (size_t)ctx->block_kv,
    };
    attn_job_math(&j, ctx, d->math);
    j.qs = attn_layout_strides(d->layout, j.heads, j.q_len, j.d);
    if (src->kind == ATTN_KV_DENSE) {
        j.src.ks = attn_layout_strides(d->layout, hk, j.kv_len, j.d);
        j.src.vs = attn_layout_strides(d->layout, hk, j.kv_len, dv);
    }
    j.os = attn_layout_strides(d->layout, j.heads, j.q_len, dv);
    attn_job_shape(&j);
    j.rows_max = j.group * j.nq;
    j.bkvp = attn_round16(j.bkv);
    return attn_run(ctx, &j);
}

/* ---- attn_batch_attend: many sequences of a paged pool in one call ------------------------------------------- */

/* Keys per tile for a pool: the context's, cut to the largest multiple of ATTN_PAD that divides the page, so that
 * every tile lies in one page and is read in place. */
static size_t attn_pool_bkv(size_t bkv, size_t page)
{
    if (bkv < ATTN_PAD)
        return bkv;
    for (size_t t = bkv / ATTN_PAD * ATTN_PAD; t > ATTN_PAD; t -= ATTN_PAD)
        if (page % t == 0)
            return t;
    return ATTN_PAD;
}

attn_status attn_batch_attend(const attn_ctx *ctx, const attn_kv_pool *p, const attn_batch_desc *d, const float *q,
                              float *out, float *lse)
{
    if (!ctx || !p || !d || !d->seqs || !q || !out || !d->n_seqs || !d->n_heads ||
        (unsigned)d->mask > ATTN_MASK_CAUSAL || (d->window && d->mask != ATTN_MASK_CAUSAL) || !isfinite(d->scale) ||
        (unsigned)d->math > ATTN_MATH_BF16 || !(d->softcap >= 0.0f && d->softcap < INFINITY))
        return ATTN_EINVAL;
    size_t hk, hd, dv;
    attn_kv_pool_dims_(p, &hk, &hd, &dv);
    if (d->n_heads % hk)
        return ATTN_EINVAL;
    const size_t n = d->n_seqs, max_seqs = attn_pool_max_seqs(p);
    attn_bseq *bs = malloc(n * sizeof *bs);
    unsigned char *seen = calloc(max_seqs, 1);
    attn_status st = bs && seen ? ATTN_OK : ATTN_ENOMEM;
    size_t rows = 0, qmax = 0, kmax = 0;
    for (size_t s = 0; st == ATTN_OK && s < n; s++) {
        const uint32_t id = d->seqs[s];
        size_t len = 0;
        const uint32_t *pt = attn_pool_pages(p, id, &len);
        const size_t ql = d->q_lens ? d->q_lens[s] : 1;
        if (!pt || seen[id] || !ql || ql > len) {
            st = ATTN_EINVAL;
            break;
        }
        seen[id] = 1;
        bs[s] = (attn_bseq){.q_len = ql, .kv_len = len, .row0 = rows, .pt = pt};
        if (__builtin_add_overflow(rows, ql, &rows))
            st = ATTN_ERANGE;
        qmax = ql > qmax ? ql : qmax;
        kmax = len > kmax ? len : kmax;
    }
    free(seen);
    if (st == ATTN_OK && (attn_count_overflows(rows, d->n_heads, hd > dv ? hd : dv, 1) ||
                          kmax > ((size_t)1 << 62)))
        st = ATTN_ERANGE;
    if (st != ATTN_OK) {
        free(bs);
        return st;
    }
    attn_job j = {
        .kern = ctx->kern, .q = q, .out = out, .lse = lse, .lse_st = {0, 1, d->n_heads}, .sinks = d->sinks,
        .softcap = d->softcap, .slopes = d->alibi_slopes, .mods = d->softcap != 0.0f || d->alibi_slopes,
        .qdt = ATTN_F32, .odt = ATTN_F32, .batch = n, .heads = d->n_heads, .kv_heads = hk, .q_len = qmax,
        .kv_len = kmax, .d = hd, .dv = dv, .window = d->window, .causal = d->mask == ATTN_MASK_CAUSAL,
        .scale = d->scale, .bseq = bs,
    };
    attn_pool_src(p, &j.src);
    j.bkv0 = attn_pool_bkv((size_t)ctx->block_kv, j.src.ptok);
    attn_job_math(&j, ctx, d->math);
    /* [rows][heads][dim], each sequence's rows from its row0 on (attn_view moves q, out and lse there). */
    j.qs = (attn_strides){0, hd, d->n_heads * hd};
    j.os = (attn_strides){0, dv, d->n_heads * dv};
    /* Scratch for the largest block and tile of any sequence. */
    attn_job_shape(&j);
    j.rows_max = j.group * j.nq;
    j.bkvp = attn_round16(j.bkv);
    st = attn_run(ctx, &j);
    free(bs);
    return st;
}
