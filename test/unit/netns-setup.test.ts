import assert from 'node:assert/strict'
import { test } from 'node:test'
import { IPROUTE2_INSTALL, netnsUnavailable, staleNamespaces, type NetnsHost } from '../support/netns.js'

// When the network namespace tests run, skip or install iproute2 (test/support/netns.ts), on
// machines this one is not: a host whose platform, user, files and commands the test decides.

function host(opts: { platform?: NodeJS.Platform; uid?: number; files?: string[]; failInstall?: boolean; probe?: string | null } = {}) {
  const files = new Set(opts.files ?? ['/usr/bin/ip'])
  const ran: string[][] = []
  const said: string[] = []
  let probes = 0
  const h: NetnsHost = {
    platform: opts.platform ?? 'linux',
    uid: opts.uid ?? 0,
    env: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    isExecutable: (p) => files.has(p),
    say: (line) => said.push(line),
    run: async (argv) => {
      ran.push([...argv])
      if (argv.includes('install')) {
        if (opts.failInstall) throw new Error('E: Unable to locate package iproute2')
        files.add('/usr/bin/ip')
      }
    },
    probe: async () => {
      probes++
      return opts.probe ?? null
    },
  }
  return { h, ran, said, probes: () => probes }
}

test('root on Linux with ip, where a namespace can be made: available, nothing installed', async () => {
  const { h, ran, said, probes } = host()
  assert.equal(await netnsUnavailable(h), null)
  assert.deepEqual([ran, said, probes()], [[], [], 1])
})

test('not Linux, or not root: the reason, and nothing tried', async () => {
  const mac = host({ platform: 'darwin' })
  assert.match((await netnsUnavailable(mac.h))!, /Linux only \(this is darwin\)/)
  const user = host({ uid: 1000 })
  assert.match((await netnsUnavailable(user.h))!, /needs root \(uid is 1000\)/)
  assert.equal(mac.probes() + user.probes(), 0)
})

test('no ip, as root with apt-get: it says so in one line and installs Debian\'s iproute2', async () => {
  const { h, ran, said } = host({ files: ['/usr/bin/apt-get'] })
  assert.equal(await netnsUnavailable(h), null)
  assert.equal(said.length, 1)
  assert.match(said[0]!, /^No `ip` found: installing Debian's iproute2/)
  const apt = ['env', 'DEBIAN_FRONTEND=noninteractive', '/usr/bin/apt-get', '-o', 'DPkg::Lock::Timeout=300']
  assert.deepEqual(ran, [[...apt, 'update'], [...apt, 'install', '-y', '--no-install-recommends', 'iproute2']])
})

test('no ip and no way to get it, or a kernel that will not make namespaces: skipped with the reason and the command', async () => {
  const noApt = await netnsUnavailable(host({ files: [] }).h)
  assert.ok(noApt!.includes('there is no apt-get') && noApt!.includes(IPROUTE2_INSTALL), noApt!)
  const failed = await netnsUnavailable(host({ files: ['/usr/bin/apt-get'], failInstall: true }).h)
  assert.ok(failed!.includes('installing it failed: E: Unable to locate package iproute2') && failed!.includes(IPROUTE2_INSTALL), failed!)
  const denied = await netnsUnavailable(host({ probe: '`ip netns add cai-1-0-a` failed: mount --make-shared /run/netns failed: Operation not permitted' }).h)
  assert.match(denied!, /^cannot make network namespaces here: .*Operation not permitted/)
})

test('stale namespaces: this harness\'s names whose test process is gone, never another\'s or this process\'s', () => {
  const names = ['cai-111-1-a', 'cai-111-1-b', 'cai-222-3-a', `cai-${process.pid}-1-a`, 'cai-333-x-a', 'blue', 'cai-111-1-c']
  assert.deepEqual(staleNamespaces(names, (pid) => pid === 222), ['cai-111-1-a', 'cai-111-1-b'])
})
