"""Speed and memory of each profile as served: decode tokens/s and TTFT at 1 and 8 streams, and
the server's own memory figure, through HTTP (transformers engine by default, CPU).

Speed and memory depend on shapes and formats, not on how well a job was calibrated, so missing
artifacts are built with a small calibration (8 x 256 tokens, 16 distillation steps) and that is
stated in the JSON. Prints a table; writes benchmarks/results/profile_speed-<device>.json.

    python benchmarks/profile_speed.py [--profiles bf16 nf4 int8 pruned distilled int8-gblm gptq-4] [--engine E]
                                       [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, device_slug, http_runs  # noqa: E402
from leanserve import models  # noqa: E402
from leanserve.paths import default_home  # noqa: E402
from leanserve.profiles.registry import get_profile  # noqa: E402
from leanserve.profiles.store import artifact_dir, read_manifest  # noqa: E402
from tests.servers import API_KEY, start_server  # noqa: E402
from tests.test_metrics import one, scrape  # noqa: E402

SMALL_BUILD = ["--param", "calib_samples=8", "--param", "calib_seq_len=256", "--param", "steps=16"]


def ensure_built(home: Path, profile: str) -> str:
    spec = get_profile(profile, home)
    if not spec.needs_artifact or read_manifest(artifact_dir(home, models.DEFAULT_MODEL, profile)):
        return "existing" if spec.needs_artifact else "runtime"
    cmd = [sys.executable, "-m", "leanserve.cli", "compress", "--profile", profile, "--home", str(home), *SMALL_BUILD]
    subprocess.run(cmd, check=True)
    return "built with 8 x 256 calibration tokens for this benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", nargs="+",
                    default=["bf16", "nf4", "int8", "pruned", "distilled", "int8-gblm", "gptq-4"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", default="transformers")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/profile_speed-<device>.json")
    args = ap.parse_args()
    home = default_home()
    models.pull_default(home)
    rows = []
    for profile in args.profiles:
        origin = ensure_built(home, profile)
        server = start_server(args.engine, profile, home)
        try:
            runs = asyncio.run(http_runs(server.base_url, API_KEY, args.tokens, args.repeats))
            rss = one(scrape(server), "leanserve_memory_bytes", kind="process_rss", profile=profile)
            disk = one(scrape(server), "leanserve_artifact_size_bytes", profile=profile)
        finally:
            server.stop()
        by = {r["streams"]: r for r in runs}
        rows.append({"profile": profile, "artifact": origin, "rss_bytes": rss, "weights_bytes": disk,
                     "tokens_per_s_1": by[1]["tokens_per_s"], "tokens_per_s_8": by[8]["tokens_per_s"],
                     "ttft_s_1": by[1]["ttft_s"]})
    ref = rows[0]
    print(f"\n{'profile':<11}{'RSS GB':>8}{'weights MB':>12}{'tok/s x1':>10}{'tok/s x8':>10}{'TTFT x1':>10}"
          f"{'x1 vs ' + ref['profile']:>12}")
    for r in rows:
        print(f"{r['profile']:<11}{r['rss_bytes'] / 2**30:>8.2f}{r['weights_bytes'] / 2**20:>12.0f}"
              f"{r['tokens_per_s_1']:>10.1f}{r['tokens_per_s_8']:>10.1f}{r['ttft_s_1'] * 1000:>8.0f}ms"
              f"{r['tokens_per_s_1'] / ref['tokens_per_s_1']:>12.2f}")
    payload = {"benchmark": "profile_speed", "date": dt.date.today().isoformat(), "device": device_name(),
               "engine": f"{args.engine} (float32 on CPU)", "tokens_per_request": args.tokens,
               "repeats": args.repeats, "statistic": "median over repeats", "rows": rows}
    out = args.out or HERE / "results" / f"profile_speed-{device_slug(payload['device'])}.json"
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
