import type { MasterConfig } from '../config.js'
import { MongoStore } from './mongodb.js'
import { SqliteStore } from './sqlite/store.js'
import type { Store } from './store.js'

/** The store the master's config asks for; nothing is opened here. */
export function createStore(config: MasterConfig): Store {
  const s = config.store
  switch (s.kind) {
    case 'sqlite':
      return new SqliteStore(config.dataDir)
    case 'mongodb':
      return new MongoStore({ ...s, appName: appName(config.masterId) })
  }
}

/** `cloudai:<master id>`, cut to the 128 bytes the MongoDB handshake allows. */
function appName(masterId: string): string {
  let name = 'cloudai:'
  for (const ch of masterId) {
    if (Buffer.byteLength(name + ch, 'utf8') > 128) break
    name += ch
  }
  return name
}
