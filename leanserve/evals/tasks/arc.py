"""ARC-Challenge: the test split as lettered multiple choice, few-shot from the train split."""

from __future__ import annotations

import json
from pathlib import Path

from leanserve.evals.multiple_choice import LETTERS, Question, format_question


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _gold_letter(rec: dict) -> str:
    """Some questions label choices 1-4; map them (and the key) to letters by position."""
    labels = [c["label"] for c in rec["question"]["choices"]]
    return LETTERS[labels.index(rec["answerKey"])]


def load(data_root: Path, shots: int = 5) -> list[Question]:
    base = data_root / "arc-challenge"
    train = _records(base / "ARC-Challenge-Train.jsonl")[:shots]
    prefix = "The following are multiple choice science questions (with answers).\n\n" + "".join(
        format_question(r["question"]["stem"], [c["text"] for c in r["question"]["choices"]], _gold_letter(r))
        for r in train)
    out = []
    for r in _records(base / "ARC-Challenge-Test.jsonl"):
        choices = [c["text"] for c in r["question"]["choices"]]
        out.append(Question(r["id"], "arc-challenge", prefix + format_question(r["question"]["stem"], choices),
                            LETTERS[: len(choices)], _gold_letter(r)))
    return out
