"""The VRAM planner against sizes computed by hand for two shapes, and `serve --vram-budget`'s plan.

Hand computations (bf16/fp16 = 2 bytes):
SmolLM2-135M: 30 layers, hidden 576, 9 heads / 3 KV heads of 64, MLP 1536, vocab 49152, tied embeddings.
  KV/token = 30 x 2 x 3 x 64 x 2 = 23,040 B
  params   = 49152*576 (embeddings) + 30 x (576*576*2 + 576*192*2 + 3*576*1536 + 2*576) + 576 = 134,515,008
Llama-2-7B: 32 layers, hidden 4096, 32 heads / 32 KV heads of 128, MLP 11008, vocab 32000, untied.
  KV/token = 32 x 2 x 32 x 128 x 2 = 524,288 B
  linear   = 32 x (4 x 4096^2 + 3 x 4096 x 11008) = 6,476,005,376 weights
  gptq-4 g128 = linear/2 (4 bit) + linear/128 x 2 (fp16 scales) + linear/128/2 (4-bit zero points: asymmetric)
              + 2 x 32000 x 4096 x 2 (embeddings, head) + (32 x 2 x 4096 + 4096) x 2 (norms)
              = 3,238,002,688 + 101,187,584 + 25,296,896 + 524,288,000 + 532,480
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from leanserve import fit
from leanserve.cli import app
from leanserve.engines.base import MemoryBudget
from leanserve.engines.vllm import budget_engine_args
from leanserve.errors import ProfileError
from leanserve.profiles.registry import get_profile, with_params
from leanserve.server.launch import apply_vram_budget
from leanserve.settings import Settings
from tests.servers import start_server

GIB = 1 << 30
LLAMA_GPTQ4 = 3_238_002_688 + 101_187_584 + 25_296_896 + 524_288_000 + 532_480
LLAMA_ACTIVATIONS = 2 * 2048 * (2 * 4096 + 3 * 4096 + 4096 + 2 * 11008) * 2 + 2 * 256 * 32000 * 4  # fit.activation_bytes


@pytest.fixture(scope="module")
def llama() -> fit.ModelShape:
    return fit.load_shape("shape:llama-7b", Path("/nonexistent"))[0]


@pytest.fixture(scope="module")
def smollm(model_dir: Path) -> fit.ModelShape:
    return fit.load_shape(str(model_dir / "config.json"), Path("/nonexistent"))[0]


@pytest.mark.unit
def test_smollm2_shape_kv_and_weights_match_hand_and_disk(smollm: fit.ModelShape, model_dir: Path) -> None:
    assert (smollm.layers, smollm.kv_heads, smollm.head_dim, smollm.tied_embeddings) == (30, 3, 64, True)
    assert fit.kv_bytes_per_token(smollm) == 23_040
    assert smollm.params == 134_515_008
    bf16 = fit.weight_bytes(smollm, get_profile("bf16", model_dir))
    assert bf16 == 2 * 134_515_008
    on_disk = (model_dir / "model.safetensors").stat().st_size  # the checkpoint is bf16: header aside, equal
    assert 0 < on_disk - bf16 < 100_000


@pytest.mark.unit
def test_llama7b_kv_params_and_gptq4_weights(llama: fit.ModelShape, home: Path) -> None:
    assert fit.kv_bytes_per_token(llama) == 524_288
    assert fit.kv_bytes_per_token(llama, 1) == 262_144  # fp8 KV cache
    assert llama.params == 6_738_415_616  # Llama-2-7B's published count
    assert fit.weight_bytes(llama, get_profile("gptq-4", home)) == LLAMA_GPTQ4
    assert fit.weight_bytes(llama, get_profile("bf16", home)) == 2 * 6_738_415_616
    # awq-4 is asymmetric too; symmetric GPTQ saves the 4-bit zero per group
    assert fit.weight_bytes(llama, get_profile("awq-4", home)) == LLAMA_GPTQ4
    symmetric = with_params(get_profile("gptq-4", home), {"scheme": "W4A16"})
    assert fit.weight_bytes(llama, symmetric) == LLAMA_GPTQ4 - 6_476_005_376 // 128 // 2


@pytest.mark.unit
def test_llama7b_gptq4_in_8gib(llama: fit.ModelShape, home: Path) -> None:
    p = fit.plan(llama, get_profile("gptq-4", home), 8 * GIB)
    assert p.activations == LLAMA_ACTIVATIONS
    kv = 8 * GIB - LLAMA_GPTQ4 - GIB - LLAMA_ACTIVATIONS
    assert p.kv_budget == kv == 3_179_667_456
    assert p.fits and p.max_len == 4096  # 6,064 tokens of cache, capped at the model's 4,096 context
    assert dict(p.concurrency) == {512: kv // (512 * 524_288), 1024: 5, 2048: 2, 4096: 1}
    assert dict(p.concurrency)[512] == 11
    text = fit.render(p)
    assert "524288 bytes/token" in text and "sequences at once" in text


@pytest.mark.unit
def test_llama7b_bf16_does_not_fit_8gib_and_says_why(llama: fit.ModelShape, home: Path) -> None:
    p = fit.plan(llama, get_profile("bf16", home), 8 * GIB)
    assert not p.fits and p.max_len == 0 and all(n == 0 for _, n in p.concurrency)
    assert "exceed the 8.00 GiB budget" in p.reason() and "4-bit profile" in p.reason()


@pytest.mark.unit
def test_smollm2_bf16_in_2gib_by_hand(smollm: fit.ModelShape, home: Path) -> None:
    p = fit.plan(smollm, get_profile("bf16", home), 2 * GIB, context=1000)
    acts = 2 * 2048 * (2 * 576 + 15 * 64 + 9 * 64 + 2 * 1536) * 2 + 2 * 256 * 49152 * 4
    kv = 2 * GIB - 2 * 134_515_008 - GIB - acts
    assert (p.activations, p.kv_budget) == (acts, kv)
    assert p.concurrency == [(1000, kv // (1008 * 23_040))]  # 1000 tokens occupy 63 blocks of 16
    assert p.max_len == 8192


@pytest.mark.unit
def test_structural_profiles_plan_their_smaller_shape(llama: fit.ModelShape, home: Path) -> None:
    distilled = get_profile("distilled", home)
    assert fit.profile_shape(llama, distilled).layers == 28  # 4 of 32 blocks dropped by block influence
    every = distilled.with_params({"layer_choice": "every", "keep_every": 2, "drop_layers": 0})
    assert fit.profile_shape(llama, every).layers == 17  # blocks 0, 2, ..., 30 and 31
    assert fit.profile_shape(llama, get_profile("pruned", home)).intermediate == 8256  # 0.75 x 11008 to a multiple of 32


@pytest.mark.unit
@pytest.mark.parametrize(("text", "expected"), [
    ("8GiB", 8 * GIB), ("8G", 8 * GIB), ("7.5 GiB", int(7.5 * GIB)), ("8GB", 8_000_000_000),
    ("8000MiB", 8000 << 20), ("1024", 1024),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert fit.parse_bytes(text) == expected


@pytest.mark.unit
def test_parse_bytes_rejects_garbage() -> None:
    with pytest.raises(fit.FitError, match="cannot read"):
        fit.parse_bytes("eight gigs")


@pytest.mark.unit
def test_fit_cli_prints_the_table_and_exits_1_when_nothing_fits(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["fit", "--model", "shape:mistral-7b", "--profile", "gptq-4", "--vram", "8GiB",
                             "--context", "4096", "--json", "--home", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    plan = json.loads(ok.output)
    assert plan["kv_per_token"] == 32 * 2 * 8 * 128 * 2 and plan["fits"]
    assert plan["concurrency"][0]["context"] == 4096 and plan["concurrency"][0]["sequences"] >= 1
    config = tmp_path / "config.json"  # a bare config.json works as --model
    config.write_text(fit.resources.files("leanserve.shapes").joinpath("llama-7b.json").read_text())
    no = runner.invoke(app, ["fit", "--model", str(config), "--vram", "8GiB", "--home", str(tmp_path)])
    assert no.exit_code == 1 and "nothing fits" in no.output
    bad = runner.invoke(app, ["fit", "--model", "shape:gpt-5", "--vram", "8GiB", "--home", str(tmp_path)])
    assert bad.exit_code == 2 and "llama-7b" in bad.output


@pytest.mark.unit
def test_vram_budget_caps_context_on_gpu_and_only_logs_on_cpu(model_dir: Path, home: Path) -> None:
    settings = Settings(home=home, profile="bf16", max_model_len=None, vram_budget=2 * GIB)
    spec = get_profile("bf16", home)
    assert apply_vram_budget(settings, spec, model_dir, "cpu", "float32") == (None, None)
    max_len, budget = apply_vram_budget(settings, spec, model_dir, "cuda", "bfloat16")  # plans only: no GPU touched
    assert max_len == 8192 and budget == MemoryBudget(2 * GIB, fit.DEFAULT_MAX_BATCHED_TOKENS, fit.DEFAULT_MAX_SEQS)
    tight = Settings(home=home, profile="bf16", max_model_len=4096, vram_budget=int(1.4 * GIB))
    max_len, _ = apply_vram_budget(tight, spec, model_dir, "cuda", "bfloat16")
    kv = int(1.4 * GIB) - 2 * 134_515_008 - GIB - fit.activation_bytes(fit.load_shape(str(model_dir / "config.json"), home)[0], 2048, 256)
    assert max_len == kv // (23_040 * 16) * 16 < 4096
    with pytest.raises(ProfileError, match="nothing fits"):
        apply_vram_budget(Settings(home=home, vram_budget=GIB), spec, model_dir, "cuda", "bfloat16")


@pytest.mark.unit
def test_vllm_engine_args_for_a_budget() -> None:
    args = budget_engine_args(MemoryBudget(8 * GIB, 2048, 256), 80 * GIB)
    assert args == {"gpu_memory_utilization": 0.1, "max_num_batched_tokens": 2048, "max_num_seqs": 256}
    assert budget_engine_args(MemoryBudget(8 * GIB, 2048, 256), 8 * GIB)["gpu_memory_utilization"] == 0.95


@pytest.mark.server
def test_serve_with_a_vram_budget_on_cpu_logs_the_plan_and_serves(home: Path, model_dir: Path) -> None:
    server = start_server("transformers", "bf16", home, "--vram-budget", "8GiB")
    try:
        log = server.log_text()
        assert "--vram-budget is informational on cpu" in log and "sequences at once" in log
        r = httpx.get(f"{server.base_url}/health", timeout=10)
        assert r.status_code == 200
    finally:
        server.stop()


@pytest.mark.unit
def test_serve_rejects_an_unreadable_budget_before_loading(home: Path) -> None:
    server = start_server("transformers", "bf16", home, "--vram-budget", "eight", wait_ready=False)
    server.wait(server.exited)
    assert server.proc.returncode == 2 and "cannot read 'eight' as a size" in server.log_text()
