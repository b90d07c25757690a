import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import * as protoLoader from '@grpc/proto-loader'
import { LOADER_OPTIONS, PROTO_PATH } from '../../src/shared/proto.js'
import { CLOUDAI_PROTO } from '../support/cloudai-peers.js'

// Our wire contract keeps CloudAI's: every field of CloudAI's table (the peers' copy) is in ours
// with its name, number, type and label, and every CloudAI RPC with its message types and streaming.

interface Field { name: string; number: number; type: string; label: string; typeName: string }
type Def = Record<string, { type?: { field: Field[] }; requestType?: { type: { name: string } }; responseType?: { type: { name: string } }; requestStream?: boolean; responseStream?: boolean } & Record<string, unknown>>

test('every message field and RPC of CloudAI\'s contract is in ours, with the same number, type and streaming', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-proto-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'theirs.proto'), CLOUDAI_PROTO)
  const theirs = protoLoader.loadSync(join(dir, 'theirs.proto'), { keepCase: true }) as unknown as Def
  const ours = protoLoader.loadSync(PROTO_PATH, { keepCase: true }) as unknown as Def
  const shape = (f: Field): string => `${f.name}=${f.number} ${f.label} ${f.type}${f.typeName ? ` ${f.typeName}` : ''}`
  let checked = 0
  for (const [name, def] of Object.entries(theirs)) {
    // UploadTaskFiles and its messages: not served by cloudai (its master keeps no output files).
    if (def.type && name !== 'cluster.FileChunk' && name !== 'cluster.FileUploadAck') {
      const mine = ours[name]?.type
      assert.ok(mine, `message ${name} is missing`)
      for (const f of def.type.field) {
        const m: Field | undefined = mine.field.find((x) => x.number === f.number)
        assert.equal(m && shape(m), shape(f), `${name} field ${f.number}`)
        checked++
      }
    }
  }
  const service = (d: Def): Record<string, { requestType: { type: { name: string } }; responseType: { type: { name: string } }; requestStream: boolean; responseStream: boolean }> => d['cluster.MasterWorker'] as never
  const rpcs = service(theirs)
  for (const [rpc, m] of Object.entries(rpcs)) {
    if (rpc === 'UploadTaskFiles') continue
    const mine = service(ours)[rpc]
    assert.ok(mine, `rpc ${rpc} is missing`)
    assert.deepEqual([mine.requestType.type.name, mine.responseType.type.name, mine.requestStream, mine.responseStream], [m.requestType.type.name, m.responseType.type.name, m.requestStream, m.responseStream], rpc)
  }
  assert.ok(checked > 50, `${checked} fields checked`)
})

// issue 19: the master's epoch rides on MasterRegister, AssignTask and CancelTask as new fields.
test('master_epoch is a new int64 field of MasterInfo, Task and TaskID: a CloudAI master\'s message (none) decodes as 0, ours as a number, and CloudAI\'s decoder skips it', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cloudai-proto-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'theirs.proto'), CLOUDAI_PROTO)
  type Method = { requestSerialize: (m: object) => Buffer; requestDeserialize: (b: Buffer) => Record<string, unknown> }
  const service = (file: string): Record<string, Method> => (protoLoader.loadSync(file, LOADER_OPTIONS) as unknown as Record<string, Record<string, Method>>)['cluster.MasterWorker']!
  const theirs = service(join(dir, 'theirs.proto'))
  const ours = service(PROTO_PATH)
  const fields = (protoLoader.loadSync(PROTO_PATH, { keepCase: true }) as unknown as Def)
  const field = (message: string): Field | undefined => fields[`cluster.${message}`]!.type!.field.find((f) => f.name === 'master_epoch')
  assert.deepEqual(['MasterInfo', 'Task', 'TaskID'].map((m) => { const f = field(m); return f && `${f.number} ${f.type}` }), ['3 TYPE_INT64', '17 TYPE_INT64', '2 TYPE_INT64'])

  const requests: [string, object][] = [
    ['MasterRegister', { master_id: 'master-1', master_address: '10.0.0.1:50051' }],
    ['AssignTask', { task_id: 't1', command: 'true', submitted_at: 1_700_000_000 }],
    ['CancelTask', { task_id: 't1' }],
  ]
  for (const [rpc, msg] of requests) {
    // From a CloudAI master: no field on the wire, 0 here (what a worker takes only before any higher).
    assert.equal(ours[rpc]!.requestDeserialize(theirs[rpc]!.requestSerialize(msg)).master_epoch, 0, rpc)
    // From ours: beyond 32 bits, a plain number after decoding (longs: Number).
    const epoch = 2 ** 40 + 7
    const wire = ours[rpc]!.requestSerialize({ ...msg, master_epoch: epoch })
    assert.equal(ours[rpc]!.requestDeserialize(wire).master_epoch, epoch, rpc)
    // A CloudAI worker reading our call: the unknown field is skipped, the rest as sent.
    const read = theirs[rpc]!.requestDeserialize(wire)
    assert.equal('master_epoch' in read, false, rpc)
    for (const [k, v] of Object.entries(msg)) assert.equal(read[k], v, `${rpc} ${k}`)
  }
})
