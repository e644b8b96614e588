"""Safe loading, decided before any weights are read: safetensors only, no checkpoint code unless
--trust-remote-code, an artifact's files must match its manifest's sha256, and a killed job's
leftovers are never served. Small fake artifacts in tmp_path (the refusals come before loading), and
`leanserve serve` itself for the exit code and message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leanserve.compressors.job import file_hashes
from leanserve.errors import ProfileError
from leanserve.models import DEFAULT_MODEL
from leanserve.profiles.registry import get_profile
from leanserve.profiles.store import MANIFEST, artifact_dir
from leanserve.server.launch import weights_dir
from leanserve.settings import Settings

pytestmark = pytest.mark.unit

PROFILE = "pruned"  # any profile with a build step


def _artifact(home: Path, files: dict[str, bytes], manifest: bool = True) -> Path:
    """A fake built artifact: the files, and a manifest with their sha256 (as a compressor job writes)."""
    path = artifact_dir(home, DEFAULT_MODEL, PROFILE)
    path.mkdir(parents=True)
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    if manifest:
        facts = {"profile": PROFILE, "base_model": DEFAULT_MODEL, "files": file_hashes(path)}
        (path / MANIFEST).write_text(json.dumps(facts), encoding="utf-8")
    return path


GOOD = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x00" * 4096, "sub/tokenizer.json": b"{}"}


def _settings(home: Path, **kw: object) -> Settings:
    return Settings(home=home, profile=PROFILE, **kw)  # type: ignore[arg-type]


def _weights_dir(settings: Settings) -> tuple[Path, str]:
    return weights_dir(settings, get_profile(settings.profile, settings.home))


def test_a_matching_artifact_is_accepted(tmp_path: Path) -> None:
    path = _artifact(tmp_path, GOOD)
    assert _weights_dir(_settings(tmp_path)) == (path, DEFAULT_MODEL)


def test_a_changed_file_is_refused_by_name(tmp_path: Path) -> None:
    path = _artifact(tmp_path, GOOD)
    (path / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 4095)  # same size, one byte differs
    with pytest.raises(ProfileError, match=r"model\.safetensors does not match the sha256"):
        _weights_dir(_settings(tmp_path))
    assert _weights_dir(_settings(tmp_path, skip_verify=True))[0] == path  # the escape hatch


def test_a_missing_or_added_file_is_refused(tmp_path: Path) -> None:
    path = _artifact(tmp_path, GOOD)
    (path / "sub" / "tokenizer.json").unlink()
    with pytest.raises(ProfileError, match=r"missing sub/tokenizer\.json"):
        _weights_dir(_settings(tmp_path))
    (path / "sub" / "tokenizer.json").write_bytes(b"{}")
    assert _weights_dir(_settings(tmp_path))[0] == path
    (path / "evals-transformers.json").write_text("{}")  # results live under <home>/results/: here it is an addition
    with pytest.raises(ProfileError, match=r"does not list: evals-transformers\.json"):
        _weights_dir(_settings(tmp_path))
    (path / "evals-transformers.json").unlink()
    (path / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(ProfileError, match=r"does not list: extra\.safetensors"):
        _weights_dir(_settings(tmp_path))


def test_a_killed_job_is_never_picked_up(tmp_path: Path) -> None:
    # what a killed `leanserve compress` leaves: a complete-looking temporary sibling, no final directory
    tmp = artifact_dir(tmp_path, DEFAULT_MODEL, PROFILE).parent / f".{PROFILE}.tmp-abc123"
    tmp.mkdir(parents=True)
    (tmp / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ProfileError, match="has no artifact"):
        _weights_dir(_settings(tmp_path))
    # a final directory with weights but no manifest (half copied by hand) is not an artifact either
    _artifact(tmp_path, GOOD, manifest=False)
    with pytest.raises(ProfileError, match="has no artifact"):
        _weights_dir(_settings(tmp_path))


def test_a_truncated_manifest_is_refused(tmp_path: Path) -> None:
    path = _artifact(tmp_path, GOOD)
    text = (path / MANIFEST).read_text(encoding="utf-8")
    (path / MANIFEST).write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(ProfileError, match="unreadable"):
        _weights_dir(_settings(tmp_path))


def test_pickle_weights_are_refused(tmp_path: Path) -> None:
    files = {"config.json": b'{"model_type": "llama"}', "pytorch_model.bin": b"\x80\x04pickle"}
    _artifact(tmp_path, files)
    with pytest.raises(ProfileError, match=r"only pickle weights \(pytorch_model\.bin\); leanserve loads safetensors only"):
        _weights_dir(_settings(tmp_path))


def test_checkpoint_code_needs_trust_remote_code(tmp_path: Path) -> None:
    config = {"model_type": "custom", "auto_map": {"AutoModelForCausalLM": "modeling_custom.Model"}}
    _artifact(tmp_path, {**GOOD, "config.json": json.dumps(config).encode(), "modeling_custom.py": b"import os\n"})
    with pytest.raises(ProfileError, match="--trust-remote-code"):
        _weights_dir(_settings(tmp_path))
    assert _weights_dir(_settings(tmp_path, trust_remote_code=True))[0].is_dir()


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--engine", "transformers", *args],
                          capture_output=True, text=True, timeout=300)


def test_serve_refuses_a_tampered_artifact_with_exit_2(tmp_path: Path) -> None:
    path = _artifact(tmp_path, GOOD)
    (path / "model.safetensors").write_bytes(b"tampered")
    done = _serve("--profile", PROFILE, "--home", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "model.safetensors does not match the sha256" in out and "Traceback" not in out


def test_serve_refuses_a_pickle_only_model_dir_with_exit_2(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    done = _serve("--model", str(model), "--home", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "safetensors only" in out and "Traceback" not in out
