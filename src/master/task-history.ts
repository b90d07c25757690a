import type { TaskRecord, TaskTransition } from '../shared/types.js'

/**
 * The state a task's latest transition moved it from: the entry before the last in its history.
 * A caller of TaskTable.transition reads this from the record the transition returned, never from
 * a record it read before, which a transition queued ahead of its own may have changed (an
 * assignment written while a cancel waited). Null for a task that never moved.
 */
export function movedFrom(t: TaskRecord): TaskTransition | null {
  return t.history.length >= 2 ? t.history[t.history.length - 2]! : null
}
