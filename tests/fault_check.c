/* fault-check: allocation-failure injection into every public entry point that allocates. Standalone (no Criterion,
 * never forks), so it also runs under qemu and valgrind.
 *
 * Linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=aligned_alloc,--wrap=free,
 * --wrap=mmap,--wrap=munmap (tests/checks.mk): every such call in libattn.a's objects linked into this program lands
 * in the __wrap_ functions below. The loader's JSON parser lives in a shared library, where --wrap cannot reach, so
 * its allocations (jansson's) are routed through the same counters with json_set_alloc_funcs.
 *
 * While armed, the wrappers count allocation calls and make the Nth fail (NULL, ENOMEM, MAP_FAILED with errno
 * ENOMEM) - once, or every call from the Nth on - and remember every block allocated, so that a leak is seen by
 * this program itself (not only by LeakSanitizer or valgrind).
 *
 * Each scenario: a clean armed call counts its allocations K and keeps its outputs; then for N = 1..K, in both
 * modes, the call runs again with allocation N failing, and the program asserts:
 *   - the status is ATTN_ENOMEM, or ATTN_OK where the library has a documented fallback (attn_sdpa falls back from
 *     the call-wide packed K/V tiles to per-block packing when that workspace cannot be had): the outputs must then
 *     equal the clean call's bit for bit;
 *   - on ATTN_ENOMEM the outputs are untouched (still the poison pattern, guards intact), *out pointers are
 *     untouched (attn_layer_load_safetensors: zeroed, as documented), a KV cache's length and contents are
 *     unchanged, a pool's lengths and free pages are, and the context still works (the same call, not armed, gives the clean result);
 *   - after the scenario frees what it made, no block allocated while armed is still live.
 * A failure injected inside the JSON parser is the parser's to report: jansson 2.14 turns most of them into syntax
 * errors (so the loader says ATTN_EINVAL) and loses a character of a long token when its token buffer cannot grow
 * (ATTN_OK with a wrong name). Those outcomes are printed as notes, not problems, unless FAULT_CHECK_STRICT_JSON=1;
 * a crash, a leak, a written *out or any other status is a problem wherever the failure was injected.
 * FAULT_CHECK_TRACE=1 prints every allocation of each clean call with its caller (library + offset), on stderr.
 * Built without jansson (configure --without-jansson) the loader has no parser and allocates nothing: its scenarios
 * are left out.
 * Exit status 1 on any problem, each described on one line. */
#define _GNU_SOURCE /* dladdr, for FAULT_CHECK_TRACE */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#if ATTN_HAVE_JANSSON
#include <jansson.h>
#endif

#include "common.h"

/* ---- the wrappers ---------------------------------------------------------------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_munmap(void *addr, size_t len);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t align, size_t n);
void *__wrap_aligned_alloc(size_t align, size_t n);
void __wrap_free(void *p);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *addr, size_t len);

#define FI_MAX_LIVE 8192

typedef enum fi_kind { FI_HEAP = 0, FI_MAP = 1, FI_JSON = 2 } fi_kind;

static struct {
    pthread_mutex_t lock;
    int armed;
    unsigned long count;    /* allocation calls while armed */
    unsigned long fail_at;  /* 0: none */
    int persist;            /* fail every call from fail_at on */
    unsigned long injected; /* failures injected while armed */
    int injected_json;      /* one of them was a JSON parser allocation */
    struct fi_block {
        void *p;
        size_t n;
        fi_kind kind;
    } live[FI_MAX_LIVE];
    size_t nlive;
    int overflow;           /* more live blocks than the table holds: counted as a problem */
} fi = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int fi_trace; /* FAULT_CHECK_TRACE=1: one stderr line per allocation of a clean run, with its caller */

/* 1 if this allocation call must fail. */
static int fi_should_fail(fi_kind kind, size_t n, const void *caller)
{
    int fail = 0;
    pthread_mutex_lock(&fi.lock);
    if (fi.armed) {
        fi.count++;
        if (fi.fail_at && (fi.count == fi.fail_at || (fi.persist && fi.count > fi.fail_at))) {
            fail = 1;
            fi.injected++;
            if (kind == FI_JSON)
                fi.injected_json = 1;
        }
        if (fi_trace && !fi.fail_at) {
            Dl_info info;
            const int known = dladdr(caller, &info) && info.dli_fname;
            fprintf(stderr, "  allocation %lu: %s of %zu bytes from %s+0x%zx (%s)\n", fi.count,
                    kind == FI_MAP ? "mmap" : kind == FI_JSON ? "JSON parser block" : "heap block", n,
                    known ? info.dli_fname : "?", known ? (size_t)((const char *)caller - (const char *)info.dli_fbase) : 0,
                    known && info.dli_sname ? info.dli_sname : "?");
        }
    }
    pthread_mutex_unlock(&fi.lock);
    return fail;
}

/* Remembers p when it was allocated while armed. */
static void fi_track(void *p, size_t n, fi_kind kind)
{
    if (!p)
        return;
    pthread_mutex_lock(&fi.lock);
    if (fi.armed) {
        if (fi.nlive < FI_MAX_LIVE)
            fi.live[fi.nlive++] = (struct fi_block){ p, n, kind };
        else
            fi.overflow = 1;
    }
    pthread_mutex_unlock(&fi.lock);
}

/* Forgets p (armed or not: a block allocated while armed may be freed later, by a destroy). */
static void fi_untrack(void *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&fi.lock);
    for (size_t i = 0; i < fi.nlive; i++)
        if (fi.live[i].p == p) {
            fi.live[i] = fi.live[--fi.nlive];
            break;
        }
    pthread_mutex_unlock(&fi.lock);
}

