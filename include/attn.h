/* attn — transformer attention on CPUs. The only public header of libattn.a.
 * All functions are thread-safe; a context is immutable after creation and may be shared by threads.
 * Link: -lattn -lsleef -lm -fopenmp (or `pkg-config --static --libs attn`). */
#ifndef ATTN_H
#define ATTN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ATTN_VERSION_MAJOR 0
#define ATTN_VERSION_MINOR 2
#define ATTN_VERSION_PATCH 0

/* Every public function that can fail returns one of these. Errors are returned before anything is written to
 * caller-visible outputs. */
typedef enum attn_status {
    ATTN_OK = 0,
    ATTN_EINVAL = -1,  /* NULL where data is needed, a zero size, inconsistent shape, bad enum or env value */
    ATTN_ERANGE = -2,  /* a size whose element or byte count overflows size_t; KV cache capacity exceeded */
    ATTN_ENOMEM = -3,  /* allocation failed (nothing partially written to caller-visible state) */
    ATTN_ENOTSUP = -4, /* requested ISA or dtype not built in or not on this CPU, or feature not built yet */
} attn_status;

/* A static English description of s; never NULL (unknown codes give "unknown status"). */
const char *attn_strerror(attn_status s);

/* The library version as "MAJOR.MINOR.PATCH"; a static string. */
const char *attn_version(void);

/* Kernel sets. AUTO means "the best this CPU runs" (avx512bf16 > avx512 > avx2 > scalar on x86-64, neonbf16 > neon
 * on aarch64). A bf16 level runs ATTN_MATH_F32 on the kernels of the level below it and ATTN_MATH_BF16 on its own
 * bfloat16 dot-product instructions; the other levels run ATTN_MATH_BF16 by rounding to bfloat16 and fp32 FMAs, to
 * the same rounding points. */
typedef enum attn_isa {
    ATTN_ISA_AUTO = 0,
    ATTN_ISA_SCALAR,
    ATTN_ISA_AVX2,        /* AVX2 + FMA + F16C */
    ATTN_ISA_AVX512,      /* AVX-512 F/BW/VL */
    ATTN_ISA_NEON,        /* AArch64 Advanced SIMD */
    ATTN_ISA_AVX512_BF16, /* "avx512bf16": AVX-512 + AVX512_BF16 (vdpbf16ps) */
    ATTN_ISA_AMX,         /* "amx": AVX512_BF16 + AMX-TILE + AMX-BF16, the OS saving tile state and (Linux)
                             granting it to the process: ATTN_MATH_BF16 on tdpbf16ps tiles, fp32 math on the
                             AVX-512 kernels */
    ATTN_ISA_NEON_BF16,   /* "neonbf16": AArch64 Advanced SIMD + FEAT_BF16 (BFDOT) */
} attn_isa;

/* "auto", "scalar", "avx2", "avx512", "neon", "avx512bf16", "amx", "neonbf16"; "unknown" for values outside the
 * enum. Never NULL. */
const char *attn_isa_name(attn_isa isa);

/* 1 if the kernel set is compiled into this library and this CPU (and OS) runs it, else 0.
 * ATTN_ISA_AUTO and ATTN_ISA_SCALAR always give 1. */
int attn_isa_supported(attn_isa isa);

/* Context settings. Each field: 0 means "take the environment variable, else the default".
 * Precedence: a non-zero field here, then the ATTN_* environment variable, then the default. */
typedef struct attn_config {
    int num_threads; /* threads per call, >= 1; 0: ATTN_NUM_THREADS, else omp_get_max_threads() */
    attn_isa isa;    /* kernel set; AUTO: ATTN_ISA, else the best this CPU supports */
    int block_q;     /* query rows per work block, 1..4096, the heads of a GQA group folded in (positions per block:
                        block_q / group, at least 1); 0: ATTN_BLOCK_Q, else the kernel variant's default
                        (256; 512 for avx512/spr) */
    int block_kv;    /* keys per tile, 1..4096; 0: ATTN_BLOCK_KV, else the kernel variant's default (256) */
    const char *kernels; /* kernel variant, as attn_ctx_kernels prints it ("avx512/zen4") or its part after the
                            slash within the chosen ISA; NULL: ATTN_KERNELS, else the variant tuned for this CPU.
                            A full name also picks its ISA when isa is AUTO; an unknown name, or one of another
                            ISA than isa, is ATTN_EINVAL. Any variant of an ISA the CPU runs may be forced. */
} attn_config;

/* An execution context: the chosen kernel table, thread count and tile sizes. Immutable after creation, so one
 * context may be shared by any number of threads calling attn concurrently. */
typedef struct attn_ctx attn_ctx;

/* Creates a context. cfg may be NULL (all defaults). Reads the ATTN_* environment variables once, here.
 * Returns ATTN_EINVAL for a negative/out-of-range field or a bad environment value (with ATTN_VERBOSE=1 the reason
 * goes to stderr), ATTN_ENOTSUP for an ISA that is not built in or not on this CPU, ATTN_ENOMEM.
 * *out is set only on ATTN_OK; the caller frees it with attn_ctx_destroy. */
attn_status attn_ctx_create(attn_ctx **out, const attn_config *cfg);

