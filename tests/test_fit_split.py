"""The llama.cpp layer split (leanserve.fit.split_layers) against sums done by hand, and the llamacpp
engine's choice of n_gpu_layers. No GPU here: where a test needs "this llama.cpp has GPU offload", it passes
that flag itself, which stands in for a CUDA build of llama-cpp-python (a mock: the installed one is a CPU build).

Hand computations, Llama-2-7B at Q4_K_M (4.89 bits per weight, leanserve.methods.gguf), the llamacpp
engine's defaults (8 sequences x 2048 tokens of context, n_batch 512), f16 KV:
  block    = 202,375,168 weights x 4.89 / 8 = 123,701,821 B + 2 norms x 4096 x 4 B = 123,734,589 B
  KV/layer = 16,384 tokens x 2 x 32 KV heads x 128 x 2 B = 268,435,456 B (256 MiB)
  compute  = 2 x 512 x (2x4096 + 3x4096 + 4096 + 2x11008) x 4   (f32 activations)  190,840,832
           + 512 x 2048 x 32 heads x 4                           (attention scores)  134,217,728
           + 512 x 32000 x 4                                     (one batch's logits) 65,536,000 = 390,594,560 B
  one layer on the GPU = 123,734,589 + 268,435,456 = 392,170,045 B
  8 GiB: (8 GiB - 1 GiB runtime - compute) = 7,125,598,208 B -> 18 layers (18.2); 4 GiB: 2,830,630,912 B -> 7 (7.2)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from leanserve import fit
from leanserve.cli import app
from leanserve.engines import llamacpp
from leanserve.engines.base import EngineError, MemoryBudget
from leanserve.profiles.registry import get_profile
from leanserve.server.launch import apply_vram_budget
from leanserve.settings import Settings

GIB = 1 << 30
BLOCK = 123_734_589
KV_LAYER = 268_435_456
COMPUTE = 390_594_560
LAYER = BLOCK + KV_LAYER


@pytest.fixture(scope="module")
def llama() -> fit.ModelShape:
    return fit.load_shape("shape:llama-7b", Path("/nonexistent"))[0]


def split(llama: fit.ModelShape, home: Path, budget: int) -> fit.LayerSplit:
    weights = fit.estimated_layer_weights(llama, get_profile("q4_k_m", home))
    return fit.split_layers(llama, weights, budget, context=2048, sequences=8, n_batch=512)


@pytest.mark.unit
def test_llama7b_q4_k_m_blocks_kv_and_compute_by_hand(llama: fit.ModelShape, home: Path) -> None:
    weights = fit.estimated_layer_weights(llama, get_profile("q4_k_m", home))
    assert weights.per_layer == [BLOCK] * 32
    assert weights.embeddings == 32000 * 4096 * 2 and weights.output == 32000 * 4096 * 2 + 4096 * 4
    assert fit.llamacpp_compute_bytes(llama, 512, 2048) == COMPUTE
    s = split(llama, home, 8 * GIB)
    assert (s.kv_tokens, s.kv_per_layer, s.compute) == (16_384, KV_LAYER, COMPUTE)


@pytest.mark.unit
@pytest.mark.parametrize(("budget", "layers"), [(8 * GIB, 18), (4 * GIB, 7)])
def test_llama7b_q4_k_m_splits_under_8_and_4_gib(llama: fit.ModelShape, home: Path, budget: int, layers: int) -> None:
    s = split(llama, home, budget)
    assert (budget - GIB - COMPUTE) // LAYER == layers
    assert s.fits and s.gpu_layers == s.n_gpu_layers == layers and not s.output_on_gpu
    assert s.gpu_weights == layers * BLOCK and s.gpu_kv == layers * KV_LAYER and s.gpu_bytes <= budget
    assert s.cpu_kv == (32 - layers) * KV_LAYER
    assert s.cpu_weights == (32 - layers) * BLOCK + 2 * 32000 * 4096 * 2 + 4096 * 4  # embeddings and head stay
    assert f"{layers} of 32 layers on the GPU, {32 - layers} on the CPU" in fit.render_split(s)


@pytest.mark.unit
def test_everything_fits_a_big_budget_with_the_head(llama: fit.ModelShape, home: Path) -> None:
    s = split(llama, home, 40 * GIB)
    assert s.gpu_layers == 32 and s.output_on_gpu and s.n_gpu_layers == 33  # llama.cpp: > n_layer moves the head
    assert s.cpu_weights == 32000 * 4096 * 2 and s.cpu_kv == 0  # only the token embeddings stay on the CPU
    exact = GIB + COMPUTE + 32 * LAYER  # every block fits, the head (250 MiB) does not
    tight = split(llama, home, exact)
    assert tight.gpu_layers == 32 and not tight.output_on_gpu and tight.n_gpu_layers == 32
    assert split(llama, home, exact - 1).gpu_layers == 31


@pytest.mark.unit
def test_nothing_fits_says_why(llama: fit.ModelShape, home: Path) -> None:
    none = split(llama, home, GIB)
    assert not none.fits and none.n_gpu_layers == 0
    assert "exceed the 1.00 GiB budget before any layer" in none.reason() and "--device cpu" in none.reason()
    short = split(llama, home, GIB + COMPUTE + LAYER - 1)  # room for everything but one whole layer
    assert not short.fits and "one layer with its KV cache for 16384 tokens needs" in short.reason()
    assert "--max-model-len" in short.reason() and "no layer fits" in fit.render_split(short)
    assert split(llama, home, GIB + COMPUTE + LAYER).gpu_layers == 1


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """A two-block GGUF written with the gguf package: tied embeddings, so the head is a copy of them."""
    import gguf

    file = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(file), "llama")
    for add, value in ((w.add_block_count, 2), (w.add_embedding_length, 64), (w.add_feed_forward_length, 128),
                       (w.add_head_count, 4), (w.add_head_count_kv, 2), (w.add_context_length, 512),
                       (w.add_vocab_size, 100)):
        add(value)
    w.add_tensor("token_embd.weight", np.zeros((100, 64), np.float16))
    w.add_tensor("output_norm.weight", np.zeros(64, np.float32))
    for i, width in ((0, 64), (1, 32)):  # blocks of different sizes, as k-quant mixes make them
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, width), np.float16))
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.zeros(64, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return file


@pytest.mark.unit
def test_read_gguf_takes_shape_and_bytes_per_layer_from_the_file(tiny_gguf: Path, tmp_path: Path) -> None:
    shape, weights = fit.read_gguf(tiny_gguf)
    assert (shape.layers, shape.hidden, shape.kv_heads, shape.head_dim, shape.vocab) == (2, 64, 2, 16, 100)
    assert shape.tied_embeddings and shape.max_position == 512
    assert weights.per_layer == [64 * 64 * 2 + 256, 64 * 32 * 2 + 256] and weights.source == "gguf"
    assert weights.embeddings == 100 * 64 * 2 and weights.output == 256 + 100 * 64 * 2
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(fit.FitError, match="cannot read .* as GGUF"):
        fit.read_gguf(bad)


@pytest.mark.unit
def test_engine_offloads_only_on_a_gpu_with_an_offload_build(llama: fit.ModelShape, home: Path) -> None:
    def never() -> fit.LayerSplit:
        raise AssertionError("the split is not computed on a CPU or a CPU build")

    assert llamacpp.n_gpu_layers("cpu", True, never) == 0
    assert llamacpp.n_gpu_layers("cpu", False, never) == 0
    assert llamacpp.n_gpu_layers("cuda", False, never) == 0  # a CPU build of llama.cpp on a GPU machine
    # True below is a mock of a CUDA build of llama-cpp-python (this machine's is a CPU build)
    assert llamacpp.n_gpu_layers("cuda", True, lambda: split(llama, home, 8 * GIB)) == 18
    assert llamacpp.n_gpu_layers("cuda", True, lambda: split(llama, home, 40 * GIB)) == 33
    with pytest.raises(EngineError, match="cannot offload anything to the GPU: runtime"):
        llamacpp.n_gpu_layers("cuda", True, lambda: split(llama, home, GIB))


@pytest.mark.unit
def test_engine_takes_cuda_only_with_an_offload_build(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from leanserve.engines import llamacpp_lib

    load = get_profile("q4_k_m", home).load
    assert llamacpp.LlamaCppEngine.unsupported_reason(load, "cpu") is None
    monkeypatch.setattr(llamacpp_lib, "supports_gpu_offload", lambda: False)
    assert "no GPU offload" in llamacpp.LlamaCppEngine.unsupported_reason(load, "cuda")
    monkeypatch.setattr(llamacpp_lib, "supports_gpu_offload", lambda: True)  # a mock of a CUDA build
    assert llamacpp.LlamaCppEngine.unsupported_reason(load, "cuda") is None


@pytest.mark.unit
def test_vram_budget_goes_to_llamacpp_unplanned_on_gpu_and_stays_informational_on_cpu(tmp_path: Path,
                                                                                       home: Path) -> None:
    """A budget far below the weights: the vLLM plan would refuse it; the llamacpp engine splits instead."""
    settings = Settings(home=home, profile="q4_k_m", max_model_len=1024, vram_budget=GIB)
    spec = get_profile("q4_k_m", home)
    budget = MemoryBudget(GIB, llamacpp.N_BATCH, llamacpp.SEQUENCES)
    assert apply_vram_budget(settings, spec, tmp_path, "cuda", "bfloat16", "llamacpp") == (1024, budget)


@pytest.mark.unit
def test_fit_cli_prints_the_split_for_a_gguf_profile(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["fit", "--model", "shape:llama-7b", "--profile", "q4_k_m", "--home", str(tmp_path)]
    ok = runner.invoke(app, [*args, "--vram", "8GiB"])
    assert ok.exit_code == 0, ok.output
    assert "18 of 32 layers on the GPU, 14 on the CPU" in ok.output and "n_gpu_layers 18" in ok.output
    short = runner.invoke(app, [*args, "--vram", "8GiB", "--context", "256", "--json"])
    assert short.exit_code == 0 and json.loads(short.output)["n_gpu_layers"] == 33  # 256 x 8 tokens: all fit
    none = runner.invoke(app, [*args, "--vram", "1GiB"])
    assert none.exit_code == 1 and "no layer fits" in none.output
    kv = runner.invoke(app, [*args, "--vram", "8GiB", "--kv-dtype", "fp8"])
    assert kv.exit_code == 2 and "KV cache in f16" in kv.output


@pytest.mark.unit
def test_fit_cli_reads_a_gguf_model_file(tiny_gguf: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["fit", "--model", str(tiny_gguf), "--vram", "2GiB", "--json", "--home", str(tmp_path)])
    assert out.exit_code == 0, out.output
    split = json.loads(out.output)
    assert (split["weights_source"], split["layers"], split["n_gpu_layers"], split["profile"]) == ("gguf", 2, 3, "")
    assert split["kv_tokens"] == 512 * llamacpp.SEQUENCES  # the file's 512-token context caps the engine's 2048
