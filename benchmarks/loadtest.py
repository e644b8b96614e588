"""How many users does it hold? `leanserve loadtest` (Locust) against a real server, per profile.

CPU (committed figures): the default model on the transformers engine, bf16 and nf4, a handful of users
for about a minute each. Writes benchmarks/results/loadtest-<device>-<profile>.{json,md,png}.

    python benchmarks/loadtest.py                                   # bf16 and nf4, 4 users, 60 s
    python benchmarks/loadtest.py --profiles bf16 --users 8 --duration 120

GPU (issue 5; not run on the CPU machines): a Llama-7B-shaped model (random weights are fine for speed)
quantized with gptq-4, served by vLLM under an 8 GiB budget, users ramped until TTFT p90 passes 1 s:

    python - <<'PY'   # a 7B-shaped model with random weights, from the shape leanserve ships
    import json, importlib.resources as r, torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**{k: v for k, v in json.loads(r.files("leanserve.shapes").joinpath("llama-7b.json").read_text()).items() if not k.startswith("_")})
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained("/tmp/llama-7b-random")
    # bring any Llama-2 tokenizer files (32000 tokens) into /tmp/llama-7b-random as well
    PY
    leanserve compress --model /tmp/llama-7b-random --profile gptq-4 --param calib_samples=16
    python benchmarks/loadtest.py --engine vllm --model /tmp/llama-7b-random --profiles gptq-4 \
        --vram-budget 8GiB --ramp 1 2 4 8 16 32 64 128 --duration 60 --ttft-p90-limit 1.0

The ramp stops at the first step whose TTFT p90 exceeds the limit and records it in
loadtest-<device>-ramp-<profile>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, device_slug  # noqa: E402
from leanserve.loadtest import lengths  # noqa: E402
from leanserve.loadtest.runner import LoadtestConfig, run  # noqa: E402
from leanserve.paths import default_home  # noqa: E402
from tests.servers import API_KEY, start_server  # noqa: E402

RESULTS = HERE / "results"


def one_run(base_url: str, users: int, args: argparse.Namespace, out: Path) -> dict:
    cfg = LoadtestConfig(url=base_url, users=users, spawn_rate=max(1.0, users / 5), duration_s=args.duration,
                         prompt_tokens=args.prompt_tokens, answer_tokens=args.answer_tokens)
    return run(cfg, out, api_key=API_KEY, extra={"device": device_name(), "date": dt.date.today().isoformat(),
                                                 "engine": args.engine, "vram_budget": args.vram_budget})


def row(profile: str, users: int, s: dict) -> str:
    return (f"{profile:>8} {users:>5} {s['requests']:>8} {s['failures']:>5} {s['requests_per_s']:>7.2f} "
            f"{s['output_tokens_per_s']:>8.1f} {s['ttft_s']['p50'] * 1000:>8.0f} {s['ttft_s']['p90'] * 1000:>8.0f} "
            f"{s['ttft_s']['p99'] * 1000:>8.0f} {s['latency_s']['p90']:>8.2f} {s['itl_s']['p50'] * 1000:>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+", default=["bf16", "nf4"])
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--model", default=None, help="base model (default: the default model)")
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--duration", type=int, default=60)
    ap.add_argument("--prompt-tokens", default=lengths.DEFAULT)
    ap.add_argument("--answer-tokens", default=lengths.DEFAULT)
    ap.add_argument("--vram-budget", default=None, help="passed to serve --vram-budget (GPU)")
    ap.add_argument("--ramp", type=int, nargs="*", default=None, help="user counts to step through (GPU capacity)")
    ap.add_argument("--ttft-p90-limit", type=float, default=1.0, help="seconds; the ramp stops past it")
    args = ap.parse_args()

    device = device_name()
    slug = device_slug(device)
    RESULTS.mkdir(exist_ok=True)
    extra = [*(["--model", args.model] if args.model else []),
             *(["--vram-budget", args.vram_budget] if args.vram_budget else [])]
    header = (f"{'profile':>8} {'users':>5} {'requests':>8} {'fails':>5} {'req/s':>7} {'tok/s':>8} "
              f"{'TTFTp50':>8} {'TTFTp90':>8} {'TTFTp99':>8} {'e2e p90':>8} {'ITLp50':>7}  (ms unless s)")
    lines = []
    for profile in args.profiles:
        server = start_server(args.engine, profile, default_home(), *extra)
        try:
            if args.ramp:
                steps = []
                for users in args.ramp:
                    with tempfile.TemporaryDirectory() as tmp:
                        s = one_run(server.base_url, users, args, Path(tmp))
                    steps.append({"users": users, **{k: v for k, v in s.items() if k not in ("run", "server")}})
                    lines.append(row(profile, users, s))
                    if s["ttft_s"]["p90"] is None or s["ttft_s"]["p90"] > args.ttft_p90_limit:
                        break
                held = [st["users"] for st in steps if st["ttft_s"]["p90"] is not None and st["ttft_s"]["p90"] <= args.ttft_p90_limit]
                payload = {"benchmark": "loadtest-ramp", "date": dt.date.today().isoformat(), "device": device,
                           "engine": args.engine, "profile": profile, "model": args.model, "vram_budget": args.vram_budget,
                           "ttft_p90_limit_s": args.ttft_p90_limit, "users_held": max(held, default=0), "steps": steps}
                (RESULTS / f"loadtest-{slug}-ramp-{profile}.json").write_text(json.dumps(payload, indent=2) + "\n")
            else:
                out = RESULTS / f"loadtest-{slug}-{profile}"
                with tempfile.TemporaryDirectory() as tmp:
                    s = one_run(server.base_url, args.users, args, Path(tmp))
                    shutil.copy(Path(tmp) / "summary.json", out.with_suffix(".json"))
                    shutil.copy(Path(tmp) / "summary.md", out.with_suffix(".md"))
                    shutil.copy(Path(tmp) / "loadtest.png", out.with_suffix(".png"))
                lines.append(row(profile, args.users, s))
        finally:
            server.stop()
    print(f"\nload test on {device}, engine {args.engine}, {args.duration} s per run")
    print(header)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
