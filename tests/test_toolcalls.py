"""Tool-call prompts, schemas and parsing (pure; the HTTP round trips are in the API tests)."""

from __future__ import annotations

import json

import pytest

from leanserve.server.toolcalls import fallback_system_prompt, forced_schema, may_become_a_call, parse_auto, parse_forced

pytestmark = pytest.mark.unit

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
NAMES = {"get_weather", "get_time"}


def test_hermes_blocks_become_calls_and_the_rest_stays_content() -> None:
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    content, calls = parse_auto(text, NAMES)
    assert content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert calls[0].id.startswith("call_")


def test_a_bare_json_object_naming_a_tool_is_a_call_and_anything_else_is_content() -> None:
    assert parse_auto('{"name": "get_time", "parameters": {}}', NAMES)[1][0].name == "get_time"
    assert parse_auto('{"name": "rm_rf", "arguments": {}}', NAMES) == ('{"name": "rm_rf", "arguments": {}}', [])
    assert parse_auto("Paris is sunny.", NAMES) == ("Paris is sunny.", [])
    assert parse_auto("<tool_call>not json</tool_call>", NAMES)[1] == []


def test_forced_schema_names_one_tool_or_any_and_parses_back() -> None:
    one = forced_schema([WEATHER, TIME], "get_weather", parallel=False)
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"] == WEATHER["function"]["parameters"]
    many = forced_schema([WEATHER, TIME], None, parallel=True)
    assert many["type"] == "array" and len(many["items"]["anyOf"]) == 2
    calls = parse_forced('[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]', NAMES)
    assert [c.name for c in calls] == ["get_time", "get_weather"]


@pytest.mark.parametrize(("text", "held"), [("{", True), ("  <tool", True), ("<tool_call>{", True), ("Hello", False),
                                            ("The answer", False)])
def test_streamed_text_that_may_become_a_call_is_held(text: str, held: bool) -> None:
    assert may_become_a_call(text) is held


def test_fallback_prompt_lists_every_tool() -> None:
    prompt = fallback_system_prompt([WEATHER, TIME])
    assert "get_weather" in prompt and "get_time" in prompt and "<tool_call>" in prompt
