-- Row history of the tables features read, for point-in-time training sets
-- (`freshloop training-set`, feature_pipelines/history.py).
-- The tables hold only each row's current version: a payment declined later, refunded or
-- deleted no longer shows what a model saw when it was scored. `<table>_history` keeps every
-- version with the commit position it became visible at (`_valid_from`) and the one it stopped
-- being visible at (`_valid_to`, NULL while current): a feature as of position S reads the
-- versions with _valid_from <= S < coalesce(_valid_to, infinity).
-- Positions follow commit order: a deferred (commit-time) trigger stamps every change of a
-- transaction with one number of `freshloop_commit_seq`, drawn when the transaction commits,
-- and its clock time (`_committed_at`). Two transactions committing within the same
-- microseconds may be numbered in the other order; nothing else differs from the WAL's order.
-- Rows present when the history starts get position 0 (always visible; a row deleted earlier
-- is not known). TRUNCATE closes every version. Not captured by Debezium (not in the
-- publication), no grant to the CDC role. Prune with freshloop_prune_history(before): versions
-- closed before `before` are dropped, which keeps every training set of payments committed
-- after `before` exact.
-- Idempotent: safe to apply again (the trigger functions are regenerated).

CREATE SEQUENCE IF NOT EXISTS freshloop_commit_seq;

-- The commit position of the running transaction: drawn once, at its first use, then reused.
CREATE OR REPLACE FUNCTION freshloop_commit_position() RETURNS bigint
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v text := current_setting('freshloop.commit_position', true);
BEGIN
    IF v IS NULL OR v = '' THEN
        v := nextval('freshloop_commit_seq')::text;
        PERFORM set_config('freshloop.commit_position', v, true);
        PERFORM set_config('freshloop.commit_time', clock_timestamp()::text, true);
    END IF;
    RETURN v::bigint;
END $$;

CREATE OR REPLACE FUNCTION freshloop_commit_time() RETURNS timestamptz
LANGUAGE sql AS $$
    SELECT current_setting('freshloop.commit_time')::timestamptz
$$;

-- Start (or refresh) the history of table `tbl` whose primary key is the column `pk`.
CREATE OR REPLACE FUNCTION freshloop_track_history(tbl text, pk text) RETURNS void
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    hist text := tbl || '_history';
    cols text;
    new_cols text;
    fresh boolean := to_regclass('public.' || quote_ident(hist)) IS NULL;
BEGIN
    IF fresh THEN
        EXECUTE format('CREATE TABLE %I (LIKE %I)', hist, tbl);
        EXECUTE format('ALTER TABLE %I ADD COLUMN _version bigint GENERATED ALWAYS AS IDENTITY, '
                       'ADD COLUMN _valid_from bigint NOT NULL, ADD COLUMN _valid_to bigint, '
                       'ADD COLUMN _committed_at timestamptz NOT NULL, '
                       'ADD COLUMN _closed_at timestamptz', hist);
        EXECUTE format('CREATE INDEX %I ON %I (%I) WHERE _valid_to IS NULL',
                       hist || '_open', hist, pk);
        EXECUTE format('CREATE INDEX %I ON %I (_committed_at)', hist || '_committed', hist);
        EXECUTE format('CREATE INDEX %I ON %I (_closed_at) WHERE _closed_at IS NOT NULL',
                       hist || '_closed', hist);
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
           string_agg('NEW.' || quote_ident(attname), ', ' ORDER BY attnum)
      INTO cols, new_cols
      FROM pg_attribute
     WHERE attrelid = ('public.' || quote_ident(tbl))::regclass AND attnum > 0
       AND NOT attisdropped;
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $body$
        DECLARE
            pos bigint := freshloop_commit_position();
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                UPDATE %I SET _valid_to = pos, _closed_at = freshloop_commit_time()
                 WHERE %I = OLD.%I AND _valid_to IS NULL;
            END IF;
            IF TG_OP <> 'DELETE' THEN
                INSERT INTO %I (%s, _valid_from, _committed_at)
                VALUES (%s, pos, freshloop_commit_time());
            END IF;
            RETURN NULL;
        END $body$
    $f$, hist || '_track', hist, pk, pk, hist, cols, new_cols);
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %I() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $body$
        BEGIN
            UPDATE %I SET _valid_to = freshloop_commit_position(),
                          _closed_at = freshloop_commit_time()
             WHERE _valid_to IS NULL;
            RETURN NULL;
        END $body$
    $f$, hist || '_truncate', hist);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', hist, tbl);
    EXECUTE format('CREATE CONSTRAINT TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I '
                   'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION %I()',
                   hist, tbl, hist || '_track');
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', hist || '_truncate', tbl);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION %I()',
                   hist || '_truncate', tbl, hist || '_truncate');
    IF fresh THEN  -- the trigger holds the table's write lock: no change slips between
        EXECUTE format('INSERT INTO %I (%s, _valid_from, _committed_at) '
                       'SELECT %s, 0, ''-infinity'' FROM %I', hist, cols, cols, tbl);
    END IF;
END $$;

-- Versions closed before `before` (no payment committed after it can see them); rows deleted.
CREATE OR REPLACE FUNCTION freshloop_prune_history(before timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM payments_history WHERE _closed_at < before;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM payment_outcomes_history WHERE _closed_at < before;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END $$;

-- The tables the sample feature services read (online_learning/services.py).
SELECT freshloop_track_history('payments', 'payment_id');
SELECT freshloop_track_history('payment_outcomes', 'payment_id');

-- What the point-in-time queries look up: a customer's or merchant's versions by event time,
-- an outcome's versions by payment.
CREATE INDEX IF NOT EXISTS payments_history_customer
    ON payments_history (customer_id, created_at);
CREATE INDEX IF NOT EXISTS payments_history_merchant
    ON payments_history (merchant_id, created_at);
CREATE INDEX IF NOT EXISTS payments_history_payment
    ON payments_history (payment_id, _valid_from);
CREATE INDEX IF NOT EXISTS payment_outcomes_history_payment
    ON payment_outcomes_history (payment_id, _valid_from);
