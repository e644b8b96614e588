"""Incremental detokenization with stop strings, on the real tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanserve.engines.tokenizer import Tokenizer
from leanserve.server.textstream import TextStream, _held_suffix

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(str(model_dir))


def stream_all(tok: Tokenizer, text: str, stops: list[str]) -> tuple[list[str], bool]:
    ts = TextStream(tok, stops)
    pieces = [ts.push([t]) for t in tok.encode(text)]
    pieces.append(ts.flush())
    return pieces, ts.stopped


def test_pieces_join_to_the_text(tok: Tokenizer) -> None:
    text = "Héllo, wörld! 日本語 and emoji 🙂 too."
    pieces, stopped = stream_all(tok, text, [])
    assert "".join(pieces) == text and not stopped
    assert all("\ufffd" not in p for p in pieces)  # never half a character


def test_stop_string_is_cut_and_never_shown(tok: Tokenizer) -> None:
    pieces, stopped = stream_all(tok, "one two three four five", [" four"])
    assert stopped and "".join(pieces) == "one two three"


def test_earliest_of_several_stops_wins(tok: Tokenizer) -> None:
    pieces, stopped = stream_all(tok, "alpha beta gamma delta", ["delta", " beta"])
    assert stopped and "".join(pieces) == "alpha"


def test_a_possible_stop_prefix_is_held_back_then_released(tok: Tokenizer) -> None:
    ts = TextStream(tok, ["STOP!"])
    shown = ts.push(tok.encode("go ST"))
    assert shown == "go "  # "ST" might start "STOP!"
    shown += ts.push(tok.encode("ay"))
    assert shown == "go STay" and not ts.stopped


def test_held_suffix() -> None:
    assert _held_suffix("abc", ["cde"]) == 1
    assert _held_suffix("abcd", ["cde"]) == 2
    assert _held_suffix("abc", ["xyz"]) == 0
    assert _held_suffix("abc", ["abc"]) == 0  # a whole stop is found, not held


class CountingTokenizer:
    """The real tokenizer, counting how many ids it is asked to decode."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok, self.decoded = tok, 0

    def decode(self, ids: list[int]) -> str:
        self.decoded += len(ids)
        return self.tok.decode(ids)


def test_each_token_costs_a_short_decode_not_the_whole_output(tok: Tokenizer) -> None:
    ids = tok.encode("The quick brown fox jumps over the lazy dog, again and again. " * 20)
    counting = CountingTokenizer(tok)
    ts = TextStream(counting, [])  # type: ignore[arg-type]
    text = "".join(ts.push([t]) for t in ids) + ts.flush()
    assert text == tok.decode(ids)
    assert len(ids) > 200 and counting.decoded <= 4 * len(ids)  # re-decoding everything would be ~n^2/2


def test_a_character_split_over_tokens_appears_whole_and_once(tok: Tokenizer) -> None:
    ids = tok.encode("🙂🙂 日本")
    ts = TextStream(tok, [])
    pieces = [ts.push([t]) for t in ids]
    assert "".join(pieces) + ts.flush() == "🙂🙂 日本"
    assert "" in pieces and all("\ufffd" not in p for p in pieces)  # held while incomplete
