"""The app factory: the server holds an engine interface, never an engine class.

The HTTP port opens at once and answers 503 while the engine loads in the background (so `/health`
means "can generate"); the engine is shut down when the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from starlette.routing import Route

from leanserve.engines import engine_class
from leanserve.engines.base import EngineConfig
from leanserve.server.errors import register_error_handlers
from leanserve.server.middleware import GuardMiddleware
from leanserve.server.openapi import install_openapi
from leanserve.server.routes import router
from leanserve.server.state import ServerState

log = logging.getLogger(__name__)


async def _load_engine(state: ServerState, config: EngineConfig, on_fatal: Callable[[], None] | None,
                       on_ready: Callable[[ServerState, float], None] | None) -> None:
    started = time.perf_counter()
    try:
        engine = engine_class(state.engine_name)(config)
        await engine.start()
    except Exception as exc:  # any load failure: report it on /health and stop the server
        log.exception("loading %s with %s failed", state.spec.name, state.engine_name)
        state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
        if on_fatal:
            on_fatal()
        return
    state.engine = engine
    state.metrics.memory_source = engine.memory
    state.status = "ready"
    if on_ready:
        on_ready(state, time.perf_counter() - started)
    log.info("ready: profile=%s engine=%s (%s) loaded in %.1fs, context %d tokens",
             state.spec.name, state.engine_name, state.engine_reason, time.perf_counter() - started,
             engine.max_model_len)


def build_app(state: ServerState, config: EngineConfig, on_fatal: Callable[[], None] | None = None,
              on_ready: Callable[[ServerState, float], None] | None = None) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.create_task(_load_engine(state, config, on_fatal, on_ready))
        try:
            yield
        finally:
            if state.status != "failed":  # serve() exits non-zero on "failed": keep it
                state.status = "draining"
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loader
            if state.engine is not None:
                await state.engine.shutdown()

    app = FastAPI(title="leanserve", version="0.1.0", lifespan=lifespan)
    app.state.leanserve = state
    app.include_router(router)
    register_error_handlers(app)
    # the routes metric labels come from: ours, and FastAPI's own (/docs, /openapi.json); FastAPI wraps
    # an included router in an object that matches on its behalf, so ours are taken from the router
    label_routes = [*router.routes, *(r for r in app.router.routes if isinstance(r, Route))]
    app.add_middleware(GuardMiddleware, state=state, admission=state.admission,  # type: ignore[arg-type]
                       routes=label_routes)
    install_openapi(app)
    return app
