"""OpenAI request and response bodies, validated at the edge (pydantic), in OpenAI's field order.

Cross-field rules live in validators; `sampling_options()` turns a request into the engine's type.
Scalars are strict, as OpenAI's are: "1" is not an int, 1.5 is not an int, "true" is not a bool
(pydantic's lax mode would silently coerce them and run a request the client did not mean).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from leanserve.engines.base import SamplingOptions, StructuredOutput
from leanserve.errors import InvalidRequest

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 300  # keys, as OpenAI allows
MAX_TOOLS = 128
# Fields a client may send that this server cannot honour: each is refused with a 400 naming it, never
# ignored (the README prints this table). Unknown fields are refused too ("Unrecognized request
# argument"), as OpenAI does. Accepted although they change nothing: user, metadata, store.
REFUSED: dict[str, str] = {
    "audio": "audio output is not supported: this server serves text models",
    "modalities": "only text output is supported; leave modalities unset or send [\"text\"]",
    "prediction": "predicted outputs (speculative hints) are not supported",
    "functions": "the legacy `functions` field is not supported; send `tools`",
    "function_call": "the legacy `function_call` field is not supported; send `tool_choice`",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "this server's models have no reasoning-effort control",
    "verbosity": "verbosity control is not supported",
    "service_tier": "service tiers are not supported; leave service_tier unset or \"auto\"/\"default\"",
    "echo": "echo is only supported on /v1/completions",
    "best_of": "best_of greater than n is not supported (no server-side ranking of candidates)",
    "suffix": "suffix (insertion) is not supported by this server",
}
METADATA = ("user", "metadata", "store")
# Below this temperature (or top_p) sampling is greedy: dividing logits by 1e-300 overflows to inf and
# softmax to NaN (it stopped the transformers engine's batching loop), and a top_p this small keeps
# only the most likely token anyway. vLLM uses the same threshold.
GREEDY_BELOW = 1e-5
StrictFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a lone UTF-16 surrogate (JSON allows "\\ud800"; UTF-8 and
    the tokenizer do not), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        found = _surrogate_path(key, path) if isinstance(key, str) else None
        found = found or _surrogate_path(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr
    arguments: StrictStr  # JSON text


class ToolCallIn(BaseModel):
    """An assistant message's earlier tool call, sent back in the history."""

    model_config = ConfigDict(extra="ignore")
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    # extra fields ignored here only: clients send assistant messages back with refusal/annotations
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant messages
    tool_call_id: StrictStr | None = None  # tool messages: which call this answers

    @model_validator(mode="after")
    def _check_tool_fields(self) -> ChatMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingFields(BaseModel):
    """Fields chat and completions share."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr = Field(max_length=256)
    temperature: StrictFloat | None = Field(default=None, ge=0.0, le=2.0)
    top_p: StrictFloat | None = Field(default=None, gt=0.0, le=1.0)
    n: StrictInt = Field(default=1, ge=1, le=128)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP)] | None = Field(default=None, validate_default=True)
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: StrictFloat | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: StrictFloat | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: Annotated[dict[StrictStr, Annotated[float, Field(strict=False, ge=-100, le=100, allow_inf_nan=False)]],
                          Field(max_length=MAX_LOGIT_BIAS)] | None = None
    user: StrictStr | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    store: StrictBool | None = None
    # extensions, as vLLM has them
    ignore_eos: StrictBool = Field(default=False, description="extension (as in vLLM): generate max_tokens regardless of EOS")
    top_k: StrictInt | None = Field(default=None, ge=-1, description="extension (as in vLLM): sample from the k most likely; 0 or -1: off")
    min_p: StrictFloat | None = Field(default=None, ge=0.0, le=1.0, description="extension (as in vLLM)")
    repetition_penalty: StrictFloat | None = Field(default=None, gt=0.0, le=2.0, description="extension (as in vLLM)")
    stop_token_ids: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(max_length=64)] | None = Field(
        default=None, description="extension (as in vLLM): token ids that end the answer")
    # known fields this server refuses (REFUSED says why): declared so the refusal names them, and left
    # out of /openapi.json, which describes what the server accepts
    audio: SkipJsonSchema[Any] = None
    modalities: SkipJsonSchema[Any] = None
    prediction: SkipJsonSchema[Any] = None
    functions: SkipJsonSchema[Any] = None
    function_call: SkipJsonSchema[Any] = None
    web_search_options: SkipJsonSchema[Any] = None
    reasoning_effort: SkipJsonSchema[Any] = None
    verbosity: SkipJsonSchema[Any] = None
    service_tier: SkipJsonSchema[Any] = None

    @field_validator("audio", "prediction", "functions", "function_call", "web_search_options", "reasoning_effort",
                     "verbosity")
    @classmethod
    def _refuse(cls, v: Any, info: Any) -> Any:
        if v is not None:
            raise ValueError(REFUSED[info.field_name])
        return v

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if v is not None and v != ["text"]:
            raise ValueError(REFUSED["modalities"])
        return v

    @field_validator("service_tier")
    @classmethod
    def _no_tiers(cls, v: Any) -> Any:
        if v not in (None, "auto", "default"):
            raise ValueError(REFUSED["service_tier"])
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys_are_token_ids(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        for key in v or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids written as strings; {key[:20]!r} is not one")
        return v

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        where = _surrogate_path(data)
        if where:
            raise ValueError(f"{where} contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid "
                             "Unicode text; send UTF-8 text or well-formed surrogate pairs")
        return data

    @field_validator("stop", mode="before")
    @classmethod
    def _count_stops(cls, v: Any) -> Any:
        """Before the union, so the message is this one rather than one per union member."""
        if isinstance(v, list) and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        return v

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @property
    def stops(self) -> list[str]:
        return self.stop  # type: ignore[return-value]  # normalised to a list by the validator

    def sampling_options(self, max_tokens: int, logprobs: int | None, choice: int) -> SamplingOptions:
        """Engine options for choice number `choice` (its seed is offset so n choices differ)."""
        seed = None if self.seed is None else (self.seed + choice) % (2**63)
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        if temperature < GREEDY_BELOW or top_p < GREEDY_BELOW:
            temperature, top_p = 0.0, 1.0
        return SamplingOptions(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            logprobs=logprobs,
            ignore_eos=self.ignore_eos,
            top_k=max(0, self.top_k or 0),
            min_p=self.min_p or 0.0,
            repetition_penalty=self.repetition_penalty or 1.0,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=tuple((int(k), float(b)) for k, b in (self.logit_bias or {}).items()),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            structured=self.structured_output(),
        )

    def structured_output(self) -> StructuredOutput | None:
        """What the answer must parse as; chat overrides (response_format, forced tool calls)."""
        return None

    @property
    def structured_param(self) -> str:
        """The field a refused schema came from."""
        return "response_format"

    def token_ids_used(self) -> list[tuple[str, list[int]]]:
        """(field, ids) of every token id the request names, for the route's vocabulary check."""
        return [("logit_bias", [int(k) for k in self.logit_bias or {}]), ("stop_token_ids", list(self.stop_token_ids or []))]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: Annotated[StrictStr, Field(max_length=64)]
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class ResponseFormatText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_object"]


class ResponseFormatJsonSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
                           Field(discriminator="type")]


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool = True
    echo: SkipJsonSchema[Any] = None  # completions only (REFUSED)

    @field_validator("echo")
    @classmethod
    def _no_chat_echo(cls, v: Any) -> Any:
        if v:
            raise ValueError(REFUSED["echo"])
        return v

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

    @model_validator(mode="after")
    def _check_tools(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or []]
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in names:
            raise InvalidRequest(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools",
                                 param="tool_choice")
        if self.tool_choice in ("required",) or isinstance(self.tool_choice, NamedToolChoice):
            if not names:
                raise InvalidRequest("tool_choice requires tools", param="tool_choice")
            if self.response_format is not None and self.response_format.type != "text":
                raise InvalidRequest("a required tool call and a response_format cannot both constrain the answer",
                                     param="response_format")
        if len(set(names)) != len(names):
            raise InvalidRequest("tool function names must be unique", param="tools")
        return self

    @property
    def tool_mode(self) -> str:
        """none | auto | required | named: how the answer relates to the tools."""
        if not self.tools:
            return "none"
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    @property
    def structured_param(self) -> str:
        return "tools" if self.tool_mode in ("required", "named") else "response_format"

    @property
    def tool_dicts(self) -> list[dict[str, Any]]:
        return [t.model_dump(exclude_none=True) for t in self.tools or []]

    def structured_output(self) -> StructuredOutput | None:
        import json

        from leanserve.server.toolcalls import forced_schema

        if self.tool_mode in ("required", "named"):
            name = self.tool_choice.function.name if isinstance(self.tool_choice, NamedToolChoice) else None
            return StructuredOutput(json.dumps(forced_schema(self.tool_dicts, name, self.parallel_tool_calls)))
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return StructuredOutput()
        return StructuredOutput(json.dumps(fmt.json_schema.schema_ or {"type": "object"}))

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


