-- The live relay without a NOTIFY per tick. A transaction that has issued NOTIFY holds a
-- lock on the whole instance from its pre-commit until its commit is done (notifications
-- enter the queue in commit order: PreCommit_Notify in PostgreSQL's async.c), so with one
-- NOTIFY per host per tick every agent's commit waited in one line behind every other
-- agent's (bench/README.md, "fleet"). Now each publish stamps the host's live row with
-- its transaction id, and each listening instance reads, a few times a second, the rows
-- stamped since the oldest transaction still running at its previous read (one query,
-- whatever the number of hosts). NOTIFY stays for rare events: a host removed.
ALTER TABLE live_snapshots ADD COLUMN xid bigint NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION perfpulse_publish(
    p_host text, p_seq bigint, p_timestamp timestamptz, p_interval double precision,
    p_version text, p_collectors text[], p_summary json, p_snapshot text, p_notice text
) RETURNS void LANGUAGE plpgsql AS $$
-- p_notice is what agents before 0009 sent listeners; it is no longer sent.
DECLARE
    watched boolean := EXISTS (SELECT 1 FROM watched_hosts WHERE host = p_host AND until > now());
    stamp bigint := pg_current_xact_id()::text::bigint;
BEGIN
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
