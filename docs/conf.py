"""Sphinx configuration of the lfeval documentation (``make docs``: warnings are errors, no network)."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's lfeval, also without an editable install

project = "lfeval"
author = "the lfeval authors"
copyright = "the lfeval authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build"]

# the API reference: one page per public module (api/index.rst lists them), generated at build time
autosummary_generate = True
autosummary_imported_members = False


def public_modules() -> list:
    """The modules of the API reference, as ``api/index.rst`` lists them (the one list)."""
    return re.findall(r"^   (lfeval[\w.]*)$", (HERE / "api" / "index.rst").read_text(), re.M)


def shown_elsewhere(modules: list) -> dict:
    """``{module: "Name, ..."}``: classes and functions that ``module`` re-exports (``__all__``) from a module
    that is not documented, and that an earlier page already shows. One description per object: two re-exports
    of one object would describe it twice (``lfeval.Encoder`` and ``lfeval.models.Encoder``)."""
    first, skip = {}, {}
    for name in modules:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ in modules:
                continue  # documented where it is defined; a re-export there is only an alias
            if first.setdefault(id(obj), name) != name:
                skip.setdefault(name, []).append(attr)
    return {name: ", ".join(attrs) for name, attrs in skip.items()}


autosummary_context = {"shown_elsewhere": shown_elsewhere(public_modules())}
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # an Attributes section is a field list, not a second description of a member

# the user guide is Markdown (MyST); ``#`` headings get anchors for links such as guide/ray.md#faults
myst_heading_anchors = 3

html_theme = "furo"
html_title = "lfeval"
html_static_path: list = []
