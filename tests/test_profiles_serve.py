"""Runtime-quantized profiles (bitsandbytes nf4 and LLM.int8(), transformers engine) load and answer;
a profile whose artifact is not built fails at startup, naming the command that builds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from tests.conftest import MODEL, ServerPool
from tests.servers import API_KEY
from tests.support import one, scrape

pytestmark = pytest.mark.server


@pytest.mark.parametrize("profile", ["nf4", "int8"])
def test_quantized_profile_answers(pool: ServerPool, profile: str) -> None:
    server = pool.get("transformers", profile)
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       max_tokens=20, temperature=0)
    assert "Paris" in r.choices[0].message.content
    info = one(scrape(server), "leanserve_model_info", profile=profile)
    assert info == 1
    facts = json.loads((pool.home / "results" / MODEL / profile / "load-transformers.json").read_text())
    assert facts["kind"] == "runtime" and facts["engine"] == "transformers"
    assert facts["load_time_s"] > 0 and facts["memory_after_load"]["process_rss"] > 100e6
    assert not (pool.home / "artifacts" / MODEL / profile).exists()  # serve writes nothing into the artifact store


def test_quantized_profiles_use_less_memory_than_bf16(pool: ServerPool) -> None:
    """Loaded weight bytes must drop as bits drop (fp32 > int8 > nf4 on CPU). Not RSS: on CPU, bitsandbytes
    quantizes from a full-precision copy whose freed pages glibc keeps, so RSS after load is noise (seen in CI:
    int8 1.26 GB vs fp32 1.22 GB)."""
    weights = {p: one(scrape(pool.get("transformers", p)), "leanserve_memory_bytes", kind="weights", profile=p)
               for p in ("bf16", "int8", "nf4")}
    assert weights["nf4"] < weights["int8"] < weights["bf16"], weights
    # The tied 49152x576 embedding stays in full precision; the 30 blocks' linears shrink 4x (int8) / 8x (nf4).
    assert weights["int8"] < 0.6 * weights["bf16"] and weights["nf4"] < 0.45 * weights["bf16"], weights


def test_unbuilt_profile_fails_at_startup_with_the_build_command(tmp_path: Path, model_dir: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / model_dir.name).symlink_to(model_dir)  # the base model is there, no artifact
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--profile", "gptq-4", "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "leanserve compress --profile gptq-4" in r.stdout + r.stderr


def test_unknown_profile_fails_at_startup(home: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "serve", "--profile", "q3-magic", "--home", str(home)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown profile 'q3-magic'" in r.stdout + r.stderr


def test_profiles_command_lists_every_profile_with_status(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "leanserve.cli", "profiles", "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("│")}
    built = ("gptq-4", "gptq-8", "awq-4", "autoround-4", "int8-gblm", "pruned", "distilled", "q8_0", "q4_k_m", "q5_k_m")
    assert set(rows) == {"bf16", "nf4", "int8", *built}
    assert "runtime" in rows["nf4"] and "runtime" in rows["bf16"]
    assert all("not built" in rows[p] for p in built)
