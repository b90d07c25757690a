import assert from 'node:assert/strict'
import { test } from 'node:test'
import { status } from '@grpc/grpc-js'
import { ErrorCodes, GrpcStatus } from '../../src/shared/errors.js'

test('the gRPC status codes errors map to are the ones grpc-js sends', () => {
  for (const [name, code] of Object.entries(GrpcStatus)) assert.equal(code, status[name as keyof typeof status], name)
  for (const [code, spec] of Object.entries(ErrorCodes)) assert.equal(typeof status[spec.grpc], 'string', `${code}: ${spec.grpc} is a grpc-js status`)
})
