/* libFuzzer target: the ATTN_* environment variables read by attn_ctx_create (README, attn.h).
 *
 * Input: one flag byte (bit i set: variable i is unset), then the values of ATTN_NUM_THREADS, ATTN_ISA, ATTN_BLOCK_Q,
 * ATTN_BLOCK_KV, ATTN_VERBOSE and ATTN_KERNELS, separated by NUL bytes (missing ones are unset). The harness sets them, calls
 * attn_ctx_create(&ctx, NULL) and checks the status against its own implementation of the documented rules:
 *   integers as strtol reads them (optional leading white space, optional sign, decimal digits, nothing after), in
 *   range: threads 1..1024, blocks 1..4096, verbose 0..1; ISA names auto/scalar/avx2/avx512/neon/avx512bf16/amx/
 *   neonbf16 in any case;
 *   a bad value: ATTN_EINVAL; a valid ISA this build or CPU lacks: ATTN_ENOTSUP (either when both apply);
 *   ATTN_KERNELS a name attn_kernels_name lists, any case, or its part after the slash within the chosen ISA; a
 *   full name sets the ISA, and one of another ISA than ATTN_ISA names is ATTN_EINVAL.
 * On success attn_ctx_threads, attn_ctx_isa and attn_ctx_kernels must show the values (unset: the defaults of a context made with no
 * variables); on failure *out is untouched. stderr is captured around the call: with ATTN_VERBOSE=1 the library
 * says something (one or more whole lines) on success and on a bad value; otherwise it must print nothing.
 * Sanitizer reports go to the real stderr throughout. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <sanitizer/common_interface_defs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fuzz_common.h"

enum { V_THREADS, V_ISA, V_BLOCK_Q, V_BLOCK_KV, V_VERBOSE, V_KERNELS, N_VARS };
static const char *const fz_vars[N_VARS] = {"ATTN_NUM_THREADS", "ATTN_ISA", "ATTN_BLOCK_Q", "ATTN_BLOCK_KV",
                                            "ATTN_VERBOSE", "ATTN_KERNELS"};
/* Indexed by attn_isa. */
static const char *const fz_isa_names[] = {"auto", "scalar", "avx2", "avx512", "neon", "avx512bf16", "amx", "neonbf16"};

static int fz_default_threads;
static attn_isa fz_best;
static int fz_stderr_saved = -1; /* the real stderr */
static FILE *fz_capture;        /* where fd 2 points during attn_ctx_create */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < N_VARS; i++)
        unsetenv(fz_vars[i]);
    attn_ctx *c = NULL;
    CHECK(attn_ctx_create(&c, NULL) == ATTN_OK, "a context with no variables");
    fz_default_threads = attn_ctx_threads(c);
    fz_best = attn_ctx_isa(c);
    attn_ctx_destroy(c);
    fz_stderr_saved = dup(2);
    CHECK(fz_stderr_saved >= 0, "dup(2)");
    __sanitizer_set_report_fd((void *)(intptr_t)fz_stderr_saved);
    fz_capture = tmpfile();
    CHECK(fz_capture != NULL, "tmpfile");
    return 0;
}

/* An integer as strtol(s, &end, 10) reads it, the whole string, within [min, max]; 1 and *v if so. Written from
 * the C standard's description, without strtol. */
static int fz_parse_int(const char *s, long min, long max, long *v)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\v' || *s == '\f' || *s == '\r')
        s++;
    int neg = 0;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    if (!(*s >= '0' && *s <= '9'))
        return 0;
    long long x = 0;
    int big = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        x = x * 10 + (*s - '0');
        if (x > 100000000)
            big = 1, x = 100000000; /* far past every limit; keep going to the end of the digits */
    }
    if (*s != '\0' || big)
        return 0;
    if (neg)
        x = -x;
    if (x < min || x > max)
        return 0;
    *v = (long)x;
    return 1;
}

/* ISA name of len bytes at s, any case: its enum value, or -1. */
static int fz_parse_isa_n(const char *s, size_t len)
{
    for (int i = 0; i < (int)(sizeof fz_isa_names / sizeof fz_isa_names[0]); i++) {
        const char *n = fz_isa_names[i];
        size_t k = 0;
        while (n[k] && k < len && tolower((unsigned char)s[k]) == n[k])
            k++;
        if (!n[k] && k == len)
            return i;
    }
    return -1;
}

