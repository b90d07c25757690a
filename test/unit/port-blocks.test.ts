import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { childCwd, childEnv, PORT_BLOCKS, ROOT } from '../support/cluster.js'

// reservePort's promise: each test process picks from a block no other one can pick while it
// runs. Two processes holding ports at the same time must be in different blocks of 100.

const SUPPORT = pathToFileURL(join(ROOT, 'dist', 'test', 'support', 'cluster.js')).href

/** A process that reserves `n` ports, prints them, and holds its block until it is killed. */
function holder(n: number): { proc: ChildProcess; ports: Promise<number[]> } {
  const proc = spawn(process.execPath, ['--input-type=module', '-e', `
    import { reservePort } from ${JSON.stringify(SUPPORT)}
    const ports = []
    for (let i = 0; i < ${n}; i++) ports.push(await reservePort())
    console.log(JSON.stringify(ports))
    setInterval(() => {}, 60_000)
  `], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'inherit'] })
  const ports = new Promise<number[]>((resolve, reject) => {
    let out = ''
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d
      if (out.includes('\n')) resolve(JSON.parse(out) as number[])
    })
    proc.once('exit', (code) => reject(new Error(`the holder exited with ${code} before printing its ports`)))
  })
  return { proc, ports }
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const exited = once(proc, 'exit')
  proc.kill('SIGKILL')
  await exited
}

test('test processes running at once reserve ports from different blocks', async (t) => {
  const a = holder(3)
  t.after(() => stop(a.proc))
  const portsA = await a.ports
  const b = holder(3)
  t.after(() => stop(b.proc))
  const portsB = await b.ports
  const block = (p: number): number => Math.floor((p - PORT_BLOCKS.first) / PORT_BLOCKS.size)
  for (const p of [...portsA, ...portsB]) assert.ok(p >= PORT_BLOCKS.first && p < PORT_BLOCKS.first + PORT_BLOCKS.count * PORT_BLOCKS.size, `port ${p} is below the ephemeral range`)
  assert.equal(new Set(portsA.map(block)).size, 1, `one process's ports come from its one block: ${portsA}`)
  assert.equal(new Set(portsB.map(block)).size, 1, `one process's ports come from its one block: ${portsB}`)
  assert.notEqual(block(portsA[0]!), block(portsB[0]!), `two processes share no block: ${portsA} / ${portsB}`)
  assert.equal(new Set([...portsA, ...portsB]).size, 6)

  // A third, after the first was killed (the kernel drops its lock), still never gets the second's block.
  await stop(a.proc)
  const c = holder(1)
  t.after(() => stop(c.proc))
  const [portC] = await c.ports
  assert.notEqual(block(portC!), block(portsB[0]!), 'a block still held is never handed out')
})
