import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, registerWorker, reservePort, startMaster, startWorker, tempDir, waitUntil, type MasterHandle } from '../support/cluster.js'

// GET /api/workers keeps each worker's JSON rendered between requests and streams the list in
// chunks: a stale rendering is the failure to guard against. GET /api/workers/{id} renders the
// worker afresh each time, so the list must show every worker exactly as it does.

interface Listed {
  worker_id: string
  [k: string]: unknown
}

/** The list, and each worker on its own, agree: retried while a heartbeat lands between the two reads. */
async function listMatchesSingles(master: MasterHandle, ids: string[], what: string): Promise<Listed[]> {
  return waitUntil(async () => {
    const res = await fetch(`${master.api}/api/workers`, { signal: AbortSignal.timeout(10_000) })
    const raw = Buffer.from(await res.arrayBuffer())
    assert.equal(res.status, 200)
    assert.equal(Number(res.headers.get('content-length')), raw.length, 'content-length is the size of the body')
    const listed = (JSON.parse(raw.toString('utf8')) as { workers: Listed[] }).workers
    assert.deepEqual(listed.map((w) => w.worker_id).sort(), [...ids].sort(), `the workers listed ${what}`)
    for (const w of listed) {
      const single = (await api<Listed>(master.api, `/api/workers/${w.worker_id}`)).body
      if (JSON.stringify(single) !== JSON.stringify(w)) return false
    }
    return listed
  }, `GET /api/workers to show each worker as GET /api/workers/{id} does ${what}`, 15_000)
}

test('GET /api/workers shows every worker as it is now through connect, heartbeats, a kill, token rotation, unregistration and re-registration at another address', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  const ports = [await reservePort(), await reservePort(), await reservePort()]
  const tokens = [await registerWorker(master.api, 'a', `127.0.0.1:${ports[0]}`), await registerWorker(master.api, 'b', `127.0.0.1:${ports[1]}`)]
  await listMatchesSingles(master, ['a', 'b'], 'after registration')

  const a = await startWorker(t, 'a', ports[0]!, { master: `127.0.0.1:${master.grpcPort}`, token: tokens[0] })
  const first = await waitUntil(async () => {
    const w = (await listMatchesSingles(master, ['a', 'b'], 'while a connects')).find((x) => x.worker_id === 'a')!
    return w.is_active === true && w.last_heartbeat !== null ? w : false
  }, 'a active in the list')
  // Heartbeats every 250 ms: the list must follow them, not show the first one it rendered.
  const later = await waitUntil(async () => {
    const w = (await listMatchesSingles(master, ['a', 'b'], 'under heartbeats')).find((x) => x.worker_id === 'a')!
    return w.last_heartbeat !== first.last_heartbeat && (w.credential as { presented_at: string | null }).presented_at !== null ? w : false
  }, 'a later heartbeat, and the token presented, in the list')
  assert.equal(later.is_active, true)

  // Killed: inactive at the heartbeat timeout, with its disconnection time.
  await a.kill('SIGKILL')
  await waitUntil(async () => (await listMatchesSingles(master, ['a', 'b'], 'after a was killed')).find((w) => w.worker_id === 'a')!.is_active === false, 'a inactive in the list')

  assert.equal((await api(master.api, '/api/workers/b/token', { method: 'POST', body: {} })).status, 201)
  await listMatchesSingles(master, ['a', 'b'], 'after b got a new token')

  assert.equal((await api(master.api, '/api/workers/b', { method: 'DELETE' })).status, 200)
  await listMatchesSingles(master, ['a'], 'after b was unregistered')
  await registerWorker(master.api, 'b', `127.0.0.1:${ports[2]}`)
  const moved = (await listMatchesSingles(master, ['a', 'b'], 'after b came back at another address')).find((w) => w.worker_id === 'b')!
  assert.equal(moved.address, `127.0.0.1:${ports[2]}`)
})