void *__wrap_malloc(size_t n)
{
    if (fi_should_fail(FI_HEAP, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    fi_track(p, n, FI_HEAP);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (fi_should_fail(FI_HEAP, n * size, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_calloc(n, size);
    fi_track(p, n * size, FI_HEAP);
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    if (fi_should_fail(FI_HEAP, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL; /* p stays valid and owned by the caller */
    }
    void *q = __real_realloc(p, n);
    if (q || !n) {
        fi_untrack(p);
        fi_track(q, n, FI_HEAP);
    }
    return q;
}

int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    if (fi_should_fail(FI_HEAP, n, __builtin_return_address(0)))
        return ENOMEM; /* *p untouched, as POSIX says */
    const int r = __real_posix_memalign(p, align, n);
    if (r == 0)
        fi_track(*p, n, FI_HEAP);
    return r;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (fi_should_fail(FI_HEAP, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_aligned_alloc(align, n);
    fi_track(p, n, FI_HEAP);
    return p;
}

void __wrap_free(void *p)
{
    fi_untrack(p);
    __real_free(p);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (fi_should_fail(FI_MAP, len, __builtin_return_address(0))) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    void *p = __real_mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED)
        fi_track(p, len, FI_MAP);
    return p;
}

int __wrap_munmap(void *addr, size_t len)
{
    fi_untrack(addr);
    return __real_munmap(addr, len);
}

#if ATTN_HAVE_JANSSON
/* The JSON parser's allocator, counted and failed like the rest. */
static void *fi_json_malloc(size_t n)
{
    if (fi_should_fail(FI_JSON, n, __builtin_return_address(0))) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = __real_malloc(n);
    fi_track(p, n, FI_JSON);
    return p;
}

static void fi_json_free(void *p)
{
    fi_untrack(p);
    __real_free(p);
}

static void fi_json_hooks(void)
{
    json_set_alloc_funcs(fi_json_malloc, fi_json_free);
}
#endif

static void fi_arm(unsigned long fail_at, int persist)
{
    pthread_mutex_lock(&fi.lock);
    fi.count = 0;
    fi.fail_at = fail_at;
    fi.persist = persist;
    fi.injected = 0;
    fi.injected_json = 0;
    fi.armed = 1;
    pthread_mutex_unlock(&fi.lock);
}

static void fi_disarm(void)
{
    pthread_mutex_lock(&fi.lock);
    fi.armed = 0;
    pthread_mutex_unlock(&fi.lock);
}

/* ---- scenarios ------------------------------------------------------------------------------------------------- */

/* How a scenario's call may end when an allocation fails. */
enum { FALLBACK_NONE = 0, FALLBACK_OK = 1 };

typedef struct scenario scenario;
struct scenario {
    const char *name;
    int fallback;   /* FALLBACK_OK: ATTN_OK after a failed allocation is documented (attn_sdpa's packing) */
    int is_loader;  /* a safetensors entry point: its JSON parser's allocations are injected too */
    const char *err; /* the err buffer the call fills, or NULL */
    /* Unarmed: fresh objects, poisoned outputs. 0 on success. */
    int (*setup)(scenario *s);
    /* Armed: the call under test. */
    attn_status (*call)(scenario *s);
    /* Unarmed, after ATTN_OK: keep (clean) or compare (injected) the outputs. 0 if fine, else 1 with msg. */
    int (*after_ok)(scenario *s, int clean, char *msg, size_t len);
    /* Unarmed, after a failure: outputs, *out and state untouched, the context still usable. */
    int (*after_fail)(scenario *s, char *msg, size_t len);
    /* Unarmed: frees everything setup and a successful call made. */
    void (*teardown)(scenario *s);
    void *st;
};

static unsigned long n_problems, n_injected, n_note_einval, n_note_corrupt;
static int strict_json;

static void problem(const scenario *s, unsigned long n, int persist, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void problem(const scenario *s, unsigned long n, int persist, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n)
        printf("PROBLEM %s, allocation %lu%s failing: %s\n", s->name, n, persist ? " and all after it" : "", buf);
    else
        printf("PROBLEM %s, clean call: %s\n", s->name, buf);
    n_problems++;
}

/* Reports and forgets every block allocated while armed that is still live. */
static int leak_check(const scenario *s, unsigned long n, int persist)
{
    pthread_mutex_lock(&fi.lock);
    const size_t nlive = fi.nlive;
    const int overflow = fi.overflow;
    size_t bytes = 0, first_n = nlive ? fi.live[0].n : 0;
    fi_kind first_kind = nlive ? fi.live[0].kind : FI_HEAP;
    for (size_t i = 0; i < nlive; i++)
        bytes += fi.live[i].n;
    fi.nlive = 0;
    fi.overflow = 0;
    pthread_mutex_unlock(&fi.lock);
    if (overflow)
        problem(s, n, persist, "more than %d live blocks: the leak table overflowed", FI_MAX_LIVE);
    if (!nlive)
        return 0;
    static const char *const kinds[] = { "heap block", "mapping", "JSON parser block" };
    problem(s, n, persist, "%zu block(s), %zu bytes leaked (first: a %s of %zu bytes)", nlive, bytes,
            kinds[first_kind], first_n);
    return 1;
}

/* One armed run: fail_at 0 is the clean one, which returns K through *count. */
static void run_once(scenario *s, unsigned long fail_at, int persist, unsigned long *count)
{
    char msg[1024] = "";
    if (s->setup(s)) {
        problem(s, fail_at, persist, "test setup failed (out of memory?)");
        return;
    }
    fi_arm(fail_at, persist);
    const attn_status st = s->call(s);
    fi_disarm();
    const unsigned long injected = fi.injected, calls = fi.count;
    const int json = fi.injected_json;
    n_injected += injected;
    if (count)
        *count = calls;
    if (!fail_at) {
        if (st != ATTN_OK)
            problem(s, 0, 0, "returned %d (%s)", (int)st, attn_strerror(st));
        else if (s->after_ok(s, 1, msg, sizeof msg))
            problem(s, 0, 0, "%s", msg);
    } else if (!injected) {
        problem(s, fail_at, persist, "the call made only %lu allocations this time (%lu in the clean call)", calls,
                fail_at);
    } else {
        /* A failure injected inside the JSON parser library (loader scenarios): what the parser makes of it is the
         * parser's affair, reported as a note (FAULT_CHECK_STRICT_JSON=1 makes it a problem); the library must still
         * not crash, leak or write *out, and must report the failure somehow. */
        const int dep = json && s->is_loader && !strict_json;
        if (st == ATTN_OK) {
            const int differs = s->after_ok(s, 0, msg, sizeof msg);
            if (s->fallback == FALLBACK_OK) {
                if (differs)
                    problem(s, fail_at, persist, "ATTN_OK through the fallback, but %s", msg);
            } else if (dep) {
                if (differs && n_note_corrupt++ < 2)
                    printf("note: %s, allocation %lu%s failing inside the JSON parser: ATTN_OK, but %s\n", s->name,
                           fail_at, persist ? " and all after it" : "", msg);
            } else {
                problem(s, fail_at, persist, "returned ATTN_OK although the allocation failed (no documented "
                        "fallback)%s%s", differs ? "; and " : "", differs ? msg : "");
            }
        } else if (st == ATTN_ENOMEM || (dep && st == ATTN_EINVAL)) {
            if (st != ATTN_ENOMEM && n_note_einval++ < 2)
                printf("note: %s, allocation %lu%s failing inside the JSON parser: ATTN_EINVAL (\"%s\"), not "
                       "ATTN_ENOMEM\n", s->name, fail_at, persist ? " and all after it" : "", s->err ? s->err : "");
            if (s->after_fail(s, msg, sizeof msg))
                problem(s, fail_at, persist, "%s after %s", msg, attn_strerror(st));
        } else {
            problem(s, fail_at, persist, "returned %d (%s), expected %d (%s)%s", (int)st, attn_strerror(st),
                    (int)ATTN_ENOMEM, attn_strerror(ATTN_ENOMEM),
                    json ? " (the failed allocation was the JSON parser's)" : "");
        }
    }
    s->teardown(s);
    leak_check(s, fail_at, persist);
}

static unsigned long n_scenarios;

static void run_scenario(scenario *s)
{
    unsigned long k = 0;
    const unsigned long problems0 = n_problems, injected0 = n_injected;
    run_once(s, 0, 0, &k);
    for (int persist = 0; persist < 2; persist++)
        for (unsigned long n = 1; n <= k; n++)
            run_once(s, n, persist, NULL);
    n_scenarios++;
    printf("  %-58s %3lu allocations, %4lu failures injected, %s\n", s->name, k, n_injected - injected0,
           n_problems == problems0 ? "ok" : "PROBLEMS");
    fflush(stdout);
}

/* ---- helpers --------------------------------------------------------------------------------------------------- */

static int fail_msg(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail_msg(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return 1;
}

/* A guarded, poisoned output buffer, or an empty one for n == 0. */
static int out_alloc(tc_buf *b, size_t n)
{
    memset(b, 0, sizeof *b);
    return n ? tc_buf_alloc(b, n) : 0;
}

static void out_free(tc_buf *b)
{
    if (b->base)
        tc_buf_free(b);
}

/* "untouched": guards intact and every element still poison. */
static int out_untouched(const tc_buf *b)
{
    return !b->base || (tc_buf_guards_ok(b) && tc_buf_all_bits(b, TC_POISON_BITS));
}

/* Bitwise compare with a kept copy; NULL keep: keep it now. */
static int out_same(const tc_buf *b, float **keep, int clean, const char *what, char *msg, size_t len)
{
    if (!b->base)
        return 0;
    if (!tc_buf_guards_ok(b))
        return fail_msg(msg, len, "write outside %s", what);
    if (clean) {
        free(*keep);
        *keep = malloc(b->n * sizeof(float));
        if (!*keep)
            return fail_msg(msg, len, "test out of memory");
        memcpy(*keep, b->p, b->n * sizeof(float));
        return 0;
    }
    for (size_t i = 0; i < b->n; i++)
        if (tc_f2u(b->p[i]) != tc_f2u((*keep)[i]))
            return fail_msg(msg, len, "%s[%zu] = %.9g (0x%08x), the clean call gave %.9g (0x%08x)", what, i,
                            (double)b->p[i], tc_f2u(b->p[i]), (double)(*keep)[i], tc_f2u((*keep)[i]));
    return 0;
}

static void fill_uniform(float *p, size_t n, uint64_t seed)
{
    tc_rng r;
    tc_rng_init(&r, seed);
    for (size_t i = 0; i < n; i++)
        p[i] = tc_rng_float(&r, -1.0f, 1.0f);
}

static float *new_uniform(size_t n, uint64_t seed)
{
    float *p = malloc(n * sizeof *p);
    if (p)
        fill_uniform(p, n, seed);
    return p;
}

#define SENTINEL ((void *)(uintptr_t)0x5e9711e1u)

/* ---- attn_ctx_create ------------------------------------------------------------------------------------------- */

typedef struct ctx_state {
    attn_ctx *ctx;
} ctx_state;

static int ctx_setup(scenario *s)
{
    ((ctx_state *)s->st)->ctx = SENTINEL;
    return 0;
}

static attn_status ctx_call(scenario *s)
{
    return tc_ctx_create(&((ctx_state *)s->st)->ctx, ATTN_ISA_AUTO, 1, 0, 0);
}

static int ctx_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    (void)clean;
    ctx_state *c = s->st;
    if (c->ctx == SENTINEL || !c->ctx)
        return fail_msg(msg, len, "ATTN_OK without a context in *out");
    return 0;
}

static int ctx_after_fail(scenario *s, char *msg, size_t len)
{
    ctx_state *c = s->st;
    if (c->ctx != SENTINEL)
        return fail_msg(msg, len, "*out was written (%p)", (void *)c->ctx);
    return 0;
}

static void ctx_teardown(scenario *s)
{
    ctx_state *c = s->st;
    if (c->ctx != SENTINEL)
        attn_ctx_destroy(c->ctx);
    c->ctx = NULL;
}

/* ---- attn_sdpa ------------------------------------------------------------------------------------------------- */

typedef struct sdpa_state {
    attn_sdpa_desc d;
    int block_q, block_kv, warm; /* warm: one small call first, so the context holds a smaller workspace */
    int want_probs;
    tc_problem p;
    attn_ctx *ctx;
    tc_buf out, probs;
    float *keep_out, *keep_probs;
} sdpa_state;

static int sdpa_prepare(sdpa_state *q, uint64_t seed)
{
    if (tc_problem_init(&q->p, &q->d))
        return -1;
    tc_problem_fill(&q->p, seed, TC_FILL_UNIFORM);
    return 0;
}

static int sdpa_setup(scenario *s)
{
    sdpa_state *q = s->st;
    if (tc_ctx_create(&q->ctx, ATTN_ISA_AUTO, 1, q->block_q, q->block_kv) != ATTN_OK)
        return -1;
    if (q->warm) {
        attn_sdpa_desc small = tc_shape(1, 1, 0, 1, 1, q->d.head_dim, 0);
        float x[64 * 3] = { 0 }, o[64];
        if (q->d.head_dim > 64 || attn_sdpa(q->ctx, &small, x, x + 64, x + 128, o, NULL) != ATTN_OK)
            return -1;
    }
    if (out_alloc(&q->out, q->p.nout) || out_alloc(&q->probs, q->want_probs ? q->p.nprobs : 0))
        return -1;
    return 0;
}

static attn_status sdpa_call(scenario *s)
{
    sdpa_state *q = s->st;
    return attn_sdpa(q->ctx, &q->p.d, q->p.q, q->p.k, q->p.v, q->out.p, q->want_probs ? q->probs.p : NULL);
}

static int sdpa_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    sdpa_state *q = s->st;
    return out_same(&q->out, &q->keep_out, clean, "out", msg, len) ||
           out_same(&q->probs, &q->keep_probs, clean, "probs", msg, len);
}

static int sdpa_after_fail(scenario *s, char *msg, size_t len)
{
    sdpa_state *q = s->st;
    if (!out_untouched(&q->out))
        return fail_msg(msg, len, "out was written");
    if (!out_untouched(&q->probs))
        return fail_msg(msg, len, "probs was written");
    /* The context must still work, and give the clean result. */
    const attn_status st = sdpa_call(s);
    if (st != ATTN_OK)
        return fail_msg(msg, len, "the same call on the same context then returned %s", attn_strerror(st));
    if (sdpa_after_ok(s, 0, msg, len)) {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "the same call on the same context then differs: %s", msg);
        return fail_msg(msg, len, "%s", tmp);
    }
    return 0;
}

static void sdpa_teardown(scenario *s)
{
    sdpa_state *q = s->st;
    attn_ctx_destroy(q->ctx);
    q->ctx = NULL;
    out_free(&q->out);
    out_free(&q->probs);
}

/* ---- the KV cache ---------------------------------------------------------------------------------------------- */

typedef struct kv_state {
    size_t hk, group, d, len, cap, q_len;
    attn_dtype t;
    size_t n_append;       /* tokens the armed call appends (append scenarios) */
    int decode;            /* the armed call is attn_decode (else attn_kv_cache_append) */
    float *k, *v, *qv;     /* [cap][hk][d] and [q_len][hk*group][d] */
    attn_ctx *ctx;
    attn_kv_cache *c;
    tc_buf out;
    float *keep_out, *keep_after; /* clean decode output; decode output after the clean append */
} kv_state;

static int kv_prepare(kv_state *q, uint64_t seed)
{
    const size_t row = q->hk * q->d;
    q->k = new_uniform(q->cap * row, seed);
    q->v = new_uniform(q->cap * row, seed + 1);
    q->qv = new_uniform(q->q_len * q->hk * q->group * q->d, seed + 2);
    return q->k && q->v && q->qv ? 0 : -1;
}

static int kv_setup(scenario *s)
{
    kv_state *q = s->st;
    const size_t row = q->hk * q->d, pre = q->decode ? q->len : q->len - q->n_append;
    if (tc_ctx_create(&q->ctx, ATTN_ISA_AUTO, 1, 0, 0) != ATTN_OK ||
        attn_kv_cache_create(&q->c, q->hk, q->d, q->cap, q->t) != ATTN_OK)
        return -1;
    for (size_t at = 0; at < pre; at += 100) {
        const size_t n = pre - at < 100 ? pre - at : 100;
        if (attn_kv_cache_append(q->c, q->k + at * row, q->v + at * row, n) != ATTN_OK)
            return -1;
    }
    return out_alloc(&q->out, q->q_len * q->hk * q->group * q->d);
}

static attn_status kv_call(scenario *s)
{
    kv_state *q = s->st;
    if (q->decode)
        return attn_decode(q->ctx, q->c, q->qv, q->q_len, q->hk * q->group, ATTN_MASK_CAUSAL, q->out.p);
    const size_t row = q->hk * q->d, at = q->len - q->n_append;
    return attn_kv_cache_append(q->c, q->k + at * row, q->v + at * row, q->n_append);
}

/* Decodes the last q_len positions (not armed) into a fresh buffer and compares with (or keeps) *keep: this is how
 * the cache's length and contents are seen from outside. */
static int kv_probe(kv_state *q, float **keep, int clean, const char *when, char *msg, size_t len)
{
    tc_buf o;
    if (out_alloc(&o, q->q_len * q->hk * q->group * q->d))
        return fail_msg(msg, len, "test out of memory");
    const attn_status st = attn_decode(q->ctx, q->c, q->qv, q->q_len, q->hk * q->group, ATTN_MASK_CAUSAL, o.p);
    int bad = 0;
    char what[128];
    snprintf(what, sizeof what, "a decode %s", when);
    if (st != ATTN_OK)
        bad = fail_msg(msg, len, "%s returned %s", what, attn_strerror(st));
    else
        bad = out_same(&o, keep, clean, what, msg, len);
    out_free(&o);
    return bad;
}

static int kv_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    kv_state *q = s->st;
    if (attn_kv_cache_len(q->c) != q->len)
        return fail_msg(msg, len, "cache length %zu, expected %zu", attn_kv_cache_len(q->c), q->len);
    if (q->decode)
        return out_same(&q->out, &q->keep_out, clean, "out", msg, len);
    return kv_probe(q, &q->keep_after, clean, "after the append", msg, len);
}

static int kv_after_fail(scenario *s, char *msg, size_t len)
{
    kv_state *q = s->st;
    const size_t want = q->decode ? q->len : q->len - q->n_append;
    if (attn_kv_cache_len(q->c) != want)
        return fail_msg(msg, len, "cache length %zu, expected it unchanged at %zu", attn_kv_cache_len(q->c), want);
    if (q->decode) {
        if (!out_untouched(&q->out))
            return fail_msg(msg, len, "out was written");
        /* Contents unchanged and the context usable: the same decode now gives the clean output. */
        return kv_probe(q, &q->keep_out, 0, "after the failed one", msg, len);
    }
    return 0; /* an append cannot fail for memory today: nothing else to see */
}

static void kv_teardown(scenario *s)
{
    kv_state *q = s->st;
    attn_kv_cache_destroy(q->c);
    attn_ctx_destroy(q->ctx);
    q->c = NULL;
    q->ctx = NULL;
    out_free(&q->out);
}

typedef struct kvc_state {
    size_t hk, d, cap;
    attn_dtype t;
    attn_kv_cache *c;
} kvc_state;

static int kvc_setup(scenario *s)
{
    ((kvc_state *)s->st)->c = SENTINEL;
    return 0;
}

static attn_status kvc_call(scenario *s)
{
    kvc_state *q = s->st;
    return attn_kv_cache_create(&q->c, q->hk, q->d, q->cap, q->t);
}

static int kvc_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    (void)clean;
    kvc_state *q = s->st;
    if (q->c == SENTINEL || !q->c)
        return fail_msg(msg, len, "ATTN_OK without a cache in *out");
    if (attn_kv_cache_len(q->c) != 0)
        return fail_msg(msg, len, "a new cache holds %zu tokens", attn_kv_cache_len(q->c));
    return 0;
}

static int kvc_after_fail(scenario *s, char *msg, size_t len)
{
    kvc_state *q = s->st;
    return q->c != SENTINEL ? fail_msg(msg, len, "*out was written (%p)", (void *)q->c) : 0;
}

static void kvc_teardown(scenario *s)
{
    kvc_state *q = s->st;
    if (q->c != SENTINEL)
        attn_kv_cache_destroy(q->c);
    q->c = NULL;
}

/* ---- the paged KV pool ----------------------------------------------------------------------------------------- */

/* The armed call of a pool scenario. */
enum { PL_CREATE, PL_FORK, PL_APPEND, PL_BATCH };

typedef struct pool_state {
    int op;
    attn_dtype t;
    size_t n_pages;
    float *k, *v, *qv; /* 400 tokens of [2][32]; 6 query rows of [6][32] */
    attn_ctx *ctx;
    attn_kv_pool *p, *made; /* made: PL_CREATE's result */
    uint32_t a, b, got;     /* a: 300 tokens, b: a's fork; got: PL_FORK's result */
    size_t free_before;
    tc_buf out;
    float *keep_out;
} pool_state;

static int pool_setup(scenario *s)
{
    pool_state *q = s->st;
    q->made = SENTINEL;
    q->got = 0x5e97u;
    const attn_kv_pool_desc d = { .n_kv_heads = 2, .head_dim = 32, .page_tokens = 16, .n_pages = q->n_pages,
                                  .max_seqs = 8, .dtype = q->t };
    if (tc_ctx_create(&q->ctx, ATTN_ISA_AUTO, 1, 0, 0) != ATTN_OK || attn_kv_pool_create(&q->p, &d) != ATTN_OK ||
        attn_seq_new(q->p, &q->a) != ATTN_OK || attn_seq_append(q->p, q->a, q->k, q->v, 300) != ATTN_OK ||
        attn_seq_fork(q->p, q->a, &q->b) != ATTN_OK || attn_seq_append(q->p, q->b, q->k, q->v, 5) != ATTN_OK)
        return -1;
    q->free_before = attn_kv_pool_free_pages(q->p);
    return out_alloc(&q->out, 6 * 6 * 32);
}

static attn_status pool_call(scenario *s)
{
    pool_state *q = s->st;
    if (q->op == PL_CREATE) {
        const attn_kv_pool_desc d = { .n_kv_heads = 2, .head_dim = 32, .n_pages = q->n_pages, .dtype = q->t };
        return attn_kv_pool_create(&q->made, &d);
    }
    if (q->op == PL_FORK)
        return attn_seq_fork(q->p, q->b, &q->got);
    if (q->op == PL_APPEND) /* b's page table grows past what the fork gave it */
        return attn_seq_append(q->p, q->b, q->k, q->v, 400);
    const uint32_t ids[2] = { q->a, q->b };
    const size_t ql[2] = { 1, 5 };
    const attn_batch_desc bd = { .n_seqs = 2, .seqs = ids, .q_lens = ql, .n_heads = 6, .mask = ATTN_MASK_CAUSAL };
    return attn_batch_attend(q->ctx, q->p, &bd, q->qv, q->out.p, NULL);
}

static int pool_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    pool_state *q = s->st;
    if (q->op == PL_CREATE)
        return q->made == SENTINEL || !q->made || attn_kv_pool_free_pages(q->made) != q->n_pages
                   ? fail_msg(msg, len, "ATTN_OK without a fresh pool in *out")
                   : 0;
    if (q->op == PL_FORK)
        return attn_seq_len(q->p, q->got) != 305 || attn_kv_pool_free_pages(q->p) != q->free_before
                   ? fail_msg(msg, len, "the fork holds %zu tokens", attn_seq_len(q->p, q->got))
                   : 0;
    if (q->op == PL_APPEND)
        return attn_seq_len(q->p, q->b) != 705 ? fail_msg(msg, len, "length %zu after the append",
                                                         attn_seq_len(q->p, q->b))
                                               : 0;
    return out_same(&q->out, &q->keep_out, clean, "out", msg, len);
}

