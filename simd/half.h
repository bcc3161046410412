/* fp32 <-> IEEE half and bfloat16 in plain C, rounding to nearest even: the KV cache's storage conversions (engine)
 * and the reference for the scalar kernels and the vector tails (simd). */
#ifndef ATTN_HALF_H
#define ATTN_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t attn_f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float attn_u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float attn_bf16_to_f32(uint16_t h) { return attn_u2f((uint32_t)h << 16); }

static inline uint16_t attn_f32_to_bf16(float f)
{
    uint32_t u = attn_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN, never round it to infinity */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float attn_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* inf, NaN */
        return attn_u2f(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero, subnormal: man * 2^-24 */
        const float f = (float)man * (1.0f / 16777216.0f);
        return sign ? -f : f;
    }
    return attn_u2f(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t attn_f32_to_f16(float f)
{
    const uint32_t u = attn_f2u(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below the smallest normal half: a subnormal multiple of 2^-24, rounded to even */
        const float m = attn_u2f(a) * 16777216.0f; /* exact: a power-of-two scaling */
        uint32_t q = (uint32_t)m;
        const float r = m - (float)q;
        if (r > 0.5f || (r == 0.5f && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    /* Normal: drop 13 mantissa bits with round-to-nearest-even; a carry rolls into the exponent correctly. */
    const uint32_t b = a - 0x38000000u; /* rebias the exponent from 127 to 15 */
    return (uint16_t)(sign | ((b + 0xfffu + ((b >> 13) & 1u)) >> 13));
}

#endif
