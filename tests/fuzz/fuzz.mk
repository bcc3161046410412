# libFuzzer targets (tests/fuzz/*.c) for the generated Makefile, which includes this fragment. They are built with
# clang (-fsanitize=fuzzer plus ASan and UBSan) from the library's sources, into tests/fuzz/ of the build directory,
# apart from the gcc objects of libattn.a. Nothing here runs unless one of these targets is asked for.
#
#   make fuzz-build     tests/fuzz/fuzz_api, tests/fuzz/fuzz_safetensors, tests/fuzz/fuzz_env, tests/fuzz/fuzz_pool
#                       (fuzz_safetensors only when configure found jansson: without it the loader is stubs returning
#                       ATTN_ENOTSUP)
#   make fuzz           each for FUZZ_SECONDS seconds (default 60), one after another, on a working copy of its
#                       seed corpus (and regression inputs) in tests/fuzz/work/; prints the executions of each and
#                       fails if any crashed (the input is saved in tests/fuzz/crashes/, the log in tests/fuzz/*.log)
#   make fuzz-regress   each over the committed corpus/<target>/ and regress/<target>/ files only, no fuzzing: fast,
#                       for CI
#   make fuzz-clean     removes what these targets built (make clean does too)
#
# Variables: FUZZ_CC (clang), FUZZ_SECONDS (60), FUZZ_TARGETS (all of them), FUZZ_ARGS (more libFuzzer flags for make
# fuzz, e.g. FUZZ_ARGS=-seed=1). A crash found by make fuzz: copy tests/fuzz/crashes/<target>-crash-* into
# $(srcdir)/tests/fuzz/regress/<target>/, and make fuzz-regress replays it from then on. One fuzzer runs at a time,
# single process (no -jobs/-workers).
#
# OpenMP: when the library is configured with it (-DATTN_HAVE_OPENMP in DEFS), the fuzz objects use clang's
# -fopenmp (LLVM's libomp: apt-get install libomp-dev) if it links, else they are built without OpenMP.

FUZZ_CC      = clang
FUZZ_SECONDS = 60
FUZZ_ARGS    =
FUZZ_TARGETS = fuzz_api $(if $(filter yes,$(HAVE_JANSSON)),fuzz_safetensors) fuzz_env fuzz_pool
FUZZ_SRC     = $(srcdir)/tests/fuzz
FUZZ_OUT     = tests/fuzz
FUZZ_OBJDIR  = $(FUZZ_OUT)/obj
FUZZ_SAN     = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
# The ISA kernel files get ASan and coverage but no UBSan: with UBSan, clang 14 spends about 4 minutes on each of
# them (the inlined tile templates); ASan still sees every out-of-bounds access they make.
FUZZ_ISA_SAN = -fsanitize=fuzzer-no-link,address
FUZZ_CFLAGS  = -g -O1 -fno-omit-frame-pointer
FUZZ_WARN    = -Wall -Wextra

# Largest input per target for make fuzz (the seeds are well below).
FUZZ_MAX_LEN_fuzz_api          = 512
FUZZ_MAX_LEN_fuzz_safetensors  = 4096
FUZZ_MAX_LEN_fuzz_env          = 256
FUZZ_MAX_LEN_fuzz_pool         = 256

# -fopenmp when the library uses OpenMP and clang links it; probed once, only when a fuzz object is compiled.
fuzz_hash := \#
fuzz_omp_probe = $(shell mkdir -p $(FUZZ_OBJDIR) && \
    printf '$(fuzz_hash)include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n' > $(FUZZ_OBJDIR)/omp-probe.c && \
    $(FUZZ_CC) -fopenmp -o $(FUZZ_OBJDIR)/omp-probe $(FUZZ_OBJDIR)/omp-probe.c >/dev/null 2>&1 && echo -fopenmp)
FUZZ_OPENMP = $(eval FUZZ_OPENMP := $(if $(findstring -DATTN_HAVE_OPENMP,$(DEFS)),$(fuzz_omp_probe)))$(FUZZ_OPENMP)
FUZZ_DEFS   = $(if $(FUZZ_OPENMP),$(DEFS),$(filter-out -DATTN_HAVE_OPENMP%,$(DEFS)))
FUZZ_LIBS   = $(filter-out -fopenmp,$(LIBS)) $(FUZZ_OPENMP)

