"""The docs' runnable examples, run against a real server on the default model, and the metrics page
against a real /metrics scrape: an example that breaks, or a series that appears or goes, fails here."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.docs import ROOT, Block, blocks, doc_files, first_column

pytestmark = pytest.mark.server

RUNNABLE = [b for path in doc_files() for b in blocks(path) if b.runnable]
EXAMPLE_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def open_server(pool):  # noqa: ANN001, ANN201
    """The examples are written for a server without a key (`--api-key ""` clears the test key)."""
    return pool.get("transformers", "bf16", "--api-key", "")


def _run(block: Block, port: int) -> subprocess.CompletedProcess[str]:
    code = block.code.replace("localhost:8000", f"127.0.0.1:{port}")
    cmd = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S, cwd=ROOT)


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.path.name}-{i}" for i, b in enumerate(RUNNABLE)])
def test_example_runs(block: Block, open_server) -> None:  # noqa: ANN001
    result = _run(block, open_server.port)
    assert result.returncode == 0, f"{block.path.name} example failed:\n{block.code}\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{block.path.name} example printed nothing:\n{block.code}"
    if "stream=True" in block.code:  # the streamed text, never a None for a chunk without content
        assert "None" not in result.stdout and "tokens]" in result.stdout, result.stdout


def test_metrics_page_lists_every_series_a_scrape_shows(open_server) -> None:  # noqa: ANN001
    text = (ROOT / "docs/metrics.md").read_text()
    documented = set(first_column("Every family, as a scrape names it", text))
    kinds = set(first_column("`leanserve_memory_bytes` kinds", text))
    scrape = httpx.get(f"{open_server.base_url}/metrics", timeout=30).text
    families = {n for n in re.findall(r"^# TYPE (\S+) ", scrape, flags=re.M) if not n.endswith("_created")}
    assert families == documented, (sorted(families - documented), sorted(documented - families))
    seen_kinds = set(re.findall(r'leanserve_memory_bytes\{[^}]*kind="(\w+)"', scrape))
    assert seen_kinds and seen_kinds <= kinds, seen_kinds - kinds
