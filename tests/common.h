/* Helpers shared by attn-tests (Criterion) and kernel-check (standalone, also under qemu): a seeded PRNG,
 * guarded output buffers, random problems and the float64 reference that every ISA is checked against.
 * Nothing here uses Criterion or fork(), so kernel-check can link it and run where fork hangs. */
#ifndef ATTN_TESTS_COMMON_H
#define ATTN_TESTS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "attn.h"

/* Max abs error allowed on out and probs, relative to max(1, max|ref|), and on each probs row sum. */
#define TC_TOL 2e-5
#define TC_ROWSUM_TOL 1e-5

/* ---- seeds and PRNG (splitmix64: portable, and every sub-seed is a pure function of the test seed) ---- */

typedef struct tc_rng {
    uint64_t s;
} tc_rng;

void tc_rng_init(tc_rng *r, uint64_t seed);
uint64_t tc_rng_u64(tc_rng *r);
uint32_t tc_rng_below(tc_rng *r, uint32_t n); /* uniform in [0, n); n >= 1 */
float tc_rng_float(tc_rng *r, float lo, float hi);
/* A well-mixed sub-seed, so case i of a run can be replayed from the run's seed alone. */
uint64_t tc_mix(uint64_t seed, uint64_t i);

/* The run's seed: ATTN_TEST_SEED (decimal or 0x hex) if set, else a fresh time/pid/clock based one. Fixed for
 * the life of the process. */
uint64_t tc_seed(void);

/* ---- ISAs ---- */

/* Room for every ISA level (the attn_isa values) in the arrays below. */
#define TC_MAX_ISAS 8

/* The ISA levels this library and CPU run, in the order of the kernel variant registry (SCALAR first), read from
 * attn_kernels_name(); returns how many (at least 1). */
int tc_isas(attn_isa out[TC_MAX_ISAS]);
/* The levels built in (some variant in attn_kernels_name) that this CPU does not run, e.g. " amx" (each name after a
 * space; "" if none), into buf of size n: the tests say which levels they skip. */
void tc_isas_skipped(char *buf, size_t n);
/* A context for one ISA; threads 0 = default. Blocks 0 = default (or the env variables). */
attn_status tc_ctx_create(attn_ctx **ctx, attn_isa isa, int threads, int block_q, int block_kv);

/* ---- guarded buffers ---- */

/* Outputs sit TC_GUARD floats after the start of their allocation and are followed by TC_GUARD more: an odd count,
 * so the pointer the library sees is not vector-aligned (the API promises nothing about alignment). */
#define TC_GUARD 7
#define TC_GUARD_BITS 0x7f8badf0u  /* a signalling-NaN pattern, compared bitwise */
#define TC_POISON_BITS 0x7fc0deadu /* a quiet NaN: an output element the library forgot stays NaN and fails */

typedef struct tc_buf {
    float *p;    /* n usable floats */
    size_t n;
    float *base; /* the allocation */
} tc_buf;

int tc_buf_alloc(tc_buf *b, size_t n); /* 0 on success; guards filled, data poisoned */
void tc_buf_fill_bits(tc_buf *b, uint32_t bits);
int tc_buf_guards_ok(const tc_buf *b);
/* 1 if every data element still holds exactly `bits`. */
int tc_buf_all_bits(const tc_buf *b, uint32_t bits);
void tc_buf_free(tc_buf *b);
uint32_t tc_f2u(float f);
float tc_u2f(uint32_t u);

/* ---- problems ---- */

typedef enum tc_fill {
    TC_FILL_UNIFORM = 0, /* q, k, v uniform in [-1, 1] */
    TC_FILL_INT_QK = 1,  /* q, k integers in [-8, 8], v uniform: every fp32 score is exact (large-logit test) */
} tc_fill;

typedef struct tc_problem {
    attn_sdpa_desc d;            /* exactly what attn_sdpa gets; d.kv_valid points at kv_valid below */
    size_t n_kv_heads, v_dim;    /* resolved defaults */
    size_t nq, nk, nv, nout, nprobs;
    float *q, *k, *v;            /* one float past an aligned start: the library must not assume alignment */
    int32_t *kv_valid;           /* owned copy, or NULL */
    uint64_t seed;               /* what the inputs were drawn from */
    float *q_alloc, *k_alloc, *v_alloc;
} tc_problem;

