import { CloudaiError } from '../shared/errors.js'

// MongoDB connection strings, checked and redacted without loading the driver: options.ts is loaded
// by every cloudai command, and the driver takes about 200 ms to import. The driver parses the URI
// again when the store opens (and alone knows its semantic rules, such as directConnection with one
// host); this check is there so that a typo is a CLOUDAI_BAD_CONFIG naming the flag, and so that no
// message ever repeats a password.

// Lower case only: the driver refuses MONGODB://.
const SCHEME = /^(mongodb(?:\+srv)?):\/\//
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)$/
const OPTION_KEY = /^[A-Za-z][A-Za-z0-9]*$/

/**
 * Options cloudai sets from its own flags. The driver lets its options object override the URI,
 * so the same option in the URI would be silently ignored: refusing it says so.
 */
const OWNED_OPTIONS: Readonly<Record<string, string>> = {
  serverselectiontimeoutms: '--store-server-selection-timeout',
  connecttimeoutms: '--store-connect-timeout',
  sockettimeoutms: '--store-socket-timeout',
  maxpoolsize: '--store-pool-size',
  retrywrites: 'nothing (cloudai always uses retryable writes)',
}

/** Query options whose values are secrets (AWS session tokens ride in authMechanismProperties). */
const SECRET_OPTION = /password|secret|token|authmechanismproperties|proxyusername/i

interface ParsedUri {
  scheme: string
  hasCredentials: boolean
  hosts: string[]
  path: string
  query: [string, string][]
}

export function isMongoUri(value: string): boolean {
  return SCHEME.test(value)
}

/**
 * The URI as given, if it is a well-formed mongodb:// or mongodb+srv:// connection string whose
 * options do not clash with cloudai's flags.
 * @throws CLOUDAI_BAD_CONFIG naming `field`, never quoting the URI (it may carry a password).
 */
export function validateMongoUri(value: unknown, field: string): string {
  const parsed = parseMongoUri(value, field)
  for (const [key] of parsed.query) {
    const owner = OWNED_OPTIONS[key.toLowerCase()]
    if (owner !== undefined) throw bad(field, `sets ${key}, which cloudai sets itself: use ${owner}`)
  }
  return value as string
}

/** For logs and /api/status: credentials and secret options replaced; hosts, path and other options kept. */
export function redactMongoUri(uri: string): string {
  let parsed: ParsedUri
  try {
    parsed = parseMongoUri(uri, 'uri')
  } catch {
    // Where a malformed URI's password ends cannot be known: show nothing of it.
    return 'mongodb://<malformed URI>'
  }
  const query = parsed.query.map(([k, v]) => `${k}=${SECRET_OPTION.test(k) ? '<redacted>' : v}`).join('&')
  return `${parsed.scheme}://${parsed.hasCredentials ? '<credentials>@' : ''}${parsed.hosts.join(',')}${parsed.path}${query === '' ? '' : `?${query}`}`
}

