"""Tokens/s and time to first token over the course of a load test, as one PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from leanserve.loadtest.summary import token_times


def binned_rate(points: list[tuple[float, float]], width: float) -> tuple[list[float], list[float]]:
    """Sum of tokens per `width`-second bin divided by the width: (bin centres, tokens/s)."""
    if not points:
        return [], []
    n = int(max(t for t, _ in points) // width) + 1
    sums = [0.0] * n
    for t, k in points:
        sums[int(t // width)] += k
    return [(i + 0.5) * width for i in range(n)], [s / width for s in sums]


def plot(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("ok")]
    t0 = min((r["start"] for r in records), default=0.0)
    points = token_times(records)
    span = max((t for t, _ in points), default=1.0)
    width = max(1.0, math.ceil(span / 40))
    xs, rate = binned_rate(points, width)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot(xs, rate, drawstyle="steps-mid")
    top.set_ylabel(f"output tokens/s ({width:.0f} s bins)")
    top.set_title(title)
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    bottom.scatter([r["start"] - t0 for r in ok], [r["ttft"] * 1000 for r in ok], s=8, label="request (at send time)")
    failed = [r for r in records if not r.get("ok")]
    if failed:
        bottom.scatter([r["start"] - t0 for r in failed], [0] * len(failed), marker="x", color="red", label="failed")
    bottom.set_ylabel("time to first token (ms)")
    bottom.set_xlabel("seconds since the first request")
    bottom.grid(alpha=0.3)
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