/* A descriptor with only the sizes set; everything else 0 (defaults, BHSD, no mask). */
attn_sdpa_desc tc_shape(size_t batch, size_t heads, size_t kv_heads, size_t q_len, size_t kv_len, size_t head_dim,
                        size_t v_dim);

/* Copies d (and d->kv_valid) and allocates inputs (contents undefined until tc_problem_fill). 0 on success. */
int tc_problem_init(tc_problem *p, const attn_sdpa_desc *d);
void tc_problem_fill(tc_problem *p, uint64_t seed, tc_fill kind);
void tc_problem_free(tc_problem *p);
/* Random kv_valid for `batch` sequences, with 0 and kv_len drawn often (they are the edge cases). */
void tc_random_kv_valid(tc_rng *r, int32_t *kv_valid, size_t batch, size_t kv_len);

/* Element offset of (b, h, s, x) in a q/k/v/out tensor of the given layout. */
size_t tc_index(attn_layout layout, size_t heads, size_t seq, size_t dim, size_t b, size_t h, size_t s,
                size_t x);

/* "b=2 h=8/2 q=17 kv=257 d=80 dv=64 BSHD causal win=5 kv_valid=[3,0] scale=0.5" */
void tc_desc_str(const attn_sdpa_desc *d, char *buf, size_t len);

/* ---- the check ---- */

typedef struct tc_stats {
    unsigned long cases;
    double err_out;        /* max |out - ref| / max(1, max|ref|) */
    double err_probs;      /* max |probs - ref| */
    double err_rowsum;     /* max |sum of a probs row - 1| over rows that see a key */
    size_t nonfinite_rows; /* rows not compared because the reference reads a non-finite input */
} tc_stats;

/* The float64 reference for one query row (b, h, i): writes ref_out[v_dim] and, if ref_probs is not NULL,
 * ref_probs[kv_len] (0 where masked). Returns the number of visible keys, or -1 when the row reads a non-finite
 * score or value (its result is then not defined by the contract beyond "only this row"). */
long tc_ref_row(const tc_problem *p, size_t b, size_t h, size_t i, double *ref_out, double *ref_probs,
                double *scratch);

/* Runs p through attn_sdpa on ctx with NaN-poisoned, guarded outputs, then checks: status OK, guards intact,
 * inputs unchanged, out (and probs when want_probs) within tolerance of the reference, fully masked rows exactly
 * zero, masked probs exactly zero, probs rows summing to 1. Returns 0 on pass, else 1 with the reason (seed,
 * ISA, shape, element) in msg. Adds to st when st is not NULL. */
int tc_check(const attn_ctx *ctx, const tc_problem *p, int want_probs, tc_stats *st, char *msg, size_t len);

/* tc_check on a fresh default context for every ISA in tc_isas(); st is indexed by attn_isa (TC_MAX_ISAS entries). */
int tc_check_isas(const tc_problem *p, int want_probs, tc_stats st[TC_MAX_ISAS], char *msg, size_t len);

/* Runs attn_sdpa and hands back malloc'd copies of out and probs (probs only when want_probs) for bitwise
 * comparisons. */
attn_status tc_run(const attn_ctx *ctx, const tc_problem *p, int want_probs, float **out, float **probs);

/* Builds a problem from d, fills it from tc_mix(tc_seed(), case_id) and runs tc_check_isas on it. */
int tc_check_desc(const attn_sdpa_desc *d, uint64_t case_id, tc_fill kind, int want_probs, tc_stats st[TC_MAX_ISAS],
                  char *msg, size_t len);

/* ---- the KV cache ---- */

/* x as a cache of type t stores it, by a conversion independent of the library's (the compiler's _Float16 for
 * half, frexp/nearbyint for bfloat16). */
float tc_stored(attn_dtype t, float x);
/* A row x[0..n) as a cache or pool of type t stores and reads it, in place: tc_stored per element, or for ATTN_I8
 * the row's int8 quantisation (attn_dtype) times its scale. */
void tc_stored_row(attn_dtype t, float *x, size_t n);

