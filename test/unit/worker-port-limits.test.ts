import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { test } from 'node:test'
import { RawClient } from '../support/grpc-client.js'
import { startAgent } from '../support/agent.js'
import { memoryLogger } from '../support/log.js'

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
  assert.deepEqual(ack, { success: false, message: 'not running on this worker' })
})
