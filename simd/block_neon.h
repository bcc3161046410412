/* The NEON register blocking, shared by the neon table and the neonbf16 table that extends it. */
#define SC_RB 8 /* 8 rows x 2 q-registers = 16 chains of the 32 registers */
#define SC_NV 2
#define PV_RB 4
#define PV_NV 4
#define PVD_RB 2 /* decode P.V: 2 rows x 8 q-registers */
#define PVD_NV 8
#define SR_RB 4 /* decode scores: 4 query rows x 4 key rows = 16 accumulators, four V_HSUMS */
#define SR_JB 4
