"""GSM8K (Cobbe et al.): grade-school maths, answered with reasoning; the last number is the answer.

Only the test split is here, so the few-shot exemplars are the first `shots` test problems with their
reference solutions (calculator annotations removed), and those problems are left out of the scoring.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from leanserve.evals.sampling import pick

NUMBER_RE = re.compile(r"-?[\d,]*\.?\d+")
CALC_RE = re.compile(r"<<[^>]*>>")
STOP = ["\n\nQuestion:", "\nQuestion:"]


@dataclass(frozen=True)
class Problem:
    id: int
    prompt: str
    target: str


def gold(answer: str) -> str:
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def _solution(answer: str) -> str:
    reasoning, final = answer.rsplit("####", 1)
    return f"{CALC_RE.sub('', reasoning).strip()}\nThe answer is {final.strip()}."


def load(data_root: Path, *, limit: int | None, fraction: float | None, seed: int, shots: int = 4) -> list[Problem]:
    rows = [json.loads(line) for line in (data_root / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    prefix = "".join(f"Question: {r['question']}\nAnswer: {_solution(r['answer'])}\n\n" for r in rows[:shots])
    problems = [Problem(i, f"{prefix}Question: {r['question']}\nAnswer:", gold(r["answer"]))
                for i, r in enumerate(rows) if i >= shots]
    return pick(problems, group=lambda _: "gsm8k", limit=limit, fraction=fraction, seed=seed)


def extract_answer(generation: str) -> str:
    """The number after the last "The answer is", else the last number in the text; '' if none."""
    tail = generation.rsplit("answer is", 1)[1] if "answer is" in generation else generation
    numbers = NUMBER_RE.findall(tail) or NUMBER_RE.findall(generation)
    if not numbers:
        return ""
    n = numbers[0] if "answer is" in generation and NUMBER_RE.findall(tail) else numbers[-1]
    return n.replace(",", "").rstrip(".")


def is_correct(generation: str, target: str) -> bool:
    got = extract_answer(generation)
    try:
        return got != "" and float(got) == float(target)
    except ValueError:
        return False