typedef struct tc_kv_case {
    size_t hk, group, d, len, q_len;
    attn_mask mask;
} tc_kv_case;

/* Appends len random tokens to a fresh cache of type t in random chunks, decodes the last q_len positions on ctx
 * into a guarded, poisoned buffer and compares with the float64 reference on the stored values (tolerance as in
 * tc_check). Returns 0 on pass, else 1 with the reason in msg; *worst gets the largest relative error seen. */
int tc_check_decode(const attn_ctx *ctx, attn_dtype t, const tc_kv_case *kc, uint64_t seed, double *worst,
                    char *msg, size_t len);

/* One stderr line per ISA with the max errors, so a run's log can be quoted. */
void tc_print_stats(const char *what, const tc_stats st[TC_MAX_ISAS]);

void tc_stats_merge(tc_stats *into, const tc_stats *from);
/* "avx2: 12 cases, max err out 1.2e-07 probs 3.0e-08 rowsum 1.1e-07" */
void tc_stats_str(attn_isa isa, const tc_stats *st, char *buf, size_t len);

/* For the Criterion files only (a macro, so this header stays free of Criterion): check d on every ISA. */
#define TC_CR_CHECK(d, case_id, kind, want_probs, st)                                                       \
    do {                                                                                                    \
        char tc_msg_[1024];                                                                                 \
        int tc_bad_ = tc_check_desc((d), (case_id), (kind), (want_probs), (st), tc_msg_, sizeof tc_msg_);   \
        cr_assert(!tc_bad_, "%s", tc_msg_);                                                                 \
    } while (0)

/* ---- typed tensors: F16/BF16 inputs and outputs, ATTN_MATH_BF16 (test_dtypes.c, kernel-check) ---- */

/* Poison of a 16-bit output element (a quiet NaN of its type: one the library forgot fails every comparison), and
 * the guard pattern around it (a signalling NaN, compared bitwise). */
#define TC_F16_POISON 0x7e01u
#define TC_BF16_POISON 0x7fc1u
#define TC_F16_GUARD 0x7d5au
#define TC_BF16_GUARD 0x7f8bu

/* Conversions independent of the library's (simd/half.h): half through the compiler's _Float16, bfloat16 through
 * tc_stored (frexp/nearbyint), both rounding to nearest even; a NaN becomes a quiet NaN of the same sign and top
 * payload bits (bf16: the fp32 bits' high half with the quiet bit set, as vcvtneps2bf16 does). */
uint16_t tc_f16_bits(float x);
uint16_t tc_bf16_bits(float x);
float tc_f16_value(uint16_t h);
float tc_bf16_value(uint16_t h);
/* x rounded to bfloat16, kept as fp32. */
float tc_bf16_round(float x);
size_t tc_dtype_size(attn_dtype t);
const char *tc_dtype_name(attn_dtype t); /* "f32", "f16", "bf16", "?" */
/* Element i of a tensor of type t, widened; element i set to x rounded to t. */
float tc_elem_get(const void *p, attn_dtype t, size_t i);
void tc_elem_set(void *p, attn_dtype t, size_t i, float x);

/* A problem whose tensors are stored in the desc's q_dtype and kv_dtype. p.d is what attn_sdpa gets (dtypes,
 * out_dtype and math included; set those fields in p.d between runs as needed); p.q, p.k, p.v hold the stored
 * values widened to fp32 (what the reference reads). */
typedef struct tc_typed {
    tc_problem p;
    void *q, *k, *v; /* one element past an aligned start */
    void *q_alloc, *k_alloc, *v_alloc;
} tc_typed;

int tc_typed_init(tc_typed *t, const attn_sdpa_desc *d); /* 0 on success; contents undefined until filled */
/* q, k uniform in [-amp, amp], v uniform in [-1, 1], rounded to their types. */
void tc_typed_fill(tc_typed *t, uint64_t seed, float amp);
/* Rounds p.q, p.k, p.v to the tensors' types and stores them (after a caller wrote values into p). */
void tc_typed_store(tc_typed *t);
/* dst: src's desc and values with q in qdt and k, v in kvdt, the values first rounded to bfloat16 when round_bf16
 * (else they must be representable in the new types to be carried exactly). 0 on success. */
