"""Which examples a `--limit` / `--fraction` run scores: the same rule for every suite.

Per group (MMLU subject, BBH task, ...): a seeded random `fraction` of it, rounded up so every group
keeps at least one example, then at most its first `limit`. Seeding by "<seed>:<group>" makes a
group's pick independent of which other groups are loaded.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def pick(items: Sequence[T], *, group: Callable[[T], str], limit: int | None, fraction: float | None,
         seed: int) -> list[T]:
    """The examples to score, groups in name order, each group's examples in file order unless sampled."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[group(item)].append(item)
    out: list[T] = []
    for name in sorted(groups):
        chosen = groups[name]
        if fraction is not None:
            chosen = random.Random(f"{seed}:{name}").sample(chosen, max(1, math.ceil(len(chosen) * fraction)))
        if limit is not None:
            chosen = chosen[:limit]
        out.extend(chosen)
    return out
