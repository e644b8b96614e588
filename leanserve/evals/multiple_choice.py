"""Multiple-choice questions scored by the log-likelihood of each answer letter (MMLU, ARC, RACE).

The prompt ends in "Answer:"; for each letter L the server scores prompt + " L" and the letter with the
highest log-likelihood is the model's answer (the original MMLU evaluation compares the same letter
probabilities). Accuracy is reported per group (MMLU subject, RACE/ARC split) and as a macro average.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from leanserve.evals.client import EvalClient
from leanserve.evals.sampling import pick

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Question:
    id: str
    group: str  # subject / task: what per-group accuracy is over
    prompt: str  # ends with "Answer:"
    letters: str  # the choices' letters, e.g. "ABCD"
    gold: str


def format_question(question: str, choices: Sequence[str], answer: str | None = None) -> str:
    """MMLU's exemplar format: question, lettered choices, "Answer:" (+ " X" for a solved exemplar)."""
    lines = [question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:" + (f" {answer}\n\n" if answer else "")


def predict(client: EvalClient, q: Question) -> tuple[str, dict[str, float]]:
    """The letter the model finds most likely after the prompt, and every letter's log-likelihood.

    One request reads the top-20 next tokens: " A" is one token, so its logprob there *is* log P(" A" | prompt).
    Letters outside the top 20 are scored exactly with an echo request each (rare after "Answer:")."""
    top = client.next_token_logprobs(q.prompt)
    scores = {letter: top[f" {letter}"] if f" {letter}" in top else client.continuation_logprob(q.prompt, f" {letter}")
              for letter in q.letters}
    return max(scores, key=lambda k: scores[k]), scores


def sample(items: list[Question], *, limit: int | None, fraction: float | None, seed: int) -> list[Question]:
    """Per group, the first `limit` or a seeded random `fraction` (at least one) of its questions."""
    return pick(items, group=lambda q: q.group, limit=limit, fraction=fraction, seed=seed)


def accuracy(questions: Sequence[Question], predictions: Sequence[str]) -> dict:
    """Per-group accuracy, their macro average, and the micro average over all questions."""
    right: dict[str, list[bool]] = defaultdict(list)
    for q, p in zip(questions, predictions):
        right[q.group].append(p == q.gold)
    per_group = {g: sum(v) / len(v) for g, v in sorted(right.items())}
    total = [x for v in right.values() for x in v]
    return {"accuracy": sum(per_group.values()) / len(per_group) if per_group else 0.0,
            "micro_accuracy": sum(total) / len(total) if total else 0.0,
            "n": len(total), "per_group": per_group}


def run(client: EvalClient, questions: list[Question], desc: str) -> dict:
    results = client.map(lambda q: predict(client, q), questions, desc=desc)
    predictions = [p for p, _ in results]
    out = accuracy(questions, predictions)
    out["chance"] = sum(1 / len(q.letters) for q in questions) / len(questions) if questions else 0.0
    return out
