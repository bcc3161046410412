/* attn-demo: who attends to whom in a sentence. Splits it into words and punctuation, embeds each token (seeded
 * vectors from the token's text, a --vectors text file or a --weights safetensors file), runs one self-attention
 * layer (attn_self_attention) and prints every head's attention matrix and strongest edges; --dot and --png write
 * the attention graph for Graphviz.
 *
 *   examples/attn-demo [options] "I love tennis"
 *
 * Exit status: 0 ok; 1 a library or output error, or --png without Graphviz's dot; 2 bad flags or input. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "attn.h"
#include "flags.h"

#define MAX_TOKENS 512
#define MAX_DIM 4096 /* d_model and heads */
#define PI 3.14159265358979323846

extern char **environ;

typedef struct options {
    long d_model, heads, kv_heads, head, top;
    int d_model_set, heads_set, kv_heads_set, causal;
    unsigned long long seed;
    double min_weight;
    const char *weights, *vectors, *dot, *png;
} options;

/* Embeddings read from a file: word[i] (as written there) has the vector vec[i * d .. i * d + d). */
typedef struct vocab {
    char **word;
    size_t n, d;
    float *vec;
} vocab;

/* Everything one run owns; demo_free releases it whatever the run reached. */
typedef struct demo {
    options opt;
    char *sentence;       /* the positional arguments joined by spaces */
    char **tok, **label;  /* [n]: the tokens as written; the same with "#i" added where a text repeats */
    size_t n;
    vocab voc;
    attn_st *st;
    attn_layer_weights lw; /* --weights */
    float *wbuf;           /* the seeded layer */
    attn_layer layer;
    size_t d_model;
    float *x, *y, *probs;  /* [n][d_model], [n][y width], [n_heads][n][n] */
    attn_ctx *ctx;
} demo;

typedef struct edge {
    float p;
    uint32_t i, j;
} edge;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: attn-demo [options] SENTENCE...\n"
            "Splits SENTENCE into words and punctuation, embeds each token, runs one self-attention layer\n"
            "(attn_self_attention) and prints, per head, who attends to whom.\n"
            "\n"
            "embeddings and layer (default: both seeded, no files needed):\n"
            "  --d-model N       embedding width, 1..%d (default 16)\n"
            "  --heads N         attention heads, must divide d_model (default 2; 1 when d_model is odd)\n"
            "  --kv-heads N      key/value heads (GQA), must divide --heads (default: --heads)\n"
            "  --seed N          seed of the random layer weights (default 1)\n"
            "  --causal          token i attends only to tokens 0..i\n"
            "  --vectors FILE    embeddings from a text file: per line a token, then its numbers (every line\n"
            "                    the same count, which becomes d_model); the layer stays seeded\n"
            "  --weights FILE    a .safetensors file: tensor \"embed\" [vocab][d_model], __metadata__ \"vocab\"\n"
            "                    (the tokens, one per line), the layer by PyTorch MultiheadAttention names:\n"
            "                    in_proj_weight, out_proj.weight, in_proj_bias and out_proj.bias (optional);\n"
            "                    n_heads and n_kv_heads from __metadata__ when there, else --heads, --kv-heads\n"
            "output:\n"
            "  --top K           strongest edges listed per head, 0..1000000 (default 5)\n"
            "  --head N          only head N (counted from 0) in the tables and the graph (default: all)\n"
            "  --dot FILE        write the attention graph in Graphviz DOT: a cluster per head, the tokens in a\n"
            "                    top row (attending) and a bottom row (attended), an edge A -> B when A attends\n"
            "                    to B, labelled with the weight p, pen width 0.5 + 6p\n"
            "  --png FILE        render that graph with Graphviz's `dot -Tpng` (Debian: apt-get install graphviz)\n"
            "  --min-weight W    leave graph edges below W out, 0..1 (default 0.1)\n"
            "  -h, --help        this text\n"
            "  --                the rest is the sentence, even words that start with '-'\n"
            "\n"
            "Tokens: runs of letters, digits and apostrophes are words (bytes of non-ASCII UTF-8 count as\n"
            "letters), every other non-space character is a token of its own; at most %d tokens. Lookups ignore\n"
            "ASCII case; a word missing from --vectors or --weights takes the \"<unk>\" entry, else it is an error.\n"
            "Seeded embeddings: the lowercased token's 64-bit FNV-1a hash seeds splitmix64, whose numbers become\n"
            "normal(0, 1) values (Box-Muller): a word always gets the same vector. Seeded layer: Wq, Wk, Wv, Wo\n"
            "uniform in +-1/sqrt(fan_in) like PyTorch's nn.Linear, biases 0.\n"
            "In the tables row A is the attending token (query) and column B an attended token (key); each row\n"
            "sums to 1. An edge A -> B p means A attends to B with weight p.\n"
            "Exit status: 0 ok; 1 a library or output error, or --png without dot on PATH (the tables are still\n"
            "printed); 2 bad flags or input.\n",
            MAX_DIM, MAX_TOKENS);
}

