# Robustness checks (issue 6), included by the generated Makefile (GNU make). Fork-free programs, built and run by
# make check after kernel-check (also under $(EMU) in a cross build):
#   tests/fault-check        allocation-failure injection into every allocating entry point (--wrap'ed allocator)
#   tests/concurrency-check  8 threads sharing one context and one read-only KV cache, bitwise against serial runs
#   tests/long-check         decode over a 2^20-token F16 cache; a prefill whose probs pass 2^31 (native builds only)
# and two targets of their own:
#   make check-tsan       concurrency-check under ThreadSanitizer: configure --enable-sanitize=thread --disable-openmp
#   make check-valgrind   kernel-check and fault-check on the scalar kernels under valgrind --leak-check=full
# tests/test_edges.c (numerics at the edges) is a Criterion file: attn-tests picks it up by its name.

ROBUST_PROGRAMS = tests/fault-check tests/concurrency-check tests/long-check tests/kernel-check-env
ROBUST_OBJS     = tests/fault_check.o tests/concurrency_check.o tests/long_check.o tests/kernel_check_env.o

PROGRAMS += $(ROBUST_PROGRAMS)
ALL_OBJS += $(ROBUST_OBJS)

# long-check needs memory and a native CPU's speed: qemu would take many minutes over it.
ifeq ($(CROSS),yes)
CHECK_PROGRAMS += tests/fault-check tests/concurrency-check
else
CHECK_PROGRAMS += tests/fault-check tests/concurrency-check tests/long-check
endif

# ---- fault-check: the allocator of libattn.a's objects, wrapped at link time --------------------------------------
FAULT_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=aligned_alloc \
             -Wl,--wrap=free,--wrap=mmap,--wrap=munmap
# The loader's JSON parser, jansson, is a shared library (--wrap cannot reach it): fault-check hooks its allocator
# with json_set_alloc_funcs instead (a build configured --without-jansson has no loader scenarios).
tests/fault-check: tests/fault_check.o $(TEST_COMMON_OBJS) libattn.a
	$(LINK) $(FAULT_WRAP) $(LIBS)

tests/concurrency-check: tests/concurrency_check.o $(TEST_COMMON_OBJS) libattn.a
	$(LINK) $(LIBS)

tests/long-check: tests/long_check.o $(TEST_COMMON_OBJS) libattn.a
	$(LINK) $(LIBS)

# kernel-check whose ISA list honours ATTN_ISA (tc_isas_env), for valgrind: valgrind 3.19 has no AVX-512, and the
# plain kernel-check asks attn_isa_supported, which runs CPUID natively. Same source, one name redirected.
tests/kernel_check_env.o: tests/kernel_check.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CPPFLAGS) $(ALL_CFLAGS) -Dtc_isas=tc_isas_env -MMD -MP -c -o $@ $<

tests/kernel-check-env: tests/kernel_check_env.o $(TEST_COMMON_OBJS) libattn.a
	$(LINK) $(LIBS)

# ---- make check-tsan ---------------------------------------------------------------------------------------------
# libgomp is not built with TSan and its barriers look like races: the TSan build must be --disable-openmp. Two runs:
# the best ISA with more calls than make check makes, and the scalar kernels.
TSAN_OPTIONS_CHECK = halt_on_error=1 second_deadlock_stack=1 history_size=4

check-tsan: tests/concurrency-check
	@case ' $(SAN_FLAGS) ' in *=thread*|*,thread*) ;; \
	 *) echo "make check-tsan: this build is not a TSan one: configure --enable-sanitize=thread --disable-openmp" >&2; \
	    exit 1 ;; esac
	@case ' $(OPENMP_CFLAGS) ' in *fopenmp*) \
	    echo "make check-tsan: configure with --disable-openmp (libgomp gives false reports)" >&2; exit 1 ;; esac
	TSAN_OPTIONS='$(TSAN_OPTIONS_CHECK)' ATTN_CONCURRENCY_ITERS=600 $(EMU) tests/concurrency-check
	TSAN_OPTIONS='$(TSAN_OPTIONS_CHECK)' ATTN_CONCURRENCY_ITERS=150 ATTN_ISA=scalar $(EMU) tests/concurrency-check

# ---- make check-valgrind -----------------------------------------------------------------------------------------
# Scalar kernels only (ATTN_ISA=scalar; kernel-check-env honours it, fault-check uses AUTO contexts, which read it).
VALGRIND      = valgrind
VALGRIND_ARGS = --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
                --track-origins=yes --quiet

check-valgrind: tests/kernel-check-env tests/fault-check
	@if [ '$(CROSS)' = yes ]; then echo "make check-valgrind: native builds only" >&2; exit 1; fi
	@if [ -n '$(SAN_FLAGS)' ]; then echo "make check-valgrind: needs a build without sanitizers" >&2; exit 1; fi
	@command -v $(VALGRIND) >/dev/null 2>&1 || \
	    { echo "make check-valgrind: $(VALGRIND) not found: apt-get install valgrind" >&2; exit 1; }
	ATTN_ISA=scalar ATTN_NUM_THREADS=1 $(VALGRIND) $(VALGRIND_ARGS) tests/kernel-check-env
	ATTN_ISA=scalar ATTN_NUM_THREADS=1 $(VALGRIND) $(VALGRIND_ARGS) tests/fault-check

.PHONY: check-tsan check-valgrind

# ---- make check-mpi ----------------------------------------------------------------------------------------------
# examples/mpi/ (configure --with-mpi): the ring prefill and the sharded decode on 2, 3 and 4 ranks of this machine,
# each checking itself against one single-process attn_sdpa; the 4-rank decode holds a 1M-token F16 cache. One
# thread per rank; --oversubscribe for more ranks than cores; Open MPI refuses root unless told, so the two
# OMPI_ALLOW_RUN_AS_ROOT variables are set (ignored when not root).
MPI_EXAMPLES = examples/mpi/ring_prefill examples/mpi/sharded_decode
MPIRUN_ARGS  = --oversubscribe
MPI_ENV      = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ATTN_NUM_THREADS=1

$(MPI_EXAMPLES): examples/mpi/%: examples/mpi/%.c libattn.a
	@mkdir -p $(@D)
	$(MPICC) $(ALL_CPPFLAGS) $(BASE_CFLAGS) $(WARN_CFLAGS) $(OPENMP_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< libattn.a \
	    $(LIBS)

check-mpi:
	@if [ '$(HAVE_MPI)' != yes ]; then \
	    echo "make check-mpi: configure --with-mpi first (apt-get install libopenmpi-dev openmpi-bin)" >&2; exit 1; fi
	@$(MAKE) --no-print-directory $(MPI_EXAMPLES)
	for np in 2 3 4; do \
	    $(MPI_ENV) $(MPIRUN) $(MPIRUN_ARGS) -np $$np examples/mpi/ring_prefill 384 8 2 64 || exit 1; \
	done
	$(MPI_ENV) $(MPIRUN) $(MPIRUN_ARGS) -np 2 examples/mpi/sharded_decode 65536 8 2 128 2
	$(MPI_ENV) $(MPIRUN) $(MPIRUN_ARGS) -np 3 examples/mpi/sharded_decode 100003 8 1 64 2
	$(MPI_ENV) $(MPIRUN) $(MPIRUN_ARGS) -np 4 examples/mpi/sharded_decode 1048576 8 1 64 2
	@echo "make check-mpi: ring prefill on 2, 3, 4 ranks and sharded decode on 2, 3, 4 ranks (1M tokens on 4) match one process"

.PHONY: check-mpi
