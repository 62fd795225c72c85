// Only the ECharts parts the dashboard uses: the bundle stays small. SVG, not canvas: text
// stays text (selectable, and its boxes measurable by the browser tests).
import { LineChart } from 'echarts/charts'
import { GridComponent, LegendComponent, MarkLineComponent, TooltipComponent } from 'echarts/components'
import * as echarts from 'echarts/core'
import { SVGRenderer } from 'echarts/renderers'

echarts.use([LineChart, GridComponent, LegendComponent, MarkLineComponent, TooltipComponent, SVGRenderer])

/** Charts in one group share the crosshair and tooltip time (echarts.connect). */
export const GROUP = 'perfpulse'
echarts.connect(GROUP)

export { echarts }
