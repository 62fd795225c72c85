-- One row per collector per snapshot. Partitioned by day so retention drops whole
-- partitions (no DELETE, no bloat, no long locks); the writer creates the partitions it
-- needs. The primary key makes a replayed snapshot a no-op and serves time-range reads
-- per host and type.
CREATE TABLE metrics_snapshots (
    "timestamp" timestamptz NOT NULL,
    host        text        NOT NULL,
    metric_type text        NOT NULL,
    metric_data jsonb       NOT NULL,
    PRIMARY KEY (host, metric_type, "timestamp")
) PARTITION BY RANGE ("timestamp");

-- Per-minute aggregates of the plotted fields, recomputed from metrics_snapshots for every
-- minute a flush touches (so replays and late backlogs stay exact). Arrays follow the
-- per-type field order in exporter/storage/fields.py, which only ever grows at the end.
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
