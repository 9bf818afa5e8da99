#!/usr/bin/env node
/**
 * `pnpm demo`: the same app shut down by lameduck and by its framework's documented `close()`,
 * under live keep-alive load, measured side by side. See ../README.md.
 */
import { parseArgs } from 'node:util'
import {
  FRAMEWORKS,
  type Framework,
  killChildren,
  LOAD,
  type Mode,
  type RunFigures,
  type RunProgress,
  runScenario,
  timelineFor,
} from './run.js'
import { baselineName, renderTable } from './table.js'

const USAGE = `usage: pnpm demo [--framework express|koa|fastify] [--seconds 5] [--json] [--verbose]

  --framework  which adapter to show (default express)
  --seconds    length of each run's load, 4 to 30 (default 5); SIGTERM comes at 30 %
  --json       print the figures as JSON instead of the table
  --verbose    also print what each app logged`

function fail(message: string): never {
  console.error(`error: ${message}\n\n${USAGE}`)
  process.exit(2)
}

function parse() {
  let values: { framework?: string; seconds?: string; json?: boolean; verbose?: boolean; help?: boolean }
  try {
    ;({ values } = parseArgs({
      options: {
        framework: { type: 'string', short: 'f', default: 'express' },
        seconds: { type: 'string', short: 's', default: '5' },
        json: { type: 'boolean', default: false },
        verbose: { type: 'boolean', short: 'v', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }))
  } catch (error) {
    fail((error as Error).message)
  }
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  const framework = values.framework as Framework
  if (!FRAMEWORKS.includes(framework))
    fail(`--framework must be one of ${FRAMEWORKS.join(', ')}; received "${values.framework}"`)
  const seconds = Number(values.seconds)
  if (!Number.isFinite(seconds) || seconds < 4 || seconds > 30)
    fail(`--seconds must be a number from 4 to 30; received "${values.seconds}"`)
  return { framework, seconds, json: values.json === true, verbose: values.verbose === true }
}

/** One line on stderr: rewritten in place on a terminal, one line per phase otherwise. */
function createProgress(stream: NodeJS.WriteStream) {
  const live = stream.isTTY === true
  let lastPhase: RunProgress['phase'] | undefined
  return {
    update(label: string, progress: RunProgress) {
      const seconds = `${(progress.elapsedMs / 1000).toFixed(1)} s`
      const phase = {
        starting: 'starting',
        loading: 'loading',
        signalled: 'SIGTERM sent, load goes on',
        exited: 'exited',
        killed: 'grace period over: SIGKILL',
      }[progress.phase]
      if (live) {
        stream.write(
          `\r\x1b[K${label.padEnd(24)} ${seconds.padStart(6)}  ${progress.sent} sent, ${progress.ok} ok, ${progress.failed} not ok  · ${phase}`,
        )
      } else if (progress.phase !== lastPhase) {
        stream.write(`${label}: ${phase} at ${seconds} (${progress.sent} sent, ${progress.ok} ok)\n`)
      }
      lastPhase = progress.phase
    },
    end() {
      if (live) stream.write('\r\x1b[K')
      lastPhase = undefined
    },
  }
}

async function main(): Promise<void> {
  const args = parse()
  // Whatever ends this process, the apps it started end with it, by PID.
  process.once('exit', killChildren)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killChildren()
      process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const)[signal])
    })
  }

  try {
    await import(`@lameduck/${args.framework}`)
  } catch (error) {
    console.error(
      `error: @lameduck/${args.framework} cannot be loaded (not built yet?): ${(error as Error).message}`,
    )
    process.exit(1)
  }

  const timeline = timelineFor(args.seconds)
  const progress = createProgress(process.stderr)
  const runs = {} as Record<Mode, RunFigures>
  for (const mode of ['lameduck', 'baseline'] as const) {
    const label = `${args.framework} · ${mode === 'lameduck' ? 'lameduck' : baselineName(args.framework)}`
    runs[mode] = await runScenario({
      framework: args.framework,
      mode,
      timeline,
      onProgress: (p) => progress.update(label, p),
    })
    progress.end()
  }

  if (args.json) {
    const strip = ({ output, ...figures }: RunFigures) => (args.verbose ? { ...figures, output } : figures)
    const result = {
      framework: args.framework,
      seconds: args.seconds,
      timeline,
      load: LOAD,
      baseline: baselineName(args.framework),
      runs: { lameduck: strip(runs.lameduck), baseline: strip(runs.baseline) },
    }
    console.log(JSON.stringify(result, null, 2))
  } else {
    const color = process.stdout.isTTY === true && !process.env.NO_COLOR
    console.log(renderTable(args.framework, timeline, runs, color))
  }
  if (args.verbose && !args.json) {
    for (const mode of ['lameduck', 'baseline'] as const) {
      console.log(`\n--- what the ${mode} app printed ---\n${runs[mode].output.trimEnd()}`)
    }
  }
}

main().catch((error: unknown) => {
  killChildren()
  console.error(error instanceof Error ? (error.stack ?? error.message) : error)
  process.exit(1)
})
