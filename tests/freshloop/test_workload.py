"""The sample workload is reproducible, keeps its rate, and its fraud pattern is learnable."""

from __future__ import annotations

from collections import Counter

from freshloop.simulate import Op, Workload, WorkloadConfig


def _run(config: WorkloadConfig, seconds: float, step: float = 0.05) -> list[tuple[float, Op]]:
    workload = Workload(config)
    out: list[tuple[float, Op]] = []
    t = 0.0
    while t < seconds:
        out += [(t, op) for op in workload.due(t)]
        t += step
    out += [(seconds, op) for op in workload.drain()]
    return out


def test_same_seed_same_operations_and_another_seed_differs() -> None:
    config = WorkloadConfig(rate=40, seed=3)
    first = [op for _, op in _run(config, 20)]
    assert first == [op for _, op in _run(config, 20)]
    other = [op for _, op in _run(WorkloadConfig(rate=40, seed=4), 20)]
    assert first != other


def test_rate_and_follow_ups() -> None:
    ops = [op for _, op in _run(WorkloadConfig(rate=50, seed=1), 40)]
    kinds = Counter(op.kind for op in ops)
    assert kinds["insert_payment"] == 50 * 40
    deleted = {op.payment for op in ops if op.kind == "delete_payment"}
    assert deleted, "some payments are deleted"
    assert kinds["correct_amount"] > 0
    assert {op.status for op in ops if op.kind == "update_status"} == {
        "approved",
        "declined",
        "refunded",
    }
    # every payment not deleted gets exactly one outcome, none before its insert
    seen: set[int] = set()
    outcomes: Counter[int] = Counter()
    for op in ops:
        if op.kind == "insert_payment":
            seen.add(op.payment)
        else:
            assert op.payment in seen
        if op.kind == "insert_outcome":
            outcomes[op.payment] += 1
    assert set(outcomes) == seen - deleted and set(outcomes.values()) == {1}
    # nothing happens to a payment after its delete
    after_delete = set()
    for op in ops:
        assert op.payment not in after_delete
        if op.kind == "delete_payment":
            after_delete.add(op.payment)


def test_fraud_is_bursty_risky_and_changes_at_drift() -> None:
    config = WorkloadConfig(rate=100, seed=11, drift_at=60)
    timed = _run(config, 120)
    payments = [(t, op) for t, op in timed if op.kind == "insert_payment"]
    fraud_before = [op for t, op in payments if op.is_fraud and t < 60 and op.amount >= 400]
    fraud_after = [op for t, op in payments if op.is_fraud and t >= 60 and op.amount >= 400]
    assert fraud_before and fraud_after
    assert {op.channel for op in fraud_before} == {"app"}
    assert {op.channel for op in fraud_after} == {"web"}
    risky_before = {op.merchant for op in fraud_before}
    risky_after = {op.merchant for op in fraud_after}
    assert len(risky_before) <= config.risky_merchants and not risky_before & risky_after
    share = sum(op.is_fraud for _, op in payments) / len(payments)
    assert 0.02 < share < 0.12
    normal = [op.amount for t, op in payments if not op.is_fraud]
    half = len(normal) // 2
    assert sorted(normal[half:])[len(normal[half:]) // 2] > sorted(normal[:half])[half // 2]
