import { fileURLToPath } from 'node:url'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer, type AddressInfo } from 'node:net'
import assert from 'node:assert/strict'
import { test } from 'node:test'
import {
  API_OPTIONS,
  LOG_OPTIONS,
  MASTER_OPTIONS,
  TASKS_OPTIONS,
  TASK_SUBMIT_OPTIONS,
  WORKER_OPTIONS,
  buildApiOptions,
  buildLogConfig,
  buildMasterConfig,
  buildTaskQuery,
  buildTaskSubmitBody,
  buildWorkerConfig,
  envName,
  envOnlyKeys,
  buildRegisterWait,
  buildDrainRequest,
  parseAddressArg,
  parseSinceArg,
  parseTaskIdArg,
  parseWorkerIdArg,
  splitTaskCommand,
} from '../../src/cli/options.js'
import { MASTER_DEFAULTS, MONGO_STORE_DEFAULTS, WORKER_DEFAULTS } from '../../src/config.js'
import { CloudaiError, isCloudaiError } from '../../src/shared/errors.js'
import { runCli, tempDir } from '../support/cluster.js'

const LOG_DEFAULT = { level: 'info', pretty: false }
const TOKEN = `cwt1_${'A'.repeat(43)}`
const pick = (c: { token: string | null; tokenFile: string | null }) => ({ token: c.token, tokenFile: c.tokenFile })

/** What yargs hands over when no flag is given: every option's declared default. */
function yargsDefaults(table: Record<string, { default?: unknown }>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(table).flatMap(([flag, o]) => (o.default === undefined ? [] : [[flag, o.default]])))
}

/** Any readable file: the CLI checks that TLS files can be read, not what is in them. */
const CERT = fileURLToPath(import.meta.url)

function badConfig(flag: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof CloudaiError, `expected a CloudaiError, got ${String(err)}`)
    assert.equal(err.code, 'CLOUDAI_BAD_CONFIG')
    assert.ok(err.message.includes(flag), `message names ${flag}: ${err.message}`)
    return true
  }
}

test('a master with no flags gets MASTER_DEFAULTS, and the defaults shown in --help are the same', () => {
  assert.deepEqual(buildMasterConfig({}), { ...MASTER_DEFAULTS, log: LOG_DEFAULT })
  assert.deepEqual(buildMasterConfig({ ...yargsDefaults(MASTER_OPTIONS), ...yargsDefaults(LOG_OPTIONS) }), { ...MASTER_DEFAULTS, log: LOG_DEFAULT })
})

test('a worker with only --id gets WORKER_DEFAULTS, and the defaults shown in --help are the same', () => {
  const expected = { ...WORKER_DEFAULTS, id: 'worker-1', log: LOG_DEFAULT }
  assert.deepEqual(buildWorkerConfig({ id: 'worker-1' }), expected)
  assert.deepEqual(buildWorkerConfig({ ...yargsDefaults(WORKER_OPTIONS), ...yargsDefaults(LOG_OPTIONS), id: 'worker-1' }), expected)
})

test('master flags are parsed into the config: ports, hosts, addresses, durations, threads, logging', () => {
  const config = buildMasterConfig({
    'master-id': 'm-2',
    'grpc-host': '::',
    'grpc-port': '0',
    'http-host': '[::1]',
    'http-port': '9090',
    advertise: 'node1.example:50051',
    'data-dir': '/var/lib/cloudai',
    'reconnect-interval': '0',
    'reconnect-fast-window': '2m',
    'reconnect-rate': '250',
    'reconnect-max-inflight': '1000',
    'dial-timeout': '500ms',
    'heartbeat-timeout': '1m',
    'requeue-after': '30s',
    'dial-threads': '4',
    dialer: 'inline',
    'shutdown-grace': '2.5',
    'grpc-idle-timeout': '90s',
    'grpc-max-connections': '5000',
    'telemetry-threads': 'per-worker',
    'telemetry-history': '2h',
    'telemetry-step': '10s',
    'health-max-inactive': '10m',
    'health-reconnect-within': '90s',
    'ws-max-buffer': '4MiB',
    'ws-max-connections': '50',
    'api-token': 'api-token-0123456789',
    'cluster-token': 'cluster-token-0123456789',
    'tls-cert': CERT,
    'tls-key': CERT,
    'log-level': 'debug',
    'log-pretty': true,
    'store-journal-limit': '500',
    'store-heartbeat-interval': '1m',
    'accept-while-degraded': 'true',
    'master-key-file': '/etc/cloudai/master.key',
    'worker-auth': 'none',
    'token-grace': '10m',
    standby: true,
    'lease-renew': '500ms',
    'lease-timeout': '3s',
    'task-retention': '36h',
    'max-finished-tasks': '5000',
    'task-output-tail': '16KiB',
  })
  assert.deepEqual(config, {
    masterId: 'm-2',
    grpcHost: '::',
    grpcPort: 0,
    httpHost: '::1',
    httpPort: 9090,
    advertise: 'node1.example:50051',
    dataDir: '/var/lib/cloudai',
    store: { kind: 'sqlite' },
    storeJournalLimit: 500,
    storeHeartbeatIntervalMs: 60_000,
    acceptWhileDegraded: true,
    taskRetentionMs: 36 * 3_600_000,
    maxFinishedTasks: 5000,
    taskOutputTailBytes: 16 * 1024,
    reconnectIntervalMs: 0,
    reconnectFastWindowMs: 120_000,
    reconnectRatePerSec: 250,
    reconnectMaxInflight: 1000,
    dialTimeoutMs: 500,
    heartbeatTimeoutMs: 60_000,
    requeueAfterMs: 30_000,
    dialThreads: 4,
    dialer: 'inline',
    shutdownGraceMs: 2500,
    grpcIdleTimeoutMs: 90_000,
    grpcMaxConnections: 5000,
    telemetryThreads: 'per-worker',
    telemetryHistoryMs: 7_200_000,
    telemetryStepMs: 10_000,
    healthMaxInactiveMs: 600_000,
    healthReconnectWithinMs: 90_000,
    wsMaxBufferBytes: 4 * 1024 * 1024,
    wsMaxConnections: 50,
    apiToken: 'api-token-0123456789',
    apiAllowHosts: [],
    apiAllowOrigins: [],
    masterKeyFile: '/etc/cloudai/master.key',
    workerAuth: 'none',
    tokenGraceMs: 600_000,
    standby: true,
    leaseRenewMs: 500,
    leaseTimeoutMs: 3_000,
    clusterToken: 'cluster-token-0123456789',
    tls: { certPath: CERT, keyPath: CERT, caPath: null },
    log: { level: 'debug', pretty: true },
  })
})

