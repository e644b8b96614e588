"""The two engines load the same weights in float32, so they must score a text almost identically."""

from __future__ import annotations

import math

import pytest
from openai import OpenAI

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY

pytestmark = pytest.mark.server

TEXT = "The quick brown fox jumps over the lazy dog. Paris is the capital and largest city of France."


@pytest.mark.vllm
def test_prompt_logprobs_match_across_engines(pool: ServerPool) -> None:
    sums = {}
    for engine in ("transformers", "vllm"):
        c = OpenAI(base_url=f"{pool.get(engine).base_url}/v1", api_key=API_KEY, max_retries=0)
        r = c.completions.create(model=MODEL, prompt=TEXT, max_tokens=0, echo=True, logprobs=0)
        sums[engine] = sum(x for x in r.choices[0].logprobs.token_logprobs if x is not None)
    assert math.isclose(sums["transformers"], sums["vllm"], rel_tol=1e-3), sums
