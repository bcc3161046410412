/* .safetensors files: the header is checked whole at open (jansson parses it, then every entry, the name set and the
 * tiling of the data area are validated) into a table of our own; tensors are read from the mapping and widened to
 * fp32; attn_layer_load_safetensors assembles one attention layer from them in a single aligned allocation.
 * Built without jansson (no ATTN_HAVE_JANSSON: configure --without-jansson, or jansson not found), the same entry
 * points check their arguments and return ATTN_ENOTSUP. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#if ATTN_HAVE_JANSSON
#include <jansson.h>
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "half.h"
#include "internal.h"

/* ---- errors ---- */

__attribute__((format(printf, 4, 5))) static attn_status attn_st_fail(char *err, size_t errlen, attn_status s,
                                                                       const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return s;
}

#if ATTN_HAVE_JANSSON

#define ATTN_ST_MAX_HEADER ((uint64_t)100 << 20) /* the reference implementation's limit */
#define ATTN_ST_MAX_DIMS 8
#define ATTN_ST_ALIGN_FLOATS 16              /* each array of a loaded layer starts 64 bytes aligned */

typedef enum attn_st_kind { ATTN_ST_OTHER = 0, ATTN_ST_F32, ATTN_ST_F16, ATTN_ST_BF16 } attn_st_kind;

static const struct attn_st_dtype {
    const char *name;
    size_t size;
    attn_st_kind kind;
} attn_st_dtypes[] = {
    {"BOOL", 1, ATTN_ST_OTHER}, {"U8", 1, ATTN_ST_OTHER},  {"I8", 1, ATTN_ST_OTHER},  {"F8_E5M2", 1, ATTN_ST_OTHER},
    {"F8_E4M3", 1, ATTN_ST_OTHER}, {"I16", 2, ATTN_ST_OTHER}, {"U16", 2, ATTN_ST_OTHER}, {"F16", 2, ATTN_ST_F16},
    {"BF16", 2, ATTN_ST_BF16}, {"I32", 4, ATTN_ST_OTHER}, {"U32", 4, ATTN_ST_OTHER}, {"F32", 4, ATTN_ST_F32},
    {"F64", 8, ATTN_ST_OTHER}, {"I64", 8, ATTN_ST_OTHER}, {"U64", 8, ATTN_ST_OTHER},
};
#define ATTN_ST_N_DTYPES (sizeof attn_st_dtypes / sizeof attn_st_dtypes[0])

typedef struct attn_st_entry {
    const char *name; /* in the handle's string block */
    const struct attn_st_dtype *dtype;
    size_t ndim, shape[ATTN_ST_MAX_DIMS], numel;
    size_t begin, end; /* byte offsets into the data area */
} attn_st_entry;

struct attn_st {
    const unsigned char *data; /* the data area: after the 8 + N header bytes */
    size_t data_size;
    void *map; /* the mapping attn_st_open made (NULL for attn_st_open_memory) */
    size_t map_len;
    size_t n;
    attn_st_entry *t;                /* [n], in data-offset order */
    const attn_st_entry **by_name;   /* [n], sorted by name for bsearch */
    size_t n_meta;
    const char **meta;               /* [2 * n_meta]: key, value pairs sorted by key */
    char *strings;                   /* every name, key and value, NUL-terminated */
};

/* ---- messages ---- */

/* s quoted for an error message: at most 64 bytes, control bytes as '?', so a hostile name keeps the reason on one
 * line and short. */
typedef struct attn_st_quoted {
    char s[72];
} attn_st_quoted;

static attn_st_quoted attn_st_quote(const char *s)
{
    attn_st_quoted q;
    size_t o = 0;
    q.s[o++] = '"';
    for (size_t i = 0; s[i] && o < 65; i++)
        q.s[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (s[o - 1] && o == 65) { /* o - 1 bytes of s copied and more follow */
        memcpy(q.s + o, "...", 3);
        o += 3;
    }
    q.s[o++] = '"';
    q.s[o] = '\0';
    return q;
}

/* "[3, 4]" for an error message. */
typedef struct attn_st_shape_str {
    char s[8 * 22 + 4];
} attn_st_shape_str;

static attn_st_shape_str attn_st_shape_fmt(const attn_st_entry *t)
{
    attn_st_shape_str r;
    size_t o = 0;
    r.s[o++] = '[';
    for (size_t i = 0; i < t->ndim; i++)
        o += (size_t)snprintf(r.s + o, sizeof r.s - o, i ? ", %zu" : "%zu", t->shape[i]);
    r.s[o++] = ']';
    r.s[o] = '\0';
    return r;
}

/* ---- header checks ---- */

/* Byte offset of the first invalid UTF-8 sequence in p[0..n) (overlong forms, surrogates and code points past
 * U+10FFFF are invalid), or n when it is all valid. */
static size_t attn_st_utf8_bad(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        const unsigned c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (n - i < len)
            return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += len;
    }
    return n;
}

