"""The docs stand on their own: the configuration reference is generated from config.py and up
to date, every local link resolves, and nothing points at a design file outside the repo."""

from __future__ import annotations

import re

import pytest

from nabu_pipeline import config_docs

from .conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_configuration_reference_is_up_to_date():
    assert config_docs.DOC_PATH.read_text(encoding="utf-8") == config_docs.render(), (
        "docs/CONFIGURATION.md is out of date: run python -m nabu_pipeline.config_docs"
    )


def test_every_config_key_has_a_docstring():
    assert config_docs.undocumented() == []


def test_reference_lists_every_key():
    from nabu_pipeline.config import NabuConfig

    text = config_docs.DOC_PATH.read_text(encoding="utf-8")

    def keys(data: dict, prefix: str = ""):
        for name, value in data.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{name}.")
            yield f"{prefix}{name}"

    for section, values in NabuConfig().model_dump().items():
        assert f"## `{section}`" in text
        for key in keys(values, f"{section}."):
            assert f"| `{key}` |" in text, key


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_local_links_resolve(doc):
    assert doc.is_file()
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_readme_links_the_docs_and_keeps_its_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("docs/ARCHITECTURE.md", "docs/CONFIGURATION.md", "docs/RESULTS.md"):
        assert f"]({page})" in readme, page
    assert "](CONTRIBUTING.md)" in readme
    # The set-up installs PortAudio's headers first, so `nabu mic` works out of the box.
    assert "portaudio19-dev && \\\n    python3 -m venv .venv" in readme
    assert "pip install -e '.[mic]' && .venv/bin/nabu serve" in readme
    test_command = next(
        line.strip() for line in readme.splitlines() if "install -q -e '.[test]'" in line
    )
    assert test_command.endswith(".venv/bin/python -m pytest"), test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines(), "CI must run exactly the README's test command"


def test_nothing_refers_to_a_design_file_outside_the_repository():
    name = "DESIGN" + ".md"
    skip = {".git", ".venv", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}
    mentions = []
    for path in ROOT.rglob("*"):
        if skip & set(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".md", ".toml", ".yaml", ".txt", ".js", ".html", ""}:
            if name in path.read_text(encoding="utf-8", errors="ignore"):
                mentions.append(str(path.relative_to(ROOT)))
    assert mentions == []
