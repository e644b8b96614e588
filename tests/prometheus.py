"""Start a real Prometheus (Debian's `prometheus` package) that scrapes a test server.

Readiness and data are polled through Prometheus' HTTP API with a deadline, never waited for by
sleeping a fixed time. The binary is required, not optional: CI installs it (.ci/run).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

INSTALL_HINT = ("the Prometheus scrape test needs the `prometheus` binary: apt-get install -y prometheus "
                "(Debian's package; .ci/run installs it)")


@dataclass
class Prometheus:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; fails on an API error (a bad expression)."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def wait_for(self, what: str, check: Callable[[], Any], timeout_s: float = 90) -> Any:
        """Poll `check` until it returns something truthy; fail with the log after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}")
            try:
                result = check()
            except httpx.HTTPError:
                result = None
            if result:
                return result
            time.sleep(0.2)  # poll interval, not a synchronisation guess
        raise AssertionError(f"prometheus: no {what} within {timeout_s:.0f} s\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_config(path: Path, target: str, bearer: str | None, interval: str = "1s") -> Path:
    auth = f"    authorization:\n      type: Bearer\n      credentials: {bearer}\n" if bearer else ""
    path.write_text(
        f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        f"scrape_configs:\n  - job_name: leanserve\n    metrics_path: /metrics\n{auth}"
        f"    static_configs:\n      - targets: ['{target}']\n")
    return path


def start_prometheus(config: Path, workdir: Path) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError(INSTALL_HINT)
    port = free_port()
    log_path = workdir / "prometheus.log"
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
           f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    prom = Prometheus(proc, port, log_path)
    prom.wait_for("readiness", lambda: httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200)
    return prom
