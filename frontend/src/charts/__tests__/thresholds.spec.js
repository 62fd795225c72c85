import { describe, expect, it } from 'vitest'
import { panelOptions, theme } from '@/charts/options'
import { PANELS } from '@/panels'
import { levelOf, panelMarks, tileLevels } from '@/thresholds'

const panel = (key) => PANELS.find((p) => p.key === key)
const RULES = [
  { alert: 'PerfpulseCpuSaturated', path: 'cpu.usage_percent', steps: ['cpu', 'usage_percent'], op: '>', threshold: 90, severity: 'warning' },
  { alert: 'PerfpulseMemoryPressure', path: 'memory.percent', steps: ['memory', 'percent'], op: '>', threshold: 90, severity: 'warning' },
  { alert: 'RxFlood', path: 'network.total.receive_bytes_per_second', steps: ['network', 'total', 'receive_bytes_per_second'], op: '>', threshold: 1e6, severity: 'critical' },
  { alert: 'PerfpulseFilesystemFull', path: 'disk.filesystems[*].percent', steps: null, op: '>', threshold: 90, severity: 'critical' },
]
const firing = (...names) => names.map((alert) => ({ alert, state: 'firing' }))
const line = (values) => ({ label: 'receive', data: values.map((v, i) => [i * 1000, v]) })

describe('a firing alert marks its threshold', () => {
  it('on the panel that charts its path, in the panel’s scale', () => {
    const [mark] = panelMarks(panel('cpu'), RULES, firing('PerfpulseCpuSaturated'), {})
    expect(mark.value).toBeCloseTo(0.9)
    expect(mark.label).toContain('PerfpulseCpuSaturated >')
    expect(mark.severity).toBe('warning')
  })

  it('as a share of the snapshot’s whole where the panel says so (memory’s total)', () => {
    const snapshot = { memory: { total_bytes: 8 * 2 ** 30 } }
    const [mark] = panelMarks(panel('memory'), RULES, firing('PerfpulseMemoryPressure'), snapshot)
    expect(mark.value).toBeCloseTo(0.9 * 8 * 2 ** 30)
    expect(panelMarks(panel('memory'), RULES, firing('PerfpulseMemoryPressure'), {})).toEqual([])
  })

  it('not while pending or resolved, nor on another panel, nor for member rules', () => {
    expect(panelMarks(panel('cpu'), RULES, [{ alert: 'PerfpulseCpuSaturated', state: 'pending' }], {})).toEqual([])
    expect(panelMarks(panel('network'), RULES, firing('PerfpulseCpuSaturated'), {})).toEqual([])
    expect(panelMarks(panel('disk'), RULES, firing('PerfpulseFilesystemFull'), {})).toEqual([])
    expect(panelMarks(panel('cpu'), [], firing('PerfpulseCpuSaturated'), {})).toEqual([])
  })

  it('as a dashed line on the chart, whose axis reaches it', () => {
    const marks = panelMarks(panel('network'), RULES, firing('RxFlood'), {})
    const options = panelOptions(panel('network'), [line([1000, 2000])], theme(false), null, { marks })
    const [markLine] = options.series.map((s) => s.markLine).filter(Boolean)
    expect(markLine.data).toHaveLength(1)
    expect(markLine.data[0].yAxis).toBe(1e6)
    expect(markLine.data[0].lineStyle.type).toBe('dashed')
    expect(options.yAxis.max).toBeGreaterThanOrEqual(1e6)
    const plain = panelOptions(panel('network'), [line([1000, 2000])], theme(false))
    expect(plain.series.some((s) => s.markLine)).toBe(false)
    expect(plain.yAxis.max).toBeLessThan(1e6)
  })
})

describe('summary tiles at the rules’ levels', () => {
  it('take warning and critical from the rules on their paths', () => {
    expect(tileLevels(RULES, ['cpu.usage_percent'], 0.01, [0.8, 0.95])).toEqual([0.9, null])
    expect(tileLevels(RULES, ['disk.filesystems[*].percent'], 0.01, [0.8, 0.9])).toEqual([null, 0.9])
    expect(tileLevels([], ['cpu.usage_percent'], 0.01, [0.8, 0.95])).toEqual([0.8, 0.95])
    const below = [{ ...RULES[0], op: '<' }]
    expect(tileLevels(below, ['cpu.usage_percent'], 0.01, [0.8, 0.95])).toEqual([0.8, 0.95])
  })

  it('colour a value by them', () => {
    expect(levelOf(0.85, [0.9, null])).toBe('ok')
    expect(levelOf(0.95, [0.9, null])).toBe('warning')
    expect(levelOf(0.95, [null, 0.9])).toBe('critical')
    expect(levelOf(null, [0.9, 0.95])).toBe('unknown')
  })
})