static int fz_parse_isa(const char *s) { return fz_parse_isa_n(s, strlen(s)); }

/* a and b equal ignoring ASCII case, b of length n. */
static int fz_eq_nocase(const char *a, const char *b, size_t n)
{
    size_t k = 0;
    while (k < n && a[k] && tolower((unsigned char)a[k]) == tolower((unsigned char)b[k]))
        k++;
    return k == n && !a[k];
}

/* ATTN_KERNELS s with the ISA level chosen so far: the index of the variant it names in attn_kernels_name, or -1. */
static int fz_parse_kernels(const char *s, int level)
{
    for (size_t i = 0; attn_kernels_name(i); i++) {
        const char *name = attn_kernels_name(i), *slash = strchr(name, '/');
        if (fz_eq_nocase(s, name, strlen(name)) ||
            (fz_eq_nocase(s, slash + 1, strlen(slash + 1)) && fz_parse_isa_n(name, (size_t)(slash - name)) == level))
            return (int)i;
    }
    return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t unset_mask = data[0];
    const size_t n = size - 1; /* the value bytes */
    char *copy = malloc(n + 1);    /* the values, NUL-terminated in place */
    CHECK(copy != NULL, "malloc");
    memcpy(copy, data + 1, n);
    copy[n] = '\0';
    const char *val[N_VARS] = {NULL};
    size_t at = 0;
    for (int i = 0; i < N_VARS && at <= n; i++) {
        val[i] = copy + at;
        at += strlen(copy + at) + 1;
    }
    for (int i = 0; i < N_VARS; i++) {
        if (unset_mask >> i & 1)
            val[i] = NULL;
        if (val[i])
            CHECK(setenv(fz_vars[i], val[i], 1) == 0, "setenv %s", fz_vars[i]);
        else
            unsetenv(fz_vars[i]);
    }

    /* The oracle. */
    long threads = 0, bq = 0, bkv = 0, verbose = 0;
    int isa = -1, bad = 0;
    if (val[V_THREADS] && !fz_parse_int(val[V_THREADS], 1, 1024, &threads))
        bad = 1;
    if (val[V_ISA] && (isa = fz_parse_isa(val[V_ISA])) < 0)
        bad = 1;
    if (val[V_BLOCK_Q] && !fz_parse_int(val[V_BLOCK_Q], 1, 4096, &bq))
        bad = 1;
    if (val[V_BLOCK_KV] && !fz_parse_int(val[V_BLOCK_KV], 1, 4096, &bkv))
        bad = 1;
    int verbose_ok = 1;
    if (val[V_VERBOSE] && !fz_parse_int(val[V_VERBOSE], 0, 1, &verbose))
        bad = 1, verbose_ok = 0;
    int kern = -1;
    if (val[V_KERNELS]) {
        const int level = isa > 0 ? isa : (int)fz_best;
        if ((kern = fz_parse_kernels(val[V_KERNELS], level)) < 0)
            bad = 1;
        else {
            const char *name = attn_kernels_name((size_t)kern);
            const int kl = fz_parse_isa_n(name, strcspn(name, "/"));
            if (isa > 0 && kl != isa)
                bad = 1;
            isa = kl;
        }
    }
    const int unsupported = isa > 0 && !attn_isa_supported((attn_isa)isa);

    /* The call, with stderr captured. */
    CHECK(fflush(stderr) == 0 && ftruncate(fileno(fz_capture), 0) == 0 && fseek(fz_capture, 0, SEEK_SET) == 0,
          "capture reset");
    CHECK(dup2(fileno(fz_capture), 2) == 2, "dup2 capture");
    attn_ctx *const sentinel = (attn_ctx *)&fz_best, *ctx = sentinel;
    const attn_status s = attn_ctx_create(&ctx, NULL);
    fflush(stderr);
    CHECK(dup2(fz_stderr_saved, 2) == 2, "dup2 restore");
    char said[4096];
    const long said_len = lseek(fileno(fz_capture), 0, SEEK_END);
    size_t got = 0;
    if (said_len > 0) {
        CHECK(lseek(fileno(fz_capture), 0, SEEK_SET) == 0, "lseek");
        const ssize_t k = read(fileno(fz_capture), said, sizeof said - 1);
        got = k > 0 ? (size_t)k : 0;
    }
    said[got] = '\0';

    const char *vs[N_VARS];
    for (int i = 0; i < N_VARS; i++)
        vs[i] = val[i] ? val[i] : "(unset)";
#define FZ_ENV_FMT                                                                                                 \
    "ATTN_NUM_THREADS=\"%s\" ATTN_ISA=\"%s\" ATTN_BLOCK_Q=\"%s\" ATTN_BLOCK_KV=\"%s\" ATTN_VERBOSE=\"%s\" "           \
    "ATTN_KERNELS=\"%s\""
#define FZ_ENV_ARGS vs[0], vs[1], vs[2], vs[3], vs[4], vs[5]
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    if (bad && unsupported)
        CHECK(s == ATTN_EINVAL || s == ATTN_ENOTSUP, FZ_ENV_FMT ": status %d", FZ_ENV_ARGS, (int)s);
    else
        CHECK(s == (bad ? ATTN_EINVAL : unsupported ? ATTN_ENOTSUP : ATTN_OK), FZ_ENV_FMT ": status %d, want %s",
              FZ_ENV_ARGS, (int)s, bad ? "EINVAL" : unsupported ? "ENOTSUP" : "OK");
    const int loud = verbose_ok && verbose == 1;
    if (!loud)
        CHECK(said_len == 0, FZ_ENV_FMT ": printed without ATTN_VERBOSE=1: \"%s\"", FZ_ENV_ARGS, said);
    else if (s != ATTN_ENOTSUP)
        CHECK(said_len > 0 && (said_len != (long)got || said[got - 1] == '\n'),
              FZ_ENV_FMT ": with ATTN_VERBOSE=1, status %d, said \"%s\"", FZ_ENV_ARGS, (int)s, said);
    if (s != ATTN_OK) {
        CHECK(ctx == sentinel, "*out written on error");
    } else {
        const int want_threads = val[V_THREADS] ? (int)threads : fz_default_threads;
        const attn_isa want_isa = isa > 0 ? (attn_isa)isa : fz_best;
        CHECK(attn_ctx_threads(ctx) == want_threads, FZ_ENV_FMT ": %d threads, want %d", FZ_ENV_ARGS,
              attn_ctx_threads(ctx), want_threads);
        CHECK(attn_ctx_isa(ctx) == want_isa, FZ_ENV_FMT ": isa %s, want %s", FZ_ENV_ARGS,
              attn_isa_name(attn_ctx_isa(ctx)), attn_isa_name(want_isa));
        CHECK(kern < 0 || !strcmp(attn_ctx_kernels(ctx), attn_kernels_name((size_t)kern)),
              FZ_ENV_FMT ": kernels %s", FZ_ENV_ARGS, attn_ctx_kernels(ctx));
        /* The context works (its block sizes are not observable otherwise). */
        float q[2 * 4 * 3], k[4 * 3], v[4 * 3], out[2 * 4 * 3];
        uint64_t seed = 1;
        fz_fill(q, 24, &seed, 1.0f);
        fz_fill(k, 12, &seed, 1.0f);
        fz_fill(v, 12, &seed, 1.0f);
        const attn_sdpa_desc d = {.batch = 1, .n_heads = 2, .n_kv_heads = 1, .q_len = 4, .kv_len = 4, .head_dim = 3,
                                  .mask = ATTN_MASK_CAUSAL, .layout = ATTN_LAYOUT_BSHD};
        if (want_threads <= 16) { /* do not start hundreds of threads */
            CHECK(attn_sdpa(ctx, &d, q, k, v, out, NULL) == ATTN_OK, "attn_sdpa on the context");
            for (int i = 0; i < 24; i++)
                CHECK(isfinite(out[i]), "out[%d] = %g", i, out[i]);
        }
        attn_ctx_destroy(ctx);
    }
    for (int i = 0; i < N_VARS; i++)
        unsetenv(fz_vars[i]);
    free(copy);
    return 0;
}
