import { describe, expect, it } from 'vitest'
import { sortAlerts } from '@/stores/alerts'

describe('alerts', () => {
  it('are listed firing first, the worst severity first, then oldest first', () => {
    const alerts = [
      { alert: 'A', state: 'pending', severity: 'critical', started_at: '2026-12-07T10:00:00Z' },
      { alert: 'B', state: 'firing', severity: 'warning', started_at: '2026-12-07T09:00:00Z' },
      { alert: 'C', state: 'firing', severity: 'critical', started_at: '2026-12-07T11:00:00Z' },
      { alert: 'D', state: 'firing', severity: 'warning', started_at: '2026-12-07T08:00:00Z' },
    ]
    expect(sortAlerts(alerts).map((a) => a.alert)).toEqual(['C', 'D', 'B', 'A'])
  })
})
