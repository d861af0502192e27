"""The documentation's sources: what ``make docs`` (Sphinx, warnings as errors; CI runs it) does not check itself.

The API reference lists its modules in ``docs/api/index.rst``; the README and the guide link to files by relative
paths; the guide's ``lfeval run`` configs must stay valid as names change. Sphinx is not run here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
import tomllib

import lfeval

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
LINK = re.compile(r"\]\(([^)\s]+)\)")
TOML = re.compile(r"```toml\n(.*?)```", re.S)


def api_modules() -> list:
    """The modules of the API reference, as ``docs/api/index.rst`` lists them (``docs/conf.py`` reads the same)."""
    return re.findall(r"^   (lfeval[\w.]*)$", (DOCS / "api" / "index.rst").read_text(), re.M)


def test_every_public_module_has_an_api_page():
    """Each module the package root exports (``lfeval.data``, ``lfeval.metrics``, ...) has a page, and every listed
    module imports."""
    listed = api_modules()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    public = {"lfeval"} | {f"lfeval.{name}" for name in lfeval.__all__
                           if inspect.ismodule(getattr(lfeval, name, None))}
    assert public <= set(listed), f"public modules without an API page: {sorted(public - set(listed))}"
    for name in listed:
        importlib.import_module(name)


def test_readme_keeps_the_make_commands_first_and_links_the_docs():
    lines = README.read_text().splitlines()
    assert lines[0] == "# lfeval" and lines[2] == "```bash"
    assert [line.split()[:2] for line in lines[3:6]] == [["make", "demo"], ["make", "test"], ["make", "notebooks"]]
    text = "\n".join(lines)
    for target in ("docs/getting_started.md", "docs/api/index.rst", "benchmarks/README.md"):
        assert f"]({target})" in text, target
    assert "make docs" in text


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        assert (page.parent / target.partition("#")[0]).exists(), f"{page.name}: broken link {target}"


CONFIG_PAGES = [p for p in PAGES if TOML.search(p.read_text())]


@pytest.mark.parametrize("page", CONFIG_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_guide_configs_are_valid(page, tmp_path, monkeypatch):
    """Every ``[run]`` config shown in the guide is a valid :class:`lfeval.config.RunConfig`: its keys, explainers,
    metrics and parameters exist. The files an ``[encoders.*]`` table names (the reader's own weights) are made
    empty in a scratch folder, since the config only checks that they exist."""
    from lfeval.config import RunConfig

    blocks = [block for block in TOML.findall(page.read_text()) if block.lstrip().startswith("[run]")]
    assert blocks
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        for table in tomllib.loads(block).get("encoders", {}).values():
            for key in ("weights", "torchscript", "exported", "checkpoints"):
                for name in [table[key]] if isinstance(table.get(key), str) else table.get(key, []):
                    (tmp_path / name).touch()
        (tmp_path / f"config{i}.toml").write_text(block)
        RunConfig.from_toml(tmp_path / f"config{i}.toml")
