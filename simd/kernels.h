/* The kernel table: what differs per ISA and microarchitecture. The engine packs one tile of keys and values, then
 * calls the kernels of its context on a block of query rows; kernels never fail and never allocate (engine/ proves
 * their preconditions). */
#ifndef ATTN_KERNELS_H
#define ATTN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "attn.h"

/* Storage formats with kernel slots of their own: ATTN_F32, ATTN_F16, ATTN_BF16, ATTN_I8 index the slot arrays.
 * The I8 slots take the stored integers as they are (widened exactly): the engine multiplies each score by its
 * key's scale and each weight by its value row's. */
#define ATTN_NFMT 4

/* Packed widths are multiples of this (the widest vector, 16 floats), so every ISA runs whole vectors only. */
#define ATTN_PAD 16

/* Score modifiers (attn_sdpa_desc), applied by the modify slot between the scores and the softmax, in this order:
 * s = softcap * tanh(s * inv_cap); s += slope * (key position - query position); s += bias. */
typedef struct attn_score_mods {
    float softcap, inv_cap;   /* softcap 0: none */
    const float *slope;       /* NULL, or per row: the ALiBi slope of the row's head */
    const int64_t *rel;       /* with slope, per row: the position of the call's key 0 minus the row's query's */
    const float *const *bias; /* NULL, or per row: the row's bias at the call's key 0 (key j at bias[r][j]) */
    size_t t0;                /* the call's index of the tile's key 0 */
} attn_score_mods;

/* One block of query rows against one tile of keys. All pointers are 64-byte aligned scratch owned by the engine. */
typedef struct attn_tile_args {
    size_t rows;       /* query rows in the block */
    size_t d;          /* width of q and k rows */
    size_t nk;         /* keys in the tile; nkp = round_up(nk, ATTN_PAD) */
    size_t nkp;
    size_t dvp;        /* padded width of v and o rows, a multiple of ATTN_PAD */
    const float *q;    /* [rows][d], already multiplied by the softmax scale */
    const void *kt;    /* keys transposed in panels of ATTN_PAD keys, elements of type kdt: key j, dim c at
                          kt[(j / ATTN_PAD) * d * ATTN_PAD + c * ATTN_PAD + j % ATTN_PAD], keys nk..nkp-1 zero,
                          so a micro-kernel streams each panel contiguously (a tile the engine packed, or a KV
                          cache's key panels read in place); NULL: keys are rows kr */
    const void *kr;    /* when kt is NULL: key j at element j*ldk of kr (d a multiple of ATTN_PAD), rows of type
                          kdt used in place */
    size_t ldk;
    const void *kn;    /* NULL, or the next tile's keys (like kt or kr, knn of them): the score kernels prefetch
                          the next tile's lines as they read the same lines of this one, so memory streams while
                          the cores compute */
    const void *vn;    /* NULL, or the next tile's value rows (like vp, knn of them): decode-sized P.V prefetches
                          next value row j as it reads value row j */
    size_t knn;
    const void *vp;    /* value j at element j*ldv of vp: dvp columns, those from dv on zero (or absent when
                          dv == dvp), elements of type vdt; NULL when only scores are wanted */
    size_t ldv;
    attn_dtype kdt, vdt; /* the formats of kt and vp, which pick the scores and pv slots: ATTN_F32 for anything
                            the engine packed, a KV cache's type for keys and values read in place */
    const int *lo, *hi; /* per row: keys [lo, hi) of the tile are visible (0 <= lo, hi <= nk; lo >= hi: none) */
    float *s;          /* scratch [rows][nkp]: scores, then probabilities */
    float *m, *l;      /* per row: running maximum and running sum of exp(score - m) */
    float *o;          /* [rows][dvp]: running unnormalised output */
    float scale;       /* scores_bf16p only: the softmax scale, applied to each fp32 sum of bfloat16 products */
    int round_p;       /* softmax: store the weights rounded to bfloat16 (ATTN_MATH_BF16's P), l still summing the
                          unrounded ones */
    const attn_score_mods *mods; /* modify only */
    const float *ksc;  /* NULL, or per key j < nkp a factor each score s[r][j] is stored multiplied by (scores) */
    const float *vsc;  /* NULL, or per key j < nkp a factor each weight is stored multiplied by (softmax: l sums the
                          weights before it): an int8 tile's key and value row scales */
} attn_tile_args;

