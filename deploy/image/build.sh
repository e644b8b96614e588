#!/usr/bin/env bash
# Build one Dockerfile target with podman, rootful, chroot isolation (what works without a container
# runtime that may set rlimits), with pip in the build seeing this host's package sources.
# --format docker: the OCI image format has no HEALTHCHECK (buildah drops it with a warning).
# --layers=false: no intermediate image per step (each build copies leanserve anew, so they would only
# fill the disk); the image this tag named before is removed once the new one is built.
# Usage: [LLAMA_WHEEL=FILE.whl] deploy/image/build.sh TARGET IMAGE BASE_IMAGE [PYTHON]
#   cpu: BASE_IMAGE is PYTHON_BASE; gpu: it stands in for CUDA_BASE (no CUDA: checks resolution and imports).
#   LLAMA_WHEEL: a portable llama-cpp-python wheel already built (the Dockerfile's llama-build stage then
#   skips its compile, about 7.5 minutes on 2 cores; the cpu stage still refuses a wheel that is not portable).
set -euo pipefail
target=$1 image=$2 base=$3 python=${4:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t pip_args < <("$python" "$here/pip_sources.py")
base_arg=$([ "$target" = gpu ] && echo CUDA_BASE || echo PYTHON_BASE)
if [ -n "${LLAMA_WHEEL:-}" ]; then
  wheel=$(realpath "$LLAMA_WHEEL")
  pip_args+=(-v "$(dirname "$wheel"):/llama-wheel:ro" --build-arg "LLAMA_WHEEL=/llama-wheel/$(basename "$wheel")")
fi
old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
start=$(date +%s)
podman build --format docker --isolation chroot --network host --layers=false --target "$target" \
  --build-arg "$base_arg=$base" "${pip_args[@]}" -t "$image" -f "$here/../../Dockerfile" "$here/../.."
echo "built $image ($target) in $(( $(date +%s) - start ))s"
new=$(podman image inspect --format '{{.Id}}' "$image")
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  podman rmi "$old" >/dev/null 2>&1 || echo "kept the previous $image ($old): still in use"
fi