/* One line on stderr, "attn-demo: " first. */
static void errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("attn-demo: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* A library failure: EINVAL and ENOTSUP come from what the user gave (exit 2), the others from the machine. */
static int status_exit(attn_status st)
{
    return st == ATTN_EINVAL || st == ATTN_ENOTSUP ? 2 : 1;
}

static int nomem(void)
{
    errorf("%s", attn_strerror(ATTN_ENOMEM));
    return 1;
}

/* ---- flags --------------------------------------------------------------------------------------------------- */

/* Fills d->opt and d->sentence. 0, -1 for --help (printed), or 2 with the error printed. */
static int parse_args(int argc, char **argv, demo *d)
{
    static const struct {
        const char *name;
        size_t off, set_off;
        long lo, hi;
    } nums[] = {
        {"--d-model", offsetof(options, d_model), offsetof(options, d_model_set), 1, MAX_DIM},
        {"--heads", offsetof(options, heads), offsetof(options, heads_set), 1, MAX_DIM},
        {"--kv-heads", offsetof(options, kv_heads), offsetof(options, kv_heads_set), 1, MAX_DIM},
        {"--head", offsetof(options, head), 0, 0, MAX_DIM - 1},
        {"--top", offsetof(options, top), 0, 0, 1000000},
    };
    static const struct {
        const char *name;
        size_t off;
    } files[] = {
        {"--weights", offsetof(options, weights)},
        {"--vectors", offsetof(options, vectors)},
        {"--dot", offsetof(options, dot)},
        {"--png", offsetof(options, png)},
    };
    options *o = &d->opt;
    size_t len = 0;
    int words = 0, only_words = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val;
        int missing = 0, done = 0;
        if (only_words || a[0] != '-' || a[1] == '\0') {
            len += strlen(a) + 1;
            argv[words++] = argv[i]; /* the sentence's words, in order, where the flags were */
            continue;
        }
        if (!strcmp(a, "--")) {
            only_words = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(a, "--causal")) {
            o->causal = 1;
            continue;
        }
        for (size_t j = 0; j < sizeof nums / sizeof nums[0] && !done && !missing; j++) {
            if ((val = flag_value(argc, argv, &i, nums[j].name, &missing)) == NULL)
                continue;
            if (parse_long(val, nums[j].lo, nums[j].hi, (long *)((char *)o + nums[j].off))) {
                errorf("%s takes an integer in %ld..%ld, not '%s'", nums[j].name, nums[j].lo, nums[j].hi, val);
                return 2;
            }
            if (nums[j].set_off)
                *(int *)((char *)o + nums[j].set_off) = 1;
            done = 1;
        }
        for (size_t j = 0; j < sizeof files / sizeof files[0] && !done && !missing; j++) {
            if ((val = flag_value(argc, argv, &i, files[j].name, &missing)) == NULL)
                continue;
            if (!*val) {
                errorf("%s needs a file name", files[j].name);
                return 2;
            }
            *(const char **)((char *)o + files[j].off) = val;
            done = 1;
        }
        if (!done && !missing && (val = flag_value(argc, argv, &i, "--seed", &missing)) != NULL) {
            char *end;
            errno = 0;
            o->seed = strtoull(val, &end, 10);
            if (errno || end == val || *end || *val < '0' || *val > '9') {
                errorf("--seed takes an integer in 0..%llu, not '%s'", (unsigned long long)UINT64_MAX, val);
                return 2;
            }
            done = 1;
        }
        if (!done && !missing && (val = flag_value(argc, argv, &i, "--min-weight", &missing)) != NULL) {
            char *end;
            errno = 0;
            o->min_weight = strtod(val, &end);
            if (errno || end == val || *end || !(o->min_weight >= 0 && o->min_weight <= 1)) {
                errorf("--min-weight takes a number in 0..1, not '%s'", val);
                return 2;
            }
            done = 1;
        }
        if (done)
            continue;
        if (missing)
            errorf("%s needs a value", a);
        else
            errorf("unknown flag '%s' (see --help)", a);
        return 2;
    }
    if (!words) {
        errorf("no sentence given (usage: attn-demo [options] \"I love tennis\"; see --help)");
        return 2;
    }
    if (o->weights && o->vectors) {
        errorf("--weights and --vectors both give the embeddings: choose one");
        return 2;
    }
    if (!(d->sentence = malloc(len))) /* len >= 1: each word counted its separator */
        return nomem();
    char *p = d->sentence;
    for (int i = 0; i < words; i++) {
        size_t n = strlen(argv[i]);
        memcpy(p, argv[i], n);
        p += n;
        *p++ = i + 1 < words ? ' ' : '\0';
    }
    return 0;
}

/* ---- text ---------------------------------------------------------------------------------------------------- */

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static int is_word_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '\'' || c >= 0x80;
}

static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

/* ASCII-case-insensitive equality. */
static int same_word(const char *a, const char *b)
{
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b))
        a++, b++;
    return lower((unsigned char)*a) == lower((unsigned char)*b);
}

/* 1 if s is well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF). */
static int utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s, n;
        unsigned char lo = 0x80, hi = 0xbf; /* the allowed range of the second byte */
        if (c < 0x80) {
            s++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return 0;
        }
        if (s[1] < lo || s[1] > hi)
            return 0;
        for (unsigned k = 2; k <= n; k++)
            if ((s[k] & 0xc0) != 0x80)
                return 0;
        s += n + 1;
    }
    return 1;
}

