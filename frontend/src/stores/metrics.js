import { defineStore } from 'pinia'
import { ref, shallowRef } from 'vue'
import { PANELS, fieldPath, valueAt } from '@/panels'

export { fieldPath }
import { useAuthStore } from './auth'

export const BACKOFF_BASE_MS = 1000
export const BACKOFF_MAX_MS = 30000
export const MAX_ATTEMPTS = 10
export const POLICY_VIOLATION = 1008
export const NORMAL_CLOSURE = 1000
// Points kept per series: an hour at 1 s would be 3,600; the live charts show the last
// ten minutes at most and the page must stay smooth for hours.
export const MAX_POINTS = 600

/** The reconnect delay before attempt n (0-based): 1 s, 2 s, 4 s ... capped at 30 s. */
export function backoffDelay(attempt) {
  return Math.min(BACKOFF_BASE_MS * 2 ** attempt, BACKOFF_MAX_MS)
}

// Refusals that concern the host asked for, not the login: shown, no logout, no retry.
export const HOST_REFUSALS = [
  'unknown host',
  'invalid host',
  'no fleet',
  'this instance collects no host',
]

/** ws: or wss: on this page's own host: never a hard-coded address. With `host`, that
 * host's stream (relayed by this instance); `*` is the fleet list. */
export function streamUrl(location = window.location, host = null) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const query = host ? `?host=${encodeURIComponent(host)}` : ''
  return `${scheme}//${location.host}/api/ws/metrics${query}`
}

/** Stopped: no snapshot for more than two intervals (a late tick is not a stopped one). */
export const STALE_INTERVALS = 2

export function isStale(lastMs, intervalMs, nowMs) {
  if (lastMs === null || lastMs === undefined || !(intervalMs > 0)) return false
  return nowMs - lastMs > STALE_INTERVALS * intervalMs
}

/** The sampling interval: what the server says (its `system.interval_seconds`), else the
 * median step between the last timestamps seen; null while unknown. */
export function intervalOf(snapshot, times) {
  const said = snapshot?.system?.interval_seconds
  if (typeof said === 'number' && said > 0) return said * 1000
  const steps = []
  for (let i = Math.max(1, times.length - 9); i < times.length; i += 1) steps.push(times[i] - times[i - 1])
  if (!steps.length) return null
  steps.sort((a, b) => a - b)
  return steps[Math.floor(steps.length / 2)]
}

/**
 * Merge stored points (from the history API) in front of the live series: only those
 * older than the first live point, newest kept when over MAX_POINTS. `stored` is
 * { [panelKey]: { t: [...], values: [[...] per line] } }.
 */
export function prefillSeries(current, stored, maxPoints = MAX_POINTS) {
  const next = {}
  for (const panel of PANELS) {
    const live = current[panel.key]
    const old = stored[panel.key]
    if (!old || !old.t.length) {
      next[panel.key] = live
      continue
    }
    const first = live.t.length ? live.t[0] : Infinity
    let keep = old.t.findIndex((t) => t >= first)
    if (keep === -1) keep = old.t.length
    const room = Math.max(0, maxPoints - live.t.length)
    const from = Math.max(0, keep - room)
    next[panel.key] = {
      t: [...old.t.slice(from, keep), ...live.t],
      values: panel.live.map((_, i) => [...old.values[i].slice(from, keep), ...live.values[i]]),
    }
  }
  return next
}

export function refusesHost(reason) {
  return HOST_REFUSALS.some((prefix) => (reason ?? '').startsWith(prefix))
}

function emptySeries() {
  return Object.fromEntries(PANELS.map((p) => [p.key, { t: [], values: p.live.map(() => []) }]))
}

/**
 * The live stream: connection state, the latest snapshot, and bounded series per panel.
 * Series live in a shallowRef and are replaced, never mutated deeply (ECharts and deep
 * reactivity over long arrays do not mix).
 */
