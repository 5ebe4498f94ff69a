-- The publication Debezium reads and its least-privilege role: REPLICATION, SELECT on the
-- captured tables, INSERT on the signal and heartbeat tables, nothing else.
-- `freshloop db init` fills the braces from the settings (quoted as identifiers and literals),
-- then adds the captured tables to the publication and grants SELECT on them: those of the
-- feature set in use (FRESHLOOP_FEATURE_DEFINITIONS) and of the learning loop
-- (freshloop/core/db.py, publish_tables).
-- Idempotent: safe to apply again; a changed password is applied.
-- The password comes as a SCRAM-SHA-256 verifier made by the client, never as itself.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {cdc_user_text}) THEN
        CREATE ROLE {cdc_user} LOGIN REPLICATION PASSWORD {cdc_password};
    ELSE
        ALTER ROLE {cdc_user} LOGIN REPLICATION PASSWORD {cdc_password};
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = {publication_text}) THEN
        CREATE PUBLICATION {publication} FOR TABLE freshloop_signal, freshloop_heartbeat;
    END IF;
END $$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {cdc_user};
GRANT USAGE ON SCHEMA public TO {cdc_user};
GRANT SELECT, INSERT ON freshloop_signal TO {cdc_user};
GRANT INSERT ON freshloop_heartbeat TO {cdc_user};
