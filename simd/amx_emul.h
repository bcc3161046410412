/* AMX tile instructions as C, for kern_amx.c built with -DATTN_AMX_EMULATE (configure --enable-amx-emulation): tests
 * run the AMX kernels' layouts, strides and tile shapes on a CPU without AMX. Written from the pseudo-code of
 * Intel's SDM (LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TILERELEASE, TDPBF16PS): eight tiles per thread, each
 * up to 16 rows of 64 bytes; TDPBF16PS adds both products of each bfloat16 pair to the fp32 sum in turn, with
 * bfloat16 denormals read as zero and denormal results flushed to zero. A use the hardware faults on (no
 * configuration, shapes that do not fit) traps here too: emulation builds are for tests only. */
#ifndef ATTN_AMX_EMUL_H
#define ATTN_AMX_EMUL_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#undef _tile_loadconfig
#undef _tile_release
#undef _tile_zero
#undef _tile_loadd
#undef _tile_stored
#undef _tile_dpbf16ps

typedef struct attn_emu_tiles {
    int configured;
    int rows[8], colsb[8];
    uint8_t t[8][16][64];
} attn_emu_tiles;
static _Thread_local attn_emu_tiles attn_emu;

#define ATTN_EMU_CHECK(ok)                                                                                         \
    do {                                                                                                           \
        if (!(ok))                                                                                                 \
            __builtin_trap();                                                                                      \
    } while (0)

static inline void attn_emu_loadconfig(const void *cfg)
{
    const uint8_t *c = cfg;
    ATTN_EMU_CHECK(c[0] == 1); /* palette 1 */
    memset(&attn_emu, 0, sizeof attn_emu);
    for (int i = 0; i < 8; i++) {
        uint16_t colsb;
        memcpy(&colsb, c + 16 + 2 * i, 2);
        attn_emu.colsb[i] = colsb;
        attn_emu.rows[i] = c[48 + i];
        ATTN_EMU_CHECK(colsb <= 64 && colsb % 4 == 0 && c[48 + i] <= 16);
    }
    attn_emu.configured = 1;
}

static inline void attn_emu_release(void) { memset(&attn_emu, 0, sizeof attn_emu); }

static inline void attn_emu_zero(int t)
{
    ATTN_EMU_CHECK(attn_emu.configured);
    memset(attn_emu.t[t], 0, sizeof attn_emu.t[t]);
}

static inline void attn_emu_loadd(int t, const void *base, long stride)
{
    ATTN_EMU_CHECK(attn_emu.configured);
    memset(attn_emu.t[t], 0, sizeof attn_emu.t[t]);
    for (int r = 0; r < attn_emu.rows[t]; r++)
        memcpy(attn_emu.t[t][r], (const uint8_t *)base + r * stride, (size_t)attn_emu.colsb[t]);
}

static inline void attn_emu_stored(int t, void *base, long stride)
{
    ATTN_EMU_CHECK(attn_emu.configured);
    for (int r = 0; r < attn_emu.rows[t]; r++)
        memcpy((uint8_t *)base + r * stride, attn_emu.t[t][r], (size_t)attn_emu.colsb[t]);
}

static inline float attn_emu_bf16(const uint8_t *p) /* denormals read as zero */
{
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    if ((u & 0x7f800000u) == 0)
        u &= 0x80000000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float attn_emu_ftz(float x) { return fpclassify(x) == FP_SUBNORMAL ? copysignf(0.0f, x) : x; }

static inline void attn_emu_dpbf16ps(int c, int a, int b)
{
    ATTN_EMU_CHECK(attn_emu.configured && attn_emu.rows[a] == attn_emu.rows[c] &&
                   attn_emu.colsb[a] == 4 * attn_emu.rows[b] && attn_emu.colsb[b] == attn_emu.colsb[c]);
    for (int m = 0; m < attn_emu.rows[c]; m++)
        for (int n = 0; n < attn_emu.colsb[c] / 4; n++) {
            float acc;
            memcpy(&acc, &attn_emu.t[c][m][4 * n], 4);
            for (int k = 0; k < attn_emu.colsb[a] / 4; k++) {
                acc = attn_emu_ftz(acc + attn_emu_bf16(&attn_emu.t[a][m][4 * k]) *
                                             attn_emu_bf16(&attn_emu.t[b][k][4 * n]));
                acc = attn_emu_ftz(acc + attn_emu_bf16(&attn_emu.t[a][m][4 * k + 2]) *
                                             attn_emu_bf16(&attn_emu.t[b][k][4 * n + 2]));
            }
            memcpy(&attn_emu.t[c][m][4 * n], &acc, 4);
        }
}

#define _tile_loadconfig(cfg) attn_emu_loadconfig(cfg)
#define _tile_release() attn_emu_release()
#define _tile_zero(t) attn_emu_zero(t)
#define _tile_loadd(t, base, stride) attn_emu_loadd((t), (base), (long)(stride))
#define _tile_stored(t, base, stride) attn_emu_stored((t), (base), (long)(stride))
#define _tile_dpbf16ps(c, a, b) attn_emu_dpbf16ps((c), (a), (b))

#endif
