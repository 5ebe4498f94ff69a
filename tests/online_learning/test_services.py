"""Feature services: one declaration of a model's inputs, chosen by a setting; the default is
the contract models were trained on before services existed, key for key."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from click.testing import CliRunner

from drift.challenger import Example
from drift.retrain import service_inputs
from feature_pipelines import SAMPLE_FEATURES
from feature_pipelines.exceptions import DefinitionError, UnknownServiceError
from feature_pipelines.services import FeatureService, resolve_service, services_using
from freshloop.core.settings import Settings
from online_learning.features import SCORING_FEATURES
from online_learning.services import DEFAULT_SERVICE, SERVICES, feature_service
from online_learning.vector import SERVED_FEATURES, build_vector, input_names
from tests.online_learning.fixtures import make_payment

# The model's inputs as the hand-kept list named them before feature services: checkpoints,
# registered models and logged vectors all hold exactly these keys, in this order.
_BEFORE_SERVICES = (
    "payment_count_10m",
    "payment_count_1h",
    "payment_count_24h",
    "amount_sum_1h",
    "amount_sum_24h",
    "amount_mean_24h",
    "declined_count_24h",
    "distinct_merchants_24h",
    "payment_count_lifetime",
    "amount_sum_lifetime",
    "merchant_payment_count_1h",
    "merchant_amount_sum_24h",
    "merchant_fraud_count_7d",
)
_VECTOR_BEFORE = (
    "amount",
    "log_amount",
    "channel_web",
    "channel_app",
    "channel_pos",
    "channel_other",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    *(n for name in _BEFORE_SERVICES for n in (name, f"{name}_missing")),
    "amount_to_mean_24h",
)


def test_the_default_service_is_the_contract_models_were_trained_on() -> None:
    service = feature_service(Settings())
    assert service.name == DEFAULT_SERVICE == "fraud"
    assert service.features == SERVED_FEATURES == _BEFORE_SERVICES
    served = {name: 3 for name in _BEFORE_SERVICES} | {
        "amount_mean_24h": Decimal("12.5"),
        "distinct_channels_24h": 2,
    }
    x = build_vector(make_payment(), served, service.features)
    assert tuple(x) == _VECTOR_BEFORE == input_names(service.features)
    assert x == build_vector(make_payment(), served, _BEFORE_SERVICES)
    assert "distinct_channels_24h" not in x  # served, but not this model's input


def test_the_setting_chooses_the_service_and_its_vector() -> None:
    service = feature_service(Settings(feature_service="fraud_channels"))
    assert service.features == (*_BEFORE_SERVICES, "distinct_channels_24h")
    x = build_vector(make_payment(), {"distinct_channels_24h": 2}, service.features)
    assert x["distinct_channels_24h"] == 2.0
    assert tuple(x) == input_names(service.features)


def test_an_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(UnknownServiceError, match="choose one of fraud, fraud_channels"):
        feature_service(Settings(feature_service="fraud_v9"))
    with pytest.raises(UnknownServiceError):
        resolve_service(SERVICES, "nope")


def test_a_service_is_checked_against_its_feature_set() -> None:
    with pytest.raises(DefinitionError, match="distinct_channels_24h, not in its feature set"):
        FeatureService("x", ("payment_count_1h", "distinct_channels_24h"), SAMPLE_FEATURES)
    with pytest.raises(DefinitionError, match="twice"):
        FeatureService("x", ("payment_count_1h", "payment_count_1h"), SAMPLE_FEATURES)
    with pytest.raises(DefinitionError, match="names no feature"):
        FeatureService("x", (), SAMPLE_FEATURES)
    with pytest.raises(DefinitionError, match="must match"):
        FeatureService("Bad Name", ("payment_count_1h",), SAMPLE_FEATURES)


def test_services_using_and_tables() -> None:
    assert services_using(SERVICES.values(), "payment_count_1h") == ("fraud", "fraud_channels")
    assert services_using(SERVICES.values(), "distinct_channels_24h") == ("fraud_channels",)
    assert SERVICES["fraud"].tables() == ("payment_outcomes", "payments")
    assert {f.name for f in SCORING_FEATURES} == {n for s in SERVICES.values() for n in s.features}


def test_retrain_learns_the_services_inputs_only() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    served = feature_service(Settings()).features
    names = input_names(served)
    full = dict.fromkeys(names, 1.0)
    logged = [
        Example(1, full, True, 0.5, t),  # as logged under the service: kept unchanged
        Example(2, full | {"distinct_channels_24h": 1.0}, False, 0.1, t),  # cut to the inputs
        Example(3, {k: v for k, v in full.items() if k != "amount"}, False, 0.1, t),  # dropped
    ]
    out = service_inputs(logged, names, served)
    assert [e.payment_id for e in out] == [1, 2]
    # a vector no feature service built (a custom scorer's) is kept as logged
    custom = Example(4, {"a": 1.0}, True, 0.5, t)
    assert service_inputs([custom], names, served) == [custom]
    assert out[0].features is full
    assert tuple(out[1].features) == names


def test_features_list_shows_every_feature_and_its_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from freshloop.app import cli as cli_module

    monkeypatch.setattr(cli_module, "_settings", lambda: Settings(feature_service="fraud"))
    result = CliRunner().invoke(cli_module.cli, ["features", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for f in SCORING_FEATURES:
        assert sum(line.startswith(f"{f.entity.name}.{f.name}:") for line in lines) == 1
    channels = next(x for x in lines if x.startswith("customer.distinct_channels_24h:"))
    assert channels.endswith("[services: fraud_channels]")
    assert "service fraud (default, chosen): 13 features" in result.output
    assert "service fraud_channels: 14 features" in result.output


def test_the_scoring_pipeline_computes_the_set_in_use_once_it_holds_the_services_inputs() -> None:
    from freshloop.core.exceptions import ConfigurationError
    from online_learning.services import scoring_feature_set

    assert scoring_feature_set(Settings()) is SCORING_FEATURES  # the default set in use
    chosen = Settings(feature_service="fraud_channels")
    assert scoring_feature_set(chosen) is SCORING_FEATURES
    sample = Settings(
        feature_definitions="feature_pipelines.catalog:SAMPLE_FEATURES",
        feature_service="fraud_channels",
    )
    with pytest.raises(ConfigurationError, match="reads distinct_channels_24h, which the feature"):
        scoring_feature_set(sample)
    # the fraud service's inputs are all in the sample set: it can be scored over it
    assert scoring_feature_set(sample.model_copy(update={"feature_service": "fraud"})) is not None
