import { describe, expect, it } from 'vitest'
import {
  GAP_INTERVALS,
  breakGaps,
  historyLines,
  layoutFor,
  lineStats,
  liveLines,
  panelOptions,
  theme,
  timeAxisLayout,
} from '@/charts/options'
import { PANELS, compactNumber, formatValue } from '@/panels'
import { intervalOf, isStale, prefillSeries, storedSeries } from '@/stores/metrics'
import { formatTime, setTimeZone, timeZone, zoneName } from '@/time'

const network = PANELS.find((p) => p.key === 'network')
const cpu = PANELS.find((p) => p.key === 'cpu')

describe('stale detection', () => {
  it('is stale after two intervals without a snapshot, not one late tick', () => {
    expect(isStale(10_000, 1000, 11_900)).toBe(false) // a tick running late
    expect(isStale(10_000, 1000, 12_000)).toBe(false)
    expect(isStale(10_000, 1000, 12_001)).toBe(true)
    expect(isStale(10_000, 5000, 19_000)).toBe(false) // at 5 s, 9 s is not two intervals
    expect(isStale(null, 1000, 99_000)).toBe(false) // nothing yet: waiting, not stale
  })

  it('knows the interval from the server, else from the timestamps', () => {
    expect(intervalOf({ system: { interval_seconds: 0.5 } }, [])).toBe(500)
    expect(intervalOf({}, [0, 1000, 2000, 3100, 4000])).toBe(1000) // the median step
    expect(intervalOf({}, [0])).toBeNull()
  })
})

describe('gap breaking', () => {
  it('puts a null between points farther apart than the gap, so the line breaks', () => {
    const data = [[0, 1], [1000, 2], [2000, 3], [34_000, 4], [35_000, 5]]
    const broken = breakGaps(data, 2500)
    expect(broken).toEqual([[0, 1], [1000, 2], [2000, 3], [18_000, null], [34_000, 4], [35_000, 5]])
    expect(breakGaps(data, null)).toBe(data)
  })

  it('breaks live lines across an outage of more than 2.5 intervals, and history across empty buckets', () => {
    const series = { t: [0, 1000, 2000, 40_000], values: [[5, 6, 7, 8], [1, 1, 1, 1]] }
    const [receive] = liveLines(network, series, 60_000, 40_000, 1000)
    expect(receive.data.map(([, v]) => v)).toEqual([5, 6, 7, null, 8])
    expect(GAP_INTERVALS).toBe(2.5)
    const answer = {
      timestamps: ['2026-12-01T10:00:00Z', '2026-12-01T10:01:00Z', '2026-12-01T10:09:00Z'],
      bucket_seconds: 60,
      avg: { 'total.receive_bytes_per_second': [1, 2, 3] },
      max: { 'total.receive_bytes_per_second': [4, 5, 6] },
    }
    const [line] = historyLines(network, answer)
    expect(line.data.map(([, v]) => v)).toEqual([1, 2, null, 3])
    expect(line.max.map(([, v]) => v)).toEqual([4, 5, null, 6])
  })
})

describe('the max band', () => {
  const answer = {
    timestamps: ['2026-12-01T10:00:00Z', '2026-12-01T11:00:00Z'],
    bucket_seconds: 3600,
    avg: { 'total.receive_bytes_per_second': [100, 480_000] },
    max: { 'total.receive_bytes_per_second': [150, 3_250_000] },
    min: { 'total.receive_bytes_per_second': [50, 0] },
  }

  it('draws each bucket max beside its average, dashed, in the same colour, out of the legend', () => {
    const lines = historyLines(network, answer)
    const options = panelOptions(network, lines.slice(0, 1), theme(false))
    expect(options.series.map((s) => s.name)).toEqual(['receive', 'receive max'])
    expect(options.series[1].lineStyle.type).toBe('dashed')
    expect(options.series[1].color).toBe(options.series[0].color)
    expect(options.series[1].data.map(([, v]) => v)).toEqual([150, 3_250_000])
    expect(options.legend.data).toEqual(['receive'])
    // The axis is scaled to the peak, not to the average.
    expect(options.yAxis.max).toBeGreaterThanOrEqual(3_250_000)
  })

  it('gives min, max and mean per line: the max is the peak, not the largest average', () => {
    const [stats] = lineStats(historyLines(network, answer).slice(0, 1))
    expect(stats).toEqual({ label: 'receive', unit: null, min: 0, max: 3_250_000, mean: 240_050 })
  })

  it('is left off stacked CPU modes (shares of one whole)', () => {
    const modes = {
      timestamps: ['2026-12-01T10:00:00Z'],
      bucket_seconds: 60,
      avg: { 'modes_percent.user': [10] },
      max: { 'modes_percent.user': [90] },
    }
    const [user] = historyLines(cpu, modes)
    expect(user.stack).toBe(true)
    expect(user.max).toBeUndefined()
  })
})