int tc_typed_convert(tc_typed *dst, const tc_typed *src, attn_dtype qdt, attn_dtype kvdt, int round_bf16);
void tc_typed_free(tc_typed *t);

/* The float64 reference of a typed problem for one math mode: from the stored values (ATTN_MATH_F32) or from the
 * stored values rounded to bfloat16 (ATTN_MATH_BF16: q, k and v; P is not rounded), scale * dot in double. */
typedef struct tc_typed_ref {
    attn_math math;
    double *out;   /* [nout], in the output's layout */
    double *probs; /* NULL, or [nprobs] */
    double *vmax;  /* per row (b, h, i) = (b * n_heads + h) * q_len + i: max |v| over the value rows it sees */
    long *nvis;    /* per row: the keys it sees (0: none) */
} tc_typed_ref;

int tc_typed_ref_init(tc_typed_ref *r, const tc_typed *t, attn_math math, int want_probs); /* 0, or -1 (memory) */
void tc_typed_ref_free(tc_typed_ref *r);

/* The contract's allowance for one output element (attn.h, DESIGN 3b): ATTN_MATH_F32 TC_TOL * max(1, |ref|),
 * ATTN_MATH_BF16 1e-2 * vmax; plus the output's own rounding, 2^-11 |ref| (F16) or 2^-8 |ref| (BF16). */
double tc_typed_tol(attn_math math, attn_dtype out, double ref, double vmax);

/* Runs t (p.d as it stands; p.d.math must be ref->math) through attn_sdpa on ctx with a poisoned, guarded output of
 * p.d.out_dtype (and fp32 probs when want_probs; ref must then have probs) and checks: status OK, guards intact,
 * typed inputs unchanged, every output element within tc_typed_tol of the reference, rows that see no key exactly
 * zero, probs within TC_TOL of the reference (masked ones exactly 0, rows summing to 1). st (may be NULL) gets the
 * largest error of out relative to max(1, |ref|) (ATTN_MATH_F32) or to vmax (ATTN_MATH_BF16). keep_out /
 * keep_probs (may be NULL) receive malloc'd copies of the results for bitwise comparisons. 0 on pass, else 1 with
 * the reason (seed, ISA, shape, types, element) in msg. */
int tc_typed_check(const attn_ctx *ctx, const tc_typed *t, const tc_typed_ref *ref, int want_probs, tc_stats *st,
                   void **keep_out, float **keep_probs, char *msg, size_t len);

/* 1 when d is decode-shaped enough for attn_sdpa to read keys that need no rounding as rows in place: a KV head's
 * only query block of at most 16 rows (n_heads / n_kv_heads * q_len <= 16, with block_q >= 16) and head_dim a
 * multiple of 16 (engine/sdpa.c attn_tile_at, k_rows). */
int tc_keys_read_in_place(const attn_sdpa_desc *d);
/* 1 when ATTN_TEST_STRICT_DTYPES is set to something other than 0: test_dtypes.c then fails the bitwise
 * differences it otherwise reports on its known paths. */
int tc_typed_strict(void);

/* Runs t with a poisoned output and hands back malloc'd copies of out and probs (probs only when want_probs). */
attn_status tc_typed_run(const attn_ctx *ctx, const tc_typed *t, int want_probs, void **out, float **probs);

/* Bitwise comparison of two results of t's shape (out of t's out_dtype, probs may be NULL): 0 if identical, else 1
 * with the first differing element in msg (seed, ctx's ISA, shape), prefixed by what. */
int tc_typed_same(const attn_ctx *ctx, const tc_typed *t, const void *out_a, const float *probs_a,
                  const void *out_b, const float *probs_b, const char *what, char *msg, size_t len);

/* ---- the self-attention layer ---- */

/* Max error allowed on attn_self_attention's y, relative to max(1, max|ref y|), and on its probs. The fp32 layer
 * rounds in three projections, the scores, the softmax and the weighted sums; on the shapes tested (reductions up
 * to 384 long) every ISA stays below ~2e-6 of the output's scale and ~1e-6 on probs (torch's own fp32 result is
 * off by ~3e-7 on its fixtures), so 1e-5 leaves 5x room while a wrong index, head or bias is off by ~1e-1. */
