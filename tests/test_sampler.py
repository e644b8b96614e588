"""Token choice in the transformers engine's per-request sampler (pure functions, small tensors)."""

from __future__ import annotations

import pytest
import torch

from leanserve.engines.base import SamplingOptions
from leanserve.engines.sampler import RequestSampler, adjust_logits, pick_token

pytestmark = pytest.mark.unit


def test_greedy_takes_the_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert pick_token(logits, SamplingOptions(max_tokens=1, temperature=0.0), None) == 1


def test_top_p_keeps_only_the_nucleus() -> None:
    # probabilities ~ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two only
    logits = torch.log(torch.tensor([0.64, 0.24, 0.09, 0.03]))
    opts = SamplingOptions(max_tokens=1, temperature=1.0, top_p=0.7)
    gen = torch.Generator().manual_seed(0)
    seen = {pick_token(logits, opts, gen) for _ in range(300)}
    assert seen == {0, 1}


def test_same_seed_same_tokens() -> None:
    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    opts = SamplingOptions(max_tokens=1, temperature=1.0)
    a = [pick_token(logits, opts, g) for g in [torch.Generator().manual_seed(9)] for _ in range(20)]
    b = [pick_token(logits, opts, g) for g in [torch.Generator().manual_seed(9)] for _ in range(20)]
    assert a == b and len(set(a)) > 1


def test_sampler_returns_one_hot_and_records_raw_logprobs() -> None:
    sampler = RequestSampler()
    greedy_id, greedy = sampler.open(SamplingOptions(max_tokens=1, temperature=0.0, logprobs=2))
    other_id, other = sampler.open(SamplingOptions(max_tokens=1, temperature=0.0))
    scores = torch.tensor([[1.0, 2.0, 0.5], [5.0, 1.0, 0.0]])
    out = sampler(scores, torch.tensor([greedy_id, other_id], dtype=torch.int32))
    assert out[0].argmax() == 1 and out[1].argmax() == 0
    assert torch.isinf(out).sum() == 4  # every other token impossible: CB's multinomial must pick ours
    raw = torch.log_softmax(scores[0], dim=-1)
    (entry,) = greedy.logprobs
    assert entry.token_id == 1 and abs(entry.logprob - float(raw[1])) < 1e-6
    assert [t for t, _ in entry.top] == [1, 0]
    assert other.logprobs == []  # logprobs not asked for


def _opts(**kw: object) -> SamplingOptions:
    return SamplingOptions(max_tokens=1, **kw)  # type: ignore[arg-type]


def test_logit_bias_moves_the_greedy_token() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    opts = _opts(temperature=0.0, logit_bias=((1, -100.0),))
    assert pick_token(adjust_logits(logits, opts, [], []), opts, None) == 2
    assert logits[1] == 3.0  # the raw logits (and so the reported logprobs) are untouched


def test_top_k_one_at_temperature_one_is_greedy_and_top_k_bounds_the_choice() -> None:
    logits = torch.randn(100, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(0)
    assert {pick_token(logits, _opts(temperature=1.0, top_k=1), gen) for _ in range(50)} == {int(logits.argmax())}
    top3 = set(torch.topk(logits, 3).indices.tolist())
    seen = {pick_token(logits, _opts(temperature=2.0, top_k=3), gen) for _ in range(300)}
    assert seen == top3


def test_min_p_drops_the_unlikely_tail() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = torch.Generator().manual_seed(0)
    seen = {pick_token(logits, _opts(temperature=1.0, min_p=0.2), gen) for _ in range(300)}
    assert seen == {0, 1, 2}  # 0.05 < 0.2 x 0.5


def test_penalties_follow_vllms_arithmetic() -> None:
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5])
    rep = adjust_logits(logits, _opts(repetition_penalty=2.0), [0], [1])
    assert rep.tolist() == [1.0, -4.0, 1.0, 0.5]  # seen: positive halved, negative doubled
    pen = adjust_logits(logits, _opts(presence_penalty=0.5, frequency_penalty=0.25), [0], [2, 2, 3])
    assert pen.tolist() == [2.0, -2.0, 1.0 - 0.5 - 0.5, 0.5 - 0.5 - 0.25]  # output tokens only, not the prompt


def test_sampler_applies_penalties_to_what_the_request_generated() -> None:
    sampler = RequestSampler()
    slot_id, slot = sampler.open(_opts(temperature=0.0, presence_penalty=2.0), prompt_ids=[5])
    scores = torch.tensor([[3.0, 2.0, 0.0]])
    first = sampler(scores, torch.tensor([slot_id], dtype=torch.int32)).argmax()
    second = sampler(scores, torch.tensor([slot_id], dtype=torch.int32)).argmax()
    assert (int(first), int(second)) == (0, 1) and slot.output_ids == [0, 1]