/* Frees a context and the workspace it keeps between calls (up to 64 MiB: the scratch and packed K/V tiles of its
 * largest recent call, reused by the next call that finds it free); NULL is fine. No call may be using it. */
void attn_ctx_destroy(attn_ctx *ctx);

/* The ISA the context actually uses (never AUTO); ATTN_ISA_SCALAR for NULL. */
attn_isa attn_ctx_isa(const attn_ctx *ctx);

/* The number of OpenMP threads one call uses (>= 1); 0 for NULL. */
int attn_ctx_threads(const attn_ctx *ctx);

/* The kernel variant the context uses, "level/variant" (e.g. "avx512/zen4", "scalar/generic"): the ISA level and
 * the microarchitecture its register and cache blocking were tuned for. A static string; "scalar/generic" for NULL. */
const char *attn_ctx_kernels(const attn_ctx *ctx);

/* The kernel variants built into this library, i = 0, 1, ...: "level/variant" names; NULL past the last. */
const char *attn_kernels_name(size_t i);

/* 1 if name is a built-in variant ("level/variant") of an ISA this CPU runs, else 0 (NULL included). */
int attn_kernels_supported(const char *name);

/* Memory layouts of q, k, v and out. BHSD: [batch][head][seq][dim]; BSHD: [batch][seq][head][dim]. */
typedef enum attn_layout { ATTN_LAYOUT_BHSD = 0, ATTN_LAYOUT_BSHD = 1 } attn_layout;

/* NONE: every query sees every key. CAUSAL: a query sees the keys at positions up to its own (attn_sdpa_desc
 * positions; by default bottom-right aligned: query i at position i + kv_len - q_len, key j at j). */
typedef enum attn_mask { ATTN_MASK_NONE = 0, ATTN_MASK_CAUSAL = 1 } attn_mask;

/* Element types of tensors. Half and bfloat16 are stored rounded to nearest even; F16 is IEEE binary16.
 * ATTN_I8 is KV storage only (attn_kv_pool, attn_kv_cache; ATTN_EINVAL elsewhere): each (token, KV head) row x of
 * K and of V is stored as int8 x_q = nearbyintf(x / s) with s = max|x| / 127 (an fp32 division, ties to even;
 * s = 0 for an all-zero row; x_q saturates at +-127, which only a subnormal s can pass) and read as x_q * s. */
typedef enum attn_dtype { ATTN_F32 = 0, ATTN_F16 = 1, ATTN_BF16 = 2, ATTN_I8 = 3 } attn_dtype;

/* How attention multiplies. */
typedef enum attn_math {
    ATTN_MATH_F32 = 0,  /* inputs widened exactly to fp32; fp32 products and sums */
    ATTN_MATH_BF16 = 1, /* Q, K, V and the softmax weights P rounded to bfloat16 (nearest even) before their
                           products, as FlashAttention does with bf16: P = bf16(exp(s - running max)), the row sums
                           from the unrounded weights; products and sums in fp32, softmax in fp32. The scale
                           multiplies the fp32 score, never the rounded Q: so the unscaled sum q . k must fit fp32
                           (|q| |k| head_dim below about 3e38; past that a score may be infinite or NaN on the
                           dot-product levels, where ATTN_MATH_F32 scales Q first) */
} attn_math;

/* Shape and options of one scaled-dot-product attention call. */
typedef struct attn_sdpa_desc {
    size_t batch, n_heads;    /* both >= 1 */
    size_t n_kv_heads;        /* 0: n_heads. Must divide n_heads (GQA/MQA): query head h reads KV head
                                 h / (n_heads / n_kv_heads) */
    size_t q_len, kv_len;     /* both >= 1 */
    size_t head_dim;          /* width of Q and K rows, >= 1 */
    size_t v_dim;             /* width of V and output rows; 0: head_dim */
    attn_layout layout;       /* the same for q, k, v and out */
    float scale;              /* 0: 1/sqrt(head_dim); must be finite */
    attn_mask mask;
    size_t window;            /* 0: none. Else (needs CAUSAL) the query at position p sees keys j with
                                 p - window < j <= p */
    const int32_t *kv_valid;  /* NULL, or [batch]: keys j >= kv_valid[b] are masked (right padding);
                                 0 <= kv_valid[b] <= kv_len, else ATTN_EINVAL */
    attn_dtype q_dtype;       /* element type of q: F32 (0), F16 or BF16 */
    attn_dtype kv_dtype;      /* element type of k and v */
    attn_dtype out_dtype;     /* element type of out: the fp32 result rounded to nearest even once */
    attn_math math;           /* 0: ATTN_MATH_F32 */
    int positions;            /* 0: bottom-right alignment (query i at position kv_len - q_len + i, key j at j);
                                 1: query i at q_pos0 + i, key j at kv_pos0 + j. CAUSAL and window compare these
                                 positions (kv_valid still compares the key index j). Other values: ATTN_EINVAL */
    size_t q_pos0, kv_pos0;   /* with positions 1; q_pos0 + q_len and kv_pos0 + kv_len at most 2^62, else
                                 ATTN_ERANGE */
    float softcap;            /* 0: none; else each score becomes softcap * tanh(score / softcap) (Gemma 2);
                                 negative or not finite: ATTN_EINVAL */
    const float *alibi_slopes;/* NULL, or [n_heads]: score += slopes[h] * (key position - query position) (ALiBi,
                                 with the positions above; the distance is exact up to 2^24, rounded to fp32 past) */
    const float *sinks;       /* NULL, or [n_heads]: attention sinks (gpt-oss). exp(sinks[h] - m) joins the softmax
                                 denominator of every row of head h that sees a key, with no value: out and probs
                                 shrink by 1 / (1 + exp(sinks[h] - lse)); lse excludes it; a row that sees no key
                                 still gets zeros. Blocks to be merged are computed without sinks, and the merged
                                 row then scaled by 1 / (1 + exp(sink - lse)) */
    const float *bias;        /* NULL, or an additive score bias (PyTorch's float attn_mask): element (b, h, i, j)
                                 at bias[b * bias_stride[0] + h * bias_stride[1] + i * bias_stride[2] + j], j the
                                 key index; a stride 0 broadcasts. -INFINITY masks the pair (weight and probs
                                 exactly 0, whatever the score); a row whose keys are all masked gets zeros and lse
                                 -INFINITY. A NaN or infinity in the value row of a key masked only by the bias may
                                 still reach the output row (0 times it); the masks above never let it. An element
                                 offset or byte count past SIZE_MAX: ATTN_ERANGE */
    size_t bias_stride[3];
    float *lse;               /* NULL, or [batch][n_heads][q_len] out: the natural log of the sum over the keys row
                                 (b, h, i) sees of exp(score), scores scaled as the softmax sees them; -INFINITY for
                                 a row that sees no key. With attn_merge, calls over disjoint key blocks (positions
                                 1, kv_pos0 at each block's start) combine into the call over all of them */
} attn_sdpa_desc;

