"""Issue 15's GPU run: leanserve's vLLM path measured once on a lent GPU, in at most 7 minutes.

On a random-weight Llama-2-7B shape (benchmarks/gpu/model.py), one step per process, in this order
(most telling first, so a run cut short still answers the most):

  build            bf16 checkpoint + W4A16 copy (leanserve's gptq-4 artifact); one CUDA context's size
  fit              `leanserve fit --vram 8GiB --profile gptq-4 --json`, for the shape and for the artifact
  leanserve-bf16   `leanserve serve --engine vllm`: tok/s at 1 and 64 streams (128 tokens each), TTFT
                   of 512-token prompts, the first 32 greedy tokens
  leanserve-gptq4  `serve --profile gptq-4 --vram-budget 8GiB`: tok/s at 1 stream, NVML peak, and
                   the KV cache vLLM logs it allocated
  direct-bf16      vLLM's AsyncLLM in process with leanserve's own engine arguments (engine_kwargs),
                   so the two differ only by leanserve's server; it starts from the compile cache that
                   leanserve-bf16 filled

Every step has a time budget inside one deadline; a step that fails, times out or is skipped is
recorded as such and the run goes on, so one run always writes gpu-<device>-<date>.json and .md.

    benchmarks/gpu/run.sh                      # on the GPU machine: installs carried wheels, then this
    python -m benchmarks.gpu.driver --dry-run  # on a CPU: tiny model, real fit, synthetic GPU figures
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.gpu.goals import evaluate, markdown  # noqa: E402
from leanserve.hardware import cpu_name  # noqa: E402  (no torch: os and /proc only)

RESERVE_S = 15  # kept back from the deadline for writing the results
MIN_STEP_S = 20  # a step with less time than this left is skipped, not started
LIBRARIES = ("torch", "transformers", "vllm", "compressed-tensors", "fastapi", "pydantic", "leanserve")


@dataclass(frozen=True)
class Step:
    name: str  # the result's key
    kind: str  # benchmarks.gpu.steps entry
    budget_s: int
    argv: tuple[str, ...] = ()
    needs_gpu: bool = True


def plan_steps(model_dir: str, tiny: bool) -> list[Step]:
    m = ("--model", model_dir)
    return [
        Step("build", "build", 150, ("--tiny",) if tiny else (), needs_gpu=False),
        Step("fit", "fit", 60, m, needs_gpu=False),
        Step("leanserve-bf16", "leanserve", 200, (*m, "--profile", "bf16", "--max-model-len", "1024",
                                                  "--streams", "1", "64", "--ttft", "--greedy")),
        Step("leanserve-gptq4", "leanserve", 170, (*m, "--profile", "gptq-4", "--with-budget", "--streams", "1",
                                                   "--ttft")),
        Step("direct-bf16", "direct", 130, (*m, "--max-model-len", "1024", "--streams", "1", "64", "--ttft",
                                            "--greedy")),
    ]


# --- the machine ----------------------------------------------------------------------------------------------------
def gpu_info() -> dict[str, Any]:
    """Name, memory and driver from nvidia-smi (no CUDA context in this process), else the CPU's name."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()[0]
        name, memory, driver = (x.strip() for x in out.split(","))
        return {"device": name, "device_source": "nvidia-smi", "memory_total": memory, "driver": driver}
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return {"device": cpu_name(), "device_source": "no nvidia-smi: CPU"}


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'h200'; anything else -> a file-safe lower-case name."""
    m = re.search(r"\b([ABHLV]\d{2,3}|GB?\d{3})\b", name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "device"


def versions() -> dict[str, str]:
    from leanserve.compressors.job import library_versions

    return {"python": sys.version.split()[0], **library_versions(LIBRARIES)}


def nvml_used() -> int | None:
    from benchmarks.gpu.steps import nvml_used as used

    return used()


# --- running a step -------------------------------------------------------------------------------------------------
def run_step(step: Step, common: list[str], work: Path, timeout_s: float) -> dict[str, Any]:
    """The step in its own session; on timeout its whole process group (servers too) is killed."""
    result_path, log_path = work / f"{step.name}.json", work / f"{step.name}.log"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks.gpu.steps", step.kind, "--result", str(result_path), *common, *step.argv]
    started = time.perf_counter()
    status, rc = "ok", None
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            status = "timeout"
            _kill_group(proc)
    record: dict[str, Any] = {"status": status, "returncode": rc, "seconds": round(time.perf_counter() - started, 1),
                              "timeout_s": round(timeout_s), "command": " ".join(cmd), "log": str(log_path)}
    try:
        record["result"] = json.loads(result_path.read_text())
    except (OSError, ValueError):
        record["result"] = {}
    if status != "ok":
        record["log_tail"] = log_path.read_text(errors="replace")[-3000:]
    record["nvml_used_after"] = nvml_used()  # memory left behind would spoil the next step's figures
    return record


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --- synthetic figures for --dry-run --------------------------------------------------------------------------------
def synthetic(case: str, fit: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Results shaped as the GPU steps write them: `pass` meets every goal, `fail` misses every one."""
    good = case == "pass"
    kv = (fit.get("shape") or {}).get("kv_tokens") or 40000
    ids = list(range(100, 132))

    def speed(one: float, many: float) -> dict[str, Any]:
        return {"1": {"tokens_per_s": one, "ttft_s": 0.02}, "64": {"tokens_per_s": many, "ttft_s": 0.05}}

    gib = 1 << 30
    return {
        "leanserve-bf16": {"speed": speed(100.0 if good else 80.0, 4000.0 if good else 3000.0), "ready_s": 60.0,
                           "ttft": {"prompt_tokens": 512, "p50_s": 0.030 if good else 0.080}, "greedy": {"ids": ids}},
        "direct-bf16": {"speed": speed(102.0, 4100.0), "ready_s": 40.0, "greedy": {"ids": ids if good else ids[:5] + [7] * 27}},
        "leanserve-gptq4": {"speed": {"1": {"tokens_per_s": 190.0 if good else 120.0, "ttft_s": 0.02}}, "ready_s": 90.0,
                            "vllm": {"kv_tokens": int(kv * (1.05 if good else 1.5))},
                            "nvml": {"baseline_bytes": 0, "peak_bytes": int((7.6 if good else 9.5) * gib)},
                            "metrics_peak_bytes": {"gpu_nvml_used": int((7.5 if good else 9.4) * gib)}},
    }


