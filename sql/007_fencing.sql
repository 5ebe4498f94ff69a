-- Fencing: one epoch (fencing token) per namespace and role ('learner', 'scheduler').
-- Idempotent: safe to apply again. Not captured by Debezium (not in the publication).
-- The advisory lock says who may run; the epoch says whose writes count. Taking ownership of a
-- role (freshloop.fencing, after its advisory lock) increments the epoch. The owner's sessions
-- carry the setting freshloop.fence = '<role>:<epoch>:<namespace>', and a statement trigger on
-- every table the learner and the drift scheduler write checks, inside the writing transaction,
-- that this epoch is still the current one. The check share-locks the epoch row until the
-- transaction ends: a takeover waits for a write in flight, and a write after the takeover fails
-- with SQLSTATE LF001. A copy that lost its lock (a killed session, a Postgres restart while
-- another copy waited) therefore writes nothing. Sessions without the setting (the command
-- line, a manual promote) are not fenced.

CREATE TABLE IF NOT EXISTS freshloop_epochs (
    namespace text        NOT NULL,
    role      text        NOT NULL CHECK (role IN ('learner', 'scheduler')),
    epoch     bigint      NOT NULL CHECK (epoch > 0),
    owner     text        NOT NULL,  -- host:pid of the process that took it, for people
    taken_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, role)
);

CREATE OR REPLACE FUNCTION freshloop_fence_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    fence      text := current_setting('freshloop.fence', true);
    fence_role text;
    fence_num  text;
    fence_ns   text;
    now_epoch  bigint;
BEGIN
    IF fence IS NULL OR fence = '' THEN
        RETURN NULL;
    END IF;
    fence_role := split_part(fence, ':', 1);
    fence_num := split_part(fence, ':', 2);
    fence_ns := substr(fence, length(fence_role) + length(fence_num) + 3);
    SELECT epoch INTO now_epoch FROM freshloop_epochs
        WHERE namespace = fence_ns AND role = fence_role FOR SHARE;
    IF now_epoch IS DISTINCT FROM fence_num::bigint THEN
        RAISE EXCEPTION USING
            ERRCODE = 'LF001',
            MESSAGE = 'fenced: the ' || fence_role || ' of namespace ' || quote_literal(fence_ns)
                || ' holds epoch ' || fence_num || ' but the current one is '
                || coalesce(now_epoch::text, 'none') || ': another copy took ownership',
            HINT = 'this copy writes nothing more and must stop; run one per namespace';
    END IF;
    RETURN NULL;
END $$;

-- BEFORE ... FOR EACH STATEMENT: one check per statement, even one touching no row (the
-- retention prune's deletes end its transaction, so its partition drops are fenced too).
DO $$
DECLARE
    fenced text;
BEGIN
    FOREACH fenced IN ARRAY ARRAY['learner_checkpoints', 'training_examples', 'model_registry',
                                  'drift_reports', 'retrains']
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgname = 'freshloop_fence' AND tgrelid = fenced::regclass) THEN
            EXECUTE 'CREATE TRIGGER freshloop_fence BEFORE INSERT OR UPDATE OR DELETE ON '
                || quote_ident(fenced)
                || ' FOR EACH STATEMENT EXECUTE FUNCTION freshloop_fence_check()';
        END IF;
    END LOOP;
END $$;