/* A JSON integer in [0, SIZE_MAX] (reals such as 1.0 or 1e300 are not integers); 1 and *v on success. */
static int attn_st_index(const json_t *j, size_t *v)
{
    if (!json_is_integer(j))
        return 0;
    const json_int_t x = json_integer_value(j);
    if (x < 0 || (unsigned long long)x > SIZE_MAX)
        return 0;
    *v = (size_t)x;
    return 1;
}

/* Checks one tensor entry of the header and fills t (all but name). Duplicate keys were refused by the parser. */
static attn_status attn_st_entry_parse(const char *name, const json_t *j, size_t data_size, attn_st_entry *t,
                                       char *err, size_t errlen)
{
    const attn_st_quoted q = attn_st_quote(name);
    if (!json_is_object(j))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s is not a JSON object", q.s);
    const json_t *dtype = json_object_get(j, "dtype"), *shape = json_object_get(j, "shape"),
                 *offs = json_object_get(j, "data_offsets");
    if (!dtype || !shape || !offs)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: missing key \"%s\"", q.s,
                            !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

    if (!json_is_string(dtype))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: dtype is not a string", q.s);
    t->dtype = NULL;
    for (size_t i = 0; i < ATTN_ST_N_DTYPES; i++)
        if (strcmp(json_string_value(dtype), attn_st_dtypes[i].name) == 0)
            t->dtype = &attn_st_dtypes[i];
    if (!t->dtype)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: unknown dtype %s", q.s,
                            attn_st_quote(json_string_value(dtype)).s);

    if (!json_is_array(shape))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: shape is not an array", q.s);
    t->ndim = 0;
    t->numel = 1;
    int overflow = 0;
    size_t di;
    const json_t *d;
    json_array_foreach(shape, di, d) {
        if (t->ndim == ATTN_ST_MAX_DIMS)
            return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: more than %d dimensions", q.s,
                                ATTN_ST_MAX_DIMS);
        if (!attn_st_index(d, &t->shape[t->ndim]))
            return attn_st_fail(err, errlen, ATTN_EINVAL,
                                "safetensors: tensor %s: shape[%zu] is not a non-negative integer", q.s, t->ndim);
        overflow |= attn_mul_overflow(t->numel, t->shape[t->ndim], &t->numel);
        t->ndim++;
    }
    for (size_t i = t->ndim; i < ATTN_ST_MAX_DIMS; i++)
        t->shape[i] = 0;

    if (!json_is_array(offs) || json_array_size(offs) != 2 || !attn_st_index(json_array_get(offs, 0), &t->begin) ||
        !attn_st_index(json_array_get(offs, 1), &t->end))
        return attn_st_fail(err, errlen, ATTN_EINVAL,
                            "safetensors: tensor %s: data_offsets is not two non-negative integers", q.s);
    if (t->begin > t->end || t->end > data_size)
        return attn_st_fail(err, errlen, ATTN_EINVAL,
                            "safetensors: tensor %s: data_offsets [%zu, %zu] not within the %zu data bytes", q.s,
                            t->begin, t->end, data_size);
    size_t bytes;
    if (overflow || attn_mul_overflow(t->numel, t->dtype->size, &bytes))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s: byte size overflows", q.s);
    if (bytes != t->end - t->begin)
        return attn_st_fail(err, errlen, ATTN_EINVAL,
                            "safetensors: tensor %s: %s %s is %zu bytes but data_offsets span %zu", q.s,
                            t->dtype->name, attn_st_shape_fmt(t).s, bytes, t->end - t->begin);
    return ATTN_OK;
}

