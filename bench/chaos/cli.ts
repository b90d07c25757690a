// The chaos suite's entry point (`npm run chaos`):
//
//   npm run chaos -- [--duration 10m] [--workers 3..5] [--seed N] [--heartbeat-timeout 3s] [--out file.json]
//
// Prints the table (markdown) and the tasks behind every broken invariant, and writes every figure,
// the machine, the versions and the settings as JSON: to --out, else for a run of 10 minutes or
// more to bench/results/<time>-chaos.json, else to the system's temp dir. Exit codes: 0 every
// invariant held, 1 an invariant broke, 2 bad arguments, 3 the harness itself failed, 130 stopped
// by SIGINT or SIGTERM (after the fault under way, cleaned up).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { arch, cpus, platform, release, tmpdir, totalmem } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { ROOT } from '../../test/support/cluster.js'
import { parseDuration } from '../../src/shared/duration.js'
import { findingsText, recoveryByKind, table } from './report.js'
import { DEFAULT_SETTINGS, runChaos, type ChaosSettings } from './run.js'
import { gitCommit } from '../lib/provenance.js'

const USAGE = 'usage: npm run chaos -- [--duration 90s] [--workers 3..5] [--seed N] [--heartbeat-timeout 3s] [--out <file.json>]'
const TEN_MINUTES = 600_000

class UsageError extends Error {}

function parseArgs(argv: string[]): { settings: ChaosSettings; out: string | null } | 'help' {
  const settings: ChaosSettings = { ...DEFAULT_SETTINGS, durationMs: 90_000 }
  let out: string | null = null
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    const value = (): string => {
      const v = argv[++i]
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`)
      return v
    }
    const duration = (): number => {
      try {
        return parseDuration(value(), a)
      } catch (err) {
        throw new UsageError((err as Error).message)
      }
    }
    if (a === '--help' || a === '-h') return 'help'
    else if (a === '--duration') settings.durationMs = duration()
    else if (a === '--heartbeat-timeout') settings.heartbeatTimeoutMs = duration()
    else if (a === '--workers') {
      const n = Number(value())
      if (!Number.isInteger(n) || n < 3 || n > 5) throw new UsageError(`--workers must be 3, 4 or 5`)
      settings.workers = n
    } else if (a === '--seed') {
      const n = Number(value())
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new UsageError('--seed must be an integer from 0 to 4294967295')
      settings.seed = n
    } else if (a === '--out') out = resolve(value())
    else throw new UsageError(`unknown argument "${a}"`)
  }
  if (settings.durationMs < 10_000) throw new UsageError('--duration must be at least 10s')
  if (settings.heartbeatTimeoutMs < 1000 || settings.heartbeatTimeoutMs > 60_000) throw new UsageError('--heartbeat-timeout must be from 1s to 60s')
  return { settings, out }
}

async function main(): Promise<number> {
  let args: ReturnType<typeof parseArgs>
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`chaos: ${err.message}\n${USAGE}\n`)
    return 2
  }
  if (args === 'help') {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const { settings } = args
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const out = args.out ?? (settings.durationMs >= TEN_MINUTES ? join(ROOT, 'bench', 'results', `${stamp}-chaos.json`) : join(tmpdir(), `cloudai-chaos-${stamp}.json`))
  // Ctrl-C or a kill: the run's finally blocks still clean up (processes, mounts, namespaces).
  const abort = new AbortController()
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort(sig))
  process.stderr.write(`chaos: ${settings.durationMs / 1000} s, ${settings.workers} workers, seed ${settings.seed}, heartbeat timeout ${settings.heartbeatTimeoutMs} ms\n`)
  let result
  try {
    result = await runChaos(settings, (line) => process.stderr.write(`chaos: ${line}\n`), abort.signal)
  } catch (err) {
    if (abort.signal.aborted) {
      process.stderr.write(`chaos: stopped by ${String(abort.signal.reason)}; every process, mount and namespace it made is gone\n`)
      return 130
    }
    process.stderr.write(`chaos: the harness failed: ${(err as Error).stack ?? String(err)}\n`)
    return 3
  }
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  const cpuList = cpus()
  const report = {
    kind: 'chaos',
    machine: { os: platform(), release: release(), arch: arch(), cpus: cpuList.length, cpuModel: cpuList[0]?.model ?? null, memoryBytes: totalmem() },
    versions: { node: process.version, cloudai: pkg.version, git: gitCommit(ROOT) },
    ...result,
    recovery: recoveryByKind(result.faults),
  }
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(`# cloudai chaos: ${(result.wallMs / 1000).toFixed(0)} s, ${settings.workers} workers, seed ${settings.seed}, ${result.faults.length} faults, commit ${report.versions.git.commit?.slice(0, 12) ?? 'no git'}\n\n`)
  process.stdout.write(`${table({ figures: result.figures, faults: result.faults, skipped: result.skipped, rssStart: result.rssStart, rssEnd: result.rssEnd, refused: result.refused, breaches: result.breaches })}\n\n`)
  const details = findingsText(result.findings)
  if (details) process.stdout.write(`${details}\n\n`)
  process.stdout.write(`Results: ${out}\n`)
  return result.breaches.length === 0 ? 0 : 1
}

process.exitCode = await main()
