"""Peak RSS of one 8k-token scoring request (echo + logprobs + max_tokens 0), as lm-eval's
loglikelihood sends it, against a real server.

Scoring used to hold the full [tokens, vocab] float32 log-softmax (and the logits beside it): one
8,000-token request raised the server's RSS by 3.2 GB. It now computes logprobs 128 rows at a time.
The server's RSS (whole process tree) is sampled from a thread every 20 ms while the request runs;
the row is the peak minus the RSS just before it.

    python benchmarks/score_memory.py [--tokens 8000] [--engine transformers]
        [--out benchmarks/results/score_memory-cpu.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name  # noqa: E402
from leanserve import models  # noqa: E402
from leanserve.settings import default_home  # noqa: E402
from tests.servers import API_KEY, start_server  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def tree_rss(proc: psutil.Process) -> int:
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8000)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "score_memory-cpu.json")
    args = ap.parse_args()
    home = default_home()
    models.pull_default(home)
    server = start_server(args.engine, "bf16", home, "--max-model-len", str(args.tokens + 200),
                          "--max-body-bytes", "10000000")
    try:
        proc = psutil.Process(server.proc.pid)
        body = {"model": models.DEFAULT_MODEL, "prompt": "word " * args.tokens, "max_tokens": 0, "echo": True,
                "logprobs": 1}
        warm = httpx.post(f"{server.base_url}/v1/completions", headers=AUTH, timeout=600,
                          json={**body, "prompt": "word " * 200})
        warm.raise_for_status()
        before = tree_rss(proc)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak[0] = max(peak[0], tree_rss(proc))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        r = httpx.post(f"{server.base_url}/v1/completions", headers=AUTH, json=body, timeout=1800)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        r.raise_for_status()
        scored = len(r.json()["choices"][0]["logprobs"]["token_logprobs"])
    finally:
        server.stop()
    result = {"device": device_name(), "date": dt.date.today().isoformat(), "engine": args.engine, "profile": "bf16",
              "model": models.DEFAULT_MODEL, "prompt_tokens": scored, "rss_before_bytes": before,
              "rss_peak_bytes": peak[0], "rss_increase_bytes": peak[0] - before, "seconds": round(seconds, 2),
              "before_this_change": "3.2 GB increase for 8,000 tokens (issue 12, full [tokens, vocab] log-softmax)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"{'engine':<14}{'tokens':>8}{'RSS before':>14}{'peak':>10}{'increase':>12}{'seconds':>10}")
    print(f"{args.engine:<14}{scored:>8}{before / 1e6:>12.0f}MB{peak[0] / 1e6:>8.0f}MB"
          f"{(peak[0] - before) / 1e6:>10.0f}MB{seconds:>10.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
