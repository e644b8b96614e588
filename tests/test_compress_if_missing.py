"""`leanserve compress --if-missing`, which `make serve` runs before serving: a profile already built, or one
without a build step, is left alone, so every `make serve` after the first starts at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from leanserve.cli import app
from tests.conftest import MODEL

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("profile", ["bf16", "nf4"])
def test_a_profile_without_a_build_step_is_left_alone(tmp_path: Path, profile: str) -> None:
    r = CliRunner().invoke(app, ["compress", "--profile", profile, "--if-missing", "--home", str(tmp_path)])
    assert r.exit_code == 0 and f"{profile}: no build step, nothing to build" in r.output
    without = CliRunner().invoke(app, ["compress", "--profile", profile, "--home", str(tmp_path)])
    assert without.exit_code != 0 and "Serve it directly" in without.output  # the plain command still refuses


def test_a_built_profile_is_not_rebuilt(tmp_path: Path) -> None:
    artifact = tmp_path / "artifacts" / MODEL / "q8_0"
    artifact.mkdir(parents=True)
    (artifact / "manifest.json").write_text(json.dumps({"profile": "q8_0", "base_model": MODEL}))
    r = CliRunner().invoke(app, ["compress", "--profile", "q8_0", "--if-missing", "--home", str(tmp_path)])
    assert r.exit_code == 0 and "q8_0: built already" in r.output
    assert sorted(p.name for p in artifact.iterdir()) == ["manifest.json"]
