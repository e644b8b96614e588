"""RACE-H (Lai et al.): high-school reading comprehension, an article and lettered questions.

No offline copy exists on these machines (../shared/data/README.md, "Not found"), so the loader reads
a local JSONL given with `--race-file` (or $LEANSERVE_RACE_FILE) in one of the two public shapes:
  - Hugging Face `ehovy/race` / `EleutherAI/race` rows: {"article", "question", "options": [..], "answer": "B"}
  - the original RACE files, one per article: {"article", "questions": [..], "options": [[..]], "answers": [..]}
Zero-shot, like lm-evaluation-harness: the article, then the question, then lettered options.
"""

from __future__ import annotations

import json
from pathlib import Path

from leanserve.evals.multiple_choice import LETTERS, Question, format_question


def _rows(rec: dict) -> list[tuple[str, list[str], str]]:
    if "questions" in rec:
        return list(zip(rec["questions"], rec["options"], rec["answers"]))
    return [(rec["question"], rec["options"], rec["answer"])]


def load(path: Path) -> list[Question]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        rec = json.loads(line)
        for k, (question, options, answer) in enumerate(_rows(rec)):
            prompt = f"Article: {rec['article'].strip()}\n\n" + format_question(f"Question: {question}", options)
            out.append(Question(f"{rec.get('example_id', n)}/{k}", "race-h", prompt, LETTERS[: len(options)],
                                answer.strip()))
    return out
