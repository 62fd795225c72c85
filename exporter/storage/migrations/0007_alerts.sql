-- Alerts evaluated by perfpulse (exporter/alerts/): one row per alert instance from the
-- moment it goes pending; a pending alert that stops holding is deleted, a firing one is
-- resolved and stays as history. The open row of an instance is unique.
CREATE TABLE alerts (
    id          bigserial        PRIMARY KEY,
    host        text             NOT NULL,
    alert       text             NOT NULL,
    labels      jsonb            NOT NULL DEFAULT '{}',
    severity    text             NOT NULL,
    summary     text             NOT NULL,
    state       text             NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    value       double precision,
    peak        double precision,
    started_at  timestamptz      NOT NULL,
    fired_at    timestamptz,
    resolved_at timestamptz
);
CREATE UNIQUE INDEX alerts_open ON alerts (host, alert, labels) WHERE resolved_at IS NULL;
CREATE INDEX alerts_host_started ON alerts (host, started_at);
