import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { CompletionReport, TaskHooks } from '../../src/master/grpc.js'
import { TakeoverGrace } from '../../src/master/takeover-grace.js'
import type { RunningTaskInfo } from '../../src/shared/types.js'

class Recorder implements TaskHooks {
  beats: string[] = []
  results: string[] = []
  onHeartbeat(workerId: string, _running: RunningTaskInfo[]): void {
    this.beats.push(workerId)
  }
  onCompletion(result: CompletionReport): Promise<boolean> {
    this.results.push(result.task_id)
    return Promise.resolve(true)
  }
}

test('after a takeover the heartbeats\' reconcile waits one heartbeat timeout while results go through; outside it every heartbeat is reconciled', async () => {
  let now = 1000
  const inner = new Recorder()
  const grace = new TakeoverGrace(inner, 1500, () => now)
  grace.onHeartbeat('w-1', [])
  assert.deepEqual(inner.beats, ['w-1'], 'no takeover: reconciled')
  grace.begin()
  grace.onHeartbeat('w-1', [])
  now += 1499
  grace.onHeartbeat('w-2', [])
  assert.equal(await grace.onCompletion({ task_id: 't-1' } as CompletionReport), true)
  assert.deepEqual(inner.results, ['t-1'], 'a result within the grace is taken')
  assert.deepEqual(inner.beats, ['w-1'], 'nothing reconciled within the grace')
  now += 1
  grace.onHeartbeat('w-2', [])
  assert.deepEqual(inner.beats, ['w-1', 'w-2'], 'reconciled again once it is over')
})