/* out = softmax(scale * q k^T + mask) v for every batch and head. q, k, v and out hold elements of the desc's
 * q_dtype, kv_dtype and out_dtype (all F32 when left 0); half and bfloat16 inputs are widened tile by tile, never
 * copied whole. Accuracy against float64 computed from the stored (and, for ATTN_MATH_BF16, bf16-rounded) inputs:
 * ATTN_MATH_F32 within 2e-5 * max(1, |ref|); ATTN_MATH_BF16 within 1e-2 * the largest |V| entry the row sees, plus
 * the output's own rounding. Score modifiers apply to the fp32 score in this order: scale * q . k, softcap, ALiBi,
 * bias, then the masks (CAUSAL, window, kv_valid, a -inf bias). Every ISA rounds at the same points; only the
 * order of the sums may differ. probs are fp32 in either mode: exp(s - lse) from the fp32 scores (with a sink in the
 * denominator), never rounded to bfloat16. A dtype or math value outside its enum is ATTN_EINVAL.
 * q: [batch, n_heads, q_len, head_dim] (or BSHD), k: [.., n_kv_heads, kv_len, head_dim], v: [.., kv_len, v_dim],
 * out: like q with v_dim columns. probs: NULL, or [batch][n_heads][q_len][kv_len] (always this layout) that
 * receives the softmax weights, 0 for masked entries. A query row that sees no key gets all-zero output and
 * probs. Inputs are never written; out/probs must not overlap the inputs. Non-finite inputs: a NaN or infinity
 * in query row (b, h, i) can change only output and probs row (b, h, i); one in key or value row j of KV head g of
 * batch b can change only the rows (b, h, i) with h / (n_heads / n_kv_heads) == g that see key j (their output rows,
 * and for a key their probs rows; probs never read V). Every other row is bitwise what it is without it. Huge
 * finite scores (1e30) give exact one-hot probabilities, never NaN. The caller's MXCSR / FPCR (flush-to-zero) is
 * never changed; subnormal inputs are computed as such. Results are bitwise identical for any thread count (for
 * one ISA) and whether or not the optional packing workspace could be allocated. */
attn_status attn_sdpa(const attn_ctx *ctx, const attn_sdpa_desc *d, const void *q, const void *k, const void *v,
                      void *out, float *probs);

/* Two partial attentions of the same rows over disjoint key sets (attn_sdpa with lse), combined exactly:
 * o = (e^lse_a o_a + e^lse_b o_b) / (e^lse_a + e^lse_b), lse = log(e^lse_a + e^lse_b), computed stably (relative to
 * the larger lse). n_rows rows of dv consecutive floats, row r paired with lse[r]: one call per result in BHSD (or
 * with q_len 1); BSHD with q_len > 1 merges per (batch, position). o may be o_a or o_b, lse may be lse_a or lse_b
 * (exactly, or not overlapping at all). A side whose lse is -INFINITY contributes nothing, whatever its o row holds;
 * rows with both -INFINITY get zeros and -INFINITY. A NaN reaches only its own row. Deterministic: the same inputs
 * give the same bits. ATTN_OK for n_rows 0 (nothing is read); ATTN_EINVAL: dv 0 or a NULL pointer. */
attn_status attn_merge(size_t n_rows, size_t dv, const float *o_a, const float *lse_a, const float *o_b,
                       const float *lse_b, float *o, float *lse);

