// Entry of the process that holds the SQLite store's write lock for the chaos suite, as
// test/integration/store-outage.test.ts does from the test itself: BEGIN EXCLUSIVE on the
// master's cloudai.db (reads still work in WAL mode, every write of the master gets SQLITE_BUSY).
// Prints "locked" once it holds the lock; lets go (COMMIT, exit 0) when its stdin closes or says
// anything. Killed with -9, the kernel releases the lock as well.
//   node store-locker.js <path of cloudai.db>
import Database from 'better-sqlite3'

const path = process.argv[2]
if (!path) {
  process.stderr.write('usage: store-locker <cloudai.db>\n')
  process.exit(2)
}
const db = new Database(path, { timeout: 10_000 })
db.exec('BEGIN EXCLUSIVE')
process.stdout.write('locked\n')
const release = (): void => {
  db.exec('COMMIT')
  db.close()
  process.exit(0)
}
process.stdin.once('data', release)
process.stdin.once('end', release)
