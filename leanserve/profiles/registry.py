"""All profiles: the built-in TOML files plus the user's `$LEANSERVE_HOME/profiles/*.toml`.

A user file with a built-in's name replaces it, so people can retune a profile without forking.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from leanserve.errors import ProfileError
from leanserve.profiles.spec import ProfileSpec


def _parse(text: str, source: str) -> ProfileSpec:
    try:
        data = tomllib.loads(text)
        return ProfileSpec(**data, source=source)
    except ValidationError as exc:
        raise ProfileError(f"profile file {source} is invalid: {validation_message(exc)}", param="profile") from exc
    except (tomllib.TOMLDecodeError, TypeError) as exc:
        raise ProfileError(f"profile file {source} is invalid: {exc}", param="profile") from exc


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line: 'field: message' for each (the params check names key and allowed ones)."""
    parts = []
    for e in exc.errors():
        loc = ".".join(map(str, e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_profiles(home: Path) -> dict[str, ProfileSpec]:
    """Every profile by name, built-ins first, then user files over them."""
    profiles: dict[str, ProfileSpec] = {}
    builtin = resources.files("leanserve.profiles") / "builtin"
    for entry in sorted(builtin.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            spec = _parse(entry.read_text(encoding="utf-8"), "builtin")
            profiles[spec.name] = spec
    user_dir = home / "profiles"
    if user_dir.is_dir():
        for path in sorted(user_dir.glob("*.toml")):
            spec = _parse(path.read_text(encoding="utf-8"), str(path))
            profiles[spec.name] = spec
    return profiles


def get_profile(name: str, home: Path) -> ProfileSpec:
    profiles = load_profiles(home)
    if name not in profiles:
        known = ", ".join(sorted(profiles))
        raise ProfileError(f"unknown profile {name!r}; known profiles: {known}", param="profile")
    return profiles[name]


def with_params(spec: ProfileSpec, overrides: dict[str, object]) -> ProfileSpec:
    """`spec` with some params replaced (`compress --param`), validated like a TOML's (a typo is refused)."""
    try:
        return spec.with_params(overrides)
    except ValidationError as exc:
        raise ProfileError(f"--param: {validation_message(exc)}", param="param") from exc
