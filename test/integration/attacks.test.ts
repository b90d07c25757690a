import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import WebSocket from 'ws'
import { masterProof, type MasterMethod } from '../../src/shared/worker-credential.js'
import { startCloudaiWorker } from '../support/cloudai-peers.js'
import { api, FAST_MASTER_FLAGS, registerWorker, startMaster, startWorker, taskFinished, tempDir, waitUntil, type LogLine, type MasterHandle, type Proc } from '../support/cluster.js'
import { RawClient, type Method } from '../support/grpc-client.js'
import { createNetPair, netnsUnavailable, nsFetch, nsGrpcCall, type NetPair } from '../support/netns.js'
import { parsePrometheus, promValue } from '../support/prometheus.js'
import { RawHttp } from '../support/raw-http.js'

// Issue 15's findings, each one test against real `cloudai` processes, made from where an attacker
// stands: another machine (network namespace A) or this machine (loopback), holding what the
// finding says it holds. Nothing here reaches into a process; what a refused attack did not do is
// read from the API, the logs, the files a task would have written, and what the real workers do
// afterwards. The unit and integration tests of each mechanism (identity, grpc-limits, http-guard,
// heartbeat-reconcile) test its edges; this file is the list of attacks, end to end.
//
// The gRPC findings (a-f) run against one shape of cluster, the README's "one machine" in
// namespace B, on the defaults but for ports and short intervals: a master on 0.0.0.0:50051 (HTTP
// API on 127.0.0.1), worker-1 without a token (the quick start, --master 127.0.0.1:50051) and
// worker-2 with its token, both on 0.0.0.0. Each worker runs a task that waits for the test to let
// it finish. The attacker holds the token of worker-3, registered but never started (a worker of
// the cluster, or whoever got hold of one token), and calls from each of POSITIONS. On the machine
// it goes for worker-2 only: a worker without a token serves callers on its own machine by design.
// Then the tasks are let go, and the cluster must be unharmed: each task ran once, to its end, on
// its worker, with its result at the real master; each worker is active with its own specs. With
// --cluster-token (g) all of it again, every process and the attacker holding the cluster token.
// One cluster per mode takes the findings one after the other, each with running tasks of its own:
// a finding must leave the cluster unharmed for the next one too, and a cluster set up per finding
// was most of this file's time.

/** What a raw call from the attacker is refused with: gRPC status and cloudai code. */
const PROOF_REQUIRED = [16, 'CLOUDAI_MASTER_PROOF_REQUIRED'] as const
const TOKEN_REQUIRED = [16, 'CLOUDAI_WORKER_TOKEN_REQUIRED'] as const
const WRONG_WORKER = [7, 'CLOUDAI_WRONG_WORKER'] as const

type VictimId = 'worker-1' | 'worker-2'
/** Ports in namespace B (fresh, so nothing else holds them). */
const MASTER_PORT = 50051
const PORT: Record<VictimId, number> = { 'worker-1': 50052, 'worker-2': 50053 }
const CLUSTER_TOKEN = 'attack-suite-cluster-token-0123456789'

interface Position {
  who: string
  /** Namespace A (another machine, B's address) or namespace B's loopback (this machine). */
  from: 'network' | 'machine'
  /** None, or worker-3's token (`authorization`) and, towards a worker, a "proof" made with it. */
  creds: 'none' | 'own token'
  /** worker-1 has no token (loopback is its protection), worker-2 has one (the master's proof is). */
  victim: VictimId
}

const POSITIONS: Position[] = [
  { who: 'from another machine, with nothing', from: 'network', creds: 'none', victim: 'worker-1' },
  { who: 'from another machine, with a worker token of its own', from: 'network', creds: 'own token', victim: 'worker-1' },
  { who: 'on the machine, with nothing', from: 'machine', creds: 'none', victim: 'worker-2' },
  { who: 'on the machine, with a worker token of its own', from: 'machine', creds: 'own token', victim: 'worker-2' },
]

interface Finding {
  id: string
  title: string
  method: Method
  /** The attacker's message against `victim` (its id, its running task); `n` tells the positions' calls apart. */
  request: (c: Cluster, victim: Victim, n: number) => Record<string, unknown>
  /** Calls per position (the heartbeats: two misses requeued a task). */
  times?: number
  /** Past what the cluster must always be (see unharmed()): what this finding must also not have done. */
  check?: (c: Cluster) => Promise<void>
}