/* Display width: one column per code point (wide and combining characters are not special-cased). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xc0) != 0x80;
    return w;
}

/* s in a field of w >= 2 columns, left or right aligned; a longer s is cut to w - 1 code points and '~'. */
static void put_field(const char *s, size_t w, int right)
{
    size_t sw = text_width(s);
    if (sw > w) {
        size_t cps = 0;
        const char *e = s;
        while (*e && (cps < w - 1 || ((unsigned char)*e & 0xc0) == 0x80)) {
            cps += ((unsigned char)*e & 0xc0) != 0x80;
            if (cps > w - 1)
                break;
            e++;
        }
        printf("%.*s~", (int)(e - s), s);
        return;
    }
    if (right)
        printf("%*s%s", (int)(w - sw), "", s);
    else
        printf("%s%*s", s, (int)(w - sw), "");
}

/* Splits d->sentence into d->tok and makes d->label. 0, or 2/1 with the error printed. */
static int tokenize(demo *d)
{
    const char *s = d->sentence;
    if (!utf8_valid(s)) {
        errorf("the sentence is not valid UTF-8");
        return 2;
    }
    if (!(d->tok = calloc(MAX_TOKENS, sizeof *d->tok)) || !(d->label = calloc(MAX_TOKENS, sizeof *d->label)))
        return nomem();
    while (*s) {
        unsigned char c = (unsigned char)*s;
        if (is_space(c)) {
            s++;
            continue;
        }
        if (c < 0x20 || c == 0x7f) {
            errorf("the sentence contains a control character (byte 0x%02x)", c);
            return 2;
        }
        size_t len = 1;
        if (is_word_byte(c))
            while (is_word_byte((unsigned char)s[len]))
                len++;
        if (d->n == MAX_TOKENS) {
            errorf("the sentence has more than %d tokens", MAX_TOKENS);
            return 2;
        }
        char *t = malloc(len + 1);
        if (!t)
            return nomem();
        memcpy(t, s, len);
        t[len] = '\0';
        d->tok[d->n++] = t;
        s += len;
    }
    if (!d->n) {
        errorf("the sentence is empty: give some words, e.g. attn-demo \"I love tennis\"");
        return 2;
    }
    /* A word that occurs twice would give two nodes and rows of the same name: those get their position. */
    for (size_t i = 0; i < d->n; i++) {
        int twice = 0;
        for (size_t j = 0; j < d->n && !twice; j++)
            twice = j != i && !strcmp(d->tok[i], d->tok[j]);
        size_t len = strlen(d->tok[i]) + 8;
        if (!(d->label[i] = malloc(len)))
            return nomem();
        if (twice)
            snprintf(d->label[i], len, "%s#%zu", d->tok[i], i);
        else
            snprintf(d->label[i], len, "%s", d->tok[i]);
    }
    return 0;
}

/* ---- embeddings ---------------------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* 64-bit FNV-1a of the ASCII-lowercased text. */
static uint64_t fnv1a_lower(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++) {
        h ^= lower((unsigned char)*s);
        h *= 0x100000001b3u;
    }
    return h;
}

/* The seeded embedding of a token: normal(0, 1) values by Box-Muller from splitmix64 seeded with its hash, so the
 * first values do not depend on d. */
static void seeded_vector(const char *tok, float *x, size_t d)
{
    uint64_t s = fnv1a_lower(tok);
    for (size_t i = 0; i < d; i += 2) {
        double u1 = (double)((splitmix64(&s) >> 11) + 1) * 0x1p-53; /* (0, 1]: log(u1) is finite */
        double u2 = (double)(splitmix64(&s) >> 11) * 0x1p-53;
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(2.0 * PI * u2));
        if (i + 1 < d)
            x[i + 1] = (float)(r * sin(2.0 * PI * u2));
    }
}

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->word[i]);
    free(v->word);
    free(v->vec);
    memset(v, 0, sizeof *v);
}

static size_t vocab_find(const vocab *v, const char *w)
{
    for (size_t i = 0; i < v->n; i++)
        if (same_word(v->word[i], w))
            return i;
    return SIZE_MAX;
}

/* Appends a word (copied) to v; its vector is set by the caller. 0, or 1 when out of memory. */
static int vocab_push(vocab *v, const char *w, size_t len, size_t *cap)
{
    if (v->n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        char **nw = realloc(v->word, nc * sizeof *nw);
        if (!nw)
            return 1;
        v->word = nw;
        if (v->d) {
            if (nc > SIZE_MAX / sizeof(float) / v->d)
                return 1;
            float *nv = realloc(v->vec, nc * v->d * sizeof(float));
            if (!nv)
                return 1;
            v->vec = nv;
        }
        *cap = nc;
    }
    if (!(v->word[v->n] = malloc(len + 1)))
        return 1;
    memcpy(v->word[v->n], w, len);
    v->word[v->n][len] = '\0';
    v->n++;
    return 0;
}

