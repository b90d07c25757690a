import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { isIP } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { TestContext } from 'node:test'
import { aptArgv } from './apt.js'
import { isExecutable, localHost, which } from './chromium.js'
import { childCwd, childEnv } from './cluster.js'

// Two hosts for a test, made of Linux network namespaces: a caller that is genuinely not loopback,
// and a link that can be cut. Each pair is two fresh namespaces joined by one veth, with nothing
// else in them: no other interface, no default route, no link to this machine's own namespace. A
// process in one of them reaches its own loopback and the other end's address, and nothing else:
// any other address fails at once with ENETUNREACH, so no packet leaves the pair.
//
// The test process itself stays in this machine's namespace, where the pair's addresses are not
// on any interface: a packet sent to them from here would follow the default route off the
// machine. Everything that talks to a namespace address therefore runs inside a namespace: the
// CLI (cluster.ts' `netns` option), `run`, nsFetch and nsGrpcCall, which refuse any other target.
//
// Needs root and `ip` (Debian's iproute2). Tests ask netnsUnavailable() first and skip with its
// reason where namespaces cannot be made; CI runs as root, so it runs them.

/**
 * 198.18.0.0/15 is set aside for benchmarking network devices (RFC 2544, RFC 6890): no real
 * network uses it, so a pair's addresses cannot shadow one this machine or its tests reach. Each
 * pair takes the /30 198.18.<n mod 256>.0 (n counting this process's pairs), .1 in `a`, .2 in `b`.
 * Pairs never see each other, so the same /30 in two test files is harmless; distinct ones only
 * make logs easier to read.
 */
export const NETNS_RANGE = '198.18.0.0/15'

/** Namespaces of this harness: `cai-<pid of the test process>-<n>-<a|b>` (n 0 is the probe's). */
const NAME_RE = /^cai-(\d+)-(\d+)-[ab]$/
/** The veth's end in each namespace; the namespaces are fresh, so these names cannot collide. */
const IFNAME = { a: 'cai-a', b: 'cai-b' } as const
/** One `ip` command; it takes milliseconds. */
const IP_TIMEOUT_MS = 10_000
/** A helper run in a namespace (nsFetch, nsGrpcCall, nsRun) is killed after this long. */
const HELPER_TIMEOUT_MS = 30_000
/** How long a pair's clean-up waits for what ran in it to be gone. */
const CLOSE_WAIT_MS = 10_000

export interface NetnsEnd {
  /** The namespace's name, for `ip netns exec` (and `netns` of startMaster / startWorker). */
  readonly name: string
  /** Its address on the veth (a /30 of NETNS_RANGE); the other end's is the only one it reaches. */
  readonly ip: string
  /** Its end of the veth. */
  readonly ifname: string
}

export interface NsProcess {
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly stdout: () => string
  readonly stderr: () => string
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export interface NetPair {
  readonly a: NetnsEnd
  readonly b: NetnsEnd
  /**
   * Cuts the link: both ends of the veth down (`ip link set … down`; tc netem does not work
   * here). Each side loses its route to the other: packets in flight are lost, new connections
   * fail with ENETUNREACH, and established TCP connections are not reset but stall, resuming on
   * restore unless they timed out meanwhile.
   */
  cut(): Promise<void>
  /** Both ends up again; resolves once each reports its carrier (the kernel restores the routes). */
  restore(): Promise<void>
  /** Starts `argv` inside `end`'s namespace; killed, with all else in it, when the pair closes. */
  run(end: NetnsEnd, argv: readonly string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string }): NsProcess
  /** Kills everything inside both namespaces and deletes them (and so the veth). Idempotent; t.after calls it. */
  close(): Promise<void>
}

// ---------------------------------------------------------------------------------------------
// Can namespaces be made here?

/** What netnsUnavailable looks at and does; the defaults are this machine's (unit tests pass others). */
export interface NetnsHost {
  platform: NodeJS.Platform
  uid: number
  env: Readonly<Record<string, string | undefined>>
  isExecutable(path: string): boolean
  /** Says one line to the person running the tests. */
  say(line: string): void
  /** Runs a command to completion (apt-get); rejects with its output's tail when it fails. */
  run(argv: readonly string[]): Promise<void>
  /** Makes a pair of namespaces with a veth and removes it: null when that worked, else why not. */
  probe(): Promise<string | null>
}

