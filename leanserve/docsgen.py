"""The generated parts of docs/: the CLI reference (from the typer app) and the refused-fields table
(from protocol.REFUSED), so neither can drift from the code.

`python -m leanserve.docsgen` rewrites them; `python -m leanserve.docsgen --check` exits 1 if a file
differs from what the code says (tests/test_docs.py runs the same check).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"
BEGIN, END = "<!-- generated: {name} (python -m leanserve.docsgen) -->", "<!-- end generated: {name} -->"

CLI_HEADER = """# CLI reference

Generated from the typer app in `leanserve/cli.py` by `python -m leanserve.docsgen`; a test fails when
this file and the code disagree. `leanserve COMMAND --help` prints the same. Every option with an
environment variable also reads it (`LEANSERVE_PROFILE=nf4 leanserve serve`); a flag on the command
line wins over the variable.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _default(param: Any) -> str:
    if getattr(param, "multiple", False):
        return "(repeatable)"
    if param.required:
        return "required"
    value: Any = param.default
    if value is None:
        return ""
    if getattr(param, "is_flag", False):
        return "on" if value else "off"
    return f"`{value}`"


def _flag(param: Any) -> str:
    return " / ".join(f"`{n}`" for n in [*param.opts, *getattr(param, "secondary_opts", [])])


def _command_section(path: str, command: Any) -> list[str]:
    lines = [f"## `{path}`", "", _cell(command.help or ""), ""]
    params = [p for p in command.params if p.param_type_name == "option"]
    if params:
        lines += ["| option | env | default | what |", "|---|---|---|---|"]
        for p in params:
            env = f"`{p.envvar}`" if isinstance(p.envvar, str) else ""
            lines.append(f"| {_flag(p)} | {env} | {_default(p)} | {_cell(p.help or '')} |")
        lines.append("")
    return lines


def commands() -> list[tuple[str, Any]]:
    """Every leaf command of the typer app with its full name: [("leanserve serve", command), ...]."""
    import typer.main

    from leanserve.cli import app

    # typer ships its own copy of click, so groups and commands are told apart by attributes, not class
    def walk(prefix: str, group: Any) -> list[tuple[str, Any]]:
        out = []
        for name, command in group.commands.items():
            path = f"{prefix} {name}"
            out += walk(path, command) if hasattr(command, "commands") else [(path, command)]
        return out

    return walk("leanserve", typer.main.get_command(app))


def cli_markdown() -> str:
    """docs/cli.md: one section per command, one table row per option."""
    sections = [line for path, command in commands() for line in _command_section(path, command)]
    return "\n".join([CLI_HEADER, *sections]).rstrip() + "\n"


def refused_markdown() -> str:
    """The table of request fields the server refuses, with the message the 400 carries."""
    from leanserve.server.protocol import REFUSED

    rows = ["| field | the 400's message |", "|---|---|"]
    rows += [f"| `{field}` | {_cell(message)} |" for field, message in REFUSED.items()]
    return "\n".join(rows) + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    """`text` with the lines between the named markers replaced by `body` (the markers must exist)."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    head, sep, rest = text.partition(begin + "\n")
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise ValueError(f"markers for {name!r} not found")
    return f"{head}{begin}\n{body}{end}{tail}"


def expected(docs: Path = DOCS) -> dict[Path, str]:
    """Each generated file's text as the code says it should be."""
    api = docs / "api.md"
    return {docs / "cli.md": cli_markdown(),
            api: replace_block(api.read_text(), "refused", refused_markdown())}


def main(argv: list[str]) -> int:
    stale = [path for path, text in expected().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path} is out of date: run python -m leanserve.docsgen", file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