/* --vectors FILE: per line a token and its numbers. 0, or 2/1 with the error printed. */
static int load_vectors(demo *d)
{
    const char *path = d->opt.vectors;
    FILE *f = fopen(path, "r");
    if (!f) {
        errorf("%s: %s", path, strerror(errno));
        return 2;
    }
    vocab *v = &d->voc;
    char *line = NULL;
    size_t linecap = 0, cap = 0, lineno = 0, first = 0;
    float *row = malloc(MAX_DIM * sizeof *row); /* one line's numbers */
    int rc = row ? 0 : nomem();
    ssize_t got;
    while (!rc && (got = getline(&line, &linecap, f)) >= 0) {
        lineno++;
        if (memchr(line, '\0', (size_t)got)) {
            errorf("%s:%zu: a NUL byte: not a text file", path, lineno);
            rc = 2;
            break;
        }
        char *p = line;
        while (is_space((unsigned char)*p))
            p++;
        if (!*p)
            continue; /* blank lines are allowed */
        const char *w = p;
        while (*p && !is_space((unsigned char)*p))
            p++;
        size_t wlen = (size_t)(p - w), count = 0;
        for (;;) {
            while (is_space((unsigned char)*p))
                p++;
            if (!*p)
                break;
            char *num = p, *end;
            while (*p && !is_space((unsigned char)*p))
                p++;
            char save = *p;
            *p = '\0';
            errno = 0;
            float x = strtof(num, &end);
            if (end != p || !isfinite(x)) {
                errorf("%s:%zu: '%s' is not a finite number", path, lineno, num);
                rc = 2;
                break;
            }
            *p = save;
            if (count == MAX_DIM) {
                errorf("%s:%zu: more than %d numbers after the token", path, lineno, MAX_DIM);
                rc = 2;
                break;
            }
            row[count++] = x;
        }
        if (rc)
            break;
        if (!count) {
            errorf("%s:%zu: '%.*s' has no numbers after it", path, lineno, (int)wlen, w);
            rc = 2;
            break;
        }
        if (!v->d) {
            v->d = count;
            first = lineno;
        } else if (count != v->d) {
            errorf("%s:%zu: %zu numbers, but line %zu has %zu: every line needs the same count", path, lineno,
                   count, first, v->d);
            rc = 2;
            break;
        }
        if (vocab_push(v, w, wlen, &cap)) {
            rc = nomem();
            break;
        }
        memcpy(v->vec + (v->n - 1) * v->d, row, v->d * sizeof(float));
    }
    if (!rc && ferror(f)) {
        errorf("%s: read error", path);
        rc = 1;
    }
    free(row);
    free(line);
    fclose(f);
    if (!rc && !v->n) {
        errorf("%s: no vectors in it (want lines like: tennis 0.12 -0.5 ...)", path);
        rc = 2;
    }
    return rc;
}

/* A count from the file's __metadata__ (key), else the flag's value. 0, or 2 with the error printed. */
static int meta_count(const demo *d, const char *key, const char *flag, long flag_value, int flag_set, long *out)
{
    const char *m = attn_st_metadata(d->st, key);
    if (!m) {
        *out = flag_value;
        return 0;
    }
    if (parse_long(m, 1, MAX_DIM, out)) {
        errorf("%s: __metadata__ %s is '%s', not an integer in 1..%d", d->opt.weights, key, m, MAX_DIM);
        return 2;
    }
    if (flag_set && *out != flag_value) {
        errorf("%s: __metadata__ says %s %ld, but %s is %ld", d->opt.weights, key, *out, flag, flag_value);
        return 2;
    }
    return 0;
}