const FINDINGS: Finding[] = [
  {
    id: 'a', title: 'AssignTask{command: "id > pwned"} from whoever reaches a worker\'s port is refused, and nothing runs',
    method: 'AssignTask',
    request: (c, _v, n) => ({ task_id: `task-pwned-${n}`, command: `id > ${c.pwned}`, attempt: 1, docker_image: '' }),
    check: async (c) => assert.equal(existsSync(c.pwned), false, 'the attacker\'s command never ran'),
  },
  {
    id: 'b', title: 'CancelTask of a worker\'s running task is refused; the task keeps running',
    method: 'CancelTask',
    request: (_c, v) => ({ task_id: v.task }),
  },
  {
    id: 'c', title: 'MasterRegister towards a rogue master is refused; the worker keeps reporting to its own',
    method: 'MasterRegister',
    request: (c) => ({ master_id: 'rogue', master_address: `${c.pair.a.ip}:50051` }),
    check: async (c) => {
      for (const v of Object.values(c.workers)) assert.equal(v.proc.has((l) => l.msg.startsWith('MasterRegister from')), false, `${v.id} never heard of the rogue`)
    },
  },
  {
    id: 'd', title: 'RegisterWorker as another worker is refused; its specs stay its own (a 5,000-CPU task is not placed on it)',
    method: 'RegisterWorker',
    request: (c, v) => ({ worker_id: v.id, worker_ip: `${c.pair.a.ip}:50052`, total_cpu: 5000, total_memory: 1e6, total_storage: 1e6, total_gpu: 0 }),
    check: async (c) => {
      for (const v of Object.values(c.workers)) {
        const big = await c.api<{ task: TaskJson }>('/api/tasks', { method: 'POST', body: { command: 'true', req_cpu: 5000, target_worker_id: v.id } })
        assert.equal(big.status, 201, JSON.stringify(big.body))
        assert.equal(big.body.task.status, 'queued', `not placed on ${v.id}`)
        assert.match(String(big.body.task.reason), /is large enough for 5000 CPU/, 'and no worker could take it')
        // Cancelled while queued (never sent to the worker): the next finding's cluster has no task waiting for a worker that big.
        assert.equal((await c.api(`/api/tasks/${big.body.task.task_id}`, { method: 'DELETE' })).status, 200)
      }
    },
  },
  {
    id: 'e', title: 'heartbeats for another worker listing no tasks are refused; its running task is not requeued and runs once',
    method: 'SendHeartbeat',
    request: (_c, v) => ({ worker_id: v.id, cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: [] }),
    times: 2,
  },
  {
    id: 'f', title: 'ReportTaskCompletion{status: completed, logs: FORGED, attempt: 0} for another worker\'s task is refused; the real run ends it',
    method: 'ReportTaskCompletion',
    request: (_c, v) => ({ task_id: v.task, worker_id: v.id, status: 'completed', logs: 'FORGED', attempt: 0 }),
  },
]

for (const clusterToken of [false, true]) {
  const mode = clusterToken ? 'g (--cluster-token, the attacker holds it)' : 'a-f (each worker\'s own credentials)'
  test(`${mode}: one cluster takes every gRPC finding in turn`, { timeout: 180_000 }, async (t) => {
    const reason = await netnsUnavailable()
    if (reason !== null) return void t.skip(reason)
    const c = await startCluster(t, clusterToken)
    for (const f of FINDINGS) {
      const name = clusterToken ? `g. ${f.id}. ${f.title}` : `${f.id}. ${f.title}`
      await t.test(name, async () => {
        const round = await takeHostages(c, f.id)
        try {
          // Every position's calls settle before a failure is reported: none runs on into the next round.
          const settled = await Promise.allSettled(POSITIONS.map((p, n) => attack(c, round, f, p, n)))
          for (const s of settled) if (s.status === 'rejected') throw s.reason
          await f.check?.(c)
          await unharmed(c, round)
        } finally {
          // A failed round still lets its tasks go, so that the next finding starts on a clean cluster.
          writeFileSync(round.go, '')
        }
      })
    }
  })
}

// --- the cluster under attack -------------------------------------------------------------------

interface Member {
  id: VictimId
  proc: Proc
  /** What the master logged of its specs when it joined. */
  specs: { cpu: number; memory: number; storage: number; gpu: number }
}

interface Victim extends Member {
  /** Its running task in this round, which waits for the round's `go` file. */
  task: string
}

/** One finding's turn: a running task on each worker, its files named after the finding. */
interface Round {
  victims: Record<VictimId, Victim>
  /** Made to let the round's tasks finish. */
  go: string
  /** Each task appends a line here when it starts. */
  runs: (id: VictimId) => string
}

