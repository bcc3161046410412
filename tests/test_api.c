/* Every status path of the public API. Each failing attn_sdpa call gets small real output buffers poisoned with a
 * pattern; the library must validate before touching them, so they must come back bit-for-bit unchanged. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define BUF_BITS 0x7fc0beefu

static const attn_status all_status[] = { ATTN_OK, ATTN_EINVAL, ATTN_ERANGE, ATTN_ENOMEM, ATTN_ENOTSUP };

Test(api, strerror)
{
    for (size_t i = 0; i < sizeof all_status / sizeof all_status[0]; i++) {
        const char *s = attn_strerror(all_status[i]);
        cr_assert(s && *s, "attn_strerror(%d) is NULL or empty", (int)all_status[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, attn_strerror(all_status[j]), "codes %d and %d share a message",
                              (int)all_status[i], (int)all_status[j]);
    }
    static const int unknown[] = { -5, -99, 1, 42, INT32_MIN };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = attn_strerror((attn_status)unknown[i]);
        cr_assert(s && *s, "attn_strerror(%d) is NULL or empty", unknown[i]);
    }
}

Test(api, version)
{
    const char *v = attn_version();
    cr_assert(v);
    int major, minor, patch, end = -1;
    cr_assert_eq(sscanf(v, "%d.%d.%d%n", &major, &minor, &patch, &end), 3, "attn_version() = \"%s\"", v);
    cr_assert_eq((size_t)end, strlen(v), "attn_version() = \"%s\" has trailing text", v);
    cr_assert(major == ATTN_VERSION_MAJOR && minor == ATTN_VERSION_MINOR && patch == ATTN_VERSION_PATCH,
              "attn_version() = \"%s\" but the header says %d.%d.%d", v, ATTN_VERSION_MAJOR, ATTN_VERSION_MINOR,
              ATTN_VERSION_PATCH);
}

Test(api, isa_names)
{
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_AUTO), "auto");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_SCALAR), "scalar");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_AVX2), "avx2");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_AVX512), "avx512");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_NEON), "neon");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_AVX512_BF16), "avx512bf16");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_AMX), "amx");
    cr_assert_str_eq(attn_isa_name(ATTN_ISA_NEON_BF16), "neonbf16");
    cr_assert_str_eq(attn_isa_name((attn_isa)8), "unknown");
    cr_assert_str_eq(attn_isa_name((attn_isa)-1), "unknown");
}

Test(api, isa_supported)
{
    cr_assert_eq(attn_isa_supported(ATTN_ISA_AUTO), 1);
    cr_assert_eq(attn_isa_supported(ATTN_ISA_SCALAR), 1);
    cr_assert_eq(attn_isa_supported((attn_isa)8), 0);
    /* AMX runs only with AVX512_BF16 (its partial tiles and fp32 slots are AVX-512 code). */
    cr_assert(!attn_isa_supported(ATTN_ISA_AMX) || attn_isa_supported(ATTN_ISA_AVX512_BF16));
    /* A bf16 level runs only where AVX-512 does. */
    cr_assert(!attn_isa_supported(ATTN_ISA_AVX512_BF16) || attn_isa_supported(ATTN_ISA_AVX512));
    cr_assert(!attn_isa_supported(ATTN_ISA_NEON_BF16) || attn_isa_supported(ATTN_ISA_NEON));
    cr_assert_eq(attn_isa_supported((attn_isa)-1), 0);
    /* x86 and Arm kernels never both run on one CPU. */
    int x86 = attn_isa_supported(ATTN_ISA_AVX2) || attn_isa_supported(ATTN_ISA_AVX512);
    cr_assert(!(x86 && attn_isa_supported(ATTN_ISA_NEON)));
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    char line[128] = "";
    for (int i = 0; i < n; i++) {
        strcat(line, " ");
        strcat(line, attn_isa_name(isas[i]));
    }
    fprintf(stderr, "[stat] ISAs this CPU runs:%s\n", line);
    tc_isas_skipped(line, sizeof line);
    if (line[0])
        fprintf(stderr, "[stat] ISAs built but skipped, this CPU lacks them:%s\n", line);
}

