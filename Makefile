# zerospeed: the two set-up commands are `make demo` and `make test` (see README.md).
# Each installs missing Debian packages, configures with CMake + Ninja, builds and runs.

BUILD      ?= build
ASAN_BUILD ?= build-asan
CUDA_BUILD ?= build-cuda
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME  ?= 60
FUZZ_TARGETS := safetensors gguf json tokenizer_json config openai_request
JOBS       ?= $(shell nproc)
CMAKE      := cmake -G Ninja -DZS_WERROR=ON
NVCC       ?= /usr/local/cuda/bin/nvcc

.PHONY: all deps build demo test test-asan test-cuda-build test-fuzz bench format format-check clean

all: build

deps:
	@tools/install_deps.sh

build: deps
	@$(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job on its bundled default.
demo: build
	@tools/demo.sh $(BUILD)

# Build everything and run every test (what CI runs), then compile the CUDA build when nvcc
# exists (no GPU here: its tests skip with the reason).
test: build
	@$(BUILD)/bin/zerospeed doctor --brief
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	@$(MAKE) --no-print-directory test-cuda-build

test-cuda-build:
	@if [ -x "$(NVCC)" ]; then \
	    $(CMAKE) -S . -B $(CUDA_BUILD) -DCMAKE_BUILD_TYPE=Release -DZS_CUDA=ON \
	        -DZS_BUILD_BENCH=OFF >/dev/null && \
	    cmake --build $(CUDA_BUILD) -j $(JOBS) --target zs_backends cuda_test ops_test nccl_test && \
	    ctest --test-dir $(CUDA_BUILD) -L cuda --output-on-failure; \
	else echo "zerospeed: $(NVCC) not found; CUDA build skipped"; fi

# Unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	@$(CMAKE) -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
	    -DZS_SANITIZE=address,undefined -DZS_BUILD_BENCH=OFF >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    ctest --test-dir $(ASAN_BUILD) -L unit --output-on-failure -j $(JOBS) --timeout 1800

# libFuzzer (clang, ASan + UBSan) on the untrusted-file parsers: each target runs FUZZ_TIME
# seconds from its seed corpus in tests/fuzz/corpus/<target>; new inputs go to
# $(FUZZ_BUILD)/corpus, crashes to $(FUZZ_BUILD)/artifacts (add them to the seed corpus once fixed).
test-fuzz:
	@tools/install_deps.sh clang libclang-rt-14-dev libomp-dev
	@CC=clang CXX=clang++ $(CMAKE) -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	    -DZS_FUZZ=ON -DZS_BUILD_TESTS=OFF -DZS_BUILD_BENCH=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(FUZZ_TARGETS:%=%_fuzz)
	@mkdir -p $(FUZZ_BUILD)/artifacts
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	    echo "zerospeed: fuzzing $$t for $(FUZZ_TIME) s"; \
	    $(FUZZ_BUILD)/bin/$${t}_fuzz -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -timeout=2 \
	        -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
	        $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t >$(FUZZ_BUILD)/$$t.log 2>&1; rc=$$?; \
	    grep -E '^(stat::number_of_executed_units|Done)' $(FUZZ_BUILD)/$$t.log; \
	    if [ $$rc -ne 0 ]; then tail -n 60 $(FUZZ_BUILD)/$$t.log; exit 1; fi; \
	done

bench: build
	@tools/run_benchmarks.sh $(BUILD)

format:
	@git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format -i

format-check:
	@git ls-files '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(CUDA_BUILD) $(FUZZ_BUILD)