static int pool_after_fail(scenario *s, char *msg, size_t len)
{
    pool_state *q = s->st;
    if (q->op == PL_CREATE)
        return q->made != SENTINEL ? fail_msg(msg, len, "*out was written (%p)", (void *)q->made) : 0;
    if (attn_seq_len(q->p, q->a) != 300 || attn_seq_len(q->p, q->b) != 305 ||
        attn_kv_pool_free_pages(q->p) != q->free_before)
        return fail_msg(msg, len, "the pool changed: lengths %zu, %zu, free pages %zu (was %zu)",
                        attn_seq_len(q->p, q->a), attn_seq_len(q->p, q->b), attn_kv_pool_free_pages(q->p),
                        q->free_before);
    if (q->op == PL_FORK && q->got != 0x5e97u)
        return fail_msg(msg, len, "*seq was written");
    return q->op == PL_BATCH && !out_untouched(&q->out) ? fail_msg(msg, len, "out was written") : 0;
}

static void pool_teardown(scenario *s)
{
    pool_state *q = s->st;
    if (q->made != SENTINEL)
        attn_kv_pool_destroy(q->made);
    attn_kv_pool_destroy(q->p);
    attn_ctx_destroy(q->ctx);
    q->p = q->made = NULL;
    q->ctx = NULL;
    out_free(&q->out);
}

