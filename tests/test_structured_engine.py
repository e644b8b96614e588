"""Structured outputs in the engine layer: the transformers engine, in process, on the real model,
decoding under xgrammar's mask. (Over HTTP, response_format is tested with the openai client.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from leanserve.engines.base import EngineConfig, GenerationRequest, SamplingOptions, StructuredOutput
from leanserve.engines.grammar import check_schema
from leanserve.errors import InvalidRequest
from leanserve.profiles.spec import LoadSpec

pytestmark = pytest.mark.server


class City(BaseModel):
    name: str
    country: str
    population: int
    kind: str


SCHEMA = {**City.model_json_schema(), "additionalProperties": False}
SCHEMA["properties"]["kind"] = {"enum": ["capital", "town"]}


@pytest.fixture(scope="module")
def engine(model_dir: Path):  # noqa: ANN201
    from leanserve.engines.transformers import TransformersEngine

    eng = TransformersEngine(EngineConfig(str(model_dir), LoadSpec(), "cpu", "float32", max_model_len=1024))
    asyncio.run(eng.start())
    yield eng
    asyncio.run(eng.shutdown())


def generate(engine, prompt: str, opts: SamplingOptions) -> str:  # noqa: ANN001
    async def run() -> list[int]:
        ids: list[int] = []
        request = GenerationRequest("t", engine.tokenizer.apply_chat_template([{"role": "user", "content": prompt}]), opts)
        async for delta in engine.generate(request):
            ids += delta.token_ids
        return ids

    return engine.tokenizer.decode(asyncio.run(run()))


@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_output_always_matches_the_schema(engine, seed: int) -> None:  # noqa: ANN001
    opts = SamplingOptions(max_tokens=120, temperature=1.0, seed=seed, structured=StructuredOutput(json.dumps(SCHEMA)))
    city = City.model_validate_json(generate(engine, "Describe Paris as JSON.", opts))
    assert city.kind in ("capital", "town")


def test_json_object_output_parses_where_free_text_would_not(engine) -> None:  # noqa: ANN001
    prompt = "Say hello."
    free = generate(engine, prompt, SamplingOptions(max_tokens=40, temperature=0.0))
    with pytest.raises(json.JSONDecodeError):
        json.loads(free)  # the model answers in prose when left alone
    constrained = generate(engine, prompt, SamplingOptions(max_tokens=80, temperature=0.0, structured=StructuredOutput()))
    assert isinstance(json.loads(constrained), dict)


def test_an_unsupported_schema_is_refused_naming_why() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_schema(StructuredOutput(json.dumps({"type": "wibble"})))
    assert info.value.param == "response_format" and "wibble" in info.value.message
    check_schema(StructuredOutput(json.dumps(SCHEMA)))  # a supported one passes
