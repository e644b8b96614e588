"""The CPU container image, smoke-tested as a runtime would start it: its entrypoint, its environment, as
its user (10001), with a fresh /data volume, over real HTTP with the openai client.

Isolation used here: `podman run` cannot start containers on the team's machines (crun: setrlimit
RLIMIT_NOFILE: Operation not permitted), so the image's root filesystem comes from `podman create` +
`podman mount` and each process enters it with util-linux `unshare --mount` (a private mount namespace:
/data, /proc, /dev and /sys mounted there only) and `chroot --userspec`. The network is the host's (no
network namespace), so the server listens on a free port given through LEANSERVE_PORT. Needs root,
podman and an image built by `make image` (LEANSERVE_IMAGE names another). Selected only by `-m image`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from openai import OpenAI

from leanserve.evals.runner import free_port
from tests.conftest import MODEL
from tests.servers import Server, follow

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("LEANSERVE_IMAGE", "localhost/leanserve:cpu")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CALIB_LINES = 400  # of wikitext-2 validation: enough text for 8 x 256-token GPTQ samples
SMALL_GPTQ = ["--param", "calib_samples=8", "--param", "calib_seq_len=256"]


@dataclass(frozen=True)
class ImageConfig:
    """What a runtime takes from the image to start it."""

    env: list[str]
    entrypoint: list[str]
    user: str
    workdir: str
    healthcheck: list[str]


def inspect(image: str) -> ImageConfig:
    r = subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True)
    assert r.returncode == 0, f"no image {image} ({r.stderr.strip()}): build it with `make image`"
    info = json.loads(r.stdout)[0]
    cfg = info["Config"]
    health = info.get("Healthcheck") or cfg.get("Healthcheck") or {}  # podman puts it beside Config
    return ImageConfig(cfg.get("Env", []), cfg.get("Entrypoint", []), cfg.get("User", ""), cfg.get("WorkingDir", "/"),
                       health.get("Test", []))


@dataclass(frozen=True)
class Container:
    """A mounted image root with a /data volume; `command(argv)` runs argv in it as the image's user."""

    root: Path
    data: Path
    config: ImageConfig

    def ids(self) -> tuple[int, int, str]:
        """(uid, gid, home) of the image's USER, from the image's own /etc/passwd, as a runtime resolves it."""
        for line in (self.root / "etc/passwd").read_text().splitlines():
            name, _, uid, gid, _, home, _ = line.split(":")
            if self.config.user in (name, uid):
                return int(uid), int(gid), home
        raise AssertionError(f"USER {self.config.user!r} is not in the image's /etc/passwd")

    def command(self, argv: list[str], **env: str) -> list[str]:
        uid, gid, home = self.ids()
        variables = [*self.config.env, f"HOME={home}", *(f"{k}={v}" for k, v in env.items())]
        mounts = ('mount --bind "$1" "$2/data" && mount -t proc proc "$2/proc" && mount --rbind /dev "$2/dev" '
                  '&& mount --rbind /sys "$2/sys" && shift 2 && exec "$@"')
        inside = ["/usr/bin/env", "-i", *variables, "/bin/sh", "-c", 'cd "$0" && exec "$@"', self.config.workdir, *argv]
        return ["unshare", "--mount", "sh", "-c", mounts, "sh", str(self.data), str(self.root),
                "chroot", f"--userspec={uid}:{gid}", "--groups=", str(self.root), *inside]

    def run(self, argv: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, **env), capture_output=True, text=True, timeout=timeout)

    def serve(self, **env: str) -> Server:
        """The image's ENTRYPOINT, as `docker run IMAGE` starts it; ready once it logs so."""
        port = free_port()
        cmd = self.command(self.config.entrypoint, LEANSERVE_PORT=str(port), **env)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return follow(Server(proc, port, "transformers", env.get("LEANSERVE_PROFILE", "image default")))


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Iterator[Container]:
    assert os.geteuid() == 0 and shutil.which("podman") and shutil.which("unshare"), \
        "the image tier needs root, podman and util-linux unshare (see docs/docker.md)"
    config = inspect(IMAGE)
    cid = subprocess.run(["podman", "create", IMAGE], capture_output=True, text=True, check=True).stdout.strip()
    try:
        root = Path(subprocess.run(["podman", "mount", cid], capture_output=True, text=True, check=True).stdout.strip())
        volume = tmp_path_factory.mktemp("image-data")  # a fresh /data, as a new named volume would be
        valid = (data / "wikitext-2" / "wiki.valid.tokens").read_text().splitlines()
        (volume / "calib.txt").write_text("\n".join(line for line in valid if line.strip())[:200_000])
        os.chmod(volume, 0o755)
        c = Container(root, volume, config)
        uid, gid, _ = c.ids()
        for path in (volume, volume / "calib.txt"):
            os.chown(path, uid, gid)
        yield c
    finally:
        subprocess.run(["podman", "umount", cid], capture_output=True)
        subprocess.run(["podman", "rm", "-f", cid], capture_output=True)


def ask_france(server: Server, api_key: str = "unused") -> str:
    client = OpenAI(base_url=f"{server.base_url}/v1", api_key=api_key, max_retries=0, timeout=300)
    r = client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=16, temperature=0)
    return r.choices[0].message.content or ""


