// The bench suite's entry point (`npm run bench`).
//
//   npm run bench                                   quick profile, every scenario (under 5 minutes)
//   npm run bench -- --full                         full profile
//   npm run bench -- --scenario a[,b] [--size tiny|quick|full] [--out <dir>]
//
// Prints a markdown table per scenario, each figure next to its target (a missed target says
// MISSED; it is not an exit code), and writes every raw figure, the machine and the versions to
// <out>/<timestamp>-<size>.json (default bench/results/). Exit codes: 0 done, 1 a scenario crashed,
// 2 bad arguments.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { arch, cpus, freemem, platform, release, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { ROOT } from './fleet/master.js'
import { markdown, SIZES, type Scenario, type ScenarioResult, type Size } from './lib/suite.js'
import { cloudaiTable } from './scenarios/cloudai-table.js'
import { dialStorm } from './scenarios/dial-storm.js'
import { memoryPerWorker } from './scenarios/memory-per-worker.js'
import { heartbeatIngest } from './scenarios/heartbeat-ingest.js'
import { scaling } from './scenarios/scaling.js'
import { telemetryPlacement } from './scenarios/telemetry-placement.js'
import { timeToAssign } from './scenarios/time-to-assign.js'
import { logLatency } from './scenarios/log-latency.js'
import { failover } from './scenarios/failover.js'
import { gitCommit } from './lib/provenance.js'

export const SCENARIOS: Scenario[] = [cloudaiTable, dialStorm, heartbeatIngest, telemetryPlacement, memoryPerWorker, timeToAssign, scaling, logLatency, failover]
const RUNS: Record<Size, number> = { tiny: 1, quick: 3, full: 5 }

class UsageError extends Error {}

interface Args {
  size: Size
  scenarios: Scenario[]
  out: string
  logDir: string | null
}

const USAGE = `usage: npm run bench -- [--full | --size tiny|quick|full] [--scenario <name>[,<name>...]] [--out <dir>] [--logs <dir>]
scenarios:
${SCENARIOS.map((s) => `  ${s.name.padEnd(22)} ${s.description}`).join('\n')}`

function parseArgs(argv: string[]): Args | 'help' {
  let size: Size = 'quick'
  let sizeSet = false
  let full = false
  let names: string[] | null = null
  let out = join(ROOT, 'bench', 'results')
  let logDir: string | null = null
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`)
      return v
    }
    if (a === '--help' || a === '-h') return 'help'
    else if (a === '--full') full = true
    else if (a === '--size') {
      const v = value()
      if (!(SIZES as readonly string[]).includes(v)) throw new UsageError(`unknown size "${v}"; sizes: ${SIZES.join(', ')}`)
      size = v as Size
      sizeSet = true
    } else if (a === '--scenario' || a === '--scenarios') {
      names = [...(names ?? []), ...value().split(',').map((s) => s.trim()).filter(Boolean)]
    } else if (a === '--out') out = resolve(value())
    else if (a === '--logs') logDir = resolve(value())
    else throw new UsageError(`unknown argument "${a}"`)
  }
  if (full && sizeSet && size !== 'full') throw new UsageError(`--full and --size ${size} disagree`)
  if (full) size = 'full'
  let scenarios = SCENARIOS
  if (names) {
    const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n))
    if (unknown.length) throw new UsageError(`unknown scenario${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => `"${n}"`).join(', ')}; scenarios: ${SCENARIOS.map((s) => s.name).join(', ')}`)
    if (names.length === 0) throw new UsageError('--scenario needs at least one name')
    scenarios = SCENARIOS.filter((s) => names!.includes(s.name))
  }
  return { size, scenarios, out, logDir }
}

async function main(): Promise<number> {
  let args: Args | 'help'
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`bench: ${err.message}\n${USAGE}\n`)
    return 2
  }
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const { size, scenarios, out } = args
  if (args.logDir) mkdirSync(args.logDir, { recursive: true })
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  const startedAt = new Date()
  const cpuList = cpus()
  const report = {
    profile: size,
    runs: RUNS[size],
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    machine: { os: platform(), release: release(), arch: arch(), cpus: cpuList.length, cpuModel: cpuList[0]?.model ?? null, memoryBytes: totalmem(), freeMemoryBytesAtStart: freemem() },
    versions: { node: process.version, cloudai: pkg.version, git: gitCommit(ROOT) },
    scenarios: {} as Record<string, (ScenarioResult & { durationMs: number }) | { error: string; durationMs: number }>,
  }
  process.stdout.write(`# cloudai bench: ${size} profile (${RUNS[size]} run${RUNS[size] > 1 ? 's' : ''} per figure), node ${process.version}, ${cpuList.length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, ${report.versions.git.commit?.slice(0, 12) ?? 'no git'}\n\n`)
  let crashed = false
  for (const s of scenarios) {
    const t0 = performance.now()
    process.stderr.write(`bench: ${s.name} (${size})...\n`)
    try {
      const result = await s.run({ size, runs: RUNS[size], progress: (m) => process.stderr.write(`  ${m}\n`), logDir: args.logDir })
      const durationMs = Math.round(performance.now() - t0)
      report.scenarios[s.name] = { ...result, durationMs }
      for (const t of result.tables) process.stdout.write(`${markdown(t)}\n\n`)
      for (const n of result.notes) process.stdout.write(`- ${n}\n`)
      process.stdout.write(`- ${s.name} took ${(durationMs / 1000).toFixed(1)} s\n\n`)
    } catch (err) {
      crashed = true
      const e = err as Error
      report.scenarios[s.name] = { error: e.stack ?? e.message, durationMs: Math.round(performance.now() - t0) }
      process.stdout.write(`### ${s.name}\n\nCRASHED: ${e.message}\n\n`)
      process.stderr.write(`bench: ${s.name} crashed: ${e.stack ?? e.message}\n`)
    }
  }
  report.finishedAt = new Date().toISOString()
  mkdirSync(out, { recursive: true })
  const file = join(out, `${startedAt.toISOString().replace(/[:.]/g, '-')}-${size}.json`)
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(`Results: ${file}\n`)
  return crashed ? 1 : 0
}

process.exitCode = await main()
