"""`leanserve recommend`: which profile to serve in a memory budget, from measured results.

The need of each measured profile is what `leanserve fit` plans (weights, activations, runtime) plus the
KV cache of one sequence of the asked context; among those that fit, the lowest measured WikiText-2
perplexity wins (evals/choose.py, the rule of the report's budget table). Unmeasured profiles are never
recommended: the answer comes from the user's own model's results, not from a method's reputation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from leanserve.evals.choose import lowest_ppl_within
from leanserve.evals.report import Row
from leanserve.fit import Plan, format_bytes, sequences_that_fit


@dataclass(frozen=True)
class Candidate:
    row: Row  # the measured profile (its best-measured engine)
    plan: Plan  # what fit plans for it in the budget
    context: int  # sequence length the need is for

    @property
    def kv_bytes(self) -> int:
        return self.context * self.plan.kv_per_token

    @property
    def need(self) -> int:
        """Bytes to serve one sequence of `context` tokens: weights + runtime + activations + its KV cache."""
        p = self.plan
        return p.weights + p.runtime_overhead + p.activations + self.kv_bytes

    @property
    def sequences(self) -> int:
        """Sequences of `context` tokens whose KV caches fit at once (0: it does not fit)."""
        p = self.plan
        if self.context > p.model_max_len:
            return 0
        return sequences_that_fit(p.kv_budget, p.kv_per_token, self.context, p.max_seqs)


def best_rows(rows: list[Row]) -> list[Row]:
    """One row per profile: the one with a perplexity over the most windows (then the lowest)."""
    def windows(r: Row) -> int:
        return int(r.ppl_windows.split()[0]) if r.ppl_windows else 0

    best: dict[str, Row] = {}
    for r in rows:
        if r.ppl is None:
            continue
        old = best.get(r.profile)
        if old is None or (windows(r), -r.ppl) > (windows(old), -old.ppl):
            best[r.profile] = r
    return list(best.values())


def candidates(rows: list[Row], plan_of: Callable[[str], Plan | None], context: int | None) -> list[Candidate]:
    """A candidate per measured profile that `plan_of` can plan (None: a profile unknown here, skipped).
    No context: the model's whole context."""
    out = []
    for row in best_rows(rows):
        plan = plan_of(row.profile)
        if plan is not None:
            out.append(Candidate(row, plan, context or plan.model_max_len))
    return out


def choose(cands: list[Candidate], budget: int) -> Candidate | None:
    fitting = [c for c in cands if c.sequences >= 1]
    return lowest_ppl_within(fitting, budget, lambda c: c.need, lambda c: c.row.ppl)


def commands(c: Candidate, needs_build: bool) -> list[str]:
    serve = f"leanserve serve --profile {c.row.profile} --engine {c.row.engine}" if c.row.engine != "?" else \
        f"leanserve serve --profile {c.row.profile}"
    return ([f"leanserve compress --profile {c.row.profile}"] if needs_build else []) + [serve]


def render(cands: list[Candidate], budget: int, needs_build: Callable[[str], bool]) -> tuple[str, bool]:
    """The answer as text, and whether a profile fits."""
    pick = choose(cands, budget)
    base = next((c.row for c in cands if c.row.profile == "bf16"), None)
    lines = []
    if pick is None:
        smallest = min(cands, key=lambda c: c.need, default=None)
        why = f" (the smallest, {smallest.row.profile}, needs {format_bytes(smallest.need)})" if smallest else ""
        lines.append(f"No measured profile fits {format_bytes(budget)}{why}.")
    else:
        r, p = pick.row, pick.plan
        ratio = f", {r.ppl / base.ppl:.3f}x bf16's" if base and base.ppl else ""
        lines += [
            f"Serve {r.profile}: the lowest measured perplexity that fits {format_bytes(budget)} with "
            f"{pick.context}-token sequences: WikiText-2 {r.ppl:.2f}{ratio} ({r.ppl_windows or '?'} windows, "
            f"{r.engine} engine).",
            f"  weights {format_bytes(p.weights)} ({p.weights_source}) + runtime {format_bytes(p.runtime_overhead)} "
            f"+ activations {format_bytes(p.activations)} + KV {format_bytes(pick.kv_bytes)} for {pick.context} "
            f"tokens = {format_bytes(pick.need)}; {pick.sequences} such sequences at once.",
        ]
        better = [c for c in cands if c.row.ppl is not None and c.row.ppl < r.ppl]
        if better:
            lines.append("  lower perplexity but over the budget: " +
                         ", ".join(f"{c.row.profile} ({c.row.ppl:.2f}) needs {format_bytes(c.need)}" for c in better))
    lines += ["", f"  {'profile':<12} {'ppl':>8} {'needs':>11} {'sequences':>9}"]
    for c in sorted(cands, key=lambda c: c.row.ppl or 0):
        mark = "*" if c is pick else " "
        lines.append(f"{mark} {c.row.profile:<12} {c.row.ppl:>8.2f} {format_bytes(c.need):>11} {c.sequences:>9}")
    if pick is not None:
        lines += ["", *commands(pick, needs_build(pick.row.profile))]
    return "\n".join(lines), pick is not None
