"""Before the engine has loaded, /health and the API answer 503 (the app in its loading state,
in process: the lifespan that would load the model is not started)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from leanserve.engines.base import EngineConfig
from leanserve.profiles.registry import get_profile
from leanserve.server.app import build_app
from leanserve.server.metrics import ServerMetrics
from leanserve.server.state import ServerState
from leanserve.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture()
def loading_app(tmp_path: Path):  # noqa: ANN201
    spec = get_profile("bf16", tmp_path)
    state = ServerState(settings=Settings(home=tmp_path), spec=spec, served_model="m", base_model="m",
                        metrics=ServerMetrics("bf16", "m"), engine_name="transformers", engine_reason="test")
    return build_app(state, EngineConfig(str(tmp_path), spec.load, "cpu", "float32"))


def test_health_is_503_while_loading(loading_app) -> None:  # noqa: ANN001
    async def check() -> None:
        transport = httpx.ASGITransport(app=loading_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            health = await c.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "loading"
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 503
            assert r.json()["error"]["type"] == "service_unavailable"

    asyncio.run(check())
