import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { RawClient } from '../support/grpc-client.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'
import { startWorker } from '../support/cluster.js'
import { createNetPair, netnsUnavailable, nsRun } from '../support/netns.js'

// A worker's gRPC port has the master's bounds (src/shared/grpc-listener.ts): anyone who can reach
// it must not be able to hold its descriptors until its master can no longer reach it.

function open(port: number): Promise<{ socket: Socket; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve({ socket, closed: new Promise((r) => socket.once('close', () => r())) }))
    socket.on('error', () => {})
    socket.once('error', reject)
  })
}

test("connections past a worker's limit are closed at once, silent ones at the preface timeout, and its master still gets through", { timeout: 30_000 }, async (t) => {
  const { log, lines } = memoryLogger('debug')
  const agent = await startAgent(t, {}, log, { limits: { maxConnections: 4, prefaceTimeoutMs: 400 } })
  const flood = await Promise.all(Array.from({ length: 10 }, () => open(agent.port)))
  t.after(() => { for (const f of flood) f.socket.destroy() })
  // Every one of them closes: six past the limit at once, the four it took at the preface timeout.
  const t0 = performance.now()
  await Promise.all(flood.map((f) => f.closed))
  assert.ok(performance.now() - t0 < 5_000, 'closed by the preface timeout, not by keepalive or TCP')
  assert.ok(lines.some((l) => String(l.msg).startsWith("Refused a gRPC connection: 4 are open, the worker's 4-connection limit")), 'the refusal is logged')
  // Room again: a caller on this machine (the tokenless worker's master) is served.
  const client = new RawClient(t, `127.0.0.1:${agent.port}`)
  const ack = await client.call<{ success: boolean; message: string }>('CancelTask', { task_id: 'task-none' })
  assert.deepEqual(ack, { success: false, message: 'not running on this worker', held_attempt: 0 })
})

test('one address off the machine gets at most 8 of a worker\'s connections; the rest stay for its master', { timeout: 60_000 }, async (t) => {
  const reason = await netnsUnavailable()
  if (reason) {
    t.skip(reason)
    return
  }
  const pair = await createNetPair(t)
  const worker = await startWorker(t, 'w-peer', 50052, { netns: pair.a })
  // From namespace B: 12 connections at once; those past the per-address bound are closed at once.
  const script = `
    const net = require('node:net'); let closed = 0, opened = 0; const socks = []
    const done = () => { console.log(JSON.stringify({ opened, closed })); for (const s of socks) s.destroy(); process.exit(0) }
    const deadline = setTimeout(done, 5000)
    for (let i = 0; i < 12; i++) {
      const s = net.connect(50052, ${JSON.stringify(pair.a.ip)}, () => opened++)
      s.on('error', () => {}); s.on('close', () => { if (++closed === 4) { clearTimeout(deadline); setTimeout(done, 300) } }); socks.push(s)
    }`
  const r = await nsRun(pair.b, [process.execPath, '-e', script])
  assert.equal(r.code, 0, r.stderr)
  assert.deepEqual(JSON.parse(r.stdout), { opened: 12, closed: 4 }, 'four past the bound of 8, and no more')
  await worker.waitForLog((l) => String(l.msg).startsWith(`Refused a gRPC connection from ${pair.b.ip}: it has 8 open`), 'the per-address refusal logged')
})
