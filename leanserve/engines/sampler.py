"""Per-request sampling inside transformers' continuous batching.

transformers' continuous batching samples every request with one global RNG and reports only the
chosen token's logprob after temperature/top-p. The OpenAI API needs per-request seeds, greedy and
sampled requests in one batch, and raw logprobs with top-k alternatives. CB's own extension point, a
`ContinuousBatchingLogitsProcessor`, sees which request each logits row belongs to; this one picks the
token itself and hands CB a one-hot distribution, so CB's multinomial can only return that token.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from transformers.generation.continuous_batching.cb_logits_processors import ContinuousBatchingLogitsProcessor

from leanserve.engines.base import SamplingOptions, TokenLogprob

SLOT_KWARG = "leanserve_slot"
NO_SLOT = -1


def pick_token(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None) -> int:
    """Choose one token id from raw logits [V]: argmax at temperature 0, else temperature + top-p."""
    if opts.temperature < 1e-5 or opts.top_p < 1e-5:  # greedy; 1e-300 would overflow logits to inf/NaN
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / opts.temperature, dim=-1)  # [V]
    if opts.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= opts.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Slot:
    """One live request's sampling state; `logprobs` grows by one entry per generated token."""

    opts: SamplingOptions
    generator: torch.Generator | None
    logprobs: list[TokenLogprob] = field(default_factory=list)


class RequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots: dict[int, Slot] = {}
        self._next = 0
        self._lock = threading.Lock()

    def open(self, opts: SamplingOptions) -> tuple[int, Slot]:
        generator = None
        if opts.seed is not None:
            generator = torch.Generator().manual_seed(opts.seed)
        slot = Slot(opts=opts, generator=generator)
        with self._lock:
            slot_id = self._next
            self._next += 1
            self._slots[slot_id] = slot
        return slot_id, slot

    def close(self, slot_id: int) -> None:
        with self._lock:
            self._slots.pop(slot_id, None)

    # --- ContinuousBatchingLogitsProcessor ---------------------------------------------------------------
    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(NO_SLOT)

    def prepare_tensor_args(self, requests_with_new_token: list) -> torch.Tensor:
        ids = [r.state.logit_processor_kwargs.get(SLOT_KWARG, NO_SLOT) for r in requests_with_new_token]
        return torch.tensor(ids, dtype=torch.int32)

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        # scores: [B, V] raw logits (float32), one row per request that gets a token this step
        logprobs = torch.log_softmax(scores, dim=-1)  # [B, V]
        chosen = torch.empty(scores.size(0), dtype=torch.long)
        for row, slot_id in enumerate(tensor_arg[: scores.size(0)].tolist()):
            slot = self._slots.get(slot_id)
            if slot is None:  # warm-up rows or a request we did not submit: greedy
                chosen[row] = int(torch.argmax(scores[row]))
                continue
            token = pick_token(scores[row], slot.opts, slot.generator)
            chosen[row] = token
            if slot.opts.logprobs is not None:
                top: list[tuple[int, float]] = []
                if slot.opts.logprobs > 0:
                    values, indices = torch.topk(logprobs[row], slot.opts.logprobs)
                    top = list(zip(indices.tolist(), values.tolist()))
                slot.logprobs.append(TokenLogprob(token, float(logprobs[row, token]), top))
        one_hot = torch.full_like(scores, float("-inf"))
        one_hot.scatter_(1, chosen.to(scores.device).unsqueeze(1), 0.0)
        return one_hot
