"""No request stalls the event loop: a 3.9 MB prompt of 780,000 one-character strings was refused only
after every string had been tokenized on the event loop (/health took 9.9 s meanwhile). Cheap limits
now run first, in a worker thread, and tokenizing is off the loop too."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY, Server
from tests.test_scoring_cancel import TIMEOUT_FLAGS

pytestmark = pytest.mark.server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
# the bound is 100 ms; CI shares 2 cores with other jobs, so the test allows some scheduling noise
MAX_HEALTH_S = 0.25


@pytest.fixture(scope="module")
def big_bodies(pool: ServerPool) -> Server:
    return pool.get("transformers", "bf16", *TIMEOUT_FLAGS)


def _health_latencies(server: Server, stop: threading.Event, sampled: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            assert client.get("/health").status_code == 200
            out.append(time.perf_counter() - t0)
            sampled.set()


@pytest.mark.parametrize("prompt, param", [(["a"] * 780_000, "prompt"), ("a" * 3_900_000, "prompt")],
                         ids=["780k-one-char-strings", "3.9MB-string"])
def test_health_stays_fast_during_a_pathological_body(big_bodies: Server, prompt: object, param: str) -> None:
    body = json.dumps({"model": MODEL, "prompt": prompt, "max_tokens": 1}).encode()
    assert len(body) > 3_800_000
    latencies: list[float] = []
    stop, sampled = threading.Event(), threading.Event()
    prober = threading.Thread(target=_health_latencies, args=(big_bodies, stop, sampled, latencies), daemon=True)
    prober.start()
    try:
        assert sampled.wait(60)  # probing before the body is sent ...
        r = httpx.post(f"{big_bodies.base_url}/v1/completions", content=body, timeout=120,
                       headers={**AUTH, "Content-Type": "application/json"})
        sampled.clear()
        assert sampled.wait(60)  # ... and until after it was answered
    finally:
        stop.set()
        prober.join(60)
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert len(latencies) >= 2
    print(f"/health: {len(latencies)} probes, max {max(latencies) * 1000:.0f} ms")  # the figure, with -s
    assert max(latencies) < MAX_HEALTH_S, f"/health took up to {max(latencies) * 1000:.0f} ms"
