"""Token ids in, text out: incremental detokenization with stop strings, the same for every engine.

Text that could still become a stop string, or an incomplete UTF-8 character, is held back until
the next token settles it, so a streamed answer never shows a stop sequence or a broken character.
"""

from __future__ import annotations

from leanserve.engines.tokenizer import Tokenizer

REPLACEMENT = "\ufffd"


def _held_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stops: list[str]) -> None:
        self._tok = tokenizer
        self._stops = stops
        self._ids: list[int] = []
        self._emitted = 0
        self.stopped = False  # a stop string was found; the caller should end the generation

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; return the text that is now safe to show."""
        self._ids.extend(token_ids)
        text = self._tok.decode(self._ids)
        if self._stops:
            search_from = max(0, self._emitted - max(len(s) for s in self._stops))
            hits = [i for i in (text.find(s, search_from) for s in self._stops) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(text[: min(hits)])
        settled = text.rstrip(REPLACEMENT)
        return self._emit(settled[: len(settled) - _held_suffix(settled, self._stops)])

    def flush(self) -> str:
        """At the end of generation: whatever was held back."""
        return "" if self.stopped else self._emit(self._tok.decode(self._ids))

    def _emit(self, upto: str) -> str:
        new = upto[self._emitted :]
        self._emitted = max(self._emitted, len(upto))
        return new
