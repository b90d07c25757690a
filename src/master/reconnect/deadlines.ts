// The probes' deadlines on one thread, on a coarse wheel: deadlines are rounded up to a slot of
// DEADLINE_SLOT_MS and each slot has one timer for all of its probes. The dials of one monitor
// tick share a deadline to within a few ms, so their tarpits (hosts that accept and never answer)
// time out together, in one timer callback, and their results leave in one message instead of one
// timer and nearly one message each. A probe times out at most DEADLINE_SLOT_MS after its deadline.

export const DEADLINE_SLOT_MS = 25

interface Slot {
  timer: NodeJS.Timeout
  due: Set<() => void>
}

const slots = new Map<number, Slot>()

/** Calls `onDeadline` once at `deadline` (epoch ms, rounded up to its slot); returns what cancels it. */
export function atDeadline(deadline: number, onDeadline: () => void): () => void {
  const at = Math.ceil(deadline / DEADLINE_SLOT_MS) * DEADLINE_SLOT_MS
  let slot = slots.get(at)
  if (!slot) {
    const due = new Set<() => void>()
    const timer = setTimeout(() => {
      slots.delete(at)
      for (const f of due) f()
    }, Math.max(0, at - Date.now()))
    slots.set(at, (slot = { timer, due }))
  }
  const s = slot
  s.due.add(onDeadline)
  return () => {
    if (!s.due.delete(onDeadline) || s.due.size > 0) return
    clearTimeout(s.timer)
    if (slots.get(at) === s) slots.delete(at)
  }
}
