#!/usr/bin/env bash
# Run one Python snippet inside an image's root filesystem as its user (podman create + mount + chroot:
# `podman run` cannot start containers where crun may not set rlimits). Usage: imports.sh IMAGE CODE
set -euo pipefail
image=$1 code=$2
cid=$(podman create "$image")
trap 'podman umount "$cid" >/dev/null; podman rm -f "$cid" >/dev/null 2>&1' EXIT
root=$(podman mount "$cid")
mapfile -t env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | grep .)
unshare --mount sh -c 'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && shift && exec "$@"' sh "$root" \
  chroot --userspec=10001:10001 --groups= "$root" /usr/bin/env -i "${env[@]}" HOME=/home/leanserve python -c "$code"
