import assert from 'node:assert/strict'
import { test } from 'node:test'
import { api, reservePort, startMaster, startWorker, taskFinished, tempDir, waitUntil } from '../support/cluster.js'

// Placement with real processes: a master and two workers on loopback, one of them killed with -9.

interface WorkerView {
  worker_id: string
  is_active: boolean
  suspect: boolean
  suspect_reason: string | null
}

interface TaskView {
  task_id: string
  status: string
  worker_id: string | null
  attempts: number
  history: { status: string; worker_id: string | null }[]
}

// A heartbeat timeout long enough that the dead worker stays active (and suspect) for the whole test.
const FLAGS = ['--reconnect-interval', '300ms', '--dial-timeout', '1s', '--heartbeat-timeout', '60s', '--shutdown-grace', '2s']

const worker = async (base: string, id: string): Promise<WorkerView> => (await api<WorkerView>(base, `/api/workers/${id}`)).body
const task = async (base: string, id: string): Promise<TaskView> => (await api<TaskView>(base, `/api/tasks/${id}`)).body

async function submit(base: string, body: object): Promise<string> {
  const res = await api(base, '/api/tasks', { method: 'POST', body })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  return res.body.task_id as string
}

test('a worker killed with -9 is suspect at its first failed AssignTask: its tasks run on the other worker with one attempt each, and once restarted it is active again and gets work', { timeout: 60_000 }, async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: FLAGS })
  const ports = [await reservePort(), await reservePort()]
  for (const [i, port] of ports.entries()) {
    assert.equal((await api(master.api, '/api/workers', { method: 'POST', body: { worker_id: `worker-${i + 1}`, worker_ip: `127.0.0.1:${port}` } })).status, 201)
  }
  const dataDir = tempDir(t, 'cloudai-worker-1-')
  const w1 = await startWorker(t, 'worker-1', ports[0]!, { dataDir })
  await startWorker(t, 'worker-2', ports[1]!)
  await waitUntil(async () => (await worker(master.api, 'worker-1')).is_active && (await worker(master.api, 'worker-2')).is_active, 'both workers active')

  await w1.kill('SIGKILL')
  const ids: string[] = []
  for (let i = 0; i < 6; i++) ids.push(await submit(master.api, { command: `echo run-${i}` }))
  for (const id of ids) await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
  let triedDead = 0
  for (const id of ids) {
    const v = await task(master.api, id)
    assert.equal(v.status, 'completed', id)
    assert.equal(v.worker_id, 'worker-2', id)
    assert.equal(v.attempts, 1, `${id}: the placement on the dead worker spent no attempt`)
    const onDead = v.history.filter((h) => h.status === 'assigned' && h.worker_id === 'worker-1').length
    assert.ok(onDead <= 1, `${id} was assigned to the dead worker ${onDead} times`)
    triedDead += onDead
  }
  assert.ok(triedDead >= 1, 'the master did try the dead worker (it did not know yet)')
  const dead = await worker(master.api, 'worker-1')
  assert.equal(dead.is_active, true, 'the heartbeat timeout has not passed')
  assert.equal(dead.suspect, true)
  assert.match(dead.suspect_reason ?? '', /AssignTask failed/)
  assert.equal(master.proc.lines.filter((l) => l.workerId === 'worker-1' && typeof l.msg === 'string' && l.msg.includes(' is suspect: ')).length, 1, 'logged once')
  const metrics = await (await fetch(`${master.api}/metrics`)).text()
  assert.match(metrics, /^cloudai_workers_suspect 1$/m)

  // Restarted on its address (it does not join on its own): the probe's MasterRegister brings it back.
  await startWorker(t, 'worker-1', ports[0]!, { dataDir, name: 'worker-1 again' })
  await waitUntil(async () => !(await worker(master.api, 'worker-1')).suspect, 'worker-1 no longer suspect')
  assert.equal((await worker(master.api, 'worker-1')).is_active, true)
  const more = [await submit(master.api, { command: 'echo again-1' }), await submit(master.api, { command: 'echo again-2' })]
  for (const id of more) await master.proc.waitForLog(taskFinished(id), `task ${id} finished`, { timeoutMs: 30_000 })
  const where = await Promise.all(more.map(async (id) => (await task(master.api, id)).worker_id))
  assert.ok(where.includes('worker-1'), `the restarted worker got work: ${where.join(', ')}`)
})

test('a task whose image is not a reference docker takes is refused at submission with 400 and a code, never queued', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t) })
  for (const image of ['--privileged', 'Alpine:3', 'alpine:']) {
    const res = await api(master.api, '/api/tasks', { method: 'POST', body: { docker_image: image, command: 'true' } })
    assert.equal(res.status, 400, `${image}: ${JSON.stringify(res.body)}`)
    assert.equal(res.body.error.code, 'CLOUDAI_BAD_FIELD', image)
  }
  assert.equal((await api(master.api, '/api/tasks')).body.total, 0)
})
