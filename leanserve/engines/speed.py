"""The measured engine table that `--engine auto` ranks engines by.

`benchmarks/cpu_peers.py --engines` measures leanserve's engines side by side, in one run, on one machine,
and writes tokens/s at 1 stream (median) per (engine, profile, dtype) with a correctness check (the greedy
France answer) and the machine it ran on. Figures only travel to a machine of the same kind: same device,
and the same answer to "native bf16?", which decides both the dtype and which vLLM-CPU kernels run. A
different CPU model of that kind still uses them, and the reason says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# In the checkout, next to the benchmark that writes it (an installed wheel has none: auto then falls back).
TABLE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "engines-cpu.json"


@dataclass(frozen=True)
class Machine:
    """What a figure depends on: the device kind, the CPU's native bf16, and (only for the reason) its name."""

    device: str
    native_bf16: bool
    name: str = ""

    @classmethod
    def here(cls, device: str) -> Machine:
        from leanserve.hardware import cpu_has_bf16, cpu_name

        return cls(device, cpu_has_bf16(), cpu_name())


@dataclass(frozen=True)
class Figure:
    """One measured row: greedy tokens/s of one stream, and whether its France answer was right."""

    engine: str
    profile: str
    dtype: str | None  # None: the engine has no dtype choice (GGUF files carry their own types)
    tokens_per_s: float
    correct: bool


@dataclass(frozen=True)
class SpeedTable:
    machine: Machine
    date: str
    figures: tuple[Figure, ...]
    source: str

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> SpeedTable:
        m = data["machine"]
        figures = tuple(Figure(r["engine"], r["profile"], r.get("dtype"), float(r["tokens_per_s_1"]), bool(r["correct"]))
                        for r in data["rows"])
        return cls(Machine(m["device"], bool(m["native_bf16"]), m.get("name", "")), data["date"], figures, source)

    def mismatch(self, here: Machine) -> str | None:
        """None if the figures hold on `here`, else why not."""
        if here.device != self.machine.device:
            return f"measured on {self.machine.device}, this is {here.device}"
        if here.native_bf16 != self.machine.native_bf16:
            has = "has" if self.machine.native_bf16 else "lacks"
            return f"measured on a CPU that {has} native bf16, this one does not match"
        return None

    def figure(self, engine: str, profile: str, dtype: str) -> Figure | None:
        """The row for this engine on this profile at `dtype` (a row without a dtype matches any)."""
        return next((f for f in self.figures if f.engine == engine and f.profile == profile
                     and f.dtype in (None, dtype)), None)

    def describe(self, here: Machine) -> str:
        where = self.machine.name or self.machine.device
        same = "" if not here.name or here.name == self.machine.name else f", this is {here.name}"
        return f"{Path(self.source).name}, measured {self.date} on {where}{same}"


def load_table(path: Path = TABLE_PATH) -> SpeedTable | None:
    """The table at `path`; None when there is none, or (logged) when it cannot be read: a speed hint never
    stops a server from starting."""
    try:
        return SpeedTable.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the engine speed table %s: %s", path, exc)
        return None
