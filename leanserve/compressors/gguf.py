"""The `gguf` build: a dense checkpoint -> F32 GGUF -> llama.cpp's own quantizer (q8_0, q4_k_m, q5_k_m).

Any dense artifact can be the source (`source=pruned` composes pruning with a k-quant); the default is
the base model. k-quants can take an importance matrix from calibration text (gguf_imatrix.py). The
artifact holds the quantized .gguf plus the source's HF tokenizer and config, so every engine's
tokenizer is the same one (see engines/llamacpp.py).

SmolLM2's width (576) is not a multiple of 256, the k-quant block: llama.cpp then falls back to other
types for most tensors, so the manifest records the types actually written, counted from the file.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from leanserve.compressors.base import BuildContext
from leanserve.errors import ProfileError
from leanserve.methods.gguf import Params

log = logging.getLogger(__name__)
__all__ = ["Params", "build"]

FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M"}
# what the artifact carries beside the .gguf: the HF tokenizer (engines tokenize with it) and the config
# (leanserve fit and the report read it); no weights
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja")


def source_dir(ctx: BuildContext, source: str) -> Path:
    """The directory of the dense checkpoint to convert: the base model, or a built sibling artifact
    (ctx.out_dir is a temporary directory beside this profile's final one, among the model's artifacts)."""
    from leanserve.profiles.registry import get_profile
    from leanserve.profiles.store import read_manifest
    from leanserve.profiles.verify import verify_artifact

    if source == "bf16":
        return ctx.base_dir
    home = ctx.out_dir.parent.parent.parent  # <home>/artifacts/<model>/<tmp>
    spec = get_profile(source, home)
    if spec.format != "safetensors" or spec.load_quant is not None or not spec.needs_artifact:
        raise ProfileError(f"source {source!r} is not a dense built profile (bf16, pruned, distilled, ...)",
                           param="source")
    path = ctx.out_dir.parent / source
    manifest = read_manifest(path)
    if manifest is None:
        raise ProfileError(f"source profile {source!r} is not built (looked in {path}); build it first: "
                           f"leanserve compress --profile {source}", param="source")
    verify_artifact(path, manifest)
    return path


def quantize(llama_cpp: Any, src: Path, dst: Path, quant: str, imatrix: Any | None) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[quant])
    params.nthread = int(os.environ.get("OMP_NUM_THREADS") or 0)  # 0: llama.cpp uses every core
    if imatrix is not None:
        params.imatrix = imatrix
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.is_file():
        raise ProfileError(f"llama_model_quantize({quant}) failed with code {rc}; its log above says why",
                           param="profile")


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type the file holds."""
    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def importance_matrix(ctx: BuildContext, src: Path, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
    """(imatrix by GGUF tensor name, manifest facts) from the calibration text, on the source model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leanserve.compressors.calibration import load_calibration
    from leanserve.compressors.gguf_imatrix import collect

    tokenizer = AutoTokenizer.from_pretrained(src)
    calib = load_calibration(ctx.calib, tokenizer, params.calib_samples, params.calib_seq_len)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    started = time.perf_counter()
    matrix = collect(model, calib.samples, int(model.config.num_hidden_layers))
    return matrix, {"calibration": calib.describe(), "tensors": len(matrix),
                    "tokens": len(calib.samples) * calib.seq_len, "seconds": round(time.perf_counter() - started, 2)}


def build(ctx: BuildContext) -> dict[str, Any]:
    from leanserve.compressors.gguf_convert import convert
    from leanserve.compressors.gguf_imatrix import as_c_array
    from leanserve.engines.llamacpp_lib import cpu_variant, load

    params: Params = ctx.params
    src = source_dir(ctx, params.source)
    llama_cpp = load()
    intermediate = ctx.out_dir / f".intermediate-{params.intermediate}.gguf"
    log.info("gguf: converting %s to %s GGUF", src, params.intermediate.upper())
    converted = convert(src, intermediate, params.intermediate)
    imatrix_facts: dict[str, Any] | None = None
    c_imatrix, keep = None, []
    if params.imatrix:
        matrix, imatrix_facts = importance_matrix(ctx, src, params)
        c_imatrix, keep = as_c_array(llama_cpp, matrix)
    out = ctx.out_dir / f"model-{params.quant}.gguf"
    log.info("gguf: quantizing to %s%s", params.quant, " with an importance matrix" if params.imatrix else "")
    started = time.perf_counter()
    quantize(llama_cpp, intermediate, out, params.quant, c_imatrix)
    quantize_s = time.perf_counter() - started
    del keep  # the C side is done with the buffers
    intermediate.unlink()
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, ctx.out_dir / name)
    return {
        "params": params.model_dump(),
        "source": {"profile": params.source, "dir": str(src)},
        "quant_type": params.quant,
        "gguf_file": out.name,
        "imatrix": imatrix_facts,
        "tensor_types": tensor_types(out),
        "sizes": {"intermediate_bytes": converted["size_bytes"], "gguf_bytes": out.stat().st_size},
        "pre_tokenizer": converted["pre_tokenizer"],
        "quantize_s": round(quantize_s, 2),
        "llama_cpp": {"version": getattr(llama_cpp, "__version__", None), "cpu_kernels": cpu_variant()},
    }
