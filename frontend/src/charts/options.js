import { formatValue, lineField } from '@/panels'
import { isCritical } from '@/thresholds'
import { formatTime, timeZone, zoneName } from '@/time'

/** Colours that read on both backgrounds; the axis and text colours come from the theme. */
export const PALETTE = [
  '#3b82f6',
  '#f59e0b',
  '#10b981',
  '#ef4444',
  '#8b5cf6',
  '#06b6d4',
  '#ec4899',
  '#84cc16',
]

const SYMBOLS_BELOW = 20

export function theme(dark) {
  return dark
    ? { text: '#d1d5db', axis: '#4b5563', split: '#374151', background: 'transparent' }
    : { text: '#374151', axis: '#9ca3af', split: '#e5e7eb', background: 'transparent' }
}

function axisLabel(unit) {
  return (value) => formatValue(value, unit, { axis: true })
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

/** Time labels for a span: seconds where ticks can be less than a minute apart, the date
 * on ranges past a day; the page's one format (src/time.js) in its time zone. */
export function timeLabel(spanMs, zone = timeZone.value) {
  const date = spanMs > 24 * 3600_000
  const seconds = spanMs <= 4 * 60_000
  return (value) => formatTime(value, { seconds, date }, zone)
}

// Room a time label needs (its text and a gap), and the plot's fixed margins: every panel
// has the same ones, so the six time axes line up whether or not a panel has a right axis.
const LABEL_PX = 96
export const GRID = { left: 74, right: 58 }

/** Ticks for a time axis `widthPx` wide over `spanMs`: as many as fit without touching
 * (two to six), never closer than span / that many. */
export function timeAxisLayout(widthPx, spanMs) {
  const plot = Math.max(0, widthPx - GRID.left - GRID.right)
  const labels = Math.max(2, Math.min(6, Math.floor(plot / LABEL_PX)))
  return { splitNumber: labels, minInterval: spanMs > 0 ? spanMs / labels : undefined }
}

/** What depends on the chart's width: the time ticks, and room for the legend's rows
 * (about 7 px a character, 34 px an entry's mark and gap). Merged into the options by the
 * chart component whenever its width or options change. */
export function layoutFor(options, widthPx) {
  const names = options.legend?.data ?? []
  let rows = names.length ? 1 : 0
  let used = 0
  for (const name of names) {
    const w = name.length * 7 + 34
    if (used > 0 && used + w > widthPx - 16) {
      rows += 1
      used = 0
    }
    used += w
  }
  const span = (options.xAxis?.max ?? 0) - (options.xAxis?.min ?? 0)
  const dataSpan = options.series?.reduce((acc, s) => {
    if (!s.data.length) return acc
    return Math.max(acc, s.data[s.data.length - 1][0] - s.data[0][0])
  }, 0)
  return {
    grid: { top: 10 + rows * 22 },
    xAxis: timeAxisLayout(widthPx, span > 0 ? span : dataSpan ?? 0),
  }
}

/**
 * Points farther apart than `maxGapMs` get a null between them, so the line breaks where
 * no data came (an outage, a restart) instead of drawing a straight line across it.
 */
export function breakGaps(data, maxGapMs) {
  if (!(maxGapMs > 0) || data.length < 2) return data
  const out = [data[0]]
  for (let i = 1; i < data.length; i += 1) {
    const gap = data[i][0] - data[i - 1][0]
    if (gap > maxGapMs) out.push([data[i - 1][0] + gap / 2, null])
    out.push(data[i])
  }
  return out
}

/** A gap is more than this many intervals without a point. */
export const GAP_INTERVALS = 2.5

function legendLength(lines) {
  return lines.reduce((n, line) => n + line.label.length + 4, 0)
}

/** Min, max and mean of each line: min and mean of what is drawn, max of the peaks (the
 * bucket maxima where a line has them). */
export function lineStats(lines) {
  return lines.map((line) => {
    const values = line.data.map(([, v]) => v).filter((v) => v !== null)
    const peaks = (line.max ?? line.data).map(([, v]) => v).filter((v) => v !== null)
    const lows = (line.min ?? line.data).map(([, v]) => v).filter((v) => v !== null)
    return {
      label: line.label,
      unit: line.unit,
      min: lows.length ? Math.min(...lows) : null,
      max: peaks.length ? Math.max(...peaks) : null,
      mean: values.length ? values.reduce((a, b) => a + b, 0) / values.length : null,
    }
  })
}

function tooltipFormatter(panel, lines, zone, span) {
  const units = Object.fromEntries(lines.flatMap((l) => [[l.label, l.unit], [`${l.label} max`, l.unit]]))
  return (params) => {
    const list = Array.isArray(params) ? params : [params]
    if (!list.length) return ''
    const time = formatTime(list[0].value[0], { seconds: true, date: span > 24 * 3600_000 }, zone)
    const rows = list
      .filter((p) => p.value[1] !== null && p.value[1] !== undefined)
      .map(
        (p) =>
          `${p.marker}${p.seriesName} <b>${formatValue(p.value[1], units[p.seriesName] ?? panel.unit)}</b>`,
      )
    return [`${time} ${zoneName(zone)}`, ...rows].join('<br/>')
  }
}

/**
 * ECharts options for one panel: time on x, the panel's unit on y, one line per series.
 * `lines` are [{ label, data: [[ms, value|null], ...], max?, stack? }]. Pure: no chart, no
 * DOM. `axisMax` tops the axis (memory: the host's total); `zone` is local or utc.
 */
export function panelOptions(
  panel,
  lines,
  colors,
  range = null,
  { axisMax = null, zone = timeZone.value, width = 600, marks = [] } = {},
) {
  const yAxis = {
    type: 'value',
    min: panel.min ?? null,
    max: axisMax ?? panel.max ?? null,
    axisLabel: { color: colors.text, formatter: axisLabel(panel.unit) },
    splitLine: { lineStyle: { color: colors.split } },
  }
  // A line in another unit (a PSI stall share on a bytes panel) gets an axis on the right.
  const secondUnit = lines.find((line) => line.unit && line.unit !== panel.unit)?.unit ?? null
  const onSecond = (line) => secondUnit !== null && line.unit === secondUnit
  // Round steps in the unit shown, where the panel has no fixed top (CPU is 0-100 %).
  const own = lines.filter((line) => !onSecond(line))
  const stacked = own.some((line) => line.stack)
  const scale =
    axisMax === null && panel.max === undefined && panel.min === 0 && !stacked
      ? ticks(
          [
            ...own.flatMap((l) => [l, ...(l.max ? [{ data: l.max }] : [])]),
            // A marked threshold stays on the chart, however low the lines run.
            { data: marks.filter((m) => !m.second).map((m) => [0, m.value]) },
          ],
          panel.unit,
        )
      : null
  if (scale !== null) Object.assign(yAxis, { max: scale.max, interval: scale.step })
  if (axisMax !== null) {
    const step = niceStep(axisMax, panel.unit)
    if (step) Object.assign(yAxis, { interval: step })
  }
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
  const layout = timeAxisLayout(width, span)
  const series = []
  lines.forEach((line, i) => {
    const color = PALETTE[i % PALETTE.length]
    const axisIndex = onSecond(line) ? 1 : 0
    series.push({
      name: line.label,
      type: 'line',
      yAxisIndex: axisIndex,
      color,
      // A few points are dots, or nothing would show; a long series is a plain line.
      showSymbol: line.data.length < SYMBOLS_BELOW,
      connectNulls: false,
      ...(line.stack ? { stack: 'total', areaStyle: { opacity: 0.35 }, lineStyle: { width: 1 }, symbolSize: 3 } : {
        // The first line (and its dots) is drawn wider, under the others: equal values
        // stay visible.
        lineStyle: { width: i === 0 ? 3 : 1.5 },
        symbolSize: i === 0 ? 8 : 4,
      }),
      data: line.data,
    })
    if (line.max) {
      // The bucket's peak beside its average: a spike keeps its height at any range.
      series.push({
        name: `${line.label} max`,
        type: 'line',
        yAxisIndex: axisIndex,
        color,
        showSymbol: false,
        connectNulls: false,
        lineStyle: { width: 1, type: 'dashed', opacity: 0.8 },
        data: line.max,
      })
    }
  })
  for (const axisIndex of [0, 1]) {
    const here = marks.filter((m) => (m.second ? 1 : 0) === axisIndex)
    const host = series.find((item) => item.yAxisIndex === axisIndex)
    if (here.length && host) host.markLine = thresholdLines(here)
  }
  return {
    animation: false,
    backgroundColor: colors.background,
    color: PALETTE,
    // Fixed margins: the plots of all panels line up. A long legend may wrap onto a second
    // row on a narrow panel: room for it.
    grid: { ...GRID, top: legendLength(lines) > 36 ? 50 : 28, bottom: 30, containLabel: false },
    legend: {
      type: 'plain',
      top: 0,
      textStyle: { color: colors.text },
      data: lines.map((l) => l.label),
    },
    tooltip: {
      trigger: 'axis',
      axisPointer: { type: 'line', snap: false },
      formatter: tooltipFormatter(panel, lines, zone, span),
    },
    xAxis: {
      type: 'time',
      min: range?.start ?? null,
      max: range?.end ?? null,
      axisLabel: {
        color: colors.text,
        hideOverlap: true,
        // Below the value axis' lowest label, never beside it.
        margin: 12,
        formatter: timeLabel(span, zone),
        showMinLabel: false,
        showMaxLabel: false,
      },
      axisPointer: { label: { formatter: ({ value }) => formatTime(value, { seconds: true }, zone) } },
      splitNumber: layout.splitNumber,
      minInterval: layout.minInterval,
      axisLine: { lineStyle: { color: colors.axis } },
    },
    yAxis: yAxes,
    series,
  }
}

export const MARK_COLORS = { warning: '#d97706', critical: '#dc2626' }

/** A firing alert's threshold across the plot: a dashed line in its severity's colour,
 * named at its right end inside the plot. */
function thresholdLines(marks) {
  return {
    silent: true,
    symbol: 'none',
    animation: false,
    data: marks.map((mark) => {
      const color = isCritical(mark.severity) ? MARK_COLORS.critical : MARK_COLORS.warning
      return {
        yAxis: mark.value,
        name: mark.label,
        lineStyle: { color, type: 'dashed', width: 1.5 },
        label: { show: true, position: 'insideEndTop', formatter: mark.label, color, fontSize: 11 },
      }
    }),
  }
}

/** The live panel's lines from the store's columnar series (time window applied); lines
 * break where more than GAP_INTERVALS intervals passed without a snapshot. */
export function liveLines(panel, panelSeries, windowMs, now = Date.now(), intervalMs = null) {
  const start = panelSeries.t.findIndex((t) => t >= now - windowMs)
  const from = start === -1 ? panelSeries.t.length : start
  const gap = intervalMs ? intervalMs * GAP_INTERVALS : null
  return panel.live.map((line, i) => ({
    label: line.label,
    fallback: Boolean(line.fallback),
    stack: Boolean(line.stack),
    unit: line.unit ?? null,
    data: breakGaps(
      panelSeries.t.slice(from).map((t, j) => [t, panelSeries.values[i][from + j]]),
      gap,
    ),
  }))
}

/** A history panel's lines from the history API's columnar answer (asked for with each
 * live line's path as a `field`: History draws what Live draws): the bucket average, with
 * the bucket max and min beside it; lines break across buckets with no data. */
export function historyLines(panel, answer, intervalMs = null) {
  const times = answer.timestamps.map((t) => Date.parse(t))
  const bucket = Math.max((answer.bucket_seconds ?? 0) * 1000, intervalMs ?? 0)
  const gap = bucket > 0 ? bucket * GAP_INTERVALS : null
  const column = (values, scale) =>
    breakGaps(
      times.map((t, i) => {
        const value = values?.[i]
        return [t, value === null || value === undefined ? null : value * scale]
      }),
      gap,
    )
  return panel.live.map((line) => {
    const scale = line.scale ?? 1
    const field = lineField(line)
    return {
      label: line.label,
      fallback: Boolean(line.fallback),
      stack: Boolean(line.stack),
      unit: line.unit ?? null,
      data: column(answer.avg[field], scale),
      // Stacked areas show shares of one whole: their peaks would not add up.
      max: answer.max?.[field] && !line.stack ? column(answer.max[field], scale) : undefined,
      min: answer.min?.[field] ? column(answer.min[field], scale) : undefined,
    }
  })
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
