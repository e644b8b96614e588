"""From the per-request records a load test wrote to the figures a self-hoster reads.

Percentiles come from the raw records (Locust's own percentiles round response times into buckets),
throughput from the wall time between the first request sent and the last one finished.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

CUSTOM_TYPES = ("TTFT", "ITL", "TPS")  # our own Locust entries; not requests, never failures


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99, mean and max; None (JSON null) where there are no values."""
    if not values:
        return {k: None for k in ("p50", "p90", "p99", "mean", "max")}
    return {"p50": percentile(values, 50), "p90": percentile(values, 90), "p99": percentile(values, 99),
            "mean": sum(values) / len(values), "max": max(values)}


def locust_failures(stats_csv: Path) -> int:
    """Failures Locust counted on real requests (our TTFT/ITL/TPS entries excluded), from its CSV."""
    if not stats_csv.exists():
        return 0
    with stats_csv.open() as f:
        return sum(int(row["Failure Count"]) for row in csv.DictReader(f)
                   if row["Name"] != "Aggregated" and row["Type"] not in CUSTOM_TYPES)


def token_times(records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(seconds since the test began, tokens) per content chunk; a request's tokens spread over its chunks."""
    ok = [r for r in records if r.get("ok") and r.get("chunks")]
    if not ok:
        return []
    t0 = min(r["start"] for r in records)
    out = []
    for r in ok:
        per_chunk = r["output_tokens"] / len(r["chunks"])
        out += [(r["start"] - t0 + c, per_chunk) for c in r["chunks"]]
    return out


def summarize(records: list[dict[str, Any]], *, locust_failure_count: int = 0,
              window_s: float | None = None) -> dict[str, Any]:
    """Throughput, failures and latency percentiles (seconds) of one run.

    Throughput counts what happened in the first `window_s` seconds (the run time; all users busy
    once spawned), not the drain after it, when requests in flight finish with fewer and fewer users;
    `*_incl_drain` figures divide everything by the whole wall time instead."""
    ok = [r for r in records if r.get("ok")]
    failed = len(records) - len(ok)
    if records:
        start = min(r["start"] for r in records)
        end = max(r["start"] + r.get("e2e", 0.0) for r in records)
        wall = max(end - start, 1e-9)
    else:
        start, wall = 0.0, 0.0
    window = min(window_s, wall) if window_s else wall
    tokens = sum(r["output_tokens"] for r in ok)
    in_window = sum(k for t, k in token_times(records) if t <= window)
    done_in_window = sum(1 for r in ok if r["start"] + r["e2e"] - start <= window)
    return {
        "requests": len(ok),
        "failures": max(failed, locust_failure_count),
        "wall_s": wall,
        "window_s": window,
        "requests_per_s": done_in_window / window if window else 0.0,
        "output_tokens": tokens,
        "prompt_tokens": sum(r.get("prompt_tokens", 0) for r in ok),
        "output_tokens_per_s": in_window / window if window else 0.0,
        "requests_per_s_incl_drain": len(ok) / wall if wall else 0.0,
        "output_tokens_per_s_incl_drain": tokens / wall if wall else 0.0,
        "ttft_s": distribution([r["ttft"] for r in ok]),
        "latency_s": distribution([r["e2e"] for r in ok]),
        "itl_s": distribution([r["itl"] for r in ok if r["output_tokens"] > 1]),
        "request_tokens_per_s": distribution([r["output_tokens"] / r["e2e"] for r in ok]),
        "errors": sorted({r["error"] for r in records if r.get("error")})[:10],
    }


def _ms(d: dict[str, float | None], key: str) -> str:
    v = d.get(key)
    return "-" if v is None else f"{v * 1000:,.0f}"


def to_markdown(summary: dict[str, Any]) -> str:
    """The summary as a short markdown report (run settings, then the figures)."""
    run = summary.get("run", {})
    head = [f"# Load test: {run.get('users')} users against {run.get('url')}", ""]
    facts = {k: v for k, v in run.items() if k != "url"}
    head += [", ".join(f"{k}: {v}" for k, v in facts.items()), ""]
    if summary.get("server"):
        head += [f"server: {json.dumps(summary['server'])}", ""]
    rows = [
        "| figure | value |", "|---|---:|",
        f"| requests finished | {summary['requests']} |",
        f"| failures | {summary['failures']} |",
        f"| requests/s (finished in the {summary['window_s']:.0f} s run) | {summary['requests_per_s']:.2f} |",
        f"| output tokens/s (all users, in the run) | {summary['output_tokens_per_s']:.1f} |",
        f"| output tokens/s incl. the {summary['wall_s'] - summary['window_s']:.0f} s drain | {summary['output_tokens_per_s_incl_drain']:.1f} |",
        f"| output tokens | {summary['output_tokens']} |",
        "", "| ms | p50 | p90 | p99 | mean | max |", "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("time to first token", "ttft_s"), ("request latency (e2e)", "latency_s"),
                       ("inter-token latency", "itl_s")):
        d = summary[key]
        rows.append(f"| {label} | {_ms(d, 'p50')} | {_ms(d, 'p90')} | {_ms(d, 'p99')} | {_ms(d, 'mean')} | {_ms(d, 'max')} |")
    d = summary["request_tokens_per_s"]
    if d["p50"] is not None:
        rows += ["", f"Per request, output tokens/s: p50 {d['p50']:.1f}, p90 {d['p90']:.1f}, mean {d['mean']:.1f}."]
    if summary.get("errors"):
        rows += ["", "Errors:", *[f"- {e}" for e in summary["errors"]]]
    return "\n".join(head + rows) + "\n"