Test(api, ctx_isa_and_threads)
{
    unsetenv("ATTN_ISA");
    unsetenv("ATTN_NUM_THREADS");
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    for (int i = 0; i < n; i++) {
        attn_ctx *ctx = NULL;
        cr_assert_eq(tc_ctx_create(&ctx, isas[i], 0, 0, 0), ATTN_OK, "isa %s", attn_isa_name(isas[i]));
        cr_assert_eq(attn_ctx_isa(ctx), isas[i], "asked for %s, got %s", attn_isa_name(isas[i]),
                     attn_isa_name(attn_ctx_isa(ctx)));
        cr_assert_geq(attn_ctx_threads(ctx), 1);
        attn_ctx_destroy(ctx);
    }
    /* AUTO (cfg NULL or zeroed) picks the best: the last in ladder order. */
    attn_ctx *ctx = NULL;
    cr_assert_eq(attn_ctx_create(&ctx, NULL), ATTN_OK);
    cr_assert_neq(attn_ctx_isa(ctx), ATTN_ISA_AUTO);
    cr_assert_eq(attn_ctx_isa(ctx), isas[n - 1], "AUTO chose %s, the best is %s", attn_isa_name(attn_ctx_isa(ctx)),
                 attn_isa_name(isas[n - 1]));
    cr_assert_geq(attn_ctx_threads(ctx), 1);
    attn_ctx_destroy(ctx);
    attn_config cfg = { 0 };
    cr_assert_eq(attn_ctx_create(&ctx, &cfg), ATTN_OK);
    cr_assert_eq(attn_ctx_isa(ctx), isas[n - 1]);
    attn_ctx_destroy(ctx);
    cfg.num_threads = 3;
    cr_assert_eq(attn_ctx_create(&ctx, &cfg), ATTN_OK);
    cr_assert_eq(attn_ctx_threads(ctx), 3);
    attn_ctx_destroy(ctx);
    cr_assert_eq(attn_ctx_isa(NULL), ATTN_ISA_SCALAR);
    cr_assert_eq(attn_ctx_threads(NULL), 0);
    attn_ctx_destroy(NULL);
}

Test(api, ctx_create_errors)
{
    unsetenv("ATTN_ISA");
    attn_ctx *const sentinel = (attn_ctx *)&sentinel; /* never a real context */
    attn_ctx *ctx;
    cr_assert_eq(attn_ctx_create(NULL, NULL), ATTN_EINVAL);
    attn_config bad[] = {
        { .num_threads = -1 },
        { .num_threads = INT32_MIN },
        { .block_q = -1 },
        { .block_kv = -3 },
        { .block_q = 5000 },
        { .block_kv = 4097 },
        { .isa = (attn_isa)8 },
        { .isa = (attn_isa)-1 },
        { .isa = (attn_isa)100 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctx = sentinel;
        attn_status s = attn_ctx_create(&ctx, &bad[i]);
        cr_assert_eq(s, ATTN_EINVAL, "config %zu {threads %d isa %d block_q %d block_kv %d} gave %d", i,
                     bad[i].num_threads, (int)bad[i].isa, bad[i].block_q, bad[i].block_kv, (int)s);
        cr_assert_eq(ctx, sentinel, "*out written on failure");
    }
    /* The edges of the documented block range are fine. */
    attn_config edge = { .block_q = 4096, .block_kv = 4096 };
    cr_assert_eq(attn_ctx_create(&ctx, &edge), ATTN_OK);
    attn_ctx_destroy(ctx);
    edge = (attn_config){ .block_q = 1, .block_kv = 1 };
    cr_assert_eq(attn_ctx_create(&ctx, &edge), ATTN_OK);
    attn_ctx_destroy(ctx);
}

Test(api, unsupported_isa)
{
    unsetenv("ATTN_ISA");
    static const attn_isa all[] = { ATTN_ISA_AVX2, ATTN_ISA_AVX512, ATTN_ISA_NEON };
    int tested = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (attn_isa_supported(all[i]))
            continue;
        attn_ctx *const sentinel = (attn_ctx *)&tested;
        attn_ctx *ctx = sentinel;
        attn_config cfg = { .isa = all[i] };
        cr_assert_eq(attn_ctx_create(&ctx, &cfg), ATTN_ENOTSUP, "isa %s", attn_isa_name(all[i]));
        cr_assert_eq(ctx, sentinel, "*out written on failure");
        tested++;
    }
    /* x86 lacks neon and aarch64 lacks avx2, so at least one was tried. */
    cr_assert_geq(tested, 1);
}