function parseMongoUri(value: unknown, field: string): ParsedUri {
  if (typeof value !== 'string' || value.length === 0) throw bad(field, 'is empty: use mongodb://host:port or mongodb+srv://host')
  if (value.length > 16_384) throw bad(field, 'is longer than 16384 characters')
  if (/[\s\x00-\x1f\x7f]/.test(value)) throw bad(field, 'contains spaces or control characters: percent-encode them')
  const scheme = SCHEME.exec(value)
  if (!scheme) throw bad(field, 'must start with mongodb:// or mongodb+srv://')
  const rest = value.slice(scheme[0].length)
  // RFC 3986 and the MongoDB URI spec: `/`, `?`, `@` and `:` inside credentials are percent-encoded,
  // so the authority ends at the first `/` or `?`.
  const authorityEnd = rest.search(/[/?]/)
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd)
  const afterAuthority = authorityEnd < 0 ? '' : rest.slice(authorityEnd)
  // A password with a raw `/` or `?` would be cut there and its tail taken for a path or an
  // option, to be echoed in logs: an `@` past the hosts is refused rather than guessed at.
  if (afterAuthority.includes('@')) throw bad(field, 'has an @ after the hosts: percent-encode / ? and @ in the user name and password (%2F %3F %40), and @ elsewhere (%40)')
  const at = authority.lastIndexOf('@')
  const userinfo = at < 0 ? null : authority.slice(0, at)
  const hostList = at < 0 ? authority : authority.slice(at + 1)
  if (userinfo !== null) checkUserinfo(userinfo, field)

  const hosts = hostList.split(',')
  if (hostList === '' || hosts.some((h) => h === '')) throw bad(field, 'names no host: use for example mongodb://127.0.0.1:27017')
  for (const h of hosts) checkHost(h, field)
  const srv = scheme[1] === 'mongodb+srv'
  if (srv && (hosts.length !== 1 || /:\d+$/.test(hosts[0]!) || hosts[0]!.startsWith('['))) {
    throw bad(field, 'is mongodb+srv:// with more than one host, a port or an IP literal: an SRV URI names one DNS name and nothing else')
  }

  const q = afterAuthority.indexOf('?')
  const path = q < 0 ? afterAuthority : afterAuthority.slice(0, q)
  const queryText = q < 0 ? '' : afterAuthority.slice(q + 1)
  if (path !== '' && path !== '/') {
    const authDb = decode(path.slice(1), field, 'the authentication database')
    checkDatabaseName(authDb, field, 'the authentication database in the URI')
  }
  const query: [string, string][] = []
  if (queryText !== '') {
    for (const pair of queryText.split('&')) {
      const eq = pair.indexOf('=')
      const key = eq < 0 ? pair : pair.slice(0, eq)
      if (eq < 0 || !OPTION_KEY.test(key)) throw bad(field, 'has an option that is not name=value')
      decode(pair.slice(eq + 1), field, `the value of ${key}`)
      query.push([key, pair.slice(eq + 1)])
    }
  }
  return { scheme: scheme[1]!, hasCredentials: userinfo !== null, hosts, path, query }
}

function checkUserinfo(userinfo: string, field: string): void {
  const colon = userinfo.indexOf(':')
  const user = colon < 0 ? userinfo : userinfo.slice(0, colon)
  const password = colon < 0 ? '' : userinfo.slice(colon + 1)
  if (user === '') throw bad(field, 'has credentials without a user name')
  if (password.includes(':') || userinfo.includes('@')) throw bad(field, 'has a user name or password with : or @ that is not percent-encoded (use %3A and %40)')
  decode(user, field, 'the user name')
  decode(password, field, 'the password')
}

function checkHost(host: string, field: string): void {
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(host)!
  const name = m[1]!
  const port = m[2] === undefined ? null : Number(m[2])
  // Hosts are not quoted: with a malformed userinfo, what looks like a host may be part of a password.
  if (!HOST.test(name) || name.length > 253) throw bad(field, 'has a host that is not a DNS name or an IP address (or a password with an unencoded character)')
  if (port !== null && (port < 1 || port > 65535)) throw bad(field, 'has a port out of range: use 1 to 65535')
}

function decode(text: string, field: string, what: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    throw bad(field, `has a malformed percent-encoding in ${what}`)
  }
}

/** MongoDB's rules for a database name (any platform): 1 to 63 bytes, none of `/\. "$*<>:|?` or NUL. */
export function checkDatabaseName(name: string, field: string, what = 'the database name'): string {
  if (name.length === 0 || Buffer.byteLength(name, 'utf8') > 63) throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field}: ${what} must be 1 to 63 bytes long`)
  if (/[/\\. "$*<>:|?\x00-\x1f\x7f]/.test(name)) {
    throw new CloudaiError('CLOUDAI_BAD_CONFIG', `${field}: ${what} ${JSON.stringify(name)} contains a character MongoDB refuses in database names (/ \\ . space " $ * < > : | ? or a control character)`)
  }
  return name
}

function bad(field: string, problem: string): CloudaiError {
  return new CloudaiError('CLOUDAI_BAD_CONFIG', `${field} ${problem}`)
}
