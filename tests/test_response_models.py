"""The response models dump in OpenAI's shapes: a key OpenAI leaves out when it has no value (a
delta's role, a message's tool_calls, a chunk's usage) is absent, while `logprobs` and
`finish_reason` are present as null, as OpenAI sends them."""

from __future__ import annotations

import json

import pytest

from leanserve.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    Completion,
    ToolCallFunction,
    ToolCallOut,
    Usage,
)

pytestmark = pytest.mark.unit
BASE = {"id": "chatcmpl-1", "created": 1, "model": "m"}


def test_a_content_chunk_has_no_role_tool_calls_or_usage() -> None:
    chunk = ChatCompletionChunk(**BASE, choices=[ChatChunkChoice(index=0, delta=ChatDelta(content="Hi"))])
    assert json.loads(chunk.model_dump_json()) == {
        **BASE, "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}]}


def test_a_streamed_tool_call_carries_its_index_and_a_whole_one_does_not() -> None:
    call = ToolCallFunction(name="f", arguments="{}")
    streamed = ToolCallOut(index=0, id="call_1", function=call).model_dump()
    whole = ToolCallOut(id="call_1", function=call).model_dump()
    assert streamed["index"] == 0 and "index" not in whole
    assert whole == {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_a_plain_answer_has_no_tool_calls_key() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    r = ChatCompletion(**BASE, choices=[ChatChoice(index=0, message=AssistantMessage(content="Paris."),
                                                   finish_reason="stop")], usage=usage)
    (choice,) = r.model_dump()["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Paris."} and choice["logprobs"] is None


def test_the_usage_chunk_has_empty_choices_and_the_usage() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    dumped = Completion(**{**BASE, "id": "cmpl-1"}, choices=[], usage=usage).model_dump()
    assert dumped["choices"] == [] and dumped["usage"]["total_tokens"] == 5 and dumped["object"] == "text_completion"
