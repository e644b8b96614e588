"""`leanserve report`: every evaluated profile side by side, from the results files only.

One row per (profile, engine) results file. Columns follow seed 000's Table 1: size on disk, memory,
perplexity, benchmark scores, eval time, speed, compression ratio. Rows that no other row beats on
size, perplexity and mean accuracy together are marked Pareto-best. Plots: memory vs eval time (seed
000's Figure 6), accuracy and perplexity vs size, compression ratios (its Figure 7), speed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leanserve.errors import LeanserveError

ACCURACY_SUITES = {"mmlu": "MMLU", "bbh": "BBH", "race-h": "RACE-H", "arc-challenge": "ARC-C", "gsm8k": "GSM8K"}
MB = 1e6


class ReportError(LeanserveError):
    """Nothing to report, or a results file that is not one."""


@dataclass
class Row:
    profile: str
    engine: str
    disk_bytes: float | None  # what the profile needs on disk (built artifact, or the base checkpoint)
    weights_bytes: float | None  # weights as loaded, where the engine reports them
    peak_memory_bytes: float | None  # peak process RSS on CPU, peak GPU memory on a GPU
    memory_kind: str
    ppl: float | None
    word_ppl: float | None
    scores: dict[str, float] = field(default_factory=dict)  # suite -> accuracy
    counts: dict[str, str] = field(default_factory=dict)  # suite -> "n of total"
    eval_time_s: float = 0.0
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    compression: float | None = None
    pareto: bool = False
    date: str = ""
    calibration: str = ""  # "samples x tokens" of the compressor job, for built artifacts

    @property
    def size_bytes(self) -> float | None:
        """The size compared across rows: the smaller of the checkpoint on disk and the weights as loaded.
        Profiles quantized at load (nf4, int8, int8-gblm) are their loaded weights; bf16 on a CPU loads as
        float32, and transformers decompresses GPTQ/AWQ, so for those the checkpoint is the size."""
        if self.weights_bytes and self.disk_bytes:
            return min(self.weights_bytes, self.disk_bytes)
        return self.disk_bytes

    @property
    def mean_accuracy(self) -> float | None:
        return sum(self.scores.values()) / len(self.scores) if self.scores else None


def _peak_memory(server: dict[str, Any]) -> tuple[float | None, str]:
    peak = {**server.get("memory_bytes", {}), **server.get("peak_memory_bytes", {})}
    for kind in ("gpu_nvml_used", "gpu_reserved", "gpu_allocated", "process_rss"):
        if peak.get(kind):
            return peak[kind], kind
    return None, ""


def load_row(path: Path) -> Row:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
        suites, server = run["suites"], run.get("server", {})
    except (OSError, ValueError, KeyError) as e:
        raise ReportError(f"{path} is not a results file of `leanserve eval`: {e}") from e
    artifact = run.get("artifact", {})
    memory, kind = _peak_memory(server)
    wt = suites.get("wikitext2", {})
    speed = suites.get("speed", {})
    return Row(
        profile=run.get("profile") or run.get("model", path.stem), engine=run.get("engine") or "?",
        disk_bytes=server.get("artifact_size_bytes") or artifact.get("size_bytes") or None,
        weights_bytes=server.get("memory_bytes", {}).get("weights"),
        peak_memory_bytes=memory, memory_kind=kind,
        ppl=wt.get("token_ppl"), word_ppl=wt.get("word_ppl"),
        scores={s: suites[s]["score"] for s in ACCURACY_SUITES if s in suites},
        counts={s: f"{suites[s]['n']} of {suites[s].get('of', suites[s]['n'])}" for s in suites if "n" in suites[s]},
        eval_time_s=sum(s.get("time_s", 0.0) for s in suites.values()),
        tokens_per_s=speed.get("tokens_per_s"), ttft_s=speed.get("ttft_s"), date=run.get("date", ""),
        calibration=_calibration(artifact.get("calibration")))


def _calibration(calib: dict | None) -> str:
    return f"{calib.get('samples')}x{calib.get('seq_len')}" if calib else ""


def _dominates(a: Row, b: Row) -> bool:
    """a is at least as good as b on every shared axis (size, perplexity, mean accuracy) and better on one."""
    axes = [(a.size_bytes, b.size_bytes, -1), (a.ppl, b.ppl, -1), (a.mean_accuracy, b.mean_accuracy, 1)]
    pairs = [(x * sign, y * sign) for x, y, sign in axes if x is not None and y is not None]
    return bool(pairs) and all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


def finish(rows: list[Row]) -> list[Row]:
    """Compression ratio against the bf16 row (same engine if there is one) and the Pareto marks."""
    for r in rows:
        base = next((b for b in rows if b.profile == "bf16" and b.engine == r.engine), None) or \
            next((b for b in rows if b.profile == "bf16"), None)
        if base and base.disk_bytes and r.size_bytes:
            r.compression = base.disk_bytes / r.size_bytes
        r.pareto = not any(_dominates(o, r) for o in rows if o is not r)
    return sorted(rows, key=lambda r: (-(r.size_bytes or 0), r.profile, r.engine))


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown(rows: list[Row]) -> str:
    suites = [s for s in ACCURACY_SUITES if any(s in r.scores for r in rows)]
    head = ["", "profile", "engine", "calib", "disk MB", "weights MB", "peak mem MB", "compression", "WikiText-2 ppl",
            *[ACCURACY_SUITES[s] for s in suites], "eval time s", "tok/s (1 stream)", "TTFT s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["★" if r.pareto else "", r.profile, r.engine, r.calibration or "-", _f(r.disk_bytes and r.disk_bytes / MB, ".0f"),
                 _f(r.weights_bytes and r.weights_bytes / MB, ".0f"),
                 _f(r.peak_memory_bytes and r.peak_memory_bytes / MB, ".0f"),
                 _f(r.compression, ".2f") + ("x" if r.compression else ""), _f(r.ppl, ".2f"),
                 *[_f(100 * r.scores[s] if s in r.scores else None, ".1f") for s in suites],
                 _f(r.eval_time_s, ".0f"), _f(r.tokens_per_s, ".1f"), _f(r.ttft_s, ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: c for r in rows for s, c in r.counts.items()}
    notes = [
        "",
        "★ Pareto-best: no other row is at least as small, as low in perplexity and as accurate (mean of the "
        "accuracy columns), and better on one of them.",
        "disk: the built artifact, or the base checkpoint for profiles quantized at load (nf4, int8). weights: "
        "parameter and buffer bytes as loaded (transformers engine). peak mem: the server's own "
        f"`leanserve_memory_bytes` peak during the eval ({', '.join(sorted({r.memory_kind for r in rows if r.memory_kind}))}).",
        "calib: calibration samples x tokens of the compressor job (WikiText-2 validation text).",
        "compression: the bf16 checkpoint's bytes on disk over the profile's size: the smaller of its disk and its "
        "loaded weights (the weights for profiles quantized at load: nf4, int8, int8-gblm).",
        "Scores are accuracies in %; perplexity is token-level on the WikiText-2 test split (sliding windows).",
        "Examples scored: " + "; ".join(f"{s}: {c}" for s, c in counts.items()) + ".",
    ]
    return "\n".join(lines + notes) + "\n"


def plots(rows: list[Row], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    labels = [f"{r.profile} ({r.engine})" if len({x.engine for x in rows}) > 1 else r.profile for r in rows]
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)

    fig, ax = plt.subplots(figsize=(7, 5))  # seed 000's Figure 6: memory against benchmark time
    for r, label in zip(rows, labels):
        if r.peak_memory_bytes:
            ax.scatter(r.peak_memory_bytes / MB, r.eval_time_s, s=40)
            ax.annotate(label, (r.peak_memory_bytes / MB, r.eval_time_s), textcoords="offset points", xytext=(4, 4))
    ax.set(xlabel="peak memory during eval (MB)", ylabel="eval time (s)", title="Memory vs benchmark time")
    ax.grid(alpha=0.3)
    save(fig, "memory_vs_time.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    for r, label in zip(rows, labels):
        if r.size_bytes and r.ppl:
            a1.scatter(r.size_bytes / MB, r.ppl, s=40, marker="*" if r.pareto else "o")
            a1.annotate(label, (r.size_bytes / MB, r.ppl), textcoords="offset points", xytext=(4, 4))
    a1.set(xlabel="size (MB)", ylabel="WikiText-2 perplexity (log scale)", yscale="log",
           title="Perplexity vs size (★ Pareto-best)")
    # labelled ticks at 1, 1.5, 2, 3, 5, 7 x 10^k: a range inside one decade still gets numbers
    a1.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    a1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    a1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for suite, name in ACCURACY_SUITES.items():
        pts = [(r.size_bytes / MB, 100 * r.scores[suite], label) for r, label in zip(rows, labels)
               if suite in r.scores and r.size_bytes]
        if pts:
            a2.scatter([p[0] for p in pts], [p[1] for p in pts], s=40, label=name)
            for x, y, label in pts:
                a2.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    a2.set(xlabel="size (MB)", ylabel="accuracy (%)", title="Accuracy vs size")
    a2.legend()
    for a in (a1, a2):
        a.grid(alpha=0.3)
    save(fig, "accuracy_vs_size.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))  # seed 000's Figure 7: compression ratios
    a1.bar(labels, [r.compression or 0 for r in rows], color="tab:blue")
    a1.set(ylabel="compression vs bf16 (x)", title="Compression ratio")
    a2.bar(labels, [r.tokens_per_s or 0 for r in rows], color="tab:green")
    a2.set(ylabel="tokens/s, one stream", title="Decode speed")
    for a in (a1, a2):
        a.tick_params(axis="x", rotation=45)
        a.grid(axis="y", alpha=0.3)
    save(fig, "compression_speed.png")
    return written


def write_report(files: list[Path], out: Path) -> list[Path]:
    if not files:
        raise ReportError("no results to report: run `leanserve eval --profile NAME` first")
    rows = finish([load_row(p) for p in files])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(rows), encoding="utf-8")
    (out / "report.json").write_text(json.dumps([{**asdict(r), "size_bytes": r.size_bytes} for r in rows], indent=2),
                                     encoding="utf-8")
    return [out / "report.md", out / "report.json", *plots(rows, out)]
