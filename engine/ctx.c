/* Status strings, version, ISA names and the context: configuration precedence (config field, then ATTN_*
 * environment variable, then default) and strict parsing of the environment, read once per context. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef ATTN_HAVE_OPENMP
#include <omp.h>
#endif

#include "internal.h"

#define ATTN_STR_(x) #x
#define ATTN_STR(x) ATTN_STR_(x)

const char *attn_version(void)
{
    return ATTN_STR(ATTN_VERSION_MAJOR) "." ATTN_STR(ATTN_VERSION_MINOR) "." ATTN_STR(ATTN_VERSION_PATCH);
}

const char *attn_strerror(attn_status s)
{
    switch (s) {
    case ATTN_OK: return "success";
    case ATTN_EINVAL: return "invalid argument";
    case ATTN_ERANGE: return "size out of range";
    case ATTN_ENOMEM: return "out of memory";
    case ATTN_ENOTSUP: return "not supported";
    }
    return "unknown status";
}

static const char *const attn_isa_names[] = {"auto",       "scalar", "avx2",    "avx512",
                                             "neon",       "avx512bf16", "amx", "neonbf16"};
#define ATTN_N_ISA (sizeof attn_isa_names / sizeof attn_isa_names[0])

const char *attn_isa_name(attn_isa isa)
{
    return (unsigned)isa < ATTN_N_ISA ? attn_isa_names[isa] : "unknown";
}

int attn_isa_supported(attn_isa isa)
{
    if (isa == ATTN_ISA_AUTO)
        return 1;
    return (unsigned)isa < ATTN_N_ISA && attn_level_runs(isa);
}

const char *attn_kernels_name(size_t i)
{
    const attn_variant *v = attn_variant_at(i);
    return v ? v->name : NULL;
}

int attn_kernels_supported(const char *name)
{
    const attn_variant *v = name ? attn_variant_find(name, ATTN_ISA_AUTO) : NULL;
    return v && attn_level_runs(v->level);
}

const char *attn_ctx_kernels(const attn_ctx *ctx) { return ctx ? ctx->var->name : "scalar/generic"; }

void *attn_alloc_aligned(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0 || posix_memalign(&p, 64, bytes) != 0)
        return NULL;
    return p;
}

void attn_free_aligned(void *p) { free(p); }

int attn_call_threads(const attn_ctx *ctx, size_t items)
{
    int nt = ctx->threads;
#ifdef ATTN_HAVE_OPENMP
    if (omp_in_parallel())
        nt = 1;
#else
    nt = 1;
#endif
    return (size_t)nt > items ? (int)items : nt;
}

struct attn_ws {
    pthread_mutex_t lock;
    void *mem;
    size_t bytes;
};

void *attn_ws_acquire(const attn_ctx *ctx, size_t bytes, int *cached)
{
    attn_ws *ws = ctx->ws;
    *cached = 0;
    if (bytes > ATTN_WS_CACHE_MAX || pthread_mutex_trylock(&ws->lock) != 0)
        return attn_alloc_aligned(bytes);
    if (ws->bytes < bytes) {
        void *mem = attn_alloc_aligned(bytes);
        if (!mem) {
            pthread_mutex_unlock(&ws->lock);
            return NULL;
        }
        attn_free_aligned(ws->mem);
        ws->mem = mem;
        ws->bytes = bytes;
    }
    *cached = 1;
    return ws->mem;
}

void attn_ws_release(const attn_ctx *ctx, void *p, int cached)
{
    if (cached)
        pthread_mutex_unlock(&ctx->ws->lock);
    else
        attn_free_aligned(p);
}

/* An integer variable: unset leaves *v alone; set, it must be a whole decimal number in [min, max]. */
static attn_status attn_env_int(const char *name, int min, int max, int *v, int verbose)
{
    const char *s = getenv(name);
    if (!s)
        return ATTN_OK;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || x < min || x > max) {
        if (verbose)
            fprintf(stderr, "attn: %s=\"%s\" is invalid: expected an integer from %d to %d\n", name, s, min, max);
        return ATTN_EINVAL;
    }
    *v = (int)x;
    return ATTN_OK;
}

static attn_status attn_env_isa(attn_isa *isa, int verbose)
{
    const char *s = getenv("ATTN_ISA");
    if (!s)
        return ATTN_OK;
    for (unsigned i = 0; i < ATTN_N_ISA; i++)
        if (strcasecmp(s, attn_isa_names[i]) == 0) {
            *isa = (attn_isa)i;
            return ATTN_OK;
        }
    if (verbose)
        fprintf(stderr, "attn: ATTN_ISA=\"%s\" is invalid: expected auto, scalar, avx2, avx512, avx512bf16, amx, neon or neonbf16\n", s);
    return ATTN_EINVAL;
}

