"""/metrics parsed with Prometheus' own parser, and shown to move after requests (every engine)."""

from __future__ import annotations

import pytest
from openai import OpenAI

from tests.conftest import MODEL
from tests.servers import Server
from tests.support import one, scrape

pytestmark = pytest.mark.server


def test_metrics_move_after_requests(server: Server, client: OpenAI) -> None:
    before = scrape(server)
    lab = {"profile": "bf16", "model": MODEL}
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hi"}],
                                       max_tokens=6, temperature=0)
    after = scrape(server)
    gen = r.usage.completion_tokens
    assert one(after, "leanserve_generation_tokens_total", **lab) - one(before, "leanserve_generation_tokens_total", **lab) == gen
    assert one(after, "leanserve_prompt_tokens_total", **lab) - one(before, "leanserve_prompt_tokens_total", **lab) == r.usage.prompt_tokens
    assert one(after, "leanserve_time_to_first_token_seconds_count", **lab) == one(before, "leanserve_time_to_first_token_seconds_count", **lab) + 1
    assert one(after, "leanserve_request_latency_seconds_count", **lab) == one(before, "leanserve_request_latency_seconds_count", **lab) + 1
    assert one(after, "leanserve_time_per_output_token_seconds_count", **lab) - one(before, "leanserve_time_per_output_token_seconds_count", **lab) == gen - 1
    assert one(after, "leanserve_requests_total", route="/v1/chat/completions", status="200") >= 1
    assert one(after, "leanserve_requests_running", **lab) == 0
    assert one(after, "leanserve_requests_waiting", **lab) == 0
    assert one(after, "leanserve_generation_tokens_per_second", **lab) > 0
    assert one(after, "leanserve_memory_bytes", kind="process_rss", **lab) > 100e6  # a model is loaded
    assert one(after, "leanserve_artifact_size_bytes", **lab) > 100e6
    assert one(after, "leanserve_model_info", engine=server.engine, profile="bf16", bits="16") == 1
