import { describe, expect, it } from 'vitest'
import { historyLines, liveLines, panelOptions, pointsDrawn, theme } from '@/charts/options'
import { PANELS, formatValue, valueAt } from '@/panels'
import spec from '../../../../exporter/spec/panels.json'

const cpu = PANELS.find((p) => p.key === 'cpu')
const memory = PANELS.find((p) => p.key === 'memory')

describe('panels', () => {
  it('are the six of the spec, in order, with the titles Grafana uses', () => {
    expect(PANELS.map((p) => p.title)).toEqual([
      'CPU',
      'Memory',
      'Network',
      'Disk',
      'Hardware counters',
      'Memory bandwidth',
    ])
    expect(PANELS).toEqual(spec.panels)
  })

  it('read values by path and scale, null when missing', () => {
    const snap = { cpu: { usage_percent: 42, modes_percent: { iowait: null } } }
    expect(valueAt(snap, ['cpu', 'usage_percent'], 0.01)).toBeCloseTo(0.42)
    expect(valueAt(snap, ['cpu', 'modes_percent', 'iowait'])).toBeNull()
    expect(valueAt(snap, ['memory', 'used_bytes'])).toBeNull()
    expect(valueAt(null, ['cpu'])).toBeNull()
  })

  it('format units for people', () => {
    expect(formatValue(0.4567, 'percentunit')).toBe('45.7 %')
    expect(formatValue(1536, 'bytes')).toBe('1.5 KiB')
    expect(formatValue(5 * 1024 ** 3, 'bytes')).toBe('5.0 GiB')
    expect(formatValue(200, 'Bps')).toBe('200 B/s')
    expect(formatValue(3 * 1024 ** 2, 'Bps')).toBe('3.0 MiB/s')
    expect(formatValue(1.234, 'none')).toBe('1.23')
    expect(formatValue(null, 'bytes')).toBe('–')
  })
})

describe('chart options', () => {
  it('are built from the panel: unit formatter, min and max, one line per series', () => {
    const lines = [
      { label: 'busy', data: [[1000, 0.5], [2000, null]] },
      { label: 'iowait', data: [[1000, 0.1], [2000, 0.2]] },
    ]
    const options = panelOptions(cpu, lines, theme(false))
    expect(options.yAxis.min).toBe(0)
    expect(options.yAxis.max).toBe(1)
    expect(options.yAxis.axisLabel.formatter(0.25)).toBe('25.0 %')
    expect(options.series.map((s) => s.name)).toEqual(['busy', 'iowait'])
    expect(options.series[0].data).toEqual([[1000, 0.5], [2000, null]])
    expect(options.series[0].connectNulls).toBe(false)
    expect(options.animation).toBe(false)
    expect(options.series[0].showSymbol).toBe(true) // two points: dots, or nothing shows
    expect(options.xAxis.min).toBeNull()
    const ranged = panelOptions(cpu, lines, theme(false), { start: 0, end: 5000 })
    expect([ranged.xAxis.min, ranged.xAxis.max]).toEqual([0, 5000])
    expect(panelOptions(memory, [], theme(true)).yAxis.max).toBeNull()
    expect(theme(true).text).not.toBe(theme(false).text)
  })

  it('cut the live series to the time window', () => {
    const series = { t: [1000, 2000, 3000, 4000], values: [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0]] }
    const lines = liveLines(memory, series, 2000, 4000)
    expect(lines[0].data).toEqual([[2000, 2], [3000, 3], [4000, 4]])
    expect(lines.map((l) => l.label)).toEqual(['used', 'cached', 'swap used'])
    expect(pointsDrawn(lines)).toBe(9)
  })

  it('turn the history API answer into scaled lines', () => {
    const answer = {
      timestamps: ['2026-11-26T10:00:00Z', '2026-11-26T10:01:00Z'],
      avg: { usage_percent: [50, null], iowait_percent: [1, 2] },
      max: {},
    }
    const lines = historyLines(cpu, answer)
    expect(lines[0].data).toEqual([
      [Date.parse('2026-11-26T10:00:00Z'), 0.5],
      [Date.parse('2026-11-26T10:01:00Z'), null],
    ])
    expect(lines[1].data[1][1]).toBeCloseTo(0.02)
    expect(pointsDrawn(lines)).toBe(3)
  })
})