static int attn_st_cmp_offset(const void *a, const void *b)
{
    const attn_st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) /* zero-size tensors first, at the offset where they sit */
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int attn_st_cmp_name(const void *a, const void *b)
{
    const attn_st_entry *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int attn_st_cmp_key(const void *a, const void *b)
{
    const char *const *x = a, *const *y = b;
    return strcmp(x[0], y[0]);
}

/* Parses the header of the file at base (size bytes) into f, which the caller zeroed. On failure f may hold
 * allocations: the caller frees them with attn_st_close. */
static attn_status attn_st_parse(attn_st *f, const unsigned char *base, size_t size, char *err, size_t errlen)
{
    if (size < 8)
        return attn_st_fail(err, errlen, ATTN_EINVAL,
                            "safetensors: %zu bytes is too short for the 8-byte header length", size);
    uint64_t n64 = 0;
    for (int i = 7; i >= 0; i--)
        n64 = n64 << 8 | base[i];
    if (n64 > size - 8)
        return attn_st_fail(err, errlen, ATTN_EINVAL,
                            "safetensors: header length %llu is past the end of the %zu-byte file",
                            (unsigned long long)n64, size);
    if (n64 > ATTN_ST_MAX_HEADER)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: header length %llu is over the 100 MiB limit",
                            (unsigned long long)n64);
    const size_t hn = (size_t)n64;
    const unsigned char *hdr = base + 8;
    if (hn == 0 || hdr[0] != '{')
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: the header does not start with '{'");
    const unsigned char *nul = memchr(hdr, 0, hn);
    if (nul)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NUL byte in the header at byte %zu",
                            (size_t)(nul - hdr));
    const size_t bad = attn_st_utf8_bad(hdr, hn);
    if (bad != hn)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: the header is not UTF-8 (byte %zu)", bad);
    f->data = hdr + hn;
    f->data_size = size - 8 - hn;

    /* jansson reports its errors per call (thread-safe) and refuses duplicate keys, \u0000 in strings and anything
     * but whitespace after the object. Running out of memory inside it mostly comes back as an error without
     * text (or, in 2.14, the out-of-memory code); both are ATTN_ENOMEM. (Its lexer also ignores a failed growth of
     * its token buffer, which can shorten a string: the name, dtype and tiling checks below then refuse the file,
     * or a lookup by the expected name fails.) */
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr); /* not every failure path inside jansson fills it */
    json_t *root = json_loadb((const char *)hdr, hn, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_out_of_memory || jerr.text[0] == '\0')
            return attn_st_fail(err, errlen, ATTN_ENOMEM, "safetensors: out of memory");
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: the header is not valid JSON (byte %d: %s)",
                            jerr.position, attn_st_quote(jerr.text).s);
    }
    attn_status s = ATTN_OK;
    if (!json_is_object(root)) {
        s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: the header is not a JSON object");
        goto done;
    }

    /* Count tensors and metadata, and size the string block (every string is shorter than the header). */
    const json_t *meta = json_object_get(root, "__metadata__");
    const char *key, *mkey;
    const json_t *val, *mval;
    size_t n = 0, strbytes = 0;
    json_object_foreach((json_t *)root, key, val) {
        strbytes += strlen(key) + 1;
        n += val != meta;
    }
    if (meta && !json_is_object(meta)) {
        s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: \"__metadata__\" is not a JSON object");
        goto done;
    }
    if (meta)
        json_object_foreach((json_t *)meta, mkey, mval) {
            if (!json_is_string(mval)) {
                s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: \"__metadata__\" value %s is not a string",
                                 attn_st_quote(mkey).s);
                goto done;
            }
            strbytes += strlen(mkey) + strlen(json_string_value(mval)) + 2;
            f->n_meta++;
        }
    f->t = calloc(n + 1, sizeof *f->t);
    f->by_name = calloc(n + 1, sizeof *f->by_name);
    f->meta = calloc(2 * f->n_meta + 1, sizeof *f->meta);
    f->strings = malloc(strbytes + 1);
    if (!f->t || !f->by_name || !f->meta || !f->strings) {
        s = attn_st_fail(err, errlen, ATTN_ENOMEM, "safetensors: out of memory");
        goto done;
    }
    char *sp = f->strings;