test('task retention: --task-retention takes s, m, h and d from 1s to 365d on master and worker; --max-finished-tasks and --task-output-tail are bounded', () => {
  assert.equal(MASTER_DEFAULTS.taskRetentionMs, 7 * 86_400_000)
  assert.equal(WORKER_DEFAULTS.taskRetentionMs, 7 * 86_400_000)
  assert.equal(MASTER_DEFAULTS.maxFinishedTasks, 100_000)
  assert.equal(MASTER_DEFAULTS.taskOutputTailBytes, 64 * 1024)
  for (const [value, ms] of [['1s', 1000], ['2s', 2000], ['90m', 5_400_000], ['12h', 43_200_000], ['7d', 604_800_000], ['1.5d', 129_600_000], ['365d', 365 * 86_400_000], ['30', 30_000]] as const) {
    assert.equal(buildMasterConfig({ 'task-retention': value }).taskRetentionMs, ms, value)
    assert.equal(buildWorkerConfig({ id: 'w1', 'task-retention': value }).taskRetentionMs, ms, value)
  }
  for (const value of ['0', '999ms', '366d', '-1d', '7 days', '', 'soon', '1w']) {
    assert.throws(() => buildMasterConfig({ 'task-retention': value }), badConfig('--task-retention'), value)
    assert.throws(() => buildWorkerConfig({ id: 'w1', 'task-retention': value }), badConfig('--task-retention'), value)
  }
  assert.throws(() => buildMasterConfig({ 'task-retention': '0' }), (e: CloudaiError) => /1s to 365d/.test(e.message))
  assert.equal(buildMasterConfig({ 'max-finished-tasks': '1' }).maxFinishedTasks, 1)
  for (const value of ['0', '-5', '1.5', '10000001', 'many']) assert.throws(() => buildMasterConfig({ 'max-finished-tasks': value }), badConfig('--max-finished-tasks'), value)
  assert.equal(buildMasterConfig({ 'task-output-tail': '1KiB' }).taskOutputTailBytes, 1024)
  assert.equal(buildMasterConfig({ 'task-output-tail': '1MiB' }).taskOutputTailBytes, 1024 * 1024)
  for (const value of ['1023', '2MiB', '0', 'big']) assert.throws(() => buildMasterConfig({ 'task-output-tail': value }), badConfig('--task-output-tail'), value)
})

test('the reconnection schedule and budget: a 10 min fast window, 45 dials a second and 256 in flight by default; a 0 window dials once per interval only', () => {
  const d = buildMasterConfig({})
  assert.deepEqual([d.reconnectFastWindowMs, d.reconnectRatePerSec, d.reconnectMaxInflight], [600_000, 45, 256])
  assert.equal(buildMasterConfig({ 'reconnect-fast-window': '0' }).reconnectFastWindowMs, 0)
  assert.equal(buildMasterConfig({ 'reconnect-fast-window': '24h' }).reconnectFastWindowMs, 24 * 3_600_000)
  assert.equal(buildMasterConfig({ 'reconnect-rate': '100000', 'reconnect-max-inflight': '50000' }).reconnectRatePerSec, 100_000)
  assert.throws(() => buildMasterConfig({ 'reconnect-rate': '0' }), badConfig('--reconnect-rate "0" is not allowed: use a whole number from 1 to 100000'))
})

test('--standby is off by default; --lease-renew (1s) and --lease-timeout (5s) are bounded, and a renewal must come at least three times per timeout', () => {
  assert.equal(MASTER_DEFAULTS.standby, false)
  assert.equal(MASTER_DEFAULTS.leaseRenewMs, 1_000)
  assert.equal(MASTER_DEFAULTS.leaseTimeoutMs, 5_000)
  assert.equal(buildMasterConfig({ standby: 'true' }).standby, true)
  assert.throws(() => buildMasterConfig({ standby: 'maybe' }), badConfig('--standby'))
  const short = buildMasterConfig({ 'lease-renew': '100ms', 'lease-timeout': '300ms' })
  assert.equal(short.leaseRenewMs, 100)
  assert.equal(short.leaseTimeoutMs, 300)
  assert.equal(buildMasterConfig({ 'lease-renew': '1m', 'lease-timeout': '10m' }).leaseRenewMs, 60_000)
  assert.throws(() => buildMasterConfig({ 'lease-renew': '10ms' }), badConfig('--lease-renew "10ms" is out of range'))
  assert.throws(() => buildMasterConfig({ 'lease-renew': '2m', 'lease-timeout': '10m' }), badConfig('--lease-renew "2m" is out of range'))
  assert.throws(() => buildMasterConfig({ 'lease-timeout': '100ms', 'lease-renew': '50ms' }), badConfig('--lease-timeout "100ms" is out of range'))
  assert.throws(() => buildMasterConfig({ 'lease-timeout': '11m' }), badConfig('--lease-timeout'))
  // Renewals well below the timeout: 2s against the default 5s leaves one renewal to fail.
  assert.throws(() => buildMasterConfig({ 'lease-renew': '2s' }), badConfig('--lease-renew 2s is too close to --lease-timeout 5s'))
  assert.throws(() => buildMasterConfig({ 'lease-timeout': '2s' }), badConfig('--lease-renew 1s is too close to --lease-timeout 2s'))
  assert.equal(buildMasterConfig({ 'lease-timeout': '3s' }).leaseTimeoutMs, 3_000)
})

test('--requeue-after defaults to the heartbeat timeout (null in the config), takes 0 for at once, and a duration up to a day', () => {
  assert.equal(MASTER_DEFAULTS.requeueAfterMs, null)
  assert.equal(buildMasterConfig({}).requeueAfterMs, null, 'the master reads null as its --heartbeat-timeout')
  assert.equal(buildMasterConfig({ 'requeue-after': '0' }).requeueAfterMs, 0)
  assert.equal(buildMasterConfig({ 'requeue-after': '0s' }).requeueAfterMs, 0)
  assert.equal(buildMasterConfig({ 'requeue-after': '90s' }).requeueAfterMs, 90_000)
  assert.equal(buildMasterConfig({ 'requeue-after': '24h' }).requeueAfterMs, 24 * 3_600_000)
  assert.throws(() => buildMasterConfig({ 'requeue-after': '-5s' }), badConfig('--requeue-after'))
})

test('--api-allow-host and --api-allow-origin repeat and take comma lists; each value is checked', () => {
  const config = buildMasterConfig({
    'api-allow-host': ['cloudai.example.com, 10.0.0.5', '[fd00::7]', 'Compose_Service', 'CLOUDAI.example.com.'],
    'api-allow-origin': ['https://ops.example.com/', 'http://LOCALHOST:3000,https://ops.example.com:443'],
  })
  assert.deepEqual(config.apiAllowHosts, ['cloudai.example.com', '10.0.0.5', 'fd00::7', 'compose_service'])
  assert.deepEqual(config.apiAllowOrigins, ['https://ops.example.com', 'http://localhost:3000'])
  // One environment variable is one value: CLOUDAI_API_ALLOW_HOST="a.example,b.example".
  assert.deepEqual(buildMasterConfig({ 'api-allow-host': 'a.example,b.example' }).apiAllowHosts, ['a.example', 'b.example'])
  assert.deepEqual(buildMasterConfig({ 'api-allow-origin': '' }).apiAllowOrigins, [])

  for (const host of ['*', 'cloudai.example.com:8080', 'http://cloudai.example.com', 'bad host', '-x.example', 'a..b']) {
    assert.throws(() => buildMasterConfig({ 'api-allow-host': host }), badConfig('--api-allow-host'), host)
  }
  for (const origin of ['*', 'null', 'ops.example.com', 'ftp://ops.example.com', 'https://ops.example.com/path', 'https://ops.example.com?x', 'https://user@ops.example.com', 'https://ops.example.com#']) {
    assert.throws(() => buildMasterConfig({ 'api-allow-origin': origin }), badConfig('--api-allow-origin'), origin)
  }
})

