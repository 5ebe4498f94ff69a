"""Batch retrain: recent labelled examples from Postgres -> challenger -> judged -> maybe promoted.

Steps, each recorded in the retrain's ``retrains`` row (progress in ``progress``):

1. guard: one running retrain per namespace (``RetrainLedger.start``);
2. read the examples labelled in the last ``retrain_window_s`` (at most ``retrain_max_examples``,
   the newest) from ``training_examples``, with the vectors ``retrain_vectors`` chooses: as
   logged (what the scorer served, cut to the feature service's inputs) or recomputed (the
   service's vector as of each payment's commit, from the row history, as ``freshloop
   training-set`` builds it: a feature added since, or changed, is learned from its history);
   split them by label time, the newest ``retrain_holdout_share`` held out;
3. train a fresh model of ``model_spec`` on the older part (``retrain_epochs`` passes, in time
   order);
4. judge on the holdout: the champion by the scores it served, the challenger by its own
   (``drift.challenger``); promote only if the challenger's ROC AUC wins by
   ``retrain_promote_margin`` and its log loss is not worse by more than
   ``retrain_log_loss_tolerance``;
5. the challenger then learns the holdout too (judged first, then learned, as online learning
   does), is registered as ``challenger`` either way (an operator may still promote it with
   ``freshloop learn promote``), and is promoted when it won, unless the champion changed
   meanwhile. The learner and scorers pick the promotion up from the registry and the learner
   keeps learning from it. Examples labelled after step 2 are not in the new model.

In code: ``_read`` (step 2), ``_compute`` (steps 3 and 4), ``_store`` (step 5). Any failure
closes the row as ``failed`` with the error; nothing is left ``running``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from sqlalchemy import Engine, create_engine, text

from drift.challenger import Example, Verdict, fit, holdout_metrics, judge, split
from drift.exceptions import NotEnoughExamplesError
from drift.ledger import RetrainLedger
from freshloop.core.settings import Settings
from online_learning.model import OnlineModel
from online_learning.point_in_time import Probe, scored_payments, vectors_as_of
from online_learning.registry import ModelRegistry
from online_learning.services import feature_service
from online_learning.vector import input_names

__all__ = [
    "ProgressCallback",
    "RetrainResult",
    "Trigger",
    "load_examples",
    "recomputed_inputs",
    "retrain",
    "service_inputs",
]

log = logging.getLogger(__name__)

Trigger = Literal["manual", "policy"]
ProgressCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RetrainResult:
    """The outcome of one retrain, as recorded in its ``retrains`` row."""

    retrain_id: int
    status: Literal["promoted", "kept"]
    detail: str
    champion_version: str | None
    challenger_version: str
    champion_metrics: dict[str, Any] = field(default_factory=dict)
    challenger_metrics: dict[str, Any] = field(default_factory=dict)
    n_train: int = 0
    n_holdout: int = 0
    data_start: datetime | None = None
    data_end: datetime | None = None

    @property
    def promoted(self) -> bool:
        return self.status == "promoted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_examples(engine: Engine, namespace: str, *, since: datetime, limit: int) -> list[Example]:
    """The newest ``limit`` examples labelled at or after ``since``, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT payment_id, features, label, score, labelled_at FROM training_examples "
                "WHERE namespace = :ns AND labelled_at >= :since "
                "ORDER BY labelled_at DESC, payment_id DESC LIMIT :limit"
            ),
            {"ns": namespace, "since": since, "limit": limit},
        ).all()
    return [
        Example(r.payment_id, r.features, bool(r.label), float(r.score), r.labelled_at)
        for r in reversed(rows)
    ]


def service_inputs(
    examples: list[Example], names: tuple[str, ...], served: tuple[str, ...] = ()
) -> list[Example]:
    """The examples whose logged vector holds every input in ``names``, cut to those inputs
    (in that order): a challenger learns the settings' feature service, not whatever a scorer
    under another service logged. Under the service the vectors were logged with, this keeps
    every example unchanged. A vector that holds none of the service's ``served`` features was
    not built by any feature service (a custom scorer's, a test's): it is kept as logged.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 1, tzinfo=UTC)
    >>> out = service_inputs([Example(1, {"a": 1.0, "c": 3.0, "b": 2.0}, True, 0.5, t),
    ...                       Example(2, {"c": 1.0}, False, 0.1, t),
    ...                       Example(3, {"z": 1.0}, True, 0.5, t)], ("a", "c"), ("a", "c"))
    >>> [(e.payment_id, dict(e.features)) for e in out]
    [(1, {'a': 1.0, 'c': 3.0}), (3, {'z': 1.0})]
    """
    out = []
    for e in examples:
        x = e.features
        if all(n in x for n in names):
            kept = x if len(x) == len(names) else {n: x[n] for n in names}
            out.append(replace(e, features=kept))
        elif not any(n in x for n in served):
            out.append(e)
    return out


