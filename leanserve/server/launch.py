"""From settings to a running server: pick the weights, the engine and the device, then run uvicorn.

Everything that can be wrong before loading (unknown profile, artifact not built, no engine) fails
here, at once, with a message that says what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

import uvicorn

from leanserve import models
from leanserve.engines import RELAUNCHED, EngineChoice, choose_engine, engine_interpreters, resolve_dtype
from leanserve.engines.base import EngineConfig, MemoryBudget
from leanserve.engines.speed import Machine, load_table
from leanserve.errors import EngineUnavailable, ProfileError
from leanserve.hardware import resolve_device
from leanserve.profiles.registry import get_profile
from leanserve.profiles.spec import ProfileSpec
from leanserve.profiles.store import MANIFEST, artifact_dir, dir_size, model_slug, read_manifest
from leanserve.profiles.verify import check_remote_code, check_weight_format, verify_artifact
from leanserve.results import load_facts_path, write_json
from leanserve.server.app import build_app
from leanserve.server.http import with_header_timeout
from leanserve.server.metrics import ServerMetrics
from leanserve.server.state import ServerState
from leanserve.settings import Settings

log = logging.getLogger(__name__)


def weights_dir(settings: Settings, spec: ProfileSpec) -> tuple[Path, str]:
    """(directory the engine loads, base model name) for the settings' model and `spec`.
    Refuses, before anything loads, what is unsafe or not what was built (see profiles/verify.py)."""
    base_name = settings.model or models.DEFAULT_MODEL
    if not spec.needs_artifact:
        path = models.resolve(settings.model, settings.home)
        check_weight_format(path)
        check_remote_code(path, settings.trust_remote_code)
        return path, base_name
    path = artifact_dir(settings.home, base_name, spec.name)
    try:
        manifest = read_manifest(path)
    except ValueError as exc:  # a truncated or hand-edited manifest.json
        raise ProfileError(f"{path / MANIFEST} is unreadable ({exc}); rebuild the artifact with "
                           f"leanserve compress --profile {spec.name} --force", param="profile") from exc
    if manifest is None:  # also a killed job's leftovers: only a complete build has a manifest here
        model_flag = f" --model {settings.model}" if settings.model else ""
        raise ProfileError(
            f"profile {spec.name!r} has no artifact for model {base_name!r} yet (looked in {path}). "
            f"Build it first: leanserve compress --profile {spec.name}{model_flag}",
            param="profile",
        )
    check_weight_format(path)
    check_remote_code(path, settings.trust_remote_code)
    if settings.skip_verify:
        log.warning("--skip-verify: serving %s without checking its files against the manifest", path)
    else:
        verify_artifact(path, manifest)
    return path, base_name


def apply_vram_budget(settings: Settings, spec: ProfileSpec, path: Path, device: str,
                      dtype: str, engine: str | None = None) -> tuple[int | None, MemoryBudget | None]:
    """(max_model_len, budget for the engine) under `--vram-budget`: on a GPU the context is capped to the
    longest sequence whose KV cache fits, and nothing fitting stops the start with the planner's reason;
    on a CPU the plan is only logged (host memory is not what the budget is about). The llamacpp engine on a
    GPU gets the budget as it is: it splits the layers itself (leanserve.fit.split_layers), so a model larger
    than the budget still serves, with the rest on the CPU."""
    if settings.vram_budget is None:
        return settings.max_model_len, None
    from leanserve import fit

    if engine == "llamacpp" and device == "cuda":
        from leanserve.engines.llamacpp import N_BATCH, SEQUENCES

        return settings.max_model_len, MemoryBudget(settings.vram_budget, N_BATCH, SEQUENCES)

    shape = fit.ModelShape.from_config(fit.read_config(path / "config.json"), settings.model or models.DEFAULT_MODEL)
    weights = fit.artifact_weights(path) if spec.needs_artifact else None
    plan = fit.plan(shape, spec, settings.vram_budget, weights=weights, context=settings.max_model_len,
                    dtype="float32" if dtype == "float32" else "bfloat16")
    if device != "cuda":
        log.info("--vram-budget is informational on %s (nothing capped); on a GPU it would plan:\n%s",
                 device, fit.render(plan))
        return settings.max_model_len, None
    if not plan.fits:
        raise ProfileError(f"--vram-budget {fit.format_bytes(settings.vram_budget)}: nothing fits: {plan.reason()}",
                           param="vram_budget")
    max_len = min(settings.max_model_len or plan.max_len, plan.max_len)
    if settings.max_model_len and settings.max_model_len > max_len:
        log.warning("--max-model-len %d does not fit the VRAM budget; capped to %d", settings.max_model_len, max_len)
    log.info("VRAM plan (max_model_len %d):\n%s", max_len, fit.render(plan))
    return max_len, MemoryBudget(settings.vram_budget, plan.max_batched_tokens, plan.max_seqs)


def served_as_gguf(spec: ProfileSpec, path: Path) -> ProfileSpec:
    """`--model FILE.gguf`: the file is served as it is (by an engine that loads GGUF), under the
    profile that changes nothing (bf16); a profile that would build or quantize it is refused."""
    if not (path.is_file() and path.suffix == ".gguf"):
        return spec
    if spec.needs_artifact or spec.load_quant is not None:
        raise ProfileError(f"--model {path.name} is a GGUF file, served as it is: use --profile bf16 (the default), "
                           f"not {spec.name!r}", param="profile")
    return spec.model_copy(update={"format": "gguf", "engine": spec.engine.model_copy(update={"prefer": ["llamacpp"]})})


def weights_bytes(path: Path) -> int:
    """Bytes of the weight files served (a .gguf file, or an artifact's weight files)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in [*path.glob("*.safetensors"), *path.glob("*.gguf")]) or dir_size(path)


def prepare(settings: Settings) -> tuple[ServerState, EngineConfig]:
    spec = get_profile(settings.profile, settings.home)  # resolved once per start; everything below gets it
    path, base_name = weights_dir(settings, spec)
    spec = served_as_gguf(spec, path)
    device = resolve_device(settings.device)
    choice = choose_engine(settings.engine, spec, device, dtype=settings.dtype, table=load_table(),
                           machine=Machine.here(device), elsewhere=engine_interpreters())
    if settings.flash_attn and choice.name != "llamacpp":
        raise EngineUnavailable(f"--flash-attn is a llamacpp setting, and profile {spec.name} is served by "
                                f"{choice.name} ({choice.reason}); drop the flag, or serve a GGUF profile with "
                                "--engine llamacpp", param="flash_attn")
    if choice.python:
        relaunch(choice)
    if os.environ.get(RELAUNCHED):
        choice = dataclasses.replace(choice, reason=f"{choice.reason}; serve moved to {sys.executable}, "
                                                    f"the environment that has {choice.name}")
    dtype = resolve_dtype(choice.name, spec, device, settings.dtype)
    served = settings.served_model_name or model_slug(base_name)
    metrics = ServerMetrics(spec.name, served)
    metrics.describe_model(method=spec.method, bits=spec.bits, engine=choice.name, base_model=base_name,
                           artifact_bytes=weights_bytes(path))
    state = ServerState(settings=settings, spec=spec, served_model=served, base_model=base_name, metrics=metrics,
                        engine_name=choice.name, engine_reason=choice.reason, created=int(time.time()))
    max_model_len, budget = apply_vram_budget(settings, spec, path, device, dtype, choice.name)
    if budget is not None and choice.name not in ("vllm", "llamacpp"):
        log.warning("the %s engine does not size a KV cache to the VRAM budget; only the context is capped", choice.name)
    config = EngineConfig(model_path=str(path), load=spec.load, device=device, dtype=dtype, max_model_len=max_model_len,
                          trust_remote_code=settings.trust_remote_code, memory_budget=budget,
                          flash_attn=settings.flash_attn)
    log.info("serving %s as %r under profile %s on %s/%s with engine %s: %s",
             path, served, spec.name, device, dtype, choice.name, choice.reason)
    return state, config


def relaunch(choice: EngineChoice) -> NoReturn:
    """Serve again, with the same arguments, under the interpreter whose environment has the chosen engine (vLLM
    lives in its own venv). The new process chooses again without other environments, so it never moves twice."""
    assert choice.python is not None
    log.info("engine %s is installed in %s, not here: serving from there (%s)", choice.name, choice.python,
             choice.reason)
    os.execve(choice.python, [choice.python, "-m", "leanserve.cli", *sys.argv[1:]], {**os.environ, RELAUNCHED: "1"})


def record_load(state: ServerState, load_time_s: float) -> None:
    """How the profile loaded (time, memory, engine, dtype), under <home>/results/, never in the artifact
    store (only `compress` writes there). Load-time profiles (nf4, int8) have no build manifest: this is theirs."""
    if state.engine is None:
        return
    memory = state.engine.memory()
    path = load_facts_path(state.settings.home, state.base_model, state.spec.name, state.engine_name)
    write_json(path, {
        "profile": state.spec.name, "kind": "built" if state.spec.needs_artifact else "runtime",
        "spec": state.spec.model_dump(),
        "base_model": state.base_model, "engine": state.engine_name, "device": state.engine.config.device,
        "dtype": state.engine.config.dtype, "load_time_s": round(load_time_s, 2),
        "memory_after_load": {k: v for k, v in vars(memory).items() if v is not None},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


class DrainingServer(uvicorn.Server):
    """uvicorn, with a graceful shutdown that keeps the port open.

    On SIGTERM (or Ctrl-C) uvicorn would close the listening socket at once, so clients and load
    balancers would see "connection refused" while requests still run. Here the server first drains:
    /health and every new request answer 503 ("draining") while running requests get up to
    `--shutdown-grace` seconds to finish; then uvicorn shuts down. A second signal stops waiting.
    uvicorn re-raises the signal after its shutdown (so the process dies of SIGTERM, exit -15); this
    subclass does not record it, so a clean drain exits 0.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, grace: float) -> None:
        super().__init__(config)
        self.state, self.grace = state, grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None or self.state.status in ("loading", "failed"):
            self.force_exit = self.should_exit  # a second signal while shutting down: stop waiting at all
            self.should_exit = True
            return
        self._loop.call_soon_threadsafe(self._start_drain, signal.Signals(sig).name)

    def _start_drain(self, signame: str) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit(signame))

    async def _drain_then_exit(self, signame: str) -> None:
        self.state.status = "draining"
        admission = self.state.admission
        log.info("%s: draining, %d request(s) in flight get up to %gs to finish; new requests get 503",
                 signame, admission.active, self.grace)
        if await admission.wait_idle(self.grace):
            log.info("drained; shutting down")
        else:
            log.warning("shutdown grace of %gs passed with %d request(s) still running; cancelling them",
                        self.grace, admission.active)
        self.should_exit = True


def serve(settings: Settings) -> None:
    state, config = prepare(settings)
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = build_app(state, config, on_fatal=stop, on_ready=record_load)
    # after the drain, uvicorn itself only waits for responses that are already complete to flush
    uv_config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                               timeout_graceful_shutdown=max(1, min(5, int(settings.shutdown_grace))),
                               http=with_header_timeout(settings.header_timeout))
    server = DrainingServer(uv_config, state, settings.shutdown_grace)
    server.run()
    if state.status == "failed":
        raise SystemExit(f"leanserve: could not load the model: {state.error}")