#define ATTN_ST_KEEP(dst, src)                                                                                       \
    do {                                                                                                             \
        const size_t len_ = strlen(src) + 1;                                                                         \
        memcpy(sp, (src), len_);                                                                                     \
        (dst) = sp;                                                                                                  \
        sp += len_;                                                                                                  \
    } while (0)
    json_object_foreach((json_t *)root, key, val) {
        if (val == meta)
            continue;
        attn_st_entry *t = &f->t[f->n];
        if ((s = attn_st_entry_parse(key, val, f->data_size, t, err, errlen)) != ATTN_OK)
            goto done;
        ATTN_ST_KEEP(t->name, key);
        f->n++;
    }
    size_t k = 0;
    if (meta)
        json_object_foreach((json_t *)meta, mkey, mval) {
            ATTN_ST_KEEP(f->meta[k], mkey);
            ATTN_ST_KEEP(f->meta[k + 1], json_string_value(mval));
            k += 2;
        }
#undef ATTN_ST_KEEP

    qsort(f->meta, f->n_meta, 2 * sizeof *f->meta, attn_st_cmp_key);
    for (size_t i = 1; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i - 2], f->meta[2 * i]) == 0) {
            s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: duplicate \"__metadata__\" key %s",
                             attn_st_quote(f->meta[2 * i]).s);
            goto done;
        }
    qsort(f->t, f->n, sizeof *f->t, attn_st_cmp_offset);
    for (size_t i = 0; i < f->n; i++)
        f->by_name[i] = &f->t[i];
    qsort(f->by_name, f->n, sizeof *f->by_name, attn_st_cmp_name);
    for (size_t i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: duplicate tensor name %s",
                             attn_st_quote(f->by_name[i]->name).s);
            goto done;
        }
    /* The tensors must tile the data area: each begins where the one before ended, the last ends at its end. */
    size_t at = 0;
    for (size_t i = 0; i < f->n; i++) {
        const attn_st_entry *t = &f->t[i];
        if (t->begin < at) {
            s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensors %s and %s overlap",
                             attn_st_quote(f->t[i - 1].name).s, attn_st_quote(t->name).s);
            goto done;
        }
        if (t->begin > at) {
            s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %zu unindexed data bytes before tensor %s",
                             t->begin - at, attn_st_quote(t->name).s);
            goto done;
        }
        at = t->end;
    }
    if (at != f->data_size)
        s = attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %zu data bytes after the last tensor are unindexed",
                         f->data_size - at);
done:
    json_decref(root);
    return s;
}

/* ---- the handle ---- */

attn_status attn_st_open_memory(attn_st **out, const void *data, size_t size, char *err, size_t errlen)
{
    if (!out || !data)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    attn_st *f = calloc(1, sizeof *f);
    if (!f)
        return attn_st_fail(err, errlen, ATTN_ENOMEM, "safetensors: out of memory");
    const attn_status s = attn_st_parse(f, data, size, err, errlen);
    if (s != ATTN_OK) {
        attn_st_close(f);
        return s;
    }
    *out = f;
    return ATTN_OK;
}

attn_status attn_st_open(attn_st **out, const char *path, char *err, size_t errlen)
{
    if (!out || !path)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    const attn_st_quoted q = attn_st_quote(path);
    /* O_NONBLOCK: a FIFO is refused below instead of blocking the open; it changes nothing for regular files. */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %s: %s", q.s, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int e = errno;
        close(fd);
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %s: %s", q.s, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %s: %s", q.s,
                            S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
    }
    if (st.st_size < 8 || (uintmax_t)st.st_size > SIZE_MAX) {
        close(fd);
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: %s: %lld bytes is too short or too large", q.s,
                            (long long)st.st_size);
    }
    const size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return attn_st_fail(err, errlen, e == ENOMEM ? ATTN_ENOMEM : ATTN_EINVAL, "safetensors: %s: mmap: %s", q.s,
                            strerror(e));
    attn_st *f = calloc(1, sizeof *f);
    if (!f) {
        munmap(map, size);
        return attn_st_fail(err, errlen, ATTN_ENOMEM, "safetensors: out of memory");
    }
    f->map = map;
    f->map_len = size;
    const attn_status s = attn_st_parse(f, map, size, err, errlen);
    if (s != ATTN_OK) {
        attn_st_close(f);
        return s;
    }
    *out = f;
    return ATTN_OK;
}

void attn_st_close(attn_st *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    free(f->t);
    free(f->by_name);
    free(f->meta);
    free(f->strings);
    free(f);
}

size_t attn_st_count(const attn_st *f) { return f ? f->n : 0; }

