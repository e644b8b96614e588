"""The model the GPU run measures: a random-weight Llama-2-7B shape, in bf16 and as a W4A16 copy.

Speed and memory do not depend on weight values, so nothing is downloaded: the config comes from
`leanserve/shapes/llama-7b.json` and the weights from `LlamaForCausalLM(config)`'s own init.

Tokenizer: generated here (a word-level vocabulary `<unk> <s> </s> w3 ... w31999`), so the vocabulary
matches the shape's 32,000 and the embedding and LM-head bytes are Llama-2's. The default SmolLM2
tokenizer (49,152 tokens) would have changed the shape instead. One word is one token, so a prompt of
N words is N tokens, and a text answer maps back to its token ids exactly.

W4A16: written with compressed-tensors' own API (round-to-nearest scales from `calculate_qparams`,
packed by `PackedQuantizationCompressor`, config by `ModelCompressor.update_config`) rather than
llm-compressor's QuantizationModifier: compressed-tensors 0.17.0 is already in the vLLM wheel set (it
is the version vLLM 0.26 reads), while llm-compressor 0.14 pins compressed-tensors 0.19 (two versions
cannot share one --target) and brings datasets and more. The only wheel it adds is loguru (which
compressed-tensors imports, and which vLLM needs too for any compressed-tensors model). The format is
the gptq-4 profile's: W4A16 symmetric, group 128, `lm_head` left in 16 bit, `pack-quantized`.
"""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

SHAPE = "llama-7b"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")
# --dry-run: the same architecture at a size a CPU builds in a second
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 1024}
W4A16_PROFILE = "gptq-4"  # the profile whose format the W4A16 copy has (and under which leanserve serves it)


def shape_config(tiny: bool = False, shape: str = SHAPE) -> dict[str, Any]:
    """The HF config dict of the shipped shape (comment keys dropped), shrunk when `tiny`."""
    text = resources.files("leanserve.shapes").joinpath(f"{shape}.json").read_text()
    config = {k: v for k, v in json.loads(text).items() if not k.startswith("_")}
    config.update(TINY if tiny else {})
    config["torch_dtype"] = "bfloat16"
    return config


def word(i: int) -> str:
    """The text of token id i (>= len(SPECIAL_TOKENS)) in the generated vocabulary."""
    return f"w{i}"


def prompt_text(n_tokens: int, seed: int, vocab_size: int) -> str:
    """n_tokens random words = exactly n_tokens tokens; distinct seeds share no prefix (no prefix-cache hits)."""
    import random

    rng = random.Random(seed)
    return " ".join(word(rng.randrange(len(SPECIAL_TOKENS), vocab_size)) for _ in range(n_tokens))


def write_tokenizer(vocab_size: int, out: Path) -> None:
    """A word-level fast tokenizer of exactly vocab_size tokens (specials first, as Llama's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({word(i): i for i in range(len(SPECIAL_TOKENS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(out)


def build_bf16(config: dict[str, Any], out: Path, device: str) -> Any:
    """Random-weight LlamaForCausalLM in bf16, built on `device` (seconds on a GPU), saved with its
    tokenizer to `out`; returns the model (still on `device`) for the W4A16 copy."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**config)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # allocate in bf16 at once: 7B in float32 would be 27 GB
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    model = model.to(torch.bfloat16).eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    write_tokenizer(cfg.vocab_size, out)
    return model


# --- W4A16 through compressed-tensors -------------------------------------------------------------------------
def w4a16_scheme(in_features: list[int], group_size: int) -> Any:
    """compressed-tensors' W4A16 preset (int4 symmetric weights, 16-bit activations) with a group that fits."""
    from compressed_tensors.quantization import preset_name_to_scheme

    from leanserve.compressors.llmc import group_size_for

    scheme = preset_name_to_scheme("W4A16", ["Linear"])
    scheme.weights.group_size = group_size_for(in_features, group_size)
    return scheme


