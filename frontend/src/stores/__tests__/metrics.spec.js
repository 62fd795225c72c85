import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import {
  BACKOFF_MAX_MS,
  MAX_ATTEMPTS,
  MAX_POINTS,
  backoffDelay,
  streamUrl,
  useMetricsStore,
} from '@/stores/metrics'

/** A stand-in WebSocket the test drives by hand (jsdom has no server to talk to). */
class FakeSocket {
  static instances = []
  constructor(url, protocols) {
    this.url = url
    this.protocols = protocols
    this.sent = []
    this.closed = null
    FakeSocket.instances.push(this)
  }
  send(data) {
    this.sent.push(data)
  }
  close(code, reason) {
    this.closed = { code, reason }
  }
  open() {
    this.onopen?.()
  }
  message(snapshot) {
    this.onmessage?.({ data: JSON.stringify(snapshot) })
  }
  drop(code = 1006, reason = '') {
    this.onclose?.({ code, reason })
  }
}

function snapshot(seq, extra = {}) {
  return {
    seq,
    timestamp: new Date(1_800_000_000_000 + seq * 1000).toISOString(),
    host: 'h',
    cpu: { available: true, usage_percent: 50, modes_percent: { user: 50, iowait: 5 } },
    memory: { available: true, used_bytes: 1024, cached_bytes: 2048, swap_used_bytes: 0 },
    ...extra,
  }
}

let store
let unauthorized

beforeEach(() => {
  setActivePinia(createPinia())
  vi.useFakeTimers()
  FakeSocket.instances = []
  sessionStorage.clear()
  useAuthStore().token = 'token-123'
  unauthorized = vi.fn()
  store = useMetricsStore()
  store.configure({
    WebSocket: FakeSocket,
    setTimeout,
    clearTimeout,
    url: (host) => streamUrl({ protocol: 'http:', host: 'dash.example' }, host),
    onUnauthorized: unauthorized,
  })
})

afterEach(() => {
  vi.useRealTimers()
})

const last = () => FakeSocket.instances.at(-1)

