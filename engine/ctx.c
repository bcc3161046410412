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

static const char *const attn_isa_names[] = {"auto", "scalar", "avx2", "avx512", "neon"};
#define ATTN_N_ISA (sizeof attn_isa_names / sizeof attn_isa_names[0])

const char *attn_isa_name(attn_isa isa)
{
    return (unsigned)isa < ATTN_N_ISA ? attn_isa_names[isa] : "unknown";
}

int attn_isa_supported(attn_isa isa)
{
    if (isa == ATTN_ISA_AUTO)
        return 1;
    return (unsigned)isa < ATTN_N_ISA && attn_kernels_get(isa) != NULL;
}

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
        fprintf(stderr, "attn: ATTN_ISA=\"%s\" is invalid: expected auto, scalar, avx2, avx512 or neon\n", s);
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
    if (isa == ATTN_ISA_AUTO)
        isa = attn_isa_best();
    const attn_kernels *kern = attn_kernels_get(isa);
    if (!kern) {
        if (verbose)
            fprintf(stderr, "attn: ISA %s is not built in or not supported by this CPU\n", attn_isa_name(isa));
        return ATTN_ENOTSUP;
    }

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
    c->kern = kern;
    c->isa = isa;
    c->threads = threads;
    c->block_q = block_q ? block_q : ATTN_DEFAULT_BLOCK_Q;
    c->block_kv = block_kv ? block_kv : ATTN_DEFAULT_BLOCK_KV;
    c->verbose = verbose;
    if (verbose)
        fprintf(stderr, "attn %s: isa %s, %d threads, block_q %d, block_kv %d\n", attn_version(),
                attn_isa_name(isa), threads, c->block_q, c->block_kv);
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
