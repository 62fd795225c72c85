import { defineStore } from 'pinia'
import { ref, shallowRef } from 'vue'
import { apiGet } from '@/api'

// How often the open alerts are asked for while a page shows them.
export const POLL_MS = 5000

/** Firing first, then pending; the worst severity first within each. */
const SEVERITY = { critical: 0, page: 0, error: 1, warning: 2, info: 3 }
export function sortAlerts(alerts) {
  return [...alerts].sort(
    (a, b) =>
      (a.state === 'firing' ? 0 : 1) - (b.state === 'firing' ? 0 : 1) ||
      (SEVERITY[a.severity] ?? 2) - (SEVERITY[b.severity] ?? 2) ||
      a.started_at.localeCompare(b.started_at),
  )
}

/** The open alerts of the host on screen (null: this instance's own), polled. */
export const useAlertsStore = defineStore('alerts', () => {
  const alerts = shallowRef([])
  const error = ref(null)
  const host = ref(null)
  // The rules this instance evaluates: asked for once a session (they change on restart).
  const rules = shallowRef([])
  let rulesAsked = false
  let timer = null

  async function loadRules() {
    if (rulesAsked) return
    rulesAsked = true
    try {
      rules.value = (await apiGet('/api/alerts/rules')).rules
    } catch {
      rulesAsked = false // asked again next time; meanwhile the fixed levels serve
    }
  }

  async function load() {
    const params = new URLSearchParams()
    if (host.value) params.set('host', host.value)
    try {
      const answer = await apiGet('/api/alerts', params)
      alerts.value = sortAlerts(answer.alerts)
      error.value = null
    } catch (exc) {
      error.value = exc.message // kept: the last list stays shown
    }
  }

  function watchHost(name) {
    host.value = name || null
    stop()
    load()
    timer = setInterval(load, POLL_MS)
  }

  function stop() {
    if (timer !== null) clearInterval(timer)
    timer = null
  }

  function reset() {
    stop()
    alerts.value = []
    error.value = null
    rules.value = []
    rulesAsked = false
  }

  return { alerts, error, host, rules, load, loadRules, watchHost, stop, reset }
})
