"""Scoring (echo + logprobs + max_tokens 0) stops with its request: a timed-out one (504) leaves the
CPU idle within 2 s, a client that hangs up frees its admission slot within 1 s and is counted 499,
logged as one INFO line without a traceback. Before, orphaned scoring threads kept both cores busy for
40 s, held their slots, and every hang-up logged a 55-line traceback."""

from __future__ import annotations

import json
import socket
import time

import httpx
import psutil
import pytest

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY, Server
from tests.test_metrics import one, scrape
from tests.test_slow_clients import FLAGS

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
LAB = {"profile": "bf16", "model": MODEL}
TIMEOUT_S = 3
# --max-body-bytes: the stall test's 4 MB body must reach the server's checks, not the size limit
TIMEOUT_FLAGS = ("--request-timeout", str(TIMEOUT_S), "--max-model-len", "8192", "--max-body-bytes", "5000000")
IDLE_CPU_PERCENT = 25.0  # of one core: what the batching loop and a /metrics scrape may use


@pytest.fixture(scope="module")
def timing_out(pool: ServerPool) -> Server:
    return pool.get("transformers", "bf16", *TIMEOUT_FLAGS)


def _scoring_body(tokens: int) -> dict:
    """A prompt of about `tokens` tokens ("word" plus a space is one token for the default model)."""
    return {"model": MODEL, "prompt": "word " * tokens, "max_tokens": 0, "echo": True, "logprobs": 1}


def _in_flight(server: Server) -> float:
    return one(scrape(server), "leanserve_requests_in_flight", **LAB)


def _wait(condition, seconds: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll `condition` (each check is a scrape, not a sleep) until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds, what
    return time.monotonic() - t0


def test_timed_out_scoring_stops_computing(timing_out: Server) -> None:
    proc = psutil.Process(timing_out.proc.pid)
    r = httpx.post(f"{timing_out.base_url}/v1/completions", json=_scoring_body(6000), headers=AUTH, timeout=120)
    ended = time.monotonic()
    assert r.status_code == 504, r.text[:300]
    # cpu_percent(interval) measures over its own interval: the loop polls until the server is idle
    busy = []
    while (rate := proc.cpu_percent(interval=0.25)) > IDLE_CPU_PERCENT:
        busy.append(rate)
        assert time.monotonic() - ended < 2.0, f"the server kept computing after the 504: {busy} % CPU"
    # and the engine is free for the next request well within the timeout
    ok = httpx.post(f"{timing_out.base_url}/v1/completions", headers=AUTH, timeout=120,
                    json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("engine", ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_hang_up_on_scoring_frees_the_slot_and_is_499(pool: ServerPool, engine: str) -> None:
    server = pool.get(engine, "bf16", *FLAGS)
    body = json.dumps(_scoring_body(3500)).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    before = scrape(server)
    closed_before = before.get("leanserve_requests_total", {}).get(
        tuple(sorted({**LAB, "route": "/v1/completions", "status": "499"}.items())), 0.0)
    mark = len(server.log)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head + body)
        _wait(lambda: _in_flight(server) == 1, 60, "the scoring request never took its slot")
    freed_in = _wait(lambda: _in_flight(server) == 0, 30, "the scoring request kept its slot after the hang-up")
    assert freed_in < 1.0, f"slot freed {freed_in:.2f} s after the hang-up"
    after = scrape(server)
    assert one(after, "leanserve_requests_total", route="/v1/completions", status="499") == closed_before + 1
    _wait(lambda: any(" 499 client closed" in line for line in server.log[mark:]), 30, "no 499 log line")
    new = "".join(server.log[mark:])
    assert "Traceback" not in new and "ERROR" not in new, new[-3000:]
    assert sum(" 499 " in line for line in server.log[mark:]) == 1, new[-3000:]
    # a generation right after is served at once: nothing is still scoring in the background
    t0 = time.monotonic()
    ok = httpx.post(f"{server.base_url}/v1/completions", headers=AUTH, timeout=120,
                    json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
    assert ok.status_code == 200, ok.text
    assert time.monotonic() - t0 < 30
