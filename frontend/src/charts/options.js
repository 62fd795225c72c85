import { formatValue } from '@/panels'

/** Colours that read on both backgrounds; the axis and text colours come from the theme. */
export const PALETTE = ['#3b82f6', '#f59e0b', '#10b981', '#ef4444', '#8b5cf6', '#06b6d4']

const SYMBOLS_BELOW = 20

export function theme(dark) {
  return dark
    ? { text: '#d1d5db', axis: '#4b5563', split: '#374151', background: 'transparent' }
    : { text: '#374151', axis: '#9ca3af', split: '#e5e7eb', background: 'transparent' }
}

function axisLabel(unit) {
  return (value) => formatValue(value, unit)
}

const BINARY_UNITS = new Set(['bytes', 'Bps'])
const SPLITS = 4

/**
 * A tick step of about range / 4 on round numbers in the unit shown: 1, 2 or 5 x 10^n for
 * decimal units, a power of two for binary bytes (256 MiB, not 286 MiB).
 */
export function niceStep(range, unit) {
  if (!(range > 0)) return null
  const rough = range / SPLITS
  if (BINARY_UNITS.has(unit)) return 2 ** Math.ceil(Math.log2(rough))
  const power = 10 ** Math.floor(Math.log10(rough))
  const mantissa = rough / power
  return (mantissa <= 1 ? 1 : mantissa <= 2 ? 2 : mantissa <= 5 ? 5 : 10) * power
}

/** The tick values from 0 to the top of `lines`' data, on niceStep's steps. */
export function ticks(lines, unit, floor = 0) {
  let top = floor
  for (const line of lines) for (const [, v] of line.data) if (v !== null && v > top) top = v
  const step = niceStep(top - floor, unit)
  if (step === null) return null
  const count = Math.max(1, Math.ceil((top - floor) / step - 1e-9))
  const values = Array.from({ length: count + 1 }, (_, i) => Number((floor + i * step).toPrecision(12)))
  return { step, max: values[count], values }
}

/** Times in the browser's locale (24-hour where it uses it), with the date on long ranges. */
export function timeLabel(spanMs) {
  const day = spanMs > 24 * 3600_000
  // Seconds only where ticks can be less than a minute apart (minInterval is span / 4).
  const seconds = spanMs <= 4 * 60_000
  const format = new Intl.DateTimeFormat(undefined, {
    ...(day ? { month: 'short', day: 'numeric' } : {}),
    hour: '2-digit',
    minute: '2-digit',
    ...(seconds ? { second: '2-digit' } : {}),
  })
  return (value) => format.format(new Date(value))
}

function legendLength(lines) {
  return lines.reduce((n, line) => n + line.label.length + 4, 0)
}

/**
 * ECharts options for one panel: time on x, the panel's unit on y, one line per series.
 * `lines` are [{ label, data: [[ms, value|null], ...] }]. Pure: no chart, no DOM.
 */
