"""Structured outputs for the engines that sample in our code, with xgrammar (vLLM's own backend).

A request's `StructuredOutput` (a JSON schema, or any JSON object) compiles once per distinct schema
into a grammar over this model's vocabulary; each generated token then gets a bitmask of the tokens
that keep the output valid, applied to the logits before sampling, as vLLM's
`v1/structured_output/backend_xgrammar.py` does. The output always parses, and matches the schema.
The vLLM engine passes the same StructuredOutput to vLLM's StructuredOutputsParams instead.

Whitespace between JSON tokens is not free: a small model given the choice pads with newlines until
max_tokens runs out (seen on the default model). Both paths ask for compact JSON (xgrammar's
any_whitespace=False; vLLM's disable_any_whitespace).
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from leanserve.errors import InvalidRequest

ANY_OBJECT = '{"type": "object"}'

if TYPE_CHECKING:
    import torch

    from leanserve.engines.base import StructuredOutput


def check_schema(structured: StructuredOutput) -> None:
    """Refuse, before anything runs, a schema the grammar compiler cannot honour (naming why)."""
    if structured.schema is None:
        return
    import xgrammar as xgr

    try:
        xgr.Grammar.from_json_schema(structured.schema, strict_mode=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reason = reason.split("] ", 1)[-1].split(": ", 1)[-1] if ".cc:" in reason else reason
        raise InvalidRequest(f"response_format json_schema is not supported: {reason}",
                             param="response_format") from exc


class Constraint:
    """One request's grammar state: masks the logits for the next token, then takes the chosen one."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._matcher = matcher
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # [1, ceil(V / 32)] int32

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` [V] with every token the grammar forbids at -inf (a new tensor)."""
        import xgrammar as xgr

        out = logits.clone()
        self._matcher.fill_next_token_bitmask(self._bitmask)
        xgr.apply_token_bitmask_inplace(out.unsqueeze(0), self._bitmask)
        return out

    def accept(self, token_id: int) -> None:
        self._matcher.accept_token(token_id)


class GrammarCompiler:
    """This model's vocabulary as xgrammar sees it, and a cache of compiled grammars (thread-safe)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self.vocab_size = vocab_size  # the logits' width, which can exceed the tokenizer's length
        info = xgr.TokenizerInfo.from_huggingface(hf_tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info, cache_enabled=True)
        self._lock = threading.Lock()

    def constraint(self, structured: StructuredOutput) -> Constraint:
        import xgrammar as xgr

        with self._lock:
            # json_object means an object, as OpenAI and vLLM's xgrammar backend read it, not any JSON value
            compiled = self._compiler.compile_json_schema(structured.schema or ANY_OBJECT, strict_mode=True,
                                                          any_whitespace=False)
        return Constraint(xgr.GrammarMatcher(compiled), self.vocab_size)


@functools.lru_cache(maxsize=4)
def compiler_for(tokenizer: Any, vocab_size: int) -> GrammarCompiler:
    """The engine's compiler, built on its first structured request (xgrammar reads the whole vocabulary)."""
    return GrammarCompiler(tokenizer.hf, vocab_size)
