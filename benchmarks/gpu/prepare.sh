#!/bin/bash
# Here, on a machine with registry access (not the GPU machine): build leanserve's wheel, download the
# vLLM wheel set of ../shared/gpu/vllm-wheels.txt plus loguru, and cut them into 60 MiB pieces
# .gpuwheels/part00, part01, ... (ignored by git) with their SHA256SUMS; then print the device calls
# that carry them to a lent GPU machine and run benchmarks/gpu/run.sh there.
#
# usage: benchmarks/gpu/prepare.sh [--out DIR] [--shared DIR] [--dry-run] [--calls]
#   --out DIR     where the pieces go (default: .gpuwheels in this checkout; carry needs it inside)
#   --shared DIR  the shared folder with gpu/vllm-wheels.txt and gpu/make-wheel-chunks.sh
#                 (default: ../shared beside this checkout)
#   --dry-run     print the commands, run none
#   --calls       only print the device calls for the pieces already in --out
#
# Why pieces: a device call carries at most 64 MiB (working tree included), and the set is ~340 MB.
# The machine stays warm only 30 s between calls, so make the calls back to back.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$repo/.gpuwheels
shared=$repo/../shared
dry=0
calls_only=0
EXTRA=(loguru==0.7.3)  # compressed-tensors 0.17 imports it; vLLM needs it for any compressed-tensors model

while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --calls) calls_only=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

run() { echo "+ $*"; if [ "$dry" = 0 ]; then "$@"; fi; }

print_calls() {
  local rel parts last
  rel=${out#"$repo"/}
  parts=$(cd "$out" 2>/dev/null && ls part* 2>/dev/null || true)
  if [ -z "$parts" ]; then
    echo "(no pieces in $out yet: the calls below assume six, part00 to part05)"
    parts="part00 part01 part02 part03 part04 part05"
  fi
  last=$(echo $parts | awk '{print $NF}')
  echo
  echo "Device calls (device tool 'run'), back to back; every command runs in the repository root:"
  for p in $parts; do
    case $p in part*) ;; *) continue ;; esac
    cmd="bash benchmarks/gpu/run.sh --stash" limit=120
    [ "$p" = "$last" ] && cmd="bash benchmarks/gpu/run.sh --install-only" limit=240
    echo "  run(carry=[\"$rel/$p\", \"$rel/SHA256SUMS\"], command=\"$cmd\", timeout_s=$limit)"
  done
  echo "  run(command=\"BUDGET_S=420 bash benchmarks/gpu/run.sh\", timeout_s=540)"
  echo "then: copy \$files_at/gpu-h200-<date>.json to benchmarks/results/, and its .md table into docs/benchmarks.md."
}

if [ "$calls_only" = 1 ]; then print_calls; exit 0; fi
req=$shared/gpu/vllm-wheels.txt
chunker=$shared/gpu/make-wheel-chunks.sh
if [ ! -f "$req" ] || [ ! -f "$chunker" ]; then
  echo "prepare.sh: no $req or $chunker (pass --shared DIR)" >&2
  exit 2
fi
case $out in "$repo"/*) ;; *) echo "prepare.sh: note: --out is outside the checkout; carry only reaches paths inside it" >&2 ;; esac

run rm -rf "$out/wheels"
run mkdir -p "$out/wheels"
run python3 -m pip wheel -q --no-deps -w "$out/wheels" "$repo"  # leanserve's own wheel
run bash "$chunker" "$req" "$out" "${EXTRA[@]}"  # downloads beside it, tars wheels/, splits into part*
if [ "$dry" = 0 ]; then
  (cd "$out" && sha256sum part* > SHA256SUMS)
  biggest=$(cd "$out" && ls -l part* | awk '{print $5}' | sort -n | tail -1)
  tree=$(cd "$repo" && git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  echo "largest piece $biggest bytes + working tree $tree bytes per call (limit $((64 << 20)))"
  if [ $((biggest + tree)) -gt $((64 << 20)) ]; then
    echo "prepare.sh: a piece and the working tree exceed 64 MiB together; shrink the tree first" >&2
    exit 1
  fi
else
  echo "+ (cd $out && sha256sum part* > SHA256SUMS)"
fi
print_calls
