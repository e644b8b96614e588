"""The evals' pure parts on fixed inputs with hand-computed answers: prompt building, sampling, answer
extraction, scoring, perplexity windows, and the report's arithmetic. No server here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from leanserve.evals import multiple_choice as mc
from leanserve.evals import report, runner
from leanserve.evals.perplexity import wikitext2_test_text, windows
from leanserve.evals.tasks import arc, bbh, gsm8k, mmlu, race

pytestmark = pytest.mark.unit

RACE_FIXTURE = Path(__file__).parent / "data" / "race_fixture.jsonl"  # hand-written: no offline RACE copy exists


# --- BBH ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("generation,target,expected", [
    ("(A) is first. (B) is later. So the answer is (B).", "(B)", "(B)"),
    ("So the answer is (C) Cats.\n\nQ: next", "(C)", "(C)"),
    ("Z = not True = False. So the answer is False.", "False", "False"),
    ("The answer is 24. Wait, so the answer is 25.", "24", "25"),  # the last one counts
    ("apple banana. So the answer is apple banana cherry.", "apple banana cherry", "apple banana cherry"),
    ("I do not know.", "Yes", ""),
])
def test_bbh_extracts_the_final_answer(generation: str, target: str, expected: str) -> None:
    assert bbh.extract_answer(generation, target) == expected


def test_bbh_scoring_ignores_case_and_spacing() -> None:
    assert bbh.is_correct("So the answer is  yes.", "yes") and bbh.is_correct("So the answer is VALID.", "valid")
    assert not bbh.is_correct("So the answer is (A).", "(B)")
    assert not bbh.is_correct("The result is (B).", "(B)")  # no "answer is": no answer


def test_bbh_prompts_are_the_official_three_shot_cot(data: Path) -> None:
    items = bbh.load(data, limit=2, fraction=None, seed=0)
    tasks = {i.task for i in items}
    assert len(tasks) == 27 and len(items) == 54
    first = next(i for i in items if i.task == "boolean_expressions")
    assert first.prompt.startswith("Evaluate the result of a random Boolean expression.\n\nQ: not ( ( not not True ) ) is")
    assert first.prompt.count("So the answer is") == 3 and first.prompt.endswith("\nA: Let's think step by step.")
    assert "canary" not in first.prompt


def test_bbh_fraction_is_seeded_and_per_task(data: Path) -> None:
    a = bbh.load(data, limit=None, fraction=0.02, seed=1)
    assert a == bbh.load(data, limit=None, fraction=0.02, seed=1)
    assert [x.target for x in a] != [x.target for x in bbh.load(data, limit=None, fraction=0.02, seed=2)]
    assert len(a) == sum(max(1, math.ceil(n * 0.02)) for n in [250] * 23 + [187, 146, 178, 250])


# --- GSM8K --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("generation,expected", [
    (" She has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18.\nThe answer is 18.", "18"),
    (" The total is 1,200 + 34 = 1,234.\nThe answer is 1,234.", "1234"),
    (" He pays 5 and then 7 more, so 12", "12"),  # no "answer is": the last number
    (" I cannot tell.", ""),
])
def test_gsm8k_extracts_the_answer(generation: str, expected: str) -> None:
    assert gsm8k.extract_answer(generation) == expected


def test_gsm8k_gold_and_prompts(data: Path) -> None:
    assert gsm8k.gold("so 2 * 500 = <<2*500=1000>>1000\n#### 1,000") == "1000"
    assert gsm8k.is_correct("The answer is 18.0", "18") and not gsm8k.is_correct("The answer is 17", "18")
    problems = gsm8k.load(data, limit=None, fraction=None, seed=0)
    assert len(problems) == 1319 - 4 and problems[0].id == 4  # the 4 exemplars are not scored
    assert problems[0].prompt.count("The answer is") == 4 and "<<" not in problems[0].prompt
    assert problems[0].prompt.endswith("\nAnswer:")


# --- multiple choice: MMLU, ARC, RACE -----------------------------------------------------------------------------
def test_mmlu_prompt_is_the_original_five_shot(data: Path) -> None:
    qs = mmlu.load(data)
    assert len(qs) == 14042 and len({q.group for q in qs}) == 57
    q = next(q for q in qs if q.id == "abstract_algebra/0")
    assert q.prompt.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert q.prompt.count("\nAnswer: ") == 5 and q.prompt.endswith("\nAnswer:") and q.letters == "ABCD"
    assert "\r" not in q.prompt and q.gold in "ABCD"


def test_arc_maps_numeric_labels_to_letters(data: Path) -> None:
    qs = arc.load(data)
    assert len(qs) == 1172 and all(q.gold in q.letters for q in qs)
    assert {len(q.letters) for q in qs} >= {4}
    assert arc._gold_letter({"question": {"choices": [{"label": "1"}, {"label": "2"}, {"label": "3"}]},
                             "answerKey": "3"}) == "C"


def test_race_loader_reads_both_public_shapes() -> None:
    qs = race.load(RACE_FIXTURE)
    assert [q.gold for q in qs] == ["B", "C", "C"]
    assert qs[0].prompt.startswith("Article: Tom lives in a small town")
    assert "Question: Where does Tom live?\nA. In a big city\nB. Near the sea" in qs[0].prompt
    assert qs[2].prompt.endswith("D. Four\nAnswer:")


def test_accuracy_macro_and_micro() -> None:
    qs = [mc.Question(str(i), g, "", "ABCD", "A") for i, g in enumerate("aabbbb")]
    out = mc.accuracy(qs, ["A", "A", "A", "B", "C", "D"])
    assert out["per_group"] == {"a": 1.0, "b": 0.25}
    assert out["accuracy"] == pytest.approx(0.625) and out["micro_accuracy"] == pytest.approx(0.5) and out["n"] == 6


def test_sample_takes_a_seeded_share_of_every_group() -> None:
    qs = [mc.Question(f"{g}{i}", g, "", "AB", "A") for g, n in (("x", 10), ("y", 3)) for i in range(n)]
    picked = mc.sample(qs, limit=None, fraction=0.2, seed=7)
    assert sorted(q.group for q in picked) == ["x", "x", "y"]  # ceil(10*0.2)=2, ceil(3*0.2)=1
    assert picked == mc.sample(qs, limit=None, fraction=0.2, seed=7)
    assert [q.id for q in mc.sample(qs, limit=1, fraction=None, seed=0)] == ["x0", "y0"]


# --- perplexity windows -------------------------------------------------------------------------------------------
def test_windows_tile_the_text_with_the_stated_context(data: Path) -> None:
    text = wikitext2_test_text(data)
    ws = windows(text, 4096, 2048)
    assert ws[0].score_from == 0 and ws[-1].end == len(text)
    assert all(a.end == b.score_from for a, b in zip(ws, ws[1:]))  # every character scored exactly once
    assert all(w.score_from - w.start >= 2048 - 64 for w in ws[1:])  # context: window - stride, give or take a word
    assert all(w.end - w.start <= 4096 + 64 for w in ws)
    assert all(text[w.score_from].isspace() for w in ws[1:])  # cut before whitespace: BPE boundaries agree


def test_windows_without_overlap_are_disjoint_chunks() -> None:
    text = "one two three four five six seven eight nine ten " * 20
    ws = windows(text, 100, 100)
    assert all(w.start == w.score_from for w in ws) and "".join(text[w.start:w.end] for w in ws) == text


# --- report -------------------------------------------------------------------------------------------------------
def _results(tmp: Path, profile: str, size: float, weights: float, ppl: float, mmlu_acc: float, kind: str = "built") -> Path:
    run = {"profile": profile, "engine": "transformers", "model": "m", "date": "2026-11-25T00:00:00Z",
           "artifact": {"size_bytes": size, "kind": kind},
           "server": {"artifact_size_bytes": size, "memory_bytes": {"weights": weights, "process_rss": 3 * weights},
                      "peak_memory_bytes": {"process_rss": 4 * weights}},
           "suites": {"wikitext2": {"score": ppl, "token_ppl": ppl, "word_ppl": 2 * ppl, "n": 3, "of": 9, "time_s": 10},
                      "mmlu": {"score": mmlu_acc, "n": 57, "of": 14042, "time_s": 20},
                      "speed": {"score": 10.0, "tokens_per_s": 10.0, "ttft_s": 0.2, "n": 3, "time_s": 5}}}
    path = tmp / f"{profile}.json"
    path.write_text(json.dumps(run))
    return path


def test_report_table_ratios_and_pareto(tmp_path: Path) -> None:
    files = [_results(tmp_path, "bf16", 270e6, 540e6, 14.0, 0.30),
             _results(tmp_path, "gptq-4", 110e6, 400e6, 20.0, 0.28),   # smaller, worse: Pareto-best
             _results(tmp_path, "bad-4", 120e6, 400e6, 25.0, 0.25),    # bigger AND worse than gptq-4: dominated
             _results(tmp_path, "nf4", 270e6, 166e6, 16.0, 0.29, kind="runtime"),  # sized by its loaded weights
             _results(tmp_path, "int8-gblm", 270e6, 220e6, 40.0, 0.20)]  # built, quantized at load: the same
    written = report.write_report(files, tmp_path / "out")
    rows = {r["profile"]: r for r in json.loads((tmp_path / "out" / "report.json").read_text())}
    assert rows["gptq-4"]["compression"] == pytest.approx(270 / 110)
    assert rows["nf4"]["compression"] == pytest.approx(270 / 166) and rows["nf4"]["size_bytes"] == 166e6
    assert rows["int8-gblm"]["size_bytes"] == 220e6 and rows["bf16"]["size_bytes"] == 270e6
    assert {p for p, r in rows.items() if r["pareto"]} == {"bf16", "gptq-4", "nf4"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| ★ | gptq-4 | transformers | - | 105 | 381 | 1526 | 2.45x | 20.00 | 1.429 | 28.0 [18-41] |" in md
    assert "|  | bad-4 |" in md and "mmlu: 57 of 14042" in md
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pngs) == 3 and all(p.stat().st_size > 10_000 for p in pngs)


def test_report_refuses_a_file_that_is_not_results(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    with pytest.raises(report.ReportError, match="not a results file"):
        report.write_report([bad], tmp_path / "out")
    with pytest.raises(report.ReportError, match="run `leanserve eval"):
        report.write_report([], tmp_path / "out")


def test_results_merge_suites_and_take_artifact_facts_from_the_named_folder(tmp_path: Path) -> None:
    """A results file kept away from its artifact (benchmarks/eval_report.py's report folders) still gets the
    artifact's size and calibration, and a later one-suite run keeps the earlier suites and the higher peak."""
    artifact = tmp_path / "artifacts" / "m" / "gptq-4"
    artifact.mkdir(parents=True)
    (artifact / "manifest.json").write_text(json.dumps(
        {"profile": "gptq-4", "base_model": "m", "size_bytes": 113e6, "wall_time_s": 120.0,
         "calibration": {"samples": 32, "seq_len": 512}}))
    out = tmp_path / "report" / "evals-gptq-4-transformers.json"

    def run(suite: str, rss: float) -> dict:
        return {"profile": "gptq-4", "engine": "transformers", "suites": {suite: {"score": 1.0, "time_s": 10.0}},
                "server": {"peak_memory_bytes": {"process_rss": rss}}}

    runner.write_results(out, run("wikitext2", 2e9), artifact=artifact)
    runner.write_results(out, run("speed", 1e9), artifact=artifact)
    merged = json.loads(out.read_text())
    assert set(merged["suites"]) == {"wikitext2", "speed"} and merged["total_time_s"] == 20.0
    assert merged["server"]["peak_memory_bytes"]["process_rss"] == 2e9
    assert merged["artifact"]["size_bytes"] == 113e6 and merged["artifact"]["calibration"]["samples"] == 32
    assert not list(out.parent.glob(".*.tmp"))  # written through a temp file, then renamed


# --- the server an eval starts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile,model,engine,extra,context", [
    ("bf16", None, "transformers", [], None),
    ("bf16", None, "auto", [], None),  # the model's whole context, as served
    ("q4_k_m", None, "auto", [], str(runner.EVAL_CONTEXT)),  # auto: only llamacpp serves GGUF
    ("bf16", None, "llamacpp", [], str(runner.EVAL_CONTEXT)),
    ("bf16", "/m/base-f32.gguf", "auto", [], str(runner.EVAL_CONTEXT)),
    ("q8_0", None, "auto", ["--max-model-len", "8192"], "8192"),  # what the caller set wins
])
def test_an_eval_server_on_llamacpp_gets_the_eval_context(tmp_path: Path, profile: str, model: str | None,
                                                          engine: str, extra: list[str], context: str | None) -> None:
    args = runner.serve_args(profile, model=model, engine=engine, home=tmp_path, port=1234, extra_args=extra)
    assert args[:5] == ["serve", "--profile", profile, "--engine", engine]
    assert args.count("--max-model-len") == (context is not None)
    if context is not None:
        assert args[args.index("--max-model-len") + 1] == context


def test_the_committed_report_sends_gguf_profiles_to_llamacpp_and_keeps_auto() -> None:
    from benchmarks.eval_report import FULL_BUDGET, engine_for

    assert engine_for(["llamacpp"], "transformers") == "llamacpp"  # GGUF rows, whatever the others use
    assert engine_for(["vllm", "transformers"], "transformers") == "transformers"
    assert engine_for(["llamacpp"], "auto") == engine_for(["vllm", "transformers"], "auto") == "auto"
    assert FULL_BUDGET["wikitext2"]["limit"] is None and FULL_BUDGET["arc-challenge"]["limit"] is None
    assert FULL_BUDGET["mmlu"]["limit"] >= 20  # at least 20 questions a subject: about +-3 points
