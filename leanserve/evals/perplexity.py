"""WikiText-2 perplexity through `/v1/completions` (echo=true, logprobs=0, max_tokens=0), HTTP only.

Sliding windows over the test text, measured in characters because a remote server's tokenizer is not
ours to call: each window is `window_chars` long and moves by `stride_chars`; the first window scores all
its tokens (but the very first, which has no context), every later one scores only the tokens that start
in its last `stride_chars` characters, so each scored token sees at least `window_chars - stride_chars`
characters of context and every token of the text is scored exactly once. Windows are cut before a space
or newline so that a byte-level BPE tokenizes the boundary the same way in neighbouring windows.

Token-level perplexity is exp(-sum logprob / scored tokens); word-level divides the same sum by the
number of whitespace-separated words (comparable across tokenizers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from leanserve.evals.client import EvalClient

WINDOW_CHARS = 4096  # ~1000 SmolLM2 tokens of English
STRIDE_CHARS = 2048  # so every scored token has >= 2048 characters (~500 tokens) of context


def wikitext2_test_text(data_root: Path) -> str:
    """The raw test split joined the way GPTQ/AWQ-style evaluators join Hugging Face's rows."""
    raw = (data_root / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    rows = [(line + "\n") if line.strip() else "" for line in raw.split("\n")[:-1]]
    return "\n\n".join(rows)


@dataclass(frozen=True)
class Window:
    start: int  # first character sent
    score_from: int  # first character whose tokens count
    end: int  # one past the last character sent and scored


def _cut(text: str, pos: int) -> int:
    """The first whitespace position at or after pos (a cut before it), or the end of the text."""
    if pos >= len(text):
        return len(text)
    while pos < len(text) and not text[pos].isspace():
        pos += 1
    return pos


def windows(text: str, window_chars: int = WINDOW_CHARS, stride_chars: int = STRIDE_CHARS) -> list[Window]:
    """Windows whose scored spans [score_from, end) tile the text exactly."""
    if not 0 < stride_chars <= window_chars:
        raise ValueError("need 0 < stride_chars <= window_chars")
    out = [Window(0, 0, _cut(text, window_chars))]
    while out[-1].end < len(text):
        score_from = out[-1].end
        end = _cut(text, score_from + stride_chars)
        overlap = window_chars - stride_chars
        start = min(score_from, _cut(text, max(0, score_from - overlap))) if overlap else score_from
        out.append(Window(start, score_from, end))
    return out


@dataclass(frozen=True)
class Perplexity:
    token_ppl: float
    word_ppl: float
    nll: float  # total negative log-likelihood, nats
    tokens: int
    words: int
    windows: int
    window_chars: int
    stride_chars: int

    def as_dict(self) -> dict:
        return asdict(self)


def score_window(client: EvalClient, text: str, w: Window) -> tuple[float, int]:
    scored = client.prompt_logprobs(text[w.start:w.end])
    return scored.sum_from(w.score_from - w.start)


def api_perplexity(client: EvalClient, text: str, *, window_chars: int = WINDOW_CHARS,
                   stride_chars: int = STRIDE_CHARS, max_windows: int | None = None) -> Perplexity:
    """Perplexity of `text` (or of its first `max_windows` windows) through the server."""
    ws = windows(text, window_chars, stride_chars)[:max_windows]
    results = client.map(lambda w: score_window(client, text, w), ws, desc="wikitext2 windows")
    total = sum(lp for lp, _ in results)
    tokens = sum(n for _, n in results)
    words = len(text[:ws[-1].end].split())
    return Perplexity(math.exp(-total / tokens), math.exp(-total / words), -total, tokens, words, len(ws),
                      window_chars, stride_chars)
