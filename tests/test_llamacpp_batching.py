"""How the llamacpp engine lays out a step's batch and picks a sequence for a new request: the plain
logic, without llama.cpp (the engine is never loaded; its decode loop state is set by hand). Why these
layouts are faster is measured in benchmarks/llamacpp_batching.py; that the engine's answers are right
when they apply is tested over HTTP in tests/test_llamacpp.py."""

from __future__ import annotations

import asyncio

import pytest

from leanserve.engines import llamacpp
from leanserve.engines.base import EngineConfig, SamplingOptions
from leanserve.profiles.spec import LoadSpec

pytestmark = pytest.mark.unit


def test_a_long_kept_prefix_wins_and_a_few_shared_tokens_do_not() -> None:
    # sequence 6 holds a chat's earlier turns: worth more than keeping the live ids 0-2 in one run
    history = llamacpp.RUN_COST + 1
    assert llamacpp.pick_sequence([3, 6, 7], {0, 1, 2}, {3: 0, 6: history, 7: 0}, [0] * 8) == 6
    # the chat template's first tokens, shared by every chat prompt, are not
    assert llamacpp.pick_sequence([3, 6, 7], {0, 1, 2}, {3: 0, 6: 20, 7: 3}, [0] * 8) == 3
    # with no live sequence to stay next to, any kept prefix decides
    assert llamacpp.pick_sequence([3, 6, 7], set(), {3: 0, 6: 2, 7: 1}, [0] * 8) == 6


def test_among_equal_prefixes_the_live_ids_stay_consecutive() -> None:
    released = [0, 0, 0, 9, 1, 2, 3, 4]  # 3 was released most recently: LRU alone would pick 4
    assert llamacpp.pick_sequence([3, 4, 5, 6, 7], {0, 1, 2}, dict.fromkeys(range(3, 8), 0), released) == 3
    # filling the gap between two runs joins them
    assert llamacpp.pick_sequence([2, 5, 6, 7], {0, 1, 3, 4}, dict.fromkeys([2, 5, 6, 7], 0), [0] * 8) == 2


def test_with_nothing_live_the_longest_released_sequence_is_overwritten() -> None:
    released = [5, 3, 8, 1, 9, 9, 9, 9]
    assert llamacpp.pick_sequence(list(range(8)), set(), dict.fromkeys(range(8), 0), released) == 3
    # a tie on runs next to a live sequence: the older of its two neighbours
    assert llamacpp.pick_sequence([2, 4, 6], {3}, {2: 0, 4: 0, 6: 0}, [0, 0, 7, 0, 2, 0, 0, 0]) == 4


def _engine_with(jobs: dict[int, llamacpp._Job]) -> llamacpp.LlamaCppEngine:
    engine = llamacpp.LlamaCppEngine(EngineConfig(model_path="unused.gguf", load=LoadSpec(), device="cpu",
                                                  dtype="float32"))
    for seq, job in jobs.items():
        job.seq_id = seq
        engine._seqs[seq] = job
    return engine


def _job(prompt_len: int, n_past: int, next_token: int | None) -> llamacpp._Job:
    loop = asyncio.new_event_loop()
    job = llamacpp._Job(prompt=list(range(1000, 1000 + prompt_len)), loop=loop, out=asyncio.Queue(),
                        opts=SamplingOptions(max_tokens=16))
    job.n_past, job.next_token = n_past, next_token
    loop.close()
    return job


def test_a_step_is_sorted_by_sequence_so_a_prompt_chunk_rides_with_the_tokens_around_it() -> None:
    generating = {seq: _job(10, 12, 7 + seq) for seq in (0, 1, 2, 4, 5, 6, 7)}
    prefilling = _job(60, 0, None)
    plan = _engine_with({**generating, 3: prefilling})._plan()
    assert [(job.seq_id, pos) for job, _, pos, _ in plan] == (
        [(0, 12), (1, 12), (2, 12)] + [(3, p) for p in range(60)] + [(s, 12) for s in (4, 5, 6, 7)])
    # each generating sequence decodes its sampled token; only the prompt's last position wants logits
    assert [token for job, token, _, _ in plan if job is not prefilling] == [7 + s for s in (0, 1, 2, 4, 5, 6, 7)]
    assert [pos for job, _, pos, wants in plan if job is prefilling and wants] == [59]


def test_generating_tokens_are_planned_before_prompt_chunks_fill_the_rest_of_n_batch() -> None:
    long_prompt = _job(2000, 0, None)
    plan = _engine_with({0: long_prompt, 5: _job(10, 30, 42)})._plan()
    assert len(plan) == llamacpp.N_BATCH
    assert [(job.seq_id, pos) for job, _, pos, _ in plan][-1] == (5, 30)  # the token is in; the chunk was cut
    assert sum(1 for job, *_ in plan if job is long_prompt) == llamacpp.N_BATCH - 1
