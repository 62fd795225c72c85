-- Access for teams and programs: a role and the hosts each user may see, and API tokens.

-- Accounts from before roles could do everything: they stay admins. New ones are viewers
-- unless made admins (the first start's `admin` is one).
ALTER TABLE users ADD COLUMN role text NOT NULL DEFAULT 'admin'
    CHECK (role IN ('admin', 'viewer'));
ALTER TABLE users ALTER COLUMN role SET DEFAULT 'viewer';
-- Glob patterns of the host names the user may see ('*': every host).
ALTER TABLE users ADD COLUMN hosts text[] NOT NULL DEFAULT '{*}'
    CHECK (cardinality(hosts) BETWEEN 1 AND 64);

-- Long-lived credentials for programs: `pp_` + 32 random bytes, shown once, kept only as
-- its SHA-256 (a secret of that entropy needs no slow hash). A token acts as its user,
-- never more; it goes with its user.
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 64),
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest       bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user_id ON api_tokens (user_id);
