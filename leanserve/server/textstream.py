"""Token ids in, text out: incremental detokenization with stop strings, the same for every engine.

Text that could still become a stop string, or an incomplete UTF-8 character, is held back until
the next token settles it, so a streamed answer never shows a stop sequence or a broken character.

Each token costs a decode of a few tokens, not of the whole output: like vLLM's incremental
detokenizer (v1/engine/detokenizer.py), it keeps a prefix offset and a read offset and decodes only
ids[prefix:], taking what that adds over ids[prefix:read]. Decoding from a little before the new token
keeps what decoding alone would lose (a SentencePiece word's leading space, a multi-byte character).
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
        self._prefix = 0  # ids[prefix:read] were decoded last time, as context for the next decode
        self._read = 0  # ids before this are in self._text
        self._text = ""  # the decoded text of ids[:read], complete characters only
        self._emitted = 0
        self.stopped = False  # a stop string was found; the caller should end the generation

    def _decode_new(self, final: bool = False) -> str:
        """Text that ids[read:] add; "" while they end inside a character (unless final)."""
        before = self._tok.decode(self._ids[self._prefix : self._read])
        after = self._tok.decode(self._ids[self._prefix :])
        if not final and (len(after) <= len(before) or after.endswith(REPLACEMENT)):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def push(self, token_ids: list[int]) -> str:
        """Add tokens; return the text that is now safe to show."""
        self._ids.extend(token_ids)
        self._text += self._decode_new()
        text = self._text
        if self._stops:
            search_from = max(0, self._emitted - max(len(s) for s in self._stops))
            hits = [i for i in (text.find(s, search_from) for s in self._stops) if i >= 0]
            if hits:
                self.stopped = True
                return self._emit(text[: min(hits)])
        return self._emit(text[: len(text) - _held_suffix(text, self._stops)])

    def flush(self) -> str:
        """At the end of generation: whatever was held back."""
        if self.stopped:
            return ""
        self._text += self._decode_new(final=True)
        return self._emit(self._text)

    def _emit(self, upto: str) -> str:
        new = upto[self._emitted :]
        self._emitted = max(self._emitted, len(upto))
        return new
