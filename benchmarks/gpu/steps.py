"""The GPU run's steps, one process each (`python -m benchmarks.gpu.steps NAME --result FILE ...`).

One process per step, so that a step that hangs or crashes is killed alone (with every server it
started: they share its process group) and its GPU memory is freed before the next. Each step
rewrites its result file after every measurement, so a step stopped at its time budget still leaves
what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu.measure import DirectBackend, HttpBackend, NvmlPeak, Workload, greedy, speed, ttft

VRAM_BUDGET = "8GiB"
KV_BLOCK_TOKENS = 16


def save(result: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(path)


def nvml_used() -> int | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used)
    except Exception:  # no NVML (a CPU machine)
        return None


# --- build: the bf16 model and its W4A16 artifact ---------------------------------------------------------------
def step_build(args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    import torch

    from benchmarks.gpu import model as m
    from leanserve.profiles.store import artifact_dir, read_manifest

    bf16_dir = Path(args.work) / ("tiny-llama" if args.tiny else "llama-7b-random")
    home = Path(args.home)
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    result.update(device=device, bf16_dir=str(bf16_dir))
    if device == "cuda":  # what one CUDA context costs on this machine (the budget goal allows one)
        before = nvml_used()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        after = nvml_used()
        result["cuda_context_bytes"] = after - before if before is not None and after is not None else None
    # the artifact's folder is named after the model directory once that exists (model_slug)
    reuse = not args.rebuild and (bf16_dir / "config.json").is_file() and \
        read_manifest(artifact_dir(home, str(bf16_dir), m.W4A16_PROFILE)) is not None
    if reuse:
        result["reused"] = True
    else:
        config = m.shape_config(tiny=args.tiny)
        t0 = time.perf_counter()
        model = m.build_bf16(config, bf16_dir, device)
        result.update(config=config, bf16_build_s=round(time.perf_counter() - t0, 1))
        save(result, out)
        t0 = time.perf_counter()
        m.write_artifact(model, bf16_dir, home)
        result["w4a16_build_s"] = round(time.perf_counter() - t0, 1)
    artifact = artifact_dir(home, str(bf16_dir), m.W4A16_PROFILE)
    result["artifact_dir"] = str(artifact)
    result["bf16_bytes"] = m.weights_bytes(bf16_dir)
    result["w4a16_bytes"] = m.weights_bytes(artifact)
    result["config"] = json.loads((bf16_dir / "config.json").read_text())


# --- fit: what the planner predicts for the same shape and profile -----------------------------------------------
def fit_plan(model: str, home: str, vram: str) -> dict[str, Any]:
    """`leanserve fit --json` as a user runs it, plus the KV capacity in tokens that it implies."""
    cmd = [sys.executable, "-m", "leanserve.cli", "fit", "--vram", vram, "--profile", "gptq-4", "--model", model,
           "--home", home, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    if proc.returncode not in (0, 1):  # 1: nothing fits, still a plan
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
    plan = json.loads(proc.stdout)
    blocks = max(0, plan["kv_budget"]) // (plan["kv_per_token"] * KV_BLOCK_TOKENS)
    plan["kv_tokens"] = blocks * KV_BLOCK_TOKENS  # whole blocks, as vLLM counts them
    return plan


def step_fit(args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    result["shape"] = fit_plan("shape:llama-7b", args.home, args.vram_budget)
    save(result, out)
    result["artifact"] = fit_plan(args.model, args.home, args.vram_budget)


# --- servers -----------------------------------------------------------------------------------------------------
KV_TOKENS = re.compile(r"GPU KV cache size: ([\d,]+) tokens")
KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
MAX_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
BUDGET_ARGS = re.compile(r"VRAM budget (\d+) of (\d+) bytes: (.*)")


def parse_vllm_log(text: str) -> dict[str, Any]:
    """vLLM's own report of the KV cache it allocated, read from its startup log."""
    out: dict[str, Any] = {}
    if m := KV_TOKENS.search(text):
        out["kv_tokens"] = int(m.group(1).replace(",", ""))
        out["kv_blocks"] = out["kv_tokens"] // KV_BLOCK_TOKENS
    if m := KV_GIB.search(text):
        out["kv_gib"] = float(m.group(1))
    if m := MAX_CONCURRENCY.search(text):
        out["max_concurrency"] = {"tokens_per_request": int(m.group(1).replace(",", "")), "x": float(m.group(2))}
    if m := BUDGET_ARGS.search(text):  # leanserve's own line: the budget, the card, what vLLM was told
        out["budget"] = {"bytes": int(m.group(1)), "gpu_total_bytes": int(m.group(2)), "engine_args": m.group(3).strip()}
    return out


