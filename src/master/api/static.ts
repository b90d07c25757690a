import { readFileSync } from 'node:fs'

// The dashboard: three plain files the master serves itself (no build step, nothing fetched from
// elsewhere). They are not compiled, so they stay in src/ and are found from here: compiled, this
// module runs from dist/src/master/api/static.js, four levels below the project root.

export interface DashboardFile {
  body: Buffer
  contentType: string
}

export interface DashboardFiles {
  /** Keyed by URL path: '/', '/dashboard.js', '/dashboard.css', '/favicon.svg'. */
  files: Map<string, DashboardFile>
}

export const DASHBOARD_DIR = new URL('../../../../src/master/api/dashboard/', import.meta.url)

const FILES: readonly { path: string; file: string; contentType: string }[] = [
  { path: '/', file: 'index.html', contentType: 'text/html; charset=utf-8' },
  { path: '/dashboard.js', file: 'dashboard.js', contentType: 'text/javascript; charset=utf-8' },
  { path: '/dashboard.css', file: 'dashboard.css', contentType: 'text/css; charset=utf-8' },
  { path: '/favicon.svg', file: 'favicon.svg', contentType: 'image/svg+xml' },
]

/** Reads the dashboard's files (once per call; call it once at start-up). Throws if one is missing. */
export function loadDashboard(dir: URL = DASHBOARD_DIR): DashboardFiles {
  const files = new Map<string, DashboardFile>()
  for (const { path, file, contentType } of FILES) {
    files.set(path, { body: readFileSync(new URL(file, dir)), contentType })
  }
  return { files }
}
