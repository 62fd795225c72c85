import spec from '@spec/panels.json'

/** The six panels, in order, from the spec the Grafana dashboards are generated from. */
export const PANELS = spec.panels

/** perf's hardware events (the Hardware counters panel says when none can be counted). */
export const HARDWARE_EVENTS = spec.perf_events.hardware

/** The value at `path` in a snapshot, times `scale`; null when absent or unavailable. */
export function valueAt(snapshot, path, scale = 1) {
  let node = snapshot
  for (const key of path) {
    if (node === null || typeof node !== 'object') return null
    node = node[key]
  }
  return typeof node === 'number' && Number.isFinite(node) ? node * scale : null
}

const BYTES = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** A plain number, short: 60000 is "60k" on an axis, 0 is "0" (not "0.00"). */
export function compactNumber(value) {
  const abs = Math.abs(value)
  if (abs >= 1e9) return `${+(value / 1e9).toFixed(1)}G`
  if (abs >= 1e6) return `${+(value / 1e6).toFixed(1)}M`
  if (abs >= 1e4) return `${+(value / 1e3).toFixed(1)}k`
  if (Number.isInteger(value)) return String(value)
  return abs >= 100 ? value.toFixed(0) : String(+value.toFixed(2))
}

/** Seconds as people read a latency: "850 µs", "4.2 ms", "1.30 s". */
export function formatSeconds(value) {
  const abs = Math.abs(value)
  if (abs === 0) return '0 s'
  if (abs < 1e-3) return `${(value * 1e6).toFixed(0)} µs`
  if (abs < 1) return `${(value * 1e3).toFixed(abs < 0.01 ? 2 : 1)} ms`
  return `${value.toFixed(2)} s`
}

/** A value in the panel's unit (Grafana's unit names), for people; `axis`: the shorter
 * form a tick label needs. */
export function formatValue(value, unit, { axis = false } = {}) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–'
  switch (unit) {
    case 'percentunit':
      return axis ? `${+(value * 100).toFixed(1)} %` : `${(value * 100).toFixed(1)} %`
    case 's':
      return formatSeconds(value)
    case 'bytes':
    case 'Bps': {
      let v = value
      let i = 0
      while (Math.abs(v) >= 1024 && i < BYTES.length - 1) {
        v /= 1024
        i += 1
      }
      const digits = v >= 100 || i === 0 ? 0 : 1
      return `${v.toFixed(digits)} ${BYTES[i]}${unit === 'Bps' ? '/s' : ''}`
    }
    default:
      if (axis) return compactNumber(value)
      return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2)
  }
}

/** A snapshot path as the history API's `field`: the section's part, dotted; a name with a
 * dot, bracket, equals sign or quote goes in JSON quotes. A line may name its field. */
export function fieldPath(path) {
  return path
    .slice(1)
    .map((part) => (/^[^.[\]="\\]+$/.test(part) && part.trim() === part ? part : JSON.stringify(part)))
    .join('.')
}

export function lineField(line) {
  return line.field ?? fieldPath(line.path)
}
