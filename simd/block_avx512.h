/* The AVX-512 register blocking, shared by the avx512 table and the avx512bf16 table that extends it: 6x4, measured
 * best on Zen 4 (one 512-bit FMA per cycle) and on Zen 5 (two). */
#define SC_RB 6 /* 6 rows x 4 zmm = 24 independent FMA chains, 10 loads per 24 FMAs */
#define SC_NV 4
#define PV_RB 6 /* 6 rows x 4 zmm = 24 chains, 64 output columns */
#define PV_NV 4
#define PVD_RB 2 /* decode P.V: 2 rows x 8 zmm: a whole 128-value V row per load pass */
#define PVD_NV 8
#define PVH_RB 4 /* decode P.V from a half/bfloat16 cache: 4 rows x 4 zmm, so each V row is widened once (2 x 8
                  * widened it once per pair of rows): D1/D2 f16 and bf16 4-5% faster */
#define PVH_NV 4
#define SR_RB 4 /* decode scores: 4 query rows x 4 key rows = 16 accumulators, one V_HSUMS */
#define SR_JB 4
