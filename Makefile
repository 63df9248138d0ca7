# flash.c build. `make` builds ./train; `make test` builds and runs every test, then the
# same suite under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# The library is compiled three ways into build/: f32 (the trainer), f64 (the model in
# double precision, for finite-difference gradient checks) and asan (f32 with sanitizers).

CC      ?= gcc
OPT     ?= -O3 -march=native
# The OpenMP build of OpenBLAS (scripts/setup.sh installs it): called from inside our own
# OpenMP loops it runs single-threaded instead of oversubscribing the cores.
BLAS_INC ?= $(firstword $(wildcard /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas) /usr/include)
BLAS_LIB ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/x86_64-linux-gnu/openblas-pthread) /usr/lib)
WARN     = -Wall -Wextra
CFLAGS  ?= $(OPT)
ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) -g -fopenmp \
             -Imodel -Iautograd/cpu -Idata -Iformats -Iplot -Itrainer -Itests -I$(BLAS_INC) $(CFLAGS)
LDLIBS   = -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -ljansson -lpng -lz -lm -fopenmp
SAN      = -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=undefined,float-cast-overflow

# CUDA: compiled into the f32 library (./train, the f32 tests, parity) when nvcc and cuBLAS
# are found; `make CUDA=0` leaves it out. The f64 and sanitizer builds never have it.
NVCC      ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA      ?= $(if $(and $(NVCC),$(wildcard $(CUDA_HOME)/include/cublas_v2.h)),1,0)
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90
NVFLAGS   = -O3 $(CUDA_ARCH) -std=c++17 -Xcompiler -Wall,-Wextra -Imodel -Iautograd/cuda
ifeq ($(CUDA),1)
CUDA_OBJ    = $(patsubst %.cu,build/cuda/%.o,$(wildcard autograd/cuda/*.cu))
CUDA_CFLAGS = -DFLASH_CUDA -Iautograd/cuda -I$(CUDA_HOME)/include
CUDA_LIBS   = -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
$(info CUDA: built in ($(NVCC), sm_90); make CUDA=0 leaves it out)
else
$(info CUDA: not built in (no nvcc with cuBLAS found); ./train runs on the CPU only)
endif

# MPI (data parallel, trainer/parallel.c): built into every library when mpicc is found
# (scripts/setup.sh installs OpenMPI); `make MPI=0` leaves it out, and then ./train is the
# single process only. NCCL (the GPUs' gradient sum) when MPI and CUDA are built in and
# nccl.h is found; `make NCCL=0` leaves it out.
MPICC ?= $(shell command -v mpicc 2>/dev/null)
MPI   ?= $(if $(MPICC),1,0)
ifeq ($(MPI),1)
MPI_CFLAGS = -DFLASH_MPI $(shell $(MPICC) --showme:compile)
MPI_LIBS   = $(shell $(MPICC) --showme:link)
ALL_CFLAGS += $(MPI_CFLAGS)
LDLIBS     += $(MPI_LIBS)
$(info MPI: built in ($(MPICC)); mpirun -np N ./train trains on N ranks; make MPI=0 leaves it out)
else
$(info MPI: not built in (MPI=0, or no mpicc found); ./train is one process)
endif
NCCL ?= $(if $(and $(filter 1,$(MPI)),$(filter 1,$(CUDA)),$(wildcard $(CUDA_HOME)/include/nccl.h)),1,0)
ifeq ($(NCCL),1)
CUDA_CFLAGS += -DFLASH_NCCL
NVFLAGS     += -DFLASH_NCCL
CUDA_LIBS   += -lnccl
$(info NCCL: built in (the GPUs' gradient sum under mpirun; untested: no multi-GPU machine ran it yet))
endif

HDRS     = $(wildcard */*.h */*/*.h autograd/cuda/*.cuh)
LIB_SRC  = $(wildcard model/*.c autograd/cpu/*.c data/*.c formats/*.c plot/*.c trainer/*.c)
TEST_SRC = $(wildcard tests/test_*.c)
# tests/test_grad*.c check gradients by finite differences: they use the f64 library and the
# checker tests/gradcheck.c (test code: not in the library, not in ./train)
F64_TESTS = $(filter tests/test_grad%,$(TEST_SRC))
GRADCHECK = tests/gradcheck.c
F32_TESTS = $(filter-out $(F64_TESTS),$(TEST_SRC))

F32_OBJ  = $(LIB_SRC:%.c=build/f32/%.o)
F64_OBJ  = $(LIB_SRC:%.c=build/f64/%.o)
ASAN_OBJ = $(LIB_SRC:%.c=build/asan/%.o)

TEST_BINS = $(F32_TESTS:tests/%.c=build/f32/%) $(F64_TESTS:tests/%.c=build/f64/%) build/f32/parity
ASAN_BINS = $(F32_TESTS:tests/%.c=build/asan/%) $(F64_TESTS:tests/%.c=build/asan/%) build/asan/parity build/asan/train

# the shared test data: ../shared, or as scripts/find_shared.sh finds it (FLASH_SHARED=DIR)
SHARED   ?= $(or $(shell bash scripts/find_shared.sh),../shared)
FIXTURES ?= $(SHARED)/fixtures
DATA     ?= $(SHARED)/data/enwik8-head.gz
OUT      ?= build/parity-out

.PHONY: all test test-fast test-asan test-cuda test-cuda-sanitize parity clean
.SECONDARY:
all: train $(TEST_BINS)

train: build/f32/train.o $(F32_OBJ) $(CUDA_OBJ)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS)

build/f32/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(CUDA_CFLAGS) -c $< -o $@
build/cuda/%.o: %.cu $(HDRS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@
build/f64/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DFLASH_DOUBLE -c $< -o $@
build/asan/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -c $< -o $@

build/f32/test_%: tests/test_%.c $(F32_OBJ) $(CUDA_OBJ) $(HDRS)
	$(CC) $(ALL_CFLAGS) $(CUDA_CFLAGS) -o $@ $< $(F32_OBJ) $(CUDA_OBJ) $(LDLIBS) $(CUDA_LIBS)
build/f64/test_%: tests/test_%.c $(GRADCHECK) $(F64_OBJ) $(HDRS)
	$(CC) $(ALL_CFLAGS) -DFLASH_DOUBLE -o $@ $< $(GRADCHECK) $(F64_OBJ) $(LDLIBS)
build/f32/parity: tests/parity.c $(F32_OBJ) $(CUDA_OBJ) $(HDRS)
	$(CC) $(ALL_CFLAGS) $(CUDA_CFLAGS) -o $@ $< $(F32_OBJ) $(CUDA_OBJ) $(LDLIBS) $(CUDA_LIBS)
build/asan/test_grad%: tests/test_grad%.c $(GRADCHECK) $(LIB_SRC) $(HDRS)
	@mkdir -p build/asan/f64
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -DFLASH_DOUBLE -o $@ $< $(GRADCHECK) $(LIB_SRC) $(LDLIBS) $(SAN)
build/asan/test_%: tests/test_%.c $(ASAN_OBJ) $(HDRS)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $< $(ASAN_OBJ) $(LDLIBS) $(SAN)
build/asan/train: build/asan/train.o $(ASAN_OBJ)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $^ $(LDLIBS) $(SAN)
build/asan/parity: tests/parity.c $(ASAN_OBJ) $(HDRS)
	$(CC) $(ALL_CFLAGS) -O1 $(SAN) -o $@ $< $(ASAN_OBJ) $(LDLIBS) $(SAN)

# Every fixture pair in FIXTURES, results written to OUT, on DEVICE (cpu, the default, or
# cuda: the GPU backend in fp32 without TF32, held to the same tolerances).
DEVICE ?= cpu
parity: build/f32/parity
	@mkdir -p $(OUT)
	FLASH_DEVICE=$(DEVICE) ./build/f32/parity $(FIXTURES) $(OUT)

# On a machine with a GPU: the CUDA tests (kernels against the CPU ops, the model against
# the CPU model, decoder, determinism, bf16), the fixtures on the GPU, and the command-line
# checks (resume bit-exact, two runs identical, checkpoints across devices).
test-cuda: train build/f32/test_cuda build/f32/parity
	@bash tests/run_cuda.sh $(FIXTURES) $(DATA)

# compute-sanitizer's memcheck, racecheck, initcheck and synccheck over the CUDA tests, short
# fp32 and bf16 training runs and sampling (a GPU machine; SAN_TOOLS picks fewer tools).
SAN_TOOLS ?= memcheck racecheck initcheck synccheck
test-cuda-sanitize: train build/f32/test_cuda
	@bash tests/run_cuda_sanitize.sh $(DATA) "$(SAN_TOOLS)"

test-fast: all
	@bash tests/run.sh build/f32 build/f64 -- $(FIXTURES) $(DATA)

# The sanitizer pass: every test program, and the trainer the CLI tests run, built with
# AddressSanitizer + UndefinedBehaviorSanitizer; FLASH_TEST_SMALL shrinks the long runs.
# (allocator_may_return_null: a refused huge allocation is the program's error to report)
ASAN_ENV = FLASH_TEST_SMALL=1 FLASH_TEST_SANITIZED=1 FLASH_TRAIN_BIN=build/asan/train ASAN_OPTIONS=allocator_may_return_null=1
test-asan: $(ASAN_BINS)
	@$(ASAN_ENV) bash tests/run.sh build/asan build/asan -- $(FIXTURES) $(DATA)

# Both suites; the runner's last line counts them together.
test: all $(ASAN_BINS) fuzz-bins
	@[ -d "$(FIXTURES)" ] && [ -f "$(DATA)" ] && echo "shared test data: $(FIXTURES), $(DATA)" || \
	    echo "WARNING: shared test data not found ($(FIXTURES), $(DATA)): the fixture and data tests will fail; set FLASH_SHARED=DIR"
	@bash tests/run.sh build/f32 build/f64 -- $(FIXTURES) $(DATA) > build/test-f32.log; r1=$$?; cat build/test-f32.log; \
	$(ASAN_ENV) bash tests/run.sh build/asan build/asan -- $(FIXTURES) $(DATA) > build/test-asan.log; r2=$$?; \
	sed 's/^/[asan] /' build/test-asan.log | grep -v '^\[asan\] [0-9]* passed'; \
	p=$$(( $$(tail -1 build/test-f32.log | awk '{print $$1}') + $$(tail -1 build/test-asan.log | awk '{print $$1}') )); \
	f=$$(( $$(tail -1 build/test-f32.log | awk '{print $$3}') + $$(tail -1 build/test-asan.log | awk '{print $$3}') )); \
	k=$$(( $$(tail -1 build/test-f32.log | awk '{print $$5}') + $$(tail -1 build/test-asan.log | awk '{print $$5}') )); \
	echo "$$p passed, $$f failed, $$k skipped"; [ $$r1 -eq 0 ] && [ $$r2 -eq 0 ]

clean:
	rm -rf build train

# libFuzzer harnesses (fuzz/): the settings/JSON reader, the safetensors reader, the
# checkpoint reader and the data loader, built with clang (-fsanitize=fuzzer, ASan, UBSan)
# against the library without CUDA. `make fuzz FUZZ_TIME=N` runs each for N seconds from its
# committed seed corpus (fuzz/corpus/NAME; what it finds goes to build/fuzz/corpus/NAME).
# make test runs a few seconds of each (tests/fuzz_smoke.sh), or says it skips them when
# clang lacks libFuzzer.
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZERS    = settings safetensors checkpoint data
FUZZ_OK   := $(shell printf 'int LLVMFuzzerTestOneInput(const unsigned char*d,unsigned long n){(void)d;(void)n;return 0;}' | \
               $(FUZZ_CC) -x c -fsanitize=fuzzer -o /dev/null - 2>/dev/null && echo 1)
FUZZ_SAN   = -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow
FUZZ_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 -fopenmp -Wno-pass-failed $(FUZZ_SAN) \
              -Imodel -Iautograd/cpu -Idata -Iformats -Iplot -Itrainer -Ifuzz -I$(BLAS_INC)
FUZZ_OBJ   = $(LIB_SRC:%.c=build/fuzz/obj/%.o)
FUZZ_BINS  = $(FUZZERS:%=build/fuzz/fuzz_%)
.PHONY: fuzz fuzz-bins
build/fuzz/obj/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(LDLIBS)
fuzz-bins: $(if $(FUZZ_OK),$(FUZZ_BINS))
fuzz: fuzz-bins
	@[ -n "$(FUZZ_OK)" ] || { echo "fuzz: $(FUZZ_CC) lacks libFuzzer (-fsanitize=fuzzer)"; exit 1; }
	@for f in $(FUZZERS); do mkdir -p build/fuzz/corpus/$$f; \
	    echo "== fuzz_$$f, $(FUZZ_TIME) s"; \
	    ./build/fuzz/fuzz_$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        build/fuzz/corpus/$$f fuzz/corpus/$$f > build/fuzz/fuzz_$$f.log 2>&1; rc=$$?; \
	    grep -E 'stat::number_of_executed_units|ERROR|SUMMARY|Done' build/fuzz/fuzz_$$f.log; \
	    [ $$rc -eq 0 ] || { echo "fuzz_$$f failed (build/fuzz/fuzz_$$f.log)"; exit 1; }; done
