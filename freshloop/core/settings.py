"""One typed, frozen settings object for every stage (environment prefix ``FRESHLOOP_``).

Every default works with the local stack started by ``freshloop stack up``; each one can be
overridden by an environment variable named after the field, e.g. ``FRESHLOOP_REDIS_URL``.
Secrets are ``SecretStr`` so they never show up in logs or reprs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, quote, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from freshloop.core.exceptions import ConfigurationError

__all__ = ["Settings", "load_settings"]

_TOPIC_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,48}$")
_DEFINITIONS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # a module path
_PG_SIZE = re.compile(r"^(-1|[0-9]{1,12}(kB|MB|GB|TB)?)$")
REDIS_ADMIN_USER = "freshloop_admin"  # the local stack's own Redis user (freshloop stack)


class Settings(BaseSettings):
    """Where the services are, how the stack runs, and what the pipeline is called."""

    model_config = SettingsConfigDict(env_prefix="FRESHLOOP_", frozen=True, extra="ignore")

    home: Path = Field(
        default=Path(".freshloop"),
        description="State folder of the local stack: jars, data, logs, pid files.",
    )
    postgres_dsn: str = Field(
        default="postgresql://freshloop@127.0.0.1:5432/freshloop",
        description="Operational database, without the password (see postgres_password).",
    )
    postgres_password: SecretStr = Field(
        default=SecretStr("freshloop"), description="Password of the postgres_dsn user."
    )
    cdc_user: str = Field(
        default="freshloop_cdc", description="Least-privilege role Debezium uses."
    )
    cdc_password: SecretStr = Field(
        default=SecretStr("cdc-local-only"),
        description="Password of the CDC role; Connect reads it from its environment.",
    )
    connector_database_host: str | None = Field(
        default=None,
        description="Postgres host as Kafka Connect sees it (docker-compose: 'postgres'); "
        "defaults to the host of postgres_dsn.",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers: host:port[,host:port]."
    )
    kafka_controller_port: int = Field(
        default=9093, ge=1, le=65535, description="KRaft controller port of the local broker."
    )
    connect_url: str = Field(default="http://127.0.0.1:8083", description="Kafka Connect REST API.")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis holding features and predictions; the pipeline, learner and "
        "recovery connect as redis_user (a user:password written in the URL wins).",
    )
    redis_user: str = Field(
        default="freshloop_writer",
        description="Redis user that writes (pipeline, learner, recovery): data commands only, "
        "no FLUSHALL, CONFIG SET, ACL, DEBUG or SHUTDOWN.",
    )
    redis_password: SecretStr = Field(
        default=SecretStr("redis-writer-local-only"), description="Password of redis_user."
    )
    redis_read_url: str | None = Field(
        default=None,
        description="Redis the API and the scorer's feature reads use, as redis_read_user; "
        "defaults to redis_url.",
    )
    redis_read_user: str = Field(
        default="freshloop_reader",
        description="Read-only Redis user (read commands only) of the API and the scorer's "
        "feature reads.",
    )
    redis_read_password: SecretStr = Field(
        default=SecretStr("redis-reader-local-only"), description="Password of redis_read_user."
    )
    redis_admin_password: SecretStr = Field(
        default=SecretStr("redis-admin-local-only"),
        description="Password of the local stack's Redis admin user (freshloop_admin), which "
        "'freshloop stack' uses to set the users up.",
    )
    redis_layout: Literal["single", "cluster"] = Field(
        default="single",
        description="'single': one Redis at redis_url; 'cluster': a Redis Cluster, redis_url "
        "names one of its primaries (the local stack starts three, see redis_cluster_ports; "
        "docs/redis-cluster.md).",
    )
    redis_cluster_ports: str = Field(
        default="",
        description="Comma-separated ports of the local stack's Redis Cluster primaries "
        "(redis_layout=cluster); empty: the port of redis_url and the next two.",
    )
    redis_cluster_shards: int = Field(
        default=64,
        ge=1,
        le=16384,
        description="Virtual shards of a namespace's entity hashes in a Redis Cluster (one "
        "hash tag each; fixed per namespace: changing it needs a rebuild).",
    )
    env: Literal["auto", "local", "production"] = Field(
        default="auto",
        description="Where this runs: 'local' accepts the public default passwords and signing "
        "key, 'production' refuses them, 'auto' accepts them only while every service and "
        "listener is on loopback.",
    )
    topic_prefix: str = Field(
        default="freshloop",
        description="Debezium topic.prefix: change topics are <prefix>.<schema>.<table>.",
    )
    connector_name: str = Field(
        default="freshloop-postgres", description="Name of the Debezium connector in Connect."
    )
    publication_name: str = Field(
        default="freshloop_pub",
        description="Postgres publication of the captured tables, created by 'freshloop db init'.",
    )
    feature_definitions: str = Field(
        default="feature_pipelines.catalog:SCORING_FEATURES",
        description="The feature set in use, as module:ATTRIBUTE (a FeatureSet; the default is "
        "the sample set plus what the fraud model reads, the set 'serve' computes): what every "
        "'features' command (run, plan, apply, verify, rebuild, get, list) uses unless given "
        "--definitions, and whose tables 'db init' and 'connectors apply' capture (with those "
        "the learning loop reads).",
    )
    topic_partitions: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="Partitions of every change topic (the same for all: co-partitioned joins).",
    )
    redis_namespace: str | None = Field(
        default=None, description="Prefix of every Redis key; defaults to the topic prefix."
    )
    redis_allow_eviction: bool = Field(
        default=False,
        description="Start the feature pipeline on a Redis whose maxmemory-policy may evict "
        "keys (anything but noeviction), or whose policy cannot be read; each eviction is then "
        "taken as a loss and the features are rebuilt. Off: such a Redis is refused at start-up.",
    )
    loss_check_samples: int = Field(
        default=16,
        ge=0,
        le=10_000,
        description="Row states drawn from each assigned partition's expiry index every few "
        "seconds to check they still exist (a loss found starts the rebuild; 0: off).",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Prometheus metrics of 'features run' on stack_bind (0: off).",
    )
    stats_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often each feature pipeline writes its live stats hash to Redis "
        "(<namespace>:stats:pipeline:<consumer>).",
    )
    stats_ttl_s: int = Field(
        default=60,
        ge=2,
        le=3600,
        description="Expiry of a pipeline's live stats hash (a dead consumer vanishes after it).",
    )
    row_cache_rows: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="Row states each feature pipeline keeps in memory after writing them, so a "
        "live batch is planned without reading them back from Redis (0: read every batch's rows).",
    )
    row_state_grace: timedelta = Field(
        default=timedelta(days=2),
        description="A row's state (de-duplication position, lookup values) is kept this long "
        "past the longest window after its last change, a deleted row's this long (event time): "
        "more than Connect can re-send late and than a row arrives after the row it looks up.",
    )
    event_time_max_ahead: timedelta = Field(
        default=timedelta(hours=1),
        description="An event time later than its commit time by more than this moves the "
        "event-time watermark (expiry) only this far: one wrong clock cannot expire state.",
    )
    poll_interval_ms: int = Field(
        default=5,
        ge=1,
        le=60_000,
        description="Debezium poll.interval.ms (sets the latency floor).",
    )
    stack_bind: str = Field(
        default="127.0.0.1", description="Address the local services listen on (loopback)."
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="Address 'api serve' listens on (loopback; 0.0.0.0 only inside a container).",
    )
    api_port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        description="Port of the HTTP API and dashboard (0: any free port).",
    )
    api_anonymous: bool = Field(
        default=False,
        description="Let requests without a token read everything; only on a loopback "
        "api_host (any other address is refused at start-up). Else every route but /healthz "
        "needs a token ('freshloop api token create').",
    )
    api_token_cache_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long the API trusts a token it verified without asking Postgres "
        "again: a revoked token keeps working at most this long (0: check every request).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING",
        description="Log level of every command (its --log-level option wins).",
    )

    # ---- online learning (``freshloop learn``) --------------------------------------------
    label_horizon: timedelta = Field(
        default=timedelta(days=1),
        description="How long after scoring a payment's outcome is awaited (seconds or ISO 8601).",
    )
    label_grace: timedelta = Field(
        default=timedelta(hours=1),
        description="Extra memory after the horizon before a payment is forgotten.",
    )
    horizon_negatives: bool = Field(
        default=True, description="A payment without outcome at the horizon is learned as legit."
    )
    model_spec: str = Field(
        default="river.preprocessing.StandardScaler | river.linear_model.LogisticRegression",
        description="River pipeline of a new model: dotted paths joined by '|'.",
    )
    feature_service: str = Field(
        default="fraud",
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="Feature service whose features the model reads (scorer, learner, drift, "
        "retrain); 'freshloop features list' shows the services.",
    )
    model_signing_key: SecretStr = Field(
        default=SecretStr("freshloop-local-model-signing-key"),
        description="HMAC key of model and checkpoint blobs (>= 16 bytes; set a random one).",
    )
    checkpoint_every_examples: int = Field(
        default=1000, ge=1, description="The learner checkpoints after this many examples..."
    )
    checkpoint_every_s: float = Field(
        default=30.0, gt=0, description="...or this many seconds, whichever comes first."
    )
    champion_poll_s: float = Field(
        default=5.0, gt=0, description="How often scorers and the learner look for a new model."
    )
    predictions_topic: str | None = Field(
        default=None,
        description=(
            "Topic of logged predictions; defaults to <prefix>.predictions, or "
            "<prefix>.<namespace>.predictions when the namespace is not the prefix."
        ),
    )
    learner_start: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="Where a learner with no checkpoint starts reading its topics.",
    )
    score_max_age: timedelta = Field(
        default=timedelta(minutes=10),
        description="Payments committed longer ago are not scored (a replay is not a decision).",
    )

    # ---- drift scheduler and retrain policy (``freshloop drift run``, ``freshloop retrain``) --
    drift_interval_s: float = Field(
        default=60.0, ge=1.0, description="Seconds between scheduled drift checks."
    )
    drift_misfire_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="A check that could not start this many seconds after its time is skipped.",
    )
    drift_reference_size: int = Field(
        default=2000,
        ge=10,
        description="Rows of the reference window: the champion's retrain window (newest rows) "
        "or, without one, the first rows labelled after the champion was promoted.",
    )
    drift_current_size: int = Field(
        default=2000, ge=10, description="Rows of the current window: the newest labelled rows..."
    )
    drift_current_window_s: float = Field(
        default=3600.0, gt=0, description="...labelled within the last this many seconds."
    )
    drift_min_samples: int = Field(
        default=100,
        ge=2,
        description="Fewer rows in either window: the report says insufficient_data.",
    )
    drift_large_sample: int = Field(
        default=1000,
        ge=2,
        description="From this many rows in the smaller window features are judged by effect "
        "size (PSI, Jensen-Shannon) instead of a p-value (KS, chi-square).",
    )
    drift_p_value: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="KS / chi-square p-value below which a feature drifted (smaller windows).",
    )
    drift_psi_threshold: float = Field(
        default=0.2, gt=0, description="PSI at or above which a numeric feature drifted."
    )
    drift_js_threshold: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Jensen-Shannon distance at or above which a categorical feature drifted.",
    )
    drift_psi_bins: int = Field(
        default=10, ge=2, le=100, description="Quantile bins of the reference for PSI."
    )
    drift_quality_mostly: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="Data quality: share of current values that must lie in the range.",
    )
    drift_quality_mean_sd: float = Field(
        default=1.0,
        gt=0,
        description="Data quality: a feature's current mean must lie within this many "
        "reference standard deviations of the reference mean.",
    )
    drift_stale_sample: int = Field(
        default=50,
        ge=0,
        description="Freshness: recently active customers checked against the SQL oracle "
        "(0: skip).",
    )
    drift_stale_recheck_s: float = Field(
        default=1.0,
        ge=0,
        description="Freshness: an entity is stale when it still differs this long later.",
    )
    drift_ignore_features: str = Field(
        default="hour_sin,hour_cos,dow_sin,dow_cos",
        description="Comma-separated features left out of drift and quality checks: the "
        "time-of-day and day-of-week encodings differ between any two time windows by design.",
    )
    drift_warmup: bool = Field(
        default=True,
        description="Leave out of drift and quality checks the inputs whose windowed features "
        "were still filling up when the reference began (the table's oldest event time plus the "
        "window) and lifetime features, which grow by construction; false judges every input.",
    )
    drift_history: int = Field(
        default=50, ge=1, description="Previous reports shown in a report's over-time charts."
    )
    skew_sample: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="Skew audit of each drift check: the newest this many logged examples "
        "against their point-in-time vectors recomputed from the row history (0: off).",
    )
    skew_tolerance_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Skew audit: a logged customer's or merchant's inputs may equal the "
        "history's at a commit this many seconds from the payment's (the scorer reads Redis "
        "after a batch, not at the commit).",
    )
    skew_max_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Skew audit: the report warns when an input differs beyond the tolerance "
        "in more than this share of the examples compared.",
    )
    retrain_drift_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Policy: retrain when this share of features (or more) drifted.",
    )
    retrain_on_concept_alarm: bool = Field(
        default=True, description="Policy: retrain on a new concept-drift (ADWIN) alarm."
    )
    retrain_auc_drop: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="Policy: retrain when ROC AUC fell this much (or more) below its baseline.",
    )
    retrain_cooldown_s: float = Field(
        default=600.0,
        ge=0,
        description="Policy: no policy retrain sooner than this after the previous one started.",
    )
    retrain_min_examples: int = Field(
        default=200,
        ge=20,
        description="A retrain needs at least this many labelled examples in its window.",
    )
    retrain_window_s: float = Field(
        default=86_400.0,
        gt=0,
        description="A retrain reads the examples labelled in the last this many seconds.",
    )
    retrain_max_examples: int = Field(
        default=50_000, ge=20, description="A retrain reads at most this many (the newest)."
    )
    retrain_vectors: Literal["logged", "recomputed"] = Field(
        default="logged",
        description="Vectors a retrain learns: 'logged' (what the scorer served) or "
        "'recomputed' (the feature service's vector as of each payment's commit, from the row "
        "history, as 'freshloop training-set' builds it: features added since can be learned).",
    )
    retrain_holdout_share: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="Newest share of the window held out to compare challenger and champion.",
    )
    retrain_epochs: int = Field(
        default=3, ge=1, le=100, description="Passes of the challenger over its training slice."
    )
    retrain_promote_margin: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Promote only when the challenger's ROC AUC beats the champion's by this.",
    )
    retrain_log_loss_tolerance: float = Field(
        default=0.05,
        ge=0,
        description="Promote only when the challenger's log loss is at most this much worse.",
    )
    retrain_stale_after_s: float = Field(
        default=1800.0,
        gt=0,
        description="A 'running' retrain without progress for this long is marked failed.",
    )

    # ---- retention (``freshloop db prune``, scheduled by ``freshloop drift run``) ------------
    retention_examples_days: int = Field(
        default=30,
        ge=1,
        description="Training examples are kept this many days of event time before the newest "
        "one (whole UTC days are dropped; drift reference windows and running retrains kept).",
    )
    retention_partitions_ahead_days: int = Field(
        default=2,
        ge=0,
        le=60,
        description="Day partitions of training examples created ahead of the newest one.",
    )
    retention_drift_reports_keep: int = Field(
        default=1000, ge=1, description="Newest drift reports (with their HTML) kept per namespace."
    )
    retention_retrains_keep: int = Field(
        default=500,
        ge=1,
        description="Newest retrains kept per namespace (running ones and the champion's too).",
    )
    retention_models_keep: int = Field(
        default=10,
        ge=1,
        description="Newest model versions kept per namespace, besides the champion.",
    )
    retention_checkpoints_keep: int = Field(
        default=5, ge=1, description="Newest learner checkpoints kept per namespace."
    )
    retention_interval_s: float = Field(
        default=3600.0,
        ge=10,
        description="Seconds between scheduled prunes of the drift scheduler.",
    )
    wal_keep_size: str = Field(
        default="1GB",
        description="max_slot_wal_keep_size of the local Postgres: WAL a lagging replication "
        "slot may hold before Postgres invalidates the slot (-1: unbounded).",
    )
    wal_warning_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1,
        description="Health and metrics raise an alarm when the connector's slot retains more "
        "WAL than this (bytes).",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _TOPIC_PREFIX.match(value):
            msg = (
                f"topic_prefix {value!r} is not usable as a topic and slot name: use a letter "
                "followed by letters, digits or '_' (set FRESHLOOP_TOPIC_PREFIX)"
            )
            raise ValueError(msg)
        return value

    @field_validator("feature_definitions")
    @classmethod
    def _check_definitions(cls, value: str) -> str:
        module, sep, attribute = value.partition(":")
        if not _DEFINITIONS.match(module) or not sep or not attribute.isidentifier():
            msg = (
                f"feature_definitions {value!r} is not module:ATTRIBUTE: name a FeatureSet, e.g. "
                "feature_pipelines.catalog:SAMPLE_FEATURES (set FRESHLOOP_FEATURE_DEFINITIONS)"
            )
            raise ValueError(msg)
        return value

    @field_validator("wal_keep_size")
    @classmethod
    def _check_wal_keep_size(cls, value: str) -> str:
        if not _PG_SIZE.match(value):
            msg = (
                f"wal_keep_size {value!r} is not a Postgres size: write e.g. 1GB, 512MB or -1 "
                "(set FRESHLOOP_WAL_KEEP_SIZE)"
            )
            raise ValueError(msg)
        return value

    @field_validator("model_signing_key")
    @classmethod
    def _check_signing_key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().encode()) < 16:
            msg = "model_signing_key must be at least 16 bytes (set FRESHLOOP_MODEL_SIGNING_KEY)"
            raise ValueError(msg)
        return value

    @field_validator(
        "label_horizon",
        "label_grace",
        "score_max_age",
        "row_state_grace",
        "event_time_max_ahead",
        mode="before",
    )
    @classmethod
    def _seconds(cls, value: object) -> object:
        """Durations from the environment may be plain seconds ("3600") or ISO 8601 ("PT1H")."""
        if isinstance(value, str):
            try:
                return timedelta(seconds=float(value))
            except ValueError:
                return value
        return value

    @field_validator("retention_examples_days")
    @classmethod
    def _check_examples_kept(cls, value: int, info: ValidationInfo) -> int:
        """A learned example's row is its payment's "already labelled" mark: it must outlive
        the label horizon and grace, or a late outcome could be learned a second time."""
        horizon = info.data.get("label_horizon", timedelta(0)) + info.data.get(
            "label_grace", timedelta(0)
        )
        if timedelta(days=value) <= horizon:
            msg = (
                f"retention_examples_days must be more than label_horizon + label_grace "
                f"({horizon}), got {value} days: raise it or shorten the horizon"
            )
            raise ValueError(msg)
        return value

    @field_validator("label_horizon")
    @classmethod
    def _check_horizon(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            msg = f"label_horizon must be positive, got {value}"
            raise ValueError(msg)
        return value

    @field_validator("postgres_dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
            msg = f"postgres_dsn must look like postgresql://user@host:port/db, got {value!r}"
            raise ValueError(msg)
        if parts.password:
            msg = "postgres_dsn must not carry a password: set FRESHLOOP_POSTGRES_PASSWORD instead"
            raise ValueError(msg)
        if not parts.path.strip("/"):
            msg = f"postgres_dsn {value!r} names no database: add /<dbname> at its end"
            raise ValueError(msg)
        return value

    @field_validator("redis_url", "redis_read_url")
    @classmethod
    def _check_redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            msg = f"{info.field_name} must look like redis://host:port/db, got {value!r}"
            raise ValueError(msg)
        return cls._check_port(value)

    @field_validator("redis_cluster_ports")
    @classmethod
    def _check_cluster_ports(cls, value: str) -> str:
        if not value.strip():
            return value
        try:
            ports = [int(p) for p in value.split(",")]
        except ValueError:
            ports = []
        if not ports or any(not 1 <= p <= 55535 for p in ports) or len(set(ports)) != len(ports):
            msg = (
                "redis_cluster_ports must be distinct ports separated by commas, each at most "
                "55535 (its cluster bus listens 10000 above it), e.g. 7001,7002,7003; "
                f"got {value!r}"
            )
            raise ValueError(msg)
        return value

    @field_validator("kafka_bootstrap", "connect_url")
    @classmethod
    def _check_port(cls, value: str) -> str:
        text = value if "://" in value else f"kafka://{value.split(',')[0]}"
        try:
            port = urlsplit(text).port
        except ValueError as exc:
            msg = f"{value!r} has a bad port: {exc}"
            raise ValueError(msg) from exc
        if port is None:
            msg = f"{value!r} names no port: write host:port"
            raise ValueError(msg)
        return value

    # Derived views: one source of truth, read in several shapes.
    @property
    def _pg(self) -> SplitResult:
        return urlsplit(self.postgres_dsn)

    @property
    def postgres_host(self) -> str:
        return str(self._pg.hostname)

    @property
    def postgres_port(self) -> int:
        return int(self._pg.port or 5432)

    @property
    def postgres_db(self) -> str:
        return str(self._pg.path.strip("/"))

    @property
    def postgres_user(self) -> str:
        return str(self._pg.username or "postgres")

    def postgres_conninfo(
        self, *, user: str | None = None, password: SecretStr | None = None
    ) -> str:
        """A libpq URL with the password filled in, for psycopg. Never log it."""
        user = user or self.postgres_user
        secret = (password or self.postgres_password).get_secret_value()
        return (
            f"postgresql://{quote(user, safe='')}:{quote(secret, safe='')}@{self.postgres_host}:"
            f"{self.postgres_port}/{self.postgres_db}"
        )

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (e.g. ``os.environ``) with every setting as its ``FRESHLOOP_`` variable, so
        that a child process loads exactly these settings (an unset one is removed)."""
        env = dict(base)
        for name in type(self).model_fields:
            value: object = getattr(self, name)
            if value is None:
                env.pop(f"FRESHLOOP_{name.upper()}", None)
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, timedelta):
                value = value.total_seconds()
            env[f"FRESHLOOP_{name.upper()}"] = str(value)
        return env

    def redis_conninfo(self, role: Literal["writer", "reader", "admin"] = "writer") -> str:
        """A redis-py URL of one Redis user with its password filled in. Never log it.

        writer: the pipeline, learner and recovery; reader: the API and the scorer's feature
        reads (read commands only); admin: the local stack's own user (ACLs, configuration).
        """
        url = (self.redis_read_url or self.redis_url) if role == "reader" else self.redis_url
        user, secret = {
            "writer": (self.redis_user, self.redis_password),
            "reader": (self.redis_read_user, self.redis_read_password),
            "admin": (REDIS_ADMIN_USER, self.redis_admin_password),
        }[role]
        parts = urlsplit(url)
        if parts.username or parts.password:
            return url  # credentials written into the URL itself win
        where = parts.netloc
        auth = f"{quote(user, safe='')}:{quote(secret.get_secret_value(), safe='')}"
        return parts._replace(netloc=f"{auth}@{where}").geturl()

    def sqlalchemy_url(self) -> str:
        """The same database as a SQLAlchemy URL (psycopg 3 driver). Never log it."""
        return self.postgres_conninfo().replace("postgresql://", "postgresql+psycopg://", 1)

    @property
    def redis_port(self) -> int:
        return int(urlsplit(self.redis_url).port or 6379)

    @property
    def redis_cluster_port_list(self) -> tuple[int, ...]:
        """Ports of the local stack's Redis Cluster primaries (redis_layout=cluster)."""
        if not self.redis_cluster_ports.strip():
            return (self.redis_port, self.redis_port + 1, self.redis_port + 2)
        return tuple(int(p) for p in self.redis_cluster_ports.split(","))

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def connect_port(self) -> int:
        return int(urlsplit(self.connect_url).port or 8083)

    @property
    def slot_name(self) -> str:
        """Replication slot of this pipeline's connector: unique per topic prefix."""
        return f"{self.topic_prefix.lower()}_slot"

    @property
    def drift_ignored_features(self) -> tuple[str, ...]:
        """``drift_ignore_features`` as names."""
        return tuple(n.strip() for n in self.drift_ignore_features.split(",") if n.strip())

    @property
    def namespace(self) -> str:
        """Prefix of Freshloop's Redis keys."""
        return self.redis_namespace or self.topic_prefix

    @property
    def predictions_topic_name(self) -> str:
        """Where scorers log predictions for the learner and downstream consumers: one topic per
        namespace, so a learner never reads another namespace's decisions."""
        if self.predictions_topic:
            return self.predictions_topic
        if self.namespace == self.topic_prefix:
            return f"{self.topic_prefix}.predictions"
        ns = re.sub(r"[^A-Za-z0-9_-]", "_", self.namespace)  # a legal topic name; the message's
        return f"{self.topic_prefix}.{ns}.predictions"  # own ``ns`` field tells any clash apart

    def topic(self, table: str, schema: str = "public") -> str:
        """The Debezium change topic of one table."""
        return f"{self.topic_prefix}.{schema}.{table}"


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """Load the settings once; a bad value stops here with a sentence that says how to fix it,
    and so does a public default password or key outside the local stack."""
    from freshloop.core.defaults import refuse_public_defaults

    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FRESHLOOP_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        msg = f"bad configuration: {problems}"
        raise ConfigurationError(msg) from exc
    refuse_public_defaults(settings)
    return settings
