-- Drift reports and batch retrains. Idempotent: safe to apply again. Not captured by Debezium.
-- Rows carry the Redis namespace of the deployment that wrote them, like the learning tables.

CREATE TABLE IF NOT EXISTS drift_reports (
    report_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace        text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    champion_version text,
    reference_start  timestamptz,
    reference_end    timestamptz,
    current_start    timestamptz,
    current_end      timestamptz,
    -- ok: nothing drifted; drift: the policy's thresholds were crossed; insufficient_data: a
    -- window had too few rows to judge (nothing is claimed either way)
    status           text        NOT NULL
                     CHECK (status IN ('ok', 'warning', 'drift', 'insufficient_data')),
    summary          jsonb       NOT NULL,  -- headline numbers (dataset drift share, AUC, ...)
    report           jsonb       NOT NULL,  -- everything measured, the quality results included
    decision         jsonb       NOT NULL,  -- what the policy decided and why
    html             text        NOT NULL   -- the self-contained page people watch
);

CREATE INDEX IF NOT EXISTS drift_reports_latest ON drift_reports (namespace, report_id DESC);

CREATE TABLE IF NOT EXISTS retrains (
    retrain_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace          text        NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    trigger            text        NOT NULL CHECK (trigger IN ('manual', 'policy')),
    reason             text        NOT NULL,
    report_id          bigint REFERENCES drift_reports (report_id) ON DELETE SET NULL,
    data_start         timestamptz,
    data_end           timestamptz,
    n_train            integer,
    n_holdout          integer,
    champion_version   text,
    challenger_version text,
    champion_metrics   jsonb,
    challenger_metrics jsonb,
    status             text        NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'promoted', 'kept', 'failed')),
    detail             text,
    progress           jsonb       NOT NULL DEFAULT jsonb_build_object()
);

-- One retrain at a time per namespace, whichever process starts it.
CREATE UNIQUE INDEX IF NOT EXISTS retrains_one_running
    ON retrains (namespace) WHERE status = 'running';

CREATE INDEX IF NOT EXISTS retrains_latest ON retrains (namespace, retrain_id DESC);
