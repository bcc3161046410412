/* The kernel variant registry: which variant each kind of CPU gets (from vendor, family, feature bits and cache
 * sizes, as a hypervisor may report them), and that the registry's lists agree with the public names. */
#include <criterion/criterion.h>
#include <string.h>

#include "common.h"
#include "kernels.h"

static const char *pick(attn_isa level, attn_vendor vendor, unsigned family, unsigned model, unsigned flags,
                        unsigned l2_kib)
{
    const attn_cpu_info ci = { .flags = flags, .vendor = vendor, .family = family, .model = model, .l1d_kib = 48,
                               .l2_kib = l2_kib };
    const attn_variant *v = attn_variant_for(level, &ci);
    return v ? v->name : "(none)";
}

Test(variants, pick_by_cpu)
{
#if ATTN_HAVE_AVX512
    const unsigned avx512 = ATTN_CPU_AVX2 | ATTN_CPU_AVX512;
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_AMD, 0x19, 0x11, avx512 | ATTN_CPU_AVX512_BF16, 1024),
                     "avx512/zen4");
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_AMD, 0x1a, 0x02, avx512 | ATTN_CPU_AVX512_BF16, 1024),
                     "avx512/zen5");
    /* Sapphire Rapids as one VM reports it: family 6 model 167 (a client part's number), with AMX and 2 MiB L2. */
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_INTEL, 6, 167, avx512 | ATTN_CPU_AMX, 2048), "avx512/spr");
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_INTEL, 6, 0x8f, avx512 | ATTN_CPU_AVX512_FP16, 0),
                     "avx512/spr");
    /* Ice Lake server (1.25 MiB L2, neither AMX nor FP16) and Skylake-X: generic. */
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_INTEL, 6, 0x6a, avx512, 1280), "avx512/generic");
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_INTEL, 6, 0x55, avx512, 1024), "avx512/generic");
    cr_assert_str_eq(pick(ATTN_ISA_AVX512, ATTN_VENDOR_OTHER, 6, 0x55, avx512, 4096), "avx512/generic");
#endif
#if ATTN_HAVE_AVX512BF16
    {
        const unsigned bf16 = avx512 | ATTN_CPU_AVX512_BF16;
        cr_assert_str_eq(pick(ATTN_ISA_AVX512_BF16, ATTN_VENDOR_AMD, 0x1a, 0x02, bf16, 1024), "avx512bf16/zen5");
        cr_assert_str_eq(pick(ATTN_ISA_AVX512_BF16, ATTN_VENDOR_AMD, 0x19, 0x11, bf16, 1024), "avx512bf16/zen4");
        /* The masked-model VM with AMX: vdpbf16ps is slow there, so the variant without bf16 dot-product slots. */
        cr_assert_str_eq(pick(ATTN_ISA_AVX512_BF16, ATTN_VENDOR_INTEL, 6, 167, bf16 | ATTN_CPU_AMX, 2048),
                         "avx512bf16/spr");
        cr_assert_str_eq(pick(ATTN_ISA_AVX512_BF16, ATTN_VENDOR_OTHER, 6, 1, bf16, 512), "avx512bf16/generic");
        cr_assert(attn_variant_find("avx512bf16/zen5", ATTN_ISA_AUTO)->kern->scores_bf16p);
        cr_assert(!attn_variant_find("avx512bf16/spr", ATTN_ISA_AUTO)->kern->scores_bf16p);
    }
#endif
#if ATTN_HAVE_AVX2
    cr_assert_str_eq(pick(ATTN_ISA_AVX2, ATTN_VENDOR_AMD, 0x1a, 0x02, ATTN_CPU_AVX2, 1024), "avx2/generic");
#endif
    cr_assert_str_eq(pick(ATTN_ISA_SCALAR, ATTN_VENDOR_INTEL, 6, 167, 0, 2048), "scalar/generic");
    cr_assert_str_eq(pick(ATTN_ISA_AUTO, ATTN_VENDOR_INTEL, 6, 167, 0, 2048), "(none)");
}

Test(variants, registry_matches_names)
{
    size_t n = 0;
    for (; attn_variant_at(n); n++) {
        const attn_variant *v = attn_variant_at(n);
        cr_assert_str_eq(attn_kernels_name(n), v->name);
        /* A bf16 level may run the AVX-512 table (MATH_BF16 then rounds and uses fp32 FMAs), never a higher one. */
        cr_assert(v->kern->isa == v->level || (v->level == ATTN_ISA_AVX512_BF16 && v->kern->isa == ATTN_ISA_AVX512),
                  "%s: table %s is of another level", v->name, v->kern->table);
        cr_assert(v->block_q >= 1 && v->block_q <= 4096 && v->block_kv >= 1 && v->block_kv <= 4096, "%s", v->name);
        cr_assert(v->split_keys >= 1 && v->how && *v->how, "%s", v->name);
        const char *slash = strchr(v->name, '/');
        cr_assert(slash && !strncmp(v->name, attn_isa_name(v->level), (size_t)(slash - v->name)), "%s", v->name);
        /* Exactly one generic variant per level, listed first. */
        int first = 1;
        for (size_t i = 0; i < n; i++)
            first &= attn_variant_at(i)->level != v->level;
        cr_assert_eq(first, v->prefer == NULL, "%s: the generic variant must come first in its level", v->name);
        for (int f = 0; f < ATTN_NFMT; f++)
            cr_assert(v->kern->scores[f] && v->kern->pv[f] && (f == ATTN_F32 || f == ATTN_I8 || v->kern->cvt[f]), "%s", v->name);
    }
    cr_assert_null(attn_kernels_name(n));
    cr_assert_eq(n, attn_variant_count());
}
