-- perf_events position 4 in the minute rollups held task-clock CPU-seconds per second
-- ("CPUs busy"). perf stat -a counts task-clock on every CPU, idle time included, so the
-- figure always equalled the number of CPUs. The position now holds CPU migrations per
-- second; the old values are cleared so that history never shows them as migrations.
UPDATE metrics_rollup_1m
SET counts[4] = 0, sums[4] = NULL, maxes[4] = NULL
WHERE metric_type = 'perf_events' AND cardinality(counts) >= 4;
