"""Slow clients hold sockets, never admission slots: bodies are read (under --body-timeout, 408) and
checked before a request takes a --max-queue slot, and headers that never finish are cut off by
--header-timeout. Found by a hostile-client pass: 8 uploaders sending a byte a second gave every
other generation request 429; headers sent a byte every 0.5 s never timed out."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BODY_TIMEOUT_S = 5
HEADER_TIMEOUT_S = 2
# one server for the slow-client, scoring-disconnect and metric-label tests (a model load is the slow part)
FLAGS = ("--max-queue", "2", "--body-timeout", str(BODY_TIMEOUT_S), "--header-timeout", str(HEADER_TIMEOUT_S),
         "--max-model-len", "4096")


@pytest.fixture(scope="module")
def guarded(pool: ServerPool) -> Server:
    return pool.get("transformers", "bf16", *FLAGS)


def _slow_upload(port: int, answers: list[bytes], started: threading.Event) -> None:
    """Full headers (Content-Length 300), then a byte of body whenever a second passes without an answer:
    the pace comes from the socket's own receive timeout."""
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 300\r\n\r\n{").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
        sock.sendall(head)
        started.set()
        deadline = time.monotonic() + BODY_TIMEOUT_S + 30
        while time.monotonic() < deadline:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                sock.sendall(b" ")
                continue
            try:
                while chunk := sock.recv(4096):  # the answer, to the close that follows it
                    data += chunk
            except ConnectionResetError:  # the server closed with our unread body bytes pending: an RST,
                pass  # after the answer we already hold
            answers.append(data)
            return
        answers.append(b"no answer")


def test_slow_uploaders_take_no_slot_and_get_408(guarded: Server) -> None:
    answers: list[bytes] = []
    threads = []
    for _ in range(8):
        started = threading.Event()
        t = threading.Thread(target=_slow_upload, args=(guarded.port, answers, started), daemon=True)
        t.start()
        assert started.wait(30)
        threads.append(t)
    t0 = time.monotonic()
    statuses = []
    with httpx.Client(base_url=guarded.base_url, headers=AUTH, timeout=120) as client:
        for _ in range(3):  # --max-queue 2, 8 uploaders in flight: a normal client is still served
            r = client.post("/v1/completions", json={"model": MODEL, "prompt": "Hello", "max_tokens": 2})
            statuses.append(r.status_code)
    assert statuses == [200, 200, 200], statuses
    for t in threads:
        t.join(BODY_TIMEOUT_S + 40)
    assert len(answers) == 8
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer and b"timeout_error" in answer
    assert time.monotonic() - t0 < BODY_TIMEOUT_S + 30


def test_headers_that_never_finish_are_cut_off(guarded: Server) -> None:
    """A header byte every 0.5 s (paced by the receive timeout): the server closes at --header-timeout."""
    trickle = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=0.5) as sock:
        t0 = time.monotonic()
        closed_after = None
        for byte in trickle:
            try:
                if sock.recv(4096) == b"":  # orderly close
                    closed_after = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            except ConnectionError:
                closed_after = time.monotonic() - t0
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - t0
                break
            if time.monotonic() - t0 > HEADER_TIMEOUT_S + 15:
                break
    assert closed_after is not None, "the connection was still open long after --header-timeout"
    assert HEADER_TIMEOUT_S - 0.5 < closed_after < HEADER_TIMEOUT_S + 5, closed_after
    # and a normal request on a new connection is unaffected
    r = httpx.get(f"{guarded.base_url}/health", timeout=30)
    assert r.status_code == 200
