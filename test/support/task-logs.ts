import { ContractViolation, logEventViolation } from './contract.js'
import assert from 'node:assert/strict'
import type { TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { LogChunkMsg, TaskLogRequestMsg } from '../../src/shared/wire.js'
import { api, reservePort, startMaster, startWorker, tempDir, waitUntil, type MasterHandle, type Proc } from './cluster.js'

// Helpers of the task-log tests: a master with one worker, submissions, readers of
// GET /api/tasks/{id}/logs (NDJSON and SSE), and a raw StreamTaskLogs client of a worker.

export interface Ev { type: string; seq: number; stream?: string; text?: string; missed?: number; complete?: boolean; status?: string; exit_code?: number | null }

export const SLOW = (n: number, exit = 0): string => `for i in $(seq 1 ${n}); do echo line-$i; sleep 0.1; done; exit ${exit}`

export async function cluster(t: TestContext, workerDataDir?: string): Promise<{ master: MasterHandle; workerPort: number; worker: Proc }> {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const workerPort = await reservePort()
  await register(master, workerPort)
  const worker = await startWorker(t, 'w1', workerPort, { master: `127.0.0.1:${master.grpcPort}`, ...(workerDataDir ? { dataDir: workerDataDir } : {}) })
  await waitUntil(async () => (await api(master.api, '/api/workers/w1')).body?.is_active === true, 'w1 active')
  return { master, workerPort, worker }
}

export async function register(master: MasterHandle, port: number): Promise<void> {
  assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: 'w1', worker_ip: `127.0.0.1:${port}` } })).status, 201)
}

export async function submit(base: string, command: string): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body: { command } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

/** Reads an NDJSON logs response to its end; `onEvent` sees each event as it arrives. */
export async function ndjson(base: string, id: string, query: string, onEvent?: (e: Ev) => void | Promise<void>): Promise<Ev[]> {
  const res = await fetch(`${base}/api/tasks/${id}/logs${query}`, { headers: { accept: 'application/x-ndjson' }, signal: AbortSignal.timeout(30_000) })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /application\/x-ndjson/)
  const events: Ev[] = []
  let buf = ''
  const decoder = new TextDecoder()
  for await (const piece of res.body!) {
    buf += decoder.decode(piece as Uint8Array, { stream: true })
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (line.trim() === '') continue
      const e = JSON.parse(line) as Ev
      assertLogEvent(e)
      events.push(e)
      await onEvent?.(e)
    }
  }
  return events
}

/** Reads a Server-Sent Events logs response to its end: [id, event, data] per event. */
export async function sse(base: string, id: string, query: string, headers: Record<string, string> = {}): Promise<{ id: string | null; event: string; data: Ev }[]> {
  const res = await fetch(`${base}/api/tasks/${id}/logs${query}`, { headers, signal: AbortSignal.timeout(30_000) })
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/)
  const text = await res.text()
  const out: { id: string | null; event: string; data: Ev }[] = []
  for (const block of text.split('\n\n')) {
    let idField: string | null = null
    let event = 'message'
    let data: string | null = null
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) idField = line.slice(4)
      else if (line.startsWith('event: ')) event = line.slice(7)
      else if (line.startsWith('data: ')) data = line.slice(6)
    }
    if (data !== null) {
      const e = JSON.parse(data) as Ev
      assertLogEvent(e)
      out.push({ id: idField, event, data: e })
    }
  }
  return out
}

/** Each event a test reads off a log stream is one the OpenAPI document promises. */
function assertLogEvent(e: unknown): void {
  const violation = logEventViolation(e)
  if (violation) throw new ContractViolation(violation)
}

export const lines = (events: Ev[]): Ev[] => events.filter((e) => e.type === 'line')

export function streamLogs(client: MasterWorkerClient, req: Partial<TaskLogRequestMsg>, md = new grpc.Metadata()): grpc.ClientReadableStream<LogChunkMsg> {
  return client.StreamTaskLogs({ task_id: '', user_id: '', follow: false, from_seq: 0, tail: 0, ...req }, md, { deadline: Date.now() + 30_000 })
}

export function collect(call: grpc.ClientReadableStream<LogChunkMsg>): Promise<{ chunks: LogChunkMsg[]; status: grpc.StatusObject }> {
  const chunks: LogChunkMsg[] = []
  return new Promise((resolve) => {
    call.on('data', (c: LogChunkMsg) => chunks.push(c))
    call.on('error', () => {})
    call.on('status', (status) => resolve({ chunks, status }))
  })
}

export function client(t: TestContext, port: number): MasterWorkerClient {
  const c = new (loadProto().Client)(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  t.after(() => c.close())
  return c
}
