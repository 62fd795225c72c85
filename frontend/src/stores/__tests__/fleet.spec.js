import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { useAuthStore } from '@/stores/auth'
import {
  FLUSH_MS,
  TREND_POINTS,
  filterHosts,
  sortHosts,
  trendPoints,
  useFleetStore,
} from '@/stores/fleet'

class FakeSocket {
  static instances = []
  constructor(url, protocols) {
    this.url = url
    this.protocols = protocols
    this.closed = null
    FakeSocket.instances.push(this)
  }
  close(code, reason) {
    this.closed = { code, reason }
  }
  open() {
    this.onopen?.()
  }
  message(body) {
    this.onmessage?.({ data: JSON.stringify(body) })
  }
  drop(code = 1006, reason = '') {
    this.onclose?.({ code, reason })
  }
}

function host(name, cpu, extra = {}) {
  return {
    host: name,
    last_seen: '2026-11-27T10:00:00Z',
    interval_seconds: 1,
    stale: false,
    version: '0.1.0',
    collectors: ['cpu'],
    summary: {
      cpu_busy_ratio: cpu,
      memory_used_ratio: 0.5,
      network_receive_bytes_per_second: null,
      network_transmit_bytes_per_second: 10,
      disk_read_bytes_per_second: 0,
      disk_write_bytes_per_second: 0,
    },
    ...extra,
  }
}

describe('fleet ordering and filtering', () => {
  const hosts = [
    host('c', 0.9, { stale: true }),
    host('a', 0.2),
    host('b', 0.7),
    host('d', null),
  ]

  it('puts stale hosts last whatever the column and direction', () => {
    expect(sortHosts(hosts, 'host').map((h) => h.host)).toEqual(['a', 'b', 'd', 'c'])
    expect(sortHosts(hosts, 'host', true).map((h) => h.host)).toEqual(['d', 'b', 'a', 'c'])
    expect(sortHosts(hosts, 'cpu_busy_ratio', true).map((h) => h.host)).toEqual([
      'b',
      'a',
      'd', // unknown after every known value
      'c',
    ])
    expect(sortHosts(hosts, 'cpu_busy_ratio').map((h) => h.host)).toEqual(['a', 'b', 'd', 'c'])
  })

  it('filters by a case-insensitive part of the name', () => {
    const named = [host('web-1', 0), host('WEB-2', 0), host('db-1', 0)]
    expect(filterHosts(named, ' web ').map((h) => h.host)).toEqual(['web-1', 'WEB-2'])
    expect(filterHosts(named, '')).toBe(named)
  })

  it('draws a trend right-aligned, clamped to the box', () => {
    expect(trendPoints([0.5])).toBe('')
    const step = 80 / (TREND_POINTS - 1)
    const drawn = trendPoints([0, 1, 2]).split(' ')
    expect(drawn).toEqual([
      `${(80 - 2 * step).toFixed(1)},20.0`,
      `${(80 - step).toFixed(1)},0.0`,
      '80.0,0.0',
    ])
  })
})

describe('fleet store', () => {
  let store
  let unauthorized

  beforeEach(() => {
    setActivePinia(createPinia())
    vi.useFakeTimers()
    FakeSocket.instances = []
    sessionStorage.clear()
    useAuthStore().token = 'token-123'
    unauthorized = vi.fn()
    store = useFleetStore()
    store.configure({
      WebSocket: FakeSocket,
      setTimeout,
      clearTimeout,
      url: () => 'ws://dash.example/api/ws/metrics?host=*',
      onUnauthorized: unauthorized,
    })
  })

  afterEach(() => vi.useRealTimers())

  const last = () => FakeSocket.instances.at(-1)

  it('applies the list and its updates in batches, not once per message', () => {
    store.connect()
    expect(last().protocols).toEqual(['bearer', 'token-123'])
    last().open()
    last().message({ type: 'hosts', hosts: [host('a', 0.1), host('b', 0.2)] })
    for (let i = 1; i <= 9; i += 1) {
      last().message({ type: 'host', ...host('a', i / 10, { last_seen: `s${i}` }) })
    }
    expect(store.hosts).toHaveLength(0) // nothing rendered before the flush
    vi.advanceTimersByTime(FLUSH_MS)
    const a = store.hosts.find((h) => h.host === 'a')
    expect(store.hosts).toHaveLength(2)
    expect(a.summary.cpu_busy_ratio).toBe(0.9)
    expect(a.trend).toHaveLength(10)
    last().message({ type: 'host', ...host('a', 0.9, { last_seen: 's9', stale: true }) })
    last().message({ type: 'host_removed', host: 'b' })
    vi.advanceTimersByTime(FLUSH_MS)
    expect(store.hosts.map((h) => [h.host, h.stale])).toEqual([['a', true]])
    // A host turning stale adds no point: it did not report.
    expect(store.hosts[0].trend).toHaveLength(10)
  })

  it('keeps a bounded trend per host', () => {
    store.connect()
    last().open()
    for (let i = 0; i < TREND_POINTS + 20; i += 1) {
      last().message({ type: 'host', ...host('a', 0.5, { last_seen: `t${i}` }) })
    }
    vi.advanceTimersByTime(FLUSH_MS)
    expect(store.hosts[0].trend).toHaveLength(TREND_POINTS)
  })

  it('reconnects after a drop, and logs out on a refused token', () => {
    store.connect()
    last().open()
    last().drop(1006)
    expect(store.connectionState).toBe('connecting')
    vi.advanceTimersByTime(1000)
    expect(FakeSocket.instances).toHaveLength(2)
    last().open()
    last().drop(1008, 'token expired')
    expect(useAuthStore().token).toBeNull()
    expect(unauthorized).toHaveBeenCalledWith('token expired')
    vi.advanceTimersByTime(60_000)
    expect(FakeSocket.instances).toHaveLength(2)
  })

  it('loads the picker list from /api/hosts with the token', async () => {
    const fetch = vi.fn(async () => ({ ok: true, json: async () => [host('a', 0.1)] }))
    store.configure({ fetch })
    await store.loadListing()
    expect(fetch).toHaveBeenCalledWith('/api/hosts', {
      headers: { Authorization: 'Bearer token-123' },
    })
    expect(store.listing.map((h) => h.host)).toEqual(['a'])
  })
})