let availability: Promise<string | null> | null = null

export const IPROUTE2_INSTALL = 'apt-get update && apt-get install -y --no-install-recommends iproute2'

/**
 * Null when network namespaces can be made here, else the reason, for `t.skip(reason)`. Needs Linux,
 * root, and `ip` on the PATH; `ip` is Debian's iproute2, on this kind of machine but not in every
 * Debian image (it is priority important, not required), so where it is missing and apt-get is
 * there it is installed now, in one line, as chromium.ts installs the dashboard test's browser.
 * Last, it really makes a pair and removes it: a container without CAP_SYS_ADMIN fails there.
 * Without `host`, this machine, worked out once per process.
 */
export function netnsUnavailable(host?: NetnsHost): Promise<string | null> {
  if (host) return decide(host)
  availability ??= decide(localNetnsHost())
  return availability
}

async function decide(host: NetnsHost): Promise<string | null> {
  if (host.platform !== 'linux') return `network namespaces are Linux only (this is ${host.platform})`
  if (host.uid !== 0) return `making network namespaces needs root (uid is ${host.uid}); CI runs as root`
  if (!which('ip', host)) {
    const aptGet = which('apt-get', host)
    if (!aptGet) return `\`ip\` (iproute2) is not on the PATH and there is no apt-get to install it; install iproute2 (\`${IPROUTE2_INSTALL}\`)`
    host.say(`No \`ip\` found: installing Debian's iproute2 for the network namespace tests (apt-get install iproute2, seconds)`)
    const apt = aptArgv([], aptGet, host)
    try {
      await host.run([...apt, 'update'])
      await host.run([...apt, 'install', '-y', '--no-install-recommends', 'iproute2'])
    } catch (err) {
      return `\`ip\` (iproute2) is not installed, and installing it failed: ${(err as Error).message}\nInstall it by hand: \`${IPROUTE2_INSTALL}\``
    }
    if (!which('ip', host)) return `iproute2 was installed but \`ip\` is not on the PATH (${host.env.PATH ?? ''})`
  }
  const failed = await host.probe()
  return failed === null ? null : `cannot make network namespaces here: ${failed}`
}

