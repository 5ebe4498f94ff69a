"""The same contract over every model spec the wrapper supports (river ``checks/`` style)."""

from __future__ import annotations

import pickle

import pytest

from online_learning.exceptions import ModelSpecError, SignatureError
from online_learning.model import DEFAULT_SPEC, OnlineModel, build_estimator, parse_spec
from online_learning.vector import build_vector
from tests.online_learning.fixtures import KEY, OTHER_KEY, SPECS, synthetic_stream

ROWS = synthetic_stream(400, seed=3)
VECTORS = [build_vector(r.payment, r.served) for r in ROWS]
LABELS = [r.is_fraud for r in ROWS]
TRAIN, HELD_OUT = range(300), range(300, 400)


@pytest.fixture(params=sorted(SPECS))
def spec(request: pytest.FixtureRequest) -> object:
    return SPECS[request.param]


def trained(spec: object, reorder: bool = False) -> OnlineModel:
    model = OnlineModel(spec)  # type: ignore[arg-type]
    for i in TRAIN:
        x = VECTORS[i]
        model.learn(dict(reversed(list(x.items()))) if reorder else x, LABELS[i])
    return model


def _valid(p: float) -> bool:
    return isinstance(p, float) and 0.0 <= p <= 1.0


def test_untrained_model_gives_a_valid_probability(spec: object) -> None:
    model = OnlineModel(spec)  # type: ignore[arg-type]
    assert _valid(model.predict_proba({}))
    assert _valid(model.predict_proba(VECTORS[0]))
    assert model.n_learned == 0


def test_signed_round_trip_gives_identical_predictions(spec: object) -> None:
    model = trained(spec)
    loaded = OnlineModel.from_bytes(model.to_bytes(KEY), KEY)
    assert loaded.version == model.version
    assert loaded.spec == model.spec
    assert loaded.n_learned == model.n_learned == len(TRAIN)
    assert [loaded.predict_proba(VECTORS[i]) for i in HELD_OUT] == [
        model.predict_proba(VECTORS[i]) for i in HELD_OUT
    ]
    # And it keeps learning the same way.
    model.learn(VECTORS[0], True)
    loaded.learn(VECTORS[0], True)
    assert loaded.predict_proba(VECTORS[1]) == model.predict_proba(VECTORS[1])


def test_plain_pickle_round_trip_gives_identical_predictions(spec: object) -> None:
    model = trained(spec)
    copy = pickle.loads(pickle.dumps(model))  # noqa: S301 - our own bytes, in memory
    assert [copy.predict_proba(VECTORS[i]) for i in HELD_OUT] == [
        model.predict_proba(VECTORS[i]) for i in HELD_OUT
    ]


def test_missing_and_extra_features_tolerated(spec: object) -> None:
    model = trained(spec)
    x = VECTORS[HELD_OUT[0]]
    half = dict(list(x.items())[::2])
    extra = x | {"never_seen": 42.0, "also_new": -1.0}
    for features in (half, extra, {}):
        assert _valid(model.predict_proba(features))
        model.learn(features, False)


def test_feature_order_is_irrelevant(spec: object) -> None:
    model, reordered = trained(spec), trained(spec, reorder=True)
    for i in HELD_OUT:
        x = VECTORS[i]
        backwards = dict(reversed(list(x.items())))
        assert model.predict_proba(backwards) == pytest.approx(model.predict_proba(x), abs=1e-12)
        assert reordered.predict_proba(x) == pytest.approx(model.predict_proba(x), abs=1e-9)


def test_tampered_blob_or_wrong_key_refused(spec: object) -> None:
    blob = trained(spec).to_bytes(KEY)
    middle = len(blob) // 2
    tampered = blob[:middle] + bytes([blob[middle] ^ 0xFF]) + blob[middle + 1 :]
    with pytest.raises(SignatureError):
        OnlineModel.from_bytes(tampered, KEY)
    with pytest.raises(SignatureError):
        OnlineModel.from_bytes(blob, OTHER_KEY)


def test_fresh_model_has_same_spec_and_is_untrained(spec: object) -> None:
    model = trained(spec)
    fresh = model.fresh("v2")
    assert fresh.spec == model.spec and fresh.version == "v2" and fresh.n_learned == 0


def test_spec_forms_are_equivalent() -> None:
    text = "river.preprocessing.StandardScaler | river.linear_model.LogisticRegression"
    listed = [
        {"path": "river.preprocessing.StandardScaler"},
        "river.linear_model.LogisticRegression",
    ]
    assert parse_spec(text) == parse_spec(listed) == DEFAULT_SPEC
    assert OnlineModel(text).version == OnlineModel().version


def test_nested_step_params_are_built() -> None:
    spec = [
        {
            "path": "river.linear_model.LogisticRegression",
            "params": {"optimizer": {"path": "river.optim.SGD", "params": {"lr": 0.05}}},
        }
    ]
    est = build_estimator(spec)
    assert type(est.optimizer).__name__ == "SGD"
    assert OnlineModel(spec).version != OnlineModel().version


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("os.system", "inside river"),
        ("river.linear_model.NoSuchModel", "cannot import"),
        ("river.nosuchmodule.Thing", "cannot import"),
        (
            [{"path": "river.linear_model.LogisticRegression", "params": {"bogus": 1}}],
            "cannot build",
        ),
        ("river.preprocessing.StandardScaler", "classifier"),
        ([], "at least one step"),
        ([{"path": "river.tree.HoeffdingTreeClassifier", "extra": 1}], "unknown keys"),
        ([{"params": {}}], "'path' string"),
    ],
)
def test_bad_specs_are_named_errors(spec: object, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        OnlineModel(spec)  # type: ignore[arg-type]