#define TC_LAYER_TOL 1e-5

/* Columns of the layer's y: d_model with an output projection, else n_heads * head_dim. */
size_t tc_layer_width(const attn_layer *w);
/* Floats of each weight (in attn_layer's field order wq, wk, wv, wo, bq, bk, bv, bo; 0 for a NULL one). */
void tc_layer_sizes(const attn_layer *w, size_t sizes[8]);

/* attn.h's formula for attn_self_attention in float64 (products and sums in double from the fp32 inputs):
 * y [n][tc_layer_width(w)], probs NULL or [n_heads][n][n] with exact 0 where masked. 0 on success, -1 if out of
 * memory. */
int tc_ref_layer(const attn_layer *w, const float *x, size_t n, attn_mask mask, double *y, double *probs);

typedef struct tc_layer_stats {
    unsigned long cases;
    double err_y;      /* max |y - ref| / max(1, max|ref|) */
    double err_probs;  /* max |probs - ref| */
    double err_rowsum; /* max |sum of a probs row - 1| */
} tc_layer_stats;

/* Runs attn_self_attention on ctx with y (and probs when want_probs) in NaN-poisoned, guarded buffers and checks:
 * status OK, guards intact, x and the weights unchanged, y within tol * max(1, max|ref_y|) of ref_y, probs within
 * tol of ref_probs (ref_probs is only read when want_probs), every probs row summing to 1 within TC_ROWSUM_TOL and
 * masked probs exactly 0. ref_y/ref_probs: tc_ref_layer's output or another reference (torch's) widened to double.
 * Returns 0 on pass, else 1 with the reason in msg. Adds to st when st is not NULL. */
int tc_check_layer(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n, attn_mask mask,
                   int want_probs, const double *ref_y, const double *ref_probs, double tol, tc_layer_stats *st,
                   char *msg, size_t len);

void tc_layer_stats_merge(tc_layer_stats *into, const tc_layer_stats *from);
/* "avx2  :   12 cases, max err y 1.2e-07 probs 3.0e-08 rowsum 1.1e-07" */
void tc_layer_stats_str(attn_isa isa, const tc_layer_stats *st, char *buf, size_t len);

/* ==== robustness checks: fault-check, concurrency-check, long-check, test_edges.c ==================== */

/* tc_isas filtered by the ATTN_ISA environment variable: unset, empty or "auto" gives tc_isas(); a concrete name
 * gives just that ISA when this CPU runs it (else none). kernel-check-env (tests/checks.mk) is kernel_check.c built
 * with tc_isas redirected here, so that ATTN_ISA=scalar keeps valgrind on the scalar kernels. */
int tc_isas_env(attn_isa out[TC_MAX_ISAS]);

/* The caller's floating-point control state: MXCSR's control bits (DAZ, exception masks, rounding, FTZ; the sticky
 * exception flags are left out, arithmetic sets them) on x86-64, FPCR on AArch64, 0 elsewhere. */
uint32_t tc_fp_control(void);
/* Sets the flush-to-zero and denormals-are-zero controls (x86-64: MXCSR FTZ and DAZ; AArch64: FPCR.FZ and FZ16) on
 * when on is 1, off when 0; returns 0, or -1 where the architecture has no such controls known here or the setting
 * does not stick (valgrind ignores MXCSR.FTZ/DAZ). */
int tc_fp_set_flush(int on);

/* With FTZ/DAZ (FPCR.FZ) off and then on, calls every computing entry point on ctx (attn_sdpa with probs through the
 * packed, per-block and split-KV paths, KV cache append and attn_decode in F32/F16/BF16, attn_linear,
 * attn_self_attention) and checks that the calling thread's control state is the same after each call as before.
 * Then, with flushing off, checks denormal inputs (V rows of subnormals, K and Q of subnormals, a scale that makes
 * scores subnormal) against the float64 reference, relative to the size of the reference row so that a flush to
 * zero shows. Restores the caller's state. Where flushing cannot be turned on (valgrind), only the "off" pass
 * runs. Returns 0 on pass, else 1 with the reason in msg. Fork-free. */
int tc_fp_env_check(const attn_ctx *ctx, char *msg, size_t len);

#endif
