/* The ATTN_* environment variables, read at attn_ctx_create. Criterion runs every test in its own process, so
 * setenv/unsetenv here cannot leak into other tests; each test starts by clearing all of them so that a developer's
 * shell settings do not change what is tested. */
#define _POSIX_C_SOURCE 200809L

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static void clear_env(void)
{
    static const char *const vars[] = { "ATTN_NUM_THREADS", "ATTN_ISA", "ATTN_KERNELS", "ATTN_BLOCK_Q",
                                        "ATTN_BLOCK_KV", "ATTN_VERBOSE" };
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* Creates a context with var=value (cfg may be NULL) and returns the status; *ctx is the context on ATTN_OK and
 * must stay untouched otherwise. */
static attn_status create_with(const char *var, const char *value, const attn_config *cfg, attn_ctx **ctx)
{
    attn_ctx *const sentinel = (attn_ctx *)&sentinel;
    *ctx = sentinel;
    setenv(var, value, 1);
    attn_status s = attn_ctx_create(ctx, cfg);
    if (s != ATTN_OK) {
        cr_assert_eq(*ctx, sentinel, "%s=\"%s\": *out written on failure", var, value);
        *ctx = NULL;
    }
    return s;
}

static void expect_env(const char *var, const char *value, const attn_config *cfg, attn_status want)
{
    attn_ctx *ctx;
    attn_status s = create_with(var, value, cfg, &ctx);
    cr_assert_eq(s, want, "%s=\"%s\"%s: attn_ctx_create gave %d (%s), want %d (%s)", var, value,
                 cfg ? " (with a config)" : "", (int)s, attn_strerror(s), (int)want, attn_strerror(want));
    attn_ctx_destroy(ctx);
    unsetenv(var);
}

Test(env, num_threads)
{
    clear_env();
    static const char *const bad[] = { "0", "-1", "abc", "", "2x", "99999", "1025", "1.5", " ", "0x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_env("ATTN_NUM_THREADS", bad[i], NULL, ATTN_EINVAL);
    static const char *const good[] = { "1", "2", "1024" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        expect_env("ATTN_NUM_THREADS", good[i], NULL, ATTN_OK);
    attn_ctx *ctx;
    cr_assert_eq(create_with("ATTN_NUM_THREADS", "3", NULL, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_threads(ctx), 3);
    attn_ctx_destroy(ctx);
    /* Read at creation: a context keeps its value when the variable changes later. */
    cr_assert_eq(create_with("ATTN_NUM_THREADS", "1", NULL, &ctx), ATTN_OK);
    setenv("ATTN_NUM_THREADS", "3", 1);
    cr_assert_eq(attn_ctx_threads(ctx), 1);
    attn_ctx_destroy(ctx);
}

Test(env, isa)
{
    clear_env();
    static const char *const bad[] = { "sse9", "", "avx", "avx-512", "x", "scalar2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_env("ATTN_ISA", bad[i], NULL, ATTN_EINVAL);
    static const struct {
        const char *name;
        attn_isa isa;
    } names[] = {
        { "scalar", ATTN_ISA_SCALAR }, { "SCALAR", ATTN_ISA_SCALAR }, { "Scalar", ATTN_ISA_SCALAR },
        { "avx2", ATTN_ISA_AVX2 },     { "AVX2", ATTN_ISA_AVX2 },     { "avx512", ATTN_ISA_AVX512 },
        { "AVX512", ATTN_ISA_AVX512 }, { "neon", ATTN_ISA_NEON },     { "NEON", ATTN_ISA_NEON },
        { "auto", ATTN_ISA_AUTO },     { "AUTO", ATTN_ISA_AUTO },
    };
    attn_isa isas[TC_MAX_ISAS];
    int n_isas = tc_isas(isas);
    attn_isa best = isas[n_isas - 1];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        attn_ctx *ctx;
        int ok = attn_isa_supported(names[i].isa);
        attn_status s = create_with("ATTN_ISA", names[i].name, NULL, &ctx);
        cr_assert_eq(s, ok ? ATTN_OK : ATTN_ENOTSUP, "ATTN_ISA=%s gave %d (%s)", names[i].name, (int)s,
                     attn_strerror(s));
        if (ok) {
            attn_isa want = names[i].isa == ATTN_ISA_AUTO ? best : names[i].isa;
            cr_assert_eq(attn_ctx_isa(ctx), want, "ATTN_ISA=%s gave a %s context", names[i].name,
                         attn_isa_name(attn_ctx_isa(ctx)));
        }
        attn_ctx_destroy(ctx);
    }
}

Test(env, blocks)
{
    clear_env();
    static const char *const vars[] = { "ATTN_BLOCK_Q", "ATTN_BLOCK_KV" };
    static const char *const bad[] = { "0", "5000", "4097", "junk", "", "-3", "8k", " " };
    static const char *const good[] = { "1", "3", "7", "33", "64", "4096" };
    for (size_t v = 0; v < 2; v++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            expect_env(vars[v], bad[i], NULL, ATTN_EINVAL);
        for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
            expect_env(vars[v], good[i], NULL, ATTN_OK);
    }
}

static attn_sdpa_desc block_shape(int i)
{
    static int32_t valid[2] = { 71, 40 };
    attn_sdpa_desc d;
    memset(&d, 0, sizeof d);
    d.batch = 2;
    d.n_heads = 4;
    d.n_kv_heads = 2;
    d.q_len = i == 2 ? 1 : 37;
    d.kv_len = 71;
    d.head_dim = 17;
    d.v_dim = i == 1 ? 9 : 0;
    d.mask = i == 0 ? ATTN_MASK_NONE : ATTN_MASK_CAUSAL;
    d.window = i == 1 ? 13 : 0;
    d.kv_valid = i == 1 ? valid : NULL;
    d.layout = (attn_layout)(i % 2);
    return d;
}

/* Odd tile sizes hit every remainder path of the block loops; results must still match the reference. */
Test(env, odd_blocks_are_correct, .timeout = 240)
{
    clear_env();
    static const char *const sizes[] = { "1", "3", "7", "33" };
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    uint64_t id = 0;
    for (size_t bq = 0; bq < 4; bq++) {
        for (size_t bkv = 0; bkv < 4; bkv++) {
            setenv("ATTN_BLOCK_Q", sizes[bq], 1);
            setenv("ATTN_BLOCK_KV", sizes[bkv], 1);
            for (int i = 0; i < 3; i++) {
                attn_sdpa_desc d = block_shape(i);
                char msg[1024];
                int bad = tc_check_desc(&d, id++, TC_FILL_UNIFORM, i != 2, st, msg, sizeof msg);
                cr_assert(!bad, "ATTN_BLOCK_Q=%s ATTN_BLOCK_KV=%s: %s", sizes[bq], sizes[bkv], msg);
            }
        }
    }
    tc_print_stats("env::odd_blocks", st);
}

/* The same through the config fields (which the env variables only stand in for). */
Test(env, odd_config_blocks_are_correct, .timeout = 240)
{
    clear_env();
    static const int sizes[][2] = { { 1, 1 }, { 3, 5 }, { 7, 33 }, { 33, 7 }, { 4096, 4096 }, { 2, 100 } };
    attn_isa isas[TC_MAX_ISAS];
    int n = tc_isas(isas);
    tc_stats st[TC_MAX_ISAS] = { { 0 } };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int i = 0; i < 3; i++) {
            attn_sdpa_desc d = block_shape(i);
            tc_problem p;
            cr_assert_eq(tc_problem_init(&p, &d), 0);
            tc_problem_fill(&p, tc_mix(tc_seed(), s * 3 + (size_t)i), TC_FILL_UNIFORM);
            for (int ii = 0; ii < n; ii++) {
                attn_ctx *ctx;
                char msg[1024];
                cr_assert_eq(tc_ctx_create(&ctx, isas[ii], 0, sizes[s][0], sizes[s][1]), ATTN_OK);
                int bad = tc_check(ctx, &p, 1, &st[isas[ii]], msg, sizeof msg);
                attn_ctx_destroy(ctx);
                cr_assert(!bad, "block_q=%d block_kv=%d: %s", sizes[s][0], sizes[s][1], msg);
            }
            tc_problem_free(&p);
        }
    }
    tc_print_stats("env::odd_config_blocks", st);
}

Test(env, verbose_values)
{
    clear_env();
    static const char *const bad[] = { "2", "yes", "", "-1", "true", "01x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_env("ATTN_VERBOSE", bad[i], NULL, ATTN_EINVAL);
    expect_env("ATTN_VERBOSE", "0", NULL, ATTN_OK);
}

/* A non-zero config field wins and its variable is not even parsed; ATTN_VERBOSE has no field. */
Test(env, config_beats_env)
{
    clear_env();
    attn_ctx *ctx;
    attn_config cfg = { .num_threads = 2 };
    cr_assert_eq(create_with("ATTN_NUM_THREADS", "abc", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_threads(ctx), 2);
    attn_ctx_destroy(ctx);
    cr_assert_eq(create_with("ATTN_NUM_THREADS", "3", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_threads(ctx), 2);
    attn_ctx_destroy(ctx);
    /* A zero field falls back to the variable. */
    cfg.num_threads = 0;
    cr_assert_eq(create_with("ATTN_NUM_THREADS", "3", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_threads(ctx), 3);
    attn_ctx_destroy(ctx);
    unsetenv("ATTN_NUM_THREADS");

    cfg = (attn_config){ .isa = ATTN_ISA_SCALAR };
    cr_assert_eq(create_with("ATTN_ISA", "bogus", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_isa(ctx), ATTN_ISA_SCALAR);
    attn_ctx_destroy(ctx);
    /* The config may also ask for more than the variable allows: the variable is ignored, not a cap. */
    attn_isa isas[TC_MAX_ISAS];
    int n_isas = tc_isas(isas);
    attn_isa best = isas[n_isas - 1];
    cfg.isa = best;
    cr_assert_eq(create_with("ATTN_ISA", "scalar", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_isa(ctx), best);
    attn_ctx_destroy(ctx);
    /* With cfg.isa AUTO the variable counts. */
    cfg.isa = ATTN_ISA_AUTO;
    cr_assert_eq(create_with("ATTN_ISA", "scalar", &cfg, &ctx), ATTN_OK);
    cr_assert_eq(attn_ctx_isa(ctx), ATTN_ISA_SCALAR);
    attn_ctx_destroy(ctx);
    unsetenv("ATTN_ISA");

    cfg = (attn_config){ .block_q = 8 };
    cr_assert_eq(create_with("ATTN_BLOCK_Q", "junk", &cfg, &ctx), ATTN_OK);
    attn_ctx_destroy(ctx);
    unsetenv("ATTN_BLOCK_Q");
    cfg = (attn_config){ .block_kv = 8 };
    cr_assert_eq(create_with("ATTN_BLOCK_KV", "0", &cfg, &ctx), ATTN_OK);
    attn_ctx_destroy(ctx);
    unsetenv("ATTN_BLOCK_KV");
    /* A bad variable whose field is zero still fails, config or not. */
    cfg = (attn_config){ .num_threads = 2 };
    expect_env("ATTN_BLOCK_Q", "junk", &cfg, ATTN_EINVAL);
    expect_env("ATTN_VERBOSE", "yes", &cfg, ATTN_EINVAL);
}

/* Everything written to fds 1 and 2 while fn runs, in buf (NUL-terminated); returns the length. */
static size_t capture_output(void (*fn)(void), char *buf, size_t len)
{
    fflush(stdout);
    fflush(stderr);
    FILE *tmp = tmpfile();
    cr_assert(tmp);
    int saved_out = dup(1), saved_err = dup(2);
    cr_assert(saved_out >= 0 && saved_err >= 0);
    dup2(fileno(tmp), 1);
    dup2(fileno(tmp), 2);
    fn();
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    rewind(tmp);
    size_t n = fread(buf, 1, len - 1, tmp);
    buf[n] = 0;
    fclose(tmp);
    return n;
}

static attn_status quiet_status;

static void use_library(void)
{
    attn_ctx *ctx = NULL;
    attn_config bad = { .num_threads = -1 };
    quiet_status = attn_ctx_create(&ctx, NULL);
    if (quiet_status != ATTN_OK)
        return;
    float q[2 * 3 * 8], k[2 * 5 * 8], v[2 * 5 * 8], out[2 * 3 * 8], probs[2 * 3 * 5];
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
        q[i] = out[i] = (float)i / 48.0f;
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        k[i] = v[i] = (float)i / 80.0f - 0.5f;
    attn_sdpa_desc d = {
        .batch = 1, .n_heads = 2, .q_len = 3, .kv_len = 5, .head_dim = 8, .mask = ATTN_MASK_CAUSAL,
    };
    if (attn_sdpa(ctx, &d, q, k, v, out, probs) != ATTN_OK)
        quiet_status = ATTN_EINVAL;
    d.batch = 0; /* an error path must be silent too */
    attn_sdpa(ctx, &d, q, k, v, out, probs);
    attn_ctx_destroy(ctx);
    attn_ctx *ctx2 = NULL;
    attn_ctx_create(&ctx2, &bad);
    attn_ctx_destroy(ctx2);
}

Test(env, silent_unless_verbose)
{
    clear_env();
    char buf[4096];
    size_t n = capture_output(use_library, buf, sizeof buf);
    cr_assert_eq(quiet_status, ATTN_OK);
    cr_assert_eq(n, 0, "ATTN_VERBOSE unset, but attn printed: \"%s\"", buf);
    setenv("ATTN_VERBOSE", "0", 1);
    n = capture_output(use_library, buf, sizeof buf);
    cr_assert_eq(quiet_status, ATTN_OK);
    cr_assert_eq(n, 0, "ATTN_VERBOSE=0, but attn printed: \"%s\"", buf);
    /* With ATTN_VERBOSE=1 a context says what it chose (ISA, threads, tiles) on stderr. */
    setenv("ATTN_VERBOSE", "1", 1);
    n = capture_output(use_library, buf, sizeof buf);
    cr_assert_eq(quiet_status, ATTN_OK);
    cr_assert_gt(n, 0, "ATTN_VERBOSE=1 printed nothing");
}

/* The level of a "level/variant" name, as the attn_isa attn_isa_name gives that name to. */
static attn_isa level_of(const char *name)
{
    const size_t n = strcspn(name, "/");
    for (int isa = ATTN_ISA_SCALAR; isa < TC_MAX_ISAS; isa++)
        if (strlen(attn_isa_name((attn_isa)isa)) == n && !strncmp(name, attn_isa_name((attn_isa)isa), n))
            return (attn_isa)isa;
    cr_assert_fail("variant \"%s\" names no ISA level", name);
    return ATTN_ISA_AUTO;
}

Test(env, kernels)
{
    clear_env();
    static const char *const bad[] = { "", "bogus", "avx512/", "/generic", "generic/", "avx2/zen4", "zen4x",
                                       "scalar/generic/x", " scalar/generic" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_env("ATTN_KERNELS", bad[i], NULL, ATTN_EINVAL);
    attn_ctx *ctx;
    /* The default: a variant of the context's level, one of those built in. */
    cr_assert_eq(tc_ctx_create(&ctx, ATTN_ISA_AUTO, 1, 0, 0), ATTN_OK);
    const char *dflt = attn_ctx_kernels(ctx);
    cr_assert(attn_kernels_supported(dflt), "default variant %s", dflt);
    cr_assert_eq(level_of(dflt), attn_ctx_isa(ctx), "default variant %s of level %s", dflt,
                 attn_isa_name(attn_ctx_isa(ctx)));
    attn_ctx_destroy(ctx);
    cr_assert_str_eq(attn_ctx_kernels(NULL), "scalar/generic");
    cr_assert(!attn_kernels_supported(NULL) && !attn_kernels_supported("bogus"));
    int n = 0;
    for (size_t i = 0; attn_kernels_name(i); i++, n++) {
        const char *name = attn_kernels_name(i), *shortname = strchr(name, '/') + 1;
        const attn_isa level = level_of(name);
        cr_assert_eq(attn_kernels_supported(name), attn_isa_supported(level), "%s", name);
        if (!attn_isa_supported(level)) {
            expect_env("ATTN_KERNELS", name, NULL, ATTN_ENOTSUP);
            continue;
        }
        /* A full name picks its level too, and may force a variant tuned for another CPU. */
        cr_assert_eq(create_with("ATTN_KERNELS", name, NULL, &ctx), ATTN_OK, "ATTN_KERNELS=%s", name);
        cr_assert_str_eq(attn_ctx_kernels(ctx), name);
        cr_assert_eq(attn_ctx_isa(ctx), level);
        attn_ctx_destroy(ctx);
        /* The part after the slash names a variant of the chosen level. */
        const attn_config cfg = { .isa = level };
        cr_assert_eq(create_with("ATTN_KERNELS", shortname, &cfg, &ctx), ATTN_OK, "%s within %s", shortname,
                     attn_isa_name(level));
        cr_assert_str_eq(attn_ctx_kernels(ctx), name);
        attn_ctx_destroy(ctx);
        /* A level other than the variant's is a contradiction. */
        attn_isa isas[TC_MAX_ISAS];
        const attn_config other = { .isa = level == ATTN_ISA_SCALAR ? isas[tc_isas(isas) - 1] : ATTN_ISA_SCALAR };
        if (other.isa != level)
            expect_env("ATTN_KERNELS", name, &other, ATTN_EINVAL);
        /* attn_config.kernels wins over the variable. */
        const attn_config named = { .kernels = name };
        cr_assert_eq(create_with("ATTN_KERNELS", "bogus", &named, &ctx), ATTN_OK);
        cr_assert_str_eq(attn_ctx_kernels(ctx), name);
        attn_ctx_destroy(ctx);
        unsetenv("ATTN_KERNELS");
    }
    cr_assert_geq(n, 1);
    const attn_config badcfg = { .kernels = "bogus" };
    cr_assert_eq(attn_ctx_create(&ctx, &badcfg), ATTN_EINVAL);
}

Test(env, unsupported_isa)
{
    clear_env();
    static const char *const names[] = { "avx2", "avx512", "neon" };
    static const attn_isa isas[] = { ATTN_ISA_AVX2, ATTN_ISA_AVX512, ATTN_ISA_NEON };
    int tried = 0;
    for (int i = 0; i < 3; i++) {
        if (attn_isa_supported(isas[i]))
            continue;
        expect_env("ATTN_ISA", names[i], NULL, ATTN_ENOTSUP);
        tried++;
    }
    cr_assert_geq(tried, 1);
}