/* --weights FILE: the vocabulary, the embedding table and the layer. 0, or 2/1 with the error printed. */
static int load_weights(demo *d)
{
    const char *path = d->opt.weights;
    char err[256] = "";
    attn_status st = attn_st_open(&d->st, path, err, sizeof err);
    if (st != ATTN_OK) {
        if (*err && strstr(err, path))
            errorf("%s", err); /* the reason names the file already */
        else
            errorf("%s: %s", path, *err ? err : attn_strerror(st));
        return status_exit(st);
    }

    /* The vocabulary: one token per line; a final newline ends the last line rather than adding an empty one. */
    vocab *v = &d->voc;
    const char *text = attn_st_metadata(d->st, "vocab");
    if (!text || !*text) {
        errorf("%s: no vocabulary: __metadata__ needs \"vocab\", the tokens separated by newlines", path);
        return 2;
    }
    size_t cap = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (vocab_push(v, p, len && p[len - 1] == '\r' ? len - 1 : len, &cap))
            return nomem();
        p += len + (e != NULL);
    }

    attn_st_tensor t;
    if (attn_st_find(d->st, "embed", &t) != ATTN_OK) {
        errorf("%s: no tensor \"embed\" (the embedding table, [vocab][d_model])", path);
        return 2;
    }
    if (t.ndim != 2 || t.shape[0] != v->n || !t.shape[1]) {
        char shape[8 * 24] = "", *p = shape;
        for (size_t i = 0; i < t.ndim; i++)
            p += snprintf(p, sizeof shape - (size_t)(p - shape), "%s%zu", i ? ", " : "", t.shape[i]);
        errorf("%s: \"embed\" has shape [%s], but a %zu-token vocabulary needs [%zu, d_model]", path, shape, v->n,
               v->n);
        return 2;
    }
    if (t.shape[1] > MAX_DIM) {
        errorf("%s: \"embed\" is %zu wide; attn-demo takes d_model up to %d", path, t.shape[1], MAX_DIM);
        return 2;
    }
    v->d = t.shape[1];
    if (!(v->vec = malloc(t.numel * sizeof(float)))) /* numel = rows * d, both checked by attn_st_open */
        return nomem();
    if ((st = attn_st_read_f32(d->st, "embed", v->vec, t.numel)) != ATTN_OK) {
        errorf("%s: \"embed\" (%s): %s", path, t.dtype, attn_strerror(st));
        return status_exit(st);
    }

    long heads, kv_heads;
    int rc = meta_count(d, "n_heads", "--heads", d->opt.heads_set ? d->opt.heads : 2, d->opt.heads_set, &heads);
    if (!rc)
        rc = meta_count(d, "n_kv_heads", "--kv-heads", d->opt.kv_heads_set ? d->opt.kv_heads : heads,
                        d->opt.kv_heads_set, &kv_heads);
    if (rc)
        return rc;
    if (heads % kv_heads) {
        errorf("%s: %ld KV heads do not divide %ld heads", path, kv_heads, heads);
        return 2;
    }

    /* PyTorch MultiheadAttention's names; the biases are optional, the projections are not. */
    attn_layer_names names = {.in_proj_weight = "in_proj_weight", .wo = "out_proj.weight"};
    static const char *const need[] = {"in_proj_weight", "out_proj.weight"};
    for (size_t i = 0; i < 2; i++)
        if (attn_st_find(d->st, need[i], &t) != ATTN_OK) {
            errorf("%s: no tensor \"%s\" (PyTorch MultiheadAttention's layout)", path, need[i]);
            return 2;
        }
    if (attn_st_find(d->st, "in_proj_bias", &t) == ATTN_OK)
        names.in_proj_bias = "in_proj_bias";
    if (attn_st_find(d->st, "out_proj.bias", &t) == ATTN_OK)
        names.bo = "out_proj.bias";
    *err = '\0';
    st = attn_layer_load_safetensors(&d->lw, d->st, &names, (size_t)heads, (size_t)kv_heads, err, sizeof err);
    if (st != ATTN_OK) {
        errorf("%s: %s", path, *err ? err : attn_strerror(st));
        return status_exit(st);
    }
    d->layer = d->lw.layer;
    if (d->layer.d_model != v->d) {
        errorf("%s: in_proj_weight takes d_model %zu, but \"embed\" vectors have %zu values", path,
               d->layer.d_model, v->d);
        return 2;
    }
    return 0;
}

/* The seeded layer: weights uniform in +-1/sqrt(fan_in) (PyTorch nn.Linear), biases 0. 0, or 2/1 when not. */
static int seeded_layer(demo *d, size_t dm)
{
    const options *o = &d->opt;
    size_t h = (size_t)(o->heads_set ? o->heads : dm % 2 ? 1 : 2);
    size_t hk = o->kv_heads_set ? (size_t)o->kv_heads : h;
    if (dm % h) {
        errorf("%zu heads do not divide d_model %zu (see --heads, --d-model)", h, dm);
        return 2;
    }
    if (h % hk) {
        errorf("--kv-heads %zu does not divide %zu heads", hk, h);
        return 2;
    }
    size_t hd = dm / h, qw = h * hd, kw = hk * hd;
    size_t counts[4] = {qw * dm, kw * dm, kw * dm, dm * qw}; /* wq, wk, wv, wo: dm <= 4096, no overflow */
    if (!(d->wbuf = malloc((counts[0] + counts[1] + counts[2] + counts[3]) * sizeof(float))))
        return nomem();
    const float *part[4];
    float *p = d->wbuf;
    uint64_t s = o->seed;
    for (size_t m = 0; m < 4; m++) {
        float bound = (float)(1.0 / sqrt((double)(m < 3 ? dm : qw))); /* fan_in */
        part[m] = p;
        for (size_t i = 0; i < counts[m]; i++)
            *p++ = ((float)(splitmix64(&s) >> 40) * (2.0f / 16777216.0f) - 1.0f) * bound;
    }
    d->layer = (attn_layer){.d_model = dm, .n_heads = h, .n_kv_heads = hk, .head_dim = hd,
                            .wq = part[0], .wk = part[1], .wv = part[2], .wo = part[3]};
    return 0;
}

