/* The kernel variant registry: every kernel table with its cache blocking and the CPUs it is tuned for. It drives
 * dispatch, ATTN_ISA and ATTN_KERNELS parsing, attn_ctx_kernels and the lists of tests and bench. Adding a variant
 * is one kernel file (or none, when only the cache blocking differs) and one line here. Baseline flags only. */
#include <string.h>
#include <strings.h>

#include "kernels.h"

#if ATTN_HAVE_AVX512
/* AMD family 19h with AVX-512: Zen 4, whose 512-bit FMAs are two 256-bit halves (one zmm FMA per cycle). */
static int attn_is_zen4(const attn_cpu_info *ci) { return ci->vendor == ATTN_VENDOR_AMD && ci->family == 0x19; }

/* AMD family 1Ah and later: Zen 5, two full 512-bit FMA pipes. */
static int attn_is_zen5(const attn_cpu_info *ci) { return ci->vendor == ATTN_VENDOR_AMD && ci->family >= 0x1a; }

/* Intel Golden Cove-class server cores (Sapphire/Emerald Rapids and later): two 512-bit FMA ports, 2 MiB L2.
 * Hypervisors may mask the model number (one reports family 6 model 167, a client part), so decide by what only
 * those server cores have: AMX or AVX512-FP16, or an L2 of at least 2 MiB per core with AVX-512. */
static int attn_is_spr(const attn_cpu_info *ci)
{
    return ci->vendor == ATTN_VENDOR_INTEL &&
           ((ci->flags & (ATTN_CPU_AMX | ATTN_CPU_AVX512_FP16)) || ci->l2_kib >= 2048);
}

#endif

#define ATTN_SPLIT 1024

static const attn_variant attn_variants[] = {
    {ATTN_ISA_SCALAR, "scalar/generic", &attn_kernels_scalar, NULL, 256, 256, ATTN_SPLIT,
     "the reference; blocking of the SIMD sets"},
#if ATTN_HAVE_AVX2
    {ATTN_ISA_AVX2, "avx2/generic", &attn_kernels_avx2, NULL, 256, 256, ATTN_SPLIT,
     "3x4 ymm scores/P.V, 4x2 decode P.V: interleaved A/B on Zen 4, 1 thread"},
#endif
#if ATTN_HAVE_AVX512
    {ATTN_ISA_AVX512, "avx512/generic", &attn_kernels_avx512, NULL, 256, 256, ATTN_SPLIT,
     "6x4 zmm scores/P.V, 2x8 decode P.V, 256x256 blocks: interleaved A/B on Zen 4, 1 thread"},
    {ATTN_ISA_AVX512, "avx512/zen4", &attn_kernels_avx512, attn_is_zen4, 256, 256, ATTN_SPLIT,
     "the generic table and blocks: tuned on Zen 4 (attn-bench, 1 thread)"},
    {ATTN_ISA_AVX512, "avx512/zen5", &attn_kernels_avx512, attn_is_zen5, 256, 256, ATTN_SPLIT,
     "attn-bench --tune on Zen 5 (EPYC, 1 thread, 2026-12-02): 6x4 beat 8x3, 12x2, 7x3 and 4x6 on cold 256x256 "
     "tiles; no block size beat 256x256 by more than the noise (+1.6% at 384x512)"},
    {ATTN_ISA_AVX512, "avx512/spr", &attn_kernels_avx512, attn_is_spr, 512, 256, ATTN_SPLIT,
     "unmeasured, from published figures: two 512-bit FMA ports like Zen 5 (same register blocking), and a 2 MiB "
     "L2 holds 512-row blocks (1.3 MiB of q, s, o and a K/V tile), halving the L3 reads of K/V per FMA"},
#endif
#if ATTN_HAVE_AVX512BF16
    {ATTN_ISA_AVX512_BF16, "avx512bf16/generic", &attn_kernels_avx512bf16, NULL, 256, 256, ATTN_SPLIT,
     "the AVX-512 table and blocks, with vdpbf16ps kernels (6x4 zmm) for ATTN_MATH_BF16"},
    {ATTN_ISA_AVX512_BF16, "avx512bf16/zen4", &attn_kernels_avx512bf16, attn_is_zen4, 256, 256, ATTN_SPLIT,
     "the generic table and blocks: vdpbf16ps issues at the FMA rate on Zen 4 (unmeasured here)"},
    {ATTN_ISA_AVX512_BF16, "avx512bf16/zen5", &attn_kernels_avx512bf16, attn_is_zen5, 256, 256, ATTN_SPLIT,
     "the generic table and blocks: on Zen 5 (EPYC, 1 thread, 2026-12-02) MATH_BF16 P2 ran 1.69x fp32"},
    {ATTN_ISA_AVX512_BF16, "avx512bf16/spr", &attn_kernels_avx512, attn_is_spr, 512, 256, ATTN_SPLIT,
     "unmeasured: vdpbf16ps runs at 0.55x the fp32 FMA rate on Sapphire Rapids, so MATH_BF16 rounds to bfloat16 "
     "and runs the fp32 AVX-512 kernels (the AVX-512 table has no bfloat16 dot-product slots); avx512/spr blocks"},
#endif
#if ATTN_HAVE_AMX
    {ATTN_ISA_AMX, "amx/generic", &attn_kernels_amx, NULL, 512, 256, ATTN_SPLIT,
     "unmeasured (written against Intel's documentation, checked under emulation): the AVX-512 table with the "
     "avx512/spr blocks for ATTN_MATH_F32; AMX-BF16 tiles, 32 rows x 32 keys or columns, for ATTN_MATH_BF16"},
#endif
#if ATTN_HAVE_NEON
    {ATTN_ISA_NEON, "neon/generic", &attn_kernels_neon, NULL, 256, 256, ATTN_SPLIT,
     "8x2 q-register scores, 4x4 P.V: checked under qemu, not timed on hardware"},
#endif
#if ATTN_HAVE_NEONBF16
    {ATTN_ISA_NEON_BF16, "neonbf16/generic", &attn_kernels_neonbf16, NULL, 256, 256, ATTN_SPLIT,
     "the NEON table and blocks, with BFDOT kernels for ATTN_MATH_BF16: checked under qemu, not timed on hardware"},
#endif
};

