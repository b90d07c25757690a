import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import * as protoLoader from '@grpc/proto-loader'
import { PROTO_PATH } from '../../src/shared/proto.js'
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
