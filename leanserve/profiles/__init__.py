"""Profiles: named compression recipes (TOML), their registry and the artifact store."""

from leanserve.profiles.registry import get_profile, load_profiles
from leanserve.profiles.spec import ProfileSpec

__all__ = ["ProfileSpec", "get_profile", "load_profiles"]