def retrain(
    settings: Settings,
    *,
    trigger: Trigger,
    reason: str,
    report_id: int | None = None,
    on_progress: ProgressCallback | None = None,
    engine: Engine | None = None,
) -> RetrainResult:
    """Run one retrain of ``settings.namespace`` and record it; see the module docstring.

    Raises ``RetrainBusyError`` (nothing recorded) when another retrain runs, and
    ``NotEnoughExamplesError`` or any other error after recording the retrain as failed.
    """
    own_engine = engine is None
    engine = engine or create_engine(settings.sqlalchemy_url(), pool_pre_ping=True)
    try:
        ledger = RetrainLedger(engine, settings.namespace, settings.retrain_stale_after_s)
        retrain_id = ledger.start(trigger, reason, report_id)
        try:
            return _run(settings, engine, ledger, retrain_id, on_progress)
        except BaseException as exc:  # Ctrl-C included: never leave the row running
            detail = f"{type(exc).__name__}: {exc}"
            ledger.finish(retrain_id, "failed", detail)
            raise
    finally:
        if own_engine:
            engine.dispose()


@dataclass(frozen=True)
class _Data:
    """What a retrain read: the champion it judges against and its examples, split."""

    champion_version: str | None
    train: list[Example]
    holdout: list[Example]

    @property
    def start(self) -> datetime:
        return (self.train or self.holdout)[0].labelled_at

    @property
    def end(self) -> datetime:
        return self.holdout[-1].labelled_at


@dataclass(frozen=True)
class _Trained:
    """What a retrain computed: the challenger (holdout not learned yet) and the verdict."""

    challenger: OnlineModel
    champion_metrics: dict[str, Any]
    challenger_metrics: dict[str, Any]
    verdict: Verdict


def _run(
    settings: Settings,
    engine: Engine,
    ledger: RetrainLedger,
    retrain_id: int,
    on_progress: ProgressCallback | None,
) -> RetrainResult:
    """Read, compute, store: each step reports its progress into the retrain's row."""

    def progress(phase: str, pct: float, **extra: Any) -> None:
        stored = ledger.progress(retrain_id, phase, pct, **extra)
        if on_progress is not None:
            on_progress({"retrain_id": retrain_id, **stored})

    registry = ModelRegistry(
        engine, settings.namespace, settings.model_signing_key.get_secret_value().encode()
    )
    progress("reading", 0.0)
    data = _read(settings, engine, registry)
    ledger.update(
        retrain_id,
        data_start=data.start,
        data_end=data.end,
        n_train=len(data.train),
        n_holdout=len(data.holdout),
        champion_version=data.champion_version,
    )
    progress("training", 5.0, examples=len(data.train) + len(data.holdout))
    trained = _compute(settings, data, retrain_id, progress)
    progress("registering", 95.0)
    result = _store(ledger, registry, retrain_id, data, trained)
    if on_progress is not None:
        on_progress(
            {"retrain_id": retrain_id, "phase": "done", "pct": 100.0, "status": result.status}
        )
    return result


def _read(settings: Settings, engine: Engine, registry: ModelRegistry) -> _Data:
    """The champion and the window's examples, as the settings' vectors (logged or recomputed),
    split into training and holdout; too few raise ``NotEnoughExamplesError``."""
    ns = settings.namespace
    champion = registry.champion_ref()
    with engine.connect() as conn:
        db_now = conn.execute(text("SELECT now()")).scalar_one()
    since = db_now - timedelta(seconds=settings.retrain_window_s)
    loaded = load_examples(engine, ns, since=since, limit=settings.retrain_max_examples)
    service = feature_service(settings)
    if settings.retrain_vectors == "recomputed":
        examples = recomputed_inputs(settings, loaded)
        why = "had no row history (committed before it started, or pruned since)"
    else:
        examples = service_inputs(loaded, input_names(service.features), service.features)
        why = (
            f"were logged without every input of feature service {service.name!r} (scored "
            "under another service; FRESHLOOP_RETRAIN_VECTORS=recomputed learns them from the "
            "row history)"
        )
    if len(examples) < settings.retrain_min_examples:
        other = len(loaded) - len(examples)
        msg = (
            f"only {len(examples)} labelled examples of namespace {ns!r} since "
            f"{since.isoformat()}, need {settings.retrain_min_examples} "
            "(FRESHLOOP_RETRAIN_MIN_EXAMPLES / FRESHLOOP_RETRAIN_WINDOW_S)"
            + (f"; {other} more {why}" if other else "")
        )
        raise NotEnoughExamplesError(msg)
    train, holdout = split(examples, settings.retrain_holdout_share)
    return _Data(None if champion is None else champion.version, train, holdout)


