/* libFuzzer target: the safetensors reader and the layer loader (include/attn.h).
 *
 * The input is the file. It is copied into an exact-size heap buffer and opened with attn_st_open_memory (and, for
 * one input in 16, also written to a per-process temporary file and opened with attn_st_open: same status, same
 * tensors). Choices the file cannot carry (the err buffer's size, n_heads, which layer names to ask for) come from
 * a hash of the input, or from the __metadata__ keys "n_heads" and "n_kv_heads" when present.
 * On an error: a defined status, *out untouched, err a NUL-terminated one-line reason within errlen.
 * On success:
 *   - the tensors, in data-offset order, tile the data area: their byte sizes (numel times the dtype's size) add
 *     up to the file size minus 8 minus the header length; numel is the product of the shape, ndim <= 8, names
 *     are unique; attn_st_tensor_at(count) fails and leaves info alone;
 *   - attn_st_find of each name gives the same description;
 *   - attn_st_read_f32 into an exact-size buffer gives exactly the file's values (F32 bits, F16 and BF16 widened by
 *     an independent conversion) and ENOTSUP for other dtypes; a wrong n fails and writes nothing;
 *   - attn_st_metadata of a few keys gives NULL or a string;
 *   - attn_layer_load_safetensors with PyTorch MultiheadAttention names (in_proj_weight, in_proj_bias,
 *     out_proj.weight, out_proj.bias; sometimes separate q/k/v/o_proj names) returns what an independent check of
 *     the documented shapes predicts; on success the layer holds the file's values, runs through
 *     attn_self_attention, and attn_layer_weights_free zeroes it; on failure *out is zeroed. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"

static attn_ctx *fz_ctx;
static char fz_path[256];
static int fz_trace; /* FUZZ_TRACE=1: a line per open and per layer load on stderr */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fz_trace = getenv("FUZZ_TRACE") && atoi(getenv("FUZZ_TRACE")) > 0;
    const attn_config cfg = {.num_threads = 1};
    CHECK(attn_ctx_create(&fz_ctx, &cfg) == ATTN_OK, "context");
    const char *tmp = getenv("TMPDIR");
    snprintf(fz_path, sizeof fz_path, "%s/fuzz_safetensors.%ld.safetensors", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    return 0;
}

static const struct {
    const char *name;
    size_t size;
} fz_dtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
    {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8},
};

static size_t fz_dtype_size(const char *name)
{
    for (size_t i = 0; i < sizeof fz_dtypes / sizeof fz_dtypes[0]; i++)
        if (strcmp(name, fz_dtypes[i].name) == 0)
            return fz_dtypes[i].size;
    return 0;
}

static int fz_is_float(const char *dtype)
{
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F16") || !strcmp(dtype, "BF16");
}

