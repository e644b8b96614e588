"""What does the HTTP layer cost? Output tokens/s and TTFT through `leanserve serve` versus the same
engine called in process, at 1 and 8 concurrent streams, per engine.

Targets (issue 2): HTTP >= 0.9x direct at 1 stream; 8 streams >= 2x the aggregate of 1 stream.
Each engine runs in its own environment, so the script re-invokes itself there (`--worker`).
Prints a table; writes benchmarks/results/serve_overhead-<device>.json.

    python benchmarks/serve_overhead.py [--engines transformers vllm] [--tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."
STREAMS = (1, 8)


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    from leanserve.hardware import cpu_name

    return cpu_name()


def device_slug(device: str) -> str:
    """'gpu' or 'cpu': the suffix of a results file, so runs on the two kinds of machine sit side by side."""
    return "gpu" if "GPU" in device or "NVIDIA" in device else "cpu"


def write_result(out: Path, name: str, result: dict) -> Path:
    """`result` (which names its `device`) as out/<name>-<cpu|gpu>.json, written atomically; prints the path."""
    from leanserve.results import write_json

    path = write_json(out / f"{name}-{device_slug(result['device'])}.json", result)
    print(f"wrote {path}")
    return path


# --- one run: `streams` concurrent generations of `tokens` tokens, via a function that yields token counts --
async def measure(stream_fn, streams: int, tokens: int) -> dict[str, float]:  # noqa: ANN001
    ttfts: list[float] = []

    async def one(i: int) -> int:
        start = time.perf_counter()
        got = 0
        async for n in stream_fn(i):
            if got == 0 and n:
                ttfts.append(time.perf_counter() - start)
            got += n
        return got

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(streams)))
    wall = time.perf_counter() - start
    assert all(c == tokens for c in counts), counts
    return {"tokens_per_s": sum(counts) / wall, "ttft_s": statistics.median(ttfts)}


async def direct_runs(engine_name: str, model_dir: str, tokens: int, repeats: int) -> list[dict]:
    from leanserve.engines import engine_class
    from leanserve.engines.base import EngineConfig, GenerationRequest, SamplingOptions
    from leanserve.hardware import resolve_device
    from leanserve.paths import default_home
    from leanserve.profiles.registry import get_profile

    device = resolve_device("auto")
    spec = get_profile("bf16", default_home())
    cls = engine_class(engine_name)
    engine = cls(EngineConfig(model_dir, spec.load, device, cls.default_dtype(spec.load, device), max_model_len=1024))
    await engine.start()
    prompt_ids = engine.tokenizer.encode(PROMPT)
    counter = iter(range(1 << 30))

    def stream_fn(i: int):  # noqa: ANN202
        async def gen():  # noqa: ANN202
            req = GenerationRequest(f"bench-{next(counter)}", prompt_ids,
                                    SamplingOptions(max_tokens=tokens, temperature=0.0, ignore_eos=True))
            async for delta in engine.generate(req):
                yield len(delta.token_ids)
        return gen()

    out = await runs(stream_fn, tokens, repeats)
    await engine.shutdown()
    return out


async def http_runs(base_url: str, api_key: str, tokens: int, repeats: int) -> list[dict]:
    import httpx

    body = {"model": "smollm2-135m-instruct", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=600, headers=headers) as client:

        def stream_fn(i: int):  # noqa: ANN202
            async def gen():  # noqa: ANN202
                """Yields 1 at the first text (TTFT), then the rest of the exact count from usage."""
                first = True
                async with client.stream("POST", "/v1/completions", json=body) as r:
                    r.raise_for_status()
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if first and chunk["choices"] and chunk["choices"][0]["text"]:
                            first = False
                            yield 1
                        elif chunk.get("usage"):
                            yield chunk["usage"]["completion_tokens"] - 1
            return gen()

        return await runs(stream_fn, tokens, repeats)


async def runs(stream_fn, tokens: int, repeats: int) -> list[dict]:  # noqa: ANN001
    await measure(stream_fn, 1, tokens)  # warm-up: first-call costs (compile, allocation) are not overhead
    out = []
    for streams in STREAMS:
        samples = [await measure(stream_fn, streams, tokens) for _ in range(repeats)]
        out.append({"streams": streams,
                    "tokens_per_s": statistics.median(s["tokens_per_s"] for s in samples),
                    "ttft_s": statistics.median(s["ttft_s"] for s in samples),
                    "samples": samples})
    return out


def worker(engine: str, tokens: int, repeats: int, out: Path) -> None:
    """Inside the engine's environment: direct runs, then the same through a real server."""
    from leanserve import models
    from leanserve.paths import default_home
    from tests.servers import API_KEY, start_server

    model_dir = str(models.pull_default(default_home()))
    direct = asyncio.run(direct_runs(engine, model_dir, tokens, repeats))
    server = start_server(engine, "bf16", default_home())
    try:
        http = asyncio.run(http_runs(server.base_url, API_KEY, tokens, repeats))
    finally:
        server.stop()
    out.write_text(json.dumps({"engine": engine, "device": device_name(), "direct": direct, "http": http}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=["transformers", "vllm"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.tokens, args.repeats, args.out)
        return

    from tests.servers import engine_python

    results = []
    for engine in args.engines:
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [engine_python(engine), __file__, "--worker", engine, "--tokens", str(args.tokens),
                   "--repeats", str(args.repeats), "--out", tmp.name]
            subprocess.run(cmd, check=True, cwd=HERE.parent, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            results.append(json.loads(Path(tmp.name).read_text()))

    rows = []
    print(f"\n{'engine':<13}{'streams':>8}{'direct tok/s':>14}{'http tok/s':>12}{'http/direct':>13}"
          f"{'direct TTFT':>13}{'http TTFT':>11}")
    for res in results:
        for d, h in zip(res["direct"], res["http"]):
            ratio = h["tokens_per_s"] / d["tokens_per_s"]
            rows.append({"engine": res["engine"], "streams": d["streams"], "direct_tokens_per_s": d["tokens_per_s"],
                         "http_tokens_per_s": h["tokens_per_s"], "http_over_direct": ratio,
                         "direct_ttft_s": d["ttft_s"], "http_ttft_s": h["ttft_s"]})
            print(f"{res['engine']:<13}{d['streams']:>8}{d['tokens_per_s']:>14.1f}{h['tokens_per_s']:>12.1f}"
                  f"{ratio:>13.2f}{d['ttft_s'] * 1000:>11.0f}ms{h['ttft_s'] * 1000:>9.0f}ms")
    scaling = {}
    for res in results:
        by = {r["streams"]: r for r in res["http"]}
        scaling[res["engine"]] = by[8]["tokens_per_s"] / by[1]["tokens_per_s"]
        print(f"{res['engine']}: 8 streams / 1 stream (http aggregate) = {scaling[res['engine']]:.2f}x")
    device = results[0]["device"] if results else device_name()
    payload = {"benchmark": "serve_overhead", "date": dt.date.today().isoformat(), "device": device,
               "model": "smollm2-135m-instruct (bf16 profile)", "tokens_per_request": args.tokens,
               "repeats": args.repeats, "statistic": "median over repeats", "rows": rows,
               "http_scaling_8_over_1": scaling, "raw": results}
    write_result(HERE / "results", "serve_overhead", payload)


if __name__ == "__main__":
    main()
