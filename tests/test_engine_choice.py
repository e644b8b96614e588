"""`--engine auto`: which engine serves which profile, and the reason it gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve.engines import choose_engine, engine_class
from leanserve.errors import EngineUnavailable
from leanserve.profiles.registry import get_profile

pytestmark = pytest.mark.unit


def spec(name: str):  # noqa: ANN201
    return get_profile(name, Path("/nonexistent"))


def test_bf16_on_cpu_in_the_main_environment_uses_transformers() -> None:
    choice = choose_engine("auto", spec("bf16"), "cpu")
    assert choice.name == "transformers"
    assert "vllm: not installed" in choice.reason  # the main venv has no vLLM: said, not hidden


def test_int8_skips_vllm_with_a_reason() -> None:
    cls = engine_class("vllm")
    assert cls.unsupported_reason(spec("int8").load, "cuda") is not None
    assert cls.unsupported_reason(spec("nf4").load, "cuda") is None
    assert cls.unsupported_reason(spec("nf4").load, "cpu") is not None


def test_explicit_engine_that_cannot_serve_is_refused() -> None:
    with pytest.raises(EngineUnavailable, match="not installed|cannot serve"):
        choose_engine("vllm", spec("bf16"), "cpu")
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        choose_engine("tensorrt", spec("bf16"), "cpu")
    with pytest.raises(EngineUnavailable, match="cannot serve profile 'bf16' on cpu: the llamacpp engine serves GGUF"):
        choose_engine("llamacpp", spec("bf16"), "cpu")


def test_gptq_prefers_vllm_and_transformers_can_fall_back() -> None:
    assert spec("gptq-4").engine.prefer[0] == "vllm"
    assert engine_class("transformers").unsupported_reason(spec("gptq-4").load, "cpu") is None  # decompresses
    assert choose_engine("auto", spec("gptq-4"), "cpu").name == "transformers"  # no vLLM in this venv


def test_vllm_runs_4bit_on_cpu_in_bf16() -> None:
    vllm = engine_class("vllm")
    assert vllm.default_dtype(spec("gptq-4").load, "cpu") == "bfloat16"
    assert vllm.default_dtype(spec("bf16").load, "cpu") == "float32"
    assert vllm.default_dtype(spec("bf16").load, "cuda") == "bfloat16"


@pytest.mark.parametrize("profile", ["q8_0", "q4_k_m", "q5_k_m"])
def test_gguf_profiles_go_to_llamacpp_and_only_there(profile: str) -> None:
    gguf = spec(profile)
    assert gguf.load.format == "gguf" and gguf.build == "gguf"
    choice = choose_engine("auto", gguf, "cpu")
    assert choice.name == "llamacpp" and "preferred by the profile" in choice.reason
    for other in ("transformers", "vllm"):
        assert "llamacpp" in engine_class(other).unsupported_reason(gguf.load, "cpu")
    assert "GPU offload" in engine_class("llamacpp").unsupported_reason(gguf.load, "cuda")