attn_status attn_ctx_create(attn_ctx **out, const attn_config *cfg)
{
    static const attn_config defaults = {0};
    if (!out)
        return ATTN_EINVAL;
    if (!cfg)
        cfg = &defaults;

    /* ATTN_VERBOSE first, so that it can explain the other variables. */
    int verbose = 0;
    attn_status st = attn_env_int("ATTN_VERBOSE", 0, 1, &verbose, 0); /* silent unless asked */
    if (st != ATTN_OK)
        return st;
    if (cfg->num_threads < 0 || cfg->num_threads > ATTN_MAX_THREADS || (unsigned)cfg->isa >= ATTN_N_ISA ||
        cfg->block_q < 0 || cfg->block_q > ATTN_MAX_BLOCK || cfg->block_kv < 0 || cfg->block_kv > ATTN_MAX_BLOCK) {
        if (verbose)
            fprintf(stderr, "attn: attn_config has a negative or out-of-range field\n");
        return ATTN_EINVAL;
    }

    int threads = cfg->num_threads, block_q = cfg->block_q, block_kv = cfg->block_kv;
    attn_isa isa = cfg->isa;
    if (!threads && (st = attn_env_int("ATTN_NUM_THREADS", 1, ATTN_MAX_THREADS, &threads, verbose)) != ATTN_OK)
        return st;
    if (isa == ATTN_ISA_AUTO && (st = attn_env_isa(&isa, verbose)) != ATTN_OK)
        return st;
    if (!block_q && (st = attn_env_int("ATTN_BLOCK_Q", 1, ATTN_MAX_BLOCK, &block_q, verbose)) != ATTN_OK)
        return st;
    if (!block_kv && (st = attn_env_int("ATTN_BLOCK_KV", 1, ATTN_MAX_BLOCK, &block_kv, verbose)) != ATTN_OK)
        return st;

    if (!threads) {
#ifdef ATTN_HAVE_OPENMP
        threads = omp_get_max_threads();
#else
        threads = 1;
#endif
        if (threads < 1)
            threads = 1;
        if (threads > ATTN_MAX_THREADS)
            threads = ATTN_MAX_THREADS;
    }
    const char *kernels = cfg->kernels ? cfg->kernels : getenv("ATTN_KERNELS");
    const attn_variant *var = NULL;
    if (kernels) {
        /* A full "level/variant" name also sets the level when none was asked for; it must agree with one that was. */
        var = attn_variant_find(kernels, isa == ATTN_ISA_AUTO ? attn_isa_best() : isa);
        if (!var || (isa != ATTN_ISA_AUTO && var->level != isa)) {
            if (verbose) {
                fprintf(stderr, "attn: %s \"%s\" is not a kernel variant of the chosen level; built in:",
                        cfg->kernels ? "attn_config.kernels" : "ATTN_KERNELS", kernels);
                for (size_t i = 0; attn_variant_at(i); i++)
                    fprintf(stderr, " %s", attn_variant_at(i)->name);
                fprintf(stderr, "\n");
            }
            return ATTN_EINVAL;
        }
        isa = var->level;
    }
    if (isa == ATTN_ISA_AUTO)
        isa = attn_isa_best();
    if (!attn_level_runs(isa)) {
        if (verbose)
            fprintf(stderr, "attn: ISA %s is not built in or not supported by this CPU\n", attn_isa_name(isa));
        return ATTN_ENOTSUP;
    }
    if (!var)
        var = attn_variant_pick(isa);

    attn_ctx *c = malloc(sizeof *c);
    attn_ws *ws = malloc(sizeof *ws);
    if (!c || !ws || pthread_mutex_init(&ws->lock, NULL) != 0) {
        free(c);
        free(ws);
        return ATTN_ENOMEM;
    }
    ws->mem = NULL;
    ws->bytes = 0;
    c->ws = ws;
    c->var = var;
    c->kern = var->kern;
    c->isa = isa;
    c->threads = threads;
    c->block_q = block_q ? block_q : var->block_q;
    c->block_kv = block_kv ? block_kv : var->block_kv;
    c->verbose = verbose;
    if (verbose) {
        const attn_cpu_info *ci = attn_cpu_get();
        const attn_kernels *k = var->kern;
        fprintf(stderr,
                "attn %s: kernels %s (%s; registers %dx%d scores, %dx%d P.V, %dx%d decode P.V), %d threads, "
                "block_q %d, block_kv %d; cpu vendor %d family 0x%x model 0x%x, L1d %u KiB, L2 %u KiB\n",
                attn_version(), var->name, var->how, k->sc_rb, k->sc_nv, k->pv_rb, k->pv_nv, k->pvd_rb, k->pvd_nv,
                threads, c->block_q, c->block_kv, (int)ci->vendor, ci->family, ci->model, ci->l1d_kib, ci->l2_kib);
    }
    *out = c;
    return ATTN_OK;
}

void attn_ctx_destroy(attn_ctx *ctx)
{
    if (!ctx)
        return;
    pthread_mutex_destroy(&ctx->ws->lock);
    attn_free_aligned(ctx->ws->mem);
    free(ctx->ws);
    free(ctx);
}

attn_isa attn_ctx_isa(const attn_ctx *ctx) { return ctx ? ctx->isa : ATTN_ISA_SCALAR; }

int attn_ctx_threads(const attn_ctx *ctx) { return ctx ? ctx->threads : 0; }
