"""The feature services of the fraud model: the one place its inputs are declared.

``fraud`` is the contract every model trained so far was trained on (its vector is the one
``build_vector`` made before services existed, key for key, so checkpoints and registered
models stay loadable). ``fraud_channels`` adds ``distinct_channels_24h``, computed by the
scoring pipeline all along but read by no model. ``FRESHLOOP_FEATURE_SERVICE`` chooses the one
the scorer, the learner, the drift checks and retrains use; ``freshloop training-set --service``
builds point-in-time training data for any of them.
"""

from __future__ import annotations

from feature_pipelines.catalog import FeatureSet
from feature_pipelines.definitions import feature_set
from feature_pipelines.plan import fingerprint
from feature_pipelines.services import FeatureService, resolve_service
from freshloop.core.exceptions import ConfigurationError
from freshloop.core.settings import Settings
from online_learning.features import SCORING_FEATURES

__all__ = ["DEFAULT_SERVICE", "SERVICES", "feature_service", "scoring_feature_set"]

_FRAUD_FEATURES: tuple[str, ...] = (
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

SERVICES: dict[str, FeatureService] = {
    s.name: s
    for s in (
        FeatureService(
            "fraud",
            _FRAUD_FEATURES,
            SCORING_FEATURES,
            "The fraud model's inputs since the first release (the default).",
        ),
        FeatureService(
            "fraud_channels",
            (*_FRAUD_FEATURES, "distinct_channels_24h"),
            SCORING_FEATURES,
            "The fraud inputs plus the customer's distinct channels over 24 h.",
        ),
    )
}

DEFAULT_SERVICE = "fraud"


def feature_service(settings: Settings | None = None, name: str | None = None) -> FeatureService:
    """The service ``name`` names, else the one the settings choose, else the default."""
    if name is None:
        name = DEFAULT_SERVICE if settings is None else settings.feature_service
    return resolve_service(SERVICES, name)


def scoring_feature_set(settings: Settings) -> FeatureSet:
    """The set a scoring pipeline (``serve``, ``learn serve``) computes: the set in use
    (``FRESHLOOP_FEATURE_DEFINITIONS``), the same one ``features run`` would, once it is known to
    hold every input of the chosen feature service with the same definitions."""
    features = feature_set(settings)
    service = feature_service(settings)
    have = {f.name: fingerprint(f) for f in features}
    wrong = [f.name for f in service.definitions() if have.get(f.name) != fingerprint(f)]
    if wrong:
        msg = (
            f"feature service {service.name!r} reads {', '.join(wrong)}, which the feature set "
            f"in use ({settings.feature_definitions}) does not compute as the service defines "
            "them: add them to that set (e.g. start from feature_pipelines.catalog:"
            "SCORING_FEATURES) or choose another service (FRESHLOOP_FEATURE_SERVICE)"
        )
        raise ConfigurationError(msg)
    return features
