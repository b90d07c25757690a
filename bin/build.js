#!/usr/bin/env node
// `npm run build`: dist/ compiled afresh from the TypeScript. dist/ is removed first, so that a
// source deleted since the last build leaves no compiled copy behind (npm test runs every test
// file in dist/test/, a stale one among them). A build that succeeded records a digest of what it
// was built from (every file under the compiled folders, tsconfig.json, package-lock.json).
//
// `--if-changed` (npm test, npm start, the bench): builds only when those inputs differ from the
// recorded ones. `npm ci` has just built (prepare), and building the same tree again before the
// tests was 19 s of a CI run that has ten minutes.
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const DIST = join(ROOT, 'dist')
const STAMP = join(DIST, '.build-inputs')
/** What tsconfig.json compiles (its "include"), and what decides how. */
const FOLDERS = ['src', 'workers', 'test', 'bench']
const FILES = ['tsconfig.json', 'package-lock.json', 'bin/build.js']
/** Written by the bench and the chaos runs, compiled into nothing: a new result is no reason to build. */
const SKIPPED = new Set([join(ROOT, 'bench', 'results')])

function digest() {
  const hash = createHash('sha256')
  const add = (path) => {
    hash.update(relative(ROOT, path)).update('\0').update(readFileSync(path)).update('\0')
  }
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const path = join(dir, entry.name)
      if (SKIPPED.has(path)) continue
      if (entry.isDirectory()) walk(path)
      else if (entry.isFile()) add(path)
    }
  }
  for (const folder of FOLDERS) if (existsSync(join(ROOT, folder))) walk(join(ROOT, folder))
  for (const file of FILES) if (existsSync(join(ROOT, file))) add(join(ROOT, file))
  return hash.digest('hex')
}

const inputs = digest()
if (process.argv.includes('--if-changed') && existsSync(STAMP) && readFileSync(STAMP, 'utf8') === inputs) {
  process.stdout.write('dist/ is up to date with its sources: not built again\n')
  process.exit(0)
}
rmSync(DIST, { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
const r = spawnSync(process.execPath, [tsc, '-p', join(ROOT, 'tsconfig.json')], { cwd: ROOT, stdio: 'inherit' })
if (r.status !== 0) process.exit(r.status ?? 1)
writeFileSync(STAMP, inputs)
