"""The team's GPU targets (issue 15), judged on one run's results; pure, so the dry run tests it.

`results` maps a step name to what that step measured (benchmarks/gpu/steps.py writes them). A goal
whose inputs are missing (its step failed, timed out, or was skipped) is `passed: None`, never a pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

GiB = 1 << 30
HTTP_OVER_DIRECT_MIN = 0.95
W4A16_OVER_BF16_MIN = 1.8
TTFT_P50_MAX_S = 0.050
FIT_KV_TOLERANCE = 0.15
VRAM_BUDGET_BYTES = 8 * GiB
GREEDY_TOKENS = 32


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    value: float | None
    passed: bool | None  # None: not measured
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dig(tree: Any, *keys: str) -> Any:
    """tree[k1][k2]... or None where any level is missing."""
    for key in keys:
        if not isinstance(tree, dict) or tree.get(key) is None:
            return None
        tree = tree[key]
    return tree


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def _at_least(name: str, target: str, value: float | None, minimum: float, detail: str) -> Goal:
    return Goal(name, target, value, None if value is None else value >= minimum, detail)


def http_over_direct(results: dict[str, Any], streams: int) -> Goal:
    http = dig(results, "leanserve-bf16", "speed", str(streams), "tokens_per_s")
    direct = dig(results, "direct-bf16", "speed", str(streams), "tokens_per_s")
    return _at_least(f"http_over_direct_{streams}", f">= {HTTP_OVER_DIRECT_MIN}x", ratio(http, direct),
                     HTTP_OVER_DIRECT_MIN, f"leanserve HTTP {_f(http)} tok/s vs vLLM direct {_f(direct)} tok/s, "
                     f"{streams} stream(s), bf16")


def w4a16_over_bf16(results: dict[str, Any]) -> Goal:
    quant = dig(results, "leanserve-gptq4", "speed", "1", "tokens_per_s")
    bf16 = dig(results, "leanserve-bf16", "speed", "1", "tokens_per_s")
    return _at_least("w4a16_over_bf16_1", f">= {W4A16_OVER_BF16_MIN}x", ratio(quant, bf16), W4A16_OVER_BF16_MIN,
                     f"gptq-4 (W4A16) {_f(quant)} tok/s vs bf16 {_f(bf16)} tok/s, 1 stream, through leanserve")


def ttft_p50(results: dict[str, Any]) -> Goal:
    p50 = dig(results, "leanserve-bf16", "ttft", "p50_s")
    tokens = dig(results, "leanserve-bf16", "ttft", "prompt_tokens")
    return Goal("ttft_p50_512", f"<= {TTFT_P50_MAX_S * 1000:.0f} ms", p50, None if p50 is None else p50 <= TTFT_P50_MAX_S,
                f"leanserve bf16, {tokens} prompt tokens, one request at a time; p50 {_ms(p50)}")


def fit_kv(results: dict[str, Any]) -> Goal:
    predicted = dig(results, "fit", "shape", "kv_tokens")
    allocated = dig(results, "leanserve-gptq4", "vllm", "kv_tokens")
    r = ratio(predicted, allocated)
    return Goal("fit_kv_within_15pct", f"within {FIT_KV_TOLERANCE:.0%}", r,
                None if r is None else abs(r - 1) <= FIT_KV_TOLERANCE,
                f"`leanserve fit --model shape:llama-7b --profile gptq-4 --vram 8GiB` predicts {_n(predicted)} KV "
                f"tokens; vLLM allocated {_n(allocated)} under `serve --vram-budget 8GiB`")


def vram_budget(results: dict[str, Any]) -> Goal:
    """NVML's device-wide peak (the larger of leanserve's own metric and this run's 0.1 s sampling) over the
    baseline before the server started, against the budget plus one CUDA context."""
    nvml = dig(results, "leanserve-gptq4", "nvml") or {}
    metric = dig(results, "leanserve-gptq4", "metrics_peak_bytes", "gpu_nvml_used")
    peaks = [p for p in (nvml.get("peak_bytes"), metric) if p is not None]
    context = dig(results, "build", "cuda_context_bytes") or 0
    if not peaks:
        return Goal("vram_budget_8gib", "<= 8 GiB + CUDA context", None, None, "no NVML reading")
    used = max(peaks) - (nvml.get("baseline_bytes") or 0)
    limit = VRAM_BUDGET_BYTES + context
    return Goal("vram_budget_8gib", "<= 8 GiB + CUDA context", used, used <= limit,
                f"NVML peak {used / GiB:.2f} GiB above the idle baseline; limit {limit / GiB:.2f} GiB "
                f"(8 GiB + a {context / GiB:.2f} GiB context)")


def greedy_equal(results: dict[str, Any]) -> Goal:
    http = dig(results, "leanserve-bf16", "greedy", "ids")
    direct = dig(results, "direct-bf16", "greedy", "ids")
    if http is None or direct is None:
        return Goal("greedy_first_32_equal", "equal", None, None, "not measured")
    n = min(GREEDY_TOKENS, len(http), len(direct))
    same = next((i for i, (a, b) in enumerate(zip(http[:n], direct[:n])) if a != b), n)
    return Goal("greedy_first_32_equal", "equal", float(same), same == GREEDY_TOKENS,
                f"the first {same} of {GREEDY_TOKENS} non-special greedy tokens equal "
                f"(leanserve gave {len(http)}, vLLM direct {len(direct)})")


def evaluate(results: dict[str, Any]) -> list[Goal]:
    return [http_over_direct(results, 1), http_over_direct(results, 64), w4a16_over_bf16(results), ttft_p50(results),
            fit_kv(results), vram_budget(results), greedy_equal(results)]


# --- the markdown -------------------------------------------------------------------------------------------------
def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _n(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def _value(g: Goal) -> str:
    if g.value is None:
        return "-"
    if g.name.startswith("ttft"):
        return _ms(g.value)
    if g.name.startswith("vram"):
        return f"{g.value / GiB:.2f} GiB"
    if g.name.startswith("greedy"):
        return f"{g.value:.0f} tokens"
    return f"{g.value:.2f}x"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "not measured"}[passed]


ROWS = (("leanserve-bf16", "leanserve HTTP", "bf16"), ("direct-bf16", "vLLM direct", "bf16"),
        ("leanserve-gptq4", "leanserve HTTP, --vram-budget 8GiB", "gptq-4 (W4A16)"))


def markdown(payload: dict[str, Any]) -> str:
    """The measurements and the goals as two tables (what goes in docs/benchmarks.md)."""
    results, goals = payload["results"], [Goal(**g) for g in payload["goals"]]
    lines = [f"GPU run: {payload['device']}, {payload['date']}{' (DRY RUN: synthetic figures)' if payload['dry_run'] else ''}",
             "", "| engine | profile | streams | tok/s | TTFT (median) | TTFT p50, 512-token prompt | ready in |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for step, engine, profile in ROWS:
        res = results.get(step) or {}
        for streams, s in sorted((res.get("speed") or {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {engine} | {profile} | {streams} | {_f(s.get('tokens_per_s'))} | {_ms(s.get('ttft_s'))} | "
                         f"{_ms(dig(res, 'ttft', 'p50_s'))} | {_f(res.get('ready_s'))} s |")
    lines += ["", "| goal | target | measured | result |", "|---|---|---:|---|"]
    lines += [f"| {g.name} | {g.target} | {_value(g)} | {_verdict(g.passed)} |" for g in goals]
    lines += ["", *[f"- {g.name}: {g.detail}" for g in goals]]
    steps = payload.get("steps", {})
    lines += ["", "| step | status | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {s['status']} | {_f(s.get('seconds'))} |" for name, s in steps.items()]
    return "\n".join(lines) + "\n"