/* ---- attn_linear and attn_self_attention ----------------------------------------------------------------------- */

typedef struct lin_state {
    size_t n, in, outf;
    float *x, *w, *b;
    const void *wt;   /* NULL: attn_linear on w; else attn_linear_typed on wt of type t in math */
    attn_dtype t;
    attn_math math;
    attn_ctx *ctx;
    tc_buf y;
    float *keep;
} lin_state;

static int lin_setup(scenario *s)
{
    lin_state *q = s->st;
    if (tc_ctx_create(&q->ctx, ATTN_ISA_AUTO, 1, 0, 0) != ATTN_OK)
        return -1;
    return out_alloc(&q->y, q->n * q->outf);
}

static attn_status lin_call(scenario *s)
{
    lin_state *q = s->st;
    if (q->wt)
        return attn_linear_typed(q->ctx, q->x, q->n, q->in, q->wt, q->t, q->b, q->outf, q->y.p, q->math);
    return attn_linear(q->ctx, q->x, q->n, q->in, q->w, q->b, q->outf, q->y.p);
}

static int lin_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    lin_state *q = s->st;
    return out_same(&q->y, &q->keep, clean, "y", msg, len);
}

static int lin_after_fail(scenario *s, char *msg, size_t len)
{
    lin_state *q = s->st;
    if (!out_untouched(&q->y))
        return fail_msg(msg, len, "y was written");
    const attn_status st = lin_call(s);
    if (st != ATTN_OK)
        return fail_msg(msg, len, "the same call then returned %s", attn_strerror(st));
    return lin_after_ok(s, 0, msg, len);
}

