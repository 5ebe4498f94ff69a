"""The feature set in use, named ``module:ATTRIBUTE``: loaded and checked, a bad name stops a
command at start-up with a sentence saying what to fix, and the tables it makes capture."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from feature_pipelines import SAMPLE_FEATURES, DefinitionError
from feature_pipelines.catalog import SCORING_FEATURES
from feature_pipelines.definitions import feature_set, load_feature_set, tables_to_capture
from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings, load_settings
from tests.feature_pipelines import own_schema


def test_the_default_is_the_scoring_set_and_an_option_overrides_the_setting() -> None:
    assert feature_set(Settings()) is SCORING_FEATURES
    mine = Settings(feature_definitions="tests.feature_pipelines.own_schema:FEATURES")
    assert feature_set(mine) is own_schema.FEATURES
    assert feature_set(mine, "feature_pipelines.catalog:SAMPLE_FEATURES") is SAMPLE_FEATURES


def test_the_captured_tables_follow_the_set_in_use() -> None:
    assert tables_to_capture(Settings()) == ("payment_outcomes", "payments")
    own = Settings(feature_definitions="tests.feature_pipelines.own_schema:FEATURES")
    assert tables_to_capture(own) == ("deliveries", "orders", "payment_outcomes", "payments")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("tests.feature_pipelines.own_schema", "is not module:ATTRIBUTE: name the module, a colon"),
        (":FEATURES", "is not module:ATTRIBUTE"),
        ("tests.feature_pipelines.own_schema:", "is not module:ATTRIBUTE"),
        ("tests.feature_pipelines.no_such:FEATURES", "no module tests.feature_pipelines.no_such"),
        ("no_such_package.defs:FEATURES", "no module no_such_package: check the spelling"),
        (
            "tests.feature_pipelines.own_schema:FEATURE",
            "has no FEATURE (its FeatureSets: FEATURES, FEATURES_WITH_CANCELLED)",
        ),
        ("feature_pipelines.spec:NOPE", "has no NOPE (it holds no FeatureSet)"),
        (
            "tests.feature_pipelines.own_schema:own_features",
            "is of type function, not a FeatureSet",
        ),
        ("tests.feature_pipelines.own_schema:COURIER", "is of type Entity, not a FeatureSet"),
    ],
)
def test_a_bad_name_is_a_named_error_that_says_what_to_fix(spec: str, says: str) -> None:
    with pytest.raises(DefinitionError, match="--definitions") as caught:
        feature_set(Settings(), spec)
    assert says in str(caught.value)
    assert repr(spec) in str(caught.value)


def test_a_module_that_fails_its_own_import_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "defs_with_a_missing_dependency.py").write_text("import no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
        load_feature_set("defs_with_a_missing_dependency:FEATURES")
    sys.modules.pop("defs_with_a_missing_dependency", None)


def test_a_module_of_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As 'python -m' would (the 'freshloop' script does not put it on the path)."""
    (tmp_path / "my_shop_definitions.py").write_text(
        "from feature_pipelines import SAMPLE_FEATURES as FEATURES\n"
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.chdir(tmp_path)
    try:
        assert load_feature_set("my_shop_definitions:FEATURES") is SAMPLE_FEATURES
    finally:
        sys.modules.pop("my_shop_definitions", None)


def test_the_setting_names_where_a_bad_value_came_from() -> None:
    bad = Settings(feature_definitions="tests.feature_pipelines.own_schema:NOPE")
    with pytest.raises(DefinitionError, match="^FRESHLOOP_FEATURE_DEFINITIONS 'tests"):
        feature_set(bad)


@pytest.mark.parametrize("value", ["no_colon", "a b:C", "mod:not an attribute", "mod:1x"])
def test_a_malformed_setting_stops_at_loading(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHLOOP_FEATURE_DEFINITIONS", value)
    load_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError, match="FRESHLOOP_FEATURE_DEFINITIONS") as caught:
            load_settings()
        assert "module:ATTRIBUTE" in str(caught.value)
    finally:
        load_settings.cache_clear()


@pytest.mark.parametrize(
    "args",
    [
        ["features", "run"],
        ["features", "verify"],
        ["features", "rebuild"],
        ["features", "plan"],
        ["features", "apply", "--yes"],
        ["features", "get", "customer", "1"],
        ["features", "list"],
    ],
)
def test_every_features_command_stops_at_start_up_on_a_bad_name(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 and one line, before any service is reached (no stack runs for this test: the
    Redis and Kafka of these settings are closed ports)."""
    from freshloop.app.cli import cli

    for name, value in (
        Settings(redis_url="redis://127.0.0.1:1/0", kafka_bootstrap="127.0.0.1:1")
        .environment({})
        .items()
    ):
        monkeypatch.setenv(name, value)
    load_settings.cache_clear()
    try:
        result = CliRunner().invoke(
            cli, [*args, "--definitions", "tests.feature_pipelines.own_schema:NOPE"]
        )
    finally:
        load_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "error: --definitions 'tests.feature_pipelines.own_schema:NOPE': module" in (
        result.output
    )
