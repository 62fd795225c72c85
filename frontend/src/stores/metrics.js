import { defineStore } from 'pinia'
import { ref, shallowRef } from 'vue'
import { PANELS, valueAt } from '@/panels'
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
export const HOST_REFUSALS = ['unknown host', 'invalid host', 'this instance collects no host']

/** ws: or wss: on this page's own host: never a hard-coded address. With `host`, that
 * host's stream (relayed by this instance); `*` is the fleet list. */
export function streamUrl(location = window.location, host = null) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  const query = host ? `?host=${encodeURIComponent(host)}` : ''
  return `${scheme}//${location.host}/api/ws/metrics${query}`
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

  // Injected for tests: the WebSocket class, timers, where to go on a refused token.
  const env = {
    WebSocket: globalThis.WebSocket,
    setTimeout: (...a) => globalThis.setTimeout(...a),
    clearTimeout: (...a) => globalThis.clearTimeout(...a),
    url: (name) => streamUrl(window.location, name),
    onUnauthorized: () => {},
    onHostRefused: () => {},
  }
  let socket = null
  let timer = null
  let wanted = false
  let lastSeq = null

  function configure(overrides) {
    Object.assign(env, overrides)
  }

  function connect() {
    const auth = useAuthStore()
    wanted = true
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
    const ws = new env.WebSocket(env.url(host.value), ['bearer', auth.token])
    socket = ws
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
    timer = env.setTimeout(() => {
      timer = null
      if (wanted) connect()
    }, delay)
  }

  function receive(snapshot) {
    if (lastSeq !== null && snapshot.seq <= lastSeq) return
    lastSeq = snapshot.seq
    currentMetrics.value = snapshot
    lastUpdateTime.value = new Date()
    const time = Date.parse(snapshot.timestamp)
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
  }

  function disconnect() {
    wanted = false
    if (timer !== null) {
      env.clearTimeout(timer)
      timer = null
    }
    const ws = socket
    socket = null
    if (ws) ws.close(NORMAL_CLOSURE, 'dashboard closed')
    connectionState.value = 'disconnected'
    reconnecting.value = false
    currentMetrics.value = null
  }

  /** Stream another host (null: this instance's own); its charts start empty. */
  function selectHost(name) {
    const next = name || null
    if (next === host.value) return
    host.value = next
    lastSeq = null
    currentMetrics.value = null
    series.value = emptySeries()
    if (wanted || socket) {
      const ws = socket
      socket = null
      if (ws) ws.close(NORMAL_CLOSURE, 'another host')
      reconnectAttempts.value = 0
      connect()
    }
  }

  function retry() {
    reconnectAttempts.value = 0
    errorMessage.value = null
    connect()
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
    selectHost,
    configure,
    connect,
    disconnect,
    retry,
    receive,
  }
})