/* y = x w^T + b, PyTorch nn.Linear: x [n_tokens][in_features], w [out_features][in_features], b NULL or
 * [out_features], y [n_tokens][out_features]. w is packed per call into the column panels of the context's
 * register-blocked GEMM kernel; rows and column blocks are spread over the context's threads. Results are bitwise
 * the same for any thread count. ATTN_EINVAL: NULL ctx/x/w/y, a zero size, y overlapping x, w or b;
 * ATTN_ERANGE: a size overflows; ATTN_ENOMEM. The same as attn_linear_typed with ATTN_F32 and ATTN_MATH_F32. */
attn_status attn_linear(const attn_ctx *ctx, const float *x, size_t n_tokens, size_t in_features, const float *w,
                        const float *b, size_t out_features, float *y);

/* attn_linear with w stored as w_dtype (ATTN_F32, ATTN_F16 or ATTN_BF16: out_features x in_features elements of
 * that type); x, b and y stay fp32. Half and bfloat16 weights are widened exactly as they are packed into the GEMM's
 * fp32 column panels (per call, as attn_linear packs; never a whole fp32 copy besides that packing).
 * math ATTN_MATH_F32: fp32 products and sums of x and the widened w. ATTN_MATH_BF16: x and w are rounded to
 * bfloat16 (nearest even) before their products (w as it is packed, x a block of rows at a time into the call's
 * scratch), the products (exact in fp32) summed in fp32 with b; y is not rounded. Accuracy against float64 from the
 * (rounded) operands: within (in_features + 2) * 2^-24 * (|b| + sum |x w|) per element, either mode. Results are
 * bitwise the same for any thread count. ATTN_EINVAL: NULL ctx/x/w/y, a zero size, w_dtype or math not one of
 * the values above, y overlapping x, w (out_features x in_features elements of w_dtype, in bytes) or b;
 * ATTN_ERANGE: a size overflows; ATTN_ENOMEM. */
attn_status attn_linear_typed(const attn_ctx *ctx, const float *x, size_t n_tokens, size_t in_features,
                              const void *w, attn_dtype w_dtype, const float *b, size_t out_features, float *y,
                              attn_math math);

/* Rotary position embeddings. The angle of pair i at position p is p * theta^(-2i / rope_dims), computed in double;
 * its cos and sin are rounded to fp32, and the pair (a, b) becomes (a cos - b sin, b cos + a sin) (Hugging Face). */
typedef enum attn_rope {
    ATTN_ROPE_NONE = 0,
    ATTN_ROPE_NEOX = 1, /* pairs (x[i], x[i + rope_dims/2]): Llama in Hugging Face transformers, GPT-NeoX */
    ATTN_ROPE_GPTJ = 2, /* pairs (x[2i], x[2i + 1]): GPT-J, Meta's original Llama */
} attn_rope;

/* Rotates x: [n_tokens][n_heads][head_dim] in place, token t at position pos0 + t; dimensions from rope_dims on
 * are left as they are. rope_dims 0: head_dim; theta 0: 10000. ATTN_EINVAL: NULL x, a zero size, style not NEOX or
 * GPTJ, rope_dims odd or above head_dim, theta negative or not finite; ATTN_ERANGE: the element count overflows or
 * pos0 + n_tokens passes 2^53 (positions exact in double). */
attn_status attn_rope_apply(attn_rope style, size_t rope_dims, float theta, size_t n_tokens, size_t n_heads,
                            size_t head_dim, size_t pos0, float *x);

/* One self-attention layer's weights, in PyTorch nn.Linear layout [out_features][in_features]. A zeroed struct
 * with only the v0 fields set is an fp32 layer in fp32 math. */
typedef struct attn_layer {
    size_t d_model, n_heads;
    size_t n_kv_heads;       /* 0: n_heads */
    size_t head_dim;
    const void *wq;          /* [n_heads*head_dim][d_model] elements of w_dtype (fp32 by default: a float *) */
    const void *wk, *wv;     /* [n_kv_heads*head_dim][d_model] elements of w_dtype */
    const void *wo;          /* [d_model][n_heads*head_dim] elements of w_dtype, or NULL: y is the concatenated
                                heads */
    const float *bq, *bk, *bv, *bo; /* each NULL or its bias vector; always fp32 */
    attn_dtype w_dtype;      /* element type of wq, wk, wv and wo: ATTN_F32 (0), ATTN_F16 or ATTN_BF16 */
    attn_math math;          /* 0: ATTN_MATH_F32. The projections' math (attn_linear_typed) and the attention's
                                (attn_sdpa_desc.math) */
    attn_rope rope;          /* 0 (ATTN_ROPE_NONE) or the rotary embedding applied to q and k after their
                                projections (attn_rope_apply), at positions 0..n_tokens-1 in attn_self_attention and
                                at each sequence's positions in attn_layer_forward. With ATTN_ROPE_NONE the two
                                fields below are ignored (a zeroed v0 layer is never refused for them) */
    size_t rope_dims;        /* dimensions of each head that rotate (even, at most head_dim); 0: head_dim */
    float rope_theta;        /* base of the angles; 0: 10000 */
} attn_layer;

