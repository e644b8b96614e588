"""`HEAD /health` answers like GET (load balancers probe with HEAD; it was 405), and
`GET /v1/models/{id}` returns the served model, or a 404 in OpenAI's shape (every engine)."""

from __future__ import annotations

import httpx
import pytest
from openai import NotFoundError, OpenAI

from tests.conftest import MODEL
from tests.servers import Server

pytestmark = pytest.mark.server


def test_head_health_is_like_get(server: Server) -> None:
    head = httpx.head(f"{server.base_url}/health", timeout=30)
    get = httpx.get(f"{server.base_url}/health", timeout=30)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_retrieve_model(server: Server, client: OpenAI) -> None:
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    assert model.model_dump()["max_model_len"] == 1024
    with pytest.raises(NotFoundError) as info:
        client.models.retrieve("no-such-model")
    err = info.value.body
    assert err["code"] == "model_not_found" and err["type"] == "not_found_error" and "no-such-model" in err["message"]