test('worker flags are parsed into the config', () => {
  const config = buildWorkerConfig({
    id: 'gpu-node_7.a',
    host: '127.0.0.1',
    port: '50060',
    master: '10.0.0.1:50051',
    advertise: '10.0.0.7:50060',
    'heartbeat-interval': '250ms',
    'join-max-backoff': '2s',
    'data-dir': '/var/lib/cloudai-worker',
    'kill-grace': '1500ms',
    'task-retention': '2d',
    token: TOKEN,
    'master-auth': 'none',
    'log-level': 'warn',
    'log-pretty': 'false',
  })
  assert.deepEqual(config, {
    id: 'gpu-node_7.a',
    host: '127.0.0.1',
    port: 50060,
    masters: ['10.0.0.1:50051'],
    advertise: '10.0.0.7:50060',
    heartbeatIntervalMs: 250,
    joinMaxBackoffMs: 2000,
    dataDir: '/var/lib/cloudai-worker',
    killGraceMs: 1500,
    taskRetentionMs: 2 * 86_400_000,
    token: TOKEN,
    tokenFile: null,
    masterAuth: 'none',
    clusterToken: null,
    tls: null,
    log: { level: 'warn', pretty: false },
  })
})

test('the worker token comes from --token, --token-file (trimmed) or CLOUDAI_WORKER_TOKEN, one of them at most, and is never quoted back', (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'worker.token')
  writeFileSync(file, `  ${TOKEN}\n`, { mode: 0o600 })
  assert.deepEqual(pick(buildWorkerConfig({ id: 'w1', 'token-file': file })), { token: TOKEN, tokenFile: file })
  assert.deepEqual(pick(buildWorkerConfig({ id: 'w1', 'worker-token': TOKEN })), { token: TOKEN, tokenFile: null })
  assert.deepEqual(pick(buildWorkerConfig({ id: 'w1' })), { token: null, tokenFile: null })
  const wrong = `cwt1_${'x'.repeat(40)}`
  for (const [argv, flag] of [
    [{ token: wrong }, '--token'],
    [{ 'worker-token': 'secret-but-not-a-token' }, 'CLOUDAI_WORKER_TOKEN'],
    [{ 'token-file': join(dir, 'missing') }, '--token-file'],
    [{ token: TOKEN, 'token-file': file }, '--token and --token-file'],
    [{ token: TOKEN, 'worker-token': TOKEN }, '--token and CLOUDAI_WORKER_TOKEN'],
  ] as const) {
    assert.throws(() => buildWorkerConfig({ id: 'w1', ...argv }), (err: CloudaiError) => badConfig(flag)(err) && !err.message.includes(wrong) && !err.message.includes('secret-but'))
  }
  writeFileSync(file, 'garbage\n')
  assert.throws(() => buildWorkerConfig({ id: 'w1', 'token-file': file }), badConfig('--token-file'))
  assert.throws(() => buildWorkerConfig({ id: 'w1', 'master-auth': 'maybe' }), badConfig('--master-auth'))
  assert.throws(() => buildMasterConfig({ 'worker-auth': 'tokens' }), badConfig('--worker-auth'))
  assert.throws(() => buildMasterConfig({ 'token-grace': '-1s' }), badConfig('--token-grace'))
  assert.throws(() => buildMasterConfig({ 'token-grace': '169h' }), badConfig('--token-grace'))
  assert.equal(buildMasterConfig({ 'token-grace': '0' }).tokenGraceMs, 0, 'no grace: the old token stops at once')
})

test('a worker keeps its task data in ./worker-data and gives a killed task 5 s by default', () => {
  const config = buildWorkerConfig({ ...yargsDefaults(WORKER_OPTIONS), id: 'w1' })
  assert.equal(config.dataDir, './worker-data')
  assert.equal(config.killGraceMs, 5000)
  assert.equal(WORKER_OPTIONS['data-dir']?.default, WORKER_DEFAULTS.dataDir)
  assert.equal(WORKER_OPTIONS['kill-grace']?.default, '5s')
})

test('each bad master value is CLOUDAI_BAD_CONFIG with a message naming the flag', () => {
  const bad: [string, unknown][] = [
    ['grpc-port', '70000'],
    ['grpc-port', 'abc'],
    ['grpc-port', '-1'],
    ['grpc-port', '80.5'],
    ['http-port', '65536'],
    ['http-port', ''],
    ['grpc-host', 'not a host'],
    ['http-host', ''],
    ['advertise', 'no-port'],
    ['advertise', 'host:0'],
    ['advertise', 'bad_host!:50051'],
    ['reconnect-interval', '-1s'],
    ['reconnect-interval', 'soon'],
    ['reconnect-fast-window', '-1s'],
    ['reconnect-fast-window', '25h'],
    ['reconnect-rate', '0'],
    ['reconnect-rate', '2.5'],
    ['reconnect-rate', '100001'],
    ['reconnect-max-inflight', '0'],
    ['reconnect-max-inflight', '50001'],
    ['reconnect-max-inflight', 'many'],
    ['dial-timeout', '0'],
    ['dial-timeout', '0s'],
    ['dial-timeout', '-1s'],
    ['heartbeat-timeout', '0ms'],
    ['heartbeat-timeout', '15 seconds'],
    ['requeue-after', '-1s'],
    ['requeue-after', '25h'],
    ['requeue-after', 'later'],
    ['shutdown-grace', '-5s'],
    ['grpc-idle-timeout', '0'],
    ['grpc-idle-timeout', '500ms'],
    ['grpc-idle-timeout', '2d'],
    ['grpc-max-connections', '0'],
    ['grpc-max-connections', '1.5'],
    ['grpc-max-connections', '2000000'],
    ['dial-threads', '-1'],
    ['dial-threads', '1.5'],
    ['dial-threads', '1000'],
    ['dialer', 'threads'],
    ['dialer', ''],
    ['telemetry-threads', '0'],
    ['telemetry-threads', '65'],
    ['telemetry-threads', 'all'],
    ['telemetry-threads', '2.5'],
    ['telemetry-history', '30s'],
    ['telemetry-history', '2d'],
    ['telemetry-step', '50ms'],
    ['telemetry-step', '1h'],
    ['health-max-inactive', '0'],
    ['health-reconnect-within', 'never'],
    ['ws-max-buffer', '1KiB'],
    ['ws-max-buffer', '1GiB'],
    ['ws-max-buffer', 'lots'],
    ['ws-max-connections', '0'],
    ['ws-max-connections', '1.5'],
    ['api-token', 'too-short'],
    ['cluster-token', 'with a space in the middle'],
    ['tls-cert', '/no/such/file.pem'],
    ['tls-ca', '/no/such/ca.pem'],
    ['master-id', ''],
    ['master-id', ' padded '],
    ['data-dir', ''],
    ['log-level', 'loud'],
    ['log-pretty', 'maybe'],
    ['log-format', 'yaml'],
    ['log-format', 'JSON'],
  ]
  for (const [flag, value] of bad) {
    assert.throws(() => buildMasterConfig({ [flag]: value }), badConfig(`--${flag}`), `--${flag} ${JSON.stringify(value)}`)
  }
})