/* One block of a matrix product c = a b + bias, the layer's projections (b is a weight matrix, packed once). */
typedef struct attn_gemm_args {
    size_t rows, k;     /* rows of a and c; the reduction length */
    size_t nc;          /* columns of c written (the block's first nc); 1 <= nc <= ncp */
    size_t ncp;         /* packed columns in the block, a multiple of ATTN_PAD */
    const float *a;     /* row r, index i at a[r * lda + i] (no alignment needed) */
    size_t lda;
    const float *bp;    /* b packed like attn_tile_args.kt: column j, index i at
                           bp[(j / ATTN_PAD) * k * ATTN_PAD + i * ATTN_PAD + j % ATTN_PAD], 64-byte aligned */
    const float *bias;  /* NULL, or [ncp] 64-byte aligned (zero beyond nc) */
    float *c;           /* row r, column j at c[r * ldc + j] (no alignment needed); only columns < nc are written */
    size_t ldc;
} attn_gemm_args;

/* One signature per kernel kind, shared by every ISA so that prototypes cannot drift apart. */
#define ATTN_DECL_SCORES(name) void name(const attn_tile_args *a)
#define ATTN_DECL_SOFTMAX(name) void name(const attn_tile_args *a)
#define ATTN_DECL_PV(name) void name(const attn_tile_args *a)
#define ATTN_DECL_PROBS(name) void name(const attn_tile_args *a, float *dst, size_t ld)
#define ATTN_DECL_SCALE(name) void name(float *dst, const float *src, size_t n, float f)
#define ATTN_DECL_CVT(name) void name(float *dst, const uint16_t *src, size_t n)
#define ATTN_DECL_GEMM(name) void name(const attn_gemm_args *g)
#define ATTN_DECL_ROUND(name) void name(float *x, size_t n)
#define ATTN_DECL_PACK_BF16P(name) \
    void name(uint32_t *kt, uint32_t *vp, const uint16_t *k, size_t ldk, const uint16_t *v, size_t ldv, size_t nk, \
              size_t d, size_t dv, size_t dvp)
#define ATTN_DECL_NARROW(name) void name(uint16_t *dst, const float *src, size_t n, float f)
#define ATTN_DECL_MODIFY(name) void name(const attn_tile_args *a)

