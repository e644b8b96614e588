"""What the routes need from the running server: the engine (once loaded) and how it was chosen."""

from __future__ import annotations

from dataclasses import dataclass, field

from leanserve.engines.base import Engine
from leanserve.errors import NotReady
from leanserve.profiles.spec import ProfileSpec
from leanserve.server.admission import Admission
from leanserve.server.metrics import ServerMetrics
from leanserve.settings import Settings


@dataclass
class ServerState:
    settings: Settings
    spec: ProfileSpec
    served_model: str  # the name clients pass as `model`
    base_model: str
    metrics: ServerMetrics
    engine_name: str
    engine_reason: str
    engine: Engine | None = None
    status: str = "loading"  # loading, ready, failed, draining
    error: str | None = None
    created: int = field(default=0)
    admission: Admission = field(init=False)  # generation requests in flight, bounded by --max-queue

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_queue)

    def ready_engine(self) -> Engine:
        if self.engine is None or self.status != "ready":
            if self.status == "failed":
                raise NotReady(f"The model failed to load: {self.error}")
            raise NotReady()
        return self.engine
