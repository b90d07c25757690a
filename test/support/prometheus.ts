import assert from 'node:assert/strict'

// A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: it fails
// on anything a Prometheus server would refuse, and checks what the format promises about
// histograms (cumulative buckets, +Inf equal to _count).

export interface PromSample {
  name: string
  labels: Record<string, string>
  value: number
}

export interface PromFamily {
  name: string
  type: string
  help: string
  samples: PromSample[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

function parseValue(raw: string, line: string): number {
  // Prometheus reads values with Go's ParseFloat: NaN and Inf in any case (prom-client writes "Nan").
  const word = raw.toLowerCase()
  if (word === 'nan') return Number.NaN
  if (word === '+inf' || word === 'inf') return Number.POSITIVE_INFINITY
  if (word === '-inf') return Number.NEGATIVE_INFINITY
  assert.match(raw, /^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$/, `not a sample value in: ${line}`)
  return Number(raw)
}

function parseLabels(raw: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {}
  LABEL.lastIndex = 0
  while (LABEL.lastIndex < raw.length) {
    const start = LABEL.lastIndex
    const m = LABEL.exec(raw)
    assert.ok(m && m.index === start, `bad label set in: ${line}`)
    assert.ok(!(m[1]! in labels), `label ${m[1]} repeated in: ${line}`)
    labels[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
  }
  return labels
}

/** The family a sample belongs to: histogram series carry a suffix. */
function familyOf(name: string, families: Map<string, PromFamily>): PromFamily | undefined {
  if (families.has(name)) return families.get(name)
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const f = families.get(name.slice(0, -suffix.length))
      if (f && (f.type === 'histogram' || f.type === 'summary')) return f
    }
  }
  return undefined
}

export function parsePrometheus(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>()
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline')
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    if (line.startsWith('# HELP ')) {
      const [, name, help = ''] = /^# HELP (\S+) ?(.*)$/.exec(line) ?? []
      assert.ok(name && NAME.test(name), `bad HELP line: ${line}`)
      const f = families.get(name) ?? { name, type: 'untyped', help: '', samples: [] }
      f.help = help
      families.set(name, f)
      continue
    }
    if (line.startsWith('# TYPE ')) {
      const [, name, type] = /^# TYPE (\S+) (\S+)$/.exec(line) ?? []
      assert.ok(name && NAME.test(name) && type && TYPES.has(type), `bad TYPE line: ${line}`)
      const f = families.get(name) ?? { name, type, help: '', samples: [] }
      assert.equal(f.samples.length, 0, `TYPE of ${name} after its samples`)
      f.type = type
      families.set(name, f)
      continue
    }
    if (line.startsWith('#')) continue
    const m = SAMPLE.exec(line)
    assert.ok(m, `not a sample line: ${line}`)
    const family = familyOf(m[1]!, families)
    assert.ok(family, `sample ${m[1]} has no HELP/TYPE before it`)
    family.samples.push({ name: m[1]!, labels: m[3] ? parseLabels(m[3], line) : {}, value: parseValue(m[4]!, line) })
  }
  for (const f of families.values()) {
    if (f.type !== 'histogram') continue
    // A labelled histogram with no series yet (nothing observed) has no samples at all.
    if (f.samples.length === 0) continue
    // One series of buckets per label set (le aside): each is cumulative and ends at +Inf = _count.
    const series = new Map<string, PromSample[]>()
    for (const s of f.samples) {
      if (s.name !== `${f.name}_bucket`) continue
      const { le: _le, ...rest } = s.labels
      const key = JSON.stringify(rest)
      series.set(key, [...(series.get(key) ?? []), s])
    }
    assert.ok(series.size > 0, `histogram ${f.name} has buckets`)
    for (const [key, buckets] of series) {
      for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `histogram ${f.name} ${key}: buckets are cumulative`)
      const inf = buckets.at(-1)!
      assert.equal(inf.labels.le, '+Inf', `histogram ${f.name} ${key} ends with le="+Inf"`)
      const count = f.samples.find((s) => s.name === `${f.name}_count` && JSON.stringify(s.labels) === key)
      assert.equal(count?.value, inf.value, `histogram ${f.name} ${key}: +Inf bucket equals _count`)
    }
  }
  return families
}

/** The value of one sample (the first whose labels include `labels`). */
export function promValue(families: Map<string, PromFamily>, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = familyOf(name, families)
  const s = family?.samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))
  return s?.value
}
