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

/** A value in the panel's unit (Grafana's unit names), for people. */
export function formatValue(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–'
  switch (unit) {
    case 'percentunit':
      return `${(value * 100).toFixed(1)} %`
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
      return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2)
  }
}