describe('the time zone switch', () => {
  const at = Date.UTC(2026, 11, 7, 16, 5, 9)

  it('formats axes, tooltips and clocks one way, in UTC or local time', () => {
    expect(formatTime(at, {}, 'utc')).toBe('16:05:09')
    expect(formatTime(at, { seconds: false }, 'utc')).toBe('16:05')
    expect(formatTime(at, { date: true }, 'utc')).toBe('Dec 7 16:05:09')
    const local = new Date(at)
    const pad = (n) => String(n).padStart(2, '0')
    expect(formatTime(at, {}, 'local')).toBe(
      `${pad(local.getHours())}:${pad(local.getMinutes())}:${pad(local.getSeconds())}`,
    )
    expect(zoneName('utc')).toBe('UTC')
    expect(zoneName('local')).toMatch(/^UTC[+-]\d/)
  })

  it('is remembered and followed by the charts', () => {
    setTimeZone('utc')
    expect(timeZone.value).toBe('utc')
    expect(localStorage.getItem('perfpulse.timezone')).toBe('utc')
    const options = panelOptions(network, [{ label: 'receive', data: [[at, 1]] }], theme(false), {
      start: at - 60_000,
      end: at,
    })
    expect(options.xAxis.axisLabel.formatter(at)).toBe('16:05:09')
    expect(options.tooltip.formatter([{ value: [at, 1], seriesName: 'receive', marker: '' }])).toContain(
      '16:05:09 UTC',
    )
    setTimeZone('local')
    expect(timeZone.value).toBe('local')
  })
})

describe('time axes', () => {
  it('have as many labels as fit the width (96 px each), two to six', () => {
    expect(timeAxisLayout(390, 300_000).splitNumber).toBe(2)
    expect(timeAxisLayout(700, 300_000).splitNumber).toBe(5)
    expect(timeAxisLayout(2000, 300_000).splitNumber).toBe(6)
    expect(timeAxisLayout(700, 300_000).minInterval).toBe(60_000)
  })

  it('make room for a legend that wraps', () => {
    const options = panelOptions(cpu, cpu.live.map((l) => ({ ...l, data: [[0, 0.1]] })), theme(false))
    expect(layoutFor(options, 1400).grid.top).toBe(32)
    expect(layoutFor(options, 340).grid.top).toBeGreaterThan(32)
  })

  it('read 0 and 60k on a plain axis, not "0.00" under "60000"', () => {
    expect(formatValue(0, 'none', { axis: true })).toBe('0')
    expect(formatValue(60_000, 'none', { axis: true })).toBe('60k')
    expect(compactNumber(2.5)).toBe('2.5')
    expect(formatValue(0.0042, 's')).toBe('4.20 ms')
  })
})

describe('Live opening full', () => {
  it('puts stored points in front of the live ones, never twice', () => {
    const empty = Object.fromEntries(PANELS.map((p) => [p.key, { t: [], values: p.live.map(() => []) }]))
    const live = { ...empty, network: { t: [5000, 6000], values: [[5, 6], [0, 0]] } }
    const stored = storedSeries({
      network: {
        timestamps: [1000, 2000, 5000].map((t) => new Date(t).toISOString()),
        avg: { 'total.receive_bytes_per_second': [1, 2, 5], 'total.transmit_bytes_per_second': [0, 0, 0] },
      },
    })
    const merged = prefillSeries(live, stored)
    expect(merged.network.t).toEqual([1000, 2000, 5000, 6000])
    expect(merged.network.values[0]).toEqual([1, 2, 5, 6])
    expect(prefillSeries(merged, stored).network.t).toEqual([1000, 2000, 5000, 6000])
    expect(prefillSeries(live, stored, 3).network.t).toEqual([2000, 5000, 6000]) // bounded
  })
})
