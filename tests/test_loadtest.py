"""The load test: a short bounded Locust run against the real server, and its pieces."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from leanserve.loadtest.lengths import Lengths
from leanserve.loadtest.runner import LoadtestConfig, LoadtestError, parse_duration, run
from leanserve.loadtest.summary import percentile, summarize, to_markdown
from tests.conftest import ServerPool
from tests.servers import API_KEY

pytestmark = pytest.mark.server


def test_lengths_parse_and_sample_within_bounds() -> None:
    rng = random.Random(0)
    uniform = Lengths.parse("uniform:8:32")
    assert all(8 <= uniform.sample(rng) <= 32 for _ in range(200))
    assert Lengths.parse("fixed:16").sample(rng) == 16
    assert all(Lengths.parse("normal:5:50").sample(rng) >= 1 for _ in range(200))
    for bad in ("uniform:32:8", "gamma:1:2", "fixed", "fixed:x", "fixed:0"):
        with pytest.raises(ValueError):
            Lengths.parse(bad)


def test_percentiles_and_summary_by_hand() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([10], 99) == 10
    records = [
        {"start": 100.0, "e2e": 2.0, "ttft": 0.5, "itl": 0.1, "output_tokens": 16, "prompt_tokens": 20, "ok": True,
         "chunks": [0.5, 1.0, 2.0]},  # 16 tokens over 3 chunks, at 100.5, 101.0 and 102.0
        {"start": 101.0, "e2e": 3.0, "ttft": 1.5, "itl": 0.1, "output_tokens": 24, "prompt_tokens": 30, "ok": True,
         "chunks": [1.5, 3.0]},  # 24 tokens over 2 chunks, at 102.5 and 104.0
        {"start": 102.0, "e2e": 0.1, "ok": False, "error": "HTTP 500: boom"},
    ]
    s = summarize(records, locust_failure_count=1)
    assert (s["requests"], s["failures"], s["wall_s"], s["output_tokens"]) == (2, 1, 4.0, 40)
    assert s["output_tokens_per_s_incl_drain"] == 10.0 and s["requests_per_s_incl_drain"] == 0.5
    assert s["output_tokens_per_s"] == s["output_tokens_per_s_incl_drain"]  # no window: the whole wall
    windowed = summarize(records, window_s=2.0)
    assert windowed["window_s"] == 2.0 and windowed["output_tokens_per_s"] == pytest.approx(16 / 2)
    assert windowed["requests_per_s"] == pytest.approx(1 / 2)  # the first finished at 102.0
    assert s["ttft_s"]["p50"] == 1.0 and s["latency_s"]["max"] == 3.0
    assert "HTTP 500: boom" in to_markdown({**s, "run": {"users": 2, "url": "http://x"}})


def test_parse_duration() -> None:
    assert [parse_duration(x) for x in ("15", "15s", "2m")] == [15, 15, 120]
    with pytest.raises(LoadtestError):
        parse_duration("soon")


def test_loadtest_without_the_key_says_so(pool: ServerPool, tmp_path: Path) -> None:
    server = pool.get("transformers")
    with pytest.raises(LoadtestError, match="API key"):
        run(LoadtestConfig(url=server.base_url, duration_s=1), tmp_path)


def test_short_locust_run_against_the_real_server(pool: ServerPool, tmp_path: Path) -> None:
    server = pool.get("transformers")
    cfg = LoadtestConfig(url=server.base_url, users=3, spawn_rate=3, duration_s=12, prompt_tokens="uniform:8:48",
                         answer_tokens="uniform:8:24", stop_timeout_s=60)
    summary = run(cfg, tmp_path, api_key=API_KEY)
    assert summary["failures"] == 0, summary["errors"]
    assert summary["requests"] >= 3
    assert summary["output_tokens_per_s"] > 0 and summary["requests_per_s"] > 0
    assert 0 < summary["ttft_s"]["p50"] <= summary["ttft_s"]["p99"] < summary["latency_s"]["max"]
    assert summary["itl_s"]["p50"] > 0
    assert summary["server"]["profile"] == "bf16" and summary["server"]["engine"] == "transformers"
    # answers follow the distribution exactly (ignore_eos): 8..24 tokens each
    records = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert all(8 <= r["output_tokens"] == r["max_tokens"] <= 24 for r in records if r["ok"])
    assert summary["output_tokens"] == sum(r["output_tokens"] for r in records)
    # Locust's own stats carry our entries beside the HTTP request. Its CSV is written when the run
    # time ends, so requests that finish during the stop timeout (at most one per user) are not in it.
    with (tmp_path / "locust_stats.csv").open() as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    http = rows[("POST", "/v1/chat/completions")]
    in_csv = int(http["Request Count"])
    assert summary["requests"] - cfg.users <= in_csv <= summary["requests"] and int(http["Failure Count"]) == 0
    for kind, name in (("TTFT", "time to first token"), ("ITL", "inter-token latency"), ("TPS", "output tokens/s (value)")):
        assert int(rows[(kind, name)]["Request Count"]) == in_csv, kind
    first = sorted(records, key=lambda r: r["start"] + r["e2e"])[:in_csv]
    assert float(rows[("TTFT", "time to first token")]["Average Response Time"]) == pytest.approx(
        sum(r["ttft"] for r in first) / in_csv * 1000, rel=0.01)
    assert (tmp_path / "loadtest.png").stat().st_size > 10_000
    assert (tmp_path / "locust_stats_history.csv").exists()
    md = (tmp_path / "summary.md").read_text()
    assert "time to first token" in md and "requests/s" in md