def recomputed_inputs(settings: Settings, examples: list[Example]) -> list[Example]:
    """``examples`` with the settings' feature service's vector as of each payment's commit,
    computed from the row history as ``freshloop training-set`` does (labels, scores and
    order kept); examples whose payment has no history are left out."""
    service = feature_service(settings)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("SET jit = off")  # many small index scans per statement
        scored = scored_payments(conn, [e.payment_id for e in examples])
        kept = [e for e in examples if e.payment_id in scored]
        probes = [
            Probe(s, s.position, s.committed_at) for s in (scored[e.payment_id] for e in kept)
        ]
        vectors = vectors_as_of(conn, service, probes)
    return [replace(e, features=x) for e, x in zip(kept, vectors, strict=True)]


def _compute(
    settings: Settings,
    data: _Data,
    retrain_id: int,
    progress: Callable[..., None],
) -> _Trained:
    """Train a fresh challenger on the older part, judge both models on the holdout."""
    challenger = OnlineModel(settings.model_spec, f"{_name(settings)}-retrain{retrain_id}")
    fit(
        challenger,
        data.train,
        settings.retrain_epochs,
        on_step=lambda done, total: progress(
            "training", 5.0 + 80.0 * done / total, learned=done, of=total
        ),
    )
    progress("evaluating", 85.0)
    labels = [e.label for e in data.holdout]
    champion_metrics = holdout_metrics(labels, [e.score for e in data.holdout])
    challenger_metrics = holdout_metrics(
        labels, [challenger.predict_proba(e.features) for e in data.holdout]
    )
    verdict = judge(
        champion_metrics,
        challenger_metrics,
        margin=settings.retrain_promote_margin,
        log_loss_tolerance=settings.retrain_log_loss_tolerance,
    )
    return _Trained(challenger, champion_metrics, challenger_metrics, verdict)


def _store(
    ledger: RetrainLedger,
    registry: ModelRegistry,
    retrain_id: int,
    data: _Data,
    trained: _Trained,
) -> RetrainResult:
    """Learn the holdout too, register the challenger, promote it when it won and the champion
    is still the one judged, and close the retrain's row."""
    challenger, verdict = trained.challenger, trained.verdict
    fit(challenger, data.holdout)  # judged first, then learned: the newest examples count too
    registry.register(
        challenger,
        "challenger",
        {"retrain_id": retrain_id, "holdout": trained.challenger_metrics},
    )
    status: Literal["promoted", "kept"] = "kept"
    detail = verdict.detail
    if verdict.promote:
        current = registry.champion_ref()
        if current is not None and current.version != data.champion_version:
            detail = (
                f"{verdict.detail.removesuffix(': promoted')}, but the champion changed to "
                f"{current.version} during the retrain: kept"
            )
        else:
            registry.promote(challenger.version)
            status = "promoted"
    ledger.finish(
        retrain_id,
        status,
        detail,
        challenger_version=challenger.version,
        champion_metrics=trained.champion_metrics,
        challenger_metrics=trained.challenger_metrics,
        progress={"phase": "done", "pct": 100.0, "updated_at": datetime.now(UTC).isoformat()},
    )
    return RetrainResult(
        retrain_id=retrain_id,
        status=status,
        detail=detail,
        champion_version=data.champion_version,
        challenger_version=challenger.version,
        champion_metrics=trained.champion_metrics,
        challenger_metrics=trained.challenger_metrics,
        n_train=len(data.train),
        n_holdout=len(data.holdout),
        data_start=data.start,
        data_end=data.end,
    )


def _name(settings: Settings) -> str:
    last = settings.model_spec.split("|")[-1].strip()
    return last.rpartition(".")[2].lower() or "model"