#define ATTN_N_VARIANTS (sizeof attn_variants / sizeof attn_variants[0])

size_t attn_variant_count(void) { return ATTN_N_VARIANTS; }

const attn_variant *attn_variant_at(size_t i) { return i < ATTN_N_VARIANTS ? &attn_variants[i] : NULL; }

int attn_level_runs(attn_isa level)
{
    const unsigned f = attn_cpu_flags();
    int built = 0;
    for (size_t i = 0; i < ATTN_N_VARIANTS; i++)
        built |= attn_variants[i].level == level;
    switch (level) {
    case ATTN_ISA_SCALAR: return built;
    case ATTN_ISA_AVX2: return built && (f & ATTN_CPU_AVX2);
    case ATTN_ISA_AVX512: return built && (f & ATTN_CPU_AVX512);
    case ATTN_ISA_AVX512_BF16: return built && (f & ATTN_CPU_AVX512) && (f & ATTN_CPU_AVX512_BF16);
    case ATTN_ISA_AMX:
        return built && (f & ATTN_CPU_AVX512) && (f & ATTN_CPU_AVX512_BF16) && (f & ATTN_CPU_AMX);
    case ATTN_ISA_NEON: return built && (f & ATTN_CPU_NEON);
    case ATTN_ISA_NEON_BF16: return built && (f & ATTN_CPU_NEON) && (f & ATTN_CPU_NEON_BF16);
    default: return 0;
    }
}

const attn_variant *attn_variant_for(attn_isa level, const attn_cpu_info *ci)
{
    const attn_variant *generic = NULL;
    for (size_t i = 0; i < ATTN_N_VARIANTS; i++) {
        const attn_variant *v = &attn_variants[i];
        if (v->level != level)
            continue;
        if (v->prefer && v->prefer(ci))
            return v;
        if (!generic)
            generic = v;
    }
    return generic;
}

const attn_variant *attn_variant_pick(attn_isa level)
{
    return attn_level_runs(level) ? attn_variant_for(level, attn_cpu_get()) : NULL;
}

const attn_variant *attn_variant_find(const char *name, attn_isa level)
{
    for (size_t i = 0; i < ATTN_N_VARIANTS; i++) {
        const attn_variant *v = &attn_variants[i];
        const char *slash = strchr(v->name, '/');
        if (strcasecmp(name, v->name) == 0 || (v->level == level && strcasecmp(name, slash + 1) == 0))
            return v;
    }
    return NULL;
}

attn_isa attn_isa_best(void)
{
    static const attn_isa ladder[] = {ATTN_ISA_AMX, ATTN_ISA_AVX512_BF16, ATTN_ISA_AVX512, ATTN_ISA_AVX2, ATTN_ISA_NEON_BF16,
                                      ATTN_ISA_NEON};
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++)
        if (attn_level_runs(ladder[i]))
            return ladder[i];
    return ATTN_ISA_SCALAR;
}