static void lin_teardown(scenario *s)
{
    lin_state *q = s->st;
    attn_ctx_destroy(q->ctx);
    q->ctx = NULL;
    out_free(&q->y);
}

typedef struct sa_state {
    attn_layer w;
    size_t n;
    attn_mask mask;
    int want_probs, block_q, block_kv;
    float *x, *weights;
    attn_ctx *ctx;
    tc_buf y, probs;
    float *keep_y, *keep_probs;
} sa_state;

static int sa_prepare(sa_state *q, int with_wo, int with_bias, uint64_t seed)
{
    attn_layer *w = &q->w;
    const size_t hk = w->n_kv_heads ? w->n_kv_heads : w->n_heads, qw = w->n_heads * w->head_dim;
    const size_t kw = hk * w->head_dim, dm = w->d_model;
    const size_t sizes[8] = { qw * dm, kw * dm, kw * dm, with_wo ? dm * qw : 0, with_bias ? qw : 0,
                              with_bias ? kw : 0, with_bias ? kw : 0, with_bias && with_wo ? dm : 0 };
    size_t total = 0;
    for (int i = 0; i < 8; i++)
        total += sizes[i];
    q->weights = new_uniform(total, seed);
    q->x = new_uniform(q->n * dm, seed + 1);
    if (!q->weights || !q->x)
        return -1;
    for (size_t i = 0; i < total; i++)
        q->weights[i] *= 0.3f;
    const float *at[8];
    float *p = q->weights;
    for (int i = 0; i < 8; i++) {
        at[i] = sizes[i] ? p : NULL;
        p += sizes[i];
    }
    w->wq = at[0], w->wk = at[1], w->wv = at[2], w->wo = at[3]; /* const void * since v1 (fp32 here) */
    w->bq = at[4], w->bk = at[5], w->bv = at[6], w->bo = at[7];
    return 0;
}

static int sa_setup(scenario *s)
{
    sa_state *q = s->st;
    if (tc_ctx_create(&q->ctx, ATTN_ISA_AUTO, 1, q->block_q, q->block_kv) != ATTN_OK)
        return -1;
    return out_alloc(&q->y, q->n * tc_layer_width(&q->w)) ||
           out_alloc(&q->probs, q->want_probs ? q->w.n_heads * q->n * q->n : 0);
}

static attn_status sa_call(scenario *s)
{
    sa_state *q = s->st;
    return attn_self_attention(q->ctx, &q->w, q->x, q->n, q->mask, q->y.p, q->want_probs ? q->probs.p : NULL);
}

static int sa_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    sa_state *q = s->st;
    return out_same(&q->y, &q->keep_y, clean, "y", msg, len) ||
           out_same(&q->probs, &q->keep_probs, clean, "probs", msg, len);
}

static int sa_after_fail(scenario *s, char *msg, size_t len)
{
    sa_state *q = s->st;
    if (!out_untouched(&q->y))
        return fail_msg(msg, len, "y was written");
    if (!out_untouched(&q->probs))
        return fail_msg(msg, len, "probs was written");
    const attn_status st = sa_call(s);
    if (st != ATTN_OK)
        return fail_msg(msg, len, "the same call then returned %s", attn_strerror(st));
    return sa_after_ok(s, 0, msg, len);
}

static void sa_teardown(scenario *s)
{
    sa_state *q = s->st;
    attn_ctx_destroy(q->ctx);
    q->ctx = NULL;
    out_free(&q->y);
    out_free(&q->probs);
}

/* ---- safetensors ----------------------------------------------------------------------------------------------- */
#if ATTN_HAVE_JANSSON

/* A small valid file: a layer in separate projections of mixed dtypes, the same layer as in_proj_weight/bias,
 * and metadata. d_model 8, 2 heads of 4, 1 KV head. */
#define ST_DM 8
#define ST_HD 4
#define ST_H 2
#define ST_HK 1