interface Cluster {
  pair: NetPair
  master: MasterHandle
  workers: Record<VictimId, Member>
  /** worker-3's token: the attacker's own. */
  ownToken: string
  /** Metadata every call of the cluster carries: the cluster token, or nothing. */
  membership: Record<string, string>
  dir: string
  pwned: string
  /** The HTTP API on B's loopback, called from inside B. */
  api<T = any>(path: string, init?: { method?: string; body?: unknown }): Promise<{ status: number; body: T }>
}

interface TaskJson {
  task_id: string
  status: string
  worker_id: string | null
  attempts: number
  logs: string
  reason: string | null
  history: { status: string }[]
}

interface WorkerJson {
  worker_id: string
  is_active: boolean
  total_cpu: number
  total_memory: number
  total_storage: number
  total_gpu: number
}

const joined = (id: string) => (l: LogLine): boolean => l.workerId === id && l.msg.startsWith(`Worker ${id} registered and active`)
const running = (id: string) => (l: LogLine): boolean => l.taskId === id && l.msg.startsWith(`Task ${id} assigned to worker`)

async function startCluster(t: TestContext, withClusterToken: boolean): Promise<Cluster> {
  const pair = await createNetPair(t)
  const env = withClusterToken ? { CLOUDAI_CLUSTER_TOKEN: CLUSTER_TOKEN } : {}
  const master = await startMaster(t, {
    dataDir: tempDir(t), netns: pair.b, grpcPort: MASTER_PORT, env,
    // Nothing here waits for liveness: a long heartbeat timeout keeps a slow machine from requeueing a task.
    args: [...FAST_MASTER_FLAGS, '--heartbeat-timeout', '10s', '--grpc-host', '0.0.0.0', '--http-host', '127.0.0.1'],
  })
  const base = `http://127.0.0.1:${master.httpPort}` // not master.api: that is B's address
  const call: Cluster['api'] = async (path, init = {}) => {
    const res = await nsFetch(pair.b, base + path, init)
    return { status: res.status, body: res.body }
  }
  const register = async (id: string, address: string): Promise<string> => {
    const res = await call<{ token?: string }>('/api/workers', { method: 'POST', body: { worker_id: id, worker_ip: address } })
    assert.equal(res.status, 201, JSON.stringify(res.body))
    assert.equal(typeof res.body.token, 'string', 'the API shows a new worker\'s token')
    return res.body.token!
  }
  const [, token2] = await Promise.all([register('worker-1', `127.0.0.1:${PORT['worker-1']}`), register('worker-2', `127.0.0.1:${PORT['worker-2']}`)])
  const dir = tempDir(t, 'cloudai-attack-')
  const start = (id: VictimId, token?: string): Promise<Proc> => startWorker(t, id, PORT[id], {
    netns: pair.b, master: `127.0.0.1:${MASTER_PORT}`, env, ...(token ? { token } : {}),
    args: ['--host', '0.0.0.0'], // the default, which startWorker's --host replaces
  })
  const [w1, w2, ownToken] = await Promise.all([start('worker-1'), start('worker-2', token2), register('worker-3', `${pair.a.ip}:50052`)])
  const member = async (id: VictimId, proc: Proc): Promise<Member> => {
    const line = await master.proc.waitForLog(joined(id), `${id} joined`)
    return { id, proc, specs: line.specs as Member['specs'] }
  }
  const [m1, m2] = await Promise.all([member('worker-1', w1), member('worker-2', w2)])
  return { pair, master, workers: { 'worker-1': m1, 'worker-2': m2 }, ownToken, membership: withClusterToken ? { 'cloudai-cluster-token': CLUSTER_TOKEN } : {}, dir, pwned: join(dir, 'pwned'), api: call }
}

/** A running task on each worker for finding `id`, each waiting for the round's `go` file. */
async function takeHostages(c: Cluster, id: string): Promise<Round> {
  const go = join(c.dir, `go-${id}`)
  const runs = (v: VictimId): string => join(c.dir, `runs-${id}-${v}`)
  const hostage = async (m: Member): Promise<Victim> => {
    const submitted = await c.api<{ task_id: string }>('/api/tasks', {
      method: 'POST',
      body: { command: `echo run >> ${runs(m.id)}; while [ ! -e ${go} ]; do sleep 0.05; done; echo real-${m.id}`, target_worker_id: m.id },
    })
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body))
    await c.master.proc.waitForLog(running(submitted.body.task_id), `${m.id}'s task running`)
    return { ...m, task: submitted.body.task_id }
  }
  const [v1, v2] = await Promise.all([hostage(c.workers['worker-1']), hostage(c.workers['worker-2'])])
  return { victims: { 'worker-1': v1, 'worker-2': v2 }, go, runs }
}

