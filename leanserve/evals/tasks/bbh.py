"""BIG-Bench Hard (Suzgun et al.): the official 3-shot chain-of-thought prompts, greedy generation,
exact match on the answer after the last "So the answer is" (the exemplars all end that way).

Extraction follows lm-evaluation-harness's `bbh_cot_fewshot` filters: take the text after the last
"the answer is", drop a trailing period; for multiple-choice tasks (targets like "(B)") keep the first
"(X)" in it; compare case- and whitespace-insensitively.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from leanserve.evals.sampling import pick

ANSWER_RE = re.compile(r"the answer is", re.IGNORECASE)
OPTION_RE = re.compile(r"\([A-Z]\)")
STOP = ["\n\nQ:", "\nQ:"]


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    target: str


def cot_prefix(data_root: Path, task: str) -> str:
    """The prompt file minus its canary line and the '-----' separator."""
    text = (data_root / "bbh" / "cot-prompts" / f"{task}.txt").read_text(encoding="utf-8")
    return text.split("-----\n", 1)[1].strip()


def load(data_root: Path, *, limit: int | None, fraction: float | None, seed: int) -> list[Example]:
    """Per task, the first `limit` or a seeded random `fraction` (at least one) of its examples."""
    examples = [(path.stem, e) for path in sorted((data_root / "bbh" / "bbh").glob("*.json"))
                for e in json.loads(path.read_text(encoding="utf-8"))["examples"]]
    chosen = pick(examples, group=lambda te: te[0], limit=limit, fraction=fraction, seed=seed)
    prefixes = {task: cot_prefix(data_root, task) for task in {task for task, _ in chosen}}
    return [Example(task, f"{prefixes[task]}\n\nQ: {e['input']}\nA: Let's think step by step.", e["target"])
            for task, e in chosen]


def extract_answer(generation: str, target: str) -> str:
    """The model's final answer, in the target's form; '' when it gave none."""
    parts = ANSWER_RE.split(generation)
    if len(parts) < 2:
        return ""
    answer = parts[-1].strip()
    answer = answer.splitlines()[0].strip() if answer else ""
    if answer.endswith("."):
        answer = answer[:-1].strip()
    if OPTION_RE.fullmatch(target):
        option = OPTION_RE.search(answer)
        return option.group(0) if option else answer
    return answer


def is_correct(generation: str, target: str) -> bool:
    return " ".join(extract_answer(generation, target).lower().split()) == " ".join(target.lower().split())
