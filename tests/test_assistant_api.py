"""The assistant API over HTTP with the official openai client, on every engine: structured outputs
(`chat.completions.parse`), tool calls (required, named, auto; streamed and not), tool results in the
history, sampling controls, and /tokenize. Refused fields are table-driven in tests/data/bad_requests.yaml."""

from __future__ import annotations

import json
from enum import Enum

import httpx
import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.conftest import MODEL
from tests.servers import API_KEY, Server

pytestmark = pytest.mark.server
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "description": "The time in a time zone",
                                         "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                                                        "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):  # nested object
    name: str
    age: int
    address: Address


class Color(str, Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Pick(BaseModel):  # enum
    color: Color


class Item(BaseModel):
    name: str
    quantity: int


class Order(BaseModel):  # array of objects
    items: list[Item]


@pytest.mark.parametrize(("schema", "prompt"), [
    (Person, "Invent a person living in Paris."),
    (Pick, "Pick a color."),
    (Order, "Order two things from a bakery."),
])
def test_parse_returns_a_validated_object(client: OpenAI, schema: type[BaseModel], prompt: str) -> None:
    r = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                      response_format=schema, max_tokens=200, temperature=0.7, seed=1)
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, schema), r.choices[0].message.content


def test_json_object_output_parses(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                       response_format={"type": "json_object"}, max_tokens=120, temperature=0)
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_tool_call_comes_back_as_tool_calls(client: OpenAI, choice: object, stream: bool) -> None:
    kwargs = dict(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False,
                  max_tokens=80, temperature=0)
    if stream:
        with client.chat.completions.stream(**kwargs) as s:  # the client's own assembler of tool-call deltas
            for _ in s:
                pass
            r = s.get_final_completion()
    else:
        r = client.chat.completions.create(**kwargs)
    (c,) = r.choices
    assert c.finish_reason == "tool_calls" and c.message.tool_calls, c.message
    call = c.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("C", "F")  # arguments validate


@pytest.mark.parametrize("stream", [False, True])
def test_auto_reads_a_call_the_model_writes(client: OpenAI, stream: bool) -> None:
    """The model's JSON naming a tool is parsed into tool_calls (the answer is steered into that shape by a
    response_format, so the test does not depend on what a 135M model chooses)."""
    call_shape = {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                  "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER["function"]["parameters"]}}
    kwargs = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="auto", max_tokens=80, temperature=0,
                  response_format={"type": "json_schema", "json_schema": {"name": "call", "schema": call_shape}})
    if stream:
        with client.chat.completions.stream(**kwargs) as s:
            for _ in s:
                pass
            r = s.get_final_completion()
    else:
        r = client.chat.completions.create(**kwargs)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls[0].function.name == "get_weather"
    assert not c.message.content


def test_auto_leaves_a_plain_answer_as_content(client: OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello to Ada."}],
                                       tools=[WEATHER], max_tokens=30, temperature=0)
    c = r.choices[0]
    if c.message.tool_calls:  # a call is allowed under auto, but then it must be a well-formed one
        assert c.finish_reason == "tool_calls" and json.loads(c.message.tool_calls[0].function.arguments) is not None
    else:
        assert c.message.content and "<tool_call>" not in c.message.content and c.finish_reason in ("stop", "length")


def test_a_tool_result_in_the_history_is_rendered_and_answered(client: OpenAI, server: Server) -> None:
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none",
                                       max_tokens=30, temperature=0)
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls
    rendered = httpx.post(f"{server.base_url}/tokenize", headers=AUTH, json={"model": MODEL, "messages": history,
                                                                            "return_token_strs": True}).json()
    text = "".join(rendered["token_strs"])
    assert "18 degrees and sunny" in text and '"city": "Paris"' in text
    assert rendered["count"] == r.usage.prompt_tokens  # /tokenize renders exactly what chat sends


def test_logit_bias_against_the_greedy_token_changes_the_answer(client: OpenAI, server: Server) -> None:
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=5,
               temperature=0, logprobs=True)
    first = client.chat.completions.create(**ask).choices[0].logprobs.content[0].token
    tid = httpx.post(f"{server.base_url}/tokenize", headers=AUTH, json={"prompt": first}).json()["tokens"]
    assert len(tid) == 1
    biased = client.chat.completions.create(**ask, logit_bias={str(tid[0]): -100})
    assert biased.choices[0].logprobs.content[0].token != first


def test_top_k_one_at_temperature_one_is_greedy(client: OpenAI) -> None:
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Name three fruits."}], max_tokens=16)
    greedy = client.chat.completions.create(**ask, temperature=0).choices[0].message.content
    for seed in (1, 2):
        top1 = client.chat.completions.create(**ask, temperature=1.0, seed=seed, extra_body={"top_k": 1})
        assert top1.choices[0].message.content == greedy


def test_stop_token_ids_end_the_answer(client: OpenAI, server: Server) -> None:
    ask = dict(model=MODEL, messages=[{"role": "user", "content": "Count from one to ten in words."}], max_tokens=20,
               temperature=0, logprobs=True)
    tokens = [t.token for t in client.chat.completions.create(**ask).choices[0].logprobs.content]
    stop = next(k for k in range(3, len(tokens)) if tokens[k] not in tokens[:k])  # its first occurrence
    (tid,) = httpx.post(f"{server.base_url}/tokenize", headers=AUTH, json={"prompt": tokens[stop]}).json()["tokens"]
    cut = client.chat.completions.create(**ask, extra_body={"stop_token_ids": [tid]}).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == "".join(tokens[:stop])


def test_tokenize_and_detokenize_round_trip(server: Server) -> None:
    ids = httpx.post(f"{server.base_url}/tokenize", headers=AUTH, json={"prompt": "Hello, world"}).json()
    assert ids["count"] == len(ids["tokens"]) > 1 and ids["max_model_len"] == 1024
    back = httpx.post(f"{server.base_url}/detokenize", headers=AUTH, json={"tokens": ids["tokens"]}).json()
    assert back == {"prompt": "Hello, world"}
