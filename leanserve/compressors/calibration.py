"""Calibration text for compressor jobs: a named set from the shared eval data, or the user's file.

Calibration uses *validation* text; evaluation uses *test* text, so no profile is tuned on what it is
scored on. Offline machines have no hub datasets: say exactly what to pass instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanserve.errors import InvalidRequest
from leanserve.paths import data_root

NAMED_SETS = {"wikitext2-valid": "wikitext-2/wiki.valid.tokens"}
DEFAULT_SET = "wikitext2-valid"


def _untokenize_wikitext(text: str) -> str:
    """WikiText's tokenized form (' @-@ ', ' , ') back to ordinary text, so calibration sees real prose."""
    text = re.sub(r" @(.)@ ", r"\1", text)
    text = re.sub(r" ([.,;:!?)'])", r"\1", text)
    return text.replace("( ", "(")


def _paragraphs(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r["text"] if isinstance(r, dict) else str(r) for r in rows]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".tokens":  # WikiText's tokenized files
        text = _untokenize_wikitext(text)
    return [p.strip() for p in text.split("\n") if len(p.strip()) > 40]


@dataclass(frozen=True)
class CalibrationSet:
    name: str
    source: str
    samples: list[list[int]]  # token ids, each exactly seq_len long
    seq_len: int

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "source": self.source, "samples": len(self.samples), "seq_len": self.seq_len}


def resolve_source(spec: str | None) -> tuple[str, Path]:
    name = spec or DEFAULT_SET
    if name in NAMED_SETS:
        root = data_root()
        if root is None or not (root / NAMED_SETS[name]).is_file():
            raise InvalidRequest(
                f"calibration set {name!r} needs the shared eval data ({NAMED_SETS[name]}), which was not found. "
                "Set LEANSERVE_DATA to the folder that holds it, or pass --calib FILE (.txt or .jsonl with a "
                "'text' field).", param="calib")
        return name, root / NAMED_SETS[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise InvalidRequest(f"--calib {name!r} is neither a named set ({', '.join(NAMED_SETS)}) nor a file",
                             param="calib")
    return path.name, path


def load_calibration(spec: str | None, tokenizer, n_samples: int, seq_len: int) -> CalibrationSet:  # noqa: ANN001
    """Concatenate the text, tokenize, and cut it into n_samples windows of seq_len tokens."""
    name, path = resolve_source(spec)
    ids: list[int] = []
    for para in _paragraphs(path):
        ids.extend(tokenizer.encode(para + "\n\n", add_special_tokens=False))
        if len(ids) >= n_samples * seq_len:
            break
    if len(ids) < seq_len:
        raise InvalidRequest(f"calibration text {path} has only {len(ids)} tokens; need at least {seq_len}",
                             param="calib")
    samples = [ids[i * seq_len : (i + 1) * seq_len] for i in range(min(n_samples, len(ids) // seq_len))]
    return CalibrationSet(name, str(path), samples, seq_len)


def forward_each(model: Any, samples: list[list[int]], handles: list[Any], desc: str) -> int:
    """Run every calibration window through `model` without gradients for the hooks in `handles` to
    record, then remove them, even after an error, so the model leaves clean; the tokens run."""
    import torch
    from tqdm import tqdm

    tokens = 0
    try:
        with torch.no_grad():
            for ids in tqdm(samples, desc=desc):
                model(input_ids=torch.tensor([ids]))
                tokens += len(ids)
    finally:
        for h in handles:
            h.remove()
    return tokens