test('--store takes a MongoDB URI; its settings default to MONGO_STORE_DEFAULTS and each can be set', () => {
  const uri = 'mongodb://cloudai:p%40ss@db1.example:27017,db2.example/admin?replicaSet=rs0&tls=true'
  assert.deepEqual(buildMasterConfig({ store: uri }).store, { kind: 'mongodb', uri, ...MONGO_STORE_DEFAULTS })
  assert.deepEqual(buildMasterConfig({ store: 'mongodb+srv://cluster0.example.net' }).store, { kind: 'mongodb', uri: 'mongodb+srv://cluster0.example.net', ...MONGO_STORE_DEFAULTS })
  const config = buildMasterConfig({
    store: 'mongodb://127.0.0.1',
    'store-database': 'cluster_db',
    'store-server-selection-timeout': '2s',
    'store-connect-timeout': '1500ms',
    'store-socket-timeout': '1m',
    'store-pool-size': '50',
    'store-journal-limit': '100',
    'accept-while-degraded': true,
  })
  assert.deepEqual(config.store, { kind: 'mongodb', uri: 'mongodb://127.0.0.1', database: 'cluster_db', serverSelectionTimeoutMs: 2000, connectTimeoutMs: 1500, socketTimeoutMs: 60_000, maxPoolSize: 50 })
  assert.equal(config.storeJournalLimit, 100)
  assert.equal(config.acceptWhileDegraded, true)
  assert.equal(buildMasterConfig({ store: 'sqlite' }).store.kind, 'sqlite')
})

test('MongoDB settings given to a SQLite master are refused, naming them', () => {
  assert.throws(() => buildMasterConfig({ 'store-database': 'cloudai' }), badConfig('--store-database only apply to a MongoDB store'))
  assert.throws(() => buildMasterConfig({ store: 'sqlite', 'store-pool-size': '5', 'store-socket-timeout': '5s' }), badConfig('--store-socket-timeout, --store-pool-size'))
  // The journal and the degraded mode belong to every store.
  assert.equal(buildMasterConfig({ 'store-journal-limit': '200', 'accept-while-degraded': 'false' }).storeJournalLimit, 200)
})

test('each bad store value is CLOUDAI_BAD_CONFIG naming the flag, and a password is never repeated', () => {
  const mongo = 'mongodb://127.0.0.1:27017'
  const bad: [Record<string, unknown>, string][] = [
    [{ store: 'postgres://h/db' }, '--store'],
    [{ store: 'sqlite3' }, '--store'],
    [{ store: 'MONGODB://h' }, '--store'],
    [{ store: '' }, '--store'],
    [{ store: 'mongodb://' }, '--store'],
    [{ store: 'mongodb://u:hunter2@' }, '--store'],
    [{ store: 'mongodb://u:hunter2@h:99999' }, '--store'],
    [{ store: 'mongodb://u:hunter2@h:0' }, '--store'],
    [{ store: 'mongodb://u:hun/ter2@h' }, '--store'],
    [{ store: 'mongodb://u:hunter2?x=1@h' }, '--store'],
    [{ store: 'mongodb://u:hun:ter2@h' }, '--store'],
    [{ store: 'mongodb://:hunter2@h' }, '--store'],
    [{ store: 'mongodb://u:hunter2%zz@h' }, '--store'],
    [{ store: 'mongodb://bad_host!:1' }, '--store'],
    [{ store: 'mongodb://h1,,h2' }, '--store'],
    [{ store: 'mongodb://h/a.b' }, '--store'],
    [{ store: 'mongodb://h/?novalue' }, '--store'],
    [{ store: 'mongodb://h/ db' }, '--store'],
    [{ store: 'mongodb+srv://a.example,b.example' }, '--store'],
    [{ store: 'mongodb+srv://a.example:27017' }, '--store'],
    [{ store: 'mongodb://u:hunter2@h/?maxPoolSize=5' }, '--store-pool-size'],
    [{ store: 'mongodb://h/?serverSelectionTimeoutMS=1' }, '--store-server-selection-timeout'],
    [{ store: 'mongodb://h/?SOCKETTIMEOUTMS=1' }, '--store-socket-timeout'],
    [{ store: 'mongodb://h/?retryWrites=false' }, 'retryable writes'],
    [{ store: mongo, 'store-database': '' }, '--store-database'],
    [{ store: mongo, 'store-database': 'a.b' }, '--store-database'],
    [{ store: mongo, 'store-database': 'has space' }, '--store-database'],
    [{ store: mongo, 'store-database': 'a$b' }, '--store-database'],
    [{ store: mongo, 'store-database': 'x'.repeat(64) }, '--store-database'],
    [{ store: mongo, 'store-database': '\u00e9'.repeat(32) }, '--store-database'],
    [{ store: mongo, 'store-server-selection-timeout': '0' }, '--store-server-selection-timeout'],
    [{ store: mongo, 'store-server-selection-timeout': '11m' }, '--store-server-selection-timeout'],
    [{ store: mongo, 'store-connect-timeout': '50ms' }, '--store-connect-timeout'],
    [{ store: mongo, 'store-connect-timeout': 'soon' }, '--store-connect-timeout'],
    [{ store: mongo, 'store-socket-timeout': '0' }, '--store-socket-timeout'],
    [{ store: mongo, 'store-socket-timeout': '2h' }, '--store-socket-timeout'],
    [{ store: mongo, 'store-pool-size': '0' }, '--store-pool-size'],
    [{ store: mongo, 'store-pool-size': '1001' }, '--store-pool-size'],
    [{ store: mongo, 'store-pool-size': '1.5' }, '--store-pool-size'],
    [{ 'store-journal-limit': '99' }, '--store-journal-limit'],
    [{ 'store-journal-limit': '10000001' }, '--store-journal-limit'],
    [{ 'store-journal-limit': 'lots' }, '--store-journal-limit'],
    [{ 'store-heartbeat-interval': '500ms' }, '--store-heartbeat-interval'],
    [{ 'store-heartbeat-interval': '11m' }, '--store-heartbeat-interval'],
    [{ 'store-heartbeat-interval': 'often' }, '--store-heartbeat-interval'],
    [{ 'accept-while-degraded': 'maybe' }, '--accept-while-degraded'],
  ]
  for (const [argv, flag] of bad) {
    assert.throws(
      () => buildMasterConfig(argv),
      (err: unknown) => badConfig(flag)(err) && !/hunter2|hun\/ter|ter2/.test((err as Error).message),
      JSON.stringify(argv),
    )
  }
})

