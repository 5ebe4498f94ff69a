"""Through the real stack: every write of the generator shows up as a change event."""

from __future__ import annotations

from collections import Counter

import pytest

from feature_pipelines.definitions import tables_to_capture
from freshloop.core.settings import Settings
from freshloop.simulate import WorkloadConfig, run_simulation

pytestmark = pytest.mark.integration


def test_every_generated_write_arrives_as_an_event(pipeline: Settings, topic_reader) -> None:
    """Every write to a captured table (the sample set's and the learning loop's)."""
    tables = tables_to_capture(pipeline)
    assert set(tables) == {"payments", "payment_outcomes"}
    reader = topic_reader([pipeline.topic(t) for t in tables])
    config = WorkloadConfig(
        rate=60,
        customers=40,
        merchants=10,
        label_delay_s=1.0,
        seed=99,
        delete_share=0.05,
        correction_share=0.1,
    )
    report = run_simulation(pipeline, config, duration_s=5)
    assert report.count("payments", "c") >= 250 and report.count("payments", "d") > 0
    ids = {
        "payments": ("payment_id", report.payment_ids),
        "payment_outcomes": ("payment_id", report.payment_ids),
    }

    def tally(records) -> Counter:
        counts: Counter = Counter()
        for r in records:
            table = r["topic"].rsplit(".", 1)[1]
            column, wanted = ids[table]
            if r["value"] is not None and r["key"][column] in wanted:
                counts[(table, r["value"]["op"])] += 1
        return counts

    expected = Counter({k: v for k, v in report.writes.items() if v and k[0] in tables})
    got = tally(reader.read_until(lambda rs: tally(rs) == expected, timeout=60))
    assert got == expected
