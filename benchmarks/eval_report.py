"""The committed side-by-side report: every built profile of the default model evaluated through its own
HTTP API (the transformers engine unless --engine says otherwise; GGUF profiles on llamacpp), then
`leanserve report` into benchmarks/results/report-<device>/.

What `leanserve eval --profile P` does, with one server per profile and a per-suite budget that a 2-core
CPU finished in 1.5-2 minutes a profile on 2026-12-03 (the budgets are written into the report's JSON):

    python benchmarks/eval_report.py [--home ~/.cache/leanserve] [--profiles bf16 nf4 ...]

Profiles without an artifact are skipped (build them with `leanserve compress --profile P` first).
Each profile's results go to evals-<profile>-<engine>.json in the output folder (a committed report, not
`leanserve eval`'s default <home>/results/; the artifacts are only read), and the report is drawn from
every evals-*.json there, as `leanserve report --results FILE ...` would: profiles can be evaluated one run at a time and the report grows;
`--suites speed` re-measures one suite into the results already there. The whole WikiText-2 test split,
kept apart from the budgeted report:

    python benchmarks/eval_report.py --suites wikitext2 --wikitext2-windows 0 --out benchmarks/results/wikitext2-full-cpu

`--full` scores every profile on the whole WikiText-2 test split, 20 MMLU questions a subject and all of
ARC-Challenge; with `--engine auto` each profile runs on the fastest engine that serves it:

    LEANSERVE_VLLM_PYTHON=.venv-vllm/bin/python python benchmarks/eval_report.py --full --engine auto --out DIR

`--model FILE.gguf --profiles bf16` evaluates a GGUF file served as it is (llamacpp): the base model
converted to an F32 GGUF is the bf16 reference on llama.cpp, so GGUF profiles compare on one engine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from leanserve import models  # noqa: E402
from leanserve.evals import report, runner  # noqa: E402
from leanserve.evals.suites import SuiteOptions  # noqa: E402
from leanserve.paths import data_root, default_home  # noqa: E402
from leanserve.profiles.registry import get_profile  # noqa: E402
from leanserve.profiles.spec import serves_gguf  # noqa: E402
from leanserve.profiles.store import artifact_dir, read_manifest  # noqa: E402

PROFILES = ["bf16", "gptq-8", "int8", "q8_0", "gptq-4", "awq-4", "autoround-4", "q4_k_m", "q5_k_m", "nf4",
            "int8-gblm", "pruned", "distilled"]
# suite -> SuiteOptions fields: the CPU budget. MMLU: one question per subject. BBH is not run: under a CPU
# budget its chain-of-thought answers do not finish and every profile scores 0 (see evals/report.py LEFT_OUT).
BUDGET: dict[str, dict] = {
    "wikitext2": {"limit": 16},
    "mmlu": {"limit": 1},
    "arc-challenge": {"limit": 20},
    "speed": {},
}
# --full: what a report people pick a profile from needs. The whole WikiText-2 test split, 20 MMLU questions
# a subject (1,140: about +-3 points at 95%) and every ARC-Challenge test question (1,172). About 32-50
# minutes a profile on 2 CPU cores by engine, scaled from a 16-window run (docs/evals.md#budgets-what-a-run-costs-on-a-cpu).
FULL_BUDGET: dict[str, dict] = {
    "wikitext2": {"limit": None},
    "mmlu": {"limit": 20},
    "arc-challenge": {"limit": None},
    "speed": {},
}


def engine_for(prefer: list[str], wanted: str) -> str:
    """`wanted` if the profile lists it among its engines (or lists none), else the profile's first: GGUF
    profiles are served by llama.cpp whatever engine the other rows use. `auto` stays: `serve --engine auto`
    picks per profile (the fastest measured engine, vLLM from LEANSERVE_VLLM_PYTHON where set)."""
    return wanted if wanted == "auto" or not prefer or wanted in prefer else prefer[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=default_home())
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    ap.add_argument("--suites", nargs="+", default=list(BUDGET), choices=list(BUDGET),
                    help="re-run only these (e.g. speed, on a quiet machine); the others' results are kept")
    ap.add_argument("--engine", default="transformers",
                    help="engine of every profile that lists it (GGUF: llamacpp); auto: the fastest for each")
    ap.add_argument("--full", action="store_true",
                    help="the whole-test budget: every WikiText-2 window, 20 MMLU questions a subject, all of ARC")
    ap.add_argument("--wikitext2-windows", type=int, default=BUDGET["wikitext2"]["limit"],
                    help="WikiText-2 windows to score; 0 = the whole test split (631 windows, ~19 min a profile on 2 CPU cores)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "report-cpu")
    ap.add_argument("--model", help="serve this base model instead of the default (a .gguf file: on llamacpp)")
    args = ap.parse_args()
    if args.full and args.wikitext2_windows != BUDGET["wikitext2"]["limit"]:
        ap.error("--full scores every WikiText-2 window: leave out --wikitext2-windows")
    budget = FULL_BUDGET if args.full else {**BUDGET, "wikitext2": {"limit": args.wikitext2_windows or None}}

    args.out.mkdir(parents=True, exist_ok=True)
    for profile in args.profiles:
        spec = get_profile(profile, args.home)
        artifact = artifact_dir(args.home, models.DEFAULT_MODEL, profile)
        if spec.needs_artifact and read_manifest(artifact) is None:
            print(f"skip {profile}: not built (leanserve compress --profile {profile})", flush=True)
            continue
        print(f"=== {profile}", flush=True)
        engine = "llamacpp" if serves_gguf(spec, args.model) else engine_for(spec.engine.prefer, args.engine)
        with runner.local_server(profile, model=args.model, engine=engine, home=args.home) as (url, key):
            target = runner.connect(url, key, None)
            path = args.out / f"evals-{profile}-{target.health['engine']}.json"
            if set(args.suites) == set(BUDGET):
                path.unlink(missing_ok=True)  # a full run: this budget only; a partial one adds to what is there
            for suite in args.suites:
                run = runner.run_suites(target, [suite], SuiteOptions(data_root(), **budget[suite]), concurrency=4)
                run["options"] = {**run["options"], "budget": budget}
                runner.write_results(path, run, artifact=artifact)
    written = report.write_report(sorted(args.out.glob("evals-*.json")), args.out)
    print((args.out / "report.md").read_text())
    print("wrote", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
