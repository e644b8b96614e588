"""One settings object for `serve`; its CLI flags and LEANSERVE_* environment variables are generated here.

Every field declared with `setting(default, help)` is a `serve` flag: `--field-name`, read from
`LEANSERVE_FIELD_NAME` too, with the field's default and help (cli.py builds the typer options from
`serve_flags()`). So adding a serve flag is adding one field here; no default is written twice.
A field whose flag takes another form (`--vram-budget 8GiB` -> bytes) names a `parse` function.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanserve.errors import LeanserveError
from leanserve.models import DEFAULT_MODEL
from leanserve.paths import default_home

_UNSET: Any = object()


def setting(default: Any = _UNSET, help: str = "", *, factory: Callable[[], Any] | None = None,
            cli_type: Any = None, parse: Callable[[Any], Any] | None = None, **option: Any) -> Any:
    """A Settings field that is also a `serve` flag. `option` goes to typer.Option (min=, max=);
    `cli_type`/`parse`: the flag's own type and how its value becomes the field's (default: the same)."""
    meta = {"help": help, "cli_type": cli_type, "parse": parse, "option": option}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _vram(text: str | None) -> int | None:
    from leanserve.fit import parse_bytes

    return parse_bytes(text) if text else None


def _home(path: Path | None) -> Path:
    return path.expanduser() if path else default_home()


@dataclass(frozen=True)
class Settings:
    model: str | None = setting(None, f"Base model: a local HF directory, a hub id, or '{DEFAULT_MODEL}' (the default).")
    profile: str = setting("bf16", "Compression profile (see `leanserve profiles`).")
    engine: str = setting("auto", "auto, vllm, transformers or llamacpp.")
    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.")
    device: str = setting("auto", "auto, cpu or cuda.")
    dtype: str = setting("auto", "auto (bfloat16 on GPUs, float32 on CPUs: docs/engines.md says why), "
                         "float32, bfloat16, float16.")
    max_model_len: int | None = setting(None, "Context window in tokens (default: the model's).")
    # any of these keys opens every route but /health; empty: no auth. From --api-key and --api-keys-file.
    api_keys: tuple[str, ...] = ()
    public_metrics: bool = setting(False, "Serve /metrics without the API key.")
    served_model_name: str | None = setting(None, "The `model` name clients send (default: the model's name).")
    max_body_bytes: int = setting(4 * 1024 * 1024, "Larger request bodies get 413.")
    max_n: int = setting(8, "Most choices (n x prompts) one request may ask for.")
    max_queue: int | None = setting(None, "Most generation requests in flight (running or waiting); past it 429 with "
                                    "Retry-After (default: no limit).", min=1)
    request_timeout: float | None = setting(None, "Seconds a generation request may take; past it, it is aborted "
                                            "with 504 (default: no limit).", min=0.001)
    body_timeout: float = setting(30.0, "Seconds a generation request's body may take to arrive (read before it "
                                  "takes a --max-queue slot); past it 408.", min=0.001)
    header_timeout: float = setting(10.0, "Seconds a connection may take to send a request's headers; past it the "
                                    "connection is closed.", min=0.001)
    shutdown_grace: float = setting(30.0, "On SIGTERM, seconds running requests get to finish while new ones get 503.",
                                    min=0)
    flash_attn: bool = setting(False, "llamacpp only: flash attention (1.2x the decode speed on a 2-core CPU, but "
                               "q8_0's perplexity +0.19%; docs/engines.md). Other engines refuse it.")
    trust_remote_code: bool = setting(False, "Allow model code from the checkpoint (off: safer).")
    skip_verify: bool = setting(False, "Do not check an artifact's files against its manifest's sha256 at startup.")
    vram_budget: int | None = setting(None, "GPU memory to stay within, e.g. 8GiB: sizes vLLM's memory share and caps "
                                      "--max-model-len to what fits; on llamacpp, sets how many layers go to the GPU "
                                      "(see `leanserve fit`); informational on CPU.",
                                      cli_type=str | None, parse=_vram)
    log_level: str = setting("info", "Log level: debug, info, warning, error.")
    home: Path = setting(factory=default_home, help="Where models, artifacts, results and profiles live "
                         "(default: $LEANSERVE_HOME or ~/.cache/leanserve).", cli_type=Path | None, parse=_home)


@dataclass(frozen=True)
class Flag:
    """One `serve` flag, as cli.py turns it into a typer option."""

    name: str
    type: Any
    default: Any
    help: str
    option: dict[str, Any]

    @property
    def envvar(self) -> str:
        return f"LEANSERVE_{self.name.upper()}"


# Flags that are not fields themselves: together they give Settings.api_keys.
KEY_FLAGS = (
    Flag("api_key", str | None, None, "Require 'Authorization: Bearer KEY' on every route but /health (/docs and "
         "/openapi.json too).", {}),
    Flag("api_keys_file", Path | None, None, "File of accepted keys, one per line ('#' lines are comments); adds to "
         "--api-key.", {}),
)


def serve_flags() -> list[Flag]:
    """Every `serve` flag: one per Settings field declared with `setting`, then the key flags."""
    hints = typing.get_type_hints(Settings)
    flags = []
    for f in dataclasses.fields(Settings):
        if "help" not in f.metadata:
            continue
        default = None if f.default is dataclasses.MISSING else f.default  # a factory's flag defaults to None
        flags.append(Flag(f.name, f.metadata["cli_type"] or hints[f.name], default, f.metadata["help"],
                          f.metadata["option"]))
    return [*flags, *KEY_FLAGS]


def settings_from_flags(values: dict[str, Any]) -> Settings:
    """Settings from the flags' values (as `serve_flags()` names them)."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        if f.name in values:
            parse = f.metadata.get("parse")
            kwargs[f.name] = parse(values[f.name]) if parse else values[f.name]
    api_key, keys_file = values.get("api_key"), values.get("api_keys_file")
    keys = ((api_key,) if api_key else ()) + (read_api_keys(keys_file) if keys_file else ())
    if keys_file and len(keys) == (1 if api_key else 0):
        raise LeanserveError(f"--api-keys-file {keys_file} has no keys", param="api_keys_file")
    return Settings(**kwargs, api_keys=keys)


def read_api_keys(path: Path) -> tuple[str, ...]:
    """Keys from a file: one per line; blank lines and lines starting with `#` are ignored (a `#` inside
    a key is part of it, so any generated key works)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LeanserveError(f"cannot read the API keys file {path}: {exc}", param="api_keys_file") from exc
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
