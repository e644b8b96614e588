"""The report's plots: memory vs eval time, perplexity and accuracy vs size (with Wilson 95% error bars
and chance drawn as a line), compression and speed bars. Labels are placed so that none overlaps another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.text import Text

from leanserve.evals.report import ACCURACY_SUITES, MIB, Row

DPI = 120


GAP_PX = 3  # kept between any two labels: touching labels read as one


def place_labels(ax: Any, points: list[tuple[float, float, str]], fontsize: float = 8) -> list[Any]:
    """Annotate each (x, y, label), then move labels up, lowest anchor first, until no two boxes overlap.

    A label that would run past the axes' right edge goes to the left of its point instead, so the
    rightmost point's label is not cut by the frame. Greedy and finite: a label that hits placed ones jumps
    above the highest of them, so each label moves at most once per label placed before it. A thin line
    ties a moved label to its point."""
    fig = ax.figure
    anns = [ax.annotate(label, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=fontsize,
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 2})
            for x, y, label in points]
    if not anns:
        return anns
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def box(a: Any) -> Any:  # the text alone: an Annotation's own extent includes its connecting line
        return Text.get_window_extent(a, renderer)

    right_edge = ax.get_window_extent(renderer).x1
    for a in anns:
        if box(a).x1 > right_edge:
            a.set_horizontalalignment("right")
            a.xyann = (-a.xyann[0], a.xyann[1])
    anchors = {id(a): ax.transData.transform(a.xy)[1] for a in anns}
    placed: list[Any] = []
    for a in sorted(anns, key=lambda a: anchors[id(a)]):
        while hits := [b for b in placed if b.overlaps(box(a).padded(GAP_PX))]:
            up = max(b.y1 for b in hits) - box(a).y0 + GAP_PX + 1  # pixels; overlaps() counts touching
            a.xyann = (a.xyann[0], a.xyann[1] + up * 72 / fig.dpi)
        placed.append(box(a))
    return anns


def _labels(rows: list[Row]) -> list[str]:
    return [f"{r.profile} ({r.engine})" if len({x.engine for x in rows}) > 1 else r.profile for r in rows]


def _memory_vs_time(rows: list[Row], labels: list[str], plt: Any) -> Any:
    fig, ax = plt.subplots(figsize=(7, 5), dpi=DPI)  # seed 000's Figure 6: memory against benchmark time
    pts = [(r.peak_memory_bytes / MIB, r.eval_time_s, label) for r, label in zip(rows, labels) if r.peak_memory_bytes]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=40)
    ax.set(xlabel="peak memory during eval (MiB)", ylabel="eval time (s)", title="Memory vs benchmark time")
    ax.grid(alpha=0.3)
    place_labels(ax, pts)
    return fig


def _quality_vs_size(rows: list[Row], labels: list[str], plt: Any) -> Any:
    import matplotlib.ticker

    suites = [s for s in ACCURACY_SUITES if any(s in r.scores for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(suites), figsize=(6 * (1 + len(suites)), 5), dpi=DPI, squeeze=False)
    a1 = axes[0][0]
    pts = [(r.size_bytes / MIB, r.ppl, label) for r, label in zip(rows, labels) if r.size_bytes and r.ppl]
    for r in rows:
        if r.size_bytes and r.ppl:
            a1.scatter(r.size_bytes / MIB, r.ppl, s=60 if r.pareto else 30, marker="*" if r.pareto else "o",
                       color="tab:orange" if r.pareto else "tab:blue")
    a1.set(xlabel="size (MiB)", ylabel="WikiText-2 perplexity (log scale)", yscale="log",
           title="Perplexity vs size (★ Pareto-best)")
    # labelled ticks at 1, 1.5, 2, 3, 5, 7 x 10^k: a range inside one decade still gets numbers
    a1.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    a1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a1.grid(alpha=0.3)
    place_labels(a1, pts)
    for ax, suite in zip(axes[0][1:], suites):
        scored = [(r, label) for r, label in zip(rows, labels) if suite in r.scores and r.size_bytes]
        xs = [r.size_bytes / MIB for r, _ in scored]
        ys = [100 * r.scores[suite] for r, _ in scored]
        lo = [100 * (r.scores[suite] - r.intervals[suite][0]) for r, _ in scored]
        hi = [100 * (r.intervals[suite][1] - r.scores[suite]) for r, _ in scored]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, color="tab:blue", label="accuracy, Wilson 95%")
        chance = [r.chance[suite] for r, _ in scored if suite in r.chance]
        if chance:
            level = 100 * sum(chance) / len(chance)
            ax.axhline(level, color="tab:red", ls="--", lw=1, label=f"chance ({level:.0f}%)")
        n = max((int(r.counts.get(suite, "0").split()[0]) for r, _ in scored), default=0)
        ax.set(xlabel="size (MiB)", ylabel="accuracy (%)", title=f"{ACCURACY_SUITES[suite]} vs size ({n} questions)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        place_labels(ax, [(x, y, label) for x, y, (_, label) in zip(xs, ys, scored)], fontsize=7)
    return fig


def _compression_speed(rows: list[Row], labels: list[str], plt: Any) -> Any:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=DPI)  # seed 000's Figure 7: compression ratios
    a1.bar(labels, [r.compression or 0 for r in rows], color="tab:blue")
    a1.set(ylabel="compression vs bf16 (x)", title="Compression ratio")
    a2.bar(labels, [r.tokens_per_s or 0 for r in rows], color="tab:green")
    a2.set(ylabel="tokens/s, one stream", title="Decode speed")
    for a in (a1, a2):
        a.tick_params(axis="x", rotation=60, labelsize=8)
        a.grid(axis="y", alpha=0.3)
    return fig


def plots(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(rows)
    written = []
    for name, draw in (("memory_vs_time.png", _memory_vs_time), ("accuracy_vs_size.png", _quality_vs_size),
                       ("compression_speed.png", _compression_speed)):
        fig = draw(rows, labels, plt)
        fig.savefig(out / name, dpi=DPI, bbox_inches="tight")  # tight: moved labels stay inside the image
        plt.close(fig)
        written.append(out / name)
    return written