FUZZ_LIB_SRCS     = $(LIB_BASE_OBJS:.o=.c) $(LIB_ISA_OBJS-yes:.o=.c)
FUZZ_LIB_OBJS     = $(addprefix $(FUZZ_OBJDIR)/,$(FUZZ_LIB_SRCS:.c=.o))
FUZZ_HARNESS_OBJS = $(patsubst %,$(FUZZ_OBJDIR)/tests/fuzz/%.o,$(FUZZ_TARGETS))
FUZZ_BINS         = $(addprefix $(FUZZ_OUT)/,$(FUZZ_TARGETS))

$(FUZZ_OBJDIR)/simd/kern_avx2.o $(FUZZ_OBJDIR)/simd/kern_avx2_%.o:     private FUZZ_ISA = $(AVX2_CFLAGS)
$(FUZZ_OBJDIR)/simd/kern_avx512.o $(FUZZ_OBJDIR)/simd/kern_avx512_%.o: private FUZZ_ISA = $(AVX512_CFLAGS)
$(FUZZ_OBJDIR)/simd/kern_neon.o $(FUZZ_OBJDIR)/simd/kern_neon_%.o:     private FUZZ_ISA = $(NEON_CFLAGS)
$(FUZZ_OBJDIR)/simd/kern_avx512bf16.o $(FUZZ_OBJDIR)/simd/kern_avx512bf16_%.o: private FUZZ_ISA = $(AVX512BF16_CFLAGS)
$(FUZZ_OBJDIR)/simd/kern_amx.o $(FUZZ_OBJDIR)/simd/kern_amx_%.o: private FUZZ_ISA = $(AMX_CFLAGS)
$(FUZZ_OBJDIR)/simd/kern_neonbf16.o $(FUZZ_OBJDIR)/simd/kern_neonbf16_%.o: private FUZZ_ISA = $(NEONBF16_CFLAGS)
$(addprefix $(FUZZ_OBJDIR)/,$(LIB_ISA_OBJS-yes)): private FUZZ_SAN = $(FUZZ_ISA_SAN)

fuzz-build: $(FUZZ_BINS)

# clang and its fuzzer runtime: say how to get them instead of failing on the first compile.
fuzz-cc-check:
	@command -v $(firstword $(FUZZ_CC)) >/dev/null 2>&1 || { \
	    echo "make fuzz: '$(firstword $(FUZZ_CC))' not found: apt-get install clang libclang-rt-14-dev (or set FUZZ_CC=)" >&2; \
	    exit 1; }
	@mkdir -p $(FUZZ_OBJDIR); \
	printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n%s\n' \
	    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	    > $(FUZZ_OBJDIR)/cc-probe.c; \
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $(FUZZ_OBJDIR)/cc-probe $(FUZZ_OBJDIR)/cc-probe.c \
	    > $(FUZZ_OBJDIR)/cc-probe.log 2>&1 || { \
	    echo "make fuzz: $(FUZZ_CC) cannot link -fsanitize=fuzzer,address,undefined ($(FUZZ_OBJDIR)/cc-probe.log):" \
	         "apt-get install clang libclang-rt-14-dev" >&2; exit 1; }

$(FUZZ_OBJDIR)/%.o: %.c | fuzz-cc-check
	@mkdir -p $(@D)
	$(FUZZ_CC) -std=c11 -pthread -I$(srcdir)/include -I$(srcdir)/engine -I$(srcdir)/simd $(FUZZ_DEFS) $(CPPFLAGS) \
	    $(FUZZ_SAN) $(FUZZ_CFLAGS) $(FUZZ_WARN) $(or $(FUZZ_OPENMP),-Wno-unknown-pragmas) $(FUZZ_ISA) \
	    -MMD -MP -c -o $@ $<

$(FUZZ_LIB_OBJS) $(FUZZ_HARNESS_OBJS): Makefile $(FUZZ_SRC)/fuzz.mk

$(FUZZ_BINS): $(FUZZ_OUT)/%: $(FUZZ_OBJDIR)/tests/fuzz/%.o $(FUZZ_LIB_OBJS)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined $(FUZZ_CFLAGS) $(LDFLAGS) -o $@ $^ $(FUZZ_LIBS)

