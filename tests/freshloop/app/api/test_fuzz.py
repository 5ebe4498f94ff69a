"""The API fuzzed from its own OpenAPI spec (schemathesis): valid and invalid requests to every
operation of a live server over the real stack; none may answer 5xx."""

from __future__ import annotations

import contextlib

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode

from tests.freshloop.app.api.fixtures import ApiHandle, api, api_ns

pytestmark = pytest.mark.integration

__all__ = ["api", "api_ns"]  # fixtures, re-exported for pytest

# Bounded: ~10 operations x 2-3 variants x this many examples, well under a minute.
EXAMPLES = 10


def test_no_request_generated_from_the_spec_gets_a_server_error(api: ApiHandle) -> None:
    auth = {"Authorization": f"Bearer {api.token}"}  # an admin token: every route is fuzzed
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json", headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    failures: list[str] = []
    tried = 0
    variants: list[SearchStrategy[schemathesis.Case]] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            variants.append(operation.as_strategy(generation_mode=mode))
        if "{entity}" in operation.path:  # random entities are all 404: also fuzz a real one
            variants.append(operation.as_strategy(path_parameters={"entity": "customer"}))
    for strategy in variants:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            nonlocal tried
            tried += 1
            response = case.call(base_url=api.url, timeout=30, headers=auth)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} query={case.query} "
                    f"body={case.body!r:.200} -> {response.status_code} {response.text:.300}"
                )

        with contextlib.suppress(Unsatisfiable):  # an operation without parameters has
            run()  # no invalid form to generate
    assert tried > 2 * len(operations)
    assert not failures, "\n".join(failures[:10])
