-- One row per collector per snapshot. Partitioned by day so retention drops whole
-- partitions (no DELETE, no bloat, no long locks); the writer creates the partitions it
-- needs. The primary key makes a replayed snapshot a no-op and serves time-range reads
-- per host and type. metric_data is json, not jsonb: the text is kept as sent (key order
-- too) and ingest is twice as fast (bench/README.md); ->, ->> and #>> work the same.
CREATE TABLE metrics_snapshots (
    "timestamp" timestamptz NOT NULL,
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    metric_data json        NOT NULL,
    PRIMARY KEY (host, metric_type, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- Per-minute aggregates of the plotted fields. Each flush adds the rows it actually
-- inserted (a replayed row inserts nothing and adds nothing). Arrays follow the per-type
-- field order in exporter/storage/fields.py, which only ever grows at the end.
CREATE TABLE metrics_rollup_1m (
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    bucket      timestamptz NOT NULL,
    samples     integer     NOT NULL,
    counts      integer[]   NOT NULL,
    sums        float8[]    NOT NULL,
    maxes       float8[]    NOT NULL,
    PRIMARY KEY (host, metric_type, bucket)
);