# The runs go one after another; a target that crashes fails make fuzz after the others have run.
fuzz: fuzz-build
	@fail=; \
	for t in $(FUZZ_TARGETS); do \
	    w=$(FUZZ_OUT)/work/$$t; \
	    mkdir -p $$w $(FUZZ_OUT)/crashes || exit 1; \
	    for d in $(FUZZ_SRC)/corpus/$$t $(FUZZ_SRC)/regress/$$t; do \
	        if [ -d $$d ]; then find $$d -type f -exec cp {} $$w/ \; || exit 1; fi; \
	    done; \
	    case $$t in \
	        fuzz_api) ml=$(FUZZ_MAX_LEN_fuzz_api) ;; \
	        fuzz_safetensors) ml=$(FUZZ_MAX_LEN_fuzz_safetensors) ;; \
	        fuzz_env) ml=$(FUZZ_MAX_LEN_fuzz_env) ;; \
	        fuzz_pool) ml=$(FUZZ_MAX_LEN_fuzz_pool) ;; \
	        *) ml=4096 ;; \
	    esac; \
	    dict=; \
	    if [ -f $(FUZZ_SRC)/$$t.dict ]; then dict=-dict=$(FUZZ_SRC)/$$t.dict; fi; \
	    echo "$(FUZZ_OUT)/$$t: fuzzing for $(FUZZ_SECONDS) s (max_len $$ml), log in $(FUZZ_OUT)/$$t.log"; \
	    $(FUZZ_OUT)/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$ml -timeout=30 -rss_limit_mb=4096 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/crashes/$$t- $$dict $(FUZZ_ARGS) $$w \
	        > $(FUZZ_OUT)/$$t.log 2>&1; \
	    rc=$$?; \
	    execs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_OUT)/$$t.log | tail -n 1); \
	    if [ $$rc = 0 ]; then \
	        echo "  $$t: ok, $${execs:-?} executions in $(FUZZ_SECONDS) s, corpus $$(ls $$w | wc -l) inputs"; \
	    else \
	        echo "  $$t: FAILED (exit $$rc) after $${execs:-?} executions; end of $(FUZZ_OUT)/$$t.log:" >&2; \
	        tail -n 60 $(FUZZ_OUT)/$$t.log >&2; \
	        fail="$$fail $$t"; \
	    fi; \
	done; \
	if [ -n "$$fail" ]; then \
	    echo "make fuzz: FAILED:$$fail (inputs in $(FUZZ_OUT)/crashes/; save them in $(FUZZ_SRC)/regress/<target>/)" >&2; \
	    exit 1; \
	fi

# Every committed input once per target, as files (libFuzzer runs each and stops): no mutation, no time limit.
fuzz-regress: fuzz-build
	@fail=; \
	for t in $(FUZZ_TARGETS); do \
	    files=$$(for d in $(FUZZ_SRC)/corpus/$$t $(FUZZ_SRC)/regress/$$t; do \
	                 if [ -d $$d ]; then find $$d -type f | LC_ALL=C sort; fi; done); \
	    if [ -z "$$files" ]; then echo "  $$t: no inputs"; continue; fi; \
	    n=$$(printf '%s\n' $$files | wc -l); \
	    if $(FUZZ_OUT)/$$t -timeout=30 -rss_limit_mb=4096 $$files > $(FUZZ_OUT)/$$t.regress.log 2>&1; then \
	        echo "  $$t: $$n inputs ok"; \
	    else \
	        echo "  $$t: FAILED; end of $(FUZZ_OUT)/$$t.regress.log:" >&2; \
	        tail -n 60 $(FUZZ_OUT)/$$t.regress.log >&2; \
	        fail="$$fail $$t"; \
	    fi; \
	done; \
	if [ -n "$$fail" ]; then echo "make fuzz-regress: FAILED:$$fail" >&2; exit 1; fi

fuzz-clean:
	rm -rf $(FUZZ_OBJDIR) $(FUZZ_OUT)/work $(FUZZ_OUT)/crashes $(FUZZ_BINS) $(FUZZ_OUT)/*.log
	@if [ "$(srcdir)" != . ]; then rmdir $(FUZZ_OUT) 2>/dev/null || :; fi

clean: fuzz-clean

.PHONY: fuzz fuzz-build fuzz-regress fuzz-clean fuzz-cc-check

-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_HARNESS_OBJS:.o=.d)
