"""API keys: --api-key plus --api-keys-file; every route but /health needs one (/docs and /openapi.json
too), /metrics is open only with --public-metrics, and no key, right or wrong, ever reaches the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from leanserve.settings import read_api_keys
from tests.conftest import MODEL
from tests.servers import API_KEY, Server, start_server

pytestmark = pytest.mark.server

FILE_KEYS = ["file-key-one-7f3a9c", "file-key-two-#-b81d"]  # a '#' inside a key is part of it
WRONG = "wrong-key-5e2d77"
KEYED_ROUTES = [("GET", "/v1/models"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"),
                ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, home: Path, model_dir: Path) -> Iterator[Server]:
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# leanserve keys\n\n{FILE_KEYS[0]}\n  {FILE_KEYS[1]}  \n", encoding="utf-8")
    server = start_server("transformers", "bf16", home, "--api-keys-file", str(keys), "--public-metrics")
    yield server
    server.stop()


def test_keys_file_format(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_text("# comment\nabc\n\n  def#1  \n#x\n", encoding="utf-8")
    assert read_api_keys(f) == ("abc", "def#1")


def test_every_route_but_health_needs_a_key(keyed: Server) -> None:
    for method, path in KEYED_ROUTES:
        for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": f"Basic {API_KEY}"}):
            r = httpx.request(method, f"{keyed.base_url}{path}", headers=headers, timeout=30)
            assert r.status_code == 401, (method, path, headers, r.status_code)
            assert r.json()["error"]["type"] == "authentication_error"
            assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{keyed.base_url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{keyed.base_url}/metrics", timeout=30).status_code == 200  # --public-metrics


def test_each_key_opens_every_route(keyed: Server) -> None:
    for key in [API_KEY, *FILE_KEYS]:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{keyed.base_url}/v1/models", headers=headers, timeout=30).status_code == 200
        assert httpx.get(f"{keyed.base_url}/docs", headers=headers, timeout=30).status_code == 200
        assert httpx.get(f"{keyed.base_url}/openapi.json", headers=headers, timeout=30).json()["paths"]
        r = httpx.post(f"{keyed.base_url}/v1/completions", headers=headers, timeout=120,
                       json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
        assert r.status_code == 200, r.text


def test_keys_never_reach_the_log(keyed: Server) -> None:
    httpx.get(f"{keyed.base_url}/v1/models", headers={"Authorization": f"Bearer {WRONG}"}, timeout=30)
    httpx.get(f"{keyed.base_url}/v1/models", headers={"Authorization": f"Bearer {FILE_KEYS[0]}"}, timeout=30)
    log = "".join(keyed.log)
    assert "GET /v1/models" in log  # the requests were logged, without their headers
    for secret in [API_KEY, WRONG, *FILE_KEYS]:
        assert secret not in log


def test_metrics_need_a_key_without_public_metrics(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{server.base_url}/docs", timeout=30).status_code == 401
