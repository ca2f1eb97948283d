"""Sphinx configuration: MyST markdown, furo, autodoc; warnings are errors (nox -s docs)."""

from __future__ import annotations

import importlib.metadata

project = "resguard"
author = "resguard developers"
copyright = "2026, resguard developers"
release = importlib.metadata.version("resguard")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "notebooks/*.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "resguard"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
nitpicky = False


def _public_bases(app: object, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Leave resguard's private implementation classes (``resguard.cache._core.CacheCore``)
    out of a class's "Bases:" line; the public bases stay."""
    bases[:] = [
        base
        for base in bases
        if not (base.__module__.startswith("resguard.") and "._" in base.__module__)
    ]


def setup(app: object) -> None:
    app.connect("autodoc-process-bases", _public_bases)  # type: ignore[attr-defined]
