"""`leanserve report`: every evaluated profile side by side, from the results files only.

One row per (profile, engine) results file. Columns follow seed 000's Table 1: size on disk, memory,
perplexity, benchmark scores (each with its Wilson 95% interval), eval time, speed, compression ratio.
Rows that no other row beats on size, perplexity and mean accuracy together are marked Pareto-best.
Then the recommendation: for each memory budget among the rows' sizes, the row of lowest perplexity that
fits (evals/choose.py, the rule `leanserve recommend` uses too), and one sentence per profile on what it
costs. Plots (evals/report_plots.py): memory vs eval time (seed 000's Figure 6), accuracy and perplexity
vs size, compression ratios (its Figure 7), speed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from leanserve.errors import LeanserveError
from leanserve.evals.choose import budget_front
from leanserve.evals.intervals import wilson

ACCURACY_SUITES = {"mmlu": "MMLU", "race-h": "RACE-H", "arc-challenge": "ARC-C", "gsm8k": "GSM8K"}
# suites a results file may hold that the default report leaves out, and why
LEFT_OUT = {
    "bbh": "BBH is left out: its 3-shot chain-of-thought answers need a few hundred tokens to reach 'So the "
           "answer is', so under the CPU budget (96 tokens) every profile scores about 0 and the column ranks "
           "nothing; 27 tasks at 512 tokens each cost about an hour a profile on 2 CPU cores.",
}
MIB = 2**20  # sizes are shown in MiB, as everywhere in the docs


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
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # suite -> Wilson 95% (low, high)
    chance: dict[str, float] = field(default_factory=dict)  # suite -> accuracy of guessing
    counts: dict[str, str] = field(default_factory=dict)  # suite -> "n of total"
    eval_time_s: float = 0.0
    tokens_per_s: float | None = None
    ttft_s: float | None = None
    compression: float | None = None
    pareto: bool = False
    date: str = ""
    calibration: str = ""  # "samples x tokens" of the compressor job, for built artifacts
    ppl_windows: str = ""  # "n of total" WikiText-2 windows behind `ppl`

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
    accuracy = [s for s in ACCURACY_SUITES if s in suites]
    return Row(
        profile=run.get("profile") or run.get("model", path.stem), engine=run.get("engine") or "?",
        disk_bytes=server.get("artifact_size_bytes") or artifact.get("size_bytes") or None,
        weights_bytes=server.get("memory_bytes", {}).get("weights"),
        peak_memory_bytes=memory, memory_kind=kind,
        ppl=wt.get("token_ppl"), word_ppl=wt.get("word_ppl"),
        scores={s: suites[s]["score"] for s in accuracy},
        intervals={s: _interval(suites[s]) for s in accuracy},
        chance={s: suites[s]["chance"] for s in accuracy if suites[s].get("chance")},
        counts={s: f"{suites[s]['n']} of {suites[s].get('of', suites[s]['n'])}" for s in suites if "n" in suites[s]},
        eval_time_s=sum(s.get("time_s", 0.0) for s in suites.values()),
        tokens_per_s=speed.get("tokens_per_s"), ttft_s=speed.get("ttft_s"), date=run.get("date", ""),
        calibration=_calibration(artifact.get("calibration")),
        ppl_windows=f"{wt['n']} of {wt.get('of', wt['n'])}" if "n" in wt else "")


def _interval(suite: dict[str, Any]) -> tuple[float, float]:
    """Wilson 95% around the suite's score over its n questions (macro scores: score x n as the count,
    which is exact when every group has the same number of questions, as with a per-subject limit)."""
    n = int(suite.get("n") or 0)
    return wilson(min(max(suite["score"], 0.0), 1.0) * n, n)


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


def _accuracy_cell(r: Row, suite: str) -> str:
    if suite not in r.scores:
        return "-"
    lo, hi = r.intervals.get(suite, (math.nan, math.nan))
    return f"{100 * r.scores[suite]:.1f} [{100 * lo:.0f}-{100 * hi:.0f}]"


def _bf16(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.profile == "bf16" and r.ppl), None)


def _ppl_ratio(r: Row, base: Row | None) -> float | None:
    return r.ppl / base.ppl if r.ppl and base and base.ppl else None


def budget_table(rows: list[Row]) -> list[str]:
    """Markdown lines: for each row's size as a budget, the lowest-perplexity row that fits in it (sizes
    equal to the MiB are one budget)."""
    base = _bf16(rows)
    lines = ["| memory budget MiB | profiles of that size | pick | its size MiB | WikiText-2 ppl | ratio to bf16 |",
             "|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for budget, pick in budget_front(rows, lambda r: r.size_bytes, lambda r: r.ppl):
        mb = f"{budget / MIB:.0f}"
        if mb in seen:
            continue
        seen.add(mb)
        sized = ", ".join(r.profile for r in rows if r.size_bytes and f"{r.size_bytes / MIB:.0f}" == mb)
        lines.append(f"| {mb} | {sized} | {pick.profile} ({pick.engine}) | {pick.size_bytes / MIB:.0f} | "
                     f"{pick.ppl:.2f} | {_f(_ppl_ratio(pick, base), '.3f')} |")
    return lines


def cost_sentence(r: Row, base: Row | None) -> str:
    """One sentence on what choosing `r` costs against bf16: size, perplexity, speed, accuracy vs chance."""
    parts = []
    if r.compression and r.profile != "bf16":
        parts.append(f"{r.compression:.2f}x smaller than bf16")
    ratio = _ppl_ratio(r, base)
    if ratio is not None and r.profile != "bf16":
        parts.append(f"perplexity {100 * (ratio - 1):+.1f}%")
    if r.tokens_per_s and base and base.tokens_per_s and r.profile != "bf16":
        parts.append(f"{r.tokens_per_s / base.tokens_per_s:.2f}x bf16's decode speed")
    near_chance = [ACCURACY_SUITES[s] for s, (lo, _) in r.intervals.items() if s in r.chance and lo <= r.chance[s]]
    if near_chance:
        parts.append(f"{' and '.join(near_chance)} not distinguishable from chance")
    lead = "the reference" if r.profile == "bf16" else ""
    body = ", ".join(parts) or "no measured difference to state"
    return f"- **{r.profile}** ({r.engine}): {lead + '; ' if lead else ''}{body}."


def markdown(rows: list[Row]) -> str:
    suites = [s for s in ACCURACY_SUITES if any(s in r.scores for r in rows)]
    head = ["", "profile", "engine", "calib", "disk MiB", "weights MiB", "peak mem MiB", "compression", "WikiText-2 ppl", "ppl / bf16",
            *[f"{ACCURACY_SUITES[s]} % [95%]" for s in suites], "eval time s", "tok/s (1 stream)", "TTFT s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["★" if r.pareto else "", r.profile, r.engine, r.calibration or "-", _f(r.disk_bytes and r.disk_bytes / MIB, ".0f"),
                 _f(r.weights_bytes and r.weights_bytes / MIB, ".0f"),
                 _f(r.peak_memory_bytes and r.peak_memory_bytes / MIB, ".0f"),
                 _f(r.compression, ".2f") + ("x" if r.compression else ""), _f(r.ppl, ".2f"),
                 _f(_ppl_ratio(r, _bf16(rows)), ".3f"), *[_accuracy_cell(r, s) for s in suites],
                 _f(r.eval_time_s, ".0f"), _f(r.tokens_per_s, ".1f"), _f(r.ttft_s, ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = {s: c for r in rows for s, c in r.counts.items() if s not in LEFT_OUT}
    chance = {ACCURACY_SUITES[s]: c for r in rows for s, c in r.chance.items()}
    notes = [
        "",
        "★ Pareto-best: no other row is at least as small, as low in perplexity and as accurate (mean of the "
        "accuracy columns), and better on one of them.",
        "disk: the built artifact, or the base checkpoint for profiles quantized at load (nf4, int8). weights: "
        "the bytes the row's engine holds the parameters in, where it reports them (vLLM does not). peak mem: the server's own "
        f"`leanserve_memory_bytes` peak during the eval ({', '.join(sorted({r.memory_kind for r in rows if r.memory_kind}))}).",
        "calib: calibration samples x tokens of the compressor job (WikiText-2 validation text).",
        "compression: the bf16 checkpoint's bytes on disk over the profile's size: the smaller of its disk and its "
        "loaded weights (the weights for profiles quantized at load: nf4, int8, int8-gblm).",
        *(["Scores are accuracies in % with their Wilson 95% interval in brackets: two rows whose intervals "
           "overlap are not shown apart by these questions. Chance: " +
           (", ".join(f"{k} {100 * v:.1f}%" for k, v in chance.items()) or "-") + "."] if suites else []),
        "Perplexity is token-level on the WikiText-2 test split (sliding windows).",
        "Examples scored: " + "; ".join(f"{s}: {c}" for s, c in counts.items()) + ".",
        *[reason for suite, reason in LEFT_OUT.items() if any(suite in r.counts for r in rows)],
        "",
        "## Which profile for which memory",
        "",
        "For each memory budget equal to one of the profiles' sizes, the profile of lowest WikiText-2 perplexity "
        "whose size fits (the Pareto front on size and perplexity). Sizes are weights only; "
        "`leanserve recommend --memory 8GiB --context 4096` adds the KV cache, activations and runtime as "
        "`leanserve fit` plans them.",
        "",
        *budget_table(rows),
        "",
        "What each profile costs:",
        "",
        *[cost_sentence(r, _bf16(rows)) for r in rows],
    ]
    return "\n".join(lines + notes) + "\n"


def write_report(files: list[Path], out: Path) -> list[Path]:
    from leanserve.evals.report_plots import plots

    if not files:
        raise ReportError("no results to report: run `leanserve eval --profile NAME` first")
    rows = finish([load_row(p) for p in files])
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(rows), encoding="utf-8")
    (out / "report.json").write_text(json.dumps([{**asdict(r), "size_bytes": r.size_bytes} for r in rows], indent=2),
                                     encoding="utf-8")
    return [out / "report.md", out / "report.json", *plots(rows, out)]