typedef struct attn_kernels {
    attn_isa isa;
    const char *table; /* the table's C name, "attn_kernels_avx512": what a registry line refers to */
    /* Register blocking the table was compiled with (rows x vectors of VW floats): scores and the GEMM, prefill
     * P.V, decode P.V. Reported by ATTN_VERBOSE and attn-bench --kernels; the kernels use their own constants. */
    int sc_rb, sc_nv, pv_rb, pv_nv, pvd_rb, pvd_nv;
    /* Storage formats (attn_dtype F32, F16, BF16) each have their own score, P.V and widening slots; the engine
     * picks one per tile from where the tile lives (a packed fp32 tile, or a KV cache's panels and rows read in
     * place), never a branch inside a kernel. */
    /* s[r][j] = q[r] . k[j] for every row and every j < nkp, from the transposed tile kt stored in the slot's
     * format; blocks of scores that no row of their group can see may be left unwritten. */
    ATTN_DECL_SCORES((*scores[ATTN_NFMT]));
    /* The same from key rows kr (kt NULL) stored in the slot's format: few query rows (decode), where transposing
     * K would cost more than the dot products. s[r][j] for nk <= j < nkp is 0. */
    ATTN_DECL_SCORES((*scores_rows[ATTN_NFMT]));
    /* a->mods applied to the scores s[r][j] of each row's visible keys [lo, hi) (others may change too, but the
     * bias is never read past key nk). The distance of ALiBi is exact up to 2^24 and rounded to fp32 past that. */
    ATTN_DECL_MODIFY((*modify));
    /* Online-softmax step for the visible keys of each row: m' = max(m, max s), o *= exp(m - m'),
     * s[r][j] = exp(s - m') inside [lo, hi) and 0 outside (j < nkp), l = l * exp(m - m') + sum s.
     * Rows with lo >= hi, or whose visible scores are all -inf (a bias masks them) keep m, l, o and get an all-zero
     * s row. With round_p the stored weights are rounded to bfloat16 (nearest even). */
    ATTN_DECL_SOFTMAX((*softmax));
    /* o[r] += sum over visible j of s[r][j] * v[j], v stored in the slot's format. Keys outside [lo, hi) are never
     * read for that row (so a NaN in a key a row cannot see stays out of that row). */
    ATTN_DECL_PV((*pv[ATTN_NFMT]));
    /* After the last tile, with the final m and l: dst[r*ld + j] = exp(s[r][j] - m[r]) / l[r] for visible j, 0 for
     * the other j < nk. Expects s to hold scores (call scores first). */
    ATTN_DECL_PROBS((*probs));
    /* dst[i] = src[i] * f for i < n (no alignment needed): the engine's row copies in and out of a block (scaled
     * queries, normalised outputs), vectorised here since the engine is built for the baseline ISA. */
    ATTN_DECL_SCALE((*scale));
    /* dst[i] = src[i] widened to fp32 (exact) for i < n: a KV cache's stored rows. [ATTN_F16] IEEE half,
     * [ATTN_BF16] bfloat16; [ATTN_F32] and [ATTN_I8] are NULL (a copy; the engine widens int8 itself). */
    ATTN_DECL_CVT((*cvt[ATTN_NFMT]));
    /* x[i] = x[i] rounded to bfloat16 (nearest even; a NaN stays a quiet NaN), kept as fp32, for i < n (no
     * alignment needed): ATTN_MATH_BF16's rounding of Q, K, V and P on every level. */
    ATTN_DECL_ROUND((*round_bf16));
    /* dst[i] = src[i] * f rounded to nearest even, for i < n (no alignment needed): outputs stored as [ATTN_F16]
     * IEEE half or [ATTN_BF16] bfloat16 (a NaN stays a quiet NaN); [ATTN_F32] is NULL (scale), [ATTN_I8] NULL. */
    ATTN_DECL_NARROW((*narrow[ATTN_NFMT]));
    /* ATTN_MATH_BF16 on bfloat16 dot-product instructions (NULL where the level has none: the engine then rounds
     * to bfloat16 and runs the fp32 slots). Operands are bfloat16 pairs along the reduction, 32-bit words whose
     * lower half is the even element. scores_bf16p: as scores, s = scale * (q . k), with q [rows][ceil(d/2)] pair
     * words (dimensions 2c, 2c+1; a zero pads odd d) and kt in panels of ATTN_PAD keys, word (c, key) at
     * kt[(key / ATTN_PAD) * ceil(d/2) * ATTN_PAD + c * ATTN_PAD + key % ATTN_PAD] (keys nk..nkp-1 zero).
     * pv_bf16p: as pv after the softmax, rounding each row's weights s[r][0..nkp) to bfloat16 pair words in place
     * (s is clobbered), with vp's word (key pair j2, column c) at vp[j2 * ldv + c] (keys 2 j2, 2 j2 + 1; keys
     * from nk and columns from dv zero). Keys outside a row's [lo, hi) are never read for that row. */
    ATTN_DECL_SCORES((*scores_bf16p));
    ATTN_DECL_PV((*pv_bf16p));
    /* Packs nk bfloat16 key rows (key t at k + t * ldk, d elements) and value rows (v + t * ldv, dv elements) into
     * those layouts: kt's panels for keys up to round_up(nk, ATTN_PAD), vp's key pairs up to round_up(nk, 2) (vp
     * NULL: keys only); keys from nk and columns from dv are zero. NULL where the level has no bf16 slots. */
    ATTN_DECL_PACK_BF16P((*pack_bf16p));
    /* Decode-sized blocks in ATTN_MATH_BF16 on the dot products, K and V bfloat16 rows read in place (NULL where
     * the level has none: the engine then widens the rows in registers, scores_rows[ATTN_BF16] and pv[ATTN_BF16]).
     * d and dvp are multiples of 32. scores_rows_bf16p: as scores_rows, s = scale * (q . k), q as scores_bf16p's
     * pair words, key j at element j * ldk of kr (any 2-byte alignment). pv_rows_bf16p: as pv_bf16p (rounding
     * s in place to pair words), value j at element j * ldv of vp, dvp columns. */
    ATTN_DECL_SCORES((*scores_rows_bf16p));
    ATTN_DECL_PV((*pv_rows_bf16p));
    /* c[r][j] = bias[j] + sum_i a[r][i] * b[i][j] for r < rows, j < nc: one column block of a projection. */
    ATTN_DECL_GEMM((*gemm));
} attn_kernels;