# Non-empty by schema, so /openapi.json says what the server accepts (and generated clients and the
# fuzz tests send it)
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)]


class CompletionRequest(_SamplingFields):
    prompt: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    max_tokens: StrictInt = Field(default=16, ge=0)
    logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = Field(default=None, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt(cls, v: Any) -> Any:
        """Before the union: one clear message instead of one per union member."""
        if v == "":
            raise ValueError("prompt must not be empty")
        if isinstance(v, list) and len(v) == 0:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and any(isinstance(p, list) and len(p) == 0 for p in v):
            raise ValueError("token-id prompts must not be empty")
        return v

    @model_validator(mode="after")
    def _check_suffix(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError(REFUSED["suffix"])
        if self.best_of is not None and self.best_of > self.n:
            raise InvalidRequest(REFUSED["best_of"], param="best_of")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts: OpenAI's four accepted shapes flattened into a list."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a prompt, or chat messages (rendered with the chat template)."""

    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = Field(default=None, max_length=256)
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: StrictBool = False  # accepted for vLLM clients; prompts are tokenized without BOS/EOS
    return_token_strs: StrictBool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("send exactly one of prompt or messages", param="prompt")
        if self.add_special_tokens:
            raise InvalidRequest("add_special_tokens true is not supported: prompts are tokenized as "
                                 "/v1/completions tokenizes them, without added special tokens", param="add_special_tokens")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: StrictStr | None = Field(default=None, max_length=256)
    tokens: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(max_length=1_000_000)]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


# --- responses ------------------------------------------------------------------------------------------------------
# What the routes send, as models rather than dicts, in OpenAI's shapes. A field that OpenAI leaves out
# when it has no value (a delta's role, a message's tool_calls, a chunk's usage) is dropped when None.
def _unset(value: Any) -> bool:
    return value is None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobOut]


class CompletionLogprobs(BaseModel):
    """The legacy completions shape: token_logprobs is None for a first prompt token (nothing before it)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ToolCallFunction(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallOut(BaseModel):
    index: int | None = Field(default=None, exclude_if=_unset)  # streamed deltas only
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = Field(default=None, exclude_if=_unset)


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(default=None, exclude_if=_unset)
    content: str | None = Field(default=None, exclude_if=_unset)
    tool_calls: list[ToolCallOut] | None = Field(default=None, exclude_if=_unset)


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = Field(default=None, exclude_if=_unset)  # the last chunk, with include_usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    """A whole completion, and also each streamed chunk (OpenAI uses the one object for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(default=None, exclude_if=_unset)
