"""Bad input gets a 4xx in OpenAI's error shape, never a 500 or a hang (every engine)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MODEL
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def _post(server: Server, path: str, body: object, headers: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=AUTH if headers is None else headers, timeout=120)


def _assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and isinstance(err["type"], str)
    if param is not None:
        assert err["param"] == param, err
    return err


def test_missing_api_key_is_401(server: Server) -> None:
    err = _assert_error(_post(server, "/v1/chat/completions", CHAT, headers={}), 401)
    assert err["type"] == "authentication_error"
    _assert_error(_post(server, "/v1/chat/completions", CHAT, headers={"Authorization": "Bearer wrong"}), 401)
    assert httpx.get(f"{server.base_url}/health").status_code == 200  # health needs no key
    assert httpx.get(f"{server.base_url}/metrics").status_code == 401


def test_unknown_model_is_404(server: Server) -> None:
    err = _assert_error(_post(server, "/v1/chat/completions", {**CHAT, "model": "gpt-17"}), 404, "model")
    assert "gpt-17" in err["message"]


def test_prompt_over_the_context_is_400_and_names_the_limit(server: Server) -> None:
    long = "hello " * 1500  # the test servers run with --max-model-len 1024
    err = _assert_error(_post(server, "/v1/completions", {"model": MODEL, "prompt": long, "max_tokens": 1}), 400)
    assert "1024" in err["message"] and err["code"] == "context_length_exceeded"
    err = _assert_error(_post(server, "/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 5000}), 400,
                        "max_tokens")
    assert "1024" in err["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "temperature": 5}, "temperature"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "n": 50}, "n"),
        ({**CHAT, "top_p": 0}, "top_p"),
        ({**CHAT, "top_logprobs": 3}, None),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": CHAT["messages"]}, "model"),
        ({**CHAT, "max_tokens": "many"}, "max_tokens"),
    ],
)
def test_bad_chat_fields_are_400(server: Server, body: dict, param: str | None) -> None:
    _assert_error(_post(server, "/v1/chat/completions", body), 400, param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "prompt": [10**9]}, "prompt"),
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "logprobs": 99}, "logprobs"),
        ({"model": MODEL, "prompt": "hi", "suffix": "x"}, None),
    ],
)
def test_bad_completion_fields_are_400(server: Server, body: dict, param: str | None) -> None:
    _assert_error(_post(server, "/v1/completions", body), 400, param)


def test_invalid_json_is_400(server: Server) -> None:
    r = httpx.post(f"{server.base_url}/v1/chat/completions", content=b'{"model": ', headers={**AUTH,
                   "content-type": "application/json"})
    _assert_error(r, 400)


def test_oversized_body_is_413(server: Server) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2_000_000}]}  # servers allow 1 MB
    err = _assert_error(_post(server, "/v1/chat/completions", big), 413)
    assert "1000000" in err["message"]


def test_unknown_route_is_404_in_openai_shape(server: Server) -> None:
    _assert_error(httpx.get(f"{server.base_url}/v1/nothing", headers=AUTH), 404)