/* CPU features, detected once (pthread_once). */
enum {
    ATTN_CPU_AVX2 = 1u << 0,        /* AVX2 + FMA + F16C + OS saves YMM */
    ATTN_CPU_AVX512 = 1u << 1,      /* AVX-512F + OS saves opmask/ZMM */
    ATTN_CPU_NEON = 1u << 2,        /* AArch64 Advanced SIMD */
    ATTN_CPU_AVX512_BF16 = 1u << 3, /* vdpbf16ps */
    ATTN_CPU_AVX512_FP16 = 1u << 4, /* Golden Cove and later Intel server cores */
    ATTN_CPU_AMX = 1u << 5,         /* AMX-TILE + AMX-BF16, tile state enabled in XCR0 */
    ATTN_CPU_NEON_BF16 = 1u << 6,   /* AArch64 FEAT_BF16 (BFDOT), from the kernel's HWCAP2 */
};
typedef enum attn_vendor { ATTN_VENDOR_OTHER = 0, ATTN_VENDOR_AMD, ATTN_VENDOR_INTEL } attn_vendor;
typedef struct attn_cpu_info {
    unsigned flags;           /* ATTN_CPU_* */
    attn_vendor vendor;
    unsigned family, model;   /* display family and model (a hypervisor may report other values than the part's) */
    unsigned l1d_kib, l2_kib; /* per core, from CPUID's cache leaves; 0 if unknown */
} attn_cpu_info;
const attn_cpu_info *attn_cpu_get(void);
unsigned attn_cpu_flags(void);

/* One kernel variant: a kernel table tuned for a family of microarchitectures, with its cache blocking. The
 * registry (simd/variants.c) lists them; within a level the first is the generic one. */
typedef struct attn_variant {
    attn_isa level;
    const char *name;         /* "level/variant", as attn_ctx_kernels prints it */
    const attn_kernels *kern;
    int (*prefer)(const attn_cpu_info *ci); /* 1: the variant for this CPU; NULL for the generic one */
    int block_q, block_kv;    /* default query rows per block and keys per tile */
    size_t split_keys;        /* split-KV chunk in keys (rounded up to a multiple of block_kv) */
    const char *how;          /* how the blocking was chosen */
} attn_variant;

size_t attn_variant_count(void);
const attn_variant *attn_variant_at(size_t i); /* NULL past the end */
/* 1 if level is built in and this CPU and OS run it. */
int attn_level_runs(attn_isa level);
/* The variant of level for this CPU (its preferred one, else the generic); NULL if the level does not run. */
const attn_variant *attn_variant_pick(attn_isa level);
/* The same decision for the CPU ci describes, whether or not this one runs the level (tests); NULL if none is built. */
const attn_variant *attn_variant_for(attn_isa level, const attn_cpu_info *ci);
/* The variant named "level/variant", or "variant" within level; NULL if there is none. */
const attn_variant *attn_variant_find(const char *name, attn_isa level);
/* The best level this CPU runs. */
attn_isa attn_isa_best(void);

extern const attn_kernels attn_kernels_scalar;
#if ATTN_HAVE_AVX2
extern const attn_kernels attn_kernels_avx2;
#endif
#if ATTN_HAVE_AVX512
extern const attn_kernels attn_kernels_avx512;
#endif
#if ATTN_HAVE_AVX512BF16
extern const attn_kernels attn_kernels_avx512bf16;
#endif
#if ATTN_HAVE_AMX
extern const attn_kernels attn_kernels_amx;
#endif
#if ATTN_HAVE_NEON
extern const attn_kernels attn_kernels_neon;
#endif
#if ATTN_HAVE_NEONBF16
extern const attn_kernels attn_kernels_neonbf16;
#endif

#endif
