import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

// A throwaway certificate authority for TLS tests, made with the openssl CLI (as an operator
// would): a CA, and certificates it signs for 127.0.0.1 and localhost (and, when asked, for SPIFFE
// IDs: the mTLS identities of src/shared/certificate-identity.ts). Every process of the
// cluster both serves and calls gRPC, so each certificate is good for both ends (serverAuth and
// clientAuth). P-256 keys: quick to make, so a test spends milliseconds here, not seconds.

export interface IssuedCert {
  certPath: string
  keyPath: string
}

export interface TestCa {
  dir: string
  /** The CA's certificate: what `--tls-ca` points at. */
  caPath: string
  /**
   * A certificate and key signed by this CA, with subjectAltName IP:127.0.0.1 and DNS:localhost,
   * and before those the URI SANs of `uris` (SPIFFE IDs: spiffe://cloudai/worker/<id>, …/master).
   */
  issue(name: string, opts?: { uris?: string[] }): IssuedCert
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 20_000 })
  } catch (err) {
    const e = err as Error & { stderr?: Buffer }
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString('utf8') || e.message}`)
  }
}

/** Makes a CA in `dir` (an existing, empty temp dir the caller removes). `name` tells CAs apart. */
export function makeTestCa(dir: string, name = 'ca'): TestCa {
  const caPath = join(dir, `${name}.pem`)
  const caKey = join(dir, `${name}.key`)
  openssl(['req', '-x509', ...EC_KEY, '-keyout', caKey, '-out', caPath, '-days', '2', '-subj', `/CN=cloudai test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir)
  // The names in a section of their own, one a line: a URI may then hold anything, a comma too.
  const extFile = (file: string, uris: string[]): string => {
    writeFileSync(file, [
      'basicConstraints=CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth,clientAuth',
      'subjectAltName=@names',
      '[names]',
      ...uris.map((u, i) => `URI.${i + 1}=${u}`),
      'IP.1=127.0.0.1',
      'DNS.1=localhost',
      '',
    ].join('\n'))
    return file
  }
  const ext = extFile(join(dir, `${name}-leaf.ext`), [])
  return {
    dir,
    caPath,
    issue(leaf: string, opts: { uris?: string[] } = {}): IssuedCert {
      const keyPath = join(dir, `${leaf}.key`)
      const certPath = join(dir, `${leaf}.pem`)
      const csr = join(dir, `${leaf}.csr`)
      openssl(['req', '-new', ...EC_KEY, '-keyout', keyPath, '-out', csr, '-subj', `/CN=${leaf}`], dir)
      openssl(['x509', '-req', '-in', csr, '-CA', caPath, '-CAkey', caKey, '-CAcreateserial', '-CAserial', join(dir, `${name}.srl`),
        '-out', certPath, '-days', '2', '-extfile', opts.uris?.length ? extFile(join(dir, `${leaf}.ext`), opts.uris) : ext], dir)
      return { certPath, keyPath }
    },
  }
}

/** The CLI flags of one process using `cert` and trusting `ca`. */
export function tlsArgs(ca: TestCa, cert: IssuedCert): string[] {
  return ['--tls-cert', cert.certPath, '--tls-key', cert.keyPath, '--tls-ca', ca.caPath]
}
