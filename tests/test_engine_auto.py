"""`serve --engine auto` on the bf16 profile, as `make serve` runs it: the engine the measured table ranks
fastest here, moving to vLLM's own environment when that is the one, and the reason on /health and in the log."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from leanserve.engines import choose_engine, engine_interpreters
from leanserve.engines.speed import Machine, load_table
from leanserve.profiles.registry import get_profile
from tests.conftest import MODEL
from tests.servers import API_KEY, start_server

pytestmark = pytest.mark.server

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _serve_auto(home: Path) -> tuple[dict, str, str]:
    """(/health, the France answer, the log) of `serve --engine auto --profile bf16`."""
    server = start_server("auto", "bf16", home)
    try:
        health = httpx.get(f"{server.base_url}/health").json()
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)
        answer = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=20, temperature=0)
        return health, answer.choices[0].message.content, server.log_text()
    finally:
        server.stop()


def test_without_vllm_auto_takes_the_fastest_engine_installed_here(home: Path, model_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEANSERVE_VLLM_PYTHON", raising=False)
    health, answer, log = _serve_auto(home)
    assert health["engine"] == "transformers" and "Paris" in answer
    table = load_table()
    if table is not None and table.mismatch(Machine.here("cpu")) is None:  # the committed table holds on this CPU
        assert "fastest measured for bf16 here: transformers" in health["engine_reason"]
    assert "vllm: not installed" in health["engine_reason"]
    assert f"engine=transformers ({health['engine_reason']})" in log


@pytest.mark.vllm
def test_auto_moves_to_the_vllm_environment_when_it_is_fastest(home: Path, model_dir: Path) -> None:
    expected = choose_engine("auto", get_profile("bf16", home), "cpu", table=load_table(), machine=Machine.here("cpu"),
                             elsewhere=engine_interpreters())
    health, answer, log = _serve_auto(home)
    assert health["engine"] == expected.name and "Paris" in answer
    if expected.python:  # the table ranks vLLM first here: serve re-ran itself under .venv-vllm's interpreter
        assert "serve moved to" in health["engine_reason"] and f"is installed in {expected.python}" in log
