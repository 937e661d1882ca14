'use strict';
// The one error type of the package: every failure of an idempotency call
// carries the SQLSTATE of its cause (docs/reference.md's table: IK001, IK002, 22023, 55P03,
// ...), or a class 08 code when the connection was lost.

class IdempotencyError extends Error {
  constructor(sqlstate, message, options) {
    super(message, options);
    this.name = 'IdempotencyError';
    this.sqlstate = sqlstate;
    this.code = sqlstate;  // as node-postgres names it on its own errors
  }

  // The connection is gone (class 08): the caller should drop it and retry on another.
  get connectionError() {
    return this.sqlstate.startsWith('08');
  }
}

const SQLSTATE = /^[0-9A-Z]{5}$/;

// Class 08, the shutdown codes of class 57, socket errors (ECONNRESET, ...), or
// a client that node-postgres has closed: the connection is gone.
function isConnectionLost(err) {
  if (err instanceof IdempotencyError) return err.connectionError;
  const code = err && typeof err.code === 'string' ? err.code : '';
  if (/^08/.test(code) || /^57P0[1-3]$/.test(code) || /^E[A-Z]+$/.test(code)) return true;
  return /Connection terminated|not queryable|connection error|Client was closed/i.test(String(err && err.message));
}

// err from node-postgres during `what` (claim, finish, BEGIN, ...) as an
// IdempotencyError: the server's SQLSTATE, message, detail and hint.
function fromPg(err, what) {
  if (err instanceof IdempotencyError) return err;
  const message = String(err && err.message ? err.message : err);
  if (isConnectionLost(err)) {
    return new IdempotencyError('08006', `idempotency: connection lost during ${what}: ${message}`, { cause: err });
  }
  if (err && typeof err.code === 'string' && SQLSTATE.test(err.code)) {
    let text = message;
    if (err.detail) text += ` DETAIL: ${err.detail}`;
    if (err.hint) text += ` HINT: ${err.hint}`;
    return new IdempotencyError(err.code, text, { cause: err });
  }
  return new IdempotencyError('XX000', `idempotency: ${what} failed: ${message}`, { cause: err });
}

module.exports = { IdempotencyError, isConnectionLost, fromPg };