/* y = MultiheadAttention(x) for x: [n_tokens][d_model]; y: [n_tokens][d_model] (or [n_tokens][n_heads*head_dim]
 * when wo is NULL); probs: NULL or [n_heads][n_tokens][n_tokens], the softmax weights of every head (0 where masked).
 * q = x wq^T + bq, k = x wk^T + bk, v = x wv^T + bv; per head h (reading KV head h / (n_heads / n_kv_heads))
 * softmax(q_h k^T / sqrt(head_dim) + mask) v; y = concat(heads) wo^T + bo. Equals
 * torch.nn.MultiheadAttention(batch_first=True) with in_proj_weight = cat(wq, wk, wv), in_proj_bias = cat(bq, bk, bv),
 * out_proj = (wo, bo) and average_attn_weights=False, up to float rounding (GQA: wk/wv rows repeated per group).
 * The projections run on the context's register-blocked GEMM kernels and threads, as attn_linear_typed with the
 * layer's w_dtype and math; the attention runs as attn_sdpa on fp32 q, k, v with desc.math = the layer's math.
 * ATTN_MATH_BF16 thus rounds to bfloat16 (nearest even) x and the weights before the Q/K/V products, Q, K, V and
 * the softmax weights before theirs, and the concatenated heads and wo before the output projection; every sum is
 * fp32 and y is fp32. Accuracy (against float64 of the same rounding points): ATTN_MATH_F32 as for fp32 weights;
 * ATTN_MATH_BF16 the attention's 1e-2 * max|V| (attn_sdpa) carried through wo, plus the rounding of the heads.
 * ATTN_EINVAL: NULL ctx/w/x/y/wq/wk/wv, a zero size, n_kv_heads not dividing n_heads, a bad mask, w_dtype or math
 * not one of their values, or y/probs overlapping x or the weights (their bytes in w_dtype); ATTN_ERANGE: a size
 * overflows; ATTN_ENOMEM. x and the weights are never written. */
attn_status attn_self_attention(const attn_ctx *ctx, const attn_layer *w, const float *x, size_t n_tokens,
                                attn_mask mask, float *y, float *probs);

/* ---- .safetensors files (the format PyTorch and model hubs use) -----------------------------------------------
 * An 8-byte little-endian header length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [b, e]},
 * "__metadata__": {string: string}}, then the data. attn_st_open memory-maps the file and checks the whole header
 * (parsed with jansson) before returning: N within the file and at most 100 MiB; the header UTF-8 without NUL bytes,
 * starting with '{', one JSON object followed only by whitespace (padding), no duplicate keys anywhere and no \u0000
 * escape; each tensor entry an object with "dtype" (BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32 U32 F32 F64 I64
 * U64), "shape" (0..8 non-negative integers) and "data_offsets" (two integers, b <= e <= the data size) whose byte
 * size numel * elemsize equals e - b (other keys are ignored); tensors tiling the data area exactly (sorted by
 * offset, each begins where the one before ended and the last ends at the end of the file: no overlap, no hole, no
 * trailing bytes; 0-byte tensors may sit at any boundary); "__metadata__" values strings. Reals (1.0, 1e300) are
 * not integers. Anything else is ATTN_EINVAL with a one-line reason (naming the tensor
 * where there is one) in err. A handle is immutable after opening: any number of threads may read it at once. */
typedef struct attn_st attn_st;

/* What the header says about one tensor. dtype is the header's string ("F32", "F16", "BF16", "I64", ...). name and
 * dtype live as long as the handle. */
typedef struct attn_st_tensor {
    const char *name;
    const char *dtype;
    size_t ndim;          /* 0..8 (a 0-d tensor holds one element) */
    size_t shape[8];      /* shape[ndim..7] are 0 */
    size_t numel;         /* product of shape */
} attn_st_tensor;

/* Opens path read-only and maps it (MAP_PRIVATE; a file truncated while mapped makes reads fault, as with any
 * mapping). err: NULL, or a buffer of errlen bytes that receives a NUL-terminated one-line reason on failure.
 * ATTN_EINVAL: NULL out/path, a missing or unreadable file, a directory or other non-regular file, a file shorter
 * than 8 bytes, a file that is not valid safetensors; ATTN_ENOMEM (memory that runs out inside jansson 2.14 may
 * instead come back as ATTN_EINVAL, since jansson reports some of its allocation failures as syntax errors, or, when
 * its token buffer cannot grow, as a shortened name that a later lookup does not find). *out is set only on
 * ATTN_OK; close it with attn_st_close. Nothing is ever printed.
 * Built without jansson (configure --without-jansson): ATTN_ENOTSUP after the NULL checks, the reason in err. */
attn_status attn_st_open(attn_st **out, const char *path, char *err, size_t errlen);
/* The same for a file already in memory; data (size bytes, any alignment) is not copied and must outlive the
 * handle. Built without jansson: ATTN_ENOTSUP after the NULL checks, as attn_st_open. */
attn_status attn_st_open_memory(attn_st **out, const void *data, size_t size, char *err, size_t errlen);
/* Unmaps and frees; NULL is fine. Names, dtype and metadata strings from this handle die with it. Built without
 * jansson: does nothing. */
void attn_st_close(attn_st *f);
/* Number of tensors (0 for NULL; always 0 when built without jansson). */
size_t attn_st_count(const attn_st *f);
/* The i-th tensor in data-offset order (0-byte tensors before a tensor that starts at the same offset, ties by
 * name). ATTN_EINVAL: NULL, i out of range. Built without jansson: ATTN_ENOTSUP when no argument is NULL. */
