"""OpenAI API conformance, run against every engine: the real default model over real HTTP with the
official `openai` client."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from openai import OpenAI
from transformers import AutoTokenizer

from tests.conftest import MODEL
from tests.servers import Server

pytestmark = pytest.mark.server

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_answers_the_france_question(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=20, temperature=0)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content.strip() == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_a_repeated_prompt_reports_what_the_engine_took_from_its_prefix_cache(client: OpenAI, server: Server) -> None:
    prompt = " ".join(["The lighthouse keeper counted the waves again."] * 40)  # ~320 tokens: whole KV blocks
    client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1)
    if server.engine == "transformers":  # it keeps no prefix cache, so it claims none
        assert again.usage.prompt_tokens_details is None
    else:  # vLLM's automatic prefix caching: the first request's full blocks
        assert 0 < again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens


def test_max_completion_tokens_caps_length(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3
    assert r.choices[0].finish_reason == "length"


def test_streaming_matches_non_streaming_and_reports_usage(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_logprobs_are_sorted_and_consistent(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=5, temperature=0,
                                       logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry.logprob <= 0 and math.isclose(entry.logprob, tops[0], abs_tol=1e-4)  # greedy: chosen is top
    assert "".join(e.token for e in content) == r.choices[0].message.content


def test_completions_echo_gives_prompt_logprobs(client: OpenAI) -> None:
    """What lm-evaluation-harness `local-completions` sends for loglikelihood."""
    prompt = "The capital of France is Paris"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == prompt
    assert "".join(lp.tokens) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x < 0 for x in lp.token_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    # " Paris" after "The capital of France is" is likely; a random word is not
    other = client.completions.create(model=MODEL, prompt="The capital of France is banana", max_tokens=0,
                                      echo=True, logprobs=1)
    assert lp.token_logprobs[-1] > other.choices[0].logprobs.token_logprobs[-1] + 3


def test_completions_echo_with_one_generated_token(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="One, two, three,", max_tokens=1, echo=True, logprobs=2,
                                  temperature=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text.startswith("One, two, three,")
    assert len(lp.tokens) == len(lp.token_logprobs) == r.usage.prompt_tokens + 1
    assert lp.token_logprobs[0] is None and lp.token_logprobs[-1] is not None


def test_completions_accepts_every_prompt_shape(client: OpenAI, model_dir: Path) -> None:
    hello = AutoTokenizer.from_pretrained(model_dir).encode("Hello", add_special_tokens=False)
    one = client.completions.create(model=MODEL, prompt="Hello", max_tokens=2, temperature=0)
    assert len(one.choices) == 1
    many = client.completions.create(model=MODEL, prompt=["Hello", "Goodbye"], max_tokens=2, temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == one.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=hello, max_tokens=2, temperature=0)
    assert ids.choices[0].text == one.choices[0].text
    id_lists = client.completions.create(model=MODEL, prompt=[hello, hello + hello], max_tokens=2, temperature=0)
    assert len(id_lists.choices) == 2 and id_lists.usage.prompt_tokens == 3 * len(hello)


def test_stop_sequence_ends_the_text(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=20, temperature=0, stop=[" 6"])
    assert r.choices[0].text == " 4, 5,"
    assert r.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=20, temperature=0,
                                         stop=" 6", stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == " 4, 5,"


def test_seed_reproduces_a_sample(client: OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=16, temperature=1.0,
                                      seed=seed)
        return r.choices[0].text

    first = sample(1234)
    assert sample(1234) == first
    assert any(sample(s) != first for s in (1, 2, 3))


def test_n_returns_distinct_choices(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Tell me a story."}],
                                       max_tokens=12, temperature=1.0, n=2, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    assert 0 < r.usage.completion_tokens <= 24  # each choice capped at 12
    streamed = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=8, temperature=0, n=2,
                                              stream=True)
    indices = {c.choices[0].index for c in streamed if c.choices}
    assert indices == {0, 1}


def test_models_lists_the_served_model(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]
