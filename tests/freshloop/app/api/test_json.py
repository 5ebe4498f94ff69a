"""The feature read path writes its JSON directly; it must say exactly what the response models
would (the OpenAPI schema documents those models)."""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_pipelines import EntityFeatures
from freshloop.app.api.models import BatchResponse, FeatureResponse
from freshloop.app.api.routes import _feature_dict, _json

_MS = st.integers(0, 4_102_444_800_000)  # up to 2100
_VALUES = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.one_of(
        st.none(),
        st.integers(-(2**62), 2**62),
        st.decimals(allow_nan=False, allow_infinity=False, places=2),
        st.decimals(allow_nan=False, allow_infinity=False, places=6),
        st.sampled_from([Decimal("0E-6"), Decimal("-0.000000"), Decimal("1E+3")]),
    ),
    max_size=12,
)
_ENTITIES = st.builds(
    EntityFeatures,
    entity=st.sampled_from(["customer", "merchant"]),
    key=st.integers(0, 2**63 - 1).map(str),
    values=_VALUES,
    commit_ms=st.none() | _MS,
    written_ms=st.none() | _MS,
    read_ms=_MS,
)


@settings(max_examples=300, deadline=None)
@given(entity=_ENTITIES)
def test_one_entity_is_written_as_the_model_writes_it(entity: EntityFeatures) -> None:
    data = _feature_dict(entity)
    fast = orjson.loads(_json(data).body)
    model = orjson.loads(FeatureResponse.model_validate(data).model_dump_json())
    assert fast == model


@settings(max_examples=50, deadline=None)
@given(entities=st.lists(_ENTITIES, max_size=5))
def test_a_batch_is_written_as_the_model_writes_it(entities: list[EntityFeatures]) -> None:
    data = {"entity": "customer", "results": [_feature_dict(e) for e in entities]}
    fast = orjson.loads(_json(data).body)
    assert fast == orjson.loads(BatchResponse.model_validate(data).model_dump_json())
