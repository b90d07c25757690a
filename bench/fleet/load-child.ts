// One heartbeat load-generator process (heartbeat-ingest): its share of the simulated workers,
// each with its own connection, registered with the target, sending SendHeartbeat calls or
// StreamHeartbeats messages open-loop at the rate the parent asks for. Several of these run at once
// so that the generator, not the server under test, is never the limit of a single event loop.
// IPC: {type:'setup'} -> {ok}; {type:'step', rate, stepMs} -> {sent, answered, errors, latencies};
// {type:'stop'} -> exit.
import { setTimeout as sleep } from 'node:timers/promises'
import * as grpc from '@grpc/grpc-js'
import { loadProto, type MasterWorkerClient } from '../../src/shared/proto.js'
import type { HeartbeatMsg } from '../../src/shared/wire.js'

export type LoadCommand =
  | { type: 'setup'; address: string; ids: string[]; firstPort: number; transport: 'unary' | 'stream' }
  | { type: 'step'; rate: number; stepMs: number }
  | { type: 'stop' }

export type LoadReply =
  | { type: 'ready' }
  | { type: 'step'; sent: number; answered: number; errors: number; latencies: number[] }
  | { type: 'error'; error: string }

const proto = loadProto()
let clients: MasterWorkerClient[] = []
let streams: grpc.ClientDuplexStream<HeartbeatMsg, unknown>[] = []
let ids: string[] = []
let transport: 'unary' | 'stream' = 'unary'
let streamErrors = 0

function heartbeat(id: string, k: number): HeartbeatMsg {
  return { worker_id: id, cpu_usage: (k * 7) % 100, memory_usage: 40 + (k % 20), storage_usage: 55, gpu_usage: (k * 3) % 100, running_tasks: [] }
}

/** Sends `rate`/s for `stepMs`, open-loop, calling `send(i)` for the i-th message. */
async function openLoop(rate: number, stepMs: number, send: (i: number) => void): Promise<number> {
  const t0 = performance.now()
  const total = Math.floor((rate * stepMs) / 1000)
  let sent = 0
  for (;;) {
    const elapsed = performance.now() - t0
    const due = Math.min(Math.floor((rate * Math.min(elapsed, stepMs)) / 1000), total)
    while (sent < due) send(sent++)
    if (elapsed >= stepMs) return sent
    await new Promise((r) => setImmediate(r))
    if (performance.now() - t0 - elapsed < 1) await sleep(1)
  }
}

async function setup(cmd: Extract<LoadCommand, { type: 'setup' }>): Promise<void> {
  ids = cmd.ids
  transport = cmd.transport
  clients = ids.map(() => new proto.Client(cmd.address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }))
  // The master refuses heartbeats of workers it does not know.
  await Promise.all(ids.map((id, i) => new Promise<void>((resolve, reject) => {
    clients[i]!.RegisterWorker({ worker_id: id, worker_ip: `127.0.0.1:${cmd.firstPort + i}`, total_cpu: 8, total_memory: 32, total_storage: 500, total_gpu: 1 }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err) => (err ? reject(err) : resolve()))
  })))
  if (transport === 'stream') {
    streams = clients.map((c) => {
      const s = c.StreamHeartbeats()
      s.on('error', () => streamErrors++)
      s.on('data', () => {})
      return s
    })
  }
}

async function step(rate: number, stepMs: number): Promise<LoadReply> {
  let answered = 0
  let errors = 0
  const latencies: number[] = []
  const errorsBefore = streamErrors
  if (transport === 'stream') {
    const sent = await openLoop(rate, stepMs, (i) => void streams[i % ids.length]!.write(heartbeat(ids[i % ids.length]!, i)))
    return { type: 'step', sent, answered: sent, errors: streamErrors - errorsBefore, latencies }
  }
  const sent = await openLoop(rate, stepMs, (i) => {
    const t = performance.now()
    clients[i % ids.length]!.SendHeartbeat(heartbeat(ids[i % ids.length]!, i), new grpc.Metadata(), { deadline: Date.now() + 5000 }, (err) => {
      if (err) errors++
      else {
        answered++
        latencies.push(performance.now() - t)
      }
    })
  })
  const deadline = performance.now() + 5500
  while (answered + errors < sent && performance.now() < deadline) await sleep(5)
  return { type: 'step', sent, answered, errors, latencies }
}

process.on('message', (cmd: LoadCommand) => {
  if (cmd.type === 'stop') {
    for (const s of streams) s.end()
    for (const c of clients) c.close()
    process.exit(0)
  }
  const work = cmd.type === 'setup' ? setup(cmd).then((): LoadReply => ({ type: 'ready' })) : step(cmd.rate, cmd.stepMs)
  work.then((r) => process.send!(r), (err: Error) => process.send!({ type: 'error', error: err.message } satisfies LoadReply))
})
process.on('disconnect', () => process.exit(0))
