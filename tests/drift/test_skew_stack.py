"""The skew audit against the real Postgres: payments with a row history, examples logged for
them, some read at a neighbouring commit (tolerated), one changed (beyond the tolerance); the
audit, its CLI and the drift check's section say which."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from drift.check import run_check
from drift.skew_audit import audit
from freshloop.app.cli import cli
from freshloop.core.settings import Settings, load_settings
from online_learning.point_in_time import Probe, vectors_as_of
from online_learning.services import feature_service
from tests.drift.history_fixtures import HistoryWorld, log_examples, write_payments
from tests.drift.retrain_fixtures import drift_ns

__all__ = ["drift_ns"]

pytestmark = pytest.mark.integration


def _neighbour_vector(settings: Settings, world: HistoryWorld, pid: int) -> dict[str, float]:
    """The payment's vector as of the next payment's commit (same customer and merchant,
    committed a few milliseconds later), read at its own commit: what a scorer whose batch
    also held that next insert served."""
    i = world.ids.index(pid)
    later = world.scored[world.ids[i + len(world.customers)]]
    s = world.scored[pid]
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return vectors_as_of(
            conn, feature_service(settings), [Probe(s, later.position, s.committed_at)]
        )[0]


@pytest.fixture
def skewed(drift_ns: Settings) -> tuple[Settings, HistoryWorld, int, int]:
    world = write_payments(drift_ns, 24, customers=3)
    tolerated, beyond = world.ids[6], world.ids[10]
    neighbour = _neighbour_vector(drift_ns, world, tolerated)
    logged = log_examples(drift_ns, world, changes={tolerated: neighbour})
    assert logged[tolerated]["payment_count_lifetime"] != 0
    # the beyond one: a merchant input no commit ever gave
    with psycopg.connect(drift_ns.postgres_conninfo(), autocommit=True) as conn:
        x = {**logged[beyond], "merchant_amount_sum_24h": 0.0}
        conn.execute(
            "UPDATE training_examples SET features = %s::jsonb WHERE namespace = %s "
            "AND payment_id = %s",
            (json.dumps(x), drift_ns.namespace, beyond),
        )
    return drift_ns, world, tolerated, beyond


def test_the_audit_tells_tolerated_from_beyond(
    skewed: tuple[Settings, HistoryWorld, int, int],
) -> None:
    settings, world, tolerated, beyond = skewed
    summary = audit(settings, limit=100)
    assert summary.sampled == 24 and summary.no_history == 0
    assert summary.examples == {"exact": 22, "tolerated": 1, "beyond": 1}
    skew = summary.inputs["merchant_amount_sum_24h"]
    assert (skew.compared, skew.beyond) == (24, 1)
    assert skew.largest[0].payment_id == beyond and skew.largest[0].logged == 0.0
    assert skew.largest[0].recomputed > 0
    assert summary.skewed_inputs == ["merchant_amount_sum_24h"]
    assert summary.status == "warning"
    assert summary.inputs["payment_count_lifetime"].tolerated == 1  # the neighbour's count

    # without a tolerance, the neighbour's vector is skew too
    strict = audit(settings.model_copy(update={"skew_tolerance_s": 0.0}), limit=100)
    assert strict.examples.get("beyond") == 2
    assert strict.inputs["payment_count_lifetime"].beyond == 1

    # a tolerated share: the warning needs more than the setting's share beyond
    lenient = audit(settings.model_copy(update={"skew_max_share": 0.1}), limit=100)
    assert lenient.status == "ok"
    # bounded: the newest N only
    assert audit(settings, limit=5).sampled == 5


def test_the_cli_and_the_drift_check_report_it(
    skewed: tuple[Settings, HistoryWorld, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, _world, _tolerated, beyond = skewed
    for key, value in settings.environment({}).items():
        monkeypatch.setenv(key, value)
    load_settings.cache_clear()
    try:
        out = CliRunner().invoke(cli, ["skew", "report", "--json"])
    finally:
        load_settings.cache_clear()
    assert out.exit_code == 1, out.output  # a warning
    body = json.loads(out.stdout)
    assert body["status"] == "warning" and body["compared"] == 24
    assert body["inputs"]["merchant_amount_sum_24h"]["largest"][0]["payment_id"] == beyond

    report = run_check(settings.model_copy(update={"skew_sample": 50}))
    assert report.report["skew"]["status"] == "warning"
    assert report.summary["skew_status"] == "warning"
    assert report.summary["skew_beyond_share"] == pytest.approx(1 / 24, abs=1e-6)
    assert "Online/offline skew" in report.html and "merchant_amount_sum_24h" in report.html

    off = run_check(settings.model_copy(update={"skew_sample": 0}))
    assert off.report["skew"] is None and "skew_status" not in off.summary
