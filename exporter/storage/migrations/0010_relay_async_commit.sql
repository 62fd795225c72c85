-- A publish never waits for a WAL flush. Its live row is in an unlogged table (no WAL),
-- but once a minute it also refreshes the host's row in `hosts` (last seen, interval,
-- version, collectors), and that commit waited for the WAL to reach disk behind every
-- write batch's: at 1,000 hosts that is 17 publishes a second each holding a relay
-- connection for a flush (bench/README.md, "fleet"). Committed asynchronously, a crash of
-- PostgreSQL can lose the last fraction of a second of those refreshes, which the next
-- minute's (or, for a new host, the next tick's registration) writes again. The body is
-- 0009's with that one line.
CREATE OR REPLACE FUNCTION perfpulse_publish(
    p_host text, p_seq bigint, p_timestamp timestamptz, p_interval double precision,
    p_version text, p_collectors text[], p_summary json, p_snapshot text, p_notice text
) RETURNS void LANGUAGE plpgsql AS $$
-- p_notice is what agents before 0009 sent listeners; it is no longer sent.
DECLARE
    watched boolean := EXISTS (SELECT 1 FROM watched_hosts WHERE host = p_host AND until > now());
    stamp bigint := pg_current_xact_id()::text::bigint;
BEGIN
    -- For this transaction only (the publish is a transaction of its own).
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO live_snapshots AS l (host, seq, "timestamp", received_at, summary, snapshot, xid)
    VALUES (p_host, p_seq, p_timestamp, now(), p_summary,
            CASE WHEN watched THEN p_snapshot END, stamp)
    ON CONFLICT (host) DO UPDATE SET
        seq = excluded.seq, "timestamp" = excluded."timestamp",
        received_at = excluded.received_at, summary = excluded.summary,
        snapshot = excluded.snapshot, xid = excluded.xid;
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
END
$$;
