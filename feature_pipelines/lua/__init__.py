"""The Redis scripts of the pipeline, one ``.lua`` file each beside this module.

They ship as package data (pyproject's ``[tool.setuptools.package-data]``), so an installed
wheel reads them the same way as a checkout does.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["script"]


@cache
def script(name: str) -> str:
    """The text of ``<name>.lua`` (read once)."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
