"""How the layout of one `llama_batch` changes the time of a decode step, on the llamacpp engine's own
context settings: why it keeps a KV region per sequence, sorts each step's batch by sequence, and
admits a new request next to the live ones.

With a region per sequence (kv_unified off), llama.cpp splits a batch into passes that each take sequence
ids in the order they first appear, consecutive ids only (llama_batch_allocr::split_equal, sequential):
live sequences 0, 2, 4, 6 cost four passes where 0-3 cost one. One shared pool (kv_unified on) takes
any ids in one pass, but every sequence's attention then reads the whole pool's cells.

In process, llama-cpp-python's low-level API on the q4_k_m GGUF (built first if missing), threads =
physical cores, flash attention off (as the engine runs it). Each of the 8 sequences first holds
--history tokens of KV. A case is one batch: a token for each sequence in `live`, and optionally a
--chunk-token prompt chunk on another sequence, placed after the generating tokens (as the engine
did before it sorted) or sorted by sequence. Cases alternate within each repeat so that drift on a
shared machine hits them alike; the two layouts' contexts are side by side in memory and
alternate step by step too. Medians of --repeats steps. Prints a table; writes
benchmarks/results/llamacpp_batching-<device>.json.

    python benchmarks/llamacpp_batching.py [--repeats 15] [--history 200] [--chunk 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.cpu_peers import ensure_gguf  # noqa: E402
from benchmarks.serve_overhead import device_name, write_result  # noqa: E402
from leanserve.engines.llamacpp import N_BATCH, SEQUENCES  # noqa: E402
from leanserve.settings import default_home  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    live: tuple[int, ...]  # sequences that each decode one token
    prefill: int | None = None  # the sequence that gets a prompt chunk in the same batch
    chunk_sorted: bool = False  # the chunk sits at its sequence's place (sorted), not after every token


CASES = (
    Case("1 sequence", (0,)),
    Case("4 consecutive (0-3)", (0, 1, 2, 3)),
    Case("4 scattered (0, 2, 4, 6)", (0, 2, 4, 6)),
    Case("8 (0-7)", tuple(range(8))),
    Case("7 + chunk on 3, appended", (0, 1, 2, 4, 5, 6, 7), prefill=3),
    Case("7 + chunk on 3, sorted", (0, 1, 2, 4, 5, 6, 7), prefill=3, chunk_sorted=True),
)
LAYOUTS = (("per-sequence", False), ("unified", True))  # kv_unified off (the engine's), on


class Context:
    """One llama.cpp context over the file, as the engine sets it up, with every sequence's KV filled."""

    def __init__(self, file: Path, unified: bool, history: int, context: int) -> None:
        import psutil

        from leanserve.engines.llamacpp_lib import load

        ll = self.ll = load()
        self.model = ll.llama_model_load_from_file(str(file).encode(), ll.llama_model_default_params())
        threads = psutil.cpu_count(logical=False) or 1
        cp = ll.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = context * SEQUENCES, N_BATCH, N_BATCH, SEQUENCES
        cp.kv_unified = unified
        cp.n_threads = cp.n_threads_batch = threads
        cp.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cp)
        self.batch = ll.llama_batch_init(N_BATCH, 0, 1)
        self.history = history
        self.pos = [0] * SEQUENCES
        for seq in range(SEQUENCES):  # a different text in each: token ids from a fixed stride
            self.decode([(seq, 100 + (seq * 37 + i * 11) % 5000) for i in range(history)])

    def decode(self, tokens: list[tuple[int, int]]) -> float:
        """Decode (sequence, token) pairs, each at its sequence's next position; seconds taken."""
        b = self.batch
        for i, (seq, token) in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, self.pos[seq], 1, False
            b.seq_id[i][0] = seq
            self.pos[seq] += 1
        b.logits[len(tokens) - 1] = True
        b.n_tokens = len(tokens)
        start = time.perf_counter()
        rc = self.ll.llama_decode(self.ctx, b)
        elapsed = time.perf_counter() - start
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        return elapsed

    def step(self, case: Case, chunk: int) -> float:
        """One batch of `case`, timed; then every sequence is cut back to its history, so steps are alike."""
        tokens = [(seq, 500 + seq) for seq in case.live]
        if case.prefill is not None:
            prompt = [(case.prefill, 700 + i) for i in range(chunk)]
            tokens = sorted(tokens + prompt) if case.chunk_sorted else tokens + prompt
        elapsed = self.decode(tokens)
        mem = self.ll.llama_get_memory(self.ctx)
        for seq in range(SEQUENCES):
            self.ll.llama_memory_seq_rm(mem, seq, self.history, -1)
            self.pos[seq] = self.history
        return elapsed

    def close(self) -> None:
        self.ll.llama_batch_free(self.batch)
        self.ll.llama_free(self.ctx)
        self.ll.llama_model_free(self.model)


def measure(file: Path, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """ms of each case under both layouts, the two contexts side by side and interleaved step by step."""
    contexts = {layout: Context(file, unified, args.history, args.context) for layout, unified in LAYOUTS}
    try:
        for ctx in contexts.values():  # warm-up: first-call allocations stay out of the timings
            for case in CASES:
                ctx.step(case, args.chunk)
        times: dict[str, dict[str, list[float]]] = {layout: {c.name: [] for c in CASES} for layout in contexts}
        for rep in range(args.repeats):
            for case in CASES if rep % 2 == 0 else CASES[::-1]:
                for layout in list(contexts) if rep % 2 == 0 else list(contexts)[::-1]:
                    times[layout][case.name].append(contexts[layout].step(case, args.chunk) * 1e3)
        return times
    finally:
        for ctx in contexts.values():
            ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--history", type=int, default=200, help="tokens of KV each sequence holds")
    ap.add_argument("--chunk", type=int, default=60, help="prompt tokens prefilled beside the generating ones")
    ap.add_argument("--context", type=int, default=2048, help="per sequence, as the engine's default")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    file = ensure_gguf(default_home())
    runs = measure(file, args)
    med = {layout: {name: statistics.median(v) for name, v in t.items()} for layout, t in runs.items()}
    result = {"benchmark": "llamacpp_batching", "device": device_name(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "file": file.name, "history_tokens": args.history, "chunk_tokens": args.chunk,
              "context_per_sequence": args.context, "sequences": SEQUENCES, "flash_attn": False,
              "repeats": args.repeats, "statistic": "median ms of one llama_decode over repeats",
              "rows": [{"case": c.name, "live": list(c.live), "prefill": c.prefill, "chunk_sorted": c.chunk_sorted,
                        "per_sequence_ms": round(med["per-sequence"][c.name], 2),
                        "unified_ms": round(med["unified"][c.name], 2),
                        "unified_over_per_sequence": round(med["unified"][c.name] / med["per-sequence"][c.name], 3),
                        "runs_per_sequence_ms": [round(x, 2) for x in runs["per-sequence"][c.name]],
                        "runs_unified_ms": [round(x, 2) for x in runs["unified"][c.name]]}
                       for c in CASES]}
    print("| batch | KV per sequence, ms | unified KV, ms | unified / per sequence |\n|---|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['case']} | {r['per_sequence_ms']:.1f} | {r['unified_ms']:.1f} | "
              f"{r['unified_over_per_sequence']:.2f}x |")
    print(f"{result['device']}, {result['date']}, {file.name}, {args.history} tokens of KV per sequence, "
          f"chunk {args.chunk} tokens, median of {args.repeats}")
    write_result(args.out, "llamacpp_batching", result)


if __name__ == "__main__":
    main()
