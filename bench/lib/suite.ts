// What a scenario is, and the small helpers every scenario uses: runs summarised as median, min
// and max; a cell showing a figure next to its target; markdown tables.

export type Size = 'tiny' | 'quick' | 'full'
export const SIZES: readonly Size[] = ['tiny', 'quick', 'full']

export interface ScenarioContext {
  size: Size
  /** Timed repetitions: 1 at tiny, 3 at quick, 5 at full. */
  runs: number
  /** Progress on stderr (the tables go to stdout). */
  progress(msg: string): void
  /** `--logs <dir>`: where a scenario that supports it writes its masters' logs (info level), one file per master. */
  logDir: string | null
}

export interface Table {
  title: string
  columns: string[]
  rows: string[][]
}

export interface ScenarioResult {
  tables: Table[]
  notes: string[]
  /** Targets: each with the figure it judged, so the JSON says what passed. */
  targets: { name: string; target: string; value: number | null; met: boolean | null }[]
  /** Every raw figure. */
  raw: unknown
}

export interface Scenario {
  name: string
  description: string
  run(ctx: ScenarioContext): Promise<ScenarioResult>
}

export interface Summary {
  median: number
  min: number
  max: number
  values: number[]
}

export function summarize(values: number[]): Summary {
  const v = [...values].sort((a, b) => a - b)
  const mid = Math.floor(v.length / 2)
  const median = v.length === 0 ? NaN : v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2
  return { median, min: v[0] ?? NaN, max: v.at(-1) ?? NaN, values }
}

/** Nearest-rank percentile of an ascending list (null when empty). */
export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

export function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'n/a'
  return n.toFixed(digits)
}

/** "median (min–max)" with a unit. */
export function fmtSummary(s: Summary, unit = '', digits = 0): string {
  if (s.values.length <= 1) return `${fmt(s.median, digits)}${unit}`
  return `${fmt(s.median, digits)}${unit} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`
}

/** A figure next to its target: "812 ms ≤ 1000 ms ✅" or "… MISSED". */
export function judged(text: string, met: boolean | null, target: string): string {
  if (met === null) return `${text} (target ${target}: n/a)`
  return `${text} ${met ? '✅' : '**MISSED**'} (target ${target})`
}

export function markdown(t: Table): string {
  const lines = [`### ${t.title}`, '', `| ${t.columns.join(' | ')} |`, `|${t.columns.map(() => '---').join('|')}|`]
  for (const r of t.rows) lines.push(`| ${r.join(' | ')} |`)
  return lines.join('\n')
}

/**
 * Starts two things side by side (a master and a fleet take about a second each, and a profile
 * starts dozens). When one fails, the other is stopped once started, and the failure is thrown.
 */
export async function startBoth<A extends { stop(): Promise<void> }, B extends { stop(): Promise<void> }>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [ra, rb] = await Promise.allSettled([a, b])
  if (ra.status === 'fulfilled' && rb.status === 'fulfilled') return [ra.value, rb.value]
  if (ra.status === 'fulfilled') await ra.value.stop()
  if (rb.status === 'fulfilled') await rb.value.stop()
  throw ra.status === 'rejected' ? ra.reason : (rb as PromiseRejectedResult).reason
}