typedef struct st_tensor {
    const char *name, *dtype;
    size_t rows, cols; /* cols 0: 1-d */
} st_tensor;

static const st_tensor st_tensors[] = {
    { "attn.wq", "F32", ST_H * ST_HD, ST_DM },
    { "attn.wk", "F16", ST_HK * ST_HD, ST_DM },
    { "attn.wv", "BF16", ST_HK * ST_HD, ST_DM },
    { "attn.wo", "F32", ST_DM, ST_H * ST_HD },
    { "attn.bq", "F32", ST_H * ST_HD, 0 },
    { "attn.bk", "BF16", ST_HK * ST_HD, 0 },
    { "attn.bv", "F16", ST_HK * ST_HD, 0 },
    { "attn.bo", "F32", ST_DM, 0 },
    { "mha.in_proj_weight", "F32", (ST_H + 2 * ST_HK) * ST_HD, ST_DM },
    { "mha.in_proj_bias", "F16", (ST_H + 2 * ST_HK) * ST_HD, 0 },
    { "mha.out_proj.weight", "BF16", ST_DM, ST_H * ST_HD },
    { "mha.out_proj.bias", "F32", ST_DM, 0 },
};
#define ST_N (sizeof st_tensors / sizeof st_tensors[0])

/* The file's bytes (malloc'd, *size set), or NULL. */
static unsigned char *st_build(size_t *size)
{
    char hdr[4096];
    size_t hn = 0, data = 0;
    hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn, "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"fault-check\"}");
    for (size_t i = 0; i < ST_N; i++) {
        const st_tensor *t = &st_tensors[i];
        const size_t esz = strcmp(t->dtype, "F32") ? 2 : 4, n = t->rows * (t->cols ? t->cols : 1);
        char shape[64];
        if (t->cols)
            snprintf(shape, sizeof shape, "[%zu, %zu]", t->rows, t->cols);
        else
            snprintf(shape, sizeof shape, "[%zu]", t->rows);
        hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn,
                               ", \"%s\": {\"dtype\": \"%s\", \"shape\": %s, \"data_offsets\": [%zu, %zu]}", t->name,
                               t->dtype, shape, data, data + n * esz);
        data += n * esz;
    }
    hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn, "}");
    while (hn % 8) /* the reference writer pads the header with spaces to 8 bytes */
        hdr[hn++] = ' ';
    unsigned char *f = malloc(8 + hn + data);
    if (!f)
        return NULL;
    for (int i = 0; i < 8; i++)
        f[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(f + 8, hdr, hn);
    tc_rng r;
    tc_rng_init(&r, 0x5afe7e45u);
    unsigned char *p = f + 8 + hn;
    for (size_t i = 0; i < ST_N; i++) {
        const st_tensor *t = &st_tensors[i];
        const size_t n = t->rows * (t->cols ? t->cols : 1);
        for (size_t e = 0; e < n; e++) {
            const float x = tc_rng_float(&r, -1.0f, 1.0f);
            if (!strcmp(t->dtype, "F32")) {
                const uint32_t u = tc_f2u(x);
                for (int b = 0; b < 4; b++)
                    *p++ = (unsigned char)(u >> (8 * b));
            } else {
                uint16_t u16;
                if (!strcmp(t->dtype, "F16")) {
                    _Float16 hv = (_Float16)x;
                    memcpy(&u16, &hv, 2);
                } else {
                    u16 = (uint16_t)(tc_f2u(tc_stored(ATTN_BF16, x)) >> 16);
                }
                *p++ = (unsigned char)(u16 & 0xff);
                *p++ = (unsigned char)(u16 >> 8);
            }
        }
    }
    *size = 8 + hn + data;
    return f;
}

typedef struct st_state {
    const char *path;       /* NULL: attn_st_open_memory on mem */
    const unsigned char *mem;
    size_t size;
    attn_st *f;
    char err[256];
    size_t keep_count;
} st_state;

static int st_setup(scenario *s)
{
    st_state *q = s->st;
    q->f = SENTINEL;
    memset(q->err, 0, sizeof q->err);
    return 0;
}

static attn_status st_call(scenario *s)
{
    st_state *q = s->st;
    return q->path ? attn_st_open(&q->f, q->path, q->err, sizeof q->err)
                   : attn_st_open_memory(&q->f, q->mem, q->size, q->err, sizeof q->err);
}

static int st_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    (void)clean;
    st_state *q = s->st;
    if (q->f == SENTINEL || !q->f)
        return fail_msg(msg, len, "ATTN_OK without a handle in *out");
    if (attn_st_count(q->f) != ST_N)
        return fail_msg(msg, len, "%zu tensors, expected %zu", attn_st_count(q->f), (size_t)ST_N);
    for (size_t i = 0; i < ST_N; i++) {
        attn_st_tensor info;
        const st_tensor *t = &st_tensors[i];
        if (attn_st_find(q->f, t->name, &info) != ATTN_OK) {
            attn_st_tensor_at(q->f, i, &info);
            return fail_msg(msg, len, "no tensor \"%s\" (tensor %zu is \"%s\")", t->name, i, info.name);
        }
        if (strcmp(info.dtype, t->dtype) || info.ndim != (t->cols ? 2u : 1u) || info.shape[0] != t->rows ||
            (t->cols && info.shape[1] != t->cols))
            return fail_msg(msg, len, "tensor \"%s\" is %s of %zu dims [%zu, %zu]", t->name, info.dtype, info.ndim,
                            info.shape[0], info.shape[1]);
    }
    const char *note = attn_st_metadata(q->f, "note");
    if (!note || strcmp(note, "fault-check"))
        return fail_msg(msg, len, "metadata \"note\" is %s", note ? note : "missing");
    return 0;
}

static int st_after_fail(scenario *s, char *msg, size_t len)
{
    st_state *q = s->st;
    if (q->f != SENTINEL)
        return fail_msg(msg, len, "*out was written (%p)", (void *)q->f);
    if (!q->err[0])
        return fail_msg(msg, len, "no reason in err");
    return 0;
}

static void st_teardown(scenario *s)
{
    st_state *q = s->st;
    if (q->f != SENTINEL)
        attn_st_close(q->f);
    q->f = NULL;
}

typedef struct ld_state {
    const attn_st *f;
    attn_layer_names names;
    attn_layer_weights w;
    char err[256];
    float *keep;
    size_t keep_n;
} ld_state;

static int ld_setup(scenario *s)
{
    ld_state *q = s->st;
    memset(&q->w, 0x5a, sizeof q->w); /* documented: zeroed on failure */
    memset(q->err, 0, sizeof q->err);
    return 0;
}

static attn_status ld_call(scenario *s)
{
    ld_state *q = s->st;
    return attn_layer_load_safetensors(&q->w, q->f, &q->names, ST_H, ST_HK, q->err, sizeof q->err);
}

/* Every weight of the loaded layer, concatenated in attn_layer order (n floats into dst, or just counted). */
static size_t ld_flatten(const attn_layer *L, float *dst)
{
    size_t sizes[8], n = 0;
    tc_layer_sizes(L, sizes);
    const float *const p[8] = { L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->bo };
    for (int i = 0; i < 8; i++) {
        if (dst && sizes[i])
            memcpy(dst + n, p[i], sizes[i] * sizeof(float));
        n += sizes[i];
    }
    return n;
}

