import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { EPOCH_FILE, SeenEpoch, validateEpoch } from '../../src/worker/seen-epoch.js'
import { isCloudaiError } from '../../src/shared/errors.js'
import { startAgent } from '../support/agent.js'
import { tempDir } from '../support/cluster.js'
import { RawClient } from '../support/grpc-client.js'
import { memoryLogger } from '../support/log.js'

// The worker's record of the highest master epoch it has seen (issue 19), on real files.

const code = (c: string) => (err: unknown): boolean => isCloudaiError(err) && err.code === c

test('the highest epoch seen is kept in the data directory: a raise is written before admit returns, a lower epoch refused with both, an equal one taken without a write', (t) => {
  const dir = tempDir(t)
  const file = join(dir, EPOCH_FILE)
  const { log } = memoryLogger('silent')
  const seen = new SeenEpoch(dir, log)
  assert.equal(seen.open(), 0, 'no file: nothing seen')
  seen.admit('AssignTask', 0)
  assert.equal(existsSync(file), false, 'epoch 0 before any higher: taken, nothing written')
  seen.admit('MasterRegister', 4, '10.0.0.2:50051')
  assert.deepEqual(pick(JSON.parse(readFileSync(file, 'utf8'))), { epoch: 4, master: '10.0.0.2:50051' })
  writeFileSync(`${file}.tmp`, 'half a write')
  const again = new SeenEpoch(dir, log)
  assert.equal(again.open(), 4, 'read back; a leftover .tmp is not the record')
  assert.equal(existsSync(`${file}.tmp`), false)
  assert.throws(() => again.admit('CancelTask', 3), (err: unknown) => code('CLOUDAI_STALE_EPOCH')(err) && /CancelTask carries master epoch 3, but this worker has seen epoch 4/.test((err as Error).message))
  assert.throws(() => again.admit('AssignTask', 0), code('CLOUDAI_STALE_EPOCH'), 'a master without a lease, once one with a lease was seen')
  const before = readFileSync(file, 'utf8')
  again.admit('AssignTask', 4)
  assert.equal(readFileSync(file, 'utf8'), before, 'an equal epoch writes nothing')
  assert.equal(again.value, 4)
})

test('a master-epoch file that cannot be read refuses the start (CLOUDAI_BAD_CONFIG, naming the file) rather than forget the epoch', async (t) => {
  for (const text of ['{"epoch": "seven"}', 'not json', '{"epoch": -1}']) {
    const dir = tempDir(t)
    writeFileSync(join(dir, EPOCH_FILE), text)
    assert.throws(() => new SeenEpoch(dir, memoryLogger('silent').log).open(), (err: unknown) => code('CLOUDAI_BAD_CONFIG')(err) && (err as Error).message.includes(join(dir, EPOCH_FILE)), text)
  }
  const dataDir = tempDir(t)
  writeFileSync(join(dataDir, EPOCH_FILE), '{}')
  await assert.rejects(startAgent(t, { dataDir }), (err: unknown) => code('CLOUDAI_BAD_CONFIG')(err) && /does not hold the master epoch/.test((err as Error).message))
})

test('master_epoch must be a whole number from 0: anything else is CLOUDAI_BAD_FIELD, on the wire too', async (t) => {
  assert.equal(validateEpoch(undefined), 0)
  assert.equal(validateEpoch(2 ** 40), 2 ** 40)
  for (const v of [-1, 1.5, Number.MAX_SAFE_INTEGER + 2, '3', NaN]) assert.throws(() => validateEpoch(v), code('CLOUDAI_BAD_FIELD'), String(v))
  const agent = await startAgent(t)
  const client = new RawClient(t, `127.0.0.1:${agent.port}`)
  const r = await client.refusal('CancelTask', { task_id: 't1', master_epoch: -5 })
  assert.deepEqual([r.code, r.cloudai], [grpc.status.INVALID_ARGUMENT, 'CLOUDAI_BAD_FIELD'])
  assert.match(r.details, /master_epoch must be a whole number from 0/)
})

function pick(v: { epoch: number; master: string }): { epoch: number; master: string } {
  return { epoch: v.epoch, master: v.master }
}
