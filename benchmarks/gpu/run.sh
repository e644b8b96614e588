#!/bin/bash
# Issue 15's GPU run on a lent H200: install the carried wheels, then benchmarks/gpu/driver.py, which
# writes gpu-<device>-<date>.json, .md and gpu-logs.txt into $OUT (or --out DIR). At most BUDGET_S
# seconds (default 420) in all; the driver gets what the install left of it.
#
#   run.sh --stash          copy the carried .gpuwheels/part* (and SHA256SUMS) to $ACC; nothing else
#   run.sh --install-only   stash, then check, join and install the pieces into $SITE
#   run.sh [driver options] stash, install if not done yet, run the driver (e.g. --only direct-bf16)
#
# The wheels: the vLLM set of shared/gpu/vllm-wheels.txt, loguru (compressed-tensors imports it) and
# leanserve's own wheel, built and cut into pieces by benchmarks/gpu/prepare.sh, which prints the
# device calls that carry them here. Installed as shared/gpu/README.md describes: --no-deps into a
# --target beside the machine's own torch 2.11 and transformers 5.17. This checkout comes first on
# PYTHONPATH, so the leanserve that runs is the one that travelled, whatever the wheel's age.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUDGET_S=${BUDGET_S:-420}
SITE=${SITE:-/tmp/site}
ACC=${ACC:-/tmp/acc}
OUT=${OUT:-benchmarks/results}
mode=run
case "${1:-}" in
  --stash) mode=stash; shift ;;
  --install-only) mode=install; shift ;;
esac

stash() {
  mkdir -p "$ACC"
  for f in .gpuwheels/part* .gpuwheels/SHA256SUMS; do
    [ -f "$f" ] && cp "$f" "$ACC/" && echo "stashed $f"
  done
  if [ -f "$ACC/SHA256SUMS" ]; then  # a machine that went cold between calls has lost the earlier pieces
    echo "pieces here: $(ls "$ACC"/part* 2>/dev/null | wc -l) of $(wc -l < "$ACC/SHA256SUMS")"
  fi
}

install() {
  if [ -f "$SITE/.installed" ]; then echo "wheels already installed in $SITE"; return 0; fi
  if [ -f "$ACC/SHA256SUMS" ]; then
    (cd "$ACC" && sha256sum -c --quiet SHA256SUMS) || { echo "wheel pieces in $ACC are missing or damaged"; return 1; }
  fi
  ls "$ACC"/part* >/dev/null 2>&1 || { echo "no wheel pieces in $ACC: carry them first (prepare.sh prints the calls)"; return 1; }
  rm -rf /tmp/wheels
  cat "$ACC"/part* | tar x -C /tmp || return 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" /tmp/wheels/*.whl || return 1
  touch "$SITE/.installed"
  echo "installed $(ls /tmp/wheels | wc -l) wheels into $SITE in ${SECONDS}s"
}

stash
if [ "$mode" = stash ]; then exit 0; fi
install_status=ok
install 2>&1 | tee /tmp/gpu-install.log
[ "${PIPESTATUS[0]}" = 0 ] || install_status="failed: $(tail -3 /tmp/gpu-install.log | tr '\n' ' ')"
if [ "$mode" = install ]; then [ "$install_status" = ok ]; exit; fi

export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
python3 -m benchmarks.gpu.driver --out "$OUT" --deadline-s $((BUDGET_S - SECONDS)) \
  --install-status "$install_status" "$@" 2>&1 | tee "$OUT/gpu-run.log"
exit "${PIPESTATUS[0]}"