describe('metrics store', () => {
  it('connects with the token in the subprotocol, not the URL', () => {
    store.connect()
    expect(store.connectionState).toBe('connecting')
    expect(last().url).toBe('ws://dash.example/api/ws/metrics')
    expect(last().protocols).toEqual(['bearer', 'token-123'])
    last().open()
    expect(store.connectionState).toBe('connected')
  })

  it('derives the stream URL from the page location', () => {
    expect(streamUrl({ protocol: 'https:', host: 'perf.example:8443' })).toBe(
      'wss://perf.example:8443/api/ws/metrics',
    )
    expect(streamUrl({ protocol: 'http:', host: '10.0.0.5:8000' })).toBe('ws://10.0.0.5:8000/api/ws/metrics')
  })

  it('keeps currentMetrics, lastUpdateTime and bounded series', () => {
    store.connect()
    last().open()
    for (let seq = 1; seq <= MAX_POINTS + 5; seq += 1) last().message(snapshot(seq))
    expect(store.currentMetrics.seq).toBe(MAX_POINTS + 5)
    expect(store.lastUpdateTime).toBeInstanceOf(Date)
    expect(store.series.cpu.t).toHaveLength(MAX_POINTS)
    expect(store.series.cpu.values[0].at(-1)).toBe(0.5) // modes_percent.user x 0.01
    expect(store.series.perf_events.values[0].at(-1)).toBeNull() // absent: null, not 0
  })

  it('backs off 1 s, 2 s, 4 s ... capped at 30 s', () => {
    expect(Array.from({ length: 8 }, (_, i) => backoffDelay(i))).toEqual([
      1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000,
    ])
    expect(BACKOFF_MAX_MS).toBe(30000)
  })

  it('reconnects on that exact schedule and gives up after 10 attempts', () => {
    store.connect()
    last().open()
    last().drop(1006)
    const waits = []
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
      const before = FakeSocket.instances.length
      const delay = backoffDelay(attempt)
      vi.advanceTimersByTime(delay - 1)
      expect(FakeSocket.instances.length).toBe(before) // not a millisecond early
      vi.advanceTimersByTime(1)
      expect(FakeSocket.instances.length).toBe(before + 1)
      expect(store.reconnecting).toBe(true)
      waits.push(delay)
      last().drop(1006)
    }
    expect(waits).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000])
    expect(store.connectionState).toBe('error')
    expect(store.errorMessage).toBe('Failed to reconnect')
    vi.advanceTimersByTime(120_000)
    expect(FakeSocket.instances).toHaveLength(1 + MAX_ATTEMPTS) // no eleventh attempt
  })

  it('resets the attempts after a successful reconnect', () => {
    store.connect()
    last().open()
    last().drop()
    vi.advanceTimersByTime(1000)
    last().drop()
    vi.advanceTimersByTime(2000)
    expect(store.reconnectAttempts).toBe(2)
    last().open()
    expect(store.reconnectAttempts).toBe(0)
    last().drop()
    const before = FakeSocket.instances.length
    vi.advanceTimersByTime(1000) // the first delay again, not 4 s
    expect(FakeSocket.instances.length).toBe(before + 1)
  })

  it('resumes from the last seq after a reconnect', () => {
    store.connect()
    last().open()
    last().message(snapshot(41))
    last().message(snapshot(42))
    last().drop()
    vi.advanceTimersByTime(1000)
    last().open()
    expect(last().sent).toEqual([JSON.stringify({ resume_from: 42, limit: MAX_POINTS })])
    last().message(snapshot(42)) // a duplicate is ignored
    expect(store.series.cpu.t).toHaveLength(2)
  })

  it('asks for the server\'s kept snapshots on the first open and fills the series from them', () => {
    store.connect()
    last().open()
    expect(last().sent).toEqual([JSON.stringify({ resume_from: 0, limit: MAX_POINTS })])
    // The server answers with its buffer, oldest first, before any live snapshot.
    for (let seq = 1; seq <= 30; seq += 1) last().message(snapshot(seq))
    expect(store.series.cpu.t).toHaveLength(30)
    expect(store.series.cpu.values[0]).toEqual(Array(30).fill(0.5))
    last().message(snapshot(31)) // the first live one continues the same series
    expect(store.series.cpu.t).toHaveLength(31)
    expect(store.series.cpu.t[30] - store.series.cpu.t[29]).toBe(1000)
  })

  it('on 1008 clears the token and goes to login without retrying', () => {
    store.connect()
    last().open()
    last().drop(1008, 'token expired')
    expect(useAuthStore().token).toBeNull()
    expect(unauthorized).toHaveBeenCalledWith('token expired')
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.instances).toHaveLength(1)
    expect(store.connectionState).toBe('disconnected')
  })

  it('disconnect closes with 1000 and stops retrying; reset (log out) forgets what was shown', () => {
    store.connect()
    last().open()
    last().message(snapshot(1))
    const socket = last()
    store.disconnect()
    expect(socket.closed.code).toBe(1000)
    // Kept (shown as stale) until the page streams again; a log out forgets it.
    expect(store.currentMetrics.seq).toBe(1)
    store.reset()
    expect(store.currentMetrics).toBeNull()
    expect(store.series.cpu.t).toHaveLength(0)
    expect(store.connectionState).toBe('disconnected')
    socket.drop(1000)
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.instances).toHaveLength(1)
  })

  it('retry after giving up starts a new round of attempts', () => {
    store.connect()
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt += 1) {
      last().drop()
      vi.advanceTimersByTime(backoffDelay(attempt))
    }
    last().drop()
    expect(store.connectionState).toBe('error')
    store.retry()
    expect(store.reconnectAttempts).toBe(0)
    expect(store.connectionState).toBe('connecting')
    last().open()
    expect(store.connectionState).toBe('connected')
  })

  it('streams another host on request, its series starting empty, and back to its own', () => {
    store.connect()
    last().open()
    last().message(snapshot(5))
    const own = last()
    store.selectHost('web 1')
    expect(own.closed.code).toBe(1000)
    expect(last().url).toBe('ws://dash.example/api/ws/metrics?host=web%201')
    expect(store.currentMetrics).toBeNull()
    expect(store.series.cpu.t).toHaveLength(0)
    last().open()
    // A host's seq has nothing to do with the last one's: the first open asks for all.
    expect(JSON.parse(last().sent[0])).toEqual({ resume_from: 0, limit: MAX_POINTS })
    last().message(snapshot(2, { host: 'web 1' }))
    expect(store.currentMetrics.host).toBe('web 1')
    store.selectHost(null)
    expect(last().url).toBe('ws://dash.example/api/ws/metrics')
  })

  it('an unknown host is an error on the page, not a logout, and is not retried', () => {
    const refused = vi.fn()
    store.configure({ onHostRefused: refused })
    store.selectHost('gone')
    store.connect()
    last().open()
    last().drop(1008, 'unknown host')
    expect(useAuthStore().token).toBe('token-123')
    expect(unauthorized).not.toHaveBeenCalled()
    expect(refused).toHaveBeenCalledWith('unknown host')
    expect(store.connectionState).toBe('error')
    expect(store.errorMessage).toBe('unknown host')
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.instances).toHaveLength(1)
  })
})
