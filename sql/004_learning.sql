-- Online learning: the model registry, learner checkpoints and the labelled examples.
-- Idempotent: safe to apply again. Not captured by Debezium (not in the publication).
-- Every row carries the Redis namespace of the deployment that wrote it: one learner owns a
-- namespace, and two deployments (or test runs) can share this database without colliding.

CREATE TABLE IF NOT EXISTS model_registry (
    namespace     text        NOT NULL,
    version       text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    status        text        NOT NULL CHECK (status IN ('champion', 'challenger', 'retired')),
    promoted_at   timestamptz,
    blob          bytea       NOT NULL,  -- HMAC-signed pickle (online_learning.signing)
    river_version text        NOT NULL,
    spec          jsonb       NOT NULL,
    metrics       jsonb       NOT NULL DEFAULT jsonb_build_object(),
    PRIMARY KEY (namespace, version)
);

-- At most one champion per namespace: a promotion retires the old one in the same transaction.
CREATE UNIQUE INDEX IF NOT EXISTS model_registry_one_champion
    ON model_registry (namespace) WHERE status = 'champion';

CREATE TABLE IF NOT EXISTS learner_checkpoints (
    checkpoint_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    model_version text        NOT NULL,
    model_blob    bytea       NOT NULL,  -- signed model alone, for scorers
    snapshot      bytea       NOT NULL,  -- signed learner snapshot: model, join, metrics, drift
    offsets       jsonb       NOT NULL,  -- "topic:partition" -> next offset the snapshot reflects
    status        jsonb       NOT NULL,  -- counts, metrics, join backlog (for 'learn status')
    n_learned     bigint      NOT NULL,
    river_version text        NOT NULL
);

CREATE INDEX IF NOT EXISTS learner_checkpoints_latest
    ON learner_checkpoints (namespace, checkpoint_id DESC);

-- Labelled examples exactly as learned (the vector logged at scoring time), written in the
-- checkpoint's transaction: a row exists if and only if a checkpoint reflects its learning.
CREATE TABLE IF NOT EXISTS training_examples (
    namespace     text             NOT NULL,
    payment_id    bigint           NOT NULL,
    features      jsonb            NOT NULL,
    label         boolean          NOT NULL,
    score         double precision NOT NULL,
    model_version text             NOT NULL,
    predicted_at  timestamptz      NOT NULL,
    labelled_at   timestamptz      NOT NULL,
    source        text             NOT NULL CHECK (source IN ('outcome', 'horizon')),
    learned_at    timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, payment_id)
);

CREATE INDEX IF NOT EXISTS training_examples_labelled
    ON training_examples (namespace, labelled_at);
