import { defineStore } from 'pinia'
import { ref, shallowRef } from 'vue'
import { useAuthStore } from './auth'
import { MAX_ATTEMPTS, POLICY_VIOLATION, backoffDelay, refusesHost, streamUrl } from './metrics'

// Points in each host's trend line: a minute at 1 s.
export const TREND_POINTS = 60
// Updates are applied to the list at most this often: a thousand hosts each sending one
// a second must not mean a thousand renders.
export const FLUSH_MS = 250

export const COLUMNS = [
  { key: 'host', label: 'Host' },
  { key: 'cpu_busy_ratio', label: 'CPU', unit: 'percentunit' },
  { key: 'memory_used_ratio', label: 'Memory', unit: 'percentunit' },
  { key: 'network_receive_bytes_per_second', label: 'Net in', unit: 'Bps' },
  { key: 'network_transmit_bytes_per_second', label: 'Net out', unit: 'Bps' },
  { key: 'disk_read_bytes_per_second', label: 'Disk read', unit: 'Bps' },
  { key: 'disk_write_bytes_per_second', label: 'Disk write', unit: 'Bps' },
  // The busiest process, and the busiest service, container or pod: its name, sorted by
  // its CPU share.
  { key: 'top_process', label: 'Busiest', sortBy: 'top_process_cpu_percent', text: true },
  { key: 'top_group', label: 'Busiest service', sortBy: 'top_group_cpu_percent', text: true },
  // Firing alerts on the host, with the worst severity among them.
  { key: 'alerts_firing', label: 'Alerts', alerts: true },
]

/** What a fleet row shows for a column. */
export function cellText(host, column, format) {
  const summary = host.summary ?? {}
  if (column.alerts) {
    const count = summary.alerts_firing
    if (count === null || count === undefined) return '–'
    return count > 0 ? `${count} ${summary.alerts_worst ?? ''}`.trim() : '0'
  }
  if (!column.text) return format(summary[column.key], column.unit)
  const name = summary[column.key]
  if (!name) return '–'
  const cpu = summary[column.sortBy]
  return cpu === null || cpu === undefined ? name : `${name} ${cpu.toFixed(0)} %`
}

const SEVERITY = { critical: 0, page: 0, error: 1, warning: 2, info: 3 }

/** "Needs attention" (the default order): stale hosts first (they stopped telling), then
 * hosts with firing alerts (the worst severity first, then the most alerts), then the
 * busiest CPU, then by name. */
export function attention(a, b) {
  if (a.stale !== b.stale) return a.stale ? -1 : 1
  const firing = (h) => h.summary?.alerts_firing ?? 0
  if ((firing(a) > 0) !== (firing(b) > 0)) return firing(a) > 0 ? -1 : 1
  if (firing(a) > 0) {
    const rank = (h) => SEVERITY[h.summary?.alerts_worst] ?? 2
    if (rank(a) !== rank(b)) return rank(a) - rank(b)
    if (firing(a) !== firing(b)) return firing(b) - firing(a)
  }
  const cpu = (h) => h.summary?.cpu_busy_ratio ?? -1
  if (cpu(a) !== cpu(b)) return cpu(b) - cpu(a)
  return a.host < b.host ? -1 : a.host > b.host ? 1 : 0
}

/** `attention`: see above. Otherwise stale hosts last whatever the column; then by the
 * column (unknown values last), then by name. `descending` applies to the column only. */
export function sortHosts(hosts, key, descending = false) {
  if (key === 'attention') return [...hosts].sort(attention)
  const sign = descending ? -1 : 1
  return [...hosts].sort((a, b) => {
    if (a.stale !== b.stale) return a.stale ? 1 : -1
    if (key !== 'host') {
      const by = COLUMNS.find((c) => c.key === key)?.sortBy ?? key
      const x = a.summary?.[by]
      const y = b.summary?.[by]
      if (x == null && y != null) return 1
      if (y == null && x != null) return -1
      if (x != null && y != null && x !== y) return (x - y) * sign
    } else if (a.host !== b.host) {
      return a.host < b.host ? -sign : sign
    }
    return a.host < b.host ? -1 : a.host > b.host ? 1 : 0
  })
}

export function filterHosts(hosts, text) {
  const needle = text.trim().toLowerCase()
  return needle ? hosts.filter((h) => h.host.toLowerCase().includes(needle)) : hosts
}

/** SVG polyline points for a trend of ratios (0..1) in a width x height box. */
export function trendPoints(values, width = 80, height = 20) {
  if (values.length < 2) return ''
  const step = width / (TREND_POINTS - 1)
  const offset = (TREND_POINTS - values.length) * step
  return values
    .map((v, i) => {
      const y = height - Math.max(0, Math.min(1, v ?? 0)) * height
      return `${(offset + i * step).toFixed(1)},${y.toFixed(1)}`
    })
    .join(' ')
}