/** The proof a call to a worker is checked against is bound to this (see src/worker/agent.ts). */
function subjectOf(method: MasterMethod, req: Record<string, unknown>): string {
  if (method === 'AssignTask') return `${String(req.task_id)}/${String(req.attempt)}`
  if (method === 'CancelTask') return String(req.task_id)
  return String(req.master_address)
}

const TO_WORKER = new Set<string>(['AssignTask', 'CancelTask', 'MasterRegister'])

/** One position's calls; each must be refused with the code of who it is and what it holds. */
async function attack(c: Cluster, round: Round, f: Finding, p: Position, n: number): Promise<void> {
  const victim = round.victims[p.victim]
  const toWorker = TO_WORKER.has(f.method)
  const port = toWorker ? PORT[victim.id] : MASTER_PORT
  const target = `${p.from === 'network' ? c.pair.b.ip : '127.0.0.1'}:${port}`
  const end = p.from === 'network' ? c.pair.a : c.pair.b
  const request = f.request(c, victim, n)
  const metadata: Record<string, string> = { ...c.membership }
  if (p.creds === 'own token') {
    metadata.authorization = `Bearer ${c.ownToken}`
    if (toWorker) metadata['cloudai-master-proof'] = masterProof(c.ownToken, victim.id, f.method as MasterMethod, subjectOf(f.method as MasterMethod, request), Date.now())
  }
  const expected = toWorker ? PROOF_REQUIRED : p.creds === 'none' ? TOKEN_REQUIRED : WRONG_WORKER
  for (let i = 0; i < (f.times ?? 1); i++) {
    const r = await nsGrpcCall(end, target, f.method, request, metadata)
    const what = `${f.method} ${p.who}, against ${victim.id}`
    assert.deepEqual([r.code, r.metadata['cloudai-error-code']], [...expected], `${what}: ${r.code === 0 ? `accepted (${JSON.stringify(r.response)})` : r.details}`)
  }
}

/**
 * Lets the workers' tasks finish, and checks that the attacks changed nothing: each task ran
 * once, to its end, on its worker (not requeued, not cancelled, no forged result), its result
 * reached the real master; each worker is active with the specs it joined with.
 */
async function unharmed(c: Cluster, round: Round): Promise<void> {
  writeFileSync(round.go, '')
  for (const v of Object.values(round.victims)) await c.master.proc.waitForLog(taskFinished(v.task), `${v.id}'s task finished`)
  const [tasks, workers] = await Promise.all([c.api<{ tasks: TaskJson[] }>('/api/tasks'), c.api<{ workers: WorkerJson[] }>('/api/workers')])
  for (const v of Object.values(round.victims)) {
    const task = tasks.body.tasks.find((x) => x.task_id === v.task)
    assert.deepEqual(
      task && { status: task.status, worker: task.worker_id, attempts: task.attempts, logs: task.logs, history: task.history.map((h) => h.status) },
      { status: 'completed', worker: v.id, attempts: 1, logs: `real-${v.id}\n`, history: ['queued', 'assigned', 'running', 'completed'] },
      `${v.id}'s task ran once, to its end, and its own result reached the master`,
    )
    assert.equal(readFileSync(round.runs(v.id), 'utf8'), 'run\n', `${v.id}'s task started once`)
    assert.equal(v.proc.has((l) => l.msg.startsWith('Cancelling task')), false, `${v.id} cancelled nothing`)
    const w = workers.body.workers.find((x) => x.worker_id === v.id)
    assert.deepEqual(
      w && { active: w.is_active, cpu: w.total_cpu, memory: w.total_memory, storage: w.total_storage, gpu: w.total_gpu },
      { active: true, ...v.specs },
      `${v.id} is active with its own specs`,
    )
  }
}

// --- h. the HTTP API from another site's page ---------------------------------------------------