export const useMetricsStore = defineStore('metrics', () => {
  const connectionState = ref('disconnected') // disconnected | connecting | connected | error
  const reconnecting = ref(false)
  const currentMetrics = shallowRef(null)
  const lastUpdateTime = ref(null)
  const reconnectAttempts = ref(0)
  const errorMessage = ref(null)
  const series = shallowRef(emptySeries())
  const host = ref(null) // null: this instance's own host
  const nextRetryAt = ref(null) // when the next reconnect attempt starts (ms), while waiting
  const lastSnapshotTime = ref(null) // the newest snapshot's own timestamp (ms)
  const intervalMs = ref(null)

  // Injected for tests: the WebSocket class, timers, where to go on a refused token.
  const env = {
    WebSocket: globalThis.WebSocket,
    setTimeout: (...a) => globalThis.setTimeout(...a),
    clearTimeout: (...a) => globalThis.clearTimeout(...a),
    url: (name) => streamUrl(window.location, name),
    onUnauthorized: () => {},
    onHostRefused: () => {},
    // Stored snapshots for the window before the first live one (Live opens full after a
    // restart); resolves to { [panelKey]: { t, values } } or null.
    loadStored: null,
    now: () => Date.now(),
  }
  let socket = null
  let timer = null
  let wanted = false
  let active = false // a page shows the stream (between connect and disconnect)
  let lastSeq = null

  function configure(overrides) {
    Object.assign(env, overrides)
  }

  function connect() {
    const auth = useAuthStore()
    wanted = true
    active = true
    if (timer !== null) {
      env.clearTimeout(timer)
      timer = null
    }
    if (!auth.token) {
      connectionState.value = 'error'
      errorMessage.value = 'Not logged in'
      env.onUnauthorized()
      return
    }
    connectionState.value = 'connecting'
    nextRetryAt.value = null
    const ws = new env.WebSocket(env.url(host.value), ['bearer', auth.token])
    socket = ws
    if (lastSeq === null && env.loadStored) fillFromStore(host.value)
    ws.onopen = () => {
      if (socket !== ws) return
      connectionState.value = 'connected'
      reconnecting.value = false
      reconnectAttempts.value = 0
      errorMessage.value = null
      // After a reconnect: what was missed. On the first open: every snapshot the server
      // keeps (its resume buffer), so the charts open full instead of one point a tick.
      ws.send(JSON.stringify({ resume_from: lastSeq ?? 0, limit: MAX_POINTS }))
    }
    ws.onmessage = (event) => {
      if (socket !== ws) return
      receive(JSON.parse(event.data))
    }
    ws.onclose = (event) => {
      if (socket !== ws) return
      socket = null
      if (event.code === POLICY_VIOLATION && refusesHost(event.reason)) {
        // No such host here (or this instance collects none): the login is fine.
        wanted = false
        reconnecting.value = false
        connectionState.value = 'error'
        errorMessage.value = event.reason
        env.onHostRefused(event.reason)
        return
      }
      if (event.code === POLICY_VIOLATION) {
        // The token is refused: retrying cannot help. Back to the login page.
        wanted = false
        reconnecting.value = false
        connectionState.value = 'disconnected'
        errorMessage.value = event.reason || 'Session expired'
        auth.logout()
        env.onUnauthorized(errorMessage.value)
        return
      }
      if (!wanted) {
        connectionState.value = 'disconnected'
        return
      }
      scheduleReconnect()
    }
  }

  function scheduleReconnect() {
    if (reconnectAttempts.value >= MAX_ATTEMPTS) {
      reconnecting.value = false
      connectionState.value = 'error'
      errorMessage.value = 'Failed to reconnect'
      return
    }
    const delay = backoffDelay(reconnectAttempts.value)
    reconnectAttempts.value += 1
    reconnecting.value = true
    connectionState.value = 'connecting'
    nextRetryAt.value = env.now() + delay
    timer = env.setTimeout(() => {
      timer = null
      nextRetryAt.value = null
      if (wanted) connect()
    }, delay)
  }

  // The stored minutes before the first live snapshot, asked for once per host shown.
  async function fillFromStore(name) {
    let stored = null
    try {
      stored = await env.loadStored(name)
    } catch {
      return // history unavailable (no database yet): the live stream still fills the charts
    }
    if (!stored || host.value !== name) return
    series.value = prefillSeries(series.value, stored)
  }

  function receive(snapshot) {
    if (lastSeq !== null && snapshot.seq <= lastSeq) return
    lastSeq = snapshot.seq
    currentMetrics.value = snapshot
    lastUpdateTime.value = new Date()
    const time = Date.parse(snapshot.timestamp)
    lastSnapshotTime.value = time
    const next = {}
    for (const panel of PANELS) {
      const old = series.value[panel.key]
      const drop = old.t.length >= MAX_POINTS ? 1 : 0
      next[panel.key] = {
        t: [...old.t.slice(drop), time],
        values: panel.live.map((line, i) => [
          ...old.values[i].slice(drop),
          valueAt(snapshot, line.path, line.scale),
        ]),
      }
    }
    series.value = next
    intervalMs.value = intervalOf(snapshot, next[PANELS[0].key].t)
  }

  function disconnect() {
    wanted = false
    active = false
    if (timer !== null) {
      env.clearTimeout(timer)
      timer = null
    }
    const ws = socket
    socket = null
    if (ws) ws.close(NORMAL_CLOSURE, 'dashboard closed')
    connectionState.value = 'disconnected'
    reconnecting.value = false
    nextRetryAt.value = null
  }

  /** Forget what was shown (another host, or a log out). */
  function clear() {
    lastSeq = null
    currentMetrics.value = null
    lastUpdateTime.value = null
    lastSnapshotTime.value = null
    intervalMs.value = null
    errorMessage.value = null
    series.value = emptySeries()
  }

  /** Stream another host (null: this instance's own); its charts start empty. */
  function selectHost(name) {
    const next = name || null
    if (next === host.value) return
    host.value = next
    clear()
    // Also after a refused host: the page still shows a stream, now of another host.
    if (wanted || socket || active) {
      const ws = socket
      socket = null
      if (ws) ws.close(NORMAL_CLOSURE, 'another host')
      reconnectAttempts.value = 0
      connect()
    }
  }

  /** "Retry now": reconnect at once, whether waiting for the next attempt or given up. */
  function retry() {
    reconnectAttempts.value = 0
    errorMessage.value = null
    reconnecting.value = false
    nextRetryAt.value = null
    connect()
  }

  /** Log out: close the stream and forget everything shown. */
  function reset() {
    disconnect()
    host.value = null
    reconnectAttempts.value = 0
    clear()
  }

  return {
    connectionState,
    reconnecting,
    currentMetrics,
    lastUpdateTime,
    reconnectAttempts,
    errorMessage,
    series,
    host,
    nextRetryAt,
    lastSnapshotTime,
    intervalMs,
    selectHost,
    reset,
    configure,
    connect,
    disconnect,
    retry,
    receive,
  }
})

/** The history API's answers (one per panel, raw, with `field` = each live line's path)
 * as live series: { [panelKey]: { t, values } }. */
export function storedSeries(answers) {
  const out = {}
  for (const panel of PANELS) {
    const answer = answers[panel.key]
    if (!answer) continue
    out[panel.key] = {
      t: answer.timestamps.map((t) => Date.parse(t)),
      values: panel.live.map((line) =>
        (answer.avg[fieldPath(line.path)] ?? answer.timestamps.map(() => null)).map((v) =>
          v === null || v === undefined ? null : v * (line.scale ?? 1),
        ),
      ),
    }
  }
  return out
}