def test_image_first_start_pulls_into_data_serves_as_its_user_and_passes_its_healthcheck(container: Container) -> None:
    assert container.config.user == "10001" and container.config.healthcheck[:1] == ["CMD"]
    assert not (container.data / "models").exists()  # fresh: the first start must pull the model itself
    server = container.serve()
    try:
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200
        assert ask_france(server).strip() == "The capital of France is Paris."
        uids, gids = psutil.Process(server.proc.pid).uids(), psutil.Process(server.proc.pid).gids()
        assert uids.real == uids.effective == 10001 and gids.effective != 0, (uids, gids)
        model = container.data / "models" / MODEL
        assert (model / "config.json").is_file() and any(model.glob("*.safetensors")), list(container.data.rglob("*"))
        assert (model / "config.json").stat().st_uid == 10001
        health = container.run(container.config.healthcheck[1:], timeout=30, LEANSERVE_PORT=str(server.port))
        assert health.returncode == 0, health.stdout + health.stderr
    finally:
        server.stop()
    # The same check against a port nobody serves fails: its exit 0 above meant something.
    down = container.run(container.config.healthcheck[1:], timeout=30, LEANSERVE_PORT=str(server.port))
    assert down.returncode != 0


def compose_env(service: str, **given: str) -> dict[str, str]:
    """A compose.yaml service's environment as `docker compose up` gives it: ${NAME:-default} takes `given`
    (the user's shell or .env) or else the default."""
    env = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][service]["environment"]

    def value(m: re.Match) -> str:
        return given.get(m.group(1), m.group(2))

    return {k: re.sub(r"\$\{(\w+):-([^}]*)\}", value, str(v)) for k, v in env.items()}


def test_image_builds_gptq4_into_data_and_serves_it_as_compose_does(container: Container) -> None:
    # `docker run --rm -v leanserve:/data --entrypoint leanserve IMAGE compress ...` (docs/docker.md)
    job = container.run(["leanserve", "compress", "--profile", "gptq-4", "--calib", "/data/calib.txt", *SMALL_GPTQ],
                        timeout=1800, OMP_NUM_THREADS="1", COLUMNS="200")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    artifact = container.data / "artifacts" / MODEL / "gptq-4"
    assert (artifact / "manifest.json").is_file(), job.stdout[-2000:]
    # `LEANSERVE_PROFILE=gptq-4 LEANSERVE_API_KEY=secret docker compose --profile cpu up leanserve-cpu prometheus`
    env = compose_env("leanserve-cpu", LEANSERVE_PROFILE="gptq-4", LEANSERVE_API_KEY="secret")
    server = container.serve(**env)
    try:
        assert "ready: profile=gptq-4 engine=transformers" in server.log_text(), server.log_text()
        assert "Paris" in ask_france(server, "secret")
        assert httpx.get(f"{server.base_url}/v1/models", timeout=10).status_code == 401
        scrape = httpx.get(f"{server.base_url}/metrics", timeout=10)  # as deploy/prometheus.yml scrapes: no key
        assert scrape.status_code == 200 and 'profile="gptq-4"' in scrape.text, scrape.text[:500]
    finally:
        server.stop()


def test_image_builds_q4_k_m_and_serves_it_on_its_portable_llama_cpp(container: Container) -> None:
    # The gguf job (convert, importance matrix from the calibration text, quantize) and the llamacpp
    # engine, both on the llama.cpp built for runtime CPU dispatch: the log names the kernel module that
    # ggml chose for this CPU, never "native" (kernels compiled for the build machine's CPU only).
    job = container.run(["leanserve", "compress", "--profile", "q4_k_m", "--calib", "/data/calib.txt"],
                        timeout=1800, COLUMNS="200")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert any((container.data / "artifacts" / MODEL / "q4_k_m").glob("*.gguf")), job.stdout[-2000:]
    server = container.serve(LEANSERVE_PROFILE="q4_k_m")
    try:
        log = server.log_text()
        assert "ready: profile=q4_k_m engine=llamacpp" in log, log
        kernels = re.search(r"CPU kernels: (\S+)", log)
        assert kernels and kernels.group(1) not in ("native", "unknown"), log
        assert "Paris" in ask_france(server)
    finally:
        server.stop()


def test_image_picks_an_engine_for_every_builtin_profile(container: Container) -> None:
    # docs/docker.md's table: with LEANSERVE_ENGINE=auto, GGUF profiles on llamacpp, the rest on transformers.
    code = ("from pathlib import Path; from leanserve.engines import choose_engine; "
            "from leanserve.profiles.registry import load_profiles; "
            "[print(n, choose_engine('auto', s, 'cpu').name) for n, s in sorted(load_profiles(Path('/data')).items())]")
    run = container.run(["python", "-c", code], timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    chosen = dict(line.split() for line in run.stdout.splitlines())
    gguf = {"q8_0", "q4_k_m", "q5_k_m"}
    assert gguf < set(chosen) and len(chosen) >= 13, chosen
    assert {n for n, e in chosen.items() if e == "llamacpp"} == gguf
    assert {e for n, e in chosen.items() if n not in gguf} == {"transformers"}, chosen