test('h. another site\'s page cannot submit a task (no content-type, or its Origin) nor open /ws: refused, nothing queued, no snapshot', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '0'] })
  const task = JSON.stringify({ command: 'echo csrf' })
  const post = (headers: Record<string, string>, body: string | Blob) => fetch(`${master.api}/api/tasks`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) })
  // A form, or fetch(…, {mode: 'no-cors'}), sends no JSON content-type: the browser sends it without a preflight.
  assert.equal((await post({}, new Blob([task]))).status, 415)
  assert.equal((await post({ 'content-type': 'application/json', origin: 'http://evil.example' }, task)).status, 403)
  assert.equal((await api<{ total: number }>(master.api, '/api/tasks')).body.total, 0, 'nothing queued')

  const ws = new WebSocket(`ws://127.0.0.1:${master.httpPort}/ws`, { origin: 'http://evil.example' })
  t.after(() => ws.terminate())
  const outcome = await new Promise<string>((resolve) => {
    ws.once('message', (data) => resolve(`a ${JSON.parse(String(data)).type} message`))
    ws.once('unexpected-response', (_req, res) => resolve(`HTTP ${res.statusCode}`))
    ws.once('error', (err) => resolve(`error ${err.message}`))
  })
  assert.equal(outcome, 'HTTP 403')
})

// --- i. gRPC connections that would never close -----------------------------------------------

const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'
/** Fixed (README, Connection limits); the rest is shortened by flags. */
const PREFACE_TIMEOUT_MS = 10_000

test('i. raw gRPC connections are closed: preface only after --grpc-idle-timeout, nothing sent after the preface timeout, past --grpc-max-connections at once, while the API answers', { timeout: 60_000 }, async (t) => {
  const max = 4
  const master = await startMaster(t, { dataDir: tempDir(t), args: [...FAST_MASTER_FLAGS, '--grpc-idle-timeout', '1s', '--grpc-max-connections', String(max)] })
  const metric = async (name: string, labels: Record<string, string> = {}) => promValue(parsePrometheus(await (await fetch(`${master.api}/metrics`)).text()), name, labels)

  const silent = await rawGrpc(t, master.grpcPort)
  const prefaceOnly = await rawGrpc(t, master.grpcPort)
  prefaceOnly.socket.write(PREFACE)
  const idle = await prefaceOnly.closed(5_000, 'a connection that sent only the preface')
  assert.ok(idle >= 900, `closed by the idle timeout (after ${idle}ms), not before`)
  assert.equal(silent.socket.destroyed, false, 'the silent one is still within its preface timeout')

  // The port full (the silent one and three more): one more is closed as soon as it is accepted.
  await waitUntil(async () => (await metric('cloudai_grpc_connections')) === 1, 'the preface-only connection forgotten')
  const held = [silent]
  for (let i = 1; i < max; i++) held.push(await rawGrpc(t, master.grpcPort))
  const refused = await (await rawGrpc(t, master.grpcPort)).closed(2_000, `connection ${max + 1}`)
  assert.ok(refused < 1_000, `closed at once (after ${refused}ms)`)
  assert.equal((await api(master.api, '/api/status')).status, 200, 'the API answers meanwhile')
  assert.equal(await metric('cloudai_grpc_connections_refused_total', { reason: 'max_connections' }), 1)

  // Those that sent nothing go at the preface timeout, counted from when each was accepted.
  for (const c of held) await c.closed(PREFACE_TIMEOUT_MS + 5_000, 'a connection that sent nothing')
  assert.ok(Date.now() - silent.openedAt >= PREFACE_TIMEOUT_MS - 500, 'not before the preface timeout')
  assert.equal(await metric('cloudai_grpc_connections_refused_total', { reason: 'preface_timeout' }), max)
  assert.equal(await metric('cloudai_grpc_connections'), 0)
})

