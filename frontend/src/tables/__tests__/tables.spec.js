import { describe, expect, it } from 'vitest'
import { COLUMNS, TABLES, cores, sectionRows, tableRows } from '@/tables'
import { minuteOf, minuteRows } from '@/tables/history'

const processes = [
  { pid: 1, name: 'postgres', user: 'postgres', command: 'postgres: checkpointer', cpu_percent: 3, rss_bytes: 500, read_bytes_per_second: 0, write_bytes_per_second: 4096, cgroup: 'system.slice/postgresql.service' },
  { pid: 2, name: 'burner', user: 'root', command: 'python3 burn.py', cpu_percent: 98.5, rss_bytes: 10, read_bytes_per_second: 0, write_bytes_per_second: 0, cgroup: '' },
  { pid: 3, name: 'hog', user: 'alice', command: 'hog', cpu_percent: 0.1, rss_bytes: 9000, read_bytes_per_second: null, write_bytes_per_second: null, cgroup: '' },
]

describe('table panels', () => {
  it('come from the spec, processes first', () => {
    expect(TABLES.map((t) => t.key)).toEqual(['processes', 'cgroups'])
    expect(TABLES[1].title).toBe('Services and containers')
  })

  it('sort by CPU, memory or I/O, largest first', () => {
    expect(tableRows('processes', processes).map((p) => p.name)).toEqual(['burner', 'postgres', 'hog'])
    expect(tableRows('processes', processes, { sort: 'memory' }).map((p) => p.name)).toEqual(['hog', 'postgres', 'burner'])
    // Unknown I/O (unreadable) sorts as none.
    expect(tableRows('processes', processes, { sort: 'io' })[0].name).toBe('postgres')
  })

  it('filter by name, user, command or group, case aside', () => {
    expect(tableRows('processes', processes, { filter: 'ALICE' }).map((p) => p.name)).toEqual(['hog'])
    expect(tableRows('processes', processes, { filter: 'checkpoint' }).map((p) => p.name)).toEqual(['postgres'])
    expect(tableRows('processes', processes, { filter: 'postgresql.service' })).toHaveLength(1)
  })

  it('leave the section alone (a copy is sorted)', () => {
    const rows = [...processes]
    tableRows('processes', rows, { sort: 'memory' })
    expect(rows.map((p) => p.pid)).toEqual([1, 2, 3])
  })

  it('show CPU as the share of one core, and memory against its limit', () => {
    expect(cores(98.46)).toBe('98.5 %')
    expect(cores(null)).toBe('–')
    const memory = COLUMNS.cgroups.find((c) => c.label === 'memory')
    expect(memory.cell({ memory_bytes: 1024, memory_limit_bytes: 2048 })).toBe('1.0 KiB of 2.0 KiB')
    expect(memory.cell({ memory_bytes: 1024, memory_limit_bytes: null })).toBe('1.0 KiB')
  })

  it('take rows from a section, none when it is unavailable', () => {
    expect(sectionRows('processes', { available: true, top: processes })).toHaveLength(3)
    expect(sectionRows('cgroups', { available: true, groups: [{ path: 'a' }] })).toHaveLength(1)
    expect(sectionRows('processes', { available: false, error: 'disabled' })).toEqual([])
    expect(sectionRows('processes', null)).toEqual([])
  })
})

describe('a picked minute', () => {
  it('is the minute the time falls in', () => {
    expect(minuteOf(Date.UTC(2026, 11, 4, 3, 10, 42, 500))).toBe(Date.UTC(2026, 11, 4, 3, 10))
  })

  it('shows CPU seconds as a core share and bytes per second over its minutes', () => {
    const answer = {
      buckets: [
        {
          minutes: 1,
          top: [{ pid: 2, name: 'burner', cpu_seconds: 30, rss_bytes: 10, read_bytes: 0, write_bytes: 6000 }],
        },
      ],
    }
    const [row] = minuteRows('processes', answer)
    expect(row.cpu_percent).toBe(50)
    expect(row.write_bytes_per_second).toBe(100)
    expect(minuteRows('processes', { buckets: [] })).toEqual([])
    const groups = minuteRows('cgroups', { buckets: [{ minutes: 2, groups: [{ path: 'a', name: 'a', cpu_seconds: 240, memory_bytes: 1 }] }] })
    expect(groups[0].cpu_percent).toBe(200)
    expect(groups[0].read_bytes_per_second).toBeNull()
  })
})
