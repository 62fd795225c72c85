// Total gzipped size of the built JavaScript; fails above the budget.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'

const BUDGET = 450 * 1024
const dir = '../exporter/dashboard/assets'
let total = 0
for (const name of readdirSync(dir).filter((n) => n.endsWith('.js'))) {
  const size = gzipSync(readFileSync(join(dir, name)), { level: 9 }).length
  total += size
  console.log(`${name}\t${(size / 1024).toFixed(1)} KiB gzipped`)
}
console.log(`total\t${(total / 1024).toFixed(1)} KiB gzipped (budget ${BUDGET / 1024} KiB)`)
if (total > BUDGET) {
  console.error('bundle over budget')
  process.exit(1)
}
