import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import type { TestContext } from 'node:test'
import { api, childCwd, childEnv, CLI, msgHas, reservePort, startWorker, type LogLine, type MasterHandle, type Proc } from './cluster.js'

// Helpers of the cordon and drain tests (test/integration/cordon.test.ts, drain.test.ts): the
// worker and task views they read, and the calls they make of a real master.

export const FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '2s', '--shutdown-grace', '2s']

export interface WorkerView {
  worker_id: string
  is_active: boolean
  scheduling: 'eligible' | 'cordoned' | 'draining' | 'drained'
  cordoned: boolean
  drain: { started_at: string; deadline: string | null; force: boolean; drained_at: string | null } | null
  running_tasks: { task_id: string }[]
}

export interface TaskView {
  status: string
  worker_id: string | null
  attempts: number
  max_attempts: number
  history: { status: string; worker_id: string | null; reason: string | null }[]
}

export const worker = async (m: MasterHandle, id: string): Promise<WorkerView> => (await api<WorkerView>(m.api, `/api/workers/${id}`)).body
export const task = async (m: MasterHandle, id: string): Promise<TaskView> => (await api<TaskView>(m.api, `/api/tasks/${id}`)).body
export const active = (id: string) => (l: LogLine): boolean => l.workerId === id && msgHas('registered and active')(l)
export const heartbeatPass = (l: LogLine): boolean => l.msg === 'Attempting to reconnect to 1 inactive worker(s)...'

export async function register(m: MasterHandle, id: string, port: number, host = '127.0.0.1'): Promise<void> {
  assert.equal((await api(m.api, '/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: `${host}:${port}` } })).status, 201)
}

export async function addWorker(t: TestContext, m: MasterHandle, id: string): Promise<{ proc: Proc; port: number }> {
  const port = await reservePort()
  await register(m, id, port)
  const from = m.proc.mark()
  const proc = await startWorker(t, id, port)
  await m.proc.waitForLog(active(id), `${id} active`, { from })
  return { proc, port }
}

export async function submit(m: MasterHandle, body: Record<string, unknown>): Promise<string> {
  const res = await api(m.api, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

export async function post(m: MasterHandle, path: string, body: unknown = {}): Promise<{ status: number; body: any }> {
  return api(m.api, path, { method: 'POST', body })
}

/** The CLI as a child whose output the test reads as it comes (runCli gives it only at the end). */
export function startCli(t: TestContext, args: string[]): { out: { stdout: string; stderr: string }; exited: Promise<number | null>; child: ChildProcess } {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  const out = { stdout: '', stderr: '' }
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out.stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out.stderr += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return { out, exited, child }
}

/** Waits for `n` reconnection passes of the master (a ghost worker keeps them coming): time going by, as an event. */
export async function passes(m: MasterHandle, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await m.proc.waitForLog(heartbeatPass, `reconnection pass ${i + 1}`, { from: m.proc.mark() })
}

