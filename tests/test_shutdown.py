"""SIGTERM: the server drains. It keeps its port open and answers new requests and /health with 503
("draining"), lets the running stream finish in full, then exits 0 within --shutdown-grace."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL
from tests.servers import API_KEY, start_server
from tests.support import wait_until

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
GRACE_S = 90
TOKENS = 48


def test_sigterm_drains_then_exits_zero(home: Path, model_dir: Path) -> None:
    server = start_server("transformers", "bf16", home, "--shutdown-grace", str(GRACE_S))
    try:
        body = {"model": MODEL, "prompt": "Tell me a story.", "max_tokens": TOKENS, "ignore_eos": True,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, headers=AUTH, timeout=120) as r:
            lines = r.iter_lines()
            events = [next(line for line in lines if line.startswith("data: "))]  # generation is under way
            server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            def not_ready() -> httpx.Response | None:
                health = httpx.get(f"{server.base_url}/health", timeout=10)
                return health if health.status_code != 200 else None

            health = wait_until(not_ready, what="/health leaving 'ready' after SIGTERM", deadline_s=30)
            assert health.status_code == 503 and health.json()["status"] == "draining"
            new = httpx.post(f"{server.base_url}/v1/completions", headers=AUTH, timeout=30,
                             json={"model": MODEL, "prompt": "hi", "max_tokens": 2})
            assert new.status_code == 503, new.text
            assert new.json()["error"]["code"] == "draining"
            events += [line for line in lines if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        assert chunks[-1]["usage"]["completion_tokens"] == TOKENS  # the whole answer arrived
        assert chunks[-2]["choices"][0]["finish_reason"] == "length"
        code = server.proc.wait(GRACE_S + 30)
        assert code == 0, server.log_text()
        assert time.monotonic() - signalled < GRACE_S
        log = server.log_text()
        assert "SIGTERM: draining, 1 request(s) in flight" in log and "drained; shutting down" in log
    finally:
        server.stop()