/* ---- attn_sdpa argument checks ---- */

/* A valid small problem: b=2 h=2 q=3 kv=4 d=5. Buffers are generous so that a check that wrongly passes still
 * stays in bounds for the valid-shape variants. */
typedef struct fixture {
    attn_ctx *ctx;
    attn_sdpa_desc d;
    float q[256], k[256], v[256];
    tc_buf out, probs;
} fixture;

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    cr_assert_eq(attn_ctx_create(&f->ctx, NULL), ATTN_OK);
    f->d.batch = 2;
    f->d.n_heads = 2;
    f->d.q_len = 3;
    f->d.kv_len = 4;
    f->d.head_dim = 5;
    for (int i = 0; i < 256; i++)
        f->q[i] = f->k[i] = f->v[i] = (float)(i % 7) * 0.25f;
    cr_assert_eq(tc_buf_alloc(&f->out, 256), 0);
    cr_assert_eq(tc_buf_alloc(&f->probs, 256), 0);
}

static void fixture_free(fixture *f)
{
    attn_ctx_destroy(f->ctx);
    tc_buf_free(&f->out);
    tc_buf_free(&f->probs);
}

/* Calls attn_sdpa with d and expects `want`, with out/probs left untouched. */
static void expect_status(fixture *f, const attn_sdpa_desc *d, const float *q, const float *k, const float *v,
                          int use_out, int use_probs, attn_status want, const char *what)
{
    tc_buf_fill_bits(&f->out, BUF_BITS);
    tc_buf_fill_bits(&f->probs, BUF_BITS);
    attn_status s = attn_sdpa(f->ctx, d, q, k, v, use_out ? f->out.p : NULL, use_probs ? f->probs.p : NULL);
    cr_assert_eq(s, want, "%s: got %d (%s), want %d (%s)", what, (int)s, attn_strerror(s), (int)want,
                 attn_strerror(want));
    cr_assert(tc_buf_all_bits(&f->out, BUF_BITS) && tc_buf_guards_ok(&f->out), "%s: out written on error", what);
    cr_assert(tc_buf_all_bits(&f->probs, BUF_BITS) && tc_buf_guards_ok(&f->probs), "%s: probs written on error",
              what);
}

#define EXPECT(f, d, want, what) expect_status((f), (d), (f)->q, (f)->k, (f)->v, 1, 1, (want), (what))

Test(api, sdpa_valid_fixture)
{
    fixture f;
    fixture_init(&f);
    /* The base shape must be accepted, or every error test below would pass for the wrong reason. */
    cr_assert_eq(attn_sdpa(f.ctx, &f.d, f.q, f.k, f.v, f.out.p, f.probs.p), ATTN_OK);
    cr_assert(tc_buf_guards_ok(&f.out) && tc_buf_guards_ok(&f.probs));
    fixture_free(&f);
}

