// What the masters and the workers agree on about who leads (issue 19): the one module both
// sides import, so that the wire names cannot drift apart.

/**
 * Trailing metadata of a standby master's refusal (gRPC UNAVAILABLE, CLOUDAI_NOT_LEADER) of a
 * worker's RegisterWorker / SendHeartbeat / StreamHeartbeats: the gRPC address (`host:port`) of
 * the current leader, when the standby knows it. A worker started with several `--master`
 * addresses tries that one next.
 */
export const LEADER_GRPC_METADATA = 'cloudai-leader'

/**
 * The epoch a master that has never held a lease sends (a CloudAI master sends none, which
 * decodes as 0 too). Epochs taken from a lease start at 1 and grow with every change of holder.
 */
export const NO_EPOCH = 0