attn_status attn_st_tensor_at(const attn_st *f, size_t i, attn_st_tensor *info);
/* The tensor called name (exact, case-sensitive; O(log n)). ATTN_EINVAL: NULL arguments or no such tensor.
 * Built without jansson: ATTN_ENOTSUP when no argument is NULL. */
attn_status attn_st_find(const attn_st *f, const char *name, attn_st_tensor *info);
/* Converts tensor name (F32, F16 or BF16) to fp32 into dst, which holds exactly n == numel floats; dst may be NULL
 * when n is 0. The file's data is little-endian and may be unaligned, on any host; F16 and BF16 widen exactly.
 * ATTN_EINVAL: NULL, no such tensor, n != numel; ATTN_ENOTSUP: another dtype. dst is untouched on error.
 * Built without jansson: ATTN_ENOTSUP when f, name and (for n > 0) dst are not NULL. */
attn_status attn_st_read_f32(const attn_st *f, const char *name, float *dst, size_t n);
/* The __metadata__ string for key (it lives as long as the handle), or NULL (no such key, NULL arguments; always
 * NULL when built without jansson). */
const char *attn_st_metadata(const attn_st *f, const char *key);

/* Tensor names of one layer in a safetensors file. Either wq, wk, wv (separate projections) or in_proj_weight
 * (PyTorch MultiheadAttention's cat(wq, wk, wv)) must be set, not both; in_proj_bias likewise replaces bq, bk, bv
 * (naming it with any of them is ATTN_EINVAL). Any other NULL name means "absent" (for wo: y is the concatenated
 * heads). */
typedef struct attn_layer_names {
    const char *wq, *wk, *wv, *wo;
    const char *bq, *bk, *bv, *bo;
    const char *in_proj_weight, *in_proj_bias;
    int keep_dtype; /* 0: every tensor is converted to fp32 (layer.w_dtype ATTN_F32). Nonzero: the weights (wq, wk,
                       wv or in_proj_weight, and wo) keep their stored type, copied bit for bit (F16 or BF16: 2 bytes
                       an element; F32 stays F32), and layer.w_dtype says which; they must then all share one
                       dtype, else ATTN_EINVAL. Biases are converted to fp32 either way. */
} attn_layer_names;

/* A layer whose weights were loaded from a file (converted to fp32, or kept as F16/BF16 with keep_dtype); layer
 * points into data, one allocation in which each array starts 64-byte aligned (with keep_dtype it holds 16-bit
 * weights too: read them through layer, by layer.w_dtype). It does not refer to the attn_st handle, which may be
 * closed. */
typedef struct attn_layer_weights {
    attn_layer layer;
    float *data;
} attn_layer_weights;

/* Loads one layer: d_model and head_dim come from the tensors' shapes, n_heads (>= 1) and n_kv_heads (0: n_heads)
 * from the caller, and every shape is checked against them: wq [n_heads*head_dim][d_model] (head_dim = rows /
 * n_heads, exactly) or in_proj_weight [(n_heads + 2*n_kv_heads)*head_dim][d_model], wk and wv
 * [n_kv_heads*head_dim][d_model], wo [d_model][n_heads*head_dim], biases 1-D of their projection's rows. Each
 * tensor may be F32, F16 or BF16. layer.n_kv_heads is set to the resolved count (never 0); layer.w_dtype is
 * ATTN_F32, or with names->keep_dtype the weights' shared stored type; layer.math is left ATTN_MATH_F32 (set it
 * before the call to attn_self_attention to compute in ATTN_MATH_BF16). ATTN_EINVAL (with a reason in err): NULL
 * arguments, n_heads 0 or not a multiple of n_kv_heads, a missing tensor, a shape that does not fit, with
 * keep_dtype weights of different dtypes; ATTN_ENOTSUP: a dtype other than F32/F16/BF16; ATTN_ENOMEM. On failure
 * *out is zeroed and nothing is allocated; on success free it with attn_layer_weights_free.
 * Built without jansson: ATTN_ENOTSUP after the NULL checks (*out zeroed, the reason in err). */
attn_status attn_layer_load_safetensors(attn_layer_weights *out, const attn_st *f, const attn_layer_names *names,
                                        size_t n_heads, size_t n_kv_heads, char *err, size_t errlen);
/* Frees what attn_layer_load_safetensors allocated and zeroes *w; NULL or a zeroed struct is fine (the same when
 * built without jansson, where every load leaves a zeroed struct). */
void attn_layer_weights_free(attn_layer_weights *w);


/* The keys and values of one sequence, for decoding: capacity positions of n_kv_heads x head_dim values each, as
 * dtype (decode reads half and bfloat16 at half the bytes of fp32 and widens them in registers).
 * Not shared between concurrent writers: an append must not overlap any other call on the same cache, while
 * attn_decode calls on one cache may run concurrently. Caches of 2 MiB and more ask the OS for huge pages. */
typedef struct attn_kv_cache attn_kv_cache;

