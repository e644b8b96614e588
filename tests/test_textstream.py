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
