"""Where things live in feature_pipelines: the Redis scripts are ``.lua`` files shipped with the
package, and the reference implementations only the tests use stay out of the runtime."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import tomllib
from importlib.resources import files
from pathlib import Path

import feature_pipelines
from feature_pipelines import readout, windows
from feature_pipelines.lua import script

ROOT = Path(__file__).resolve().parents[2]
_PACKAGES = ("freshloop", "connectors", "feature_pipelines", "online_learning", "drift")


def test_every_lua_file_loads_and_ships_as_package_data() -> None:
    names = sorted(
        p.name for p in files("feature_pipelines.lua").iterdir() if p.name.endswith(".lua")
    )
    assert {"apply", "fold_many", "int64", "read_rows", "source_record"} <= {
        name.removesuffix(".lua") for name in names
    }
    for name in names:
        assert script(name.removesuffix(".lua")).startswith("-- ")  # each says what it is
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["feature_pipelines"]
    for name in names:
        assert any(fnmatch.fnmatch(f"lua/{name}", p) for p in patterns), name


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_runtime_never_imports_the_reference() -> None:
    users = [
        str(path.relative_to(ROOT))
        for package in _PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "reference.py" and "feature_pipelines.reference" in _imports(path)
    ]
    assert users == []


def test_the_reference_implementations_live_apart() -> None:
    assert not hasattr(windows, "Contributor") and not hasattr(windows, "contribution")
    assert not hasattr(readout, "read_values") and not hasattr(readout, "expired_fields")
    assert importlib.util.find_spec("feature_pipelines.memory") is None
    assert Path(feature_pipelines.__file__).with_name("reference.py").exists()