/* Element i of a tensor whose data starts at p, widened to fp32 from the definitions of the formats. */
static float fz_elem(const char *dtype, const uint8_t *p, size_t i)
{
    if (!strcmp(dtype, "F32")) {
        const uint8_t *e = p + 4 * i;
        const uint32_t u = (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 | (uint32_t)e[3] << 24;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    const unsigned h = p[2 * i] | p[2 * i + 1] << 8;
    if (!strcmp(dtype, "BF16")) {
        const uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    const int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023; /* IEEE half */
    double v;
    if (exp == 31)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp(man, -24);
    else
        v = ldexp(1024 + man, exp - 25);
    return (float)(sign ? -v : v);
}

static int fz_same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

/* err after a failure: NUL-terminated inside errlen bytes, one line, not empty when there was room. */
static void fz_check_err(const char *err, size_t errlen, const char *what)
{
    if (!err || !errlen)
        return;
    const size_t len = strnlen(err, errlen);
    CHECK(len < errlen, "%s: err is not NUL-terminated within its %zu bytes", what, errlen);
    CHECK(!strchr(err, '\n'), "%s: err has more than one line: \"%s\"", what, err);
    CHECK(errlen < 2 || len > 0, "%s: empty err", what);
}

static void fz_info_same(const attn_st_tensor *a, const attn_st_tensor *b)
{
    CHECK(!strcmp(a->name, b->name) && !strcmp(a->dtype, b->dtype) && a->ndim == b->ndim && a->numel == b->numel &&
              !memcmp(a->shape, b->shape, a->ndim * sizeof a->shape[0]),
          "attn_st_find(\"%s\") and attn_st_tensor_at disagree", a->name);
}

/* ---- the layer loader's oracle ---- */

typedef struct fz_expect {
    int einval, enotsup;
} fz_expect;

/* The tensor called name, if present; notes a dtype other than F32/F16/BF16 and a missing tensor. */
static int fz_need(const attn_st *f, const char *name, attn_st_tensor *t, fz_expect *e)
{
    if (attn_st_find(f, name, t) != ATTN_OK) {
        e->einval = 1;
        return 0;
    }
    if (!fz_is_float(t->dtype))
        e->enotsup = 1;
    return 1;
}

static void fz_expect_shape(const attn_st_tensor *t, size_t d0, size_t d1, fz_expect *e)
{
    const size_t nd = d1 ? 2 : 1;
    if (!(t->ndim == nd && t->shape[0] == d0 && (nd == 1 || t->shape[1] == d1)))
        e->einval = 1;
}

/* dst[0..n) must equal elements [first, first + n) of tensor t, read with attn_st_read_f32 into all. */
static void fz_same_as_file(const float *dst, const float *all, size_t first, size_t n, const char *role)
{
    CHECK(dst != NULL, "%s is NULL", role);
    for (size_t i = 0; i < n; i++)
        CHECK(fz_same_float(dst[i], all[first + i]), "%s[%zu] = %g, the file has %g", role, i, dst[i],
              all[first + i]);
}

static float *fz_read_all(const attn_st *f, const attn_st_tensor *t)
{
    if (!fz_is_float(t->dtype) || t->numel > 65536)
        return NULL;
    float *p = fz_floats(t->numel);
    CHECK(attn_st_read_f32(f, t->name, p, t->numel) == ATTN_OK, "read %s", t->name);
    return p;
}

static size_t fz_meta_size(const attn_st *f, const char *key, size_t dflt)
{
    const char *s = attn_st_metadata(f, key);
    if (!s || !*s || strlen(s) > 3)
        return dflt;
    size_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return dflt;
        v = v * 10 + (size_t)(*s - '0');
    }
    return v;
}

static void fz_layer(const attn_st *f, uint64_t h, char *err, size_t errlen)
{
    const size_t n_heads = fz_meta_size(f, "n_heads", 1 + (h >> 20) % 4);
    const size_t n_kv = fz_meta_size(f, "n_kv_heads", (h >> 24) % 3);
    /* The names the file uses (one time in 8 the other set, to see them missing). */
    attn_st_tensor probe;
    const int has_in_proj = attn_st_find(f, "in_proj_weight", &probe) == ATTN_OK,
              has_q = attn_st_find(f, "q_proj.weight", &probe) == ATTN_OK;
    const int separate = (has_q && !has_in_proj ? 1 : has_in_proj && !has_q ? 0 : (h >> 27) & 1) ^ ((h >> 28) % 8 == 0),
              with_b = (h >> 30) & 1, with_wo = !((h >> 31) & 1),
              with_bo = !((h >> 32) & 1);
    attn_layer_names nm;
    memset(&nm, 0, sizeof nm);
    if (separate) {
        nm.wq = "q_proj.weight", nm.wk = "k_proj.weight", nm.wv = "v_proj.weight";
        if (with_b)
            nm.bq = "q_proj.bias", nm.bk = "k_proj.bias", nm.bv = "v_proj.bias";
        if (with_wo)
            nm.wo = "o_proj.weight";
        if (with_bo)
            nm.bo = "o_proj.bias";
    } else {
        nm.in_proj_weight = "in_proj_weight";
        if (with_b)
            nm.in_proj_bias = "in_proj_bias";
        if (with_wo)
            nm.wo = "out_proj.weight";
        if (with_bo)
            nm.bo = "out_proj.bias";
    }

    /* The oracle: missing tensors and shapes that do not fit: EINVAL; present tensors of another dtype: ENOTSUP. */
    fz_expect e = {0, 0};
    const size_t hk = n_kv ? n_kv : n_heads;
    size_t d = 0, hd = 0;
    attn_st_tensor tw, tk, tv, to, tb, tbk, tbv, tbo;
    int have_w = 0, have_k = 0, have_v = 0, have_o = 0, have_b = 0, have_bk = 0, have_bv = 0, have_bo = 0;
    if (!n_heads || n_heads % hk)
        e.einval = 1;
    if (!e.einval) {
        if (separate) {
            if ((have_w = fz_need(f, nm.wq, &tw, &e)) && tw.ndim == 2 && tw.shape[0] && tw.shape[1] &&
                tw.shape[0] % n_heads == 0) {
                d = tw.shape[1];
                hd = tw.shape[0] / n_heads;
            } else {
                e.einval = 1;
            }
            have_k = fz_need(f, nm.wk, &tk, &e);
            have_v = fz_need(f, nm.wv, &tv, &e);
            if (d && have_k)
                fz_expect_shape(&tk, hk * hd, d, &e);
            if (d && have_v)
                fz_expect_shape(&tv, hk * hd, d, &e);
        } else {
            const size_t groups = n_heads + 2 * hk;
            if ((have_w = fz_need(f, nm.in_proj_weight, &tw, &e)) && tw.ndim == 2 && tw.shape[0] && tw.shape[1] &&
                tw.shape[0] % groups == 0) {
                d = tw.shape[1];
                hd = tw.shape[0] / groups;
            } else {
                e.einval = 1;
            }
        }
        if (nm.wo && (have_o = fz_need(f, nm.wo, &to, &e)) && d)
            fz_expect_shape(&to, d, n_heads * hd, &e);
        if (nm.in_proj_bias && (have_b = fz_need(f, nm.in_proj_bias, &tb, &e)) && d)
            fz_expect_shape(&tb, (n_heads + 2 * hk) * hd, 0, &e);
        if (nm.bq && (have_b = fz_need(f, nm.bq, &tb, &e)) && d)
            fz_expect_shape(&tb, n_heads * hd, 0, &e);
        if (nm.bk && (have_bk = fz_need(f, nm.bk, &tbk, &e)) && d)
            fz_expect_shape(&tbk, hk * hd, 0, &e);
        if (nm.bv && (have_bv = fz_need(f, nm.bv, &tbv, &e)) && d)
            fz_expect_shape(&tbv, hk * hd, 0, &e);
        if (nm.bo && (have_bo = fz_need(f, nm.bo, &tbo, &e)) && d)
            fz_expect_shape(&tbo, d, 0, &e);
    }

    attn_layer_weights w;
    memset(&w, 0xa5, sizeof w);
    const attn_status s = attn_layer_load_safetensors(&w, f, &nm, n_heads, n_kv, err, errlen);
    if (fz_trace)
        fprintf(stderr, "  layer load (%s names, bias %d, wo %d, bo %d, n_heads %zu, n_kv_heads %zu) = %d %s\n",
                separate ? "q/k/v/o_proj" : "MultiheadAttention", with_b, with_wo, with_bo, n_heads, n_kv, (int)s,
                s != ATTN_OK && err && errlen ? err : "");
    CHECK(fz_status_defined(s), "undefined status %d", (int)s);
    const char *names = separate ? "q/k/v/o_proj" : "MultiheadAttention";
    if (e.einval && e.enotsup)
        CHECK(s == ATTN_EINVAL || s == ATTN_ENOTSUP, "layer load (%s, n_heads %zu, n_kv_heads %zu) gave %d", names,
              n_heads, n_kv, (int)s);
    else
        CHECK(s == (e.einval ? ATTN_EINVAL : e.enotsup ? ATTN_ENOTSUP : ATTN_OK),
              "layer load (%s names, bias %d, wo %d, bo %d, n_heads %zu, n_kv_heads %zu) gave %d, want %s%s", names,
              with_b, with_wo, with_bo, n_heads, n_kv, (int)s, e.einval ? "EINVAL" : e.enotsup ? "ENOTSUP" : "OK",
              s != ATTN_OK && err && errlen ? err : "");
    if (s != ATTN_OK) {
        static const attn_layer_weights zero;
        CHECK(!memcmp(&w, &zero, sizeof w), "*out not zeroed after a failed load");
        fz_check_err(err, errlen, "attn_layer_load_safetensors");
        return;
    }
    const attn_layer *L = &w.layer;
    CHECK(w.data != NULL && L->d_model == d && L->head_dim == hd && L->n_heads == n_heads &&
              (L->n_kv_heads == hk || L->n_kv_heads == n_kv),
          "loaded layer: d_model %zu head_dim %zu heads %zu kv_heads %zu, want %zu %zu %zu %zu", L->d_model,
          L->head_dim, L->n_heads, L->n_kv_heads, d, hd, n_heads, hk);
    CHECK(!nm.wo == !L->wo && !nm.bo == !L->bo && !(nm.bq || nm.in_proj_bias) == !L->bq &&
              !(nm.bk || nm.in_proj_bias) == !L->bk && !(nm.bv || nm.in_proj_bias) == !L->bv,
          "loaded layer: present/absent arrays do not follow the names");
    const size_t qn = n_heads * hd * d, kn = hk * hd * d;
    float *all = fz_read_all(f, &tw);
    if (all) {
        if (separate) {
            fz_same_as_file(L->wq, all, 0, qn, "wq");
            float *ak = fz_read_all(f, &tk), *av = fz_read_all(f, &tv);
            if (ak)
                fz_same_as_file(L->wk, ak, 0, kn, "wk");
            if (av)
                fz_same_as_file(L->wv, av, 0, kn, "wv");
            free(ak), free(av);
        } else {
            fz_same_as_file(L->wq, all, 0, qn, "wq");
            fz_same_as_file(L->wk, all, qn, kn, "wk");
            fz_same_as_file(L->wv, all, qn + kn, kn, "wv");
        }
        free(all);
    }
    if (have_o && (all = fz_read_all(f, &to)) != NULL) {
        fz_same_as_file(L->wo, all, 0, d * n_heads * hd, "wo");
        free(all);
    }
    if (have_b && (all = fz_read_all(f, &tb)) != NULL) {
        fz_same_as_file(L->bq, all, 0, n_heads * hd, "bq");
        if (!separate) {
            fz_same_as_file(L->bk, all, n_heads * hd, hk * hd, "bk");
            fz_same_as_file(L->bv, all, (n_heads + hk) * hd, hk * hd, "bv");
        }
        free(all);
    }
    if (have_bk && (all = fz_read_all(f, &tbk)) != NULL) {
        fz_same_as_file(L->bk, all, 0, hk * hd, "bk");
        free(all);
    }
    if (have_bv && (all = fz_read_all(f, &tbv)) != NULL) {
        fz_same_as_file(L->bv, all, 0, hk * hd, "bv");
        free(all);
    }
    if (have_bo && (all = fz_read_all(f, &tbo)) != NULL) {
        fz_same_as_file(L->bo, all, 0, d, "bo");
        free(all);
    }
    /* The loaded layer is a valid one: attn_self_attention takes it. */
    const size_t n_tok = 2, ydim = L->wo ? d : n_heads * hd;
    if (d * n_heads * hd <= 65536 && d <= 4096) {
        float *x = fz_floats(n_tok * d), *y = fz_floats(n_tok * ydim);
        uint64_t seed = h;
        fz_fill(x, n_tok * d, &seed, 1.0f);
        const attn_status ss = attn_self_attention(fz_ctx, L, x, n_tok, ATTN_MASK_CAUSAL, y, NULL);
        CHECK(ss == ATTN_OK, "attn_self_attention on a loaded layer gave %d", (int)ss);
        free(x), free(y);
    }
    attn_layer_weights_free(&w);
    static const attn_layer_weights zero;
    CHECK(!memcmp(&w, &zero, sizeof w), "attn_layer_weights_free did not zero the struct");
    attn_layer_weights_free(&w); /* a zeroed struct is fine */
}

/* ---- the opened file ---- */

static void fz_walk(const attn_st *f, const uint8_t *file, size_t size, uint64_t h, char *err, size_t errlen)
{
    uint64_t n64 = 0;
    for (int i = 7; i >= 0; i--)
        n64 = n64 << 8 | file[i];
    CHECK(size >= 8 && n64 <= size - 8, "opened a file whose header length %llu is past its %zu bytes",
          (unsigned long long)n64, size);
    const uint8_t *data = file + 8 + n64;
    const size_t data_size = size - 8 - (size_t)n64, count = attn_st_count(f);
    size_t off = 0;
    attn_st_tensor *infos = count ? calloc(count, sizeof *infos) : NULL;
    CHECK(!count || infos, "calloc");
    for (size_t i = 0; i < count; i++) {
        attn_st_tensor t;
        CHECK(attn_st_tensor_at(f, i, &t) == ATTN_OK, "attn_st_tensor_at(%zu) of %zu", i, count);
        CHECK(t.name && t.dtype && t.ndim <= 8, "tensor %zu: name %p dtype %p ndim %zu", i, (const void *)t.name,
              (const void *)t.dtype, t.ndim);
        const size_t esz = fz_dtype_size(t.dtype);
        CHECK(esz, "tensor \"%s\" has dtype \"%s\", not one of safetensors' dtypes", t.name, t.dtype);
        size_t numel = 1, bytes;
        for (size_t k = 0; k < t.ndim; k++)
            CHECK(!__builtin_mul_overflow(numel, t.shape[k], &numel), "tensor \"%s\": shape product overflows",
                  t.name);
        CHECK(numel == t.numel, "tensor \"%s\": numel %zu, the shape's product is %zu", t.name, t.numel, numel);
        CHECK(!__builtin_mul_overflow(numel, esz, &bytes) && bytes <= data_size - off,
              "tensor \"%s\" (%zu x %zu bytes at %zu) does not fit in the %zu data bytes", t.name, numel, esz, off,
              data_size);
        infos[i] = t;

        attn_st_tensor u;
        CHECK(attn_st_find(f, t.name, &u) == ATTN_OK, "attn_st_find(\"%s\")", t.name);
        fz_info_same(&t, &u);

        /* The values. */
        const int fl = fz_is_float(t.dtype);
        if (numel <= 65536) {
            float *dst = fz_floats(numel);
            fz_poison(dst, numel);
            attn_status s = attn_st_read_f32(f, t.name, numel || (h & 1) ? dst : NULL, numel);
            CHECK(s == (fl ? ATTN_OK : ATTN_ENOTSUP), "attn_st_read_f32(\"%s\", %s, %zu) gave %d", t.name, t.dtype,
                  numel, (int)s);
            if (s == ATTN_OK) {
                for (size_t k = 0; k < numel; k++) {
                    const float want = fz_elem(t.dtype, data + off, k);
                    CHECK(fz_same_float(dst[k], want), "\"%s\"[%zu] (%s) read as %a, the file has %a", t.name,
                          k, t.dtype, dst[k], want);
                }
            } else {
                CHECK(fz_is_poison(dst, numel), "attn_st_read_f32 wrote dst on error");
            }
            free(dst);
            /* Wrong n: one more (a buffer that big) and one fewer. */
            float *big = fz_floats(numel + 1);
            fz_poison(big, numel + 1);
            s = attn_st_read_f32(f, t.name, big, numel + 1);
            CHECK(s == ATTN_EINVAL || (!fl && s == ATTN_ENOTSUP), "attn_st_read_f32 with n = numel + 1 gave %d",
                  (int)s);
            if (numel) {
                s = attn_st_read_f32(f, t.name, big, numel - 1);
                CHECK(s == ATTN_EINVAL || (!fl && s == ATTN_ENOTSUP), "attn_st_read_f32 with n = numel - 1 gave %d",
                      (int)s);
            }
            CHECK(fz_is_poison(big, numel + 1), "attn_st_read_f32 with a wrong n wrote dst");
            free(big);
        }
        off += bytes;
    }
    CHECK(off == data_size, "the tensors cover %zu of the %zu data bytes", off, data_size);
    for (size_t i = 0; i < count; i++) /* unique names */
        for (size_t j = i + 1; j < count && j < i + 512; j++)
            CHECK(strcmp(infos[i].name, infos[j].name) != 0, "duplicate tensor name \"%s\"", infos[i].name);

    attn_st_tensor sentinel, t;
    memset(&sentinel, 0x5a, sizeof sentinel);
    t = sentinel;
    CHECK(attn_st_tensor_at(f, count, &t) == ATTN_EINVAL && !memcmp(&t, &sentinel, sizeof t),
          "attn_st_tensor_at(count)");
    CHECK(attn_st_tensor_at(f, SIZE_MAX, &t) == ATTN_EINVAL, "attn_st_tensor_at(SIZE_MAX)");
    CHECK(attn_st_tensor_at(NULL, 0, &t) == ATTN_EINVAL && attn_st_tensor_at(f, 0, NULL) == ATTN_EINVAL,
          "attn_st_tensor_at with NULL");
    CHECK(attn_st_find(f, NULL, &t) == ATTN_EINVAL && attn_st_find(NULL, "a", &t) == ATTN_EINVAL,
          "attn_st_find with NULL");
    CHECK(attn_st_read_f32(f, NULL, NULL, 0) == ATTN_EINVAL && attn_st_read_f32(NULL, "a", NULL, 0) == ATTN_EINVAL,
          "attn_st_read_f32 with NULL");
    if (count) { /* a name that is not there: the first one with a byte added */
        const size_t len = strlen(infos[0].name);
        char *other = malloc(len + 2);
        CHECK(other != NULL, "malloc");
        memcpy(other, infos[0].name, len);
        other[len] = (char)(0x21 + h % 90);
        other[len + 1] = '\0';
        int present = 0;
        for (size_t i = 0; i < count; i++)
            present |= !strcmp(infos[i].name, other);
        t = sentinel;
        const attn_status s = attn_st_find(f, other, &t);
        CHECK(s == (present ? ATTN_OK : ATTN_EINVAL), "attn_st_find of a name %s gave %d",
              present ? "present" : "absent", (int)s);
        if (s != ATTN_OK)
            CHECK(!memcmp(&t, &sentinel, sizeof t), "attn_st_find wrote info on error");
        free(other);
    }

    static const char *const keys[] = {"format", "n_heads", "n_kv_heads", "", "__metadata__", "a", "key"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = attn_st_metadata(f, keys[i]);
        if (v)
            (void)strlen(v);
    }
    if (count) {
        const char *v = attn_st_metadata(f, infos[count - 1].name);
        if (v)
            (void)strlen(v);
    }
    CHECK(attn_st_metadata(NULL, "format") == NULL && attn_st_metadata(f, NULL) == NULL, "attn_st_metadata NULL");
    free(infos);

    fz_layer(f, h, err, errlen);
}

/* The same bytes through attn_st_open: the same outcome. */
static void fz_file(const uint8_t *buf, size_t size, attn_status want, size_t want_count)
{
    FILE *fp = fopen(fz_path, "wb");
    CHECK(fp != NULL, "cannot write %s", fz_path);
    CHECK(fwrite(buf, 1, size, fp) == size && fclose(fp) == 0, "cannot write %s", fz_path);
    char err[128];
    attn_st *const sentinel = (attn_st *)&fz_ctx, *f = sentinel;
    const attn_status s = attn_st_open(&f, fz_path, err, sizeof err);
    unlink(fz_path);
    CHECK(s == want, "attn_st_open gave %d, attn_st_open_memory %d (%s)", (int)s, (int)want,
          s != ATTN_OK ? err : "");
    if (s != ATTN_OK) {
        CHECK(f == sentinel, "attn_st_open wrote *out on error");
        fz_check_err(err, sizeof err, "attn_st_open");
        return;
    }
    CHECK(attn_st_count(f) == want_count, "attn_st_open: %zu tensors, from memory %zu", attn_st_count(f), want_count);
    attn_st_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    CHECK(buf != NULL, "malloc");
    memcpy(buf, data, size);
    const uint64_t h = fz_hash(data, size);
    static const size_t errlens[] = {256, 256, 256, 1, 2, 7, 64, 0};
    const size_t errlen = errlens[h % 8];
    const int null_err = errlen == 0 && (h >> 3 & 1);
    char *err = null_err ? NULL : malloc(errlen ? errlen : 1);
    if (err)
        memset(err, 'X', errlen ? errlen : 1);

    attn_st *const sentinel = (attn_st *)&fz_ctx, *f = sentinel;
    const attn_status s = attn_st_open_memory(&f, buf, size, err, errlen);
    if (fz_trace)
        fprintf(stderr, "attn_st_open_memory(%zu bytes) = %d, %zu tensors %s\n", size, (int)s,
                s == ATTN_OK ? attn_st_count(f) : 0, s != ATTN_OK && err && errlen ? err : "");
    CHECK(s == ATTN_OK || s == ATTN_EINVAL || s == ATTN_ENOMEM, "attn_st_open_memory gave %d", (int)s);
    if (s != ATTN_OK) {
        CHECK(f == sentinel, "attn_st_open_memory wrote *out on error");
        fz_check_err(err, errlen, "attn_st_open_memory");
    } else {
        CHECK(f != NULL && f != sentinel, "no handle");
        fz_walk(f, buf, size, h, err, errlen);
    }
    CHECK(!memcmp(buf, data, size), "the library wrote the file's bytes");
    if ((h >> 8) % 16 == 0)
        fz_file(buf, size, s, s == ATTN_OK ? attn_st_count(f) : 0);
    if (s == ATTN_OK)
        attn_st_close(f);
    attn_st_close(NULL);
    CHECK(attn_st_count(NULL) == 0, "attn_st_count(NULL)");
    free(err);
    free(buf);
    return 0;
}
