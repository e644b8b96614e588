"""Start a real `leanserve serve` in a subprocess and wait until it logs that it is ready.

Readiness is read from the server's own log line ("ready: ..."), not guessed with sleeps; a server
that exits first fails the test with its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from leanserve.evals.runner import free_port

READY_MARK = "leanserve.server.app: ready:"
LISTEN_MARK = "Uvicorn running on"
START_TIMEOUT_S = 600
API_KEY = "test-key"


def engine_python(engine: str) -> str:
    """The interpreter whose environment has the engine: vLLM lives in its own venv."""
    if engine == "vllm":
        path = os.environ.get("LEANSERVE_VLLM_PYTHON")
        if not path:
            raise RuntimeError("LEANSERVE_VLLM_PYTHON is not set; run the tests with `make test` "
                               "(or -m 'not vllm' to leave the vLLM engine out)")
        return path
    return sys.executable


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    engine: str
    profile: str
    log: list[str] = field(default_factory=list)
    listening: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return "".join(self.log[-200:])

    def wait(self, event: threading.Event) -> None:
        """Block until `event` or the process exits (whichever first); fail with the log on exit."""
        waiter = threading.Event()
        for e in (event, self.exited):
            threading.Thread(target=lambda e=e: (e.wait(START_TIMEOUT_S), waiter.set()), daemon=True).start()
        waiter.wait(START_TIMEOUT_S)
        if not event.is_set():
            raise RuntimeError(f"server ({self.engine}/{self.profile}) did not get there:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(engine: str, profile: str, home: Path, *extra: str, wait_ready: bool = True) -> Server:
    port = free_port()
    cmd = [engine_python(engine), "-m", "leanserve.cli", "serve", "--engine", engine, "--profile", profile,
           "--port", str(port), "--home", str(home), "--max-model-len", "1024", "--api-key", API_KEY,
           "--max-body-bytes", "1000000", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return follow(Server(proc, port, engine, profile), wait_ready)


def follow(server: Server, wait_ready: bool = True) -> Server:
    """Read a started server's log (stdout with stderr merged) in a thread that sets its events."""
    proc = server.proc

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.log.append(line)
            if LISTEN_MARK in line:
                server.listening.set()
            if READY_MARK in line:
                server.ready.set()
        proc.wait()
        server.exited.set()

    threading.Thread(target=read, daemon=True).start()
    if wait_ready:
        server.wait(server.ready)
    return server
