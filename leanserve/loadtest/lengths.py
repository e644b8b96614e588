"""Prompt and answer lengths drawn from a distribution written as a short string.

`fixed:N`, `uniform:LO:HI`, `normal:MEAN:SD` (clipped to >= 1) or `lognormal:MEDIAN:SIGMA`: what a
self-hoster types in an environment variable to mimic their traffic (short chats, long answers).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}
DEFAULT = "uniform:16:128"  # prompt and answer lengths of a load test unless told otherwise


@dataclass(frozen=True)
class Lengths:
    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Lengths:
        kind, *args = text.strip().split(":")
        if kind not in KINDS or len(args) != KINDS[kind]:
            raise ValueError(f"cannot read length distribution {text!r}; write fixed:N, uniform:LO:HI, "
                             "normal:MEAN:SD or lognormal:MEDIAN:SIGMA")
        try:
            values = [float(x) for x in args]
        except ValueError as exc:
            raise ValueError(f"length distribution {text!r}: {exc}") from exc
        if values[0] < 1 or (kind == "uniform" and values[1] < values[0]) or any(v < 0 for v in values):
            raise ValueError(f"length distribution {text!r}: lengths must be >= 1 and LO <= HI")
        return cls(kind, *values)

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            x = self.a
        elif self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        elif self.kind == "normal":
            x = rng.gauss(self.a, self.b)
        else:
            x = math.exp(rng.gauss(math.log(self.a), self.b))
        return max(1, round(x))