Test(api, sdpa_null_arguments)
{
    fixture f;
    fixture_init(&f);
    tc_buf_fill_bits(&f.out, BUF_BITS);
    cr_assert_eq(attn_sdpa(NULL, &f.d, f.q, f.k, f.v, f.out.p, f.probs.p), ATTN_EINVAL);
    cr_assert_eq(attn_sdpa(f.ctx, NULL, f.q, f.k, f.v, f.out.p, f.probs.p), ATTN_EINVAL);
    cr_assert(tc_buf_all_bits(&f.out, BUF_BITS));
    expect_status(&f, &f.d, NULL, f.k, f.v, 1, 1, ATTN_EINVAL, "q NULL");
    expect_status(&f, &f.d, f.q, NULL, f.v, 1, 1, ATTN_EINVAL, "k NULL");
    expect_status(&f, &f.d, f.q, f.k, NULL, 1, 1, ATTN_EINVAL, "v NULL");
    expect_status(&f, &f.d, f.q, f.k, f.v, 0, 1, ATTN_EINVAL, "out NULL");
    fixture_free(&f);
}

Test(api, sdpa_zero_sizes)
{
    fixture f;
    fixture_init(&f);
    attn_sdpa_desc d;
    d = f.d, d.batch = 0;
    EXPECT(&f, &d, ATTN_EINVAL, "batch 0");
    d = f.d, d.n_heads = 0;
    EXPECT(&f, &d, ATTN_EINVAL, "n_heads 0");
    d = f.d, d.n_heads = 0, d.n_kv_heads = 1;
    EXPECT(&f, &d, ATTN_EINVAL, "n_heads 0 with n_kv_heads 1");
    d = f.d, d.q_len = 0;
    EXPECT(&f, &d, ATTN_EINVAL, "q_len 0");
    d = f.d, d.kv_len = 0;
    EXPECT(&f, &d, ATTN_EINVAL, "kv_len 0");
    d = f.d, d.head_dim = 0;
    EXPECT(&f, &d, ATTN_EINVAL, "head_dim 0");
    d = f.d, d.head_dim = 0, d.v_dim = 4;
    EXPECT(&f, &d, ATTN_EINVAL, "head_dim 0 with v_dim 4");
    fixture_free(&f);
}

Test(api, sdpa_bad_shapes_and_enums)
{
    fixture f;
    fixture_init(&f);
    attn_sdpa_desc d;
    d = f.d, d.n_heads = 4, d.n_kv_heads = 3;
    EXPECT(&f, &d, ATTN_EINVAL, "n_kv_heads 3 does not divide n_heads 4");
    d = f.d, d.n_heads = 2, d.n_kv_heads = 4;
    EXPECT(&f, &d, ATTN_EINVAL, "n_kv_heads 4 > n_heads 2");
    d = f.d, d.layout = (attn_layout)7;
    EXPECT(&f, &d, ATTN_EINVAL, "layout 7");
    d = f.d, d.layout = (attn_layout)-1;
    EXPECT(&f, &d, ATTN_EINVAL, "layout -1");
    d = f.d, d.mask = (attn_mask)7;
    EXPECT(&f, &d, ATTN_EINVAL, "mask 7");
    d = f.d, d.mask = (attn_mask)-1;
    EXPECT(&f, &d, ATTN_EINVAL, "mask -1");
    d = f.d, d.window = 2;
    EXPECT(&f, &d, ATTN_EINVAL, "window without CAUSAL");
    d = f.d, d.scale = NAN;
    EXPECT(&f, &d, ATTN_EINVAL, "scale NaN");
    d = f.d, d.scale = INFINITY;
    EXPECT(&f, &d, ATTN_EINVAL, "scale +Inf");
    d = f.d, d.scale = -INFINITY;
    EXPECT(&f, &d, ATTN_EINVAL, "scale -Inf");
    int32_t neg[2] = { 2, -1 }, big[2] = { 5, 1 }, huge[2] = { INT32_MAX, 0 }, ok[2] = { 0, 4 };
    d = f.d, d.kv_valid = neg;
    EXPECT(&f, &d, ATTN_EINVAL, "kv_valid[1] = -1");
    d = f.d, d.kv_valid = big;
    EXPECT(&f, &d, ATTN_EINVAL, "kv_valid[0] = kv_len + 1");
    d = f.d, d.kv_valid = huge;
    EXPECT(&f, &d, ATTN_EINVAL, "kv_valid[0] = INT32_MAX");
    d = f.d, d.kv_valid = neg, d.mask = ATTN_MASK_CAUSAL;
    EXPECT(&f, &d, ATTN_EINVAL, "kv_valid[1] = -1 with causal");
    /* The extremes 0 and kv_len are valid. */
    d = f.d, d.kv_valid = ok;
    cr_assert_eq(attn_sdpa(f.ctx, &d, f.q, f.k, f.v, f.out.p, f.probs.p), ATTN_OK);
    /* A negative scale is finite, hence valid. */
    d = f.d, d.scale = -0.5f;
    cr_assert_eq(attn_sdpa(f.ctx, &d, f.q, f.k, f.v, f.out.p, NULL), ATTN_OK);
    fixture_free(&f);
}

