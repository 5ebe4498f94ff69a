-- The feature definitions applied to each namespace, and the jobs that applied them
-- (`freshloop features plan | apply`, feature_pipelines/backfill.py, docs/features.md).
-- A row per applied feature: its fingerprint (a hash of the normalized definition) and the
-- definition itself (JSON, feature_pipelines/plan.py), replaced as a whole by each apply in
-- one transaction. Redis mirrors it under the namespace (<ns>:features:defs and
-- <ns>:features:fingerprints), which is what running pipelines follow.
-- A job row per apply: its plan, the database snapshot its backfill read (pg_current_snapshot),
-- its progress in rows, and how it ended. A job found 'running' by the next apply is one whose
-- process died: it is marked 'superseded' and its features are cleaned and filled again.
-- Idempotent: safe to apply again. (Braces are doubled: `freshloop db init` formats each file.)

CREATE TABLE IF NOT EXISTS freshloop_feature_registry (
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    fingerprint text        NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{{16}}$'),
    definition  jsonb       NOT NULL,
    generation  bigint      NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, name)
);

CREATE TABLE IF NOT EXISTS freshloop_feature_jobs (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace   text        NOT NULL,
    generation  bigint      NOT NULL,
    state       text        NOT NULL
        CHECK (state IN ('running', 'done', 'failed', 'superseded')),
    plan        jsonb       NOT NULL,
    snapshot    text,
    rows_total  bigint      NOT NULL DEFAULT 0,
    rows_done   bigint      NOT NULL DEFAULT 0,
    detail      text        NOT NULL DEFAULT '',
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (namespace, generation)
);

CREATE INDEX IF NOT EXISTS freshloop_feature_jobs_running
    ON freshloop_feature_jobs (namespace) WHERE state = 'running';
