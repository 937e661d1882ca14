'use strict';
// The statements the package sends: schema-qualified, with explicit parameter
// types, sent unnamed (no server-side prepared statement, so any connection of
// a transaction-mode pooler can run them). Tokens come back as text (int8
// does not fit a JavaScript number) and become BigInts.

const CLAIM_COLUMNS = 'SELECT c.outcome::text AS outcome, c.token::text AS token, c.attempt, c.recovery_point, ' +
  'c.response_status, c.response_headers, c.response_body, c.expires_at, c.locked_until FROM ';
const CLAIM_TIMES = '$4::interval, $5::interval, $6::interval) AS c';
// Extension 1.2: claim's seventh argument stores the request's W3C traceparent
// with the key, and claim_result.trace_context returns the stored one. Sent
// only when the caller passes a trace context, so 1.0 and 1.1 keep working.
const TRACED_COLUMNS = CLAIM_COLUMNS.replace(' FROM ', ', c.trace_context FROM ');
const TRACED_TIMES = '$4::interval, $5::interval, $6::interval, $7::text) AS c';

module.exports = {
  CLAIM: `${CLAIM_COLUMNS}idempotency.claim($1::text, $2::text, $3::bytea, ${CLAIM_TIMES}`,
  CLAIM_REQUEST: `${CLAIM_COLUMNS}idempotency.claim($1::text, $2::text, idempotency.fingerprint($3::jsonb), ${CLAIM_TIMES}`,
  CLAIM_TRACED: `${TRACED_COLUMNS}idempotency.claim($1::text, $2::text, $3::bytea, ${TRACED_TIMES}`,
  CLAIM_REQUEST_TRACED: `${TRACED_COLUMNS}idempotency.claim($1::text, $2::text, idempotency.fingerprint($3::jsonb), ${TRACED_TIMES}`,
  FINISH: 'SELECT idempotency.finish($1::text, $2::text, $3::int8, $4::int4, $5::bytea, $6::jsonb) AS finished',
  CHECKPOINT: 'SELECT idempotency.checkpoint($1::text, $2::text, $3::int8, $4::text, $5::interval) AS locked_until',
  RELEASE: 'SELECT idempotency.release($1::text, $2::text, $3::int8) AS released',
  LOOKUP: 'SELECT k.scope, k.key, k.fingerprint, k.state::text AS state, k.token::text AS token, k.attempt, ' +
    'k.recovery_point, k.locked_until, k.created_at, k.completed_at, k.expires_at, k.response_status, ' +
    'k.response_headers, k.response_body FROM idempotency.lookup($1::text, $2::text) AS k',
  FINGERPRINT: 'SELECT idempotency.fingerprint($1::jsonb) AS fingerprint',
  SWEEP: 'SELECT idempotency.sweep($1::int4) AS swept',
  ONCE: 'SELECT idempotency.once($1::text, $2::text, $3::interval, $4::interval) AS first',
};
