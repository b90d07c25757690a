import { readdirSync, statSync } from 'node:fs'

// The master's open file descriptors, for /metrics. prom-client's default gauge lists
// /proc/self/fd on every scrape: one name per descriptor, and the master holds one per gRPC
// connection (10,000 workers, 10,000 names a scrape, on the main thread). Since Linux 6.2 a stat
// of that directory gives the count as its size, without listing it; an older kernel says 0 there
// (no process runs with no descriptor at all), and then the listing is the answer, as before.

const FD_DIR = '/proc/self/fd'

/** Open descriptors of this process (null off Linux, or where /proc cannot be read). */
export function openFds(): number | null {
  if (process.platform !== 'linux') return null
  try {
    const size = statSync(FD_DIR).size
    if (size > 0) return size
    // The listing holds the directory open while it reads it: that one is not counted.
    return readdirSync(FD_DIR).length - 1
  } catch {
    return null
  }
}