static void attn_st_info(const attn_st_entry *t, attn_st_tensor *info)
{
    info->name = t->name;
    info->dtype = t->dtype->name;
    info->ndim = t->ndim;
    memcpy(info->shape, t->shape, sizeof info->shape);
    info->numel = t->numel;
}

attn_status attn_st_tensor_at(const attn_st *f, size_t i, attn_st_tensor *info)
{
    if (!f || !info || i >= f->n)
        return ATTN_EINVAL;
    attn_st_info(&f->t[i], info);
    return ATTN_OK;
}

static const attn_st_entry *attn_st_lookup(const attn_st *f, const char *name)
{
    const attn_st_entry key = {.name = name}, *kp = &key;
    const attn_st_entry *const *hit = bsearch(&kp, f->by_name, f->n, sizeof *f->by_name, attn_st_cmp_name);
    return hit ? *hit : NULL;
}

attn_status attn_st_find(const attn_st *f, const char *name, attn_st_tensor *info)
{
    if (!f || !name || !info)
        return ATTN_EINVAL;
    const attn_st_entry *t = attn_st_lookup(f, name);
    if (!t)
        return ATTN_EINVAL;
    attn_st_info(t, info);
    return ATTN_OK;
}

const char *attn_st_metadata(const attn_st *f, const char *key)
{
    if (!f || !key || !f->n_meta)
        return NULL;
    const char *const *hit = bsearch(&key, f->meta, f->n_meta, 2 * sizeof *f->meta, attn_st_cmp_key);
    return hit ? hit[1] : NULL;
}

/* Elements [first, first + count) of t (F32, F16 or BF16) as fp32. The file is little-endian whatever the host;
 * its data may sit at any alignment, so elements are assembled from bytes (a plain load on little-endian hosts). */
static void attn_st_convert(const attn_st *f, const attn_st_entry *t, size_t first, size_t count, float *dst)
{
    const unsigned char *p = f->data + t->begin + first * t->dtype->size;
    switch (t->dtype->kind) {
    case ATTN_ST_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(dst, p, count * sizeof *dst);
#else
        for (size_t i = 0; i < count; i++, p += 4)
            dst[i] = attn_u2f((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
#endif
        break;
    case ATTN_ST_F16:
        for (size_t i = 0; i < count; i++, p += 2)
            dst[i] = attn_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    case ATTN_ST_BF16:
        for (size_t i = 0; i < count; i++, p += 2)
            dst[i] = attn_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    case ATTN_ST_OTHER:
        break; /* callers check the kind first */
    }
}

attn_status attn_st_read_f32(const attn_st *f, const char *name, float *dst, size_t n)
{
    if (!f || !name || (!dst && n))
        return ATTN_EINVAL;
    const attn_st_entry *t = attn_st_lookup(f, name);
    if (!t || n != t->numel)
        return ATTN_EINVAL;
    if (t->dtype->kind == ATTN_ST_OTHER)
        return ATTN_ENOTSUP;
    if (n)
        attn_st_convert(f, t, 0, n, dst);
    return ATTN_OK;
}

/* ---- one attention layer ---- */

/* One array of the loaded layer: count elements taken from element first of src, at byte offset dst of the
 * allocation. A weight (wfield) is converted to fp32 or, when keep is set, copied in its stored 16-bit type; a bias
 * (bfield) is always converted to fp32. */
typedef struct attn_st_part {
    const attn_st_entry *src;
    size_t first, count, dst;
    const void **wfield;
    const float **bfield;
    int keep; /* set by the loader: 1 to copy src's 16-bit elements as they are */
} attn_st_part;

/* Elements [first, first + count) of a 16-bit tensor (F16 or BF16), copied bit for bit into dst in host order (the
 * file is little-endian and may be unaligned). */
static void attn_st_copy16(const attn_st *f, const attn_st_entry *t, size_t first, size_t count, uint16_t *dst)
{
    const unsigned char *p = f->data + t->begin + first * 2;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, p, count * sizeof *dst);
#else
    for (size_t i = 0; i < count; i++, p += 2)
        dst[i] = (uint16_t)(p[0] | p[1] << 8);
#endif
}

/* The tensor a layer needs as `role`: EINVAL if it is missing, ENOTSUP if it is not F32/F16/BF16. */
static attn_status attn_st_need(const attn_st *f, const char *name, const char *role, const attn_st_entry **t,
                                char *err, size_t errlen)
{
    *t = attn_st_lookup(f, name);
    if (!*t)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: no tensor %s (%s)", attn_st_quote(name).s, role);
    if ((*t)->dtype->kind == ATTN_ST_OTHER)
        return attn_st_fail(err, errlen, ATTN_ENOTSUP, "safetensors: tensor %s (%s) is %s, not F32, F16 or BF16",
                            attn_st_quote(name).s, role, (*t)->dtype->name);
    return ATTN_OK;
}

/* EINVAL unless t has shape [d0] (d1 == 0) or [d0][d1]. */
static attn_status attn_st_expect(const attn_st_entry *t, const char *role, size_t d0, size_t d1, char *err,
                                  size_t errlen)
{
    const size_t nd = d1 ? 2 : 1;
    if (t->ndim == nd && t->shape[0] == d0 && (nd == 1 || t->shape[1] == d1))
        return ATTN_OK;
    char want[48];
    if (d1)
        snprintf(want, sizeof want, "[%zu, %zu]", d0, d1);
    else
        snprintf(want, sizeof want, "[%zu]", d0);
    return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: tensor %s (%s) has shape %s, expected %s",
                        attn_st_quote(t->name).s, role, attn_st_shape_fmt(t).s, want);
}

