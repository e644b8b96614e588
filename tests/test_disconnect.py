"""A client that goes away mid-stream stops its generation (every engine)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.conftest import MODEL
from tests.servers import API_KEY, Server
from tests.support import one, scrape, wait_until

pytestmark = pytest.mark.server

LAB = {"profile": "bf16", "model": MODEL}
MAX_TOKENS = 900


def _running(server: Server) -> float:
    return one(scrape(server), "leanserve_requests_running", **LAB)


def test_disconnect_mid_stream_frees_the_request(server: Server) -> None:
    body = {"model": MODEL, "prompt": "Write a very long essay about the sea.", "max_tokens": MAX_TOKENS,
            "temperature": 1.0, "seed": 1, "stream": True, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    generated_before = one(scrape(server), "leanserve_generation_tokens_total", **LAB)
    with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=headers, timeout=120) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # a few tokens arrived: the request is running
        assert any(line.startswith("data: ") for line in got)
        assert _running(server) == 1
    # Connection closed. The server notices, aborts, and the gauge returns to zero.
    wait_until(lambda: _running(server) == 0, what="the generation stopping after the client left", deadline_s=60)
    generated = one(scrape(server), "leanserve_generation_tokens_total", **LAB) - generated_before
    assert generated < MAX_TOKENS / 2, f"{generated} tokens generated for a client that had left"


def test_disconnect_while_waiting_for_a_whole_answer_frees_the_request(server: Server) -> None:
    """Not streamed: the server watches the connection while it generates, and aborts when it closes."""
    body = json.dumps({"model": MODEL, "prompt": "Write a very long essay about the sea.", "max_tokens": MAX_TOKENS,
                       "temperature": 0, "ignore_eos": True}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    generated_before = one(scrape(server), "leanserve_generation_tokens_total", **LAB)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(head + body)
        wait_until(lambda: _running(server) == 1, what="the request starting to generate", deadline_s=120)
    wait_until(lambda: _running(server) == 0, what="the generation stopping after the client left", deadline_s=60)
    generated = one(scrape(server), "leanserve_generation_tokens_total", **LAB) - generated_before
    assert generated < MAX_TOKENS / 2, f"{generated} tokens generated for a client that had left"
