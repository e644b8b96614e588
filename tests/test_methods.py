"""Typed method parameters: every profile's params are checked against its methods' Params when it loads,
so a typo (in a TOML or in `compress --param`) is refused with the key and the allowed ones; jobs, the
planner and engines read one set of defaults."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leanserve import compressors, methods
from leanserve.errors import ProfileError
from leanserve.methods import distill, gptq, nf4, prune
from leanserve.profiles.registry import get_profile, load_profiles, with_params

pytestmark = pytest.mark.unit

TYPO = """name = "typo"
description = "a pruned profile with a misspelt key"
method = "structured MLP pruning"
build = "structured-prune"

[params]
mlp_kep = 0.5
"""


def test_every_builtin_profile_validates_and_fills_defaults() -> None:
    specs = load_profiles(Path("/nonexistent"))
    assert specs["pruned"].build_params == prune.Params(mlp_keep=0.75, heal_steps=20_000, heal_minutes=30.0)
    assert specs["pruned"].build_params.calib_samples == 128  # the TOML's, over the method's default
    assert (specs["distilled"].build_params.layer_choice, specs["distilled"].build_params.drop_layers) == ("influence", 4)
    assert specs["gptq-8"].build_params.group_size == 128  # not in its TOML: the method's default
    assert specs["int8-gblm"].build_params.sparsity == 0.5
    assert specs["int8-gblm"].runtime_params.threshold == 6.0  # int8's own default, the same profile
    assert specs["nf4"].load.runtime_options == {"double_quant": True}
    assert specs["bf16"].build_params is None and specs["bf16"].runtime_params is None


def test_a_typo_in_a_profile_file_names_the_key_and_the_allowed_ones(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "typo.toml").write_text(TYPO)
    with pytest.raises(ProfileError, match=r"unknown param 'mlp_kep'; allowed: calib_samples, calib_seq_len, "
                                           r"checkpoint_every, heal_minutes, heal_steps, lr, mlp_keep"):
        load_profiles(tmp_path)
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "profiles", "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    assert r.returncode == 2 and "unknown param 'mlp_kep'" in r.stdout


def test_compress_param_overrides_are_validated() -> None:
    spec = get_profile("pruned", Path("/nonexistent"))
    assert with_params(spec, {"mlp_keep": 0.5, "calib_samples": 8}).build_params.calib_samples == 8
    with pytest.raises(ProfileError, match=r"unknown param 'calib_sample'"):
        with_params(spec, {"calib_sample": 8})
    with pytest.raises(ProfileError, match=r"mlp_keep: Input should be less than or equal to 1"):
        with_params(spec, {"mlp_keep": 1.5})
    with pytest.raises(ProfileError, match=r"takes no params"):
        with_params(get_profile("bf16", Path("/nonexistent")), {"group_size": 64})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"keep_every": 2}, r"keep_every=2 applies to layer_choice='every' only; with layer_choice='influence' say how "
                        r"many blocks to drop with drop_layers"),
    ({"layer_choice": "every", "keep_every": 2}, r"drop_layers=4 applies to layer_choice='influence' only; .* pass drop_layers=0"),
    ({"layer_choice": "every", "drop_layers": 0}, r"layer_choice='every' needs keep_every >= 2"),
    ({"drop_layers": 0}, r"drop_layers=0 drops no block"),
    ({"layer_choice": "shortest"}, r"layer_choice: Input should be 'influence' or 'every'"),
    ({"heal_minutes": 0}, r"heal_minutes: Input should be greater than 0"),
])
def test_contradictory_distilled_params_are_refused(overrides: dict, message: str) -> None:
    spec = get_profile("distilled", Path("/nonexistent"))
    with pytest.raises(ProfileError, match=message):
        with_params(spec, overrides)


def test_distilled_layer_counts_for_both_choices() -> None:
    spec = get_profile("distilled", Path("/nonexistent"))
    every = with_params(spec, {"layer_choice": "every", "keep_every": 3, "drop_layers": 0}).build_params
    assert distill.kept_count(30, every) == len(distill.kept_layers(30, 3)) == 11  # 0, 3, ..., 27 and 29
    assert distill.kept_count(30, spec.build_params) == 26
    with pytest.raises(ProfileError, match=r"drop_layers=30 leaves no block of this model's 30; pass at most 29"):
        distill.kept_count(30, distill.Params(drop_layers=30))


def test_an_unknown_build_method_is_refused(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "x.toml").write_text(TYPO.replace("structured-prune", "magic").replace("mlp_kep", "a"))
    with pytest.raises(ProfileError, match=r"unknown build method 'magic'; known: gptq, awq"):
        load_profiles(tmp_path)


def test_each_compressor_module_exposes_its_methods_params_and_build() -> None:
    """The registries agree, and each job's Params is the method module's (one set of defaults)."""
    assert set(compressors.REGISTRY) == set(methods.BUILD)
    for name, module_path in compressors.REGISTRY.items():
        module = importlib.import_module(module_path)
        assert module.Params is methods.method_module(name).Params, name
        assert callable(module.build), name


def test_params_import_without_heavy_libraries() -> None:
    code = ("import sys, leanserve.profiles.registry as r, leanserve.fit; r.load_profiles(__import__('pathlib').Path('/x')); "
            "print(sorted(m for m in ('torch', 'transformers', 'llmcompressor') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_method_shape_functions() -> None:
    assert prune.kept_width(1536, 0.75) == 1152 and prune.kept_width(11008, 0.5) == 5504
    assert prune.kept_width(100, 0.01) == prune.CHANNEL_MULTIPLE  # never below one multiple
    assert distill.kept_layers(30, 2) == [*range(0, 30, 2), 29]
    # one 4096 x 4096 matrix at 4 bits, group 128: 8 MiB of weights + 4096 x 32 fp16 scales (+ 4-bit zero
    # points for the asymmetric default)
    assert gptq.block_bytes([(4096, 4096)], gptq.Params(scheme="W4A16")) == 4096 * 4096 / 2 + 4096 * 32 * 2
    assert gptq.block_bytes([(4096, 4096)], gptq.Params()) == 4096 * 4096 / 2 + 4096 * 32 * 2.5
    single, double = nf4.block_bytes([(64, 64)], nf4.Params(double_quant=False)), nf4.block_bytes([(64, 64)], nf4.Params())
    assert (single, double) == (2048 + 64 * 4, 2048 + 64 * (1 + 4 / 256))