class Server:
    """`leanserve serve` in this step's process group (so the driver's kill reaches it), logging to a file."""

    def __init__(self, cmd: list[str], log_path: Path, port: int) -> None:
        self.log_path, self.port = log_path, port
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /health answers 200 (it says 503 while the engine loads)."""
        import httpx

        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout_s:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        """SIGTERM (leanserve shuts vLLM down), then SIGKILL whatever of its tree is left."""
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()


def workload(args: argparse.Namespace) -> Workload:
    return Workload(output_tokens=args.output_tokens, streams=tuple(args.streams), repeats=args.repeats,
                    ttft_samples=args.ttft_samples, vocab_size=args.vocab_size)


async def measure_all(backend: Any, args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    w = workload(args)
    result["workload"] = w.to_dict()
    if args.greedy:
        result["greedy"] = await greedy(backend, w)
        save(result, out)
    result["speed"] = await speed(backend, w)
    save(result, out)
    if args.ttft:
        result["ttft"] = await ttft(backend, w)


async def measure_http(url: str, model: str, args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    backend = HttpBackend(url, model)  # made and closed in the one event loop its connections live in
    try:
        await measure_all(backend, args, result, out)
    finally:
        await backend.aclose()


def step_leanserve(args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    import httpx

    from leanserve.evals.client import EvalClient
    from leanserve.evals.runner import PeakMemory, free_port, scrape

    port = free_port()
    cmd = [sys.executable, "-m", "leanserve.cli", "serve", "--engine", args.engine, "--profile", args.profile,
           "--model", args.model, "--home", args.home, "--port", str(port), "--shutdown-grace", "1",
           *(["--max-model-len", str(args.max_model_len)] if args.max_model_len else []),
           *(["--vram-budget", args.vram_budget] if args.with_budget else [])]
    result["command"] = " ".join(cmd)
    with NvmlPeak() as nvml:  # from before the start: vLLM's profiling peak happens while it loads
        server = Server(cmd, out.with_suffix(".server.log"), port)
        try:
            result["ready_s"] = round(server.wait_ready(args.start_timeout), 1)
            result["vllm"] = parse_vllm_log(server.log_text())
            save(result, out)
            model = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"][0]["id"]
            with EvalClient(server.url, model) as client, PeakMemory(client, interval=0.5) as peak:
                asyncio.run(measure_http(server.url, model, args, result, out))
                result["metrics"] = scrape(client)
            result["metrics_peak_bytes"] = peak.peak
        finally:
            result["nvml"] = nvml.to_dict()
            result["server_log_tail"] = server.log_text()[-3000:]
            server.stop()


def step_direct(args: argparse.Namespace, result: dict[str, Any], out: Path) -> None:
    from leanserve.engines.base import EngineConfig
    from leanserve.engines.vllm import engine_kwargs
    from leanserve.profiles.registry import get_profile

    cfg = EngineConfig(model_path=args.model, load=get_profile("bf16", Path(args.home)).load, device="cuda",
                       dtype="bfloat16", max_model_len=args.max_model_len)
    kwargs = engine_kwargs(cfg)
    result["engine_args"] = kwargs

    async def run() -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        t0 = time.perf_counter()
        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        result["ready_s"] = round(time.perf_counter() - t0, 1)
        save(result, out)
        try:
            await measure_all(DirectBackend(engine), args, result, out)
        finally:
            engine.shutdown()

    asyncio.run(run())


STEPS = {"build": step_build, "fit": step_fit, "leanserve": step_leanserve, "direct": step_direct}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--work", default="/tmp/gpu-bench")
    ap.add_argument("--home", default="/tmp/gpu-bench/home")
    ap.add_argument("--model", help="the bf16 model directory (leanserve, direct, fit)")
    ap.add_argument("--tiny", action="store_true", help="build: the dry run's tiny shape, on the CPU")
    ap.add_argument("--rebuild", action="store_true", help="build: even if the model and artifact exist")
    ap.add_argument("--profile", default="bf16")
    ap.add_argument("--engine", default="vllm", help="leanserve: the engine to serve with (transformers: a CPU smoke test)")
    ap.add_argument("--vram-budget", default=VRAM_BUDGET)
    ap.add_argument("--with-budget", action="store_true", help="leanserve: serve with --vram-budget")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ttft-samples", type=int, default=8)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--ttft", action="store_true")
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--start-timeout", type=float, default=300)
    return ap


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    result: dict[str, Any] = {}
    try:
        STEPS[args.step](args, result, args.result)
    except BaseException as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[-4000:]
        raise
    finally:
        save(result, args.result)


if __name__ == "__main__":
    main()