/** This machine. */
function localNetnsHost(): NetnsHost {
  const local = localHost('cloudai-iproute2-')
  return {
    platform: process.platform,
    uid: process.getuid?.() ?? -1,
    // The PATH children get (childEnv's allow-list), so `ip` found here is the `ip` Proc spawns.
    env: { PATH: childEnv().PATH },
    isExecutable,
    say: local.say,
    run: local.run,
    probe: async () => {
      try {
        const probe = await makePair(0)
        await probe.close()
        return null
      } catch (err) {
        return (err as Error).message
      }
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Pairs

/** Namespaces this process made and has not deleted, with their addresses (the only targets allowed). */
const live = new Map<string, NetnsEnd>()
let pairs = 0
let swept = false
let exitHookSet = false

/**
 * Two fresh namespaces `a` and `b`, joined by a veth with an address at each end, `lo` and the
 * veth up in both. Cleaned up by t.after (everything inside killed, both namespaces deleted);
 * namespaces a crashed run left behind (their pid gone) are removed first. Call
 * netnsUnavailable() and skip before this: here an unavailable machine is an error.
 *
 * @example
 *   const reason = await netnsUnavailable()
 *   if (reason) return t.skip(reason)
 *   const pair = await createNetPair(t)
 *   const master = await startMaster(t, { dataDir: tempDir(t), netns: pair.a })
 *   const res = await nsFetch(pair.a, `${master.api}/api/workers`)
 *   const hb = await nsGrpcCall(pair.b, `${pair.a.ip}:${master.grpcPort}`, 'SendHeartbeat', { worker_id: 'w1' })
 *   await pair.cut()
 */
export async function createNetPair(t: TestContext): Promise<NetPair> {
  const pair = await openNetPair()
  t.after(() => pair.close())
  return pair
}

/**
 * createNetPair for a caller that is not a test (the chaos suite, bench/chaos): the same pair,
 * which the caller must close() itself (the exit hook still removes it if the process dies first).
 */
export async function openNetPair(): Promise<NetPair> {
  const reason = await netnsUnavailable()
  if (reason !== null) throw new Error(`network namespaces cannot be made here (call netnsUnavailable() and skip first): ${reason}`)
  if (!swept) {
    swept = true
    await sweepStaleNamespaces()
  }
  return makePair(++pairs)
}

async function makePair(n: number): Promise<NetPair> {
  const octet = n % 256
  const a: NetnsEnd = { name: `cai-${process.pid}-${n}-a`, ip: `198.18.${octet}.1`, ifname: IFNAME.a }
  const b: NetnsEnd = { name: `cai-${process.pid}-${n}-b`, ip: `198.18.${octet}.2`, ifname: IFNAME.b }
  let closing: Promise<void> | null = null
  const close = (): Promise<void> => (closing ??= closeNamespaces([a, b]))
  // Known before they exist, so that a failure part way, or the process exiting, still removes them.
  live.set(a.name, a)
  live.set(b.name, b)
  setExitHook()
  try {
    await ip(['netns', 'add', a.name])
    await ip(['netns', 'add', b.name])
    // Made inside the namespaces: the veth never appears in this machine's own namespace.
    await ip(['link', 'add', 'name', a.ifname, 'netns', a.name, 'type', 'veth', 'peer', 'name', b.ifname, 'netns', b.name])
    for (const end of [a, b]) {
      await disableIpv6(end)
      await ip(['-n', end.name, 'addr', 'add', `${end.ip}/30`, 'dev', end.ifname])
      await ip(['-n', end.name, 'link', 'set', 'lo', 'up'])
      await ip(['-n', end.name, 'link', 'set', end.ifname, 'up'])
    }
    await carrierUp([a, b])
  } catch (err) {
    await close().catch(() => {}) // what failed to be made is the error to report; the exit hook retries the rest
    throw err
  }
  return {
    a,
    b,
    cut: async () => {
      for (const end of [a, b]) await ip(['-n', end.name, 'link', 'set', end.ifname, 'down'])
    },
    restore: async () => {
      for (const end of [a, b]) await ip(['-n', end.name, 'link', 'set', end.ifname, 'up'])
      await carrierUp([a, b])
    },
    run: (end, argv, opts = {}) => {
      if (end !== a && end !== b) throw new Error(`run: ${end.name} is not a namespace of this pair (${a.name}, ${b.name})`)
      if (closing) throw new Error(`run: the pair ${a.name}/${b.name} is closed`)
      // Nothing to track: close() kills whatever runs in the namespaces, children of children too.
      return nsSpawn(end, argv, opts)
    },
    close,
  }
}

/**
 * No IPv6 on the veth: without it each end would give itself a link-local address and send
 * neighbour discovery and multicast listener reports, traffic to addresses other than the pair's
 * two. (Still only between the two namespaces, but the pair then carries nothing a test did not
 * send.) /proc/sys/net shows the namespace of the process that opens it, hence the `ip netns exec`.
 */
async function disableIpv6(end: NetnsEnd): Promise<void> {
  if (!existsSync('/proc/sys/net/ipv6')) return // a kernel without IPv6: nothing to turn off
  await ip(['netns', 'exec', end.name, 'sh', '-c', `echo 1 > /proc/sys/net/ipv6/conf/${end.ifname}/disable_ipv6`])
}

/** Resolves once each end's veth is up with carrier (LOWER_UP): its route to the other end is back. */
async function carrierUp(ends: NetnsEnd[]): Promise<void> {
  const deadline = Date.now() + IP_TIMEOUT_MS
  for (const end of ends) {
    for (;;) {
      const out = await ip(['-n', end.name, '-o', 'link', 'show', 'dev', end.ifname])
      if (/[<,]LOWER_UP[,>]/.test(out) && /[<,]UP[,>]/.test(out)) break
      if (Date.now() > deadline) throw new Error(`${end.ifname} in ${end.name} did not come up within ${IP_TIMEOUT_MS}ms: ${out.trim()}`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
}

/** Kills every process inside the namespaces (what the test started there and their children), then deletes them. */
async function closeNamespaces(ends: NetnsEnd[]): Promise<void> {
  const deadline = Date.now() + CLOSE_WAIT_MS
  const errors: string[] = []
  for (const end of ends) {
    if (!(await exists(end.name))) {
      live.delete(end.name)
      continue
    }
    for (;;) {
      const pids = await nsPids(end.name)
      if (pids.length === 0) break
      for (const pid of pids) killPid(pid)
      if (Date.now() > deadline) {
        errors.push(`${end.name} still has processes ${pids.join(', ')} after ${CLOSE_WAIT_MS}ms`)
        break
      }
      await new Promise((r) => setTimeout(r, 25))
    }
    try {
      await ip(['netns', 'del', end.name])
      live.delete(end.name)
    } catch (err) {
      errors.push((err as Error).message)
    }
  }
  if (errors.length > 0) throw new Error(`cleaning up network namespaces: ${errors.join('; ')}`)
}

/**
 * Deletes the namespaces of this harness whose test process is gone (a run that crashed or was
 * killed before its clean-up), with whatever still runs in them. Those of live processes, other
 * test files running now among them, are left alone.
 */
export async function sweepStaleNamespaces(): Promise<string[]> {
  const stale = staleNamespaces(await listNamespaces(), pidAlive)
  for (const name of stale) {
    for (const pid of await nsPids(name)) killPid(pid)
    await ip(['netns', 'del', name]).catch(() => {}) // another test file sweeping the same one
  }
  return stale
}

/** Names of this harness among `names` whose creating pid is not alive (and is not this process). */
export function staleNamespaces(names: readonly string[], alive: (pid: number) => boolean): string[] {
  return names.filter((name) => {
    const m = NAME_RE.exec(name)
    if (!m) return false
    const pid = Number(m[1])
    return pid !== process.pid && !alive(pid)
  })
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL')
  } catch {
    // Gone already.
  }
}

/** A test process that dies without its t.after hooks (an uncaught error, process.exit) still removes its namespaces. */
function setExitHook(): void {
  if (exitHookSet) return
  exitHookSet = true
  process.once('exit', () => {
    for (const name of live.keys()) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', name], { env: ipEnv(), timeout: IP_TIMEOUT_MS, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
        for (const pid of pids.split(/\s+/).filter(Boolean)) killPid(Number(pid))
        execFileSync('ip', ['netns', 'del', name], { env: ipEnv(), timeout: IP_TIMEOUT_MS, stdio: 'ignore' })
      } catch {
        // Left for the next run's sweep.
      }
    }
  })
}

async function listNamespaces(): Promise<string[]> {
  const out = await ip(['netns', 'list'])
  return out.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean)
}

async function exists(name: string): Promise<boolean> {
  return (await listNamespaces()).includes(name)
}

async function nsPids(name: string): Promise<number[]> {
  const out = await ip(['netns', 'pids', name]).catch(() => '')
  return out.split(/\s+/).filter(Boolean).map(Number).filter((pid) => pid !== process.pid)
}

function ipEnv(): NodeJS.ProcessEnv {
  return { PATH: childEnv().PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C' }
}

/** Runs `ip args`; rejects with what it printed on stderr. */
function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { env: ipEnv(), timeout: IP_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`\`ip ${args.join(' ')}\` failed: ${stderr.trim() || err.message}`))
      else resolve(stdout)
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Processes and calls inside a namespace

function ours(end: NetnsEnd, what: string): void {
  if (live.get(end.name) !== end) throw new Error(`${what}: ${end.name} is not a live namespace of this test process (make it with createNetPair)`)
}

/**
 * `tailBytes`: keep only that much of the end of its stdout and stderr (a helper that lives as
 * long as its namespace would otherwise hold all it ever printed); by default all of it.
 */
function nsSpawn(end: NetnsEnd, argv: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; tailBytes?: number }): NsProcess {
  ours(end, 'run')
  if (argv.length === 0) throw new Error('run: no command')
  // `ip netns exec` execs the command in place: the child's pid is the command's own.
  const child = spawn('ip', ['netns', 'exec', end.name, ...argv], { cwd: opts.cwd ?? childCwd(), env: childEnv(opts.env), stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  const keep = (text: string): string => (opts.tailBytes !== undefined && text.length > opts.tailBytes ? text.slice(-opts.tailBytes) : text)
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout = keep(stdout + d)))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = keep(stderr + d)))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (err) => {
      stderr += String(err)
      resolve({ code: null, signal: null })
    })
    child.once('close', (code, signal) => resolve({ code, signal }))
  })
  return {
    child,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    kill: (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/**
 * Runs `argv` inside `end`'s namespace to completion, `input` on its stdin; killed after
 * `timeoutMs`. (nsFetch and nsGrpcCall keep a helper per namespace instead.)
 */
export async function nsRun(end: NetnsEnd, argv: readonly string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  const p = nsSpawn(end, argv, opts)
  const timeoutMs = opts.timeoutMs ?? HELPER_TIMEOUT_MS
  // The kill's own promise is `p.exited`, awaited below.
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs)
  p.child.stdin!.on('error', () => {}) // a command that exits without reading it
  p.child.stdin!.end(opts.input ?? '')
  const { code, signal } = await p.exited
  clearTimeout(timer)
  return { code, signal, stdout: p.stdout(), stderr: p.stderr() }
}

/** The helper script nsFetch and nsGrpcCall run inside a namespace (compiled next to this file), and its flag. */
const NS_CLIENT = fileURLToPath(new URL('./ns-client.js', import.meta.url))
/** ns-client.ts' HELPER_FLAG: a mismatch fails every nsFetch and nsGrpcCall at once (no answer printed). */
const NS_CLIENT_FLAG = '--ns-client-requests-on-stdin'

/**
 * Refuses a target that is neither loopback (inside the namespace: its own `lo`) nor an address of
 * a namespace this process made. The namespaces have no route anywhere else, so such a call
 * could not leave them anyway; this says so before trying.
 */
function checkTarget(host: string, what: string): void {
  const bare = host.replace(/^\[(.*)\]$/, '$1')
  if (bare === '::1' || (isIP(bare) === 4 && bare.startsWith('127.'))) return
  for (const end of live.values()) if (end.ip === bare) return
  throw new Error(`${what}: ${host} is neither loopback nor an address of this test's network namespaces; tests send traffic to nothing else`)
}

/**
 * The helper of one namespace end: started at the first call from it and kept until the namespace
 * goes (closeNamespaces kills everything inside), answering calls by id. A helper process per call
 * made most of the namespace tests' CPU: the attack suite alone started about 180.
 */
class NsClient {
  private readonly proc: NsProcess
  private readonly pending = new Map<number, { resolve: (answer: unknown) => void; reject: (err: Error) => void; timer: NodeJS.Timeout }>()
  private next = 0

  constructor(readonly end: NetnsEnd, onGone: () => void) {
    this.proc = nsSpawn(end, [process.execPath, NS_CLIENT, NS_CLIENT_FLAG], { tailBytes: 16_384 })
    // Idle, the helper does not hold this process open (a pending call's timer does while it waits).
    this.proc.child.unref()
    for (const stream of [this.proc.child.stdin, this.proc.child.stdout, this.proc.child.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.()
    this.proc.child.stdin!.on('error', () => {}) // the helper gone: its exit rejects what is pending
    createInterface({ input: this.proc.child.stdout! }).on('line', (line) => {
      let msg: { id: number; answer: unknown }
      try {
        msg = JSON.parse(line) as { id: number; answer: unknown }
      } catch {
        return // not an answer (nothing else is printed on stdout, but a stray line must not throw here)
      }
      const p = this.pending.get(msg.id)
      if (!p) return
      this.pending.delete(msg.id)
      clearTimeout(p.timer)
      p.resolve(msg.answer)
    })
    this.proc.exited.then(({ code, signal }) => {
      onGone()
      for (const p of this.pending.values()) {
        clearTimeout(p.timer)
        p.reject(new Error(`the helper in ${end.name} exited with ${signal ?? code} before answering; stderr: ${this.proc.stderr().slice(-2000)}`))
      }
      this.pending.clear()
    }, () => {})
  }

  call<T>(what: string, request: object, timeoutMs: number): Promise<T> {
    const id = this.next++
    return new Promise<T>((resolve, reject) => {
      // The request's own deadline (its AbortSignal or gRPC deadline) ends it first; this one
      // catches a helper that hangs.
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${what} in ${this.end.name}: no answer from the helper within ${timeoutMs} ms; stderr: ${this.proc.stderr().slice(-2000)}`))
      }, timeoutMs)
      this.pending.set(id, { resolve: resolve as (answer: unknown) => void, reject, timer })
      // The request goes on stdin: a token in it is not on a command line for `ps` to show.
      this.proc.child.stdin!.write(`${JSON.stringify({ id, request })}\n`)
    })
  }
}

const clients = new Map<string, NsClient>()

function runClient<T>(end: NetnsEnd, what: string, request: object, timeoutMs: number): Promise<T> {
  ours(end, what)
  let client = clients.get(end.name)
  if (!client) {
    const c = new NsClient(end, () => {
      if (clients.get(end.name) === c) clients.delete(end.name)
    })
    clients.set(end.name, c)
    client = c
  }
  return client.call<T>(what, request, timeoutMs + 10_000)
}

export interface NsFetchInit {
  method?: string
  /** Sent as JSON (with content-type application/json) unless it is a string. */
  body?: unknown
  headers?: Record<string, string>
  timeoutMs?: number
}

/**
 * An HTTP request made from inside `end`'s namespace, e.g. to a master's API there (startMaster
 * with `netns`). `body` is the response parsed as JSON when it parses, else its text. A failed
 * connection rejects with the error's code and message.
 */
export async function nsFetch<T = any>(end: NetnsEnd, url: string, init: NsFetchInit = {}): Promise<{ status: number; headers: Record<string, string>; body: T; text: string }> {
  const u = new URL(url)
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`nsFetch: ${url} is not an http(s) URL`)
  checkTarget(u.hostname, 'nsFetch')
  const timeoutMs = init.timeoutMs ?? 10_000
  const headers = { ...(init.body !== undefined && typeof init.body !== 'string' ? { 'content-type': 'application/json' } : {}), ...init.headers }
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body)
  const res = await runClient<{ ok: true; status: number; headers: Record<string, string>; text: string } | { ok: false; error: string }>(
    end, 'nsFetch', { kind: 'fetch', url, method: init.method ?? 'GET', headers, body, timeoutMs }, timeoutMs,
  )
  if (!res.ok) throw new Error(`nsFetch ${init.method ?? 'GET'} ${url} from ${end.name}: ${res.error}`)
  let parsed: unknown = res.text
  try {
    parsed = res.text ? JSON.parse(res.text) : null
  } catch {
    // Not JSON: the text.
  }
  return { status: res.status, headers: res.headers, body: parsed as T, text: res.text }
}

export interface NsGrpcResult<T = any> {
  /** The gRPC status code (0 OK); 14 UNAVAILABLE, 4 DEADLINE_EXCEEDED when the call got nowhere. */
  code: number
  details: string
  /** The answer of an OK call, else null. */
  response: T | null
  /** The trailing metadata of a refusal (e.g. `cloudai-error-code`), string values only. */
  metadata: Record<string, string>
}

/**
 * One unary call of the MasterWorker service (proto/cloudai.proto, loaded with the project's
 * loadProto), made from inside `end`'s namespace to `target` (host:port): a caller whose address
 * is `end.ip`, not loopback. `metadata` is sent as given (e.g. `cloudai-cluster-token`). Plaintext,
 * or TLS with `tls` (PEM file paths; `cert` and `key` for a client certificate).
 */
export async function nsGrpcCall<T = any>(
  end: NetnsEnd,
  target: string,
  method: string,
  request: object,
  metadata: Record<string, string> = {},
  opts: { timeoutMs?: number; tls?: { ca: string; cert?: string; key?: string; serverName?: string } } = {},
): Promise<NsGrpcResult<T>> {
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(target)
  if (!m) throw new Error(`nsGrpcCall: target ${target} is not host:port`)
  checkTarget(m[1]!, 'nsGrpcCall')
  const timeoutMs = opts.timeoutMs ?? 10_000
  const res = await runClient<({ ok: true } & NsGrpcResult<T>) | { ok: false; error: string }>(
    end, 'nsGrpcCall', { kind: 'grpc', target, method, request, metadata, timeoutMs, tls: opts.tls ?? null }, timeoutMs,
  )
  if (!res.ok) throw new Error(`nsGrpcCall ${method} to ${target} from ${end.name}: ${res.error}`)
  return { code: res.code, details: res.details, response: res.response, metadata: res.metadata }
}
