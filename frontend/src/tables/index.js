import spec from '@spec/panels.json'
import { formatValue } from '@/panels'

/** The table panels after the six charts (processes; services and containers), from the
 * spec the Grafana dashboards are generated from. */
export const TABLES = spec.tables

const io = (row) => (row.read_bytes_per_second ?? 0) + (row.write_bytes_per_second ?? 0)

/** What each sort key orders by, per table: largest first. */
export const SORTS = {
  processes: { cpu: (p) => p.cpu_percent ?? 0, memory: (p) => p.rss_bytes ?? 0, io },
  cgroups: { cpu: (g) => g.cpu_percent ?? 0, memory: (g) => g.memory_bytes ?? 0, io },
}

/** The columns each table shows: a heading and the cell's text for a row. */
export const COLUMNS = {
  processes: [
    { label: 'process', cell: (p) => p.name, title: (p) => `${p.command} (pid ${p.pid})`, name: true },
    { label: 'user', cell: (p) => p.user },
    { label: 'CPU', cell: (p) => cores(p.cpu_percent), sort: 'cpu' },
    { label: 'memory', cell: (p) => formatValue(p.rss_bytes, 'bytes'), sort: 'memory' },
    { label: 'read', cell: (p) => formatValue(p.read_bytes_per_second, 'Bps'), sort: 'io' },
    { label: 'write', cell: (p) => formatValue(p.write_bytes_per_second, 'Bps'), sort: 'io' },
  ],
  cgroups: [
    { label: 'group', cell: (g) => g.name, title: (g) => g.path, name: true },
    { label: 'kind', cell: (g) => g.kind },
    { label: 'CPU', cell: (g) => cores(g.cpu_percent), sort: 'cpu' },
    { label: 'memory', cell: (g) => memoryOf(g), sort: 'memory' },
    { label: 'read', cell: (g) => formatValue(g.read_bytes_per_second, 'Bps'), sort: 'io' },
    { label: 'write', cell: (g) => formatValue(g.write_bytes_per_second, 'Bps'), sort: 'io' },
    { label: 'tasks', cell: (g) => (g.tasks ?? '–').toString() },
  ],
}

/** A CPU share where 100 % is one core, as top shows it. */
export function cores(percent) {
  return percent === null || percent === undefined ? '–' : `${percent.toFixed(1)} %`
}

function memoryOf(group) {
  const used = formatValue(group.memory_bytes, 'bytes')
  return group.memory_limit_bytes ? `${used} of ${formatValue(group.memory_limit_bytes, 'bytes')}` : used
}

/** The rows of a table section, filtered (name, user, command or group contain the text,
 * case aside) and sorted by `sort`, largest first; ties by name. */
export function tableRows(key, rows, { sort = 'cpu', filter = '' } = {}) {
  const by = SORTS[key][sort] ?? SORTS[key].cpu
  const needle = filter.trim().toLowerCase()
  const matches = (row) =>
    !needle ||
    [row.name, row.user, row.command, row.path, row.cgroup]
      .filter(Boolean)
      .some((text) => text.toLowerCase().includes(needle))
  return rows.filter(matches).sort((a, b) => by(b) - by(a) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
}

/** The rows a snapshot's section holds for a table (none when unavailable). */
export function sectionRows(key, section) {
  if (!section || section.available === false) return []
  return (key === 'processes' ? section.top : section.groups) ?? []
}