/* Fills d->x from the vocabulary or the seeds. 0, or 2/1 with the error printed. */
static int embed(demo *d)
{
    const size_t dm = d->d_model;
    if (!(d->x = malloc(d->n * dm * sizeof(float))))
        return nomem();
    if (!d->voc.n) {
        for (size_t i = 0; i < d->n; i++)
            seeded_vector(d->tok[i], d->x + i * dm, dm);
        return 0;
    }
    const char *src = d->opt.weights ? d->opt.weights : d->opt.vectors;
    size_t unk = vocab_find(&d->voc, "<unk>"), n_unk = 0;
    for (size_t i = 0; i < d->n; i++) {
        size_t k = vocab_find(&d->voc, d->tok[i]);
        if (k == SIZE_MAX) {
            if (unk == SIZE_MAX) {
                errorf("'%s' is not in the vocabulary of %s, which has no \"<unk>\" entry", d->tok[i], src);
                return 2;
            }
            if (!n_unk++)
                printf("not in the vocabulary, embedded as <unk>:");
            printf(" %s", d->tok[i]);
            k = unk;
        }
        const float *row = d->voc.vec + k * dm;
        for (size_t j = 0; j < dm; j++)
            if (!isfinite(row[j])) {
                errorf("%s: the vector of '%s' holds %g", src, d->voc.word[k], (double)row[j]);
                return 2;
            }
        memcpy(d->x + i * dm, row, dm * sizeof(float));
    }
    if (n_unk)
        printf("\n");
    return 0;
}

/* ---- output -------------------------------------------------------------------------------------------------- */

static int edge_cmp(const void *a, const void *b)
{
    const edge *x = a, *y = b;
    if (x->p != y->p)
        return x->p < y->p ? 1 : -1;
    if (x->i != y->i)
        return x->i < y->i ? -1 : 1;
    return (x->j > y->j) - (x->j < y->j);
}

/* One head's table (rows: attending tokens; columns: attended tokens; a sum column) and its strongest edges. */
static void print_head(const demo *d, size_t h, edge *edges)
{
    const size_t n = d->n;
    const float *P = d->probs + h * n * n;
    size_t lw = 0;
    for (size_t i = 0; i < n; i++) {
        size_t w = text_width(d->label[i]);
        lw = w > lw ? w : lw;
    }
    size_t cw = lw < 5 ? 5 : lw > 10 ? 10 : lw, rw = lw < 5 ? 5 : lw > 16 ? 16 : lw;
    printf("\nhead %zu\n  %3s  ", h, "#");
    put_field("token", rw, 0);
    for (size_t j = 0; j < n; j++) {
        printf("  ");
        put_field(d->label[j], cw, 1);
    }
    printf(" |   sum\n");
    for (size_t i = 0; i < n; i++) {
        double sum = 0;
        printf("  %3zu  ", i);
        put_field(d->label[i], rw, 0);
        for (size_t j = 0; j < n; j++) {
            sum += P[i * n + j];
            if (d->opt.causal && j > i)
                printf("  %*s", (int)cw, "-"); /* masked: i cannot see j */
            else
                printf("  %*.3f", (int)cw, (double)P[i * n + j]);
        }
        printf(" | %5.3f\n", sum);
    }
    if (!d->opt.top)
        return;
    size_t ne = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (P[i * n + j] > 0)
                edges[ne++] = (edge){P[i * n + j], (uint32_t)i, (uint32_t)j};
    qsort(edges, ne, sizeof *edges, edge_cmp);
    if ((size_t)d->opt.top < ne)
        ne = (size_t)d->opt.top;
    /* "A -> B p" items three spaces apart (any separator could be a token), wrapped before column 100. */
    size_t col = 12;
    printf("  strongest:");
    for (size_t e = 0; e < ne; e++) {
        const char *a = d->label[edges[e].i], *b = d->label[edges[e].j];
        size_t w = text_width(a) + text_width(b) + 10;
        if (e && col + 3 + w > 100) {
            printf("\n%12s", "");
            col = 12;
        }
        printf("%s%s -> %s %.3f", e && col > 12 ? "   " : " ", a, b, (double)edges[e].p);
        col += (e && col > 12 ? 3 : 1) + w;
    }
    printf("\n");
}

/* s inside a DOT string (quotes and backslashes escaped), cut to max code points and "..." when longer. */
static void dot_text(FILE *f, const char *s, size_t max)
{
    size_t cps = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c & 0xc0) != 0x80 && cps++ == max) {
            fputs("...", f);
            break;
        }
        if (c == '"' || c == '\\')
            fputc('\\', f);
        fputc(c, f);
    }
}

/* The attention graph in DOT, one cluster per head. Each token is drawn twice, in sentence order: in the top row
 * as the attending token (node h<head>_q<position>), in the bottom row as the attended one (h<head>_k<position>);
 * one row with edges both ways was unreadable. An edge A -> B for each weight p >= --min-weight, labelled p, with
 * penwidth 0.5 + 6p and the integer layout weight round(100p) (dot takes integers only); invisible edges keep the
 * order. 0, or 1 when writing failed. */
