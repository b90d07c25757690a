// Entry file of the SQLite store thread; its code is in src/store/sqlite/thread.ts.
import '../src/store/sqlite/thread.js'
