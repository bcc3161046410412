/* The smallest embedding of attn: one causal attention call over "I love tennis" (3 tokens, 1 head, d = 4), with
 * the attention weights printed as the rows of a directed graph (each row sums to 1). */
#include <stdio.h>

#include "attn.h"

int main(void)
{
    static const float q[3][4] = {{1, 0, 1, 0}, {0, 1, 0, 1}, {1, 1, 0, 0}};
    static const float k[3][4] = {{1, 0, 0, 1}, {0, 1, 1, 0}, {1, 1, 1, 1}};
    static const float v[3][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}};
    static const char *const tok[3] = {"I", "love", "tennis"};
    float out[3][4], probs[3][3];

    attn_ctx *ctx;
    attn_status st = attn_ctx_create(&ctx, NULL); /* best ISA of this CPU, ATTN_* env honoured */
    if (st != ATTN_OK) {
        fprintf(stderr, "attn_ctx_create: %s\n", attn_strerror(st));
        return 1;
    }
    attn_sdpa_desc d = {.batch = 1, .n_heads = 1, .q_len = 3, .kv_len = 3, .head_dim = 4, .mask = ATTN_MASK_CAUSAL};
    st = attn_sdpa(ctx, &d, &q[0][0], &k[0][0], &v[0][0], &out[0][0], &probs[0][0]);
    if (st != ATTN_OK) {
        fprintf(stderr, "attn_sdpa: %s\n", attn_strerror(st));
        attn_ctx_destroy(ctx);
        return 1;
    }
    printf("isa %s, %d threads\n", attn_isa_name(attn_ctx_isa(ctx)), attn_ctx_threads(ctx));
    for (int i = 0; i < 3; i++)
        printf("%-7s attends: I %.3f  love %.3f  tennis %.3f  -> out [%.3f %.3f %.3f %.3f]\n", tok[i], probs[i][0],
               probs[i][1], probs[i][2], out[i][0], out[i][1], out[i][2], out[i][3]);
    attn_ctx_destroy(ctx);
    return 0;
}