static int ld_after_ok(scenario *s, int clean, char *msg, size_t len)
{
    ld_state *q = s->st;
    const attn_layer *L = &q->w.layer;
    if (!q->w.data || L->d_model != ST_DM || L->n_heads != ST_H || L->n_kv_heads != ST_HK || L->head_dim != ST_HD)
        return fail_msg(msg, len, "loaded layer d_model %zu heads %zu/%zu head_dim %zu", L->d_model, L->n_heads,
                        L->n_kv_heads, L->head_dim);
    const size_t n = ld_flatten(L, NULL);
    float *now = malloc(n * sizeof *now);
    if (!now)
        return fail_msg(msg, len, "test out of memory");
    ld_flatten(L, now);
    int bad = 0;
    if (clean) {
        free(q->keep);
        q->keep = now;
        q->keep_n = n;
        return 0;
    }
    if (n != q->keep_n || memcmp(now, q->keep, n * sizeof *now))
        bad = fail_msg(msg, len, "the loaded weights differ from the clean load");
    free(now);
    return bad;
}

static int ld_after_fail(scenario *s, char *msg, size_t len)
{
    ld_state *q = s->st;
    static const attn_layer_weights zero;
    if (memcmp(&q->w, &zero, sizeof zero))
        return fail_msg(msg, len, "*out not zeroed");
    if (!q->err[0])
        return fail_msg(msg, len, "no reason in err");
    return 0;
}

static void ld_teardown(scenario *s)
{
    ld_state *q = s->st;
    static const attn_layer_weights zero;
    if (memcmp(&q->w, &zero, sizeof zero) && q->w.data)
        attn_layer_weights_free(&q->w);
}
#endif /* ATTN_HAVE_JANSSON */

/* ---- main ------------------------------------------------------------------------------------------------------ */

#define SCN(nm, fb, loader, pre, state)                                                                             \
    (scenario) { .name = (nm), .fallback = (fb), .is_loader = (loader), .setup = pre##_setup, .call = pre##_call,   \
                 .after_ok = pre##_after_ok, .after_fail = pre##_after_fail, .teardown = pre##_teardown,            \
                 .st = (state) }

