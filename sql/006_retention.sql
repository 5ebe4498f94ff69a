-- Retention: training_examples partitioned by day (UTC) on labelled_at, its event time, so
-- pruning drops whole days instead of deleting rows. Idempotent: safe to apply again; a table
-- created by 004 (unpartitioned) is migrated in place, its rows and indexes kept.
-- The primary key of a partitioned table must hold the partition key: it becomes
-- (namespace, payment_id, labelled_at); a payment is labelled once, at a time fixed by its
-- events, so a replay conflicts on the same key as before.
-- Rows whose day has no partition yet land in the default partition: an insert never fails for
-- lack of a partition, whatever its event time (replays of old days, simulations running ahead
-- of the wall clock). The retention maintenance (drift.retention, `freshloop db prune`) splits
-- the default partition into days and creates the days just ahead of the newest example.

-- The partition of one UTC day, created unless it exists; returns its name. Its day must have
-- no rows in the default partition (the maintenance moves them out first).
CREATE OR REPLACE FUNCTION freshloop_examples_partition(day date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    part text := 'training_examples_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(quote_ident(part)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF training_examples FOR VALUES FROM (%L) TO (%L)',
            part,
            to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00'
        );
    END IF;
    RETURN part;
END $$;

DO $$
DECLARE
    day date;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'training_examples'::regclass) = 'r' THEN
        ALTER TABLE training_examples RENAME TO training_examples_unpartitioned;
        ALTER INDEX training_examples_pkey RENAME TO training_examples_unpartitioned_pkey;
        ALTER INDEX IF EXISTS training_examples_labelled
            RENAME TO training_examples_unpartitioned_labelled;
        CREATE TABLE training_examples (
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
            PRIMARY KEY (namespace, payment_id, labelled_at)
        ) PARTITION BY RANGE (labelled_at);
        CREATE INDEX training_examples_labelled ON training_examples (namespace, labelled_at);
        CREATE TABLE training_examples_default PARTITION OF training_examples DEFAULT;
        FOR day IN
            SELECT DISTINCT (labelled_at AT TIME ZONE 'UTC')::date
            FROM training_examples_unpartitioned
        LOOP
            PERFORM freshloop_examples_partition(day);
        END LOOP;
        INSERT INTO training_examples (namespace, payment_id, features, label, score,
                                       model_version, predicted_at, labelled_at, source,
                                       learned_at)
        SELECT namespace, payment_id, features, label, score, model_version, predicted_at,
               labelled_at, source, learned_at
        FROM training_examples_unpartitioned;
        DROP TABLE training_examples_unpartitioned;
    END IF;
END $$;
