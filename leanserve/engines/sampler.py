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
from leanserve.engines.grammar import Constraint

SLOT_KWARG = "leanserve_slot"
NO_SLOT = -1


def adjust_logits(logits: torch.Tensor, opts: SamplingOptions, prompt_ids: list[int], output_ids: list[int]) -> torch.Tensor:
    """Raw logits [V] after logit_bias and the repetition / presence / frequency penalties (vLLM's
    arithmetic). Returns `logits` itself when nothing applies, else a new tensor."""
    if not opts.adjusts_logits:
        return logits
    logits = logits.clone()
    if opts.logit_bias:
        ids, biases = zip(*opts.logit_bias)
        logits[list(ids)] += torch.tensor(biases, dtype=logits.dtype)
    if opts.repetition_penalty != 1.0 and (prompt_ids or output_ids):
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long)
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / opts.repetition_penalty, values * opts.repetition_penalty)
    if output_ids and (opts.presence_penalty or opts.frequency_penalty):
        counts = torch.bincount(torch.tensor(output_ids, dtype=torch.long), minlength=logits.numel()).to(logits.dtype)
        logits -= opts.frequency_penalty * counts + opts.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def pick_token(logits: torch.Tensor, opts: SamplingOptions, generator: torch.Generator | None) -> int:
    """Choose one token id from logits [V] (already adjusted): argmax at temperature 0, else temperature,
    top-k, top-p and min-p, in vLLM's order."""
    if opts.temperature < 1e-5 or opts.top_p < 1e-5 or opts.top_k == 1:  # greedy; 1e-300 would overflow to NaN
        return int(torch.argmax(logits))
    if 0 < opts.top_k < logits.numel():
        kth = torch.topk(logits, opts.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / opts.temperature, dim=-1)  # [V]
    if opts.min_p > 0.0:
        probs = probs.masked_fill(probs < opts.min_p * probs.max(), 0.0)
    if opts.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= opts.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprob(logprobs: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """The chosen token's logprob and the k most likely alternatives, from raw logprobs [V]."""
    top: list[tuple[int, float]] = []
    if k > 0:
        values, indices = torch.topk(logprobs, k)
        top = list(zip(indices.tolist(), values.tolist()))
    return TokenLogprob(token, float(logprobs[token]), top)


def chunk_logprobs(logits: torch.Tensor, targets: list[int], top_logprobs: int) -> list[TokenLogprob]:
    """Logprob of each target (row i of `logits` [C, V] predicts targets[i]) and the top-k, from one
    chunk's log-softmax: the only [C, V] float32 tensor scoring holds at a time."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    index = torch.tensor(targets, device=logprobs.device).unsqueeze(1)
    chosen = logprobs.gather(1, index).squeeze(1).tolist()
    if top_logprobs <= 0:
        return [TokenLogprob(t, lp, []) for t, lp in zip(targets, chosen)]
    tops = torch.topk(logprobs, top_logprobs, dim=-1)
    return [TokenLogprob(t, lp, list(zip(ti, tv))) for t, lp, ti, tv in
            zip(targets, chosen, tops.indices.tolist(), tops.values.tolist())]


@dataclass
class Slot:
    """One live request's sampling state; `logprobs` grows by one entry per generated token."""

    opts: SamplingOptions
    generator: torch.Generator | None
    prompt_ids: list[int] = field(default_factory=list)  # for repetition_penalty
    output_ids: list[int] = field(default_factory=list)  # what this request has generated so far
    constraint: Constraint | None = None  # structured output: the grammar's state

    def choose(self, raw: torch.Tensor) -> int:
        """The next token from raw logits [V]: bias and penalties, the grammar's mask, then sampling."""
        logits = adjust_logits(raw, self.opts, self.prompt_ids, self.output_ids)
        if self.constraint is not None:
            logits = self.constraint.mask(logits)
        token = pick_token(logits, self.opts, self.generator)
        if self.constraint is not None:
            self.constraint.accept(token)
        self.output_ids.append(token)
        return token
    logprobs: list[TokenLogprob] = field(default_factory=list)


class RequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._slots: dict[int, Slot] = {}
        self._next = 0
        self._lock = threading.Lock()

    def open(self, opts: SamplingOptions, prompt_ids: list[int] | None = None,
             constraint: Constraint | None = None) -> tuple[int, Slot]:
        generator = None
        if opts.seed is not None:
            generator = torch.Generator().manual_seed(opts.seed)
        slot = Slot(opts=opts, generator=generator, prompt_ids=list(prompt_ids or []), constraint=constraint)
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
            token = slot.choose(scores[row])
            chosen[row] = token
            if slot.opts.logprobs is not None:
                slot.logprobs.append(token_logprob(logprobs[row], token, slot.opts.logprobs))
        one_hot = torch.full_like(scores, float("-inf"))
        one_hot.scatter_(1, chosen.to(scores.device).unsqueeze(1), 0.0)
        return one_hot
