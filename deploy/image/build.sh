#!/usr/bin/env bash
# Build one Dockerfile target with podman, rootful, chroot isolation (what works without a container
# runtime that may set rlimits), with pip in the build seeing this host's package sources.
# --format docker: the OCI image format has no HEALTHCHECK (buildah drops it with a warning).
# Usage: deploy/image/build.sh TARGET IMAGE BASE_IMAGE [PYTHON]
#   cpu: BASE_IMAGE is PYTHON_BASE; gpu: it stands in for CUDA_BASE (no CUDA: checks resolution and imports).
set -euo pipefail
target=$1 image=$2 base=$3 python=${4:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t pip_args < <("$python" "$here/pip_sources.py")
base_arg=$([ "$target" = gpu ] && echo CUDA_BASE || echo PYTHON_BASE)
start=$(date +%s)
podman build --format docker --isolation chroot --network host --target "$target" --build-arg "$base_arg=$base" \
  "${pip_args[@]}" -t "$image" -f "$here/../../Dockerfile" "$here/../.."
echo "built $image ($target) in $(( $(date +%s) - start ))s"
