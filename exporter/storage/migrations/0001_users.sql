-- Accounts that may log in to the API and the live stream.
CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username            text NOT NULL UNIQUE CHECK (char_length(username) BETWEEN 1 AND 64),
    password_hash       text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Tokens issued before this instant are refused: changing a password logs out everywhere.
    password_changed_at timestamptz NOT NULL DEFAULT now()
);
