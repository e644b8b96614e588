"""Cheap limits on a generation body, checked before it takes an admission slot or meets the tokenizer.

A 3.9 MB `prompt` of 780,000 one-character strings was refused for `n` only after every string had
been validated and tokenized (10 s of a frozen event loop). These checks look only at the sizes of
the parsed JSON, so they cost microseconds per element, and they run in a worker thread (the JSON
parse too): whatever the body, the event loop stays free. Types are left to the pydantic models, which
see only bodies that passed, and say what is wrong with the exact same messages as before.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from leanserve.engines.tokenizer import Tokenizer
from leanserve.errors import ContextLengthExceeded, InvalidRequest, LeanserveError


@functools.lru_cache(maxsize=4)
def max_token_chars(tokenizer: Tokenizer) -> int:
    """The most characters one token stands for: a text of C characters has at least C / this many
    tokens, so longer texts cannot fit the context whatever they say (about 0.4 s, once per tokenizer)."""
    return max(1, *(len(s) for s in tokenizer.token_strings(list(range(tokenizer.vocab_size)))))


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value[:64])


def _prompts(prompt: Any) -> list[Any]:
    """OpenAI's four prompt shapes as a list of prompts (whatever their element types)."""
    if isinstance(prompt, list) and prompt and not _is_token_ids(prompt):
        return prompt
    return [prompt]


def _check_text(text: Any, max_chars: int, context: int, param: str) -> None:
    if isinstance(text, str) and len(text) > max_chars:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context} tokens, and a text of {len(text)} characters "
            f"has more tokens than that (one token is at most {max_chars // context} characters).", param=param)


def check_completion(body: dict[str, Any], max_n: int, context: int, max_chars: int) -> None:
    """Prompt count, token-id list lengths, characters per text prompt."""
    prompts = _prompts(body.get("prompt"))
    if len(prompts) > max_n:  # n itself is a scalar: the request model and the route check it
        raise InvalidRequest(f"at most {max_n} prompts per request on this server (n x prompts <= {max_n}); "
                             f"got {len(prompts)}", param="prompt")
    for p in prompts:
        if isinstance(p, list) and len(p) > context:
            raise ContextLengthExceeded(f"This model's maximum context length is {context} tokens, but the "
                                        f"prompt has {len(p)} tokens.", param="prompt")
        _check_text(p, max_chars, context, "prompt")


def _content_chars(message: Any) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def check_chat(body: dict[str, Any], max_n: int, context: int, max_chars: int) -> None:
    """Message count and characters of all messages (max_n is for the completions shape)."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    if len(messages) > context:  # every message is at least one token of the chat template
        raise ContextLengthExceeded(f"This model's maximum context length is {context} tokens, and "
                                    f"{len(messages)} messages take more than that.", param="messages")
    chars = sum(_content_chars(m) for m in messages)
    if chars > max_chars:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context} tokens, and {chars} characters of messages "
            f"have more tokens than that (one token is at most {max_chars // context} characters).",
            param="messages")


CHECKS = {"/v1/completions": check_completion, "/v1/chat/completions": check_chat}


def check_body(path: str, raw: bytes, max_n: int, tokenizer: Tokenizer | None, context: int) -> LeanserveError | None:
    """The first cheap limit `raw` breaks, or None. Unparseable or oddly shaped bodies pass: FastAPI
    and the request models refuse them, with their own messages. Blocking: call it in a thread."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict):
        return None
    max_chars = context * max_token_chars(tokenizer) if tokenizer is not None else 1 << 62
    try:
        CHECKS[path](body, max_n, context if tokenizer is not None else 1 << 62, max_chars)
    except LeanserveError as exc:
        return exc
    return None
