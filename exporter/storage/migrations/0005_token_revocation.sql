-- Tokens that stop working before they expire.
-- A token carries the user's token_version from when it was issued: changing the password
-- (or anything else that must end every session) increments it, and every older token is
-- refused from then on, whatever its `iat` (whole seconds) says.
ALTER TABLE users ADD COLUMN token_version bigint NOT NULL DEFAULT 0;

-- A logged-out token, by its `jti`, until it would have expired anyway. Every instance on
-- this database checks it, so a logout holds across a fleet.
CREATE TABLE revoked_tokens (
    jti        text        PRIMARY KEY,
    username   text        NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
