"""WikiText-2 perplexity through `/v1/completions` (echo=true, logprobs, max_tokens=0), HTTP only.

The test text is cut at line boundaries into chunks of about `chunk_chars` characters; each chunk is
scored on its own (its first token has no context and is not counted). Token-level perplexity is
exp(-sum logprob / scored tokens); word-level divides by the chunk's whitespace-separated words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import httpx


def wikitext2_test_text(data_root: Path) -> str:
    """The raw test split joined the way GPTQ/AWQ-style evaluators join Hugging Face's rows."""
    raw = (data_root / "wikitext-2" / "wiki.test.raw").read_text(encoding="utf-8")
    rows = [(line + "\n") if line.strip() else "" for line in raw.split("\n")[:-1]]
    return "\n\n".join(rows)


def chunks(text: str, chunk_chars: int) -> list[str]:
    """Consecutive pieces of about chunk_chars characters, cut after a newline."""
    out, start = [], 0
    while start < len(text):
        end = text.find("\n", min(start + chunk_chars, len(text)))
        end = len(text) if end < 0 else end + 1
        piece = text[start:end]
        if piece.strip():
            out.append(piece)
        start = end
    return out


@dataclass(frozen=True)
class Perplexity:
    token_ppl: float
    word_ppl: float
    tokens: int
    words: int
    chunks: int


def api_perplexity(base_url: str, model: str, text: str, *, chunk_chars: int = 2000, max_chunks: int | None = None,
                   api_key: str | None = None, timeout: float = 600) -> Perplexity:
    pieces = chunks(text, chunk_chars)[:max_chunks]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    total_lp, tokens, words = 0.0, 0, 0
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout) as client:
        for piece in pieces:
            r = client.post("/v1/completions", json={"model": model, "prompt": piece, "max_tokens": 0, "echo": True,
                                                     "logprobs": 0, "temperature": 0})
            r.raise_for_status()
            scored = [x for x in r.json()["choices"][0]["logprobs"]["token_logprobs"] if x is not None]
            total_lp += sum(scored)
            tokens += len(scored)
            words += len(piece.split())
    return Perplexity(math.exp(-total_lp / tokens), math.exp(-total_lp / words), tokens, words, len(pieces))
