"""Which profile to pick: the lowest perplexity among those that fit a memory budget.

Shared by the report's budget table (budget = each profile's size) and `leanserve recommend` (budget =
the user's memory, need = what `fit` plans); generic over what is compared, so both use one rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
Measure = Callable[[T], "float | None"]


def lowest_ppl_within(items: Sequence[T], budget: float, need: Measure, ppl: Measure) -> T | None:
    """The item of lowest perplexity whose need is at most `budget` (ties: the smaller need, then the first).
    Items without a need or a perplexity are never chosen: unmeasured is not a recommendation."""
    fitting = [x for x in items if need(x) is not None and ppl(x) is not None and need(x) <= budget]
    return min(fitting, key=lambda x: (ppl(x), need(x)), default=None)


def budget_front(items: Sequence[T], need: Measure, ppl: Measure) -> list[tuple[float, T]]:
    """For each distinct need among the items, ascending, the item `lowest_ppl_within` that budget picks.
    The distinct picks are the Pareto front on (need, perplexity)."""
    budgets = sorted({n for x in items if (n := need(x)) is not None and ppl(x) is not None})
    return [(b, pick) for b in budgets if (pick := lowest_ppl_within(items, b, need, ppl)) is not None]