export function panelOptions(panel, lines, colors, range = null) {
  const yAxis = {
    type: 'value',
    min: panel.min ?? null,
    max: panel.max ?? null,
    axisLabel: { color: colors.text, formatter: axisLabel(panel.unit) },
    splitLine: { lineStyle: { color: colors.split } },
  }
  // A line in another unit (a PSI stall share on a bytes panel) gets an axis on the right.
  const secondUnit = lines.find((line) => line.unit && line.unit !== panel.unit)?.unit ?? null
  const onSecond = (line) => secondUnit !== null && line.unit === secondUnit
  // Round steps in the unit shown, where the panel has no fixed top (CPU is 0-100 %).
  const own = lines.filter((line) => !onSecond(line))
  const scale = panel.max === undefined && panel.min === 0 ? ticks(own, panel.unit) : null
  if (scale !== null) Object.assign(yAxis, { max: scale.max, interval: scale.step })
  const yAxes =
    secondUnit === null
      ? yAxis
      : [
          yAxis,
          {
            type: 'value',
            position: 'right',
            min: 0,
            max: secondUnit === 'percentunit' ? 1 : null,
            axisLabel: { color: colors.text, formatter: axisLabel(secondUnit) },
            splitLine: { show: false },
          },
        ]
  const times = lines.flatMap((l) => (l.data.length ? [l.data[0][0], l.data[l.data.length - 1][0]] : []))
  const span = range ? range.end - range.start : times.length ? Math.max(...times) - Math.min(...times) : 0
  return {
    animation: false,
    backgroundColor: colors.background,
    color: PALETTE,
    // A long legend may wrap onto a second row on a narrow panel: room for it.
    grid: { left: 8, right: 16, top: legendLength(lines) > 36 ? 50 : 28, bottom: 24, containLabel: true },
    legend: {
      type: 'plain',
      top: 0,
      textStyle: { color: colors.text },
      data: lines.map((l) => l.label),
    },
    tooltip: {
      trigger: 'axis',
      valueFormatter: (value) => formatValue(value, panel.unit),
    },
    xAxis: {
      type: 'time',
      min: range?.start ?? null,
      max: range?.end ?? null,
      axisLabel: {
        color: colors.text,
        hideOverlap: true,
        formatter: timeLabel(span),
        alignMaxLabel: 'right', // the last label stays inside the chart
      },
      // At most about four labels, whatever the width: each says a different time.
      splitNumber: 4,
      minInterval: span > 0 ? span / 4 : undefined,
      axisLine: { lineStyle: { color: colors.axis } },
    },
    yAxis: yAxes,
    series: lines.map((line, i) => ({
      name: line.label,
      type: 'line',
      yAxisIndex: onSecond(line) ? 1 : 0,
      tooltip: { valueFormatter: (value) => formatValue(value, line.unit ?? panel.unit) },
      // A few points are dots, or nothing would show; a long series is a plain line.
      showSymbol: line.data.length < SYMBOLS_BELOW,
      connectNulls: false,
      // The first line (and its dots) is drawn wider, under the others: equal values
      // stay visible.
      lineStyle: { width: i === 0 ? 3 : 1.5 },
      symbolSize: i === 0 ? 8 : 4,
      data: line.data,
    })),
  }
}

/** The live panel's lines from the store's columnar series (time window applied). */
export function liveLines(panel, panelSeries, windowMs, now = Date.now()) {
  const start = panelSeries.t.findIndex((t) => t >= now - windowMs)
  const from = start === -1 ? panelSeries.t.length : start
  return panel.live.map((line, i) => ({
    label: line.label,
    fallback: Boolean(line.fallback),
    unit: line.unit ?? null,
    data: panelSeries.t.slice(from).map((t, j) => [t, panelSeries.values[i][from + j]]),
  }))
}

/** A history panel's lines from the history API's columnar answer. */
export function historyLines(panel, answer) {
  const times = answer.timestamps.map((t) => Date.parse(t))
  return panel.history.series.map((s) => ({
    label: s.label,
    fallback: Boolean(s.fallback),
    unit: s.unit ?? null,
    data: times.map((t, i) => {
      const value = answer.avg[s.field]?.[i]
      return [t, value === null || value === undefined ? null : value * (s.scale ?? 1)]
    }),
  }))
}

/** Lines that have at least one value: a panel is "drawn" when this is not empty. */
export function pointsDrawn(lines) {
  return lines.reduce((n, line) => n + line.data.filter(([, v]) => v !== null).length, 0)
}

/**
 * The lines this machine produces: a line with no value in the window is left out (DRAM
 * bandwidth where nothing measures it), and `fallback` lines (software event rates) only
 * show when no other line has a value (no hardware counters). Empty while nothing has
 * arrived yet.
 */
export function shownLines(lines) {
  const drawn = lines.filter((line) => line.data.some(([, v]) => v !== null))
  const primary = drawn.filter((line) => !line.fallback)
  return primary.length > 0 ? primary : drawn
}
