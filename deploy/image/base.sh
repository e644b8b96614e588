#!/usr/bin/env bash
# A Debian bookworm base image (python3, python3-venv) made with debootstrap from Debian's packages and
# imported into podman: the stand-in for `python:3.x-slim` where no registry can be reached.
# Usage: deploy/image/base.sh IMAGE_NAME WORK_DIR [MIRROR]   (root; needs debootstrap and podman)
set -euo pipefail
image=$1 work=$2
# The mirror apt already uses here, else Debian's own.
mirror=${3:-$(grep -hom1 '^URIs: *\S*' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1 | awk '{print $2}')}
mirror=${mirror:-http://deb.debian.org/debian}
rootfs="$work/rootfs"
rm -rf "$rootfs" "$rootfs.tmp"
mkdir -p "$work"
# Into a temp dir, renamed once complete: a failed debootstrap leaves no half-made root.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs.tmp" "$mirror"
rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
mv "$rootfs.tmp" "$rootfs"
tar -C "$rootfs" --numeric-owner -c . | podman import --change 'CMD ["python3"]' - "$image"
rm -rf "$rootfs"