static attn_status attn_st_load(attn_layer_weights *out, const attn_st *f, const attn_layer_names *nm,
                                size_t n_heads, size_t n_kv_heads, char *err, size_t errlen)
{
    if (!n_heads)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: n_heads is 0");
    const size_t hk = n_kv_heads ? n_kv_heads : n_heads;
    if (n_heads % hk)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: n_kv_heads %zu does not divide n_heads %zu", hk,
                            n_heads);
    const int sep_w = nm->wq || nm->wk || nm->wv, sep_b = nm->bq || nm->bk || nm->bv;
    if (nm->in_proj_weight ? sep_w : !(nm->wq && nm->wk && nm->wv))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: name either wq, wk and wv or in_proj_weight");
    if (nm->in_proj_bias && sep_b)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: name either bq, bk, bv or in_proj_bias");
    size_t groups; /* rows of in_proj_weight per head_dim */
    if (attn_mul_overflow(hk, 2, &groups) || __builtin_add_overflow(groups, n_heads, &groups))
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: n_heads + 2 * n_kv_heads overflows");

    attn_status s;
    attn_layer *L = &out->layer;
    attn_st_part parts[8];
    size_t np = 0;
    const attn_st_entry *t;
    size_t d, hd;
    if (nm->in_proj_weight) {
        if ((s = attn_st_need(f, nm->in_proj_weight, "in_proj_weight", &t, err, errlen)) != ATTN_OK)
            return s;
        if (t->ndim != 2 || !t->shape[0] || !t->shape[1] || t->shape[0] % groups)
            return attn_st_fail(err, errlen, ATTN_EINVAL,
                                "safetensors: tensor %s (in_proj_weight) has shape %s, expected "
                                "[(n_heads + 2 * n_kv_heads) * head_dim = %zu * head_dim, d_model]",
                                attn_st_quote(t->name).s, attn_st_shape_fmt(t).s, groups);
        d = t->shape[1];
        hd = t->shape[0] / groups;
        const size_t qn = n_heads * hd * d, kn = hk * hd * d; /* at most t's numel */
        parts[np++] = (attn_st_part){t, 0, qn, 0, &L->wq, NULL, 0};
        parts[np++] = (attn_st_part){t, qn, kn, 0, &L->wk, NULL, 0};
        parts[np++] = (attn_st_part){t, qn + kn, kn, 0, &L->wv, NULL, 0};
    } else {
        if ((s = attn_st_need(f, nm->wq, "wq", &t, err, errlen)) != ATTN_OK)
            return s;
        if (t->ndim != 2 || !t->shape[0] || !t->shape[1] || t->shape[0] % n_heads)
            return attn_st_fail(err, errlen, ATTN_EINVAL,
                                "safetensors: tensor %s (wq) has shape %s, expected [n_heads * head_dim = %zu * "
                                "head_dim, d_model]",
                                attn_st_quote(t->name).s, attn_st_shape_fmt(t).s, n_heads);
        d = t->shape[1];
        hd = t->shape[0] / n_heads;
        parts[np++] = (attn_st_part){t, 0, t->numel, 0, &L->wq, NULL, 0};
        const char *kv_names[2] = {nm->wk, nm->wv}, *kv_roles[2] = {"wk", "wv"};
        const void **kv_fields[2] = {&L->wk, &L->wv};
        for (int i = 0; i < 2; i++) {
            if ((s = attn_st_need(f, kv_names[i], kv_roles[i], &t, err, errlen)) != ATTN_OK ||
                (s = attn_st_expect(t, kv_roles[i], hk * hd, d, err, errlen)) != ATTN_OK)
                return s;
            parts[np++] = (attn_st_part){t, 0, t->numel, 0, kv_fields[i], NULL, 0};
        }
    }
    const size_t qr = n_heads * hd, kr = hk * hd; /* rows of wq and of wk, wv: within the file's tensors */
    if (nm->wo) {
        if ((s = attn_st_need(f, nm->wo, "wo", &t, err, errlen)) != ATTN_OK ||
            (s = attn_st_expect(t, "wo", d, qr, err, errlen)) != ATTN_OK)
            return s;
        parts[np++] = (attn_st_part){t, 0, t->numel, 0, &L->wo, NULL, 0};
    }
    const size_t n_weights = np; /* parts[0 .. n_weights) are weights, the rest biases */
    if (nm->in_proj_bias) {
        if ((s = attn_st_need(f, nm->in_proj_bias, "in_proj_bias", &t, err, errlen)) != ATTN_OK ||
            (s = attn_st_expect(t, "in_proj_bias", qr + 2 * kr, 0, err, errlen)) != ATTN_OK)
            return s;
        parts[np++] = (attn_st_part){t, 0, qr, 0, NULL, &L->bq, 0};
        parts[np++] = (attn_st_part){t, qr, kr, 0, NULL, &L->bk, 0};
        parts[np++] = (attn_st_part){t, qr + kr, kr, 0, NULL, &L->bv, 0};
    }
    const struct {
        const char *name, *role;
        size_t len;
        const float **field;
    } biases[] = {{nm->bq, "bq", qr, &L->bq}, {nm->bk, "bk", kr, &L->bk}, {nm->bv, "bv", kr, &L->bv},
                  {nm->bo, "bo", d, &L->bo}};
    for (size_t i = 0; i < sizeof biases / sizeof biases[0]; i++) {
        if (!biases[i].name)
            continue;
        if ((s = attn_st_need(f, biases[i].name, biases[i].role, &t, err, errlen)) != ATTN_OK ||
            (s = attn_st_expect(t, biases[i].role, biases[i].len, 0, err, errlen)) != ATTN_OK)
            return s;
        parts[np++] = (attn_st_part){t, 0, t->numel, 0, NULL, biases[i].field, 0};
    }

    /* keep_dtype: the weights share one stored type, which they keep when it is 16-bit (F32 is fp32 either way). */
    attn_dtype wdt = ATTN_F32;
    if (nm->keep_dtype) {
        const attn_st_entry *w0 = parts[0].src;
        for (size_t i = 1; i < n_weights; i++)
            if (parts[i].src->dtype->kind != w0->dtype->kind)
                return attn_st_fail(err, errlen, ATTN_EINVAL,
                                    "safetensors: keep_dtype: the weights must share one dtype, but tensor %s is %s "
                                    "and tensor %s is %s",
                                    attn_st_quote(w0->name).s, w0->dtype->name,
                                    attn_st_quote(parts[i].src->name).s, parts[i].src->dtype->name);
        wdt = w0->dtype->kind == ATTN_ST_F16 ? ATTN_F16 : w0->dtype->kind == ATTN_ST_BF16 ? ATTN_BF16 : ATTN_F32;
        for (size_t i = 0; i < n_weights; i++)
            parts[i].keep = wdt != ATTN_F32;
    }

    /* One allocation, each array starting on a 64-byte boundary (offsets in bytes). */
    const size_t align = ATTN_ST_ALIGN_FLOATS * sizeof(float);
    size_t total = 0;
    for (size_t i = 0; i < np; i++) {
        size_t at, len;
        if (__builtin_add_overflow(total, align - 1, &at) ||
            attn_mul_overflow(parts[i].count, parts[i].keep ? sizeof(uint16_t) : sizeof(float), &len) ||
            __builtin_add_overflow(at / align * align, len, &total))
            return attn_st_fail(err, errlen, ATTN_ERANGE, "safetensors: layer size overflows");
        parts[i].dst = at / align * align;
    }
    const size_t bytes = total;
    if (bytes > PTRDIFF_MAX)
        return attn_st_fail(err, errlen, ATTN_ERANGE, "safetensors: layer size overflows");
    float *mem = attn_alloc_aligned(bytes);
    if (!mem)
        return attn_st_fail(err, errlen, ATTN_ENOMEM, "safetensors: out of memory (%zu bytes for the layer)", bytes);
    for (size_t i = 0; i < np; i++) {
        void *dst = (char *)mem + parts[i].dst;
        if (parts[i].keep)
            attn_st_copy16(f, parts[i].src, parts[i].first, parts[i].count, dst);
        else
            attn_st_convert(f, parts[i].src, parts[i].first, parts[i].count, dst);
        if (parts[i].wfield)
            *parts[i].wfield = dst;
        else
            *parts[i].bfield = dst;
    }
    L->w_dtype = wdt;
    L->d_model = d;
    L->n_heads = n_heads;
    L->n_kv_heads = hk;
    L->head_dim = hd;
    out->data = mem;
    return ATTN_OK;
}