# --- the run --------------------------------------------------------------------------------------------------------
def write_outputs(payload: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-{payload['device_slug']}-{payload['date'][:10]}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md_path.write_text(markdown(payload))
    return json_path, md_path


def collect_logs(work: Path, out: Path, cap: int = 4 << 20) -> None:
    """Every step's and server's log in one file under --out (the device returns at most 8 files)."""
    with (out / "gpu-logs.txt").open("w") as dst:
        for log in sorted(work.glob("*.log")):
            text = log.read_text(errors="replace")
            dst.write(f"===== {log.name} ({len(text)} chars, at most the last {cap // 8})\n{text[-cap // 8:]}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or HERE.parent / "results"),
                    help="where the JSON, the markdown and the logs go (default: $OUT, else benchmarks/results)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"), help="models, leanserve home, step files")
    ap.add_argument("--deadline-s", type=float, default=420, help="the whole run's time, steps' budgets inside it")
    ap.add_argument("--only", nargs="+", default=None, help="run only these steps (a second run on a warm machine)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the model even if --work holds it")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--install-status", default=None, help="run.sh: how installing the wheels went")
    ap.add_argument("--dry-run", action="store_true", help="CPU only: tiny model, real build and fit, synthetic GPU figures")
    ap.add_argument("--synthetic", choices=("pass", "fail"), default="pass", help="--dry-run: which synthetic case")
    ap.add_argument("--keep-work", action="store_true", help="--dry-run: keep the tiny model and the step files")
    args = ap.parse_args(argv)
    if args.dry_run and args.work == Path("/tmp/gpu-bench"):
        args.work = args.out / "dry-run-work"
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    model_dir = work / ("tiny-llama" if args.dry_run else "llama-7b-random")
    info = gpu_info()
    payload: dict[str, Any] = {
        "benchmark": "gpu", "issue": 15, "dry_run": args.dry_run,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **info, "device_slug": "dry-run" if args.dry_run else device_slug(info["device"]),
        "versions": versions(), "install": args.install_status,
        "model": {"shape": "llama-7b" + (" (tiny: 2 layers, hidden 64)" if args.dry_run else ""),
                  "weights": "random (LlamaForCausalLM init), bf16", "dir": str(model_dir),
                  "tokenizer": "generated word-level, vocabulary = the shape's vocab_size",
                  "w4a16": "round-to-nearest through compressed-tensors, served as profile gptq-4"},
        "workload": {"output_tokens": args.output_tokens, "streams": [1, 64], "repeats": args.repeats,
                     "ttft_prompt_tokens": 512, "greedy_tokens": 32, "sampling": "greedy, ignore_eos"},
        "deadline_s": args.deadline_s, "steps": {}, "results": {}, "goals": [],
    }
    common = ["--work", str(work), "--home", str(home), "--repeats", str(args.repeats),
              "--output-tokens", str(args.output_tokens), *(["--rebuild"] if args.rebuild else [])]
    if args.dry_run:
        common += ["--vocab-size", "512"]
    for step in plan_steps(str(model_dir), tiny=args.dry_run):
        if args.only and step.name not in args.only:
            continue
        left = args.deadline_s - (time.perf_counter() - started) - RESERVE_S
        if args.dry_run and step.needs_gpu:
            payload["steps"][step.name] = {"status": "synthetic", "seconds": 0.0}
            continue
        if step.name != "build" and payload["steps"].get("build", {}).get("status") not in (None, "ok"):
            payload["steps"][step.name] = {"status": "skipped", "reason": "the build step did not succeed"}
            continue
        if left < MIN_STEP_S:
            payload["steps"][step.name] = {"status": "skipped", "reason": f"{left:.0f} s left of the deadline"}
            continue
        print(f"[gpu] {step.name}: up to {min(step.budget_s, left):.0f} s", flush=True)
        record = run_step(step, common, work, min(step.budget_s, left))
        payload["results"][step.name] = record.pop("result")
        payload["steps"][step.name] = record
        print(f"[gpu] {step.name}: {record['status']} in {record['seconds']} s", flush=True)
        payload["goals"] = [g.to_dict() for g in evaluate(payload["results"])]
        write_outputs(payload, args.out)  # after every step: a run killed later still leaves its JSON
    if args.dry_run:
        payload["results"].update(synthetic(args.synthetic, payload["results"].get("fit", {})))
    payload["goals"] = [g.to_dict() for g in evaluate(payload["results"])]
    payload["wall_s"] = round(time.perf_counter() - started, 1)
    json_path, md_path = write_outputs(payload, args.out)
    collect_logs(work, args.out)
    print(md_path.read_text(), flush=True)
    print(f"[gpu] wrote {json_path} and {md_path}", flush=True)
    if args.dry_run and not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return json_path


if __name__ == "__main__":
    main()
