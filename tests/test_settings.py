"""`serve`'s flags are generated from the Settings fields: each default and help text is written once, in
leanserve/settings.py, and what the CLI hands over becomes the Settings the server runs with."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer.main

from leanserve.cli import app
from leanserve.errors import LeanserveError
from leanserve.paths import default_home
from leanserve.settings import KEY_FLAGS, Settings, serve_flags, settings_from_flags

pytestmark = pytest.mark.unit


def _serve_options() -> dict[str, object]:
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


def test_every_serve_option_is_a_settings_field_with_its_default() -> None:
    options = _serve_options()
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    flagged = {name for name, f in fields.items() if "help" in f.metadata}
    assert set(options) == flagged | {f.name for f in KEY_FLAGS}
    assert set(fields) - flagged == {"api_keys"}  # the one field filled from other flags (--api-key, --api-keys-file)
    for name in flagged:
        option, f = options[name], fields[name]
        assert option.envvar == f"LEANSERVE_{name.upper()}", name
        assert option.help == f.metadata["help"] and option.help, name
        if f.default is not dataclasses.MISSING:
            assert option.default == f.default, name
    assert options["max_queue"].min == 1 and options["shutdown_grace"].min == 0


def test_flags_become_settings() -> None:
    defaults = {f.name: f.default for f in serve_flags()}
    s = settings_from_flags({**defaults, "vram_budget": "8GiB", "api_key": "k1", "port": 9000})
    assert s == Settings(vram_budget=8 << 30, api_keys=("k1",), port=9000, home=default_home())
    assert settings_from_flags(defaults) == Settings()  # the CLI with no flags is the Settings defaults


def test_api_keys_file_adds_keys_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# ops\nk2\n\nk#3\n")
    assert settings_from_flags({"api_key": "k1", "api_keys_file": keys}).api_keys == ("k1", "k2", "k#3")
    keys.write_text("# nothing here\n")
    with pytest.raises(LeanserveError, match="has no keys"):
        settings_from_flags({"api_keys_file": keys})
