"""Helpers the test modules share (a test module never imports another test module).

- `scrape` / `one`: a server's /metrics, parsed by Prometheus' own parser;
- `wait_until`: the one way to wait for a state the server reaches on its own (a gauge back to zero,
  /health turning 503): poll at an interval, up to a deadline, then fail naming what never happened;
- `shared_data`: the shared eval data folder, or a failure that says where it was looked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from leanserve.paths import data_root
from tests.servers import API_KEY, Server

T = TypeVar("T")
POLL_INTERVAL_S = 0.05  # between checks: keeps a poll from taking a core on the 2-core CI machine


def scrape(server: Server) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}"""
    text = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    """The single sample of `name` whose labels include `labels` (fails when there are none or several)."""
    matches = [v for k, v in samples[name].items() if set(labels.items()) <= set(k)]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


def wait_until(check: Callable[[], T], *, what: str, deadline_s: float, interval_s: float = POLL_INTERVAL_S) -> T:
    """Call `check` every `interval_s` until it returns something truthy, and return that; after `deadline_s`
    seconds fail with "`what` did not happen". For states only observable by asking the server; the
    interval paces the asking, it does not stand in for an event."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} did not happen within {deadline_s:g} s")
        time.sleep(interval_s)


def shared_data() -> Path:
    """The shared eval data (WikiText-2, MMLU, BBH, ARC, GSM8K): $LEANSERVE_DATA or ../shared/data."""
    root = data_root()
    if root is None:
        repo = Path(__file__).resolve().parents[1]
        pytest.fail(f"the shared eval data was not found: looked in $LEANSERVE_DATA (unset or not a folder) and "
                    f"{repo.parent / 'shared' / 'data'} (and ../shared/data from the working directory). Set "
                    "LEANSERVE_DATA to the folder that holds wikitext-2/, mmlu/, bbh/, arc-challenge/ and gsm8k/.",
                    pytrace=False)
    return root
