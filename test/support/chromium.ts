import { execFile, spawn } from 'node:child_process'
import { accessSync, constants, createWriteStream, existsSync, mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { aptArgv } from './apt.js'

// The browser the dashboard's test drives. `npm test` must pass on a fresh machine with nothing but
// `npm ci`, so where no browser is found and this user may install packages (root, or passwordless
// sudo, with apt-get) the test set-up installs Debian's chromium itself, as `playwright install
// --with-deps` installs what its browsers need. Playwright's own browser builds cannot be had here
// (its download host is not reachable), so the distribution's package is the browser.

const NAMES = ['chromium', 'chromium-browser', 'google-chrome'] as const
/** Bounds the whole install: the browser test fails with the log instead of hanging. */
const INSTALL_TIMEOUT_MS = 8 * 60_000

/** A way to find and install a browser; the defaults are this machine's. */
export interface ChromiumHost {
  env: Readonly<Record<string, string | undefined>>
  uid: number
  isExecutable(path: string): boolean
  /** Says one line to the person running the tests. */
  say(line: string): void
  /** Runs a command to completion; rejects with its output's tail when it fails. */
  run(argv: readonly string[]): Promise<void>
  /** True when `sudo -n true` succeeds (sudo without a password). */
  passwordlessSudo(): Promise<boolean>
}

export function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** The first executable `name` on PATH, or null. */
export function which(name: string, host: Pick<ChromiumHost, 'env' | 'isExecutable'>): string | null {
  for (const dir of (host.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue
    const path = join(dir, name)
    if (host.isExecutable(path)) return path
  }
  return null
}

/** CLOUDAI_CHROMIUM, then /usr/bin/chromium, then chromium, chromium-browser, google-chrome on PATH. */
export function findChromium(host: ChromiumHost): string | null {
  const chosen = host.env.CLOUDAI_CHROMIUM
  if (chosen) {
    if (!host.isExecutable(chosen)) throw new Error(`CLOUDAI_CHROMIUM=${chosen} is not an executable file: point it at a Chromium or Chrome binary, or unset it`)
    return chosen
  }
  if (host.isExecutable('/usr/bin/chromium')) return '/usr/bin/chromium'
  for (const name of NAMES) {
    const path = which(name, host)
    if (path) return path
  }
  return null
}

/** Debian calls the package chromium; Ubuntu only has chromium-browser. */
export function packageName(): string {
  let release = ''
  try {
    release = readFileSync('/etc/os-release', 'utf8')
  } catch {
    // No os-release: assume Debian's name.
  }
  return /^(ID|ID_LIKE)=.*\bubuntu\b/m.test(release) ? 'chromium-browser' : 'chromium'
}

export function installCommand(pkg = packageName()): string {
  return `sudo apt-get update && sudo apt-get install -y --no-install-recommends ${pkg}`
}

/**
 * A browser's path: one that is there, or Debian's chromium installed now. Throws, with the exact
 * command to run, where there is none and this user cannot install one.
 */
export async function chromiumPath(host: ChromiumHost = localHost()): Promise<string> {
  const found = findChromium(host)
  if (found) return found
  const looked = `looked at CLOUDAI_CHROMIUM, /usr/bin/chromium and ${NAMES.join(', ')} on PATH`
  const aptGet = which('apt-get', host)
  const prefix = host.uid === 0 ? [] : aptGet && which('sudo', host) && (await host.passwordlessSudo()) ? ['sudo', '-n'] : null
  const pkg = packageName()
  if (!aptGet || !prefix) {
    const why = !aptGet ? 'there is no apt-get here' : 'this user is not root and has no passwordless sudo'
    throw new Error(`the dashboard's browser test needs Chromium or Chrome: none found (${looked}), and ${why}. Install one, e.g. \`${installCommand(pkg)}\`, or set CLOUDAI_CHROMIUM to its binary.`)
  }
  host.say(`No Chromium found: installing Debian's ${pkg} for the dashboard's browser test (${[...prefix, 'apt-get', 'install', pkg].join(' ')}, about a minute)`)
  const apt = aptArgv(prefix, aptGet, host)
  try {
    await host.run([...apt, 'update'])
    await host.run([...apt, 'install', '-y', '--no-install-recommends', pkg])
  } catch (err) {
    throw new Error(`installing ${pkg} failed: ${(err as Error).message}\nInstall it by hand: \`${installCommand(pkg)}\`, or set CLOUDAI_CHROMIUM to a Chromium or Chrome binary.`)
  }
  const installed = findChromium(host)
  if (!installed) throw new Error(`${pkg} was installed but no browser binary is there (${looked}); set CLOUDAI_CHROMIUM to a Chromium or Chrome binary`)
  return installed
}

/**
 * This machine: the commands' output goes to a log file (in a temp dir named from `logPrefix`),
 * whose tail a failure shows. test/support/netns.ts installs iproute2 with the same `run`.
 */
export function localHost(logPrefix = 'cloudai-chromium-'): ChromiumHost {
  // Only what apt and sudo need: nothing of the test's own environment (CLOUDAI_*) leaks in.
  const childEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C', HOME: process.env.HOME ?? '/root' }
  let logFile: string | null = null
  return {
    env: process.env,
    uid: process.getuid?.() ?? -1,
    isExecutable,
    say: (line) => process.stderr.write(`${line}\n`),
    passwordlessSudo: () => new Promise((resolve) => execFile('sudo', ['-n', 'true'], { env: childEnv, timeout: 10_000 }, (err) => resolve(!err))),
    run: (argv) =>
      new Promise((resolve, reject) => {
        logFile ??= join(mkdtempSync(join(tmpdir(), logPrefix)), 'install.log')
        const log = createWriteStream(logFile, { flags: 'a' })
        const child = spawn(argv[0]!, argv.slice(1), { env: childEnv, cwd: tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] })
        child.stdout.pipe(log, { end: false })
        child.stderr.pipe(log, { end: false })
        const timer = setTimeout(() => child.kill('SIGKILL'), INSTALL_TIMEOUT_MS)
        // 'error' (it could not start) may be followed by 'close': the first one settles.
        let settled = false
        const settle = (err: Error | null): void => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          log.end(() => (err ? reject(err) : resolve()))
        }
        child.once('error', (err) => settle(err))
        child.once('close', (code, signal) => {
          if (code === 0) return settle(null)
          const tail = existsSync(logFile!) ? readFileSync(logFile!, 'utf8').split('\n').slice(-15).join('\n') : ''
          settle(new Error(`\`${argv.join(' ')}\` exited with ${signal ?? code} (log: ${logFile}):\n${tail}`))
        })
      }),
  }
}