test('TLS files go together: cert with key, and a CA only with both', () => {
  assert.throws(() => buildMasterConfig({ 'tls-cert': CERT }), badConfig('--tls-cert and --tls-key go together'))
  assert.throws(() => buildWorkerConfig({ id: 'w1', 'tls-key': CERT }), badConfig('--tls-cert and --tls-key go together'))
  assert.throws(() => buildWorkerConfig({ id: 'w1', 'tls-ca': CERT }), badConfig('--tls-ca needs --tls-cert and --tls-key'))
  assert.deepEqual(buildWorkerConfig({ id: 'w1', 'tls-cert': CERT, 'tls-key': CERT, 'tls-ca': CERT }).tls, { certPath: CERT, keyPath: CERT, caPath: CERT })
})

test('a telemetry history of more points than a worker may hold is refused', () => {
  assert.throws(() => buildMasterConfig({ 'telemetry-history': '24h', 'telemetry-step': '1s' }), badConfig('at most 3600'))
  assert.equal(buildMasterConfig({ 'telemetry-threads': '3' }).telemetryThreads, 3)
  assert.equal(buildMasterConfig({}).telemetryThreads, 'auto')
})

test('--master takes one host:port or several comma-separated (a leader and its standbys), each validated, none twice', () => {
  assert.deepEqual(buildWorkerConfig({ id: 'w1' }).masters, [], 'none: waits for MasterRegister')
  assert.deepEqual(buildWorkerConfig({ id: 'w1', master: '10.0.0.1:50051' }).masters, ['10.0.0.1:50051'])
  assert.deepEqual(buildWorkerConfig({ id: 'w1', master: '10.0.0.1:50051,master-b.example:50051, [fd00::2]:50051' }).masters, ['10.0.0.1:50051', 'master-b.example:50051', '[fd00::2]:50051'])
  const bad: [string, RegExp][] = [
    ['', /--master needs host:port, or several separated by commas/],
    ['10.0.0.1:50051,', /--master address 2 of 2 is empty/],
    ['10.0.0.1:50051,,10.0.0.2:50051', /--master address 2 of 3 is empty/],
    ['10.0.0.1:50051,10.0.0.2', /--master address 2 of 2 "10\.0\.0\.2" must be host:port/],
    ['10.0.0.1:50051,10.0.0.2:0', /--master address 2 of 2 "10\.0\.0\.2:0": port 0 is out of range/],
    ['10.0.0.1:50051,10.0.0.1:50051', /--master lists 10\.0\.0\.1:50051 twice/],
    [Array.from({ length: 17 }, (_, i) => `10.0.0.${i + 1}:50051`).join(','), /--master lists 17 addresses; at most 16/],
  ]
  for (const [value, says] of bad) {
    assert.throws(() => buildWorkerConfig({ id: 'w1', master: value }), (err: unknown) => isCloudaiError(err) && err.code === 'CLOUDAI_BAD_CONFIG' && says.test(err.message), `--master ${JSON.stringify(value)}`)
  }
})

test('each bad worker value is CLOUDAI_BAD_CONFIG with a message naming the flag', () => {
  const bad: [string, unknown][] = [
    ['id', undefined],
    ['id', ''],
    ['id', 'bad id!'],
    ['id', 'x'.repeat(65)],
    ['port', '99999'],
    ['port', 'port'],
    ['host', 'a/b'],
    ['master', '10.0.0.1'],
    ['master', '10.0.0.1:0'],
    ['advertise', ':50052'],
    ['heartbeat-interval', '0'],
    ['heartbeat-interval', '-250ms'],
    ['join-max-backoff', '0s'],
    ['join-max-backoff', 'later'],
    ['data-dir', ''],
    ['data-dir', ' /tmp/x'],
    ['kill-grace', '0'],
    ['kill-grace', '0ms'],
    ['kill-grace', '-1s'],
    ['kill-grace', 'soon'],
  ]
  for (const [flag, value] of bad) {
    assert.throws(() => buildWorkerConfig({ id: 'w1', [flag]: value }), badConfig(`--${flag}`), `--${flag} ${JSON.stringify(value)}`)
  }
})

test('operator options: --api must be an http(s) URL; the id and address arguments are validated locally', () => {
  assert.deepEqual(buildApiOptions({}), { api: 'http://127.0.0.1:8080', json: false, apiToken: null })
  assert.deepEqual(buildApiOptions({ api: 'https://master.example:8443/cloudai/', json: true, 'api-token': 'a'.repeat(16) }), { api: 'https://master.example:8443/cloudai', json: true, apiToken: 'a'.repeat(16) })
  for (const token of ['short', 'has spaces in it but long enough', '', 'é'.repeat(20)]) assert.throws(() => buildApiOptions({ 'api-token': token }), badConfig('--api-token'), token)
  for (const api of ['ftp://x', 'localhost:8080', '', 'http://h:8080/?q=1']) {
    assert.throws(() => buildApiOptions({ api }), badConfig('--api'), api)
  }
  assert.equal(parseWorkerIdArg('worker-1'), 'worker-1')
  assert.equal(parseAddressArg('127.0.0.1:50052'), '127.0.0.1:50052')
  assert.throws(() => parseWorkerIdArg('bad id!'), badConfig('worker id'))
  assert.throws(() => parseAddressArg('127.0.0.1'), badConfig('address'))
  assert.throws(() => parseAddressArg('127.0.0.1:0'), badConfig('address'))
})

test('every flag documents its CLOUDAI_* environment variable in --help', () => {
  assert.equal(envName('grpc-port'), 'CLOUDAI_GRPC_PORT')
  assert.equal(envName('id'), 'CLOUDAI_ID')
  for (const table of [MASTER_OPTIONS, WORKER_OPTIONS, LOG_OPTIONS, API_OPTIONS]) {
    for (const [flag, o] of Object.entries(table)) {
      assert.match(String(o.describe), new RegExp(`\\[env ${envName(flag)}\\]$`), flag)
    }
  }
  // Task flags: the needs and limits have a variable; the target, name, variables and list filters do not.
  const withEnv = (table: Record<string, { describe?: unknown }>): string[] => Object.keys(table).filter((f) => String(table[f]!.describe).endsWith(`[env ${envName(f)}]`))
  assert.deepEqual(withEnv(TASK_SUBMIT_OPTIONS).sort(), ['cpu', 'gpu', 'image', 'max-attempts', 'mem', 'storage', 'timeout'])
  assert.deepEqual(withEnv(TASKS_OPTIONS), ['limit'])
  for (const o of [...Object.values(TASK_SUBMIT_OPTIONS), ...Object.values(TASKS_OPTIONS)]) assert.equal(o.nargs, 1)
})

