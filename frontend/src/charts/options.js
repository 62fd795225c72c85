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
  return {
    animation: false,
    backgroundColor: colors.background,
    color: PALETTE,
    grid: { left: 8, right: 16, top: 28, bottom: 24, containLabel: true },
    legend: {
      type: 'scroll',
      top: 0,
      textStyle: { color: colors.text },
      pageTextStyle: { color: colors.text },
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
      axisLabel: { color: colors.text, hideOverlap: true },
      axisLine: { lineStyle: { color: colors.axis } },
    },
    yAxis,
    series: lines.map((line) => ({
      name: line.label,
      type: 'line',
      // A few points are dots, or nothing would show; a long series is a plain line.
      showSymbol: line.data.length < SYMBOLS_BELOW,
      connectNulls: false,
      lineStyle: { width: 1.5 },
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
    data: panelSeries.t.slice(from).map((t, j) => [t, panelSeries.values[i][from + j]]),
  }))
}

/** A history panel's lines from the history API's columnar answer. */
export function historyLines(panel, answer) {
  const times = answer.timestamps.map((t) => Date.parse(t))
  return panel.history.series.map((s) => ({
    label: s.label,
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