attn_status attn_layer_load_safetensors(attn_layer_weights *out, const attn_st *f, const attn_layer_names *names,
                                        size_t n_heads, size_t n_kv_heads, char *err, size_t errlen)
{
    if (!out)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    memset(out, 0, sizeof *out);
    if (!f || !names)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    const attn_status s = attn_st_load(out, f, names, n_heads, n_kv_heads, err, errlen);
    if (s != ATTN_OK)
        memset(out, 0, sizeof *out); /* nothing was allocated: every check comes before the allocation */
    return s;
}

#else /* !ATTN_HAVE_JANSSON */

/* ---- without jansson: each entry point checks its arguments, then refuses; no handle can ever be opened ---- */

#define ATTN_ST_NO_JANSSON "attn was built without jansson (configure --without-jansson)"

attn_status attn_st_open_memory(attn_st **out, const void *data, size_t size, char *err, size_t errlen)
{
    (void)size;
    if (!out || !data)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    return attn_st_fail(err, errlen, ATTN_ENOTSUP, "%s", ATTN_ST_NO_JANSSON);
}

attn_status attn_st_open(attn_st **out, const char *path, char *err, size_t errlen)
{
    if (!out || !path)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    return attn_st_fail(err, errlen, ATTN_ENOTSUP, "%s", ATTN_ST_NO_JANSSON);
}