def quantize_rtn(weight: Any, scheme: Any) -> dict[str, Any]:
    """One Linear's weight [out, in] -> {weight_packed int32 [out, in/8], weight_scale [out, in/group],
    weight_shape}: round-to-nearest with per-group absmax scales (no calibration data)."""
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor
    from compressed_tensors.quantization.utils import calculate_qparams

    args = scheme.weights
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // args.group_size, args.group_size)
    scale, zero_point = calculate_qparams(groups.amin(dim=-1), groups.amax(dim=-1), args)
    state = {"weight": weight, "weight_scale": scale.to(weight.dtype), "weight_zero_point": zero_point}
    return PackedQuantizationCompressor.compress(state, scheme)


def write_w4a16(model: Any, bf16_dir: Path, out: Path, group_size: int = 128) -> dict[str, Any]:
    """The compressed-tensors pack-quantized copy of `model` in `out` (config, tokenizer, one safetensors
    file); every nn.Linear but lm_head quantized. Returns facts for the manifest."""
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.quantization import QuantizationConfig, QuantizationStatus
    from safetensors.torch import save_file

    linears = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"}
    scheme = w4a16_scheme([m.in_features for m in linears.values()], group_size)
    quantized = {f"{name}.weight" for name in linears}
    state: dict[str, Any] = {}
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key not in quantized:  # embeddings, norms, lm_head: 16 bit, as every quantizer here keeps them
                state[key] = tensor.detach().to("cpu", copy=True).contiguous()
        for name, module in linears.items():
            for k, v in quantize_rtn(module.weight.detach(), scheme).items():
                state[f"{name}.{k}"] = v.to("cpu").contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    for f in bf16_dir.iterdir():  # config, generation config, tokenizer files
        if f.is_file() and not f.name.endswith(".safetensors") and not f.name.endswith(".index.json"):
            shutil.copy2(f, out / f.name)
    qconfig = QuantizationConfig(config_groups={"group_0": scheme}, format=CompressionFormat.pack_quantized.value,
                                 quantization_status=QuantizationStatus.COMPRESSED, ignore=["lm_head"])
    ModelCompressor(quantization_config=qconfig).update_config(str(out))
    name = next(iter(linears))
    return {"method": "round-to-nearest W4A16 (compressed-tensors API, no calibration)",
            "format": "compressed-tensors", "scheme": "W4A16", "group_size": scheme.weights.group_size,
            "quantized_linears": len(linears), "roundtrip": roundtrip(name, linears[name].weight, state, scheme)}


def roundtrip(name: str, weight: Any, state: dict[str, Any], scheme: Any) -> dict[str, Any]:
    """One layer unpacked again by compressed-tensors: its error must stay within half a quantization step."""
    from compressed_tensors.compressors.pack_quantized import PackedQuantizationCompressor

    packed = {k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")}
    restored = PackedQuantizationCompressor.decompress(packed, scheme)["weight"].float()
    original = weight.detach().float().cpu()
    group = scheme.weights.group_size
    step = original.reshape(original.shape[0], -1, group).abs().amax(-1) / 7.5  # int4 symmetric: absmax / 7.5
    return {"layer": name, "max_abs_error": float((restored - original).abs().max()),
            "max_half_step": float(step.max() / 2)}


def write_artifact(model: Any, bf16_dir: Path, home: Path) -> Path:
    """The W4A16 copy as leanserve's gptq-4 artifact for `bf16_dir` (a manifest with every file's sha256,
    so `serve --profile gptq-4` verifies and loads it as it would a `leanserve compress` build)."""
    from leanserve.compressors.job import file_hashes, library_versions
    from leanserve.profiles.registry import get_profile
    from leanserve.profiles.store import MANIFEST, artifact_dir, dir_size

    final = artifact_dir(home, str(bf16_dir), W4A16_PROFILE)
    tmp = final.with_name(f".{W4A16_PROFILE}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    facts = write_w4a16(model, bf16_dir, tmp)
    manifest = {"profile": W4A16_PROFILE, "spec": get_profile(W4A16_PROFILE, home).model_dump(),
                "base_model": str(bf16_dir), "libraries": library_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_time_s": round(time.perf_counter() - started, 2), "size_bytes": dir_size(tmp),
                "files": file_hashes(tmp), **facts}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(final)
    return final


def weights_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))
