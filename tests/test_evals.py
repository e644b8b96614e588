"""Evals through the real server on the default model: every suite end to end with a small limit, the
letter fast path against exact echo scoring, API perplexity against in-process perplexity, the `eval` and
`report` commands, and lm-evaluation-harness's own `local-completions` client against leanserve."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from leanserve.evals import multiple_choice as mc
from leanserve.evals.client import EvalClient
from leanserve.evals.perplexity import api_perplexity, wikitext2_test_text, windows
from leanserve.evals.suites import SUITES, SuiteOptions
from leanserve.evals.tasks import bbh, gsm8k, mmlu, race
from tests.conftest import MODEL
from tests.servers import API_KEY, Server, start_server

pytestmark = pytest.mark.server

RACE_FIXTURE = Path(__file__).parent / "data" / "race_fixture.jsonl"  # hand-written: no offline RACE copy exists


@pytest.fixture(scope="module")
def bf16(home: Path, model_dir: Path) -> Iterator[Server]:
    """Its own server: 5-shot MMLU (professional law: 2.7k tokens) and BBH's 3-shot CoT need more than the
    1024-token context the other tests' servers have."""
    server = start_server("transformers", "bf16", home, "--max-model-len", "4096")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ev(bf16: Server) -> Iterator[EvalClient]:
    with EvalClient(bf16.base_url, MODEL, api_key=API_KEY, concurrency=4) as client:
        yield client


# (suite, options, n): the smallest run that still touches every group of the suite
CASES = [
    ("wikitext2", {"limit": 2, "window_chars": 2048, "stride_chars": 1024}, 2),
    ("mmlu", {"limit": 1}, 57),  # one question per subject
    ("bbh", {"limit": 1, "max_gen_tokens": 48}, 27),  # one example per task file
    ("arc-challenge", {"limit": 6}, 6),
    ("gsm8k", {"limit": 2, "max_gen_tokens": 64}, 2),
    ("race-h", {"race_file": RACE_FIXTURE}, 3),
    ("speed", {}, 3),
]


@pytest.mark.parametrize("suite,options,n", CASES, ids=[c[0] for c in CASES])
def test_suite_runs_through_the_api(ev: EvalClient, data: Path, suite: str, options: dict, n: int) -> None:
    result = SUITES[suite](ev, SuiteOptions(data, **options))
    json.dumps(result)  # it must go into the results file as is
    assert result["n"] == n
    if suite == "wikitext2":
        assert 5 < result["token_ppl"] < 40 and result["word_ppl"] > result["token_ppl"]  # bf16 measured ~14
        assert result["tokens"] > 600 and result["windows"] == 2
    elif suite == "speed":
        assert result["tokens_per_s"] > 0.5 and 0 < result["ttft_s"] < 30
    else:  # the headline is the macro average of the groups, each a share of n right answers
        groups = result["per_group"]
        assert result["score"] == pytest.approx(sum(groups.values()) / len(groups))
        if suite in ("bbh", "gsm8k"):  # greedy generation honoured its stop strings and budget
            assert result["generated_tokens"] > 0
            assert all("\nQ:" not in e["output"] and "\nQuestion:" not in e["output"] for e in result["examples"])
            scorer = {"bbh": bbh.is_correct, "gsm8k": gsm8k.is_correct}[suite]
            right = [scorer(e["output"], e["target"]) for e in result["examples"]]
            if suite == "bbh":  # one example per task (limit 1): each task's score is its example's
                assert [groups[e["group"]] for e in result["examples"]] == [float(r) for r in right]
            else:  # one group, both examples shown
                assert groups["gsm8k"] == sum(right) / len(right)


def _race_file(path: Path, golds: list[str]) -> Path:
    """The RACE fixture with these answers, in order (one per question)."""
    rows = [json.loads(line) for line in RACE_FIXTURE.read_text().splitlines() if line.strip()]
    it = iter(golds)
    for row in rows:
        if "questions" in row:
            row["answers"] = [next(it) for _ in row["questions"]]
        else:
            row["answer"] = next(it)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_multiple_choice_scores_fixtures_with_known_answers(ev: EvalClient, tmp_path: Path) -> None:
    """The model's letter for each fixture question is measured independently (an exact echo request per
    letter); fixtures whose answers are those letters score 1, the least likely letters 0, and one
    changed answer in four 0.75, through the same suite `leanserve eval` runs. A scorer that returned a
    constant, or compared predictions with the wrong questions' answers, fails one of the three."""
    questions = race.load(RACE_FIXTURE)
    scores = [{letter: ev.continuation_logprob(q.prompt, f" {letter}") for letter in q.letters} for q in questions]
    best = [max(s, key=s.__getitem__) for s in scores]
    worst = [min(s, key=s.__getitem__) for s in scores]
    mixed = [*best[:-1], worst[-1]]
    for golds, expected in ((best, 1.0), (worst, 0.0), (mixed, (len(best) - 1) / len(best))):
        result = SUITES["race-h"](ev, SuiteOptions(None, race_file=_race_file(tmp_path / "race.jsonl", golds)))
        assert (result["n"], result["score"]) == (len(questions), pytest.approx(expected)), (golds, scores)


