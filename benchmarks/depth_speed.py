"""How much decoding speed does dropping decoder blocks buy? Greedy tokens/s of the base model with its
last N blocks removed, for each N, at 1 and 8 sequences, in process (transformers, float32 on CPU).

Speed depends on the shape, not on which blocks go or how well the student was healed, so the blocks
are simply truncated and nothing is trained: this is the table `distilled`'s default drop count is
picked from (issue 18). The 576 x 49,152 output head is read every token whatever the depth, so the
speed-up is smaller than the fraction of blocks dropped. Counts are interleaved within each repeat, in
alternating order, so drift on a shared machine hits all of them alike; medians of --repeats.
Prints a table; writes benchmarks/results/depth_speed-<device>.json.

    python benchmarks/depth_speed.py [--drop 0 2 4 6 8 10 12] [--tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, write_result  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def decode_rate(model, ids, tokens: int) -> float:  # noqa: ANN001
    """Aggregate generated tokens/s of one greedy generate() call over every row of `ids`."""
    import torch

    with torch.no_grad():
        start = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                             min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        elapsed = time.perf_counter() - start
    return (out.shape[0] * (out.shape[1] - ids.shape[1])) / elapsed


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from leanserve import models
    from leanserve.paths import default_home

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drop", type=int, nargs="+", default=[0, 2, 4, 6, 8, 10, 12])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    base = models.pull_default(default_home())
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    blocks = list(model.model.layers)
    n_blocks = len(blocks)
    prompt = torch.tensor([tok(PROMPT)["input_ids"]])

    def set_depth(drop: int) -> None:
        model.model.layers = torch.nn.ModuleList(blocks[: n_blocks - drop])
        model.config.num_hidden_layers = n_blocks - drop

    runs: dict[int, dict[int, list[float]]] = {d: {1: [], 8: []} for d in args.drop}
    set_depth(0)
    decode_rate(model, prompt, 8)  # warm-up: first-call allocations stay out of the timings
    for rep in range(args.repeats):
        for drop in args.drop if rep % 2 == 0 else args.drop[::-1]:  # alternate the order: no count always first
            set_depth(drop)
            for batch in (1, 8):
                runs[drop][batch].append(decode_rate(model, prompt.repeat(batch, 1), args.tokens))
    med = {d: {b: statistics.median(v) for b, v in r.items()} for d, r in runs.items()}
    ref = med[args.drop[0]]
    params = {d: sum(p.numel() for b in blocks[: n_blocks - d] for p in b.parameters()) for d in args.drop}
    head = model.lm_head.weight.numel()
    result = {"benchmark": "depth_speed", "device": device_name(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "engine": "transformers generate() in process, float32", "blocks": n_blocks,
              "max_tokens": args.tokens, "repeats": args.repeats, "statistic": "median over repeats",
              "head_params": head,
              "rows": [{"dropped": d, "blocks": n_blocks - d, "block_params": params[d],
                        "tok_s_1": round(med[d][1], 2), "tok_s_8": round(med[d][8], 2),
                        "speedup_1": round(med[d][1] / ref[1], 3), "speedup_8": round(med[d][8] / ref[8], 3),
                        "runs_1": [round(x, 2) for x in runs[d][1]], "runs_8": [round(x, 2) for x in runs[d][8]]}
                       for d in args.drop]}
    print(f"| blocks dropped | blocks | tok/s x1 | speed-up | tok/s x8 | speed-up |\n|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['dropped']} | {r['blocks']} | {r['tok_s_1']:.1f} | {r['speedup_1']:.2f}x "
              f"| {r['tok_s_8']:.1f} | {r['speedup_8']:.2f}x |")
    print(f"{result['device']}, {result['date']}, median of {args.repeats}, {args.tokens} greedy tokens")
    write_result(args.out, "depth_speed", result)


if __name__ == "__main__":
    main()
