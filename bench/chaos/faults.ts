import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { childCwd, childEnv } from '../../test/support/cluster.js'
import { ChaosCluster, type WorkerSlot } from './cluster.js'
import type { Random } from './random.js'
import { makeAllWritable, makeReadOnly, makeWritable } from './readonly-dir.js'

// The fault injectors. Each fault is injected, held, cleared (the process restarted, SIGCONT, the
// lock released, the directory writable, the link up), and then the suite waits for recovery,
// one fault at a time. Recovery, per kind:
//   worker-kill, worker-pause-*, partition: that worker active again on the master with a
//     heartbeat after the fault was cleared;
//   master-kill: the new master's API answers and every worker is active with a heartbeat after
//     its start;
//   store-lock, master-kill-in-outage, store-readonly: /healthz says the store is `ok` with
//     nothing journalled, and every worker is active with a heartbeat after the clear.
// The recovery time is measured from the clear (the fault's own length is `heldMs`).

export const FAULT_KINDS = ['worker-kill', 'master-kill', 'worker-pause-short', 'worker-pause-long', 'store-lock', 'master-kill-in-outage', 'store-readonly', 'partition'] as const
export type FaultKind = (typeof FAULT_KINDS)[number]

export interface FaultRecord {
  kind: FaultKind
  target: string
  injectedAt: number
  clearedAt: number
  heldMs: number
  recoveredAt: number | null
  /** From the clear to recovery; null when it did not recover within the deadline. */
  recoveryMs: number | null
  /** Not recovered in time: the suite restarted the process to go on. */
  healed: boolean
  note: string
}

export interface FaultContext {
  cluster: ChaosCluster
  rng: Random
  heartbeatTimeoutMs: number
  recoveryTimeoutMs: number
}

/** A fault being held: what clears it and the check that says it has recovered. */
interface Injected {
  target: string
  note: string
  clear(): Promise<void>
  recovered(clearedAt: number): Promise<boolean>
  /** Restarts what did not recover (the master, or the worker) so the run can go on. */
  heal(): Promise<void>
}

function liveWorkers(cluster: ChaosCluster): WorkerSlot[] {
  return cluster.workers.filter((w) => w.proc !== null && !w.stopped)
}

async function workerBack(cluster: ChaosCluster, slot: WorkerSlot, since: number): Promise<boolean> {
  const views = await cluster.workerViews()
  return views !== null && ChaosCluster.freshlyActive(views.get(slot.id), since)
}

async function storeHealthy(cluster: ChaosCluster): Promise<boolean> {
  if (!cluster.master) return false
  try {
    const res = await cluster.request('GET', '/healthz', undefined, 3000)
    return res.body?.store?.status === 'ok' && res.body?.store?.backlog === 0
  } catch {
    return false
  }
}

async function restartWorker(cluster: ChaosCluster, slot: WorkerSlot): Promise<void> {
  await cluster.killWorker(slot)
  await cluster.startWorker(slot)
}

async function restartMaster(ctx: FaultContext): Promise<void> {
  if (ctx.cluster.master && !(await storeHealthy(ctx.cluster))) ctx.cluster.killedWhileDegraded.add(ctx.cluster.masterStarts)
  await ctx.cluster.killMaster()
  await ctx.cluster.startMaster(ctx.recoveryTimeoutMs)
}

/** Lockers not released yet (a run that failed part way through a fault), for clearLeftovers. */
const lockers = new Set<ChildProcess>()

/** The store's write lock held by another process (bench/chaos/store-locker.ts). */
async function lockStore(dbPath: string): Promise<ChildProcess> {
  const locker = spawn(process.execPath, [new URL('./store-locker.js', import.meta.url).pathname, dbPath], { cwd: childCwd(), env: childEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  lockers.add(locker)
  locker.once('exit', () => lockers.delete(locker))
  let out = ''
  let err = ''
  locker.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  locker.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d))
  const deadline = Date.now() + 15_000
  while (!out.includes('locked')) {
    if (locker.exitCode !== null || Date.now() > deadline) {
      locker.kill('SIGKILL')
      throw new Error(`the store locker did not take the lock: ${err.slice(-1000)}`)
    }
    await sleep(20)
  }
  return locker
}