test('CLOUDAI_* variables of other commands are dropped before strict mode, flags typed on the command line are not', () => {
  const env = { CLOUDAI_PORT: '50060', CLOUDAI_GRPC_PORT: '50051', CLOUDAI_TEST_ECHO: '1', CLOUDAI_API: 'http://x', PATH: '/bin' }
  assert.deepEqual(new Set(envOnlyKeys(env, 'master', [])), new Set(['port', 'test-echo', 'testEcho', 'api']))
  assert.deepEqual(new Set(envOnlyKeys(env, 'worker', [])), new Set(['grpc-port', 'grpcPort', 'test-echo', 'testEcho', 'api']))
  assert.deepEqual(new Set(envOnlyKeys(env, 'workers', [])), new Set(['port', 'grpc-port', 'grpcPort', 'test-echo', 'testEcho']))
  // Typed by the user: strict mode must still refuse --port on a master.
  assert.ok(!envOnlyKeys(env, 'master', ['master', '--port', '1']).includes('port'))
  assert.ok(!envOnlyKeys(env, 'master', ['master', '--port=1']).includes('port'))
  // A CLOUDAI_ENV or CLOUDAI_WORKER set for something else never reaches a task.
  const taskEnv = { CLOUDAI_ENV: 'production', CLOUDAI_WORKER: 'w9', CLOUDAI_NAME: 'x', CLOUDAI_CPU: '2', CLOUDAI_ID: 'w1', CLOUDAI_STATUS: 'failed', CLOUDAI_LIMIT: '5' }
  assert.deepEqual(new Set(envOnlyKeys(taskEnv, 'task', [])), new Set(['env', 'worker', 'name', 'status', 'limit']))
  assert.deepEqual(new Set(envOnlyKeys(taskEnv, 'tasks', [])), new Set(['env', 'worker', 'name', 'cpu', 'id', 'status']))
  assert.ok(!envOnlyKeys(taskEnv, 'task', ['task', 'submit', '--env', 'A=1']).includes('env'))
  // The worker's token is read from CLOUDAI_WORKER_TOKEN only: CLOUDAI_TOKEN would not say which token it is.
  const tokenEnv = { CLOUDAI_TOKEN: 'cwt1_x', CLOUDAI_WORKER_TOKEN: 'cwt1_y' }
  assert.deepEqual(new Set(envOnlyKeys(tokenEnv, 'worker', [])), new Set(['token']))
  assert.deepEqual(new Set(envOnlyKeys(tokenEnv, 'master', [])), new Set(['token', 'worker-token', 'workerToken']), 'and never reaches a master')
  assert.ok(!envOnlyKeys(tokenEnv, 'worker', ['worker', '--token', 'cwt1_z']).includes('token'), 'typed, it is the flag')
})

test('only `task submit` has its words after -- kept away from yargs', () => {
  assert.deepEqual(splitTaskCommand(['task', 'submit', '--cpu', '2', '--', 'sleep', '600', '--cpu', '0x10']), {
    args: ['task', 'submit', '--cpu', '2'],
    command: ['sleep', '600', '--cpu', '0x10'],
  })
  assert.deepEqual(splitTaskCommand(['task', 'submit', '--', 'echo hello | wc -c']), { args: ['task', 'submit'], command: ['echo hello | wc -c'] })
  assert.deepEqual(splitTaskCommand(['task', 'submit', '--cpu', '1']), { args: ['task', 'submit', '--cpu', '1'], command: null })
  assert.deepEqual(splitTaskCommand(['register', '--', 'w1', 'h:1']), { args: ['register', '--', 'w1', 'h:1'], command: null })
  // A global flag with its value before the command.
  assert.deepEqual(splitTaskCommand(['--api', 'http://127.0.0.1:8080', 'task', 'submit', '--', 'echo', 'hi']), { args: ['--api', 'http://127.0.0.1:8080', 'task', 'submit'], command: ['echo', 'hi'] })
  assert.deepEqual(splitTaskCommand(['task', 'task-1', '--', 'x']), { args: ['task', 'task-1', '--', 'x'], command: null })
})

test('task submit flags become the POST /api/tasks body, with only what was given', () => {
  assert.deepEqual(buildTaskSubmitBody({}, ['echo', 'hello']), { command: 'echo hello' })
  assert.deepEqual(buildTaskSubmitBody({}, ['python train.py | tee "out log"']), { command: 'python train.py | tee "out log"' })
  assert.deepEqual(
    buildTaskSubmitBody(
      { cpu: '2', mem: '0.5', gpu: '1', storage: '10', worker: 'worker-1', name: 'train', timeout: '10m', 'max-attempts': '5', env: ['MODE=fast', 'EMPTY=', 'EQ=a=b'], image: 'python:3.12' },
      ['python', 'train.py'],
    ),
    {
      command: 'python train.py',
      name: 'train',
      req_cpu: 2,
      req_memory: 0.5,
      req_gpu: 1,
      req_storage: 10,
      target_worker_id: 'worker-1',
      timeout_s: 600,
      max_attempts: 5,
      env: { MODE: 'fast', EMPTY: '', EQ: 'a=b' },
      docker_image: 'python:3.12',
    },
  )
  assert.deepEqual(buildTaskSubmitBody({ timeout: '500ms', env: 'ONE=1', cpu: '0' }, ['true']), { command: 'true', req_cpu: 0, timeout_s: 0.5, env: { ONE: '1' } })
})

test('each bad task submit value is CLOUDAI_BAD_CONFIG naming the flag', () => {
  const bad: [string, unknown][] = [
    ['cpu', '-1'],
    ['cpu', 'two'],
    ['cpu', '1e3'],
    ['cpu', '0x10'],
    ['cpu', ''],
    ['cpu', 'Infinity'],
    ['mem', 'NaN'],
    ['gpu', '-0.5'],
    ['storage', '10GB'],
    ['timeout', '-1s'],
    ['timeout', 'forever'],
    ['max-attempts', '0'],
    ['max-attempts', '1.5'],
    ['max-attempts', '-2'],
    ['worker', 'bad id!'],
    ['env', ['NOEQUALS']],
    ['env', ['=value']],
    ['env', ['1ABC=x']],
    ['env', ['A-B=x']],
  ]
  for (const [flag, value] of bad) {
    assert.throws(() => buildTaskSubmitBody({ [flag]: value }, ['echo']), badConfig(`--${flag}`), `--${flag} ${JSON.stringify(value)}`)
  }
  for (const words of [[], [''], ['  ']]) {
    assert.throws(() => buildTaskSubmitBody({}, words), badConfig('command after --'), JSON.stringify(words))
  }
  assert.deepEqual(buildTaskSubmitBody({ env: ['A=1', 'B=x', 'A=2'] }, ['echo']).env, { A: '2', B: 'x' }, 'the same variable twice: the later one wins')
  assert.deepEqual(buildTaskSubmitBody({ image: 'alpine:3.20' }, []), { command: '', docker_image: 'alpine:3.20' }, '--image alone runs the image\'s entrypoint')
})

