-- The fleet: every perfpulse writing to this database registers its host, and relays
-- each snapshot's live form through PostgreSQL so any instance can stream any host.

-- One row per host that has written here; kept until `perfpulse hosts remove`.
-- last_seen is refreshed at most once a minute (a write per host per tick would be WAL
-- for nothing); the live row below carries the second-by-second time.
CREATE TABLE hosts (
    host             text             PRIMARY KEY,
    first_seen       timestamptz      NOT NULL DEFAULT now(),
    last_seen        timestamptz      NOT NULL DEFAULT now(),
    interval_seconds double precision NOT NULL,
    version          text             NOT NULL,
    collectors       text[]           NOT NULL DEFAULT '{}'
);

-- Each host's latest figures, overwritten every tick; the snapshot itself only while an
-- instance streams that host (watched_hosts), so an unwatched host's row stays small:
-- updated in place (HOT, room left by the fillfactor) and pruned without vacuum, where a
-- 7 KB snapshot every tick would leave dead TOAST chunks faster than autovacuum removes
-- them (3.8 MB per host after 10 minutes at 1 s, bench/README.md). Unlogged: no WAL, and
-- a crash empties it, which loses only what the next tick rewrites.
CREATE UNLOGGED TABLE live_snapshots (
    host        text        PRIMARY KEY,
    seq         bigint      NOT NULL,
    "timestamp" timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    summary     json        NOT NULL,
    snapshot    text
) WITH (fillfactor = 50);
-- Out of line and uncompressed: compressing 7 KB every tick cost PostgreSQL a quarter of
-- the relay's time.
ALTER TABLE live_snapshots ALTER COLUMN snapshot SET STORAGE EXTERNAL;

-- Hosts some dashboard instance streams now: each listener renews its hosts' rows every
-- few seconds while it has clients for them; a row past `until` is ignored.
CREATE UNLOGGED TABLE watched_hosts (
    host  text        PRIMARY KEY,
    until timestamptz NOT NULL
);

-- An agent's whole share of the relay, one statement per tick: keep the latest
-- snapshot, register or refresh the host, and tell the listening instances (the notice is
-- small: host, seq and summary; a listener fetches the snapshot only for hosts watched,
-- and only those store it).
CREATE FUNCTION perfpulse_publish(
    p_host text, p_seq bigint, p_timestamp timestamptz, p_interval double precision,
    p_version text, p_collectors text[], p_summary json, p_snapshot text, p_notice text
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    watched boolean := EXISTS (SELECT 1 FROM watched_hosts WHERE host = p_host AND until > now());
BEGIN
    INSERT INTO live_snapshots AS l (host, seq, "timestamp", received_at, summary, snapshot)
    VALUES (p_host, p_seq, p_timestamp, now(), p_summary,
            CASE WHEN watched THEN p_snapshot END)
    ON CONFLICT (host) DO UPDATE SET
        seq = excluded.seq, "timestamp" = excluded."timestamp",
        received_at = excluded.received_at, summary = excluded.summary,
        snapshot = excluded.snapshot;
    UPDATE hosts SET last_seen = now(), interval_seconds = p_interval,
                     version = p_version, collectors = p_collectors
    WHERE host = p_host
      AND (last_seen < now() - interval '60 seconds' OR interval_seconds <> p_interval
           OR version <> p_version OR collectors <> p_collectors);
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM hosts WHERE host = p_host) THEN
        INSERT INTO hosts (host, interval_seconds, version, collectors)
        VALUES (p_host, p_interval, p_version, p_collectors)
        ON CONFLICT (host) DO NOTHING;
    END IF;
    PERFORM pg_notify('perfpulse_live', p_notice);
END
$$;
