"""Every compressor job on the default model, measured: wall time, peak memory, size on disk, and
WikiText-2 test perplexity through the server's API (transformers engine), side by side with bf16.

Also GBLM against Wanda (the same pruning without the gradient term) at the same sparsity.
Prints a table; writes benchmarks/results/compress-<device>.json.

    python benchmarks/compress.py [--calib-samples N] [--calib-seq-len N] [--heal-minutes M] [--ppl-chunks 40]

Without --calib-* or --heal-minutes each profile builds with its own default recipe (the TOML's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.serve_overhead import device_name, write_result  # noqa: E402
from leanserve import models  # noqa: E402
from leanserve.evals.client import EvalClient  # noqa: E402
from leanserve.evals.perplexity import api_perplexity, wikitext2_test_text  # noqa: E402
from leanserve.paths import data_root, default_home  # noqa: E402
from leanserve.profiles.registry import get_profile  # noqa: E402
from leanserve.profiles.store import dir_size  # noqa: E402
from tests.servers import API_KEY, start_server  # noqa: E402

PROFILES = ["gptq-8", "gptq-4", "awq-4", "int8-gblm", "wanda-int8", "pruned", "distilled"]
WANDA_TOML = """name = "wanda-int8"
description = "Wanda 50% (GBLM without its gradient term) + LLM.int8(): the baseline GBLM is measured against."
method = "Wanda 50% + LLM.int8()"
bits = 8
build = "gblm"
load_quant = "int8"

[params]
sparsity = 0.5
gradient_term = false
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib-samples", type=int, help="override every profile's calib_samples")
    ap.add_argument("--calib-seq-len", type=int, help="override every profile's calib_seq_len")
    ap.add_argument("--heal-minutes", type=float, help="healing budget of pruned and distilled (default: theirs, 30)")
    ap.add_argument("--ppl-chunks", type=int, default=40, help="2000-character chunks of the test split")
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    args = ap.parse_args()

    base = models.pull_default(default_home())
    text = wikitext2_test_text(data_root())
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "models").mkdir()
        (home / "models" / base.name).symlink_to(base)
        (home / "profiles").mkdir()
        (home / "profiles" / "wanda-int8.toml").write_text(WANDA_TOML)
        rows = [measure(home, "bf16", text, args.ppl_chunks, built=None)]
        for profile in args.profiles:
            params = []
            if args.calib_samples is not None:
                params += ["--param", f"calib_samples={args.calib_samples}"]
            if args.calib_seq_len is not None:
                params += ["--param", f"calib_seq_len={args.calib_seq_len}"]
            if args.heal_minutes is not None and "heal_minutes" in get_profile(profile, home).params:
                params += ["--param", f"heal_minutes={args.heal_minutes}"]
            cmd = [sys.executable, "-m", "leanserve.cli", "compress", "--profile", profile, "--home", str(home), *params]
            subprocess.run(cmd, check=True)
            rows.append(measure(home, profile, text, args.ppl_chunks, built=home / "artifacts" / base.name / profile))

    ref = rows[0]["ppl"]
    print(f"\n{'profile':<12}{'build s':>9}{'peak RSS':>10}{'disk MB':>9}{'ppl':>9}{'x bf16':>8}  notes")
    for r in rows:
        print(f"{r['profile']:<12}{r.get('wall_time_s', 0):>9.0f}{r.get('peak_rss_gb', 0):>9.1f}G"
              f"{r['disk_mb']:>9.0f}{r['ppl']:>9.2f}{r['ppl'] / ref:>8.3f}  {r.get('notes', '')}")
    payload = {"benchmark": "compress", "date": dt.date.today().isoformat(), "device": device_name(),
               "model": base.name, "calibration": {"set": "wikitext2-valid", "samples": args.calib_samples,
                                                     "seq_len": args.calib_seq_len},
               "perplexity": {"split": "wikitext-2 raw test", "chunks": args.ppl_chunks, "chunk_chars": 2000,
                              "engine": "transformers (float32, CPU)", "via": "HTTP /v1/completions echo+logprobs"},
               "rows": rows}
    write_result(HERE / "results", "compress", payload)


def measure(home: Path, profile: str, text: str, chunks: int, built: Path | None) -> dict:
    row: dict = {"profile": profile}
    if built is not None:
        m = json.loads((built / "manifest.json").read_text())
        row.update(wall_time_s=m["wall_time_s"], peak_rss_gb=m["peak_memory"]["host_rss_peak"] / 2**30,
                   disk_mb=dir_size(built) / 2**20)
        notes = {k: m[k] for k in ("sparsity_reached", "metric", "group_size", "intermediate_size", "layers_kept",
                                   "loss_first", "loss_last") if k in m}
        row["notes"] = json.dumps(notes) if notes else ""
    else:
        row["disk_mb"] = sum(f.stat().st_size for f in (home / "models").iterdir()
                             for f in f.resolve().glob("*")) / 2**20
    server = start_server("transformers", profile, home)
    try:
        with EvalClient(server.base_url, models.DEFAULT_MODEL, api_key=API_KEY) as ev:
            ppl = api_perplexity(ev, text, window_chars=2048, stride_chars=2048, max_windows=chunks)
    finally:
        server.stop()
    row.update(ppl=ppl.token_ppl, word_ppl=ppl.word_ppl, ppl_tokens=ppl.tokens)
    return row


if __name__ == "__main__":
    main()
