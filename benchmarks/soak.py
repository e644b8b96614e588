"""Soak: a bounded mixed load against a real server for a long time, watching memory and errors.

Workers send, back to back, a mix of normal chats, streamed completions, streams cancelled after a
few tokens (the client hangs up) and malformed requests (each must get a 4xx). After `--warmup`
seconds the server's RSS (its whole process tree) is taken as the baseline; the load then runs for
`--duration` seconds more, and RSS over its last 15 s is compared to the baseline (both medians of
samples under the same load; RSS once idle is recorded too). Passes when no
response was a 5xx and RSS grew by at most `--max-growth` percent. Not a CI test (12+ minutes).

Allocator: glibc gives each thread its own malloc arena, and a server with a generation thread, a
thread pool and tokenizers fragments into many of them, so RSS creeps for minutes without a leak.
The server runs with MALLOC_ARENA_MAX=2 (`--malloc-arena-max`, recorded in the JSON) unless set to 0.

    python benchmarks/soak.py [--duration 720] [--warmup 120] [--workers 4] [--engine transformers]
        [--out benchmarks/results/soak-cpu.json]

Prints a table; writes the JSON summary (device, date, counts per kind, 5xx, RSS, growth %).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name  # noqa: E402
from leanserve import models  # noqa: E402
from leanserve.paths import default_home  # noqa: E402
from tests.servers import API_KEY, Server, start_server  # noqa: E402
from tests.test_metrics import one, scrape  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MODEL = models.DEFAULT_MODEL
WEIGHTS = {"normal": 4, "stream": 3, "cancelled": 2, "malformed": 2}
PROMPTS = ["Tell me about the sea.", "What is the capital of France?", "Write a haiku about GPUs.",
           "Explain what a compiler does.", "List three colours."]
MALFORMED: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b'{"model": '),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": []}).encode()),
    ("/v1/chat/completions", json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                         "max_tokens": "ten"}).encode()),
    ("/v1/completions", json.dumps({"model": "../../etc/passwd", "prompt": "x"}).encode()),
    ("/v1/completions", json.dumps({"model": MODEL, "prompt": [10**9]}).encode()),
    ("/v1/completions", b'{"model": "' + MODEL.encode() + b'", "prompt": "\\ud800"}'),
    ("/v1/completions", b'{"model": "\xff\xfe"}'),
    ("/v1/chat/completions", b"[" * 5000 + b"]" * 5000),
]


def tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


class Load:
    def __init__(self, base_url: str, seed: int) -> None:
        self.base = base_url
        self.rng = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()  # "kind status"
        self.server_errors: list[str] = []
        self.unexpected: list[str] = []

    def _record(self, kind: str, status: int, detail: str = "") -> None:
        self.counts[kind] += 1
        self.statuses[f"{kind} {status}"] += 1
        if status >= 500:
            self.server_errors.append(f"{kind} {status} {detail[:200]}")

    async def one(self, client: httpx.AsyncClient) -> None:
        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        prompt = self.rng.choice(PROMPTS)
        if kind == "normal":
            body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": self.rng.randint(8, 48), "temperature": 0.7}
            r = await client.post(f"{self.base}/v1/chat/completions", json=body)
            self._record(kind, r.status_code, r.text)
            if r.status_code != 200:
                self.unexpected.append(f"normal {r.status_code} {r.text[:200]}")
        elif kind in ("stream", "cancelled"):
            tokens = self.rng.randint(8, 48) if kind == "stream" else 200
            body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "stream": True, "temperature": 0.7,
                    "ignore_eos": kind == "cancelled"}
            async with client.stream("POST", f"{self.base}/v1/completions", json=body) as r:
                seen = 0
                async for line in r.aiter_lines():
                    seen += line.startswith("data: ")
                    if kind == "cancelled" and seen >= 3:
                        break  # leaving the block closes the connection mid-stream
                self._record(kind, r.status_code)
        else:
            path, raw = self.rng.choice(MALFORMED)
            r = await client.post(f"{self.base}{path}", content=raw,
                                  headers={**AUTH, "content-type": "application/json"})
            self._record(kind, r.status_code, r.text)
            if not 400 <= r.status_code < 500:
                self.unexpected.append(f"malformed {r.status_code} {r.text[:200]}")

    async def worker(self, until: float) -> None:
        async with httpx.AsyncClient(headers=AUTH, timeout=300) as client:
            while time.monotonic() < until:
                try:
                    await self.one(client)
                except httpx.HTTPError as exc:  # a transport error is a failure too, not a crash of the soak
                    self.counts["transport_error"] += 1
                    self.unexpected.append(f"{type(exc).__name__}: {exc}")


async def sample_rss(pid: int, until: float, every: float, out: list[tuple[float, int]], t0: float) -> None:
    while time.monotonic() < until:
        out.append((round(time.monotonic() - t0, 1), tree_rss(pid)))
        await asyncio.sleep(every)  # sampling period, not synchronisation


async def run_load(server: Server, args: argparse.Namespace) -> dict:
    load = Load(server.base_url, args.seed)
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    until = t0 + args.warmup + args.duration
    workers = [asyncio.create_task(load.worker(until)) for _ in range(args.workers)]
    sampler = asyncio.create_task(sample_rss(server.proc.pid, until, args.sample_every, samples, t0))
    await asyncio.gather(*workers, sampler)
    # both figures under the same load: the median of the samples in the last WINDOW seconds of the
    # warm-up, and in the last WINDOW seconds of the run; then RSS once idle, for information
    window = 3 * args.sample_every
    end = args.warmup + args.duration
    warm = [rss for t, rss in samples if args.warmup - window <= t <= args.warmup] or [samples[0][1]]
    last = [rss for t, rss in samples if t >= end - window] or [samples[-1][1]]
    rss_warm, rss_end = int(statistics.median(warm)), int(statistics.median(last))
    deadline = time.monotonic() + 60  # bounded wait for the running gauge to reach 0
    while one(scrape(server), "leanserve_requests_running", profile=args.profile) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    rss_idle = tree_rss(server.proc.pid)
    metrics = scrape(server)
    return {
        "counts": dict(load.counts), "statuses": dict(load.statuses),
        "server_errors_5xx": len(load.server_errors), "server_error_samples": load.server_errors[:10],
        "unexpected": load.unexpected[:10], "unexpected_count": len(load.unexpected),
        "rss_after_warmup_bytes": rss_warm, "rss_end_bytes": rss_end, "rss_idle_after_bytes": rss_idle,
        "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
        "rss_peak_bytes": max(rss for _, rss in samples),
        "rss_samples": samples,
        "running_at_end": one(metrics, "leanserve_requests_running", profile=args.profile),
        "server_5xx_in_metrics": sum(v for k, v in metrics.get("leanserve_requests_total", {}).items()
                                     if dict(k).get("status", "").startswith("5")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=720, help="seconds of load after the warm-up")
    ap.add_argument("--warmup", type=float, default=120, help="seconds of load before the RSS baseline")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--profile", default="bf16")
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent")
    ap.add_argument("--malloc-arena-max", type=int, default=2, help="0: leave glibc's default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak-cpu.json")
    args = ap.parse_args()
    home = default_home()
    models.pull_default(home)
    if args.malloc_arena_max:
        os.environ["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)  # the server subprocess inherits it
    server = start_server(args.engine, args.profile, home, "--max-queue", str(4 * args.workers))
    try:
        result = asyncio.run(run_load(server, args))
    finally:
        server.stop()
    ok = result["server_errors_5xx"] == 0 and result["server_5xx_in_metrics"] == 0 and \
        result["rss_growth_pct"] <= args.max_growth and result["unexpected_count"] == 0
    summary = {
        "device": device_name(), "date": dt.date.today().isoformat(), "engine": args.engine,
        "profile": args.profile, "model": MODEL, "warmup_s": args.warmup, "duration_s": args.duration,
        "workers": args.workers, "malloc_arena_max": args.malloc_arena_max or None,
        "max_growth_pct": args.max_growth, "passed": ok, **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"soak: {args.engine}/{args.profile}, {args.warmup:.0f} s warm-up + {args.duration:.0f} s, "
          f"{args.workers} workers, {summary['device']}")
    print(f"{'kind':<12}{'requests':>10}  statuses")
    for kind in [*WEIGHTS, "transport_error"]:
        st = {k.split()[1]: v for k, v in result["statuses"].items() if k.split()[0] == kind}
        if result["counts"].get(kind):
            print(f"{kind:<12}{result['counts'][kind]:>10}  {st}")
    print(f"5xx: {result['server_errors_5xx']} (metrics: {result['server_5xx_in_metrics']:.0f}); "
          f"unexpected: {result['unexpected_count']}")
    print(f"RSS after warm-up {result['rss_after_warmup_bytes'] / 1e6:.0f} MB, at the end "
          f"{result['rss_end_bytes'] / 1e6:.0f} MB: {result['rss_growth_pct']:+.2f}% "
          f"(bound {args.max_growth}%) -> {'PASS' if ok else 'FAIL'}")
    print(f"wrote {args.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
