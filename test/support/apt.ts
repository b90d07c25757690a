import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { which } from './chromium.js'

// The test set-up installs what some tests need (chromium, iproute2, promtool) with apt-get, from
// test files that run at the same time. Two `apt-get update`s at once fail ("Could not get lock
// /var/lib/apt/lists/lock": DPkg::Lock::Timeout waits for dpkg's lock only), so every apt-get of
// ours runs under one flock(1) (util-linux, essential on Debian) and waits for the others.

/** apt and dpkg wait this long for another apt or dpkg (not ours) to let go of its lock. */
export const APT_LOCK_WAIT_S = 300
/** Our own apt-gets wait this long for each other: an install of chromium takes a minute or two. */
const OURS_WAIT_S = 600

export const APT_LOCK_FILE = join(tmpdir(), 'cloudai-apt.lock')

/** The argv prefix of one apt-get run: [sudo -n] [flock ...] env DEBIAN_FRONTEND=noninteractive apt-get -o .... */
export function aptArgv(prefix: readonly string[], aptGet: string, host: Parameters<typeof which>[1]): string[] {
  const flock = which('flock', host)
  return [...prefix, ...(flock ? [flock, '-w', String(OURS_WAIT_S), APT_LOCK_FILE] : []), 'env', 'DEBIAN_FRONTEND=noninteractive', aptGet, '-o', `DPkg::Lock::Timeout=${APT_LOCK_WAIT_S}`]
}
