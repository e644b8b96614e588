"""Is llama.cpp's portable build as fast as the native one on this CPU? The image and any environment that
moves between machines must use the portable build (`make setup LLAMA_BUILD=portable`: GGML_NATIVE=OFF,
GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS, ggml picking a CPU kernel module at load); `make setup` compiles
the native one (GGML_NATIVE=ON, kernels for this CPU's instruction sets linked in).

Both builds run the same decode steps on the q4_k_m GGUF (built first if missing), with the llamacpp
engine's context settings (benchmarks/llamacpp_batching.py's Context: threads = physical cores, a KV
region per sequence holding --history tokens each, flash attention off): one token for 1 and for 8
sequences, a --chunk-token prompt chunk alone (prefill), and 7 tokens plus a chunk. Two libllama builds
cannot share a process, so each round starts one child process per build, in alternating order
(native, portable, portable, native, ...), each timing --repeats steps of every case. Figures: the
median over all steps of all rounds; the ratio portable / native of those medians. Prints a table;
writes benchmarks/results/llamacpp_builds-<device>.json.

    pip install --no-deps --target /tmp/llama-portable llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl
    python benchmarks/llamacpp_builds.py --portable /tmp/llama-portable [--rounds 6] [--repeats 15]

The native build is the one installed in this environment; --portable names a `pip install --target`
folder holding the portable one (a wheel from `pip wheel` with the portable CMAKE_ARGS, see the Makefile).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.llamacpp_batching import Case, Context  # noqa: E402
from benchmarks.serve_overhead import device_name, write_result  # noqa: E402

CASES = (
    Case("1 sequence", (0,)),
    Case("8 sequences", tuple(range(8))),
    Case("prompt chunk alone", (), prefill=0, chunk_sorted=True),
    Case("7 + prompt chunk", (0, 1, 2, 4, 5, 6, 7), prefill=3, chunk_sorted=True),
)


def child(file: Path, repeats: int, history: int, chunk: int) -> dict:
    """Runs in the child: ms of every step of every case, and which CPU kernels this build loaded."""
    from leanserve.engines import llamacpp_lib

    ctx = Context(file, unified=False, history=history, context=2048)
    try:
        for case in CASES:  # warm-up
            ctx.step(case, chunk)
        times: dict[str, list[float]] = {c.name: [] for c in CASES}
        for rep in range(repeats):
            for case in CASES if rep % 2 == 0 else CASES[::-1]:
                times[case.name].append(ctx.step(case, chunk) * 1e3)
    finally:
        ctx.close()
    import llama_cpp

    return {"cpu_kernels": llamacpp_lib.cpu_variant(), "library": str(llamacpp_lib.lib_dir()),
            "version": llama_cpp.__version__, "ms": times}


def run_child(build: str, portable: Path, file: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if build == "portable":  # ahead of site-packages: `import llama_cpp` finds the portable one
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(portable), str(HERE.parent), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, __file__, "--child", str(file), "--repeats", str(args.repeats),
           "--history", str(args.history), "--chunk", str(args.chunk)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the {build} child failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--portable", type=Path, help="a `pip install --target` folder with the portable build")
    ap.add_argument("--rounds", type=int, default=6, help="child processes per build, alternating")
    ap.add_argument("--repeats", type=int, default=15, help="steps of each case per child process")
    ap.add_argument("--history", type=int, default=200, help="tokens of KV each sequence holds")
    ap.add_argument("--chunk", type=int, default=128, help="prompt tokens in the chunk cases")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats, args.history, args.chunk)))
        return
    if args.portable is None or not (args.portable / "llama_cpp").is_dir():
        ap.error("--portable must name a folder holding llama_cpp/ (pip install --no-deps --target DIR WHEEL)")
    from benchmarks.cpu_peers import ensure_gguf
    from leanserve.settings import default_home

    file = ensure_gguf(default_home())
    builds = ("native", "portable")
    runs: dict[str, list[dict]] = {b: [] for b in builds}
    for r in range(args.rounds):
        for build in builds if r % 2 == 0 else builds[::-1]:
            runs[build].append(run_child(build, args.portable, file, args))
            print(f"round {r + 1}/{args.rounds}: {build} done", flush=True)
    kernels = {b: sorted({run["cpu_kernels"] for run in runs[b]}) for b in builds}
    if kernels["native"] != ["native"] or "native" in kernels["portable"]:
        raise SystemExit(f"the two builds are not what their names say: CPU kernels {kernels}")
    rows = []
    for case in CASES:
        med = {b: statistics.median(ms for run in runs[b] for ms in run["ms"][case.name]) for b in builds}
        rows.append({"case": case.name, "live": list(case.live), "prefill": case.prefill,
                     "native_ms": round(med["native"], 2), "portable_ms": round(med["portable"], 2),
                     "portable_over_native": round(med["portable"] / med["native"], 3),
                     "round_medians_native_ms": [round(statistics.median(run["ms"][case.name]), 2) for run in runs["native"]],
                     "round_medians_portable_ms": [round(statistics.median(run["ms"][case.name]), 2)
                                                   for run in runs["portable"]]})
    result = {"benchmark": "llamacpp_builds", "device": device_name(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "file": file.name,
              "llama_cpp_python": runs["native"][0]["version"], "cpu_kernels": {b: kernels[b][0] for b in builds},
              "history_tokens": args.history, "chunk_tokens": args.chunk, "flash_attn": False,
              "rounds": args.rounds, "repeats": args.repeats,
              "statistic": "median ms of one llama_decode over every step of every round", "rows": rows}
    print(f"| step | native, ms | portable ({result['cpu_kernels']['portable']} kernels), ms | portable / native |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['native_ms']:.1f} | {r['portable_ms']:.1f} | {r['portable_over_native']:.2f}x |")
    print(f"{result['device']}, {result['date']}, {file.name}, {args.rounds} rounds x {args.repeats} steps")
    write_result(args.out, "llamacpp_builds", result)


if __name__ == "__main__":
    main()
