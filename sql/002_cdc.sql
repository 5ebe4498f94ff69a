-- What Debezium needs: a signal table (incremental snapshots), a heartbeat table (keeps WAL
-- from piling up when captured tables are quiet).
-- Idempotent: safe to apply again.

CREATE TABLE IF NOT EXISTS freshloop_signal (
    id   varchar(42) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data varchar(2048)
);

CREATE TABLE IF NOT EXISTS freshloop_heartbeat (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts timestamptz NOT NULL DEFAULT now()
);

-- The CDC role may only INSERT heartbeats; this trigger, running as the table's owner, keeps the
-- table to the last hour so it never grows.
CREATE OR REPLACE FUNCTION freshloop_heartbeat_trim() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    DELETE FROM freshloop_heartbeat WHERE ts < now() - interval '1 hour';
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS freshloop_heartbeat_trim ON freshloop_heartbeat;
CREATE TRIGGER freshloop_heartbeat_trim AFTER INSERT ON freshloop_heartbeat
    FOR EACH STATEMENT EXECUTE FUNCTION freshloop_heartbeat_trim();
