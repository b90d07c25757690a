// Entry file of a telemetry thread; its code is in src/master/telemetry/thread.ts.
import '../src/master/telemetry/thread.js'
