"""Metric labels are route templates, never client paths: 200 requests to distinct unknown paths, with
and without an API key (404 and 401), add no series to /metrics (they grew it from 11 KB to 858 KB)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerPool
from tests.servers import API_KEY, Server
from tests.test_slow_clients import FLAGS

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def guarded(pool: ServerPool) -> Server:
    return pool.get("transformers", "bf16", *FLAGS)


def _metrics(server: Server) -> tuple[str, set[tuple[str, tuple]]]:
    text = httpx.get(f"{server.base_url}/metrics", headers=AUTH, timeout=30).text
    series = {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples}
    return text, series


def test_unknown_paths_add_no_series(guarded: Server) -> None:
    with httpx.Client(base_url=guarded.base_url, timeout=30) as client:
        assert client.get("/warm-up/404", headers=AUTH).status_code == 404
        assert client.get("/warm-up/401").status_code == 401
        _metrics(guarded)  # a scrape's own series (route /metrics) exist from here on
        text_before, before = _metrics(guarded)
        for i in range(100):
            assert client.get(f"/no/such/path/{i}", headers=AUTH).status_code == 404
            assert client.get(f"/v1/secret-{i}").status_code == 401
    text_after, after = _metrics(guarded)
    assert after == before, sorted(after - before)[:5]
    assert len(text_after) - len(text_before) < 1024, (len(text_before), len(text_after))
    labels = {dict(k)["route"] for name, k in after if name == "leanserve_requests_total"}
    assert "other" in labels and not any(label.startswith(("/no/", "/v1/secret", "/warm-up")) for label in labels)


def test_known_routes_keep_their_template(guarded: Server) -> None:
    """A 401 on a real route is labelled with that route, and a path parameter by its template."""
    assert httpx.post(f"{guarded.base_url}/v1/completions", json={}, timeout=30).status_code == 401
    assert httpx.get(f"{guarded.base_url}/v1/models/unknown-model-xyz", headers=AUTH, timeout=30).status_code == 404
    _, series = _metrics(guarded)
    labels = {(dict(k)["route"], dict(k)["status"]) for name, k in series if name == "leanserve_requests_total"}
    assert ("/v1/completions", "401") in labels
    assert ("/v1/models/{model_id}", "404") in labels
    assert not any("unknown-model-xyz" in route for route, _ in labels)
