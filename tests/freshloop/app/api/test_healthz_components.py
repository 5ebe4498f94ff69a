"""`/healthz` names each degraded part of the process and its dependency (freshloop.core.health)."""

from __future__ import annotations

import pytest

from freshloop.core.health import HEALTH
from tests.freshloop.app.api.fixtures import ApiHandle, api, api_ns

__all__ = ["api", "api_ns"]  # fixtures, re-exported for pytest

pytestmark = pytest.mark.integration


def test_a_degraded_part_is_a_503_naming_it_and_its_dependency(api: ApiHandle) -> None:
    HEALTH.clear()
    try:
        HEALTH.register("learner")
        healthy = api.http.get("/healthz")
        assert healthy.status_code == 200, healthy.text
        assert healthy.json()["components"] == {"learner": {"ok": True, "degraded": []}}

        HEALTH.degraded("scorer", "kafka", "3 predictions not acknowledged by Kafka in 10s")
        HEALTH.degraded("scorer", "kafka", "3 predictions not acknowledged by Kafka in 10s")
        answer = api.http.get("/healthz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "degraded"
        assert all(d["ok"] for d in body["dependencies"].values())  # the services answer
        (degraded,) = body["components"]["scorer"]["degraded"]
        assert degraded["dependency"] == "kafka" and degraded["errors"] == 2
        assert "not acknowledged" in degraded["detail"]
        assert body["components"]["scorer"]["ok"] is False

        HEALTH.healthy("scorer", "kafka")
        assert api.http.get("/healthz").status_code == 200
    finally:
        HEALTH.clear()
