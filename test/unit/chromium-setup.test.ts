import assert from 'node:assert/strict'
import { test } from 'node:test'
import { chromiumPath, installCommand, packageName, type ChromiumHost } from '../support/chromium.js'

// The browser test's set-up (test/support/chromium.ts) on machines it cannot be run on here: a host
// whose files, user and commands the test decides.

function host(opts: { files?: string[]; uid?: number; sudo?: boolean; env?: Record<string, string>; failInstall?: boolean } = {}) {
  const files = new Set(opts.files ?? [])
  const ran: string[][] = []
  const said: string[] = []
  const h: ChromiumHost = {
    env: { PATH: '/usr/local/bin:/usr/bin:/bin', ...opts.env },
    uid: opts.uid ?? 0,
    isExecutable: (p) => files.has(p),
    say: (line) => said.push(line),
    passwordlessSudo: async () => opts.sudo === true,
    run: async (argv) => {
      ran.push([...argv])
      if (argv.includes('install')) {
        if (opts.failInstall) throw new Error('E: Unable to locate package')
        files.add('/usr/bin/chromium')
      }
    },
  }
  return { h, ran, said }
}

const pkg = packageName()

test('a browser that is there is used as it is: CLOUDAI_CHROMIUM first, then /usr/bin/chromium, then PATH', async () => {
  const chosen = host({ files: ['/opt/chrome/chrome', '/usr/bin/chromium'], env: { CLOUDAI_CHROMIUM: '/opt/chrome/chrome' } })
  assert.equal(await chromiumPath(chosen.h), '/opt/chrome/chrome')
  const onPath = host({ files: ['/usr/local/bin/google-chrome', '/usr/bin/chromium-browser'] })
  assert.equal(await chromiumPath(onPath.h), '/usr/bin/chromium-browser')
  assert.deepEqual([...chosen.ran, ...onPath.ran], [], 'nothing installed')
  await assert.rejects(chromiumPath(host({ env: { CLOUDAI_CHROMIUM: '/nope' }, files: ['/usr/bin/chromium'] }).h), /CLOUDAI_CHROMIUM=\/nope is not an executable file/)
})

test('no browser, as root with apt-get: it says so in one line and installs the distribution\'s chromium', async () => {
  const { h, ran, said } = host({ files: ['/usr/bin/apt-get'] })
  assert.equal(await chromiumPath(h), '/usr/bin/chromium')
  assert.equal(said.length, 1)
  assert.match(said[0]!, new RegExp(`^No Chromium found: installing Debian's ${pkg} for the dashboard's browser test`))
  const apt = ['env', 'DEBIAN_FRONTEND=noninteractive', '/usr/bin/apt-get', '-o', 'DPkg::Lock::Timeout=300']
  assert.deepEqual(ran, [[...apt, 'update'], [...apt, 'install', '-y', '--no-install-recommends', pkg]])
})

test('no browser, not root: passwordless sudo installs it; without it the test fails with the exact command', async () => {
  const sudo = host({ uid: 1000, sudo: true, files: ['/usr/bin/apt-get', '/usr/bin/sudo'] })
  assert.equal(await chromiumPath(sudo.h), '/usr/bin/chromium')
  assert.deepEqual(sudo.ran.map((argv) => argv.slice(0, 3)), [['sudo', '-n', 'env'], ['sudo', '-n', 'env']])

  const plain = host({ uid: 1000, sudo: false, files: ['/usr/bin/apt-get', '/usr/bin/sudo'] })
  await assert.rejects(chromiumPath(plain.h), (err: Error) => {
    assert.ok(err.message.includes(`\`${installCommand(pkg)}\``), err.message)
    assert.match(err.message, /not root and has no passwordless sudo/)
    return true
  })
  await assert.rejects(chromiumPath(host({ files: [] }).h), /there is no apt-get here/)
  assert.deepEqual(plain.ran, [])
})

test('a failed install fails the test with what apt said and the command to run by hand', async () => {
  await assert.rejects(chromiumPath(host({ files: ['/usr/bin/apt-get'], failInstall: true }).h), (err: Error) => {
    assert.match(err.message, /^installing \S+ failed: E: Unable to locate package/)
    assert.ok(err.message.includes(installCommand(pkg)))
    return true
  })
})
