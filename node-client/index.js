'use strict';
// pg-idempotency: pg_idempotency's API on node-postgres, and Idempotency-Key
// handling as an Express middleware. See index.d.ts for the types.
const client = require('./lib/client');
const express = require('./lib/express');
const { IdempotencyError } = require('./lib/errors');
const { fingerprintDocument } = require('./lib/fingerprint');

module.exports = {
  claim: client.claim,
  finish: client.finish,
  checkpoint: client.checkpoint,
  release: client.release,
  lookup: client.lookup,
  fingerprint: client.fingerprint,
  sweep: client.sweep,
  execute: client.execute,
  once: client.once,
  idempotency: express.idempotency,
  transaction: express.transaction,
  reject: express.reject,
  Rejection: express.Rejection,
  IdempotencyError,
  fingerprintDocument,
};
