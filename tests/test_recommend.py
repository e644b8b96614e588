"""The quality report's choices on fixed inputs: Wilson intervals, the budget table (Pareto front on size and
perplexity), `leanserve recommend` from results files (GGUF profiles included), and plot labels that do not
overlap. No server, no model: shapes come from a config.json written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanserve import fit, recommend
from leanserve.cli import app
from leanserve.evals import report
from leanserve.evals.choose import budget_front, lowest_ppl_within
from leanserve.evals.intervals import wilson
from leanserve.profiles.registry import get_profile

pytestmark = pytest.mark.unit

# SmolLM2-135M's config fields that fit reads
SMOLLM2 = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
           "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True}


def test_wilson_matches_hand_computed_intervals() -> None:
    # 5 of 10: centre 0.5, half-width 1.96/(1+0.384) * sqrt(0.025 + 0.0096) = 0.2634
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson(0, 10)  # stays inside [0, 1], unlike the normal interval
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    assert wilson(18, 57)[1] - wilson(18, 57)[0] == pytest.approx(0.235, abs=0.01)  # the issue's ~±12 points
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_budget_front_picks_the_lowest_perplexity_that_fits() -> None:
    rows = [("bf16", 270, 24.0), ("gptq-8", 166, 24.3), ("nf4", 166, 30.6), ("q4_k_m", 100, 26.0),
            ("pruned", 229, 51.0), ("unmeasured", 50, None)]
    need, ppl = (lambda r: r[1]), (lambda r: r[2])
    assert lowest_ppl_within(rows, 99, need, ppl) is None  # only the unmeasured one is that small
    assert lowest_ppl_within(rows, 200, need, ppl)[0] == "gptq-8"
    front = [(b, r[0]) for b, r in budget_front(rows, need, ppl)]
    assert front == [(100, "q4_k_m"), (166, "gptq-8"), (229, "gptq-8"), (270, "bf16")]


def _results(tmp: Path, profile: str, size: float, ppl: float, mmlu: float, engine: str = "transformers",
             windows: int = 16) -> Path:
    run = {"profile": profile, "engine": engine, "model": "m", "date": "2026-12-01T00:00:00Z",
           "artifact": {"size_bytes": size, "kind": "built"},
           "server": {"artifact_size_bytes": size, "memory_bytes": {"process_rss": 3 * size}},
           "suites": {"wikitext2": {"score": ppl, "token_ppl": ppl, "n": windows, "of": 631, "time_s": 10},
                      "mmlu": {"score": mmlu, "n": 57, "of": 14042, "chance": 0.25, "time_s": 20},
                      "bbh": {"score": 0.0, "n": 27, "time_s": 30},
                      "speed": {"score": 10.0, "tokens_per_s": 10.0, "ttft_s": 0.2, "n": 3, "time_s": 5}}}
    path = tmp / f"evals-{profile}-{engine}.json"
    path.write_text(json.dumps(run))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    _results(d, "bf16", 270e6, 24.0, 0.32)
    _results(d, "gptq-4", 113e6, 27.0, 0.26)
    _results(d, "nf4", 166e6, 30.6, 0.26)
    _results(d, "q4_k_m", 105e6, 26.0, 0.30, engine="llamacpp")
    _results(d, "q8_0", 145e6, 24.1, 0.31, engine="llamacpp")
    return d


def test_report_shows_intervals_the_budget_table_and_gguf_profiles(results: Path, tmp_path: Path) -> None:
    written = report.write_report(sorted(results.glob("evals-*.json")), tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    lo, hi = wilson(0.32 * 57, 57)
    assert f"32.0 [{100 * lo:.0f}-{100 * hi:.0f}]" in md and "Chance: MMLU 25.0%" in md
    assert "BBH" not in md.split("\n")[0] and "BBH is left out" in md  # out of the table, with the reason
    table = md[md.index("| memory budget MiB"):].split("\n\n")[0]
    picks = [line.split(" | ")[2] for line in table.splitlines()[2:]]
    assert picks == ["q4_k_m (llamacpp)", "q4_k_m (llamacpp)", "q8_0 (llamacpp)", "q8_0 (llamacpp)", "bf16 (transformers)"]
    assert "- **q4_k_m** (llamacpp): 2.57x smaller than bf16, perplexity +8.3%" in md
    assert "- **nf4** (transformers): 1.63x smaller than bf16, perplexity +27.5%, 1.00x bf16's decode speed, MMLU not distinguishable from chance." in md
    assert len([p for p in written if p.suffix == ".png"]) == 3


def _plan_of(tmp_path: Path, budget: int, context: int | None):  # noqa: ANN202
    shape = fit.ModelShape.from_config(SMOLLM2, "smollm2")
    return lambda profile: fit.plan(shape, get_profile(profile, tmp_path), budget, context=context)


def test_recommend_adds_kv_and_runtime_to_the_weights(results: Path, tmp_path: Path) -> None:
    rows = [report.load_row(p) for p in sorted(results.glob("evals-*.json"))]
    context = 4096
    roomy = recommend.candidates(rows, _plan_of(tmp_path, 8 * fit.GiB, context), context)
    assert recommend.choose(roomy, 8 * fit.GiB).row.profile == "bf16"
    by = {c.row.profile: c for c in roomy}
    q4 = by["q4_k_m"]
    assert q4.need == q4.plan.weights + q4.plan.runtime_overhead + q4.plan.activations + 4096 * q4.plan.kv_per_token
    assert by["q4_k_m"].need < by["q8_0"].need < by["bf16"].need  # GGUF weights planned like every other
    # a budget between q8_0's need and bf16's: q8_0 (lower perplexity than q4_k_m) fits, bf16 does not
    budget = (by["q8_0"].need + by["bf16"].need) // 2
    tight = recommend.candidates(rows, _plan_of(tmp_path, budget, context), context)
    text, fits = recommend.render(tight, budget, lambda p: p != "nf4")
    assert fits and text.startswith("Serve q8_0:")
    assert "lower perplexity but over the budget: bf16 (24.00)" in text
    assert text.rstrip().endswith("leanserve compress --profile q8_0\nleanserve serve --profile q8_0 --engine llamacpp")
    text, fits = recommend.render(tight, 1 * fit.GiB, lambda p: True)
    assert not fits and text.startswith("No measured profile fits 1.00 GiB")


def test_recommend_command_reads_a_results_folder(results: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMOLLM2))
    home = tmp_path / "home"
    run = CliRunner().invoke(app, ["recommend", "--memory", "8GiB", "--context", "4096", "--results", str(results),
                                   "--model", str(config), "--home", str(home)])
    assert run.exit_code == 0, run.output
    assert "Serve bf16:" in run.output and "leanserve serve --profile bf16 --engine transformers" in run.output
    run = CliRunner().invoke(app, ["recommend", "--memory", "1GiB", "--results", str(results), "--model", str(config),
                                   "--home", str(home)])
    assert run.exit_code == 1 and "No measured profile fits" in run.output
    run = CliRunner().invoke(app, ["recommend", "--memory", "lots", "--results", str(results), "--home", str(home)])
    assert run.exit_code == 2 and "cannot read 'lots' as a size" in run.output


def test_labels_do_not_overlap_even_on_one_point() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    from leanserve.evals.report_plots import place_labels

    fig, ax = plt.subplots()
    pts = [(1.0, 1.0, f"profile-{i}") for i in range(6)] + [(1.01, 1.001, "near"), (3.0, 2.0, "far")]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    anns = place_labels(ax, pts)
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in anns]
    boxes = [b.padded(1) for b in boxes]  # and not touching: at least 2 pixels apart
    assert not [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    frame = ax.get_window_extent(renderer)  # and inside the axes: the rightmost label is not cut by the frame
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes), [(b.x0, b.x1, frame.x1) for b in boxes]
    plt.close(fig)
