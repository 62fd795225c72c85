import { formatValue, valueAt } from '@/panels'

// The alert rules on the page (GET /api/alerts/rules): a firing alert's threshold drawn on
// the panel that charts its path, and the summary tiles coloured at the rules' levels.

const CRITICAL = new Set(['critical', 'page', 'error'])

export function isCritical(severity) {
  return CRITICAL.has(severity)
}

function samePath(steps, path) {
  return Array.isArray(steps) && steps.length === path.length && steps.every((s, i) => s === path[i])
}

/**
 * The thresholds to mark on one panel: for each firing alert, its rules whose path a line
 * of the panel draws (in that line's scale and axis) or the panel lists under `marks`
 * (`scale`, and `of`: a path of the snapshot the share is of, memory's total). Each mark is
 * { value, label, severity, second } (`second`: on the right-hand axis).
 */
export function panelMarks(panel, rules, alerts, snapshot) {
  const firing = new Set((alerts ?? []).filter((a) => a.state === 'firing').map((a) => a.alert))
  if (!firing.size) return []
  const marks = []
  const seen = new Set()
  for (const rule of rules ?? []) {
    if (!firing.has(rule.alert) || !rule.steps) continue
    const line = panel.live.find((l) => samePath(rule.steps, l.path))
    const listed = line ? null : (panel.marks ?? []).find((m) => samePath(rule.steps, m.path))
    if (!line && !listed) continue
    let value = rule.threshold * ((line ?? listed).scale ?? 1)
    if (listed?.of) {
      const whole = valueAt(snapshot, listed.of)
      if (whole === null) continue
      value *= whole
    }
    const unit = line?.unit ?? panel.unit
    const key = `${rule.alert}:${value}`
    if (seen.has(key)) continue
    seen.add(key)
    marks.push({
      value,
      label: `${rule.alert} ${rule.op} ${formatValue(value, unit)}`,
      severity: rule.severity,
      second: Boolean(line?.unit && line.unit !== panel.unit),
    })
  }
  return marks
}

/**
 * Warning and critical levels of a summary tile from the rules on its paths (`>` and `>=`
 * rules; the lowest threshold of each kind, times `scale`), or `fallback` where no rule
 * speaks of them. A level no rule sets is null.
 */
export function tileLevels(rules, paths, scale, fallback) {
  const matching = (rules ?? []).filter((r) => paths.includes(r.path) && (r.op === '>' || r.op === '>='))
  if (!matching.length) return fallback
  const lowest = (list) => (list.length ? Math.min(...list) * scale : null)
  return [
    lowest(matching.filter((r) => !isCritical(r.severity)).map((r) => r.threshold)),
    lowest(matching.filter((r) => isCritical(r.severity)).map((r) => r.threshold)),
  ]
}

/** 'critical', 'warning', 'ok', or 'unknown' (no value) against [warning, critical]. */
export function levelOf(value, [warning, critical]) {
  if (value === null || value === undefined) return 'unknown'
  if (critical !== null && value >= critical) return 'critical'
  if (warning !== null && value >= warning) return 'warning'
  return 'ok'
}
