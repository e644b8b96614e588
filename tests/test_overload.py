"""Overload: a server with --max-queue 1 turns the second request away at once (429 + Retry-After),
and --request-timeout aborts what runs too long (504, or an error event mid-stream) and frees the
engine for the next request. Rejections are counted in /metrics. (transformers engine: admission and
timeouts live in the server layer, the same for every engine.)"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY, Server
from tests.support import one, scrape, wait_until

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LAB = {"profile": "bf16", "model": MODEL}
TIMEOUT_S = 8
LONG = {"model": MODEL, "prompt": "Write a very long essay about the sea.", "max_tokens": 900, "ignore_eos": True,
        "temperature": 0}


@pytest.fixture(scope="module")
def limited(pool: ServerPool) -> Server:
    return pool.get("transformers", "bf16", "--max-queue", "1", "--request-timeout", str(TIMEOUT_S))


def _wait_idle(server: Server) -> None:
    """Poll (bounded) until the server has nothing generating."""
    def idle() -> bool:
        samples = scrape(server)
        return one(samples, "leanserve_requests_running", **LAB) + one(samples, "leanserve_requests_waiting", **LAB) == 0

    wait_until(idle, what="the server going idle (nothing running or waiting)", deadline_s=60)


def test_queue_full_is_429_at_once_and_a_long_stream_times_out(limited: Server) -> None:
    _wait_idle(limited)
    before = scrape(limited)
    started = time.monotonic()
    with httpx.stream("POST", f"{limited.base_url}/v1/completions", json={**LONG, "stream": True}, headers=AUTH,
                      timeout=120) as stream:
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))  # a token arrived: the slot is taken
        t0 = time.monotonic()
        r = httpx.post(f"{limited.base_url}/v1/chat/completions", headers=AUTH, timeout=120,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert time.monotonic() - t0 < 5, "a full queue must answer at once, not wait for a slot"
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "queue_full" and "--max-queue" in err["message"]
        # the stream runs into --request-timeout: it ends with an error event instead of [DONE]
        events = [line[6:] for line in lines if line.startswith("data: ")]
    elapsed = time.monotonic() - started
    assert events and "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["type"] == "timeout_error" and last["error"]["code"] == "request_timeout", last
    assert TIMEOUT_S - 1 < elapsed < TIMEOUT_S + 30
    _wait_idle(limited)  # the engine slot was freed
    after = scrape(limited)
    rejected = "leanserve_requests_rejected_total"
    assert one(after, rejected, reason="queue_full", **LAB) == one(before, rejected, reason="queue_full", **LAB) + 1
    assert one(after, rejected, reason="timeout", **LAB) == one(before, rejected, reason="timeout", **LAB) + 1


def test_request_timeout_is_504_and_frees_the_slot(limited: Server) -> None:
    _wait_idle(limited)
    t0 = time.monotonic()
    r = httpx.post(f"{limited.base_url}/v1/completions", json=LONG, headers=AUTH, timeout=120)
    assert r.status_code == 504, r.text
    assert time.monotonic() - t0 < TIMEOUT_S + 30
    err = r.json()["error"]
    assert err["type"] == "timeout_error" and str(TIMEOUT_S) in err["message"]
    _wait_idle(limited)
    # the one slot (--max-queue 1) is free again: a normal request is served
    ok = httpx.post(f"{limited.base_url}/v1/completions", headers=AUTH, timeout=120,
                    json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200, ok.text
