-- API tokens of the HTTP API (`freshloop api token create | list | revoke`). Idempotent.
-- A token reads flt_<token_id>_<secret>: the API finds its row by token_id (the primary key,
-- one indexed read) and compares HMAC-SHA256(salt, token) with digest in constant time. Only
-- the salt and that digest are kept, never the token. A token serves the API of its namespace
-- only; a revoked token keeps its row (revoked_at set), so its name can be given again.
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id    text        PRIMARY KEY CHECK (token_id ~ '^[0-9a-f]+$' AND length(token_id) = 16),
    namespace   text        NOT NULL,
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    scopes      text[]      NOT NULL CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['features:read', 'predictions:read', 'admin']::text[]
    ),
    salt        bytea       NOT NULL CHECK (length(salt) = 16),
    digest      bytea       NOT NULL CHECK (length(digest) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- One live token per name and namespace: `revoke NAME` names exactly one.
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_live_name
    ON api_tokens (namespace, name) WHERE revoked_at IS NULL;