/* Sizes whose element or byte counts overflow size_t: the library must notice before computing any address. The
 * buffers are tiny, so a library that misses the overflow reads or writes far out of bounds. */
Test(api, sdpa_overflow)
{
    fixture f;
    fixture_init(&f);
    const size_t half = (size_t)1 << (sizeof(size_t) * 4); /* half * half == 2^(bits of size_t): wraps to 0 */
    attn_sdpa_desc d;
    d = f.d, d.batch = SIZE_MAX / 2;
    EXPECT(&f, &d, ATTN_ERANGE, "batch SIZE_MAX/2 (byte count overflows)");
    d = f.d, d.batch = SIZE_MAX;
    EXPECT(&f, &d, ATTN_ERANGE, "batch SIZE_MAX");
    d = f.d, d.n_heads = half, d.n_kv_heads = 1, d.batch = half;
    EXPECT(&f, &d, ATTN_ERANGE, "batch * n_heads wraps");
    d = f.d, d.q_len = half, d.head_dim = half;
    EXPECT(&f, &d, ATTN_ERANGE, "q_len * head_dim wraps to 0");
    d = f.d, d.kv_len = half, d.head_dim = half;
    EXPECT(&f, &d, ATTN_ERANGE, "kv_len * head_dim wraps to 0");
    d = f.d, d.head_dim = SIZE_MAX;
    EXPECT(&f, &d, ATTN_ERANGE, "head_dim SIZE_MAX");
    d = f.d, d.v_dim = SIZE_MAX / 2;
    EXPECT(&f, &d, ATTN_ERANGE, "v_dim SIZE_MAX/2");
    d = f.d, d.v_dim = half, d.kv_len = half;
    EXPECT(&f, &d, ATTN_ERANGE, "kv_len * v_dim wraps to 0");
    /* probs is [batch][heads][q_len][kv_len]: only its count overflows here, and probs is requested. */
    d = f.d, d.q_len = half / 2, d.kv_len = half * 2, d.head_dim = 1;
    EXPECT(&f, &d, ATTN_ERANGE, "q_len * kv_len wraps (probs requested)");
    fixture_free(&f);
}

Test(api, sdpa_error_leaves_outputs_without_probs)
{
    /* The same checks hold with probs NULL: out alone must stay untouched. */
    fixture f;
    fixture_init(&f);
    attn_sdpa_desc d = f.d;
    d.kv_len = 0;
    expect_status(&f, &d, f.q, f.k, f.v, 1, 0, ATTN_EINVAL, "kv_len 0, probs NULL");
    d = f.d, d.batch = SIZE_MAX;
    expect_status(&f, &d, f.q, f.k, f.v, 1, 0, ATTN_ERANGE, "batch SIZE_MAX, probs NULL");
    fixture_free(&f);
}

/* LeakSanitizer hook (only read when the tests are built with -fsanitize=address; harmless otherwise): Criterion's
 * own runner leaks one 48-byte calloc when it runs tests in parallel, which would fail `make check` under ASan
 * although no attn code is involved. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcriterion.so\n";
}