/**
 * The fleet list, live: `/api/ws/metrics?host=*` sends the whole list, then one message
 * per host update. Entries are plain objects applied in batches (`hosts` is replaced,
 * never deeply reactive), each with a short CPU trend.
 */
export const useFleetStore = defineStore('fleet', () => {
  const hosts = shallowRef([])
  const connectionState = ref('disconnected')
  const errorMessage = ref(null)
  const listing = shallowRef([]) // from GET /api/hosts: the host picker's list

  const env = {
    WebSocket: globalThis.WebSocket,
    setTimeout: (...a) => globalThis.setTimeout(...a),
    clearTimeout: (...a) => globalThis.clearTimeout(...a),
    url: () => streamUrl(window.location, '*'),
    fetch: (...a) => globalThis.fetch(...a),
    onUnauthorized: () => {},
  }
  const byHost = new Map()
  let socket = null
  let timer = null
  let flushTimer = null
  let wanted = false
  let attempts = 0

  function configure(overrides) {
    Object.assign(env, overrides)
  }

  function update(info) {
    const entry = byHost.get(info.host)
    const trend = entry ? entry.trend : []
    if (!entry || entry.seenAt !== info.last_seen) {
      trend.push(info.summary?.cpu_busy_ratio ?? null)
      if (trend.length > TREND_POINTS) trend.shift()
    }
    byHost.set(info.host, { ...info, trend, seenAt: info.last_seen })
  }

  function receive(message) {
    if (message.type === 'hosts') {
      const previous = new Map(byHost)
      byHost.clear()
      for (const info of message.hosts) {
        if (previous.has(info.host)) byHost.set(info.host, previous.get(info.host))
        update(info)
      }
    } else if (message.type === 'host') {
      update(message)
    } else if (message.type === 'host_removed') {
      byHost.delete(message.host)
    } else {
      return
    }
    scheduleFlush()
  }

  function scheduleFlush() {
    if (flushTimer !== null) return
    flushTimer = env.setTimeout(flush, FLUSH_MS)
  }

  function flush() {
    flushTimer = null
    hosts.value = [...byHost.values()]
  }

  function connect() {
    const auth = useAuthStore()
    wanted = true
    if (!auth.token) {
      env.onUnauthorized()
      return
    }
    connectionState.value = 'connecting'
    const ws = new env.WebSocket(env.url(), ['bearer', auth.token])
    socket = ws
    ws.onopen = () => {
      if (socket !== ws) return
      connectionState.value = 'connected'
      errorMessage.value = null
      attempts = 0
    }
    ws.onmessage = (event) => {
      if (socket === ws) receive(JSON.parse(event.data))
    }
    ws.onclose = (event) => {
      if (socket !== ws) return
      socket = null
      if (event.code === POLICY_VIOLATION && !refusesHost(event.reason)) {
        wanted = false
        connectionState.value = 'disconnected'
        auth.logout()
        env.onUnauthorized(event.reason || 'Session expired')
        return
      }
      if (!wanted) {
        connectionState.value = 'disconnected'
        return
      }
      if (attempts >= MAX_ATTEMPTS) {
        connectionState.value = 'error'
        errorMessage.value = event.reason || 'Failed to reconnect'
        return
      }
      connectionState.value = 'connecting'
      errorMessage.value = event.reason || null
      timer = env.setTimeout(() => {
        timer = null
        if (wanted) connect()
      }, backoffDelay(attempts++))
    }
  }

  function disconnect() {
    wanted = false
    for (const t of [timer, flushTimer]) if (t !== null) env.clearTimeout(t)
    timer = flushTimer = null
    const ws = socket
    socket = null
    if (ws) ws.close(1000, 'fleet page closed')
    connectionState.value = 'disconnected'
  }

  /** GET /api/hosts, for the host picker; an error leaves the last list. */
  async function loadListing() {
    const auth = useAuthStore()
    if (!auth.token) return
    try {
      const response = await env.fetch('/api/hosts', {
        headers: { Authorization: `Bearer ${auth.token}` },
      })
      if (response.ok) listing.value = await response.json()
    } catch {
      // offline: keep what we had
    }
  }

  /** Log out: close the stream, forget every host seen. */
  function reset() {
    disconnect()
    byHost.clear()
    hosts.value = []
    listing.value = []
    errorMessage.value = null
    attempts = 0
  }

  return {
    reset,
    hosts,
    connectionState,
    errorMessage,
    listing,
    configure,
    connect,
    disconnect,
    receive,
    flush,
    loadListing,
  }
})
