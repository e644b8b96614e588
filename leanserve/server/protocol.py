"""OpenAI request and response bodies, validated at the edge (pydantic), in OpenAI's field order.

Cross-field rules live in validators; `sampling_options()` turns a request into the engine's type.
Scalars are strict, as OpenAI's are: "1" is not an int, 1.5 is not an int, "true" is not a bool
(pydantic's lax mode would silently coerce them and run a request the client did not mean).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from leanserve.engines.base import SamplingOptions

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20
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


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingFields(BaseModel):
    """Fields chat and completions share."""

    model_config = ConfigDict(extra="ignore")

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
    user: StrictStr | None = None
    ignore_eos: StrictBool = Field(default=False, description="extension (as in vLLM): generate max_tokens regardless of EOS")

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

    @model_validator(mode="after")
    def _check_penalties(self) -> _SamplingFields:
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported by this server; leave it unset or 0")
        return self

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
        )


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @model_validator(mode="after")
    def _check_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self

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
            raise ValueError("suffix (insertion) is not supported by this server")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts: OpenAI's four accepted shapes flattened into a list."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
