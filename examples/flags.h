/* Command-line helpers the example programs share (each example is one .c file plus this header). */
#ifndef ATTN_EXAMPLES_FLAGS_H
#define ATTN_EXAMPLES_FLAGS_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* "--flag V" or "--flag=V": the value, or NULL with *i unchanged when the argument is not this flag. */
static inline const char *flag_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* s as a whole decimal number in [lo, hi]: 0 and *out, or -1. */
static inline int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi)
        return -1;
    *out = x;
    return 0;
}

#endif