int main(void)
{
    const uint64_t seed = tc_seed();
    const char *sj = getenv("FAULT_CHECK_STRICT_JSON");
    strict_json = sj && *sj && strcmp(sj, "0");
    const char *tr = getenv("FAULT_CHECK_TRACE");
    fi_trace = tr && *tr && strcmp(tr, "0");
#if ATTN_HAVE_JANSSON
    fi_json_hooks();
#endif
    attn_ctx *probe = NULL;
    if (tc_ctx_create(&probe, ATTN_ISA_AUTO, 1, 0, 0) != ATTN_OK) {
        printf("fault-check: attn_ctx_create failed\n");
        return 1;
    }
    printf("fault-check: attn %s, isa %s, seed %" PRIu64 " (replay with ATTN_TEST_SEED=%" PRIu64 ")\n",
           attn_version(), attn_isa_name(attn_ctx_isa(probe)), seed, seed);
    attn_ctx_destroy(probe);

    /* attn_ctx_create */
    {
        ctx_state c = { 0 };
        scenario s = SCN("attn_ctx_create", FALLBACK_NONE, 0, ctx, &c);
        run_scenario(&s);
    }

    /* attn_sdpa: prefill that packs the K/V tiles once per call (several query blocks per KV head), head_dim 40
     * (tiles packed per block in the fallback) and 64 (K rows read in place in the fallback); decode that splits
     * the keys into chunks; a context whose cached workspace is too small; all with probs. */
    {
        static int32_t valid[2] = { 131, 77 };
        struct {
            const char *name;
            attn_sdpa_desc d;
            int bq, bkv, warm;
        } cases[] = {
            { "attn_sdpa prefill, packed tiles, d=40, probs", tc_shape(2, 4, 2, 67, 131, 40, 0), 16, 32, 0 },
            { "attn_sdpa prefill, packed tiles, d=64, probs", tc_shape(1, 4, 2, 50, 90, 64, 0), 16, 32, 0 },
            { "attn_sdpa decode, split KV, probs", tc_shape(1, 8, 2, 1, 3001, 64, 0), 0, 0, 0 },
            { "attn_sdpa prefill on a warm context, probs", tc_shape(2, 4, 2, 67, 131, 40, 24), 16, 32, 1 },
        };
        cases[0].d.mask = ATTN_MASK_CAUSAL;
        cases[0].d.kv_valid = valid;
        cases[0].d.layout = ATTN_LAYOUT_BSHD;
        cases[1].d.mask = ATTN_MASK_CAUSAL;
        cases[2].d.mask = ATTN_MASK_CAUSAL;
        cases[3].d.mask = ATTN_MASK_CAUSAL;
        cases[3].d.window = 20;
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            sdpa_state q = { .d = cases[i].d, .block_q = cases[i].bq, .block_kv = cases[i].bkv,
                             .warm = cases[i].warm, .want_probs = 1 };
            if (sdpa_prepare(&q, tc_mix(seed, 100 + i))) {
                printf("fault-check: test out of memory\n");
                return 1;
            }
            scenario s = SCN(cases[i].name, FALLBACK_OK, 0, sdpa, &q);
            run_scenario(&s);
            tc_problem_free(&q.p);
            free(q.keep_out);
            free(q.keep_probs);
        }
    }

    /* attn_kv_cache_create: small (aligned allocation) and 2 MiB or more (huge-page path), each dtype. */
    {
        static const char *const names[4][2] = {
            { "attn_kv_cache_create F32, small", "attn_kv_cache_create F32, 4 MiB (huge pages)" },
            { "attn_kv_cache_create F16, small", "attn_kv_cache_create F16, 2 MiB (huge pages)" },
            { "attn_kv_cache_create BF16, small", "attn_kv_cache_create BF16, 2 MiB (huge pages)" },
            { "attn_kv_cache_create I8, small", "attn_kv_cache_create I8, 1 MiB" },
        };
        for (int t = 0; t < 4; t++)
            for (int big = 0; big < 2; big++) {
                kvc_state q = { .hk = 2, .d = 64, .cap = big ? 8192 : 100, .t = (attn_dtype)t };
                scenario s = SCN(names[t][big], FALLBACK_NONE, 0, kvc, &q);
                run_scenario(&s);
            }
    }

    /* attn_kv_cache_append, then attn_decode (split KV), each dtype. */
    {
        static const char *const names[4][2] = {
            { "attn_kv_cache_append F32", "attn_decode F32 (GQA, split KV)" },
            { "attn_kv_cache_append F16", "attn_decode F16 (GQA, split KV)" },
            { "attn_kv_cache_append BF16", "attn_decode BF16 (GQA, split KV)" },
            { "attn_kv_cache_append I8", "attn_decode I8 (GQA, split KV)" },
        };
        for (int t = 0; t < 4; t++)
            for (int dec = 0; dec < 2; dec++) {
                kv_state q = { .hk = 2, .group = 3, .d = 32, .len = 1500, .cap = 1600, .q_len = 2,
                               .t = (attn_dtype)t, .n_append = 37, .decode = dec };
                if (kv_prepare(&q, tc_mix(seed, 200 + (uint64_t)t))) {
                    printf("fault-check: test out of memory\n");
                    return 1;
                }
                scenario s = SCN(names[t][dec], FALLBACK_NONE, 0, kv, &q);
                run_scenario(&s);
                free(q.k), free(q.v), free(q.qv), free(q.keep_out), free(q.keep_after);
            }
    }

    /* The paged pool: create (small, and 2 MiB or more), fork, an append that grows a page table, a batch. */
    {
        static const char *const names[] = { "attn_kv_pool_create F16, small", "attn_kv_pool_create I8, 3 MiB",
                                             "attn_seq_fork", "attn_seq_append (page table grows)",
                                             "attn_batch_attend (decode and prefill rows)" };
        float *k = new_uniform(400 * 64, tc_mix(seed, 250)), *v = new_uniform(400 * 64, tc_mix(seed, 251));
        float *qv = new_uniform(6 * 6 * 32, tc_mix(seed, 252));
        if (!k || !v || !qv) {
            printf("fault-check: test out of memory\n");
            return 1;
        }
        for (int i = 0; i < 5; i++) {
            pool_state q = { .op = i < 2 ? PL_CREATE : i - 1, .t = i == 1 ? ATTN_I8 : ATTN_F16,
                             .n_pages = i == 1 ? 96 : 80, .k = k, .v = v, .qv = qv };
            scenario s = SCN(names[i], FALLBACK_NONE, 0, pool, &q);
            run_scenario(&s);
            free(q.keep_out);
        }
        free(k), free(v), free(qv);
    }

    /* attn_linear */
    {
        lin_state q = { .n = 37, .in = 40, .outf = 50 };
        q.x = new_uniform(q.n * q.in, tc_mix(seed, 300));
        q.w = new_uniform(q.outf * q.in, tc_mix(seed, 301));
        q.b = new_uniform(q.outf, tc_mix(seed, 302));
        if (!q.x || !q.w || !q.b) {
            printf("fault-check: test out of memory\n");
            return 1;
        }
        scenario s = SCN("attn_linear (bias)", FALLBACK_NONE, 0, lin, &q);
        run_scenario(&s);
        free(q.keep);
        /* attn_linear_typed: bfloat16 weights (the fp32 ones' upper halves) in ATTN_MATH_BF16, whose rounded rows
         * of x share the packing's allocation. */
        uint16_t *wt = malloc(q.outf * q.in * sizeof *wt);
        if (!wt) {
            printf("fault-check: test out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < q.outf * q.in; i++) {
            uint32_t u;
            memcpy(&u, &q.w[i], sizeof u);
            wt[i] = (uint16_t)(u >> 16);
        }
        q.keep = NULL;
        q.wt = wt, q.t = ATTN_BF16, q.math = ATTN_MATH_BF16;
        scenario st = SCN("attn_linear_typed BF16, MATH_BF16 (bias)", FALLBACK_NONE, 0, lin, &q);
        run_scenario(&st);
        free(wt);
        free(q.x), free(q.w), free(q.b), free(q.keep);
    }

    /* attn_self_attention with and without wo, with probs; the small blocks make its attn_sdpa pack tiles, so its
     * documented fallback applies here too. */
    for (int with_wo = 1; with_wo >= 0; with_wo--) {
        sa_state q = { .w = { .d_model = 48, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16 }, .n = 45,
                       .mask = ATTN_MASK_CAUSAL, .want_probs = 1, .block_q = 16, .block_kv = 16 };
        if (sa_prepare(&q, with_wo, 1, tc_mix(seed, 400 + (uint64_t)with_wo))) {
            printf("fault-check: test out of memory\n");
            return 1;
        }
        scenario s = SCN(with_wo ? "attn_self_attention with wo, probs" : "attn_self_attention without wo, probs",
                         FALLBACK_OK, 0, sa, &q);
        run_scenario(&s);
        free(q.keep_y), free(q.keep_probs);
        /* The same layer in ATTN_MATH_BF16 (fp32 weights rounded as they are packed, x and the heads rounded per
         * row block in the call's scratch). */
        q.keep_y = q.keep_probs = NULL;
        q.w.math = ATTN_MATH_BF16;
        scenario sb = SCN(with_wo ? "attn_self_attention MATH_BF16 with wo, probs"
                                  : "attn_self_attention MATH_BF16 without wo, probs",
                          FALLBACK_OK, 0, sa, &q);
        run_scenario(&sb);
        free(q.x), free(q.weights), free(q.keep_y), free(q.keep_probs);
    }

    /* safetensors, last: attn_st_open on a file in /tmp, attn_st_open_memory, attn_layer_load_safetensors. */
#if ATTN_HAVE_JANSSON
    {
        size_t size = 0;
        unsigned char *bytes = st_build(&size);
        char path[] = "/tmp/attn-fault-check-XXXXXX";
        const int fd = bytes ? mkstemp(path) : -1;
        if (fd < 0 || write(fd, bytes, size) != (ssize_t)size || close(fd) != 0) {
            printf("fault-check: cannot write %s\n", path);
            return 1;
        }
        st_state q = { .path = path };
        scenario s = SCN("attn_st_open (file in /tmp)", FALLBACK_NONE, 1, st, &q);
        s.err = q.err;
        run_scenario(&s);
        st_state m = { .mem = bytes, .size = size };
        scenario sm = SCN("attn_st_open_memory", FALLBACK_NONE, 1, st, &m);
        sm.err = m.err;
        run_scenario(&sm);

        attn_st *f = NULL;
        char err[256];
        if (attn_st_open(&f, path, err, sizeof err) != ATTN_OK) {
            printf("PROBLEM attn_st_open of the test file: %s\n", err);
            n_problems++;
        } else {
            ld_state l = { .f = f, .names = { .wq = "attn.wq", .wk = "attn.wk", .wv = "attn.wv", .wo = "attn.wo",
                                              .bq = "attn.bq", .bk = "attn.bk", .bv = "attn.bv", .bo = "attn.bo" } };
            scenario sl = SCN("attn_layer_load_safetensors (wq, wk, wv)", FALLBACK_NONE, 1, ld, &l);
            sl.err = l.err;
            run_scenario(&sl);
            free(l.keep);
            ld_state p = { .f = f, .names = { .in_proj_weight = "mha.in_proj_weight",
                                              .in_proj_bias = "mha.in_proj_bias", .wo = "mha.out_proj.weight",
                                              .bo = "mha.out_proj.bias" } };
            scenario sp = SCN("attn_layer_load_safetensors (in_proj)", FALLBACK_NONE, 1, ld, &p);
            sp.err = p.err;
            run_scenario(&sp);
            free(p.keep);
            attn_st_close(f);
        }
        unlink(path);
        free(bytes);
    }
#else
    printf("fault-check: safetensors scenarios left out (built without jansson: the loader only refuses)\n");
#endif

    const char *parser = "jansson";
    if (n_note_einval)
        printf("fault-check: note: %lu allocation failures inside %s came back as ATTN_EINVAL (the parser reports "
               "them as syntax errors)\n", n_note_einval, parser);
    if (n_note_corrupt)
        printf("fault-check: note: %lu allocation failures inside %s came back as ATTN_OK with a result that differs "
               "from the clean call (the parser lost data silently)\n", n_note_corrupt, parser);
    printf("fault-check: %lu scenarios, %lu injected failures, %lu problems\n", n_scenarios, n_injected, n_problems);
    return n_problems ? 1 : 0;
}
