"""The eval suites by name: each reads its data, talks to the server through an EvalClient, and returns
a JSON-able result with one headline `score` (accuracy, or perplexity for wikitext2) and `n`.

One registry, like `compressors.REGISTRY`: adding a suite = one function + one line.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leanserve.errors import LeanserveError
from leanserve.evals import multiple_choice
from leanserve.evals.client import EvalClient
from leanserve.evals.perplexity import STRIDE_CHARS, WINDOW_CHARS, api_perplexity, wikitext2_test_text, windows
from leanserve.evals.tasks import arc, bbh, gsm8k, mmlu, race


class EvalDataMissing(LeanserveError):
    """An eval's data is not on this machine."""


@dataclass(frozen=True)
class SuiteOptions:
    data_root: Path | None
    limit: int | None = None
    fraction: float | None = None
    seed: int = 0
    race_file: Path | None = None
    max_gen_tokens: int = 256
    window_chars: int = WINDOW_CHARS  # WikiText-2 sliding window and stride, in characters
    stride_chars: int = STRIDE_CHARS

    def data(self, name: str) -> Path:
        if self.data_root is None or not (self.data_root / name).exists():
            raise EvalDataMissing(f"eval data '{name}' not found: pass --data DIR (a copy of ../shared/data) "
                                  "or set LEANSERVE_DATA")
        return self.data_root


def wikitext2(client: EvalClient, opt: SuiteOptions) -> dict:
    text = wikitext2_test_text(opt.data("wikitext-2"))
    total = len(windows(text, opt.window_chars, opt.stride_chars))
    n = opt.limit if opt.limit is not None else (max(1, round(total * opt.fraction)) if opt.fraction else None)
    ppl = api_perplexity(client, text, window_chars=opt.window_chars, stride_chars=opt.stride_chars, max_windows=n)
    return {"score": ppl.token_ppl, "metric": "token perplexity (lower is better)", "n": ppl.windows,
            "of": total, **ppl.as_dict()}


def _multiple_choice(name: str, questions: list[multiple_choice.Question], client: EvalClient,
                     opt: SuiteOptions) -> dict:
    chosen = multiple_choice.sample(questions, limit=opt.limit, fraction=opt.fraction, seed=opt.seed)
    result = multiple_choice.run(client, chosen, desc=name)
    return {"score": result["accuracy"], "metric": "accuracy, macro over groups", "of": len(questions), **result}


def mmlu_suite(client: EvalClient, opt: SuiteOptions) -> dict:
    return _multiple_choice("mmlu", mmlu.load(opt.data("mmlu")), client, opt)


def arc_suite(client: EvalClient, opt: SuiteOptions) -> dict:
    return _multiple_choice("arc-challenge", arc.load(opt.data("arc-challenge")), client, opt)


def race_suite(client: EvalClient, opt: SuiteOptions) -> dict:
    path = opt.race_file  # --race-file (the CLI also reads LEANSERVE_RACE_FILE into it)
    if path is None or not path.exists():
        raise EvalDataMissing("RACE-H has no offline copy here: pass --race-file race_high_test.jsonl "
                              "(Hugging Face EleutherAI/race rows, or the original per-article JSON lines)")
    return _multiple_choice("race-h", race.load(path), client, opt)


def _generation(name: str, items: list, is_correct: Callable[[str, str], bool], stop: list[str],
                client: EvalClient, opt: SuiteOptions) -> dict:
    outputs = client.map(lambda e: client.complete(e.prompt, max_tokens=opt.max_gen_tokens, stop=stop), items,
                         desc=name)
    right: dict[str, list[bool]] = defaultdict(list)
    for item, (text, _) in zip(items, outputs):
        right[getattr(item, "task", name)].append(is_correct(text, item.target))
    per_group = {g: sum(v) / len(v) for g, v in sorted(right.items())}
    flat = [x for v in right.values() for x in v]
    return {"score": statistics.fmean(per_group.values()) if per_group else 0.0,
            "metric": "exact match, macro over tasks", "n": len(flat),
            "micro_accuracy": statistics.fmean(flat) if flat else 0.0, "per_group": per_group,
            "generated_tokens": sum(n for _, n in outputs),
            "examples": [{"group": getattr(i, "task", name), "target": i.target, "output": t[:400]}
                         for i, (t, _) in list(zip(items, outputs))[:3]]}


def bbh_suite(client: EvalClient, opt: SuiteOptions) -> dict:
    items = bbh.load(opt.data("bbh"), limit=opt.limit, fraction=opt.fraction, seed=opt.seed)
    return _generation("bbh", items, bbh.is_correct, bbh.STOP, client, opt)


def gsm8k_suite(client: EvalClient, opt: SuiteOptions) -> dict:
    items = gsm8k.load(opt.data("gsm8k"), limit=opt.limit, fraction=opt.fraction, seed=opt.seed)
    return _generation("gsm8k", items, gsm8k.is_correct, gsm8k.STOP, client, opt)


SPEED_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle. " * 4


def speed(client: EvalClient, opt: SuiteOptions, runs: int = 3, tokens: int = 128) -> dict:
    """One stream at a time, as a single user sees it: time to first token and decode tokens/s (medians)."""
    ttfts, rates = [], []
    for _ in range(runs):
        ttft, total, generated = client.timed_stream(SPEED_PROMPT, max_tokens=tokens)
        ttfts.append(ttft)
        rates.append((generated - 1) / (total - ttft) if generated > 1 and total > ttft else 0.0)
    return {"score": statistics.median(rates), "metric": "decode tokens/s, one stream (median)",
            "ttft_s": statistics.median(ttfts), "tokens_per_s": statistics.median(rates), "n": runs,
            "max_tokens": tokens}


SUITES: dict[str, Callable[[EvalClient, SuiteOptions], dict]] = {
    "wikitext2": wikitext2,
    "mmlu": mmlu_suite,
    "bbh": bbh_suite,
    "race-h": race_suite,
    "arc-challenge": arc_suite,
    "gsm8k": gsm8k_suite,
    "speed": speed,
}
DEFAULT_SUITES = ["wikitext2", "mmlu", "bbh", "arc-challenge", "gsm8k", "speed"]