/* Creates an empty cache (dtype F32, F16, BF16 or I8). ATTN_EINVAL: out NULL, a zero size, bad dtype; ATTN_ERANGE: the byte size overflows;
 * ATTN_ENOMEM. *out is set only on ATTN_OK; free it with attn_kv_cache_destroy. */
attn_status attn_kv_cache_create(attn_kv_cache **out, size_t n_kv_heads, size_t head_dim, size_t capacity,
                                 attn_dtype dtype);
/* Frees a cache; NULL is fine. */
void attn_kv_cache_destroy(attn_kv_cache *c);
/* Tokens held; 0 for NULL. */
size_t attn_kv_cache_len(const attn_kv_cache *c);
/* Empties the cache (keeps its memory); NULL is fine. */
void attn_kv_cache_reset(attn_kv_cache *c);
/* Appends n_tokens positions. k, v: [n_tokens][n_kv_heads][head_dim] fp32. All or nothing: past capacity it
 * returns ATTN_ERANGE and appends nothing. Appending 0 tokens is a no-op returning ATTN_OK (k, v may be NULL);
 * otherwise NULL c, k or v is ATTN_EINVAL. */
attn_status attn_kv_cache_append(attn_kv_cache *c, const float *k, const float *v, size_t n_tokens);
/* Attention of the last q_len positions of the cache (append them first) over the whole cache, scale
 * 1/sqrt(head_dim); with ATTN_MASK_CAUSAL query i (position len - q_len + i) sees keys j <= its position.
 * q, out: [q_len][n_heads][head_dim]; query head h reads KV head h / (n_heads / n_kv_heads). ATTN_EINVAL: NULL,
 * q_len or n_heads zero, n_heads not a multiple of n_kv_heads, bad mask, q_len > attn_kv_cache_len(c). Results
 * are bitwise the same for any thread count. */
attn_status attn_decode(const attn_ctx *ctx, const attn_kv_cache *c, const float *q, size_t q_len, size_t n_heads,
                        attn_mask mask, float *out);

/* ---- Paged KV pool: many sequences, one batched call (serving) -------------------------------------------------
 * A pool holds the keys and values of many sequences in fixed-size pages allocated up front; a sequence is a list
 * of pages. Forked sequences share their pages (reference-counted); whichever holder first appends into a shared,
 * partly filled page copies it. Calls that change a pool (attn_seq_new, fork, free, append, truncate) must not
 * overlap each other or an attn_batch_attend reading the sequences they change; attn_batch_attend calls may run
 * concurrently with each other. */
typedef struct attn_kv_pool attn_kv_pool;

typedef struct attn_kv_pool_desc {
    size_t n_kv_heads, head_dim; /* both >= 1 */
    size_t v_dim;                /* width of value rows; 0: head_dim */
    size_t page_tokens;          /* tokens per page: a multiple of 16, at most 4096; 0: 256. A tile of keys never
                                    crosses a page, so pages of at least block_kv (256) tokens decode fastest;
                                    smaller ones waste less memory on short sequences and share finer prefixes */
    size_t n_pages;              /* >= 1, allocated when the pool is created; the pool never grows */
    size_t max_seqs;             /* live sequences at most, <= 2^31; 0: 1024 */
    attn_dtype dtype;            /* F32, F16, BF16 or I8 */
} attn_kv_pool_desc;

/* Creates a pool. ATTN_EINVAL: NULL, a zero size, page_tokens not a multiple of 16 or above 4096, a bad dtype or
 * max_seqs; ATTN_ERANGE: the byte size overflows; ATTN_ENOMEM. *out is set only on ATTN_OK. Pools of 2 MiB and
 * more ask the OS for huge pages. */
attn_status attn_kv_pool_create(attn_kv_pool **out, const attn_kv_pool_desc *d);
/* Frees a pool and all its sequences; NULL is fine. */
void attn_kv_pool_destroy(attn_kv_pool *p);
/* Pages no sequence holds (n_pages for a new pool); 0 for NULL. */
size_t attn_kv_pool_free_pages(const attn_kv_pool *p);
/* The pool's tokens per page (the default resolved); 0 for NULL. */
size_t attn_kv_pool_page_tokens(const attn_kv_pool *p);

/* A new empty sequence (holding no page) in *seq. Ids are the smallest free ones, reused after attn_seq_free.
 * ATTN_EINVAL: NULL; ATTN_ERANGE: max_seqs sequences are live. *seq is untouched on failure. */
attn_status attn_seq_new(attn_kv_pool *p, uint32_t *seq);
/* A new sequence with src's tokens, sharing its pages (no page of its own). ATTN_EINVAL: NULL, src not live;
 * ATTN_ERANGE: no free id; ATTN_ENOMEM. *seq is untouched on failure. */
attn_status attn_seq_fork(attn_kv_pool *p, uint32_t src, uint32_t *seq);
/* Ends a sequence: its pages return to the pool when no other sequence holds them, and the id is free for reuse.
 * ATTN_EINVAL: NULL, an id that is not live (a double free included). */
