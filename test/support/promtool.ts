import { execFile } from 'node:child_process'
import { mkdirSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { aptArgv } from './apt.js'
import { isExecutable, localHost, which, type ChromiumHost } from './chromium.js'

// Prometheus' own linter for the master's /metrics. It ships in Debian's `prometheus` package,
// which also installs and (under systemd) starts a Prometheus server: so the package is downloaded
// and only unpacked into a cache dir, as chromium.ts gets the dashboard test's browser: nothing
// runs, nothing is installed system-wide, and `npm test` still passes on a fresh machine.

const CACHE = join(tmpdir(), 'cloudai-promtool')
const UNPACKED = join(CACHE, 'usr', 'bin', 'promtool')
export const PROMTOOL_INSTALL = 'sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus'

/** CLOUDAI_PROMTOOL, then promtool on PATH, then the one unpacked here before. */
export function findPromtool(host: Pick<ChromiumHost, 'env' | 'isExecutable'>): string | null {
  const chosen = host.env.CLOUDAI_PROMTOOL
  if (chosen) {
    if (!host.isExecutable(chosen)) throw new Error(`CLOUDAI_PROMTOOL=${chosen} is not an executable file: point it at promtool, or unset it`)
    return chosen
  }
  return which('promtool', host) ?? (host.isExecutable(UNPACKED) ? UNPACKED : null)
}

let found: Promise<string> | null = null

/** promtool's path: one that is there, or Debian's unpacked now (once per process). */
export function promtoolPath(): Promise<string> {
  found ??= fetchPromtool(localHost('cloudai-promtool-'))
  return found
}

async function fetchPromtool(host: ChromiumHost): Promise<string> {
  const there = findPromtool(host)
  if (there) return there
  const aptGet = which('apt-get', host)
  const dpkgDeb = which('dpkg-deb', host)
  const prefix = host.uid === 0 ? [] : aptGet && which('sudo', host) && (await host.passwordlessSudo()) ? ['sudo', '-n'] : null
  if (!aptGet || !dpkgDeb || !prefix) {
    const why = !aptGet || !dpkgDeb ? 'there is no apt-get and dpkg-deb here' : 'this user is not root and has no passwordless sudo'
    throw new Error(`the /metrics lint test needs promtool: none found (CLOUDAI_PROMTOOL, PATH, ${UNPACKED}), and ${why}. Install it (\`${PROMTOOL_INSTALL}\`) or set CLOUDAI_PROMTOOL.`)
  }
  host.say(`No promtool found: downloading Debian's prometheus package and unpacking its promtool into ${CACHE} (nothing is installed or started)`)
  mkdirSync(CACHE, { recursive: true })
  const apt = aptArgv(prefix, aptGet, host)
  try {
    await host.run([...apt, 'update'])
    // apt-get download writes into its working directory: `-o Dir::Cache::archives` does not apply to it.
    await host.run(['sh', '-c', 'cd "$1" && shift && exec "$@"', 'sh', CACHE, ...apt, 'download', 'prometheus'])
    const deb = readdirSync(CACHE).find((f) => /^prometheus_.*\.deb$/.test(f))
    if (!deb) throw new Error(`apt-get download left no prometheus_*.deb in ${CACHE}`)
    await host.run([dpkgDeb, '-x', join(CACHE, deb), CACHE])
  } catch (err) {
    throw new Error(`getting promtool failed: ${(err as Error).message}\nInstall it by hand: \`${PROMTOOL_INSTALL}\`, or set CLOUDAI_PROMTOOL.`)
  }
  if (!isExecutable(UNPACKED)) throw new Error(`prometheus was unpacked but ${UNPACKED} is not there`)
  return UNPACKED
}

/** `promtool check metrics` on `text`: its exit code and what it said (lint findings, one per line). */
export async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const promtool = await promtoolPath()
  return new Promise((resolve, reject) => {
    const child = execFile(promtool, ['check', 'metrics'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, cwd: tmpdir(), timeout: 60_000 }, (err, stdout, stderr) => {
      // An exit code other than 0 is promtool's verdict; anything else (not started, killed) is ours.
      if (err && typeof err.code !== 'number') return reject(err)
      resolve({ code: err ? Number(err.code) : 0, output: `${stdout}${stderr}`.trim() })
    })
    child.stdin?.end(text)
  })
}
