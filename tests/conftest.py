"""Shared fixtures: the real default model, and real servers per engine and profile (one each per
session, since loading a model is the slow part)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from leanserve import models
from leanserve.paths import default_home
from tests.servers import API_KEY, Server, start_server
from tests.support import shared_data

ENGINES = ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)]
TIERS = ("unit", "server", "build", "image")  # every test has exactly one (pyproject.toml says what each means)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test without exactly one tier marker, so `-m unit` and friends select what they say.
    The image tier (root, podman, a built image) runs only when a -m expression names it (`make image`)."""
    wrong = [item.nodeid for item in items if sum(item.get_closest_marker(t) is not None for t in TIERS) != 1]
    if wrong:
        raise pytest.UsageError(f"tests need exactly one of the markers {', '.join(TIERS)}: {', '.join(wrong[:10])}")
    if "image" not in config.getoption("markexpr", ""):
        image = [item for item in items if item.get_closest_marker("image") is not None]
        if image:
            config.hook.pytest_deselected(items=image)
            items[:] = [item for item in items if item.get_closest_marker("image") is None]


@pytest.fixture(scope="session")
def home() -> Path:
    """LEANSERVE_HOME (CI points it into the checkout); the default model is pulled there once."""
    path = default_home()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def data() -> Path:
    """The shared eval data; a clear failure naming where it was looked for when it is missing."""
    return shared_data()


@pytest.fixture(scope="session")
def model_dir(home: Path) -> Path:
    return models.pull_default(home)


class ServerPool:
    """Starts each (engine, profile, extra flags) server on first use and stops them all at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.servers: dict[tuple[str, str, tuple[str, ...]], Server] = {}

    def get(self, engine: str, profile: str = "bf16", *extra: str) -> Server:
        key = (engine, profile, extra)
        if key not in self.servers:
            self.servers[key] = start_server(engine, profile, self.home, *extra)
        return self.servers[key]

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def pool(home: Path, model_dir: Path) -> Iterator[ServerPool]:
    p = ServerPool(home)
    yield p
    p.stop_all()


@pytest.fixture(params=ENGINES, scope="session")
def server(request: pytest.FixtureRequest, pool: ServerPool) -> Server:
    return pool.get(request.param)


@pytest.fixture()
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)


MODEL = models.DEFAULT_MODEL
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


GGUF_SMALL = ["--param", "calib_samples=4", "--param", "calib_seq_len=256"]  # a quick importance matrix


@pytest.fixture(scope="session")
def gguf_home(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    """A fresh LEANSERVE_HOME for GGUF builds (every job really runs) that reuses the pulled base model."""
    h = tmp_path_factory.mktemp("gguf-home")
    (h / "models").mkdir()
    (h / "models" / model_dir.name).symlink_to(model_dir)
    return h


@pytest.fixture(scope="session")
def gguf_built(gguf_home: Path):  # noqa: ANN201
    """gguf_built(profile) -> its artifact directory, built once per session with `leanserve compress`."""
    import subprocess
    import sys

    done: dict[str, Path] = {}

    def get(profile: str) -> Path:
        if profile not in done:
            cmd = [sys.executable, "-m", "leanserve.cli", "compress", "--profile", profile, "--home", str(gguf_home),
                   *GGUF_SMALL]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "COLUMNS": "200"})
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            done[profile] = gguf_home / "artifacts" / MODEL / profile
        return done[profile]

    return get
