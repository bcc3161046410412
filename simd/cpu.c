/* CPU feature detection (once per process): feature bits, vendor, family/model and cache sizes, which the variant
 * registry (simd/variants.c) reads. Compiled with baseline flags only: nothing here may execute an AVX or NEON-only
 * instruction. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* syscall() */
#include <pthread.h>
#include <string.h>

#include "kernels.h"

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Linux lets a process use AMX tile data only after asking (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA,
 * kernel 5.16 and later); the grant is per process and permanent. 1 if granted. */
static int attn_amx_grant(void)
{
#if defined(__linux__) && defined(__x86_64__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0; /* no grant mechanism known here: tiles stay off */
#endif
}

static unsigned long long attn_xgetbv0(void)
{
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

/* L1d and L2 per core in KiB: AMD's extended leaves, else Intel's deterministic cache leaf 4. */
static void attn_cpu_caches(attn_cpu_info *ci)
{
    unsigned a, b, c, d;
    if (ci->vendor == ATTN_VENDOR_AMD && (unsigned)__get_cpuid_max(0x80000000u, NULL) >= 0x80000006u) {
        __cpuid(0x80000005u, a, b, c, d);
        ci->l1d_kib = c >> 24;
        __cpuid(0x80000006u, a, b, c, d);
        ci->l2_kib = c >> 16;
        return;
    }
    if (__get_cpuid_max(0, NULL) < 4)
        return;
    for (unsigned i = 0; i < 16; i++) {
        __cpuid_count(4, i, a, b, c, d);
        const unsigned type = a & 31, level = (a >> 5) & 7;
        if (type == 0)
            break;
        const unsigned kib = (((b >> 22) & 0x3ff) + 1) * (((b >> 12) & 0x3ff) + 1) * ((b & 0xfff) + 1) * (c + 1) / 1024;
        if (level == 1 && type == 1)
            ci->l1d_kib = kib;
        else if (level == 2)
            ci->l2_kib = kib;
    }
}

static void attn_cpu_detect(attn_cpu_info *ci)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    const unsigned max_leaf = a;
    if (b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u) /* "AuthenticAMD" */
        ci->vendor = ATTN_VENDOR_AMD;
    else if (b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu) /* "GenuineIntel" */
        ci->vendor = ATTN_VENDOR_INTEL;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return;
    /* Display family and model: the extended fields count only from base family 15 (6 for the model on Intel). */
    const unsigned fam = (a >> 8) & 15, model = (a >> 4) & 15;
    ci->family = fam == 15 ? fam + ((a >> 20) & 0xff) : fam;
    ci->model = fam == 15 || fam == 6 ? model | (((a >> 16) & 15) << 4) : model;
    attn_cpu_caches(ci);
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || max_leaf < 7)
        return;
    const unsigned long long xcr0 = attn_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* XMM and YMM state saved by the OS */
        return;
    unsigned b7, c7, d7, a71 = 0, b71, c71, d71;
    __cpuid_count(7, 0, a, b7, c7, d7);
    if (a >= 1)
        __cpuid_count(7, 1, a71, b71, c71, d71);
    if (((b7 >> 5) & 1) && fma && f16c) /* AVX2, with the FMA and F16C every AVX2 CPU has */
        ci->flags |= ATTN_CPU_AVX2;
    /* AVX-512F, and the OS saves opmask (bit 5), upper ZMM0-15 (bit 6) and ZMM16-31 (bit 7). */
    if (!((b7 >> 16) & 1) || (xcr0 & 0xe0) != 0xe0 || !(ci->flags & ATTN_CPU_AVX2))
        return;
    ci->flags |= ATTN_CPU_AVX512;
    if ((a71 >> 5) & 1)
        ci->flags |= ATTN_CPU_AVX512_BF16;
    if ((d7 >> 23) & 1)
        ci->flags |= ATTN_CPU_AVX512_FP16;
    /* AMX-TILE (bit 24) and AMX-BF16 (bit 22), with the OS saving XTILECFG (bit 17) and XTILEDATA (bit 18). Whether
     * a process may use the tile data is a separate, per-process grant (arch_prctl on Linux). */
    if (((d7 >> 24) & 1) && ((d7 >> 22) & 1) && (xcr0 & 0x60000) == 0x60000 && attn_amx_grant())
        ci->flags |= ATTN_CPU_AMX;
#if ATTN_AMX_EMULATE
    if (ci->flags & ATTN_CPU_AVX512_BF16) /* the tiles are C (simd/amx_emul.h): tests only */
        ci->flags |= ATTN_CPU_AMX;
#endif
}
#elif defined(__aarch64__)
static void attn_cpu_detect(attn_cpu_info *ci)
{
    ci->flags = ATTN_CPU_NEON; /* Advanced SIMD is baseline */
#if defined(__linux__)
    if (getauxval(AT_HWCAP2) & (1ul << 14)) /* HWCAP2_BF16 */
        ci->flags |= ATTN_CPU_NEON_BF16;
#endif
}
#else
static void attn_cpu_detect(attn_cpu_info *ci) { (void)ci; }
#endif

static pthread_once_t attn_cpu_once = PTHREAD_ONCE_INIT;
static attn_cpu_info attn_cpu;

static void attn_cpu_init(void)
{
    memset(&attn_cpu, 0, sizeof attn_cpu);
    attn_cpu_detect(&attn_cpu);
}

const attn_cpu_info *attn_cpu_get(void)
{
    pthread_once(&attn_cpu_once, attn_cpu_init);
    return &attn_cpu;
}

unsigned attn_cpu_flags(void) { return attn_cpu_get()->flags; }
