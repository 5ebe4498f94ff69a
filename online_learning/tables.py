"""SQLAlchemy Core views of ``sql/004_learning.sql`` (the SQL file owns the schema)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    LargeBinary,
    MetaData,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["CHECKPOINTS", "EXAMPLES", "REGISTRY"]

_META = MetaData()

REGISTRY = Table(
    "model_registry",
    _META,
    Column("namespace", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("created_at", DateTime(timezone=True)),
    Column("status", Text, nullable=False),
    Column("promoted_at", DateTime(timezone=True)),
    Column("blob", LargeBinary, nullable=False),
    Column("river_version", Text, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("metrics", JSONB),
)

CHECKPOINTS = Table(
    "learner_checkpoints",
    _META,
    Column("checkpoint_id", BigInteger, primary_key=True),
    Column("namespace", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("model_version", Text, nullable=False),
    Column("model_blob", LargeBinary, nullable=False),
    Column("snapshot", LargeBinary, nullable=False),
    Column("offsets", JSONB, nullable=False),
    Column("status", JSONB, nullable=False),
    Column("n_learned", BigInteger, nullable=False),
    Column("river_version", Text, nullable=False),
)

EXAMPLES = Table(
    "training_examples",
    _META,
    Column("namespace", Text, primary_key=True),
    Column("payment_id", BigInteger, primary_key=True),
    Column("features", JSONB, nullable=False),
    Column("label", Boolean, nullable=False),
    Column("score", Float, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("predicted_at", DateTime(timezone=True), nullable=False),
    Column("labelled_at", DateTime(timezone=True), nullable=False),
    Column("source", Text, nullable=False),
    Column("learned_at", DateTime(timezone=True)),
)