static int write_dot(const demo *d, FILE *f)
{
    static const char *const color[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                        "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
    const size_t n = d->n, H = d->layer.n_heads;
    fprintf(f, "digraph attention {\n"
               "    // attn-demo: edge A -> B = token A (top row) attends to token B (bottom row) with weight p\n"
               "    graph [fontname=\"Helvetica\", labelloc=t, nodesep=0.4, ranksep=1.0, label=\"\\\"");
    dot_text(f, d->sentence, 60);
    fprintf(f, "\\\"\\ntop row attends to bottom row (weights below %g left out)\"];\n"
               "    node [shape=box, style=\"rounded,filled\", fillcolor=\"#f2f2f2\", fontname=\"Helvetica\"];\n"
               "    edge [fontname=\"Helvetica\", fontsize=10, arrowsize=0.7];\n",
            d->opt.min_weight);
    for (size_t h = 0; h < H; h++) {
        if (d->opt.head >= 0 && (size_t)d->opt.head != h)
            continue;
        const float *P = d->probs + h * n * n;
        const char *c = color[h % (sizeof color / sizeof color[0])];
        fprintf(f, "    subgraph cluster_h%zu {\n        label=\"head %zu\"; color=\"%s\"; fontcolor=\"%s\";\n", h, h,
                c, c);
        for (int row = 0; row < 2; row++) {
            const char qk = row ? 'k' : 'q';
            fprintf(f, "        { rank=same;");
            for (size_t i = 0; i < n; i++) {
                fprintf(f, " h%zu_%c%zu [label=\"", h, qk, i);
                dot_text(f, d->label[i], 40);
                fprintf(f, "\"];");
            }
            for (size_t i = 0; i + 1 < n; i++)
                fprintf(f, " h%zu_%c%zu -> h%zu_%c%zu [style=invis];", h, qk, i, h, qk, i + 1);
            fprintf(f, " }\n");
        }
        for (size_t i = 0; i < n; i++)
            fprintf(f, "        h%zu_q%zu -> h%zu_k%zu [style=invis, weight=1000];\n", h, i, h, i);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < n; j++) {
                double p = P[i * n + j];
                if (p > 0 && p >= d->opt.min_weight)
                    fprintf(f, "        h%zu_q%zu -> h%zu_k%zu [label=\"%.2f\", penwidth=%.2f, weight=%d, "
                               "color=\"%s\", fontcolor=\"%s\"];\n",
                            h, i, h, j, p, 0.5 + 6 * p, (int)lround(100 * p), c, c);
            }
        fprintf(f, "    }\n");
    }
    fprintf(f, "}\n");
    return ferror(f) ? 1 : 0;
}

/* --dot FILE. 0, or 1 with the error printed. */
static int save_dot(const demo *d)
{
    FILE *f = fopen(d->opt.dot, "w");
    if (!f) {
        errorf("%s: %s", d->opt.dot, strerror(errno));
        return 1;
    }
    int bad = write_dot(d, f);
    if (fclose(f) || bad) {
        errorf("%s: write error", d->opt.dot);
        return 1;
    }
    return 0;
}

/* The executable name on $PATH (an empty entry is the current directory), or NULL. Allocated. */
static char *find_in_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    for (const char *p = path;;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p), n = len + strlen(name) + 3;
        char *full = malloc(n);
        struct stat sb;
        if (!full)
            return NULL;
        snprintf(full, n, "%.*s%s%s", (int)(len ? len : 1), len ? p : ".", "/", name);
        if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode) && access(full, X_OK) == 0)
            return full;
        free(full);
        if (!e)
            return NULL;
        p = e + 1;
    }
}

/* --png FILE: the graph piped into `dot -Tpng -o FILE`. 0, or 1 with the error printed. */
static int render_png(const demo *d)
{
    char *dot = find_in_path("dot");
    if (!dot) {
        errorf("--png needs Graphviz's dot, which is not on PATH: install it (Debian: apt-get install graphviz)");
        return 1;
    }
    int fds[2], rc = 1, e;
    if (pipe(fds)) {
        errorf("pipe: %s", strerror(errno));
        free(dot);
        return 1;
    }
    posix_spawn_file_actions_t fa;
    pid_t pid;
    char *argv[] = {"dot", "-Tpng", "-o", (char *)d->opt.png, NULL};
    if ((e = posix_spawn_file_actions_init(&fa)) == 0) {
        if (!(e = posix_spawn_file_actions_adddup2(&fa, fds[0], 0)) &&
            !(e = posix_spawn_file_actions_addclose(&fa, fds[0])) &&
            !(e = posix_spawn_file_actions_addclose(&fa, fds[1])))
            e = posix_spawn(&pid, dot, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
    }
    close(fds[0]);
    if (e) {
        errorf("cannot run %s: %s", dot, strerror(e));
        close(fds[1]);
        free(dot);
        return 1;
    }
    /* A dot that dies early must not kill us with SIGPIPE: the write fails instead and its status says why. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    FILE *f = fdopen(fds[1], "w");
    int bad = f ? write_dot(d, f) : 1;
    if (f)
        bad |= fclose(f) != 0;
    else
        close(fds[1]);
    sigaction(SIGPIPE, &old, NULL);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            errorf("waitpid (dot): %s", strerror(errno));
            free(dot);
            return 1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        errorf("%s -Tpng -o %s exited with status %d", dot, d->opt.png, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        errorf("%s -Tpng -o %s was killed by signal %d", dot, d->opt.png, WTERMSIG(status));
    else if (bad)
        errorf("writing the graph to %s failed", dot);
    else
        rc = 0;
    free(dot);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------------------------- */

static void demo_free(demo *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->tok[i]);
        free(d->label[i]);
    }
    free(d->tok);
    free(d->label);
    free(d->sentence);
    vocab_free(&d->voc);
    attn_layer_weights_free(&d->lw);
    attn_st_close(d->st);
    free(d->wbuf);
    free(d->x);
    free(d->y);
    free(d->probs);
    attn_ctx_destroy(d->ctx);
}