// yargs hands a flag given more than once over as the array of its values (so does the prompt).
test('a single-valued flag given more than once is its last value; --env keeps every one', () => {
  const master = buildMasterConfig({ 'reconnect-interval': ['1s', '60s'], 'dial-timeout': ['-1s', '2s'], 'grpc-port': ['70000', '0'], 'log-level': ['debug', 'warn'] })
  assert.equal(master.reconnectIntervalMs, 60_000)
  assert.equal(master.dialTimeoutMs, 2000, 'an earlier bad value is overridden, not refused')
  assert.equal(master.grpcPort, 0)
  assert.equal(master.log.level, 'warn')
  assert.throws(() => buildMasterConfig({ 'reconnect-interval': ['60s', 'soon'] }), badConfig('--reconnect-interval "soon" is not a duration'))

  const worker = buildWorkerConfig({ id: ['bad id!', 'w2'], 'heartbeat-interval': ['5s', '250ms'], master: ['127.0.0.1:1', '127.0.0.1:50051'] })
  assert.deepEqual([worker.id, worker.heartbeatIntervalMs, worker.masters], ['w2', 250, ['127.0.0.1:50051']])

  assert.deepEqual(buildTaskSubmitBody({ cpu: ['1', '2'], name: ['a', 'b'], timeout: ['1s', '2s'], env: ['A=1', 'B=2'] }, ['true']), {
    command: 'true',
    name: 'b',
    req_cpu: 2,
    timeout_s: 2,
    env: { A: '1', B: '2' },
  })
  assert.deepEqual(buildTaskQuery({ status: ['failed', 'running'], limit: ['5', '1'] }), { status: 'running', limit: 1 })
  assert.deepEqual(buildApiOptions({ api: ['http://127.0.0.1:1', 'http://127.0.0.1:9090/'], json: true }), { api: 'http://127.0.0.1:9090', json: true, apiToken: null })
  assert.deepEqual(buildRegisterWait({ timeout: ['0', '5s'] }), { wait: false, timeoutMs: 5000 })
  assert.equal(parseSinceArg(['yesterday', '15m']), '15m')
})

test('drain flags: --deadline is a duration above 0 sent as deadline_s, --force and --detach booleans; --force with --deadline is refused', () => {
  assert.deepEqual(buildDrainRequest({}), { body: { force: false }, detach: false })
  assert.deepEqual(buildDrainRequest({ deadline: '1h' }), { body: { deadline_s: 3600, force: false }, detach: false })
  assert.deepEqual(buildDrainRequest({ deadline: '1500ms', detach: true }), { body: { deadline_s: 1.5, force: false }, detach: true })
  assert.deepEqual(buildDrainRequest({ deadline: ['10m', '30s'] }), { body: { deadline_s: 30, force: false }, detach: false }, 'a repeated flag is its last value')
  assert.deepEqual(buildDrainRequest({ force: true }), { body: { force: true }, detach: false })
  for (const value of ['0', '-1s', 'soon', '8d', '']) assert.throws(() => buildDrainRequest({ deadline: value }), badConfig('--deadline'), `--deadline ${value}`)
  assert.throws(() => buildDrainRequest({ force: 'maybe' }), badConfig('--force'))
  assert.throws(() => buildDrainRequest({ deadline: '1m', force: true }), /--force and --deadline do not go together/)
})

test('the tasks query is validated as the master validates it; pending means queued', () => {
  assert.deepEqual(buildTaskQuery({}), {})
  assert.deepEqual(buildTaskQuery({ status: 'running', limit: '10', offset: '20' }), { status: 'running', limit: 10, offset: 20 })
  assert.deepEqual(buildTaskQuery({ status: 'pending' }), { status: 'queued' })
  for (const [flag, value] of [['status', 'done'], ['status', 'Queued'], ['limit', '0'], ['limit', '1001'], ['limit', 'all'], ['offset', '-1'], ['offset', '1.5']] as const) {
    assert.throws(() => buildTaskQuery({ [flag]: value }), badConfig(`--${flag}`), `--${flag} ${value}`)
  }
  assert.equal(parseTaskIdArg('task-3f2a'), 'task-3f2a')
  assert.throws(() => parseTaskIdArg('task one'), badConfig('task id'))
  assert.throws(() => parseTaskIdArg(''), badConfig('task id'))
})