void attn_st_close(attn_st *f) { (void)f; }

size_t attn_st_count(const attn_st *f)
{
    (void)f;
    return 0;
}

attn_status attn_st_tensor_at(const attn_st *f, size_t i, attn_st_tensor *info)
{
    (void)i;
    return !f || !info ? ATTN_EINVAL : ATTN_ENOTSUP;
}

attn_status attn_st_find(const attn_st *f, const char *name, attn_st_tensor *info)
{
    return !f || !name || !info ? ATTN_EINVAL : ATTN_ENOTSUP;
}

const char *attn_st_metadata(const attn_st *f, const char *key)
{
    (void)f, (void)key;
    return NULL;
}

attn_status attn_st_read_f32(const attn_st *f, const char *name, float *dst, size_t n)
{
    return !f || !name || (!dst && n) ? ATTN_EINVAL : ATTN_ENOTSUP;
}

attn_status attn_layer_load_safetensors(attn_layer_weights *out, const attn_st *f, const attn_layer_names *names,
                                        size_t n_heads, size_t n_kv_heads, char *err, size_t errlen)
{
    (void)n_heads, (void)n_kv_heads;
    if (!out)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    memset(out, 0, sizeof *out);
    if (!f || !names)
        return attn_st_fail(err, errlen, ATTN_EINVAL, "safetensors: NULL argument");
    return attn_st_fail(err, errlen, ATTN_ENOTSUP, "%s", ATTN_ST_NO_JANSSON);
}

#endif /* ATTN_HAVE_JANSSON */

/* Needs no parser: it frees what a load allocated (nothing, without jansson: a zeroed struct). */
void attn_layer_weights_free(attn_layer_weights *w)
{
    if (!w)
        return;
    attn_free_aligned(w->data);
    memset(w, 0, sizeof *w);
}
