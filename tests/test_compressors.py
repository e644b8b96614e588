"""Every compressor job on the real default model (small calibration), its artifact served through
the real server and answering, and a quick WikiText-2 perplexity through the API against bf16.

Perplexity bounds are ratios to bf16 on the same engine, on the same 8 test chunks (~4.5k tokens),
with 8 calibration samples of 256 tokens. Measured on 2026-11-25 (CPU, this repo's CI machine type),
see each bound's comment; they leave room for run-to-run noise, not for a broken job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from leanserve import methods
from leanserve.compressors.heal_plot import LOSS_CURVE_PNG
from leanserve.compressors.job import file_hashes
from leanserve.evals.client import EvalClient
from leanserve.evals.perplexity import api_perplexity, wikitext2_test_text
from leanserve.hardware import cpu_has_bf16
from tests.conftest import MODEL
from tests.servers import API_KEY, start_server

pytestmark = pytest.mark.build

SMALL = ["--param", "calib_samples=8", "--param", "calib_seq_len=256"]
BUILDS = {
    "gptq-4": SMALL,
    "gptq-8": SMALL,
    "awq-4": SMALL,
    "autoround-4": [*SMALL, "--param", "iters=4", "--param", "batch_size=4"],
    "int8-gblm": SMALL,
    # healing, kept short: pruned stops on a 12-second time budget, distilled on 16 steps (about 40 s together)
    "pruned": [*SMALL, "--param", "heal_minutes=0.2"],
    "distilled": [*SMALL, "--param", "steps=16"],
}
# perplexity(profile) / perplexity(bf16), upper bounds. Measured 2026-11-25 on 4 chunks, same settings:
# gptq-8 1.004, gptq-4 1.69 (8 x 256 calibration tokens are few for GPTQ's Hessians), awq-4 1.24,
# int8-gblm 2.32 (50% unstructured on a 135M model), pruned 2.12 (25% of MLP channels, no healing; 2.16 after
# 12 s, 2 steps, of it on 2026-12-01). distilled 2026-12-01: 1.43 (4 blocks dropped by block influence on the
# 8 x 256 tokens, 13, 14, 15, 17, then 16 steps; every other block and 16 steps gave 103).
PPL_RATIO_MAX = {
    "gptq-8": 1.03,
    "gptq-4": 2.0,
    "awq-4": 1.45,
    # measured with 4 steps: 2.23 on an AMD EPYC (2026-12-01), 2.68 on an Intel Xeon with AMX (2026-12-06; auto-round
    # tunes under bf16 autocast where the CPU supports it), worse than symmetric round-to-nearest (1.41 in issue 18):
    # not yet understood, so this bound only catches a broken job (the asymmetric build's lost zero points gave 5.5x)
    "autoround-4": 3.5,
    "int8-gblm": 2.7,
    "pruned": 2.5,
    "distilled": 2.0,
}
PPL_CHUNKS = 8


@pytest.fixture(scope="session")
def build_home(tmp_path_factory: pytest.TempPathFactory, home: Path, model_dir: Path) -> Path:
    """A fresh LEANSERVE_HOME (every job really runs) that reuses the pulled base model."""
    h = tmp_path_factory.mktemp("build-home")
    (h / "models").mkdir()
    (h / "models" / model_dir.name).symlink_to(model_dir)
    return h


def compress(home: Path, profile: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "leanserve.cli", "compress", "--profile", profile, "--home", str(home), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="session")
def built(build_home: Path):  # noqa: ANN201
    done: dict[str, Path] = {}

    def get(profile: str) -> Path:
        if profile not in done:
            r = compress(build_home, profile, *BUILDS[profile])
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            done[profile] = build_home / "artifacts" / MODEL / profile
        return done[profile]

    return get


@pytest.fixture(scope="session")
def test_text(data: Path) -> str:
    return wikitext2_test_text(data)


def served_ppl(engine: str, profile: str, home: Path, text: str) -> float:
    server = start_server(engine, profile, home)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
        answer = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0,
                                                messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert answer.choices[0].message.content.strip(), "the model answered nothing"
        with EvalClient(server.base_url, MODEL, api_key=API_KEY) as ev:  # 8 disjoint windows: the bounds' setting
            return api_perplexity(ev, text, window_chars=2048, stride_chars=2048, max_windows=PPL_CHUNKS).token_ppl
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bf16_ppl(build_home: Path, test_text: str) -> dict[str, float]:
    return {"transformers": served_ppl("transformers", "bf16", build_home, test_text)}


@pytest.mark.parametrize("profile", list(BUILDS))
def test_job_builds_a_complete_artifact(built, profile: str) -> None:  # noqa: ANN001
    path = built(profile)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["profile"] == profile and manifest["base_model"] == MODEL
    assert len(manifest["base_model_sha256"]) == 64
    assert manifest["calibration"]["samples"] == 8 and manifest["calibration"]["name"] == "wikitext2-valid"
    # the --param overrides reached the job as its validated Params, next to the method's defaults
    assert (manifest["params"]["calib_samples"], manifest["params"]["calib_seq_len"]) == (8, 256)
    assert set(manifest["params"]) == set(methods.method_module(manifest["spec"]["build"]).Params.model_fields)
    assert manifest["wall_time_s"] > 0 and manifest["peak_memory"]["host_rss_peak"] > 100e6
    assert manifest["libraries"]["torch"].startswith("2.13")
    files = file_hashes(path)
    files.pop("manifest.json")
    assert files == manifest["files"]  # every file recorded, and unchanged
    assert manifest["size_bytes"] == sum((path / f).stat().st_size for f in files)


@pytest.mark.parametrize("profile", list(BUILDS))
def test_artifact_serves_and_keeps_perplexity(built, build_home: Path, bf16_ppl: dict, test_text: str,
                                              profile: str) -> None:  # noqa: ANN001
    built(profile)
    ppl = served_ppl("transformers", profile, build_home, test_text)
    ratio = ppl / bf16_ppl["transformers"]
    print(f"{profile}: ppl {ppl:.2f} vs bf16 {bf16_ppl['transformers']:.2f} = {ratio:.3f}x")
    assert ratio < PPL_RATIO_MAX[profile], (profile, ppl, bf16_ppl)


@pytest.mark.vllm
@pytest.mark.parametrize("profile", ["gptq-4", "awq-4"])
def test_vllm_serves_4bit_with_its_cpu_kernels(built, build_home: Path, profile: str) -> None:  # noqa: ANN001
    built(profile)
    if not cpu_has_bf16():  # vLLM-CPU's WNA16 kernel is bf16-only: leanserve must refuse, saying why
        r = subprocess.run([os.environ["LEANSERVE_VLLM_PYTHON"], "-m", "leanserve.cli", "serve", "--engine", "vllm",
                            "--profile", profile, "--home", str(build_home)], capture_output=True, text=True)
        assert r.returncode == 2 and "AVX512-BF16" in r.stdout + r.stderr
        return
    server = start_server("vllm", profile, build_home)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key=API_KEY, max_retries=0)
        answer = client.chat.completions.create(model=MODEL, max_tokens=24, temperature=0,
                                                messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in answer.choices[0].message.content
        assert "CPUWNA16" in server.log_text() or "WNA16" in server.log_text()  # the real 4-bit kernel ran
    finally:
        server.stop()


def test_structured_pruning_really_shrinks(built) -> None:  # noqa: ANN001
    path = built("pruned")
    manifest = json.loads((path / "manifest.json").read_text())
    config = json.loads((path / "config.json").read_text())
    assert config["intermediate_size"] == manifest["intermediate_size"]["after"] == 1152  # 0.75 x 1536
    removed = 30 * 3 * 576 * (1536 - 1152)  # layers x (gate, up, down) x hidden x channels dropped
    assert manifest["parameters"]["before"] - manifest["parameters"]["after"] == removed
    healing = manifest["healing"]  # healed by default: the 20,000-step cap is far off, the time budget ends it
    assert (healing["stopped"], healing["steps_max"], healing["minutes_max"]) == ("time budget", 20_000, 0.2)
    assert 0.2 <= healing["minutes"] < 2 and healing["steps_run"] == len(manifest["loss_curve"]) >= 1
    assert_loss_curve_png(path, manifest)


def assert_loss_curve_png(path: Path, manifest: dict) -> None:
    """The healing curve is a PNG in the artifact, named in the manifest and hashed with the other files."""
    assert manifest["loss_curve_png"] == LOSS_CURVE_PNG and LOSS_CURVE_PNG in manifest["files"]
    assert (path / LOSS_CURVE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gblm_reaches_the_target_sparsity(built) -> None:  # noqa: ANN001
    manifest = json.loads((built("int8-gblm") / "manifest.json").read_text())
    assert abs(manifest["sparsity_reached"] - 0.5) < 0.01


def test_distillation_lowers_its_loss(built) -> None:  # noqa: ANN001
    path = built("distilled")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["loss_last"] < manifest["loss_first"]
    assert (manifest["healing"]["steps_run"], manifest["healing"]["stopped"]) == (16, "steps")
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 26  # 4 of 30 dropped
    influence, dropped = manifest["block_influence"], manifest["layers_dropped"]
    assert len(influence) == 30 and len(dropped) == 4 and manifest["layer_choice"] == "influence"
    assert max(influence[i] for i in dropped) <= min(b for i, b in enumerate(influence) if i not in dropped)
    assert manifest["layers_kept"] == [i for i in range(30) if i not in dropped]
    print(f"dropped by block influence: {dropped}")
    assert_loss_curve_png(path, manifest)


def test_existing_artifact_is_not_overwritten_without_force(built, build_home: Path) -> None:  # noqa: ANN001
    built("pruned")
    r = compress(build_home, "pruned", *SMALL)
    assert r.returncode == 2 and "--force" in r.stdout + r.stderr


def test_failed_rebuild_leaves_the_old_artifact_and_no_debris(built, build_home: Path, tmp_path: Path) -> None:  # noqa: ANN001
    path = built("pruned")
    before = (path / "manifest.json").read_text()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("too short to calibrate on\n")
    r = compress(build_home, "pruned", "--calib", str(tiny), "--force", *SMALL)
    assert r.returncode == 2 and "tokens" in r.stdout + r.stderr
    assert (path / "manifest.json").read_text() == before
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_runtime_profiles_have_nothing_to_build(build_home: Path) -> None:
    r = compress(build_home, "nf4")
    assert r.returncode == 2 and "leanserve serve --profile nf4" in r.stdout + r.stderr
