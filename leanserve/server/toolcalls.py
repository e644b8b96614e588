"""Tool calls: the prompt that offers tools, the schema that forces a call, and the parser that finds one.

- Offering: a chat template that knows tools renders them itself (`apply_chat_template(tools=...)`);
  for one that does not (SmolLM2's ChatML has no tools block), `fallback_system_prompt` describes them
  in Hermes' format, which small instruct models have seen most.
- `tool_choice` "required" or a named function: the answer is decoded under `forced_schema`, so it is
  always a call (or a list of calls) whose arguments validate against the tool's parameters.
- "auto": the model may answer or call; `parse_auto` reads Hermes `<tool_call>{...}</tool_call>` blocks
  (vLLM's hermes parser) and a bare JSON object naming a tool, and leaves anything else as content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}
        return out if index is None else {"index": index, **out}


def fallback_system_prompt(tools: list[dict[str, Any]]) -> str:
    """Hermes-style tool instructions, for templates without a tools block."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("You are a function-calling assistant. You may call one or more of these functions to help with "
            f"the user's request:\n<tools>\n{listed}\n</tools>\nTo call one, answer with a JSON object inside "
            '<tool_call></tool_call> tags, like this:\n<tool_call>\n{"name": "<function-name>", "arguments": '
            "{<arguments as JSON>}}\n</tool_call>\nOtherwise answer the user directly.")


def _call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool["function"]
    return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
            "properties": {"name": {"const": fn["name"]}, "arguments": fn.get("parameters") or {"type": "object"}}}


def forced_schema(tools: list[dict[str, Any]], name: str | None, parallel: bool) -> dict[str, Any]:
    """JSON schema of the answer when a call is required (name None: any of the tools; else that one).
    With parallel calls allowed it is a non-empty array of calls, else one call object."""
    chosen = [t for t in tools if name is None or t["function"]["name"] == name]
    call = _call_schema(chosen[0]) if len(chosen) == 1 else {"anyOf": [_call_schema(t) for t in chosen]}
    return {"type": "array", "items": call, "minItems": 1} if parallel else call


def _to_call(obj: Any, names: set[str]) -> ToolCall | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(obj["name"], json.dumps(args, ensure_ascii=False)) if isinstance(args, dict) else None


def parse_forced(text: str, names: set[str]) -> list[ToolCall]:
    """The calls in an answer decoded under forced_schema (one object or an array of them)."""
    data = json.loads(text)
    calls = [_to_call(obj, names) for obj in (data if isinstance(data, list) else [data])]
    return [c for c in calls if c is not None]


def parse_auto(text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a free answer: Hermes blocks, else a bare JSON object naming a tool."""
    calls: list[ToolCall] = []
    if "<tool_call>" in text:
        for block in TOOL_CALL_RE.findall(text):
            try:
                call = _to_call(json.loads(block), names)
            except json.JSONDecodeError:
                call = None
            if call:
                calls.append(call)
        if calls:
            rest = TOOL_CALL_RE.sub("", text).strip()
            return rest or None, calls
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            call = _to_call(json.loads(stripped), names)
        except json.JSONDecodeError:
            call = None
        if call:
            return None, [call]
    return text, []


def may_become_a_call(text: str) -> bool:
    """While streaming under tool_choice auto: could this start of an answer still turn into a call?
    Such text is held back (not streamed as content) until the answer is complete."""
    stripped = text.lstrip()
    return stripped.startswith("{") or "<tool_call>".startswith(stripped[:11]) or "<tool_call>" in text


def finish(mode: str, text: str, names: set[str]) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a whole answer under `mode` (none | auto | required | named). A forced answer
    cut short by max_tokens does not parse: it is returned as content, with no calls."""
    if mode == "auto":
        return parse_auto(text, names)
    if mode in ("required", "named"):
        try:
            calls = parse_forced(text, names)
        except json.JSONDecodeError:
            return text, []
        return (None, calls) if calls else (text, [])
    return text, []


class ToolStream:
    """One streamed choice's text under a tool mode: content that can be shown now is passed on; text
    that is (or may still become) a call is held until the answer ends, then `end` parses it."""

    def __init__(self, mode: str, names: set[str]) -> None:
        self.mode, self.names = mode, names
        self._held = ""
        self._holding = mode in ("auto", "required", "named")
        self._shown = ""

    def push(self, text: str) -> str:
        if not self._holding:
            self._shown += text
            return text
        self._held += text
        if self.mode == "auto" and not may_become_a_call(self._held):
            self._holding, out, self._held = False, self._held, ""
            self._shown += out
            return out
        return ""

    def end(self) -> tuple[str, list[ToolCall]]:
        """(content still to show, calls) once the answer is complete."""
        if not self._held:
            return "", []
        content, calls = finish(self.mode, self._held, self.names)
        return content or "", calls


def template_messages(messages: list[Any], tools: list[dict[str, Any]], template_knows_tools: bool) -> list[dict[str, Any]]:
    """The request's messages as a chat template takes them. A template that knows tools gets tool calls
    and tool results in the Hugging Face convention; for one that does not, they are written as Hermes
    text (`<tool_call>` / `<tool_response>`) and the tools are described in the system prompt."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        text = m.text()
        if m.tool_calls:
            calls = [{"name": c.function.name, "arguments": _json_or_text(c.function.arguments)} for c in m.tool_calls]
            if template_knows_tools:
                out.append({"role": "assistant", "content": text, "tool_calls": [
                    {"id": c.id, "type": "function", "function": call} for c, call in zip(m.tool_calls, calls)]})
            else:
                blocks = "\n".join(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>" for call in calls)
                out.append({"role": "assistant", "content": f"{text}\n{blocks}".strip()})
        elif role == "tool":
            out.append({"role": "tool", "content": text, "tool_call_id": m.tool_call_id} if template_knows_tools
                       else {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"})
        else:
            out.append({"role": role, "content": text})
    if tools and not template_knows_tools:
        prompt = fallback_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments
