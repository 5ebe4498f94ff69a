"""The command line starts without the stages' heavy imports, and the stages' lazy public names
all resolve."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["drift", "online_learning", "feature_pipelines"])
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")  # noqa: B009


def test_the_command_line_loads_no_model_or_statistics_library() -> None:
    code = (
        "import sys, freshloop.app.cli; "
        "print(','.join(m for m in ('scipy', 'river', 'great_expectations') if m in sys.modules))"
    )
    out = subprocess.run(  # noqa: S603 (this interpreter, fixed code)
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