attn_status attn_seq_free(attn_kv_pool *p, uint32_t seq);
/* Tokens in the sequence; 0 for an unknown id or NULL. */
size_t attn_seq_len(const attn_kv_pool *p, uint32_t seq);
/* Appends n_tokens tokens. k: [n_tokens][n_kv_heads][head_dim], v: [n_tokens][n_kv_heads][v_dim], fp32, stored in
 * the pool's dtype (half and bfloat16 rounded to nearest even, I8 as attn_dtype says). All or nothing: ATTN_ERANGE
 * when the free pages (a copy of a shared, partly filled last page included) do not suffice, ATTN_EINVAL for a NaN
 * or infinity in an I8 pool, ATTN_ENOMEM; nothing changes then (a server preempts a sequence and retries).
 * n_tokens 0 is ATTN_OK and reads nothing (k, v may be NULL). ATTN_EINVAL: NULL p, an id that is not live, NULL k
 * or v with n_tokens > 0. */
attn_status attn_seq_append(attn_kv_pool *p, uint32_t seq, const float *k, const float *v, size_t n_tokens);
/* Keeps the first len tokens; pages past them return at once (when no other sequence holds them). len equal to the
 * length is a no-op; truncating to 0 keeps the id. ATTN_EINVAL: NULL, an id that is not live, len > length. */
attn_status attn_seq_truncate(attn_kv_pool *p, uint32_t seq, size_t len);

/* One attn_batch_attend call: the last q_lens[s] positions of each sequence attend to its keys. */
typedef struct attn_batch_desc {
    size_t n_seqs;          /* >= 1 */
    const uint32_t *seqs;   /* [n_seqs] distinct live ids */
    const size_t *q_lens;   /* NULL: 1 each (decode; every sequence must hold a token); else [n_seqs] with
                               1 <= q_lens[s] <= the sequence's length: its queries are its last q_lens[s] positions
                               (append their keys and values first) */
    size_t n_heads;         /* query heads, a multiple of the pool's n_kv_heads (GQA as attn_sdpa) */
    float scale;            /* 0: 1/sqrt(head_dim); must be finite */
    attn_mask mask;         /* CAUSAL: the query at position p sees keys j <= p (positions are token indices) */
    size_t window;          /* 0: none; else (CAUSAL) keys p - window < j <= p */
    float softcap;          /* as attn_sdpa_desc */
    const float *alibi_slopes; /* NULL or [n_heads], as attn_sdpa_desc */
    const float *sinks;     /* NULL or [n_heads], as attn_sdpa_desc */
    attn_math math;         /* as attn_sdpa_desc */
} attn_batch_desc;

/* Attention for many sequences of a pool in one call (continuous batching: decodes and prefill chunks mixed).
 * q: [sum q_lens][n_heads][head_dim] fp32, sequence 0's rows first; out: [sum q_lens][n_heads][v_dim] fp32;
 * lse: NULL or [sum q_lens][n_heads] (as attn_sdpa_desc.lse). One parallel region over (sequence, KV head, query
 * block, key chunk) with a fixed split of long keys, so results are bitwise the same for any thread count and
 * whatever other sequences share the call; they equal attn_sdpa over the same (dequantised) keys and values within
 * its accuracy. An I8 pool's rows are dequantised in registers (scores scaled per key, P per value row).
 * ATTN_EINVAL: NULL ctx, p, d, seqs, q or out, n_seqs 0, an id not live or given twice, a q_len of 0 or past its
 * sequence (or an empty sequence with q_lens NULL), n_heads not a multiple of n_kv_heads, a bad mask, math, scale
 * or softcap, window without CAUSAL; ATTN_ERANGE: sizes overflow; ATTN_ENOMEM. Nothing is written on error. */
attn_status attn_batch_attend(const attn_ctx *ctx, const attn_kv_pool *p, const attn_batch_desc *d, const float *q,
                              float *out, float *lse);

/* One causal layer step for many sequences of a pool (continuous batching). x: [sum n_new][d_model], sequence 0's
 * rows first; for sequence s its n_new[s] (>= 1) new tokens are projected (one GEMM for all tokens of all
 * sequences), q and k rotated (w->rope) at positions len(s) + i, k and v appended to the pool (k stored rotated),
 * the new positions attend causally to the whole sequence (attn_batch_attend, scale 1/sqrt(head_dim), w->math),
 * and the heads are projected out by wo into y: [sum n_new][d_model] (or n_heads*head_dim columns without wo).
 * All or nothing: every check, the pool's free pages (copies of shared partial pages included) and an int8 pool's
 * finiteness check come before the first append, so on an error nothing is appended and y is untouched (should
 * memory run out in the attention or wo after the appends, they are truncated away again; a shared page one of
 * them copied then stays copied). ATTN_EINVAL: NULL arguments, n_seqs 0, an id not live or twice, an n_new of 0,
 * a pool whose n_kv_heads or head_dim differ from the layer's or whose v_dim is not head_dim, bad layer fields (as
 * attn_self_attention, rope included), y overlapping x or a weight, a non-finite K or V row for an I8 pool;
 * ATTN_ERANGE: sizes overflow, a new position past 2^53, or the pool runs out of pages; ATTN_ENOMEM. One call for
 * many sequences equals per-sequence calls within the projections' rounding. */
attn_status attn_layer_forward(const attn_ctx *ctx, const attn_layer *w, attn_kv_pool *p, size_t n_seqs,
                               const uint32_t *seqs, const size_t *n_new, const float *x, float *y);

#ifdef __cplusplus
}
#endif
#endif