// These exit while validating flags, before anything listens; the safe ports and temp dir are
// there only so that a regression cannot start a master on the real default ports.
test('the CLI refuses bad flags with exit code 2, the reason on stderr and a --help hint', async (t) => {
  const dir = tempDir(t)
  const safe = ['--grpc-host', '127.0.0.1', '--http-port', '0', '--data-dir', dir, '--log-level', 'silent']
  const cases: { args: string[]; env?: NodeJS.ProcessEnv; stderr: RegExp; hint: string }[] = [
    { args: ['master', '--grpc-port', '70000', ...safe], stderr: /^error: --grpc-port 70000 is out of range \(0 to 65535\)$/m, hint: 'cloudai master --help' },
    { args: ['master', '--grpc-port', '0', '--dial-timeout', '-1s', ...safe], stderr: /^error: --dial-timeout "-1s" is not a duration/m, hint: 'cloudai master --help' },
    { args: ['master', '--grpc-port', '0', '--heartbeat-timeout', '0', ...safe], stderr: /^error: --heartbeat-timeout must be more than 0/m, hint: 'cloudai master --help' },
    { args: ['worker', '--id', 'bad id!', '--host', '127.0.0.1', '--port', '0'], stderr: /^error: --id "bad id!" is invalid/m, hint: 'cloudai worker --help' },
    { args: ['worker', '--port', '0'], stderr: /^error: .*\bid\b/m, hint: 'cloudai worker --help' },
    { args: ['master', ...safe], env: { CLOUDAI_GRPC_PORT: '70000' }, stderr: /^error: --grpc-port 70000 is out of range/m, hint: 'cloudai master --help' },
    { args: ['master', '--grpc-port', '0', '--bogus', ...safe], stderr: /^error: Unknown argument: bogus$/m, hint: 'cloudai master --help' },
    { args: ['master', ...safe], env: { CLOUDAI_STORE: 'mongodb://admin:hunter2@db.example:99999' }, stderr: /^error: --store has a port out of range/m, hint: 'cloudai master --help' },
    // Given twice: the last value is the one checked (an array of both would be "not a duration").
    { args: ['master', '--dial-timeout', '5s', '--dial-timeout', '0', ...safe], stderr: /^error: --dial-timeout must be more than 0/m, hint: 'cloudai master --help' },
    { args: ['worker', '--id', 'w1', '--port', '0', '--kill-grace', '1s', '--kill-grace', '0'], stderr: /^error: --kill-grace must be more than 0/m, hint: 'cloudai worker --help' },
    { args: ['task', 'submit', '--cpu', '1', '--cpu', '-1', '--', 'echo'], stderr: /^error: --cpu "-1" is not an amount/m, hint: 'cloudai task submit --help' },
    { args: ['master', '--store-pool-size', '5', ...safe], stderr: /^error: --store-pool-size only apply to a MongoDB store/m, hint: 'cloudai master --help' },
    { args: ['register', 'w1', 'no-port'], stderr: /^error: address "no-port" must be host:port/m, hint: 'cloudai register --help' },
    { args: ['register', 'worker-3', '127.0.0.1:99999'], stderr: /^error: address "127.0.0.1:99999": port 99999 is out of range \(1 to 65535\)$/m, hint: 'cloudai register --help' },
    { args: ['register', 'worker-3'], stderr: /^error: missing <address>: cloudai register <id> <address>$/m, hint: 'cloudai register --help' },
    { args: ['register'], stderr: /^error: missing <id> and <address>: cloudai register <id> <address>$/m, hint: 'cloudai register --help' },
    { args: ['unregister'], stderr: /^error: missing <id>: cloudai unregister <id>$/m, hint: 'cloudai unregister --help' },
    { args: ['token', 'rotate'], stderr: /^error: missing <id>: cloudai token rotate <id>$/m, hint: 'cloudai token --help' },
    { args: ['worker', '--id', 'w1', '--port', '0', '--kill-grace', '0'], stderr: /^error: --kill-grace must be more than 0/m, hint: 'cloudai worker --help' },
    { args: ['task', 'submit', '--cpu', '-1', '--', 'echo', 'hi'], stderr: /^error: --cpu "-1" is not an amount/m, hint: 'cloudai task submit --help' },
    { args: ['task', 'submit', '--env', 'NOPE', '--', 'echo'], stderr: /^error: --env "NOPE" is not KEY=VALUE/m, hint: 'cloudai task submit --help' },
    { args: ['task', 'submit', '--timeout', 'soon', '--', 'echo'], stderr: /^error: --timeout "soon" is not a duration/m, hint: 'cloudai task submit --help' },
    { args: ['task', 'submit', '--cpu', '1'], stderr: /^error: the task needs a command after --/m, hint: 'cloudai task submit --help' },
    { args: ['task', 'submit', 'echo', 'hi'], stderr: /^error: Unknown arguments: echo, hi \(the task's command goes after --/m, hint: 'cloudai task submit --help' },
    { args: ['task', 'submit', '--bogus', '1', '--', 'echo'], stderr: /^error: Unknown argument: bogus/m, hint: 'cloudai task submit --help' },
    { args: ['task'], stderr: /^error: a task id or a sub-command is required/m, hint: 'cloudai task --help' },
    { args: ['task', 'task one'], stderr: /^error: task id "task one" is invalid/m, hint: 'cloudai task --help' },
    { args: ['cancel'], stderr: /^error: a task id is required: cloudai cancel <id>$/m, hint: 'cloudai cancel --help' },
    { args: ['cancel', 'a/b'], stderr: /^error: task id "a\/b" is invalid/m, hint: 'cloudai cancel --help' },
    { args: ['tasks', '--status', 'done'], stderr: /^error: --status "done" is not a task status: use one of queued/m, hint: 'cloudai tasks --help' },
    { args: ['tasks', '--limit', '0'], stderr: /^error: --limit "0" is not allowed: use a whole number from 1 to 1000/m, hint: 'cloudai tasks --help' },
    { args: ['frobnicate'], stderr: /^error: .*frobnicate/m, hint: 'cloudai --help' },
    { args: ['regster', 'w1', '127.0.0.1:50052'], stderr: /^error: unknown command "regster": did you mean register\?/m, hint: 'cloudai --help' },
    { args: ['--api', 'http://127.0.0.1:1', 'stauts'], stderr: /^error: unknown command "stauts": did you mean status\?/m, hint: 'cloudai --help' },
    { args: [], stderr: /^error: a command is required/m, hint: 'cloudai --help' },
  ]
  await Promise.all(
    cases.map(async ({ args, env, stderr, hint }) => {
      const res = await runCli(args, env)
      const what = `cloudai ${args.join(' ')}: ${res.stderr}`
      assert.equal(res.code, 2, what)
      assert.match(res.stderr, stderr, what)
      assert.ok(res.stderr.includes(hint), what)
      assert.equal(res.stdout, '', what)
      assert.ok(!res.stderr.includes('hunter2'), `a password was printed: ${what}`)
    }),
  )
})

test('a port in use: the master and the worker say which port and which flag picks another, with no stack trace', async (t) => {
  const held = createServer()
  await new Promise<void>((resolve) => held.listen(0, '127.0.0.1', resolve))
  t.after(() => held.close())
  const port = (held.address() as AddressInfo).port
  const dir = tempDir(t)
  const cases = [
    { args: ['master', '--grpc-host', '127.0.0.1', '--grpc-port', String(port), '--http-host', '127.0.0.1', '--http-port', '0', '--advertise', '127.0.0.1:1', '--data-dir', join(dir, 'm1')], says: `port ${port} is in use (choose another with --grpc-port` },
    { args: ['master', '--grpc-host', '127.0.0.1', '--grpc-port', '0', '--http-host', '127.0.0.1', '--http-port', String(port), '--advertise', '127.0.0.1:1', '--data-dir', join(dir, 'm2')], says: `port ${port} is in use (choose another with --http-port` },
    { args: ['worker', '--id', 'w1', '--host', '127.0.0.1', '--port', String(port), '--master', '127.0.0.1:1', '--data-dir', join(dir, 'w')], says: `port ${port} is in use (choose another with --port` },
  ]
  for (const { args, says } of cases) {
    const res = await runCli(args)
    const what = `cloudai ${args.join(' ')}:\n${res.stdout}\n${res.stderr}`
    assert.notEqual(res.code, 0, what)
    assert.ok(res.stderr.includes(says), what)
    assert.doesNotMatch(res.stdout + res.stderr, /\bat .*\.js:\d+:\d+/, `no stack trace: ${what}`)
  }
})

test('logs are pretty on a terminal and JSON lines otherwise; --log-format overrides, and wins over --log-pretty', () => {
  assert.equal(buildLogConfig({}, true).pretty, true)
  assert.equal(buildLogConfig({}, false).pretty, false)
  assert.equal(buildLogConfig({ 'log-format': 'json' }, true).pretty, false)
  assert.equal(buildLogConfig({ 'log-format': 'pretty' }, false).pretty, true)
  assert.equal(buildLogConfig({ 'log-pretty': false }, true).pretty, false, '--no-log-pretty on a terminal')
  assert.equal(buildLogConfig({ 'log-pretty': true }, false).pretty, true)
  assert.equal(buildLogConfig({ 'log-format': 'json', 'log-pretty': true }, false).pretty, false)
  assert.throws(() => buildLogConfig({ 'log-format': 'yaml' }, false), (err: unknown) => err instanceof CloudaiError && err.code === 'CLOUDAI_BAD_CONFIG' && /--log-format "yaml" is not a log format: use json or pretty/.test(err.message))
})
