// Usage: node .ci/summarize.mjs <dir>
// Adds up the vitest JSON reports in <dir> (one per package, plus any written by .ci/extra.sh) and
// prints `N passed, N failed, N skipped` as the last line. Exits 1 when something failed or
// nothing passed: a run that passes zero tests almost always means the tests didn't run at all.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

const dir = process.argv[2]
if (!dir) {
  console.error('usage: node .ci/summarize.mjs <dir>')
  process.exit(2)
}

let passed = 0
let failed = 0
let skipped = 0
let ok = true

const reports = readdirSync(dir).filter((f) => f.endsWith('.json'))
for (const name of reports.sort()) {
  let report
  try {
    report = JSON.parse(readFileSync(join(dir, name), 'utf8'))
  } catch (err) {
    // A truncated report means a run died mid-write; count it as a failure, not as zero tests.
    console.error(`summarize: cannot read ${name}: ${err.message}`)
    ok = false
    continue
  }
  passed += report.numPassedTests ?? 0
  failed += report.numFailedTests ?? 0
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0)
  // A file that fails to load (syntax error, throwing import) or whose beforeAll/afterAll throws has
  // no failing test, so it doesn't show up in numFailedTests; only the file is marked failed.
  const brokenFiles = (report.testResults ?? []).filter(
    (r) => r.status === 'failed' && !(r.assertionResults ?? []).some((a) => a.status === 'failed'),
  )
  for (const r of brokenFiles) {
    console.error(`summarize: ${name}: ${r.name} failed outside any test: ${r.message ?? ''}`)
    ok = false
  }
}

console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`)
// exitCode rather than exit(): lets stdout drain when it is a pipe.
process.exitCode = ok && failed === 0 && passed > 0 ? 0 : 1
