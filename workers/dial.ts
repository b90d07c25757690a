// Piscina task file: one reconnection dial per task, run on the dial pool's threads so that
// hundreds of concurrent channel set-ups never stall the master's main thread.
import { dialMasterRegister, type DialRequest, type DialResult } from '../src/master/dial.js'

export default function dial(req: DialRequest): Promise<DialResult> {
  return dialMasterRegister(req)
}
