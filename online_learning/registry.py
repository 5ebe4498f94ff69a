"""The model registry in Postgres: versions, one champion per namespace, signed blobs.

A retrain (elsewhere) registers a model as ``challenger`` and ``promote``s it; the promotion
retires the old champion in the same transaction (a partial unique index allows one champion).
Scorers and the learner poll ``champion_ref()`` — a cheap row without the blob — and load the
blob only when the champion's version or promotion time changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import river
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from online_learning.exceptions import RegistryError
from online_learning.model import OnlineModel
from online_learning.tables import REGISTRY

__all__ = ["ChampionRef", "ModelRegistry", "Status"]

log = logging.getLogger(__name__)

Status = Literal["champion", "challenger", "retired"]


@dataclass(frozen=True)
class ChampionRef:
    """Which model is champion, and since when (a re-promotion is a change too)."""

    version: str
    promoted_at: datetime


class ModelRegistry:
    """Registry rows of one namespace."""

    def __init__(self, engine: Engine, namespace: str, signing_key: bytes) -> None:
        self.engine = engine
        self.ns = namespace
        self._key = signing_key

    def register(
        self,
        model: OnlineModel,
        status: Status = "challenger",
        metrics: dict[str, Any] | None = None,
    ) -> str:
        """Store ``model`` under its version; a champion is promoted in the same transaction."""
        with self.engine.begin() as conn:
            if status == "champion":
                self._retire_champion(conn)
            conn.execute(
                insert(REGISTRY).values(
                    namespace=self.ns,
                    version=model.version,
                    created_at=datetime.now(UTC),
                    status=status,
                    promoted_at=datetime.now(UTC) if status == "champion" else None,
                    blob=model.to_bytes(self._key),
                    river_version=river.__version__,
                    spec=[step.to_dict() for step in model.spec],
                    metrics=metrics or {},
                )
            )
        log.info(
            "model registered namespace=%s version=%s status=%s", self.ns, model.version, status
        )
        return model.version

    def promote(self, version: str) -> ChampionRef:
        """Make ``version`` the champion; the previous champion is retired."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            self._retire_champion(conn, keep=version)
            done = conn.execute(
                update(REGISTRY)
                .where(REGISTRY.c.namespace == self.ns, REGISTRY.c.version == version)
                .values(status="champion", promoted_at=now)
            )
            if done.rowcount != 1:
                msg = f"no model {version!r} in the registry of namespace {self.ns!r}"
                raise RegistryError(msg)
        log.info("model promoted namespace=%s version=%s", self.ns, version)
        return ChampionRef(version, now)

    def _retire_champion(self, conn: Any, keep: str | None = None) -> None:
        stmt = (
            update(REGISTRY)
            .where(REGISTRY.c.namespace == self.ns, REGISTRY.c.status == "champion")
            .values(status="retired")
        )
        if keep is not None:
            stmt = stmt.where(REGISTRY.c.version != keep)
        conn.execute(stmt)

    def champion_ref(self) -> ChampionRef | None:
        """The current champion's version and promotion time, without its blob."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(REGISTRY.c.version, REGISTRY.c.promoted_at).where(
                    REGISTRY.c.namespace == self.ns, REGISTRY.c.status == "champion"
                )
            ).first()
        return None if row is None else ChampionRef(row.version, row.promoted_at)

    def load(self, version: str) -> OnlineModel:
        """The model of ``version``, its signature verified before unpickling."""
        with self.engine.connect() as conn:
            blob = conn.execute(
                select(REGISTRY.c.blob).where(
                    REGISTRY.c.namespace == self.ns, REGISTRY.c.version == version
                )
            ).scalar()
        if blob is None:
            msg = f"no model {version!r} in the registry of namespace {self.ns!r}"
            raise RegistryError(msg)
        return OnlineModel.from_bytes(bytes(blob), self._key)

    def ensure_champion(self, spec: str) -> ChampionRef:
        """The champion; registers a fresh model of ``spec`` first if there is none yet."""
        ref = self.champion_ref()
        if ref is not None:
            return ref
        try:
            self.register(OnlineModel(spec), "champion")
        except IntegrityError:  # another process registered one meanwhile
            log.info("champion registered concurrently namespace=%s", self.ns)
        ref = self.champion_ref()
        if ref is None:
            msg = f"namespace {self.ns!r} has no champion model even after registering one"
            raise RegistryError(msg)
        return ref

    def models(self) -> list[dict[str, Any]]:
        """Every version of this namespace, newest first, without blobs."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    REGISTRY.c.version,
                    REGISTRY.c.status,
                    REGISTRY.c.created_at,
                    REGISTRY.c.promoted_at,
                    REGISTRY.c.river_version,
                )
                .where(REGISTRY.c.namespace == self.ns)
                .order_by(REGISTRY.c.created_at.desc())
            ).all()
        return [dict(row._mapping) for row in rows]
