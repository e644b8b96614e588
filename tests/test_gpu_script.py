"""benchmarks/gpu (issue 15) on a CPU: the dry run builds the tiny model and its W4A16 copy, runs the
real `leanserve fit`, judges synthetic GPU figures, and writes the JSON and markdown a GPU run would."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.gpu import driver, goals
from benchmarks.gpu.measure import nearest_rank, words_to_ids
from benchmarks.gpu.model import prompt_text
from benchmarks.gpu.steps import parse_vllm_log

pytestmark = pytest.mark.unit
GiB = 1 << 30


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("gpu")
    path = driver.main(["--dry-run", "--out", str(out), "--keep-work", "--deadline-s", "200"])
    return json.loads(path.read_text()), path


def test_dry_run_writes_the_json_and_table(dry_run: tuple[dict[str, Any], Path]) -> None:
    payload, path = dry_run
    assert path.name == f"gpu-dry-run-{payload['date'][:10]}.json"
    assert dt.datetime.fromisoformat(payload["date"]).tzinfo is not None
    assert payload["dry_run"] is True and payload["device"] and payload["versions"]["torch"]
    assert {k: s["status"] for k, s in payload["steps"].items()} == {
        "build": "ok", "fit": "ok", "leanserve-bf16": "synthetic", "leanserve-gptq4": "synthetic", "direct-bf16": "synthetic"}
    build = payload["results"]["build"]
    assert build["config"]["num_hidden_layers"] == 2 and build["config"]["hidden_size"] == 64
    assert 0 < build["w4a16_bytes"] < build["bf16_bytes"]
    fit = payload["results"]["fit"]
    assert fit["shape"]["weights_source"] == "estimate" and fit["shape"]["kv_tokens"] > 0
    assert fit["artifact"]["weights_source"] == "artifact"  # found the W4A16 copy as the gptq-4 artifact
    md = path.with_suffix(".md").read_text()
    assert "DRY RUN" in md and "| goal | target | measured | result |" in md
    assert md.count("| pass |") == len(payload["goals"]) == 7
    assert (path.parent / "gpu-logs.txt").is_file()


def test_the_w4a16_copy_is_compressed_tensors_and_round_to_nearest(dry_run: tuple[dict[str, Any], Path]) -> None:
    build = dry_run[0]["results"]["build"]
    artifact = Path(build["artifact_dir"])
    qc = json.loads((artifact / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["format"], qc["ignore"]) == ("compressed-tensors", "pack-quantized", ["lm_head"])
    weights = qc["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["symmetric"], weights["group_size"]) == (4, True, 64)  # 64: tiny widths
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["profile"] == "gptq-4" and set(manifest["files"]) >= {"model.safetensors", "config.json"}
    trip = manifest["roundtrip"]  # one layer unpacked again by compressed-tensors inside the build
    assert 0 < trip["max_abs_error"] <= trip["max_half_step"] * 1.1  # half a step, plus bf16 rounding


def test_synthetic_failures_fail_every_goal(dry_run: tuple[dict[str, Any], Path]) -> None:
    fit = dry_run[0]["results"]["fit"]
    judged = goals.evaluate({"fit": fit, "build": {"cuda_context_bytes": 0}, **driver.synthetic("fail", fit)})
    assert [g.passed for g in judged] == [False] * 7


def test_missing_steps_are_not_measured_never_passed() -> None:
    judged = goals.evaluate({"leanserve-bf16": {"speed": {"1": {"tokens_per_s": 100.0}}}})
    assert [g.passed for g in judged] == [None] * 7


def test_goal_thresholds() -> None:
    def speed(one: float, many: float = 1.0) -> dict[str, Any]:
        return {"1": {"tokens_per_s": one}, "64": {"tokens_per_s": many}}

    results = {"leanserve-bf16": {"speed": speed(95.0, 94.9), "ttft": {"p50_s": 0.050, "prompt_tokens": 512}},
               "direct-bf16": {"speed": speed(100.0, 100.0)},
               "leanserve-gptq4": {"speed": speed(170.0), "vllm": {"kv_tokens": 1000},
                                   "nvml": {"baseline_bytes": GiB, "peak_bytes": 9 * GiB + 100},
                                   "metrics_peak_bytes": {"gpu_nvml_used": 8 * GiB}},
               "fit": {"shape": {"kv_tokens": 1150}}, "build": {"cuda_context_bytes": 100}}
    by = {g.name: g for g in goals.evaluate(results)}
    assert by["http_over_direct_1"].passed and not by["http_over_direct_64"].passed  # 0.95 passes, 0.949 not
    assert not by["w4a16_over_bf16_1"].passed  # 170 / 95 = 1.79
    assert by["ttft_p50_512"].passed  # <= 50 ms
    assert by["fit_kv_within_15pct"].passed  # 1150 / 1000 = 1.15
    assert by["vram_budget_8gib"].value == 8 * GiB + 100 and by["vram_budget_8gib"].passed  # budget + context
    results["fit"]["shape"]["kv_tokens"] = 1160
    assert not {g.name: g for g in goals.evaluate(results)}["fit_kv_within_15pct"].passed


def test_greedy_check_counts_the_equal_prefix() -> None:
    ids = list(range(10, 42))
    same = goals.evaluate({"leanserve-bf16": {"greedy": {"ids": ids}}, "direct-bf16": {"greedy": {"ids": ids}}})
    differ = goals.evaluate({"leanserve-bf16": {"greedy": {"ids": ids}},
                             "direct-bf16": {"greedy": {"ids": ids[:20] + [3] * 12}}})
    assert (same[-1].passed, same[-1].value) == (True, 32.0)
    assert (differ[-1].passed, differ[-1].value) == (False, 20.0)


def test_prompts_are_exact_token_counts() -> None:
    text = prompt_text(512, seed=1, vocab_size=32000)
    ids = words_to_ids(text)
    assert len(ids) == 512 and all(3 <= i < 32000 for i in ids)
    assert words_to_ids(prompt_text(512, seed=2, vocab_size=32000))[0] != ids[0]  # no shared prefix
    assert nearest_rank([0.3, 0.1, 0.2, 0.4], 0.5) == 0.2 and nearest_rank([], 0.9) is None


def test_vllm_log_and_device_name_parsing() -> None:
    log = ("INFO kv_cache_utils.py: GPU KV cache size: 45,312 tokens\n"
           "INFO Maximum concurrency for 4,096 tokens per request: 11.06x\n"
           "INFO gpu_worker.py: Available KV cache memory: 2.77 GiB\n"
           "INFO leanserve.engines.vllm: VRAM budget 8589934592 of 150754820096 bytes: {'model': 'x'}\n")
    parsed = parse_vllm_log(log)
    assert parsed["kv_tokens"] == 45312 and parsed["kv_blocks"] == 2832 and parsed["kv_gib"] == 2.77
    assert parsed["max_concurrency"] == {"tokens_per_request": 4096, "x": 11.06}
    assert parsed["budget"]["bytes"] == 8 * GiB
    assert driver.device_slug("NVIDIA H200") == "h200"
    assert driver.device_slug("NVIDIA H100 80GB HBM3") == "h100"


def test_direct_engine_gets_leanserve_engine_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    from leanserve.engines import memory
    from leanserve.engines.base import EngineConfig, MemoryBudget
    from leanserve.engines.vllm import engine_kwargs
    from leanserve.profiles.registry import get_profile

    spec = get_profile("bf16", Path("/nonexistent"))
    plain = engine_kwargs(EngineConfig("/m", spec.load, "cuda", "bfloat16", max_model_len=1024))
    assert plain == {"model": "/m", "dtype": "bfloat16", "trust_remote_code": False, "max_model_len": 1024,
                     "load_format": "safetensors",
                     "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
    monkeypatch.setattr(memory, "gpu_total_bytes", lambda: 80 * GiB)
    budget = engine_kwargs(EngineConfig("/m", spec.load, "cuda", "bfloat16", memory_budget=MemoryBudget(8 * GiB, 2048, 256)))
    assert (budget["gpu_memory_utilization"], budget["max_num_seqs"]) == (0.1, 256)