async function releaseStore(locker: ChildProcess): Promise<void> {
  if (locker.exitCode !== null || locker.signalCode !== null) return
  const exited = new Promise((resolve) => locker.once('exit', resolve))
  locker.stdin!.end('release\n')
  const timer = setTimeout(() => locker.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

const INJECTORS: Record<FaultKind, (ctx: FaultContext, holdMs: number) => Promise<Injected>> = {
  'worker-kill': async ({ cluster, rng }) => {
    const slot = rng.pick(liveWorkers(cluster))
    await cluster.killWorker(slot)
    const downMs = rng.int(1000, 6000)
    const seen = await holdWatchingWorker(cluster, slot, downMs)
    return {
      target: slot.id,
      note: `down ${downMs} ms (${seen}), restarted on its data dir`,
      clear: () => cluster.startWorker(slot),
      recovered: (since) => workerBack(cluster, slot, since),
      heal: () => restartWorker(cluster, slot),
    }
  },
  'master-kill': async (ctx) => {
    const { cluster } = ctx
    await cluster.killMaster()
    return {
      target: 'master',
      note: 'restarted at once on its data dir',
      clear: () => cluster.startMaster(ctx.recoveryTimeoutMs),
      recovered: (since) => cluster.allActive(since),
      heal: () => restartMaster(ctx),
    }
  },
  'worker-pause-short': async ({ cluster, rng }, holdMs) => {
    const slot = rng.pick(liveWorkers(cluster))
    cluster.pauseWorker(slot, true)
    const seen = await holdWatchingWorker(cluster, slot, holdMs)
    return {
      target: slot.id,
      note: `SIGSTOP for ${holdMs} ms, under the heartbeat timeout (${seen})`,
      clear: async () => cluster.pauseWorker(slot, false),
      recovered: (since) => workerBack(cluster, slot, since),
      heal: () => restartWorker(cluster, slot),
    }
  },
  'worker-pause-long': async ({ cluster, rng }, holdMs) => {
    const slot = rng.pick(liveWorkers(cluster))
    cluster.pauseWorker(slot, true)
    const seen = await holdWatchingWorker(cluster, slot, holdMs)
    return {
      target: slot.id,
      note: `SIGSTOP for ${holdMs} ms, over the heartbeat timeout (${seen})`,
      clear: async () => cluster.pauseWorker(slot, false),
      recovered: (since) => workerBack(cluster, slot, since),
      heal: () => restartWorker(cluster, slot),
    }
  },
  'store-lock': async (ctx, holdMs) => {
    const { cluster } = ctx
    const locker = await lockStore(join(cluster.masterDir, 'cloudai.db'))
    const degraded = await holdWatchingStore(cluster, holdMs)
    return {
      target: 'store',
      note: `write lock held by another process for ${holdMs} ms; the master ${degraded ? 'reported the store degraded' : 'never reported the store degraded'}`,
      clear: () => releaseStore(locker),
      recovered: async (since) => (await storeHealthy(cluster)) && (await cluster.allActive(since)),
      heal: () => restartMaster(ctx),
    }
  },
  // A crash during a store outage: what the master acknowledged meanwhile (completions above all)
  // must survive it, or be reported again by the workers (issue 16, finding 3).
  'master-kill-in-outage': async (ctx, holdMs) => {
    const { cluster } = ctx
    const t0 = Date.now()
    const locker = await lockStore(join(cluster.masterDir, 'cloudai.db'))
    const degraded = await holdWatchingStore(cluster, Math.round(holdMs / 2))
    if (!(await storeHealthy(cluster))) cluster.killedWhileDegraded.add(cluster.masterStarts)
    await cluster.killMaster()
    let started = 'came up with the store still locked'
    try {
      await cluster.startMaster(Math.min(Math.round(holdMs / 2), 5000))
    } catch {
      started = 'did not come up while the store was locked'
    }
    // The new master gets at least a second on the locked store (to accept, and to acknowledge completions).
    await holdWatchingStore(cluster, Math.max(1000, holdMs - (Date.now() - t0)))
    return {
      target: 'master',
      note: `write lock held for ${holdMs} ms; the master ${degraded ? 'reported the store degraded' : 'never reported the store degraded'}, was killed -9 half way and ${started}`,
      clear: async () => {
        await releaseStore(locker)
        if (!cluster.master) await cluster.startMaster(ctx.recoveryTimeoutMs)
      },
      recovered: async (since) => (await storeHealthy(cluster)) && (await cluster.allActive(since)),
      heal: () => restartMaster(ctx),
    }
  },
  'store-readonly': async (ctx, holdMs) => {
    const { cluster } = ctx
    await makeReadOnly(cluster.masterDir)
    // The master's open files stay writable through their old mount; what a read-only directory
    // refuses is a new open for writing. So the master is killed and started on it, as after a
    // crash: it must refuse to start, or come up and recover once the directory is writable.
    await cluster.killMaster()
    let started = 'came up on the read-only directory'
    try {
      await cluster.startMaster(Math.min(holdMs, 3000))
    } catch {
      started = 'did not come up on the read-only directory'
    }
    const degraded = await holdWatchingStore(cluster, holdMs)
    return {
      target: 'store',
      note: `data dir read-only for ${holdMs} ms with the master killed and started on it; the master ${started}${cluster.master ? (degraded ? ' (store degraded)' : ' (store never reported degraded)') : ''}`,
      clear: async () => {
        await makeWritable(cluster.masterDir)
        if (!cluster.master) await cluster.startMaster(ctx.recoveryTimeoutMs)
      },
      recovered: async (since) => (await storeHealthy(cluster)) && (await cluster.allActive(since)),
      heal: () => restartMaster(ctx),
    }
  },
  partition: async ({ cluster }, holdMs) => {
    const slot = cluster.partitionedWorker
    if (!slot) throw new Error('no partitioned worker')
    await cluster.cut()
    const seen = await holdWatchingWorker(cluster, slot, holdMs)
    return {
      target: slot.id,
      note: `veth down for ${holdMs} ms (${seen})`,
      clear: () => cluster.restore(),
      recovered: (since) => workerBack(cluster, slot, since),
      heal: () => restartWorker(cluster, slot),
    }
  },
}

/** Undoes what a fault left behind when the run stopped part way: lockers killed, directories writable. */
export async function clearLeftovers(): Promise<void> {
  for (const locker of lockers) locker.kill('SIGKILL')
  lockers.clear()
  await makeAllWritable()
}

/** Holds for `holdMs`, asking the master meanwhile; true if it showed the worker inactive. */
async function holdWatchingWorker(cluster: ChaosCluster, slot: WorkerSlot, holdMs: number): Promise<string> {
  const until = Date.now() + holdMs
  let inactive = false
  while (Date.now() < until) {
    if (!inactive) inactive = (await cluster.workerViews())?.get(slot.id)?.is_active === false
    await sleep(Math.max(0, Math.min(250, until - Date.now())))
  }
  return inactive ? 'the master showed it inactive' : 'the master kept it active'
}

/** Holds for `holdMs`, asking /healthz meanwhile; true if the store was reported degraded. */
async function holdWatchingStore(cluster: ChaosCluster, holdMs: number): Promise<boolean> {
  const until = Date.now() + holdMs
  let degraded = false
  while (Date.now() < until) {
    if (cluster.master && !degraded) {
      try {
        const res = await cluster.request('GET', '/healthz', undefined, 2000)
        if (res.body?.store?.status === 'degraded') degraded = true
      } catch {
        // Not answering: asked again.
      }
    }
    await sleep(Math.max(0, Math.min(250, until - Date.now())))
  }
  return degraded
}

/** How long each kind is held (ms), from the heartbeat timeout: under it, or well over it. */
export function holdFor(kind: FaultKind, rng: Random, heartbeatTimeoutMs: number): number {
  switch (kind) {
    case 'worker-pause-short':
      return Math.round(heartbeatTimeoutMs * (0.3 + 0.3 * rng.next()))
    case 'worker-pause-long':
    case 'partition':
      return Math.round(heartbeatTimeoutMs * (1.5 + 0.5 * rng.next()))
    case 'store-lock':
    case 'master-kill-in-outage':
    case 'store-readonly':
      return Math.round(heartbeatTimeoutMs * (1 + 0.5 * rng.next()))
    default:
      return 0
  }
}

/** Injects one fault of `kind`, holds it, clears it and waits for recovery (healing what does not recover in time). */
export async function runFault(kind: FaultKind, ctx: FaultContext): Promise<FaultRecord> {
  const holdMs = holdFor(kind, ctx.rng, ctx.heartbeatTimeoutMs)
  const injectedAt = Date.now()
  const f = await INJECTORS[kind](ctx, holdMs)
  const clearedAt = Date.now()
  await f.clear()
  const deadline = clearedAt + ctx.recoveryTimeoutMs
  let recoveredAt: number | null = null
  while (Date.now() <= deadline) {
    if (await f.recovered(clearedAt)) {
      recoveredAt = Date.now()
      break
    }
    await sleep(100)
  }
  let healed = false
  if (recoveredAt === null) {
    healed = true
    await f.heal()
  }
  return { kind, target: f.target, injectedAt, clearedAt, heldMs: clearedAt - injectedAt, recoveredAt, recoveryMs: recoveredAt === null ? null : recoveredAt - clearedAt, healed, note: f.note }
}