static int run(demo *d)
{
    const options *o = &d->opt;
    int rc = tokenize(d);
    if (!rc && o->weights)
        rc = load_weights(d);
    else if (!rc && o->vectors)
        rc = load_vectors(d);
    if (rc)
        return rc;
    d->d_model = d->voc.n ? d->voc.d : (size_t)o->d_model;
    if (o->d_model_set && (size_t)o->d_model != d->d_model) {
        errorf("--d-model %ld, but the vectors of %s have %zu values", o->d_model,
               o->weights ? o->weights : o->vectors, d->d_model);
        return 2;
    }
    if (!o->weights && (rc = seeded_layer(d, d->d_model)) != 0)
        return rc;
    const attn_layer *L = &d->layer;
    if (o->head >= 0 && (size_t)o->head >= L->n_heads) {
        errorf("--head %ld, but the layer has %zu head%s (0..%zu)", o->head, L->n_heads, L->n_heads == 1 ? "" : "s",
               L->n_heads - 1);
        return 2;
    }

    attn_status st = attn_ctx_create(&d->ctx, NULL);
    if (st != ATTN_OK) {
        errorf("attn_ctx_create: %s (check the ATTN_* environment variables)", attn_strerror(st));
        return 1;
    }
    printf("attn-demo: %zu tokens:", d->n);
    for (size_t i = 0; i < d->n; i++)
        printf(" [%s]", d->tok[i]);
    printf(" (attn %s, isa %s, %d thread%s)\n", attn_version(), attn_isa_name(attn_ctx_isa(d->ctx)),
           attn_ctx_threads(d->ctx), attn_ctx_threads(d->ctx) == 1 ? "" : "s");
    if ((rc = embed(d)) != 0)
        return rc;
    const size_t hk = L->n_kv_heads ? L->n_kv_heads : L->n_heads;
    const char *mask = o->causal ? "causal mask" : "no mask";
    if (o->weights) {
        printf("embeddings: d_model %zu, rows of \"embed\" in %s (%zu-token vocabulary)\n", d->d_model, o->weights,
               d->voc.n);
        printf("layer: %zu heads (%zu KV), head_dim %zu, from %s (biases: %s), %s\n", L->n_heads, hk, L->head_dim,
               o->weights, L->bq && L->bo ? "in_proj, out_proj" : L->bq ? "in_proj" : L->bo ? "out_proj" : "none",
               mask);
    } else {
        if (o->vectors)
            printf("embeddings: d_model %zu, from %s (%zu tokens)\n", d->d_model, o->vectors, d->voc.n);
        else
            printf("embeddings: d_model %zu, seeded by each lowercased token (FNV-1a, splitmix64, normal(0, 1))\n",
                   d->d_model);
        printf("layer: %zu heads (%zu KV), head_dim %zu, weights uniform +-1/sqrt(fan_in) from seed %llu, biases 0, "
               "%s\n",
               L->n_heads, hk, L->head_dim, (unsigned long long)o->seed, mask);
    }

    const size_t n = d->n, H = L->n_heads, yw = L->wo ? L->d_model : H * L->head_dim;
    d->y = malloc(n * yw * sizeof(float));
    d->probs = malloc(H * n * n * sizeof(float)); /* H <= 4096, n <= 512: fits */
    if (!d->y || !d->probs)
        return nomem();
    st = attn_self_attention(d->ctx, L, d->x, n, o->causal ? ATTN_MASK_CAUSAL : ATTN_MASK_NONE, d->y, d->probs);
    if (st != ATTN_OK) {
        errorf("attn_self_attention: %s", attn_strerror(st));
        return 1;
    }
    for (size_t i = 0; i < H * n * n; i++)
        if (!isfinite(d->probs[i])) {
            errorf("the attention weights are not finite: the embeddings or weights are too large or not finite");
            return 2;
        }
    printf("\nEach table: row A = the attending token (query), column B = the token it attends to (key), entry =\n"
           "its softmax weight, so every row sums to 1.%s Edge A -> B p: A attends to B with weight p.\n",
           o->causal ? "\n- marks a key the causal mask hides." : "");

    edge *edges = o->top ? malloc(n * n * sizeof *edges) : NULL;
    if (o->top && !edges)
        return nomem();
    for (size_t h = 0; h < H; h++)
        if (o->head < 0 || (size_t)o->head == h)
            print_head(d, h, edges);
    free(edges);
    if (fflush(stdout) || ferror(stdout)) {
        errorf("writing to stdout failed");
        return 1;
    }
    if (o->dot && (rc = save_dot(d)) != 0)
        return rc;
    if (o->png)
        rc = render_png(d);
    return rc;
}

int main(int argc, char **argv)
{
    demo d = {.opt = {.d_model = 16, .heads = 2, .head = -1, .top = 5, .seed = 1, .min_weight = 0.1}};
    int rc = parse_args(argc, argv, &d);
    if (rc == 0)
        rc = run(&d);
    demo_free(&d);
    return rc < 0 ? 0 : rc;
}
