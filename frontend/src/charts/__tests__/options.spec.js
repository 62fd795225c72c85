import { describe, expect, it } from 'vitest'
import {
  historyLines,
  liveLines,
  niceStep,
  panelOptions,
  pointsDrawn,
  shownLines,
  theme,
  ticks,
} from '@/charts/options'
import { PANELS, fieldPath, formatValue, lineField, valueAt } from '@/panels'
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
    expect(options.yAxis.axisLabel.formatter(0.25)).toBe('25 %') // an axis: no trailing .0
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
    const series = {
      t: [1000, 2000, 3000, 4000],
      values: [[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 0, 0], [null, null, null, null]],
    }
    const lines = liveLines(memory, series, 2000, 4000)
    expect(lines[0].data).toEqual([[2000, 2], [3000, 3], [4000, 4]])
    expect(lines.map((l) => l.label)).toEqual(['used', 'cached', 'swap used', 'stalled (PSI)'])
    expect(pointsDrawn(lines)).toBe(9)
  })

  it('turn the history API answer into scaled lines', () => {
    const answer = {
      timestamps: ['2026-11-26T10:00:00Z', '2026-11-26T10:01:00Z'],
      avg: { 'modes_percent.user': [50, null], 'modes_percent.system': [1, 2] },
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

describe('shown lines', () => {
  const panel = (key) => PANELS.find((p) => p.key === key)
  // One live snapshot per second for 3 s, built from the values given per path.
  function series(key, valuesByLabel) {
    const p = panel(key)
    return {
      t: [1000, 2000, 3000],
      values: p.live.map((line) => valuesByLabel[line.label] ?? [null, null, null]),
    }
  }

  it('leave out the DRAM lines where no bandwidth source measures them', () => {
    const lines = liveLines(
      panel('memory_bandwidth'),
      series('memory_bandwidth', { 'paging in': [null, 10, 20], 'paging out': [null, 0, 5] }),
      60_000,
      3000,
    )
    expect(shownLines(lines).map((l) => l.label)).toEqual(['paging in', 'paging out'])
  })

  it('keep the DRAM lines where a source measures them', () => {
    const lines = liveLines(
      panel('memory_bandwidth'),
      series('memory_bandwidth', {
        'DRAM read': [null, 1e9, 2e9],
        'DRAM write': [null, 5e8, 6e8],
        'paging in': [null, 10, 20],
        'paging out': [null, 0, 5],
      }),
      60_000,
      3000,
    )
    expect(shownLines(lines).map((l) => l.label)).toEqual([
      'DRAM read',
      'DRAM write',
      'paging in',
      'paging out',
    ])
  })

  it('show the software event rates only where no hardware counter counts', () => {
    const software = {
      'context switches/s': [null, 1500, 1600],
      'CPU migrations/s': [null, 20, 30],
      'page faults/s': [null, 900, 800],
    }
    const without = liveLines(panel('perf_events'), series('perf_events', software), 60_000, 3000)
    expect(shownLines(without).map((l) => l.label)).toEqual(Object.keys(software))
    const withHardware = liveLines(
      panel('perf_events'),
      series('perf_events', { ...software, IPC: [null, 1.2, 1.3] }),
      60_000,
      3000,
    )
    expect(shownLines(withHardware).map((l) => l.label)).toEqual(['IPC'])
  })

  it('are none before the first value arrives (the panel says it is waiting)', () => {
    const lines = liveLines(panel('cpu'), { t: [], values: [[], []] }, 60_000, 3000)
    expect(shownLines(lines)).toEqual([])
  })
})

describe('the spec', () => {
  it('has no task-clock "CPUs busy" anywhere', () => {
    const text = JSON.stringify(spec)
    expect(text).not.toMatch(/CPUs busy|task.clock/)
  })
})

describe('axis ticks', () => {
  const line = (...values) => ({ label: 'x', data: values.map((v, i) => [i * 1000, v]) })
  const MiB = 2 ** 20

  it('step binary bytes by powers of two', () => {
    // 858 MiB at the top: ECharts alone would tick at 286 / 572 / 858 MiB.
    const scale = ticks([line(100 * MiB, 858 * MiB)], 'bytes')
    expect(scale.step).toBe(256 * MiB)
    expect(scale.values).toEqual([0, 256, 512, 768, 1024].map((v) => v * MiB))
    expect(scale.values.map((v) => formatValue(v, 'bytes'))).toEqual([
      '0 B',
      '256 MiB',
      '512 MiB',
      '768 MiB',
      '1.0 GiB',
    ])
    expect(ticks([line(3000)], 'Bps').values).toEqual([0, 1024, 2048, 3072])
  })

  it('step decimal units by 1, 2 or 5 x 10^n', () => {
    expect(ticks([line(1489.4, 1200)], 'none').values).toEqual([0, 500, 1000, 1500])
    expect(ticks([line(0.7)], 'none').values).toEqual([0, 0.2, 0.4, 0.6, 0.8])
    expect(niceStep(37, 'none')).toBe(10)
    expect(niceStep(7.9, 'none')).toBe(2)
    expect(niceStep(0, 'none')).toBeNull()
  })

  it('are set on panels without a fixed top, and left to the chart on CPU (0-100 %)', () => {
    const colors = theme(false)
    const memory = PANELS.find((p) => p.key === 'memory')
    const options = panelOptions(memory, [line(100 * MiB, 858 * MiB)], colors)
    expect(options.yAxis.interval).toBe(256 * MiB)
    expect(options.yAxis.max).toBe(1024 * MiB)
    const cpu = PANELS.find((p) => p.key === 'cpu')
    expect(panelOptions(cpu, [line(0.5)], colors).yAxis.interval).toBeUndefined()
  })
})

describe('live and history', () => {
  it('History draws the lines Live draws, asked for by their paths', () => {
    for (const panel of PANELS) {
      const fields = panel.live.map((line) => lineField(line))
      const answer = {
        timestamps: ['2026-11-26T10:00:00Z'],
        bucket_seconds: 60,
        avg: Object.fromEntries(fields.map((f) => [f, [1]])),
        max: Object.fromEntries(fields.map((f) => [f, [2]])),
      }
      const lines = historyLines(panel, answer)
      expect(lines.map((l) => l.label)).toEqual(panel.live.map((l) => l.label))
      expect(lines.every((l) => l.data[0][1] !== null)).toBe(true)
    }
  })

  it('name paths as the history API parses them', () => {
    expect(fieldPath(['cpu', 'modes_percent', 'user'])).toBe('modes_percent.user')
    expect(fieldPath(['perf_events', 'rates', 'context-switches'])).toBe('rates.context-switches')
    expect(fieldPath(['network', 'interfaces', 'eth0.100', 'receive'])).toBe('interfaces."eth0.100".receive')
  })
})

describe('a line in another unit', () => {
  it('is drawn against a 0-100 % axis on the right, and the bytes ticks ignore it', () => {
    const memory = PANELS.find((p) => p.key === 'memory')
    const series = {
      t: [1000, 2000],
      values: [
        [800 * 2 ** 20, 858 * 2 ** 20],
        [100, 100],
        [0, 0],
        [0.02, 0.04],
      ],
    }
    const lines = shownLines(liveLines(memory, series, 60_000, 2000))
    expect(lines.map((l) => l.label)).toEqual(['used', 'cached', 'swap used', 'stalled (PSI)'])
    const options = panelOptions(memory, lines, theme(false))
    expect(options.yAxis).toHaveLength(2)
    expect(options.yAxis[0].interval).toBe(256 * 2 ** 20)
    expect(options.yAxis[1]).toMatchObject({ position: 'right', min: 0, max: 1 })
    expect(options.yAxis[1].axisLabel.formatter(0.04)).toBe('4 %')
    expect(options.series.map((s) => s.yAxisIndex)).toEqual([0, 0, 0, 1])
    // The tooltip says each line in its own unit.
    const tip = options.tooltip.formatter([
      { value: [1000, 2 ** 30], seriesName: 'used', marker: '' },
      { value: [1000, 0.04], seriesName: 'stalled (PSI)', marker: '' },
    ])
    expect(tip).toContain('used <b>1.0 GiB</b>')
    expect(tip).toContain('stalled (PSI) <b>4.0 %</b>')
  })
})

describe('equal values', () => {
  it('stay distinguishable: the first line and its dots are drawn wider, under the others', () => {
    const network = PANELS.find((p) => p.key === 'network')
    const same = [[1000, 5], [2000, 5]]
    const options = panelOptions(
      network,
      [
        { label: 'receive', data: same },
        { label: 'transmit', data: same },
      ],
      theme(false),
    )
    const [under, over] = options.series
    expect(under.lineStyle.width).toBeGreaterThan(over.lineStyle.width)
    expect(under.symbolSize).toBeGreaterThan(over.symbolSize)
  })
})
