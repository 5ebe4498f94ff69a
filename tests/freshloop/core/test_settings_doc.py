"""The README's configuration reference is the one generated from the settings object."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshloop.core.settings import Settings
from freshloop.core.settings_doc import BEGIN, END, reference_table, replace_block

README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_setting_is_described() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not (f.description or "").strip()]
    assert missing == [], f"give these settings a description: {missing}"


def test_readme_table_is_generated_from_the_settings() -> None:
    text = README.read_text()
    assert replace_block(text, reference_table()) == text, (
        "README's configuration table is out of date: run "
        "'freshloop config reference --write README.md'"
    )
    for name in Settings.model_fields:
        assert f"`FRESHLOOP_{name.upper()}`" in text


def test_secrets_are_not_printed() -> None:
    rows = {row.split("`")[1]: row for row in reference_table().splitlines()[2:]}
    secrets = 0
    for name, info in Settings.model_fields.items():
        secret = getattr(info.default, "get_secret_value", None)
        if secret is not None:
            secrets += 1
            assert secret() not in rows[f"FRESHLOOP_{name.upper()}"], name
    assert secrets >= 3  # the passwords and the signing key


def test_markers_are_required() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_block("no markers here", "table")
    assert replace_block(f"a\n{BEGIN}\nold\n{END}\nb", "new") == f"a\n{BEGIN}\nnew\n{END}\nb"
