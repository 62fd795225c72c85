-- Tiered history. metrics_snapshots stays the hot tier: snapshots as written, one JSON row
-- per section, now in 10-minute partitions (the writer creates them; existing daily ones
-- are compacted and dropped like the rest). The compactor (exporter/storage/compactor.py)
-- packs each host's section per 10-minute window into one compressed chunk of every
-- number it holds (exporter/storage/blocks.py), adds the window's minute and hour
-- aggregates, and drops the hot partition once all of it is packed.

-- Every number of every section, one row per host, section and 10-minute window; kept
-- PERFPULSE_RETENTION_DAYS. `data` is already compressed: stored out of line as is.
CREATE TABLE metrics_chunks (
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    start       timestamptz NOT NULL,
    rows        integer     NOT NULL,
    numbers     integer     NOT NULL,
    data        bytea       NOT NULL,
    PRIMARY KEY (host, metric_type, start)
) PARTITION BY RANGE (start);

-- Minute aggregates (avg, min, max, last and count of every number), one row per host,
-- section and hour, and once a day is over one row for the whole day (`span`: what the row
-- covers); kept PERFPULSE_RETENTION_MINUTES_DAYS.
CREATE TABLE metrics_minutes (
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    start       timestamptz NOT NULL,
    rows        integer     NOT NULL,
    numbers     integer     NOT NULL,
    data        bytea       NOT NULL,
    span        interval    NOT NULL DEFAULT interval '1 hour',
    PRIMARY KEY (host, metric_type, start)
) PARTITION BY RANGE (start);

-- Hour aggregates, one row per host, section and day, and once a month is over one row for
-- the whole month; kept PERFPULSE_RETENTION_HOURS_DAYS.
CREATE TABLE metrics_hours (
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    start       timestamptz NOT NULL,
    rows        integer     NOT NULL,
    numbers     integer     NOT NULL,
    data        bytea       NOT NULL,
    span        interval    NOT NULL DEFAULT interval '1 day',
    PRIMARY KEY (host, metric_type, start)
) PARTITION BY RANGE (start);

ALTER TABLE metrics_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE metrics_minutes ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE metrics_hours ALTER COLUMN data SET STORAGE EXTERNAL;

-- metrics_rollup_1m keeps its columns for SQL readers (Grafana's History dashboard): the
-- compactor now writes each minute once, when it packs it, instead of every flush adding
-- to it; the rows already there stay.
COMMENT ON TABLE metrics_rollup_1m IS
    'Per-minute count, sum and max of the plotted fields (exporter/storage/fields.py), written by the compactor; kept PERFPULSE_RETENTION_DAYS.';
