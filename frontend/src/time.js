import { ref } from 'vue'

const KEY = 'perfpulse.timezone'

/** 'local' or 'utc': every axis, tooltip and clock on the page follows it. */
export const timeZone = ref(readZone())

function readZone() {
  try {
    return localStorage.getItem(KEY) === 'utc' ? 'utc' : 'local'
  } catch {
    return 'local'
  }
}

export function setTimeZone(zone) {
  timeZone.value = zone === 'utc' ? 'utc' : 'local'
  try {
    localStorage.setItem(KEY, timeZone.value)
  } catch {
    // private mode: the choice lasts for this page only
  }
}

/** The zone as people read it: "UTC", or the browser's offset ("UTC+1", "UTC-5:30"). */
export function zoneName(zone = timeZone.value, at = new Date()) {
  if (zone === 'utc') return 'UTC'
  const minutes = -at.getTimezoneOffset()
  if (minutes === 0) return 'UTC+0'
  const sign = minutes > 0 ? '+' : '-'
  const h = Math.floor(Math.abs(minutes) / 60)
  const m = Math.abs(minutes) % 60
  return `UTC${sign}${h}${m ? `:${String(m).padStart(2, '0')}` : ''}`
}

const pad = (n) => String(n).padStart(2, '0')
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec']

function parts(ms, zone) {
  const d = new Date(ms)
  return zone === 'utc'
    ? [d.getUTCMonth(), d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getMonth(), d.getDate(), d.getHours(), d.getMinutes(), d.getSeconds()]
}

/**
 * One time format for axes, tooltips and clocks: 24-hour "16:05:09", "16:05" without
 * seconds, "Dec 7 16:05" with the date. Fixed width, no AM/PM: labels stay short enough
 * never to run into each other.
 */
export function formatTime(ms, { seconds = true, date = false } = {}, zone = timeZone.value) {
  const [month, day, h, m, s] = parts(ms, zone)
  const clock = seconds ? `${pad(h)}:${pad(m)}:${pad(s)}` : `${pad(h)}:${pad(m)}`
  return date ? `${MONTHS[month]} ${day} ${clock}` : clock
}