def test_letter_fast_path_equals_echo_scoring(ev: EvalClient, data: Path) -> None:
    """The top-20 next-token logprob of " A" must be log P(" A" | prompt) as the echo of prompt + " A" gives it."""
    questions = [q for q in mmlu.load(data) if q.id in ("astronomy/0", "marketing/3", "virology/7")]
    for q in questions:
        top = ev.next_token_logprobs(q.prompt)
        found = [letter for letter in q.letters if f" {letter}" in top]
        assert found, f"no answer letter in the top 20 after 'Answer:' for {q.id}: {list(top)[:5]}"
        for letter in found:
            assert top[f" {letter}"] == pytest.approx(ev.continuation_logprob(q.prompt, f" {letter}"), abs=2e-3)
        best, scores = mc.predict(ev, q)
        assert best in q.letters and set(scores) == set(q.letters)


def test_api_perplexity_equals_in_process_perplexity(ev: EvalClient, data: Path, model_dir: Path) -> None:
    """Same windows, same scored tokens: the server's echo logprobs and a plain forward pass agree within 1%."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = wikitext2_test_text(data)
    api = api_perplexity(ev, text, window_chars=2048, stride_chars=1024, max_windows=3)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    nll, count = 0.0, 0
    for w in windows(text, 2048, 1024)[:3]:
        enc = tok(text[w.start:w.end], return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(enc.input_ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, enc.input_ids[0, 1:, None])[:, 0]
        keep = enc.offset_mapping[0, 1:, 0] >= w.score_from - w.start
        nll -= lp[keep].sum().item()
        count += int(keep.sum())
    assert count == api.tokens
    assert math.exp(nll / count) == pytest.approx(api.token_ppl, rel=0.01)


def _cli(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "leanserve.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_eval_starts_a_server_then_report_draws_it(home: Path, tmp_path: Path) -> None:
    r = _cli("eval", "--profile", "bf16", "--engine", "transformers", "--suite", "wikitext2", "--suite", "speed",
             "--limit", "1", "--ppl-window", "2048", "--ppl-stride", "1024", "--home", str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    results = home / "results" / MODEL / "bf16" / "evals-transformers.json"
    run = json.loads(results.read_text())
    assert not (home / "artifacts" / MODEL / "bf16").exists()  # neither serve nor eval writes the artifact store
    assert run["profile"] == "bf16" and run["engine"] == "transformers" and set(run["suites"]) >= {"wikitext2", "speed"}
    assert run["server"]["peak_memory_bytes"]["process_rss"] > 100e6  # scraped from the server's own /metrics
    assert run["server"]["generation_tokens"] >= 3 * 128  # the speed probe's streams, counted by the server

    r = _cli("report", "--out", str(tmp_path / "report"), "--home", str(home))
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| bf16 | transformers |" in md
    assert sorted(p.name for p in (tmp_path / "report").glob("*.png")) == [
        "accuracy_vs_size.png", "compression_speed.png", "memory_vs_time.png"]


def test_eval_explains_missing_race_data_and_bad_targets(bf16: Server, tmp_path: Path) -> None:
    r = _cli("eval", "--base-url", bf16.base_url, "--api-key", API_KEY, "--suite", "race-h", "--out",
             str(tmp_path / "x.json"), env={"LEANSERVE_RACE_FILE": ""})
    assert r.returncode == 2 and "--race-file" in r.stdout
    r = _cli("eval", "--base-url", bf16.base_url, "--suite", "wikitext2", "--limit", "1")
    assert r.returncode == 2 and "wants an API key" in r.stdout
    r = _cli("eval", "--base-url", bf16.base_url, "--api-key", API_KEY, "--suite", "hellaswag")
    assert r.returncode == 2 and "unknown suite" in r.stdout
    assert not (tmp_path / "x.json").exists()


LM_EVAL_TASK = """task: leanserve_arc_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question.stem}}}}\\nAnswer:"
doc_to_choice: "{{{{question.choices | map(attribute='text') | list}}}}"
doc_to_target: "{{{{(question.choices | map(attribute='label') | list).index(answerKey)}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_harness_local_completions_runs_against_leanserve(bf16: Server, data: Path, model_dir: Path,
                                                                  ev: EvalClient, tmp_path: Path) -> None:
    """lm-evaluation-harness (not ours) sends token-id prompts with echo/logprobs/max_tokens=1 and reads
    token_logprobs[ctxlen:-1]; its log-likelihoods must equal what our own client measures."""
    (tmp_path / "arc_local.yaml").write_text(LM_EVAL_TASK.format(path=data / "arc-challenge" / "ARC-Challenge-Test.jsonl"))
    args = [str(Path(sys.executable).parent / "lm_eval"), "--model", "local-completions", "--model_args",
            f"model={MODEL},base_url={bf16.base_url}/v1/completions,tokenizer={model_dir},"
            "tokenizer_backend=huggingface,num_concurrent=2,max_retries=1",
            "--tasks", "leanserve_arc_local", "--include_path", str(tmp_path), "--limit", "3",
            "--output_path", str(tmp_path / "out"), "--log_samples"]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert 0.0 <= results["results"]["leanserve_arc_local"]["acc,none"] <= 1.0
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_*.jsonl")).read_text().splitlines()]
    assert len(samples) == 3
    doc = samples[0]
    for args_, resp in zip(doc["arguments"].values(), doc["filtered_resps"]):
        theirs = float(resp[0])
        assert theirs == pytest.approx(ev.continuation_logprob(args_["arg_0"], args_["arg_1"]), abs=0.02)