describe('the busiest process column', () => {
  it('shows the name and its CPU, and sorts by that CPU', async () => {
    const { COLUMNS, cellText, sortHosts } = await import('@/stores/fleet')
    const column = COLUMNS.find((c) => c.key === 'top_process')
    const format = (v) => String(v)
    const busy = { host: 'a', stale: false, summary: { top_process: 'postgres', top_process_cpu_percent: 93.4 } }
    const calm = { host: 'b', stale: false, summary: { top_process: 'sshd', top_process_cpu_percent: 0.2 } }
    expect(cellText(busy, column, format)).toBe('postgres 93 %')
    expect(cellText({ host: 'c', summary: {} }, column, format)).toBe('–')
    expect(sortHosts([calm, busy], 'top_process', true).map((h) => h.host)).toEqual(['a', 'b'])
  })

  it('has a sibling for the busiest service, with its own CPU', async () => {
    const { COLUMNS, cellText, sortHosts } = await import('@/stores/fleet')
    const column = COLUMNS.find((c) => c.key === 'top_group')
    const format = (v) => String(v)
    const db = { host: 'a', stale: false, summary: { top_process: 'sshd', top_process_cpu_percent: 99, top_group: 'postgresql.service', top_group_cpu_percent: 40.2 } }
    const web = { host: 'b', stale: false, summary: { top_process: 'nginx', top_process_cpu_percent: 1, top_group: 'nginx.service', top_group_cpu_percent: 70.6 } }
    expect(cellText(db, column, format)).toBe('postgresql.service 40 %')
    expect(cellText({ host: 'c', summary: { top_group: null } }, column, format)).toBe('–')
    expect(sortHosts([db, web], 'top_group', true).map((h) => h.host)).toEqual(['b', 'a'])
  })
})

describe('the alerts column', () => {
  it('shows the firing count with the worst severity, 0 when calm, – where not evaluated', async () => {
    const { COLUMNS, cellText } = await import('@/stores/fleet')
    const column = COLUMNS.find((c) => c.key === 'alerts_firing')
    const fmt = (v) => String(v)
    expect(cellText({ summary: { alerts_firing: 2, alerts_worst: 'critical' } }, column, fmt)).toBe('2 critical')
    expect(cellText({ summary: { alerts_firing: 0, alerts_worst: null } }, column, fmt)).toBe('0')
    expect(cellText({ summary: {} }, column, fmt)).toBe('–')
  })
})

describe('needs attention', () => {
  it('puts stale hosts first, then firing alerts by severity and count, then the busiest', () => {
    const host = (name, summary, stale = false) => ({ host: name, stale, summary })
    const hosts = [
      host('idle', { cpu_busy_ratio: 0.05, alerts_firing: 0 }),
      host('busy', { cpu_busy_ratio: 0.97, alerts_firing: 0 }),
      host('warned', { cpu_busy_ratio: 0.1, alerts_firing: 3, alerts_worst: 'warning' }),
      host('paged', { cpu_busy_ratio: 0.2, alerts_firing: 1, alerts_worst: 'critical' }),
      host('gone', { cpu_busy_ratio: null }, true),
      host('warned-once', { cpu_busy_ratio: 0.9, alerts_firing: 1, alerts_worst: 'warning' }),
      host('unknown', {}),
    ]
    expect(sortHosts(hosts, 'attention').map((h) => h.host)).toEqual([
      'gone',
      'paged',
      'warned',
      'warned-once',
      'busy',
      'idle',
      'unknown',
    ])
  })
})
