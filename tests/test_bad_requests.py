"""The bad-input corpus (tests/data/bad_requests.yaml) against a real server, every engine: each case gets
its 4xx in OpenAI's error shape with a message that says what was wrong, and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import MODEL
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server

CORPUS = Path(__file__).parent / "data" / "bad_requests.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _set(body: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def _payload(case: dict[str, Any]) -> tuple[bytes | None, dict[str, Any] | None]:
    """(raw bytes, JSON body): exactly one is set for a request with a body."""
    if "raw" in case:
        return case["raw"].encode("latin-1"), None
    if "raw_parts" in case:
        return "".join(text * times for text, times in case["raw_parts"]).encode("latin-1"), None
    body = case.get("body")
    if body is not None and "expand" in case:
        spec = case["expand"]
        value = [spec["token"]] * spec["times"] if "token" in spec else spec["text"] * spec["times"]
        _set(body, spec["field"], value)
    return None, body


def _send(server: Server, case: dict[str, Any]) -> httpx.Response:
    headers = dict(case["headers"]) if "headers" in case else dict(AUTH)
    raw, body = _payload(case)
    method = case.get("method", "POST")
    url = f"{server.base_url}{case['path']}"
    if raw is None:
        return httpx.request(method, url, json=body, headers=headers, timeout=120)
    headers.setdefault("Content-Type", "application/json")
    if case.get("chunked"):
        def chunks(data: bytes = raw) -> Iterator[bytes]:
            for i in range(0, len(data), 1 << 16):
                yield data[i : i + (1 << 16)]
        try:
            return httpx.request(method, url, content=chunks(), headers=headers, timeout=120)
        except httpx.WriteError as exc:  # the server may answer 413 and close before the upload ends
            pytest.fail(f"the server closed the connection without answering: {exc}")
    return httpx.request(method, url, content=raw, headers=headers, timeout=120)


def test_corpus_is_well_formed() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)) and len(names) >= 50
    for case in CASES:
        assert {"name", "path", "status", "type", "message"} <= set(case), case.get("name")
        assert 400 <= case["status"] < 500


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_request(server: Server, case: dict[str, Any]) -> None:
    r = _send(server, case)
    assert r.status_code == case["status"], f"{case['name']}: {r.status_code} {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["type"] == case["type"], err
    assert case["message"].lower() in err["message"].lower(), err
    if "param" in case:
        assert err["param"] == case["param"], err
    assert len(err["message"]) < 1000, "an error message must not echo the payload back"


def test_server_still_answers_after_the_corpus(server: Server) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 3, "temperature": 0}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