/** A TCP connection to a gRPC port, connected; `closed` resolves with the ms until the server closed it. */
async function rawGrpc(t: TestContext, port: number): Promise<{ socket: Socket; openedAt: number; closed: (boundMs: number, what: string) => Promise<number> }> {
  const socket = connect(port, '127.0.0.1')
  socket.on('error', () => {})
  t.after(() => socket.destroy())
  await new Promise<void>((resolve) => socket.once('connect', resolve))
  const openedAt = Date.now()
  socket.resume() // reading is what notices the server's FIN
  const gone = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  const closed = async (boundMs: number, what: string): Promise<number> => {
    const from = Date.now()
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still open after ${boundMs}ms`)), boundMs)))
    await Promise.race([gone, late]).finally(() => clearTimeout(timer))
    return Date.now() - from
  }
  return { socket, openedAt, closed }
}

// --- j. a heartbeat that lists 10,000 tasks -----------------------------------------------------

test('j. one heartbeat listing 10,000 task ids the master never placed sends the worker no CancelTask, and is logged once', { timeout: 60_000 }, async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '0', '--shutdown-grace', '2s'] })
  // A worker that records every call the master makes to it (CloudAI's, which needs no token).
  const peer = await startCloudaiWorker(t, 'worker-j')
  const token = await registerWorker(master.api, 'worker-j', `127.0.0.1:${peer.port}`)
  const raw = new RawClient(t, `127.0.0.1:${master.grpcPort}`)
  const creds = { token }
  assert.equal((await raw.call('RegisterWorker', { worker_id: 'worker-j', worker_ip: `127.0.0.1:${peer.port}`, total_cpu: 4, total_memory: 8, total_storage: 100, total_gpu: 0 }, creds)).success, true)
  // A task of the operator's runs there, to be cancelled after the heartbeat: its CancelTask comes
  // after any the heartbeat caused.
  const res = await api(master.api, '/api/tasks', { method: 'POST', body: { command: 'sleep 30', target_worker_id: 'worker-j' } })
  assert.equal(res.status, 201, JSON.stringify(res.body))
  const id = res.body.task_id as string
  await master.proc.waitForLog(running(id), 'the operator\'s task placed on worker-j')

  const ghosts = Array.from({ length: 10_000 }, (_, i) => ({ task_id: `task-ghost-${i}`, cpu_allocated: 0, memory_allocated: 0, gpu_allocated: 0, status: 'running', attempt: 0 }))
  const beat = { worker_id: 'worker-j', cpu_usage: 1, memory_usage: 1, storage_usage: 1, gpu_usage: 0, running_tasks: ghosts }
  assert.equal((await raw.call('SendHeartbeat', beat, creds)).success, true, 'the worker may say what it likes about itself')
  assert.equal((await api(master.api, `/api/tasks/${id}`, { method: 'DELETE' })).status, 200)
  await waitUntil(() => peer.cancelled.includes(id) || peer.cancelled.length > 1, 'the operator\'s CancelTask at the worker')
  assert.equal(peer.cancelled.length, 1, `the one CancelTask is the operator's (${peer.cancelled.length} arrived)`)
  assert.deepEqual(peer.cancelled, [id])

  const unknown = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.includes('never assigned')
  assert.equal((await master.proc.waitForLog(unknown, 'the line about the unknown ids')).unknownTasks, 10_000)
  assert.equal(master.proc.lines.filter(unknown).length, 1, 'one log line')
  const metrics = parsePrometheus(await (await fetch(`${master.api}/metrics`)).text())
  assert.equal(promValue(metrics, 'cloudai_heartbeat_unknown_tasks_total'), 10_000)
})

// --- k. HTTP framing and sizes ------------------------------------------------------------------

test('k. HTTP framing on raw sockets: two different Content-Lengths are 400 (nothing queued), a 100 KB path and a 200 KB query 414, 20 KB of headers 431', async (t) => {
  const master = await startMaster(t, { dataDir: tempDir(t), args: ['--reconnect-interval', '0'] })
  const host = `127.0.0.1:${master.httpPort}`
  const task = JSON.stringify({ command: 'echo smuggled' })
  const send = async (request: string): Promise<RawHttp> => {
    const client = await RawHttp.open(t, master.httpPort)
    assert.ok(await client.send(request), 'sent')
    return client
  }
  const smuggling = await send(`POST /api/tasks HTTP/1.1\r\nhost: ${host}\r\ncontent-type: application/json\r\ncontent-length: ${task.length}\r\ncontent-length: ${task.length + 5}\r\n\r\n${task}xxxxx`)
  const { statuses, close } = await smuggling.untilClosed()
  assert.deepEqual(statuses, [400], 'one answer, a 400')
  assert.deepEqual(close, { ended: true, error: null }, 'and the connection closed by the master')
  const cases: [what: string, request: string, status: number][] = [
    ['a 100 KB path', `GET /api/tasks/${'a'.repeat(100_000)} HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 414],
    ['a 200 KB query', `GET /api/tasks?${'q'.repeat(200_000)} HTTP/1.1\r\nhost: ${host}\r\n\r\n`, 414],
    ['a 20 KB header', `GET /api/status HTTP/1.1\r\nhost: ${host}\r\nx-big: ${'b'.repeat(20 * 1024)}\r\n\r\n`, 431],
  ]
  for (const [what, request, status] of cases) assert.equal((await (await send(request)).response()).status, status, what)
  assert.equal((await api<{ total: number }>(master.api, '/api/tasks')).body.total, 0, 'nothing queued')
})
