-- bare: the floor. A key table of the same shape and indexes as
-- idempotency.keys, used by plain statements in the workload scripts:
-- INSERT ... ON CONFLICT DO NOTHING of the key row, then an UPDATE that stores
-- the response. No functions, no validation, no lease, no outcome logic.
-- bench.payments is the business table of workload 3.

DROP SCHEMA IF EXISTS bare CASCADE;
CREATE SCHEMA bare;

CREATE TABLE bare.keys (
  scope            text NOT NULL,
  key              text NOT NULL,
  fingerprint      bytea,
  state            text NOT NULL,
  token            bigint NOT NULL,
  attempt          int NOT NULL,
  recovery_point   text,
  locked_until     timestamptz,
  created_at       timestamptz NOT NULL,
  completed_at     timestamptz,
  expires_at       timestamptz NOT NULL,
  response_status  int,
  response_headers jsonb,
  response_body    bytea,
  PRIMARY KEY (scope, key)
) WITH (fillfactor = 80);
CREATE INDEX keys_expires_at_idx ON bare.keys (expires_at);

DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.payments (
  id         bigserial PRIMARY KEY,
  amount     bigint NOT NULL,
  currency   text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
