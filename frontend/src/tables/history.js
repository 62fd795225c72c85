/** The start of the minute `time` (ms since the epoch) falls in. */
export function minuteOf(time) {
  return Math.floor(time / 60_000) * 60_000
}

/** Rows for a table from a history answer of one minute's bucket (none when nothing was
 * stored). A minute's account has CPU seconds over 60 s: shown as the share of a core,
 * like the live table, and bytes as bytes per second. */
export function minuteRows(key, answer) {
  const bucket = answer?.buckets?.[0]
  if (!bucket) return []
  const seconds = (bucket.minutes ?? 1) * 60
  const rows = key === 'processes' ? bucket.top ?? [] : bucket.groups ?? []
  return rows.map((row) => ({
    ...row,
    cpu_percent: (row.cpu_seconds / seconds) * 100,
    read_bytes_per_second: row.read_bytes === undefined ? null : row.read_bytes / seconds,
    write_bytes_per_second: row.write_bytes === undefined ? null : row.write_bytes / seconds,
  }))
}
