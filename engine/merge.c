/* attn_merge: two partial attentions over disjoint key sets, combined through their log-sum-exps (attn.h). */
#include <math.h>
#include <string.h>

#include "attn.h"

/* o[0..n) = ca * a + cb * b, 16 at a time through a local block: o may be a or b (same row), and fixed-length
 * loops without aliasing let the baseline build vectorise. */
static void attn_merge_row(float *o, const float *a, float ca, const float *b, float cb, size_t n)
{
    size_t c = 0;
    for (; c + 16 <= n; c += 16) {
        float t[16];
        for (int i = 0; i < 16; i++)
            t[i] = ca * a[c + i] + cb * b[c + i];
        memcpy(o + c, t, sizeof t);
    }
    for (; c < n; c++)
        o[c] = ca * a[c] + cb * b[c];
}

attn_status attn_merge(size_t n_rows, size_t dv, const float *o_a, const float *lse_a, const float *o_b,
                       const float *lse_b, float *o, float *lse)
{
    if (n_rows == 0)
        return ATTN_OK;
    if (!dv || !o_a || !lse_a || !o_b || !lse_b || !o || !lse)
        return ATTN_EINVAL;
    for (size_t r = 0; r < n_rows; r++) {
        const float la = lse_a[r], lb = lse_b[r];
        const float *ra = o_a + r * dv, *rb = o_b + r * dv;
        float *ro = o + r * dv;
        if (la == -INFINITY && lb == -INFINITY) {
            memset(ro, 0, dv * sizeof *ro);
            lse[r] = -INFINITY;
        } else if (la == -INFINITY) { /* a contributes nothing: not even 0 * a NaN it might hold */
            if (ro != rb)
                memcpy(ro, rb, dv * sizeof *ro);
            lse[r] = lb;
        } else if (lb == -INFINITY) {
            if (ro != ra)
                memcpy(ro, ra, dv * sizeof *ro);
            lse[r] = la;
        } else {
            /* Relative to the larger lse: one weight is 1, the other exp(-|la - lb|) <= 1 (a NaN stays NaN). */
            const float m = la > lb ? la : lb, wa = expf(la - m), wb = expf(lb - m), s = wa + wb;
            attn_merge_row(ro, ra, wa / s, rb, wb / s, dv);
            lse[r] = m + logf(s);
        }
    }
    return ATTN_OK;
}
