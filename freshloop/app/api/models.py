"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "BIGINT_MAX",
    "MAX_BATCH_KEYS",
    "BatchRequest",
    "BatchResponse",
    "ComponentState",
    "Degraded",
    "DependencyError",
    "DependencyState",
    "DriftReportRow",
    "ErrorBody",
    "FeatureResponse",
    "Health",
    "ReplicationSlot",
    "LearnerView",
    "ModelRow",
    "ModelsResponse",
    "PredictionResponse",
    "RetrainRow",
]

BIGINT_MAX = 2**63 - 1
MAX_BATCH_KEYS = 1000


class ErrorBody(BaseModel):
    """A 4xx answer: what was wrong and what to do."""

    detail: str


class DependencyError(BaseModel):
    """A 503 answer: which backing service failed."""

    detail: str
    dependency: Literal["postgres", "redis", "kafka", "connect"]


class FeatureResponse(BaseModel):
    """One entity's feature values as served now, with how fresh they are.

    Sums and means are exact decimals written as text; counts are integers. ``found`` is false
    for a key the pipeline never wrote (its counts are then 0 and its means null)."""

    entity: str
    key: str
    found: bool
    values: dict[str, int | Decimal | None]
    commit_at: datetime | None = Field(
        description="Commit time of the newest database change reflected in these values."
    )
    written_at: datetime | None = Field(description="When the pipeline last wrote this entity.")
    read_at: datetime
    age_ms: int | None = Field(description="read_at - commit_at, in milliseconds.")


class BatchRequest(BaseModel):
    keys: list[Annotated[int, Field(ge=0, le=BIGINT_MAX)]] = Field(
        min_length=1,
        max_length=MAX_BATCH_KEYS,
        description=f"Entity keys (bigint ids), 1 to {MAX_BATCH_KEYS}.",
    )


class BatchResponse(BaseModel):
    entity: str
    results: list[FeatureResponse]


class PredictionResponse(BaseModel):
    payment_id: int
    score: float = Field(description="Probability of fraud the model gave at scoring time.")
    model_version: str
    features: dict[str, float] = Field(description="The exact vector the model scored.")
    created_at: datetime
    predicted_at: datetime


class ModelRow(BaseModel):
    version: str
    status: str
    created_at: datetime | None
    promoted_at: datetime | None
    river_version: str | None


class LearnerView(BaseModel):
    """What the learner's newest checkpoint says (metrics, counts, backlog)."""

    checkpoint_id: int
    checkpoint_at: datetime
    model_version: str
    n_learned: int
    metrics: dict[str, Any]
    counts: dict[str, Any]
    backlog: Any = None
    drift_alarms: int = 0


class ModelsResponse(BaseModel):
    namespace: str
    champion: ModelRow | None
    models: list[ModelRow]
    learner: LearnerView | None


class DriftReportRow(BaseModel):
    report_id: int
    created_at: datetime
    status: str
    champion_version: str | None
    current_start: datetime | None
    current_end: datetime | None
    summary: dict[str, Any]
    decision: dict[str, Any]
    html_url: str


class RetrainRow(BaseModel):
    retrain_id: int
    started_at: datetime
    finished_at: datetime | None
    trigger: str
    reason: str
    status: str
    report_id: int | None
    champion_version: str | None
    challenger_version: str | None
    champion_metrics: dict[str, Any] | None
    challenger_metrics: dict[str, Any] | None
    detail: str | None
    progress: dict[str, Any]


class DependencyState(BaseModel):
    ok: bool
    latency_ms: float
    detail: str


class Degraded(BaseModel):
    """A part failing on one dependency (``freshloop.core.health``)."""

    dependency: str
    since: datetime
    errors: int
    detail: str


class ComponentState(BaseModel):
    """A long-running part of this process (pipeline, scorer, learner, drift): healthy or not."""

    ok: bool
    degraded: list[Degraded] = Field(default_factory=list)


class ReplicationSlot(BaseModel):
    """The connector's replication slot: WAL it holds back and its alarm (``core.wal``)."""

    slot_name: str
    exists: bool
    active: bool
    wal_status: str | None
    retained_bytes: int
    safe_wal_size: int | None
    max_slot_wal_keep_size: str
    alarm: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    dependencies: dict[str, DependencyState]
    # The parts running in this process (``freshloop serve``) and the dependency each is
    # degraded on; empty for a standalone ``api serve``. One degraded part makes it a 503.
    components: dict[str, ComponentState] = Field(default_factory=dict)
    # Alarms do not make the answer a 503: the API still serves while the slot falls behind.
    alarms: list[str] = Field(default_factory=list)
    replication_slot: ReplicationSlot | None = None
