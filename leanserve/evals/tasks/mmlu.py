"""MMLU (Hendrycks et al.): 5-shot from the dev split, the original prompt, letters scored by likelihood."""

from __future__ import annotations

import csv
from pathlib import Path

from leanserve.evals.multiple_choice import Question, format_question


def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:  # csv handles the CRLF files and quoted newlines
        return [row for row in csv.reader(f) if row]


def subject_title(subject: str) -> str:
    return " ".join(subject.split("_"))


def header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject_title(subject)}.\n\n"


def load(data_root: Path, split: str = "test", shots: int = 5) -> list[Question]:
    """Every question of `split`, each prompted with its subject's first `shots` dev exemplars."""
    base = data_root / "mmlu"
    questions = []
    for path in sorted((base / split).glob(f"*_{split}.csv")):
        subject = path.name[: -len(f"_{split}.csv")]
        dev = _rows(base / "dev" / f"{subject}_dev.csv")[:shots]
        prefix = header(subject) + "".join(format_question(r[0], r[1:5], r[5]) for r in dev)
        for i, r in enumerate(_rows(path)):
            questions.append(Question(f"{subject}/{i}", subject, prefix + format_question(r[0], r[1:5]), "ABCD",
                                      r[5].strip()))
    return questions
