/* CPU feature detection (once per process) and the ISA -> kernel table map. Compiled with baseline flags only:
 * nothing here may execute an AVX or NEON-only instruction. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long attn_xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static unsigned attn_cpu_detect(void)
{
    unsigned a, b, c, d, flags = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx)
        return 0;
    unsigned long long xcr0 = attn_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state saved by the OS */
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (((b >> 5) & 1) && fma && f16c) /* AVX2, with the FMA and F16C every AVX2 CPU has */
        flags |= ATTN_CPU_AVX2;
    /* AVX-512F, and the OS saves opmask (bit 5), upper ZMM0-15 (bit 6) and ZMM16-31 (bit 7). */
    if (((b >> 16) & 1) && (xcr0 & 0xe0) == 0xe0 && (flags & ATTN_CPU_AVX2))
        flags |= ATTN_CPU_AVX512;
    return flags;
}
#elif defined(__aarch64__)
static unsigned attn_cpu_detect(void) { return ATTN_CPU_NEON; } /* Advanced SIMD is baseline on AArch64 */
#else
static unsigned attn_cpu_detect(void) { return 0; }
#endif

static pthread_once_t attn_cpu_once = PTHREAD_ONCE_INIT;
static unsigned attn_cpu_bits;

static void attn_cpu_init(void) { attn_cpu_bits = attn_cpu_detect(); }

unsigned attn_cpu_flags(void)
{
    pthread_once(&attn_cpu_once, attn_cpu_init);
    return attn_cpu_bits;
}

const attn_kernels *attn_kernels_get(attn_isa isa)
{
    unsigned f = attn_cpu_flags();
    (void)f;
    switch (isa) {
    case ATTN_ISA_SCALAR:
        return &attn_kernels_scalar;
#if ATTN_HAVE_AVX2
    case ATTN_ISA_AVX2:
        return (f & ATTN_CPU_AVX2) ? &attn_kernels_avx2 : NULL;
#endif
#if ATTN_HAVE_AVX512
    case ATTN_ISA_AVX512:
        return (f & ATTN_CPU_AVX512) ? &attn_kernels_avx512 : NULL;
#endif
#if ATTN_HAVE_NEON
    case ATTN_ISA_NEON:
        return (f & ATTN_CPU_NEON) ? &attn_kernels_neon : NULL;
#endif
    default:
        return NULL;
    }
}

attn_isa attn_isa_best(void)
{
    static const attn_isa ladder[] = {ATTN_ISA_AVX512, ATTN_ISA_AVX2, ATTN_ISA_NEON};
    for (size_t i = 0; i < sizeof ladder / sizeof ladder[0]; i++)
        if (attn_kernels_get(ladder[i]))
            return ladder[i];
    return ATTN_ISA_SCALAR;
}
