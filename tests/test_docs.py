"""The README and docs/ stay true: generated parts match the code, links resolve, one unit convention,
no internal jargon, and the README stays a short guide."""

from __future__ import annotations

import re

import pytest

from leanserve import docsgen
from tests.docs import ROOT, anchors, blocks, doc_files, links, prose

pytestmark = pytest.mark.unit

# Pages other branches write at the same time; a link to one is checked once the file exists.
ELSEWHERE: set[str] = set()
# The pages these checks own (the README and what docsgen and this branch write).
OWNED = ["README.md", "docs/api.md", "docs/benchmarks.md", "docs/cli.md", "docs/docker.md", "docs/engines.md", "docs/evals.md",
         "docs/metrics.md",
         "docs/profiles.md", "docs/quality.md", "docs/reliability.md", "docs/troubleshooting.md"]
JARGON = [r"seed 000", r"\bissue \d", r"\bthe team\b", r"\bCB\b", r"\.ci/run", r"\bsession\b", r"seen by"]


def test_generated_docs_match_the_code() -> None:
    for path, text in docsgen.expected().items():
        assert path.read_text() == text, f"{path} is out of date: run python -m leanserve.docsgen"


def test_cli_reference_has_every_command_and_serve_flag() -> None:
    from leanserve.settings import serve_flags

    text = (ROOT / "docs/cli.md").read_text()
    for command in ("serve", "compress", "fit", "loadtest", "profiles", "eval", "report", "models pull", "models list"):
        assert f"## `leanserve {command}`" in text
    for flag in serve_flags():
        assert f"`--{flag.name.replace('_', '-')}`" in text


def test_readme_is_a_short_guide_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    make_targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for target in ("serve", "test", "loadtest", "bench"):
        assert f"make {target}" in text and target in make_targets
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in doc_files()])
def test_links_resolve(page: str) -> None:
    path = ROOT / page
    for target in links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if rel in ELSEWHERE and not dest.exists():
            continue
        assert dest.exists(), f"{page} links to missing {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page} links to missing anchor {target}"


@pytest.mark.parametrize("page", OWNED)
def test_one_unit_convention_and_no_internal_words(page: str) -> None:
    text = prose((ROOT / page).read_text())
    if page != "docs/cli.md":  # its help texts name the input forms `fit --vram` accepts, 12GB (SI) among them
        assert not re.findall(r"\d\s?(?:KB|MB|GB|TB)\b", text), f"{page}: write MiB/GiB"
    for word in JARGON:
        assert not re.search(word, text, flags=re.I if word != r"\bCB\b" else 0), f"{page} says {word!r}"


def test_runnable_examples_exist_and_are_python_or_bash() -> None:
    runnable = [b for path in doc_files() for b in blocks(path) if b.runnable]
    assert len(runnable) >= 4 and {b.lang for b in runnable} == {"bash", "python"}
    assert any(b.path.name == "README.md" for b in runnable)


def _cli_options() -> dict[str, set[str]]:
    """{'serve': {'--profile', ...}, 'models pull': {...}} from the typer app."""
    return {path.removeprefix("leanserve "): {o for p in command.params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
            for path, command in docsgen.commands()}


def test_leanserve_commands_in_examples_use_real_options() -> None:
    options, checked = _cli_options(), 0
    for path in doc_files():
        for block in blocks(path):
            for line in block.code.replace("\\\n", " ").splitlines():
                words = line.split("#")[0].split()
                if "leanserve" not in words[:3] or words.index("leanserve") + 1 >= len(words):
                    continue
                rest = words[words.index("leanserve") + 1:]
                command = " ".join(rest[:2]) if rest[0] == "models" else rest[0]
                assert command in options, f"{path.name}: unknown command in {line!r}"
                flags = {w.split("=")[0] for w in rest if w.startswith("--")}
                assert flags <= options[command], f"{path.name}: {sorted(flags - options[command])} in {line!r}"
                checked += 1
    assert checked >= 10
