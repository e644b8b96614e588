"""`leanserve loadtest`: run the Locust users headless against a URL, then write the summary and plot.

Locust runs as a `locust --headless` subprocess rather than as a library: it monkey-patches the
standard library with gevent on import, which must not happen inside the leanserve CLI (or a test
process that also runs servers and clients). The users append one JSON line per request; the
summary is computed from those lines once Locust has exited.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from leanserve.errors import LeanserveError
from leanserve.loadtest import lengths
from leanserve.loadtest.lengths import Lengths
from leanserve.loadtest.plot import plot
from leanserve.loadtest.summary import locust_failures, read_records, summarize, to_markdown

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


class LoadtestError(LeanserveError):
    """The load test could not run (server unreachable, Locust missing or failed)."""


@dataclass(frozen=True)
class LoadtestConfig:
    url: str
    users: int = 4
    spawn_rate: float = 1.0
    duration_s: int = 60
    prompt_tokens: str = lengths.DEFAULT
    answer_tokens: str = lengths.DEFAULT
    model: str | None = None
    temperature: float = 0.7
    think_time_s: float = 0.0
    stop_timeout_s: int = 60  # at the end, requests in flight get this long to finish (not counted as failures)


def parse_duration(text: str) -> int:
    """'90', '90s', '2m', '1h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smh]?)\s*", text)
    if not m or int(m.group(1)) == 0:
        raise LoadtestError(f"cannot read duration {text!r}; write e.g. 60, 60s, 2m", param="duration")
    return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def probe(url: str, api_key: str | None) -> dict[str, Any]:
    """What the server says about itself; fails with a readable message if it cannot serve."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        health = httpx.get(f"{url}/health", timeout=10)
        models = httpx.get(f"{url}/v1/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise LoadtestError(f"cannot reach {url}: {exc}", param="url") from exc
    if models.status_code == 401:
        raise LoadtestError(f"{url} wants an API key: pass --api-key (or LEANSERVE_API_KEY)", param="api_key")
    if health.status_code != 200 or models.status_code != 200:
        raise LoadtestError(f"{url} is not ready: /health {health.status_code} {health.text[:200]}", param="url")
    info = health.json() if health.headers.get("content-type", "").startswith("application/json") else {}
    return {"model": models.json()["data"][0]["id"], **{k: v for k, v in info.items() if k != "status"}}


def locust_command(cfg: LoadtestConfig, out: Path, model: str) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", cfg.url,
        "--users", str(cfg.users), "--spawn-rate", str(cfg.spawn_rate), "--run-time", f"{cfg.duration_s}s",
        "--stop-timeout", str(cfg.stop_timeout_s), "--csv", str(out / "locust"), "--csv-full-history",
        "--only-summary", "--exit-code-on-error", "0", "--loglevel", "WARNING",
        "--records", str(out / "requests.jsonl"), "--model", model,
        "--prompt-tokens", cfg.prompt_tokens, "--answer-tokens", cfg.answer_tokens,
        "--temperature", str(cfg.temperature), "--think-time", str(cfg.think_time_s),
    ]


def run(cfg: LoadtestConfig, out: Path, api_key: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run Locust for cfg.duration_s, write summary.json, summary.md and loadtest.png into `out`."""
    for dist in (cfg.prompt_tokens, cfg.answer_tokens):
        try:
            Lengths.parse(dist)
        except ValueError as exc:
            raise LoadtestError(str(exc), param="prompt_tokens") from exc
    if importlib.util.find_spec("locust") is None:
        raise LoadtestError("Locust is not installed here: pip install 'leanserve[loadtest]'")
    server = probe(cfg.url, api_key)
    out.mkdir(parents=True, exist_ok=True)
    (out / "requests.jsonl").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if api_key:
        env["LEANSERVE_API_KEY"] = api_key  # not on the command line, where `ps` shows it
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    cmd = locust_command(cfg, out, cfg.model or server["model"])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=cfg.duration_s + cfg.stop_timeout_s + 120)
    except subprocess.TimeoutExpired as exc:
        raise LoadtestError(f"locust did not finish within {exc.timeout:.0f} s") from exc
    (out / "locust.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise LoadtestError(f"locust exited with {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    records = read_records(out / "requests.jsonl")
    summary = {
        "run": {"url": cfg.url, "started": started, **{k: v for k, v in asdict(cfg).items() if k != "url"},
                **(extra or {})},
        "server": server,
        **summarize(records, locust_failure_count=locust_failures(out / "locust_stats.csv"), window_s=cfg.duration_s),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(to_markdown(summary))
    plot(records, out / "loadtest.png", f"{server['model']} ({server.get('profile', '?')}), {cfg.users} users")
    return summary
