-- pg_idempotency 1.1: idempotency keys claimed and finished inside the
-- caller's transaction. See API.md for the contract.
\echo Use "CREATE EXTENSION pg_idempotency" to load this file. \quit

CREATE TYPE idempotency.state AS ENUM ('in_progress', 'completed');
CREATE TYPE idempotency.outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');

CREATE TABLE idempotency.keys (
    scope            text                  NOT NULL,
    key              text                  NOT NULL,
    fingerprint      bytea,
    state            idempotency.state     NOT NULL,
    token            bigint                NOT NULL,
    attempt          integer               NOT NULL,
    recovery_point   text,
    locked_until     timestamptz,
    created_at       timestamptz           NOT NULL,
    completed_at     timestamptz,
    expires_at       timestamptz           NOT NULL,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    PRIMARY KEY (scope, key)
) WITH (fillfactor = 80);  -- room for finish()'s HOT update on the same page
COMMENT ON TABLE idempotency.keys IS 'Idempotency keys: one row per (scope, key), kept until expires_at';

-- The sweeper walks expired rows in expires_at order. finish() changes no
-- indexed column, so it stays a HOT update.
CREATE INDEX keys_expires_at_idx ON idempotency.keys (expires_at);

-- pg_dump keeps the keys (the table is the extension's, its rows are data).
SELECT pg_catalog.pg_extension_config_dump('idempotency.keys', '');

CREATE TYPE idempotency.claim_result AS (
    outcome          idempotency.outcome,
    token            bigint,
    attempt          integer,
    recovery_point   text,
    response_status  integer,
    response_headers jsonb,
    response_body    bytea,
    expires_at       timestamptz,
    locked_until     timestamptz
);

CREATE FUNCTION idempotency.claim(
    scope text, key text, fingerprint bytea DEFAULT NULL, ttl interval DEFAULT NULL,
    lease interval DEFAULT NULL, wait interval DEFAULT '0')
RETURNS idempotency.claim_result
AS 'MODULE_PATHNAME', 'idempotency_claim' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.finish(
    scope text, key text, token bigint, response_status integer,
    response_body bytea DEFAULT NULL, response_headers jsonb DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_finish' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.checkpoint(
    scope text, key text, token bigint, recovery_point text, lease interval DEFAULT NULL)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'idempotency_checkpoint' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.release(scope text, key text, token bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_release' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.lookup(scope text, key text)
RETURNS idempotency.keys
AS 'MODULE_PATHNAME', 'idempotency_lookup' LANGUAGE C STABLE PARALLEL RESTRICTED;  -- runs SPI

CREATE FUNCTION idempotency.fingerprint(request jsonb)
RETURNS bytea
AS 'MODULE_PATHNAME', 'idempotency_fingerprint' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION idempotency.sweep(batch_size integer DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idempotency_sweep' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency._stats(
    OUT claims bigint, OUT replays bigint, OUT in_progress bigint, OUT mismatches bigint,
    OUT takeovers bigint, OUT finishes bigint, OUT releases bigint, OUT swept bigint,
    OUT last_sweep_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'idempotency_stats' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE VIEW idempotency.stats AS SELECT * FROM idempotency._stats();
COMMENT ON VIEW idempotency.stats IS 'pg_idempotency counters since server start (needs the library preloaded)';

-- Callers' rights: nothing is granted to PUBLIC. An application role needs
-- USAGE on the schema, EXECUTE on the functions and DML on idempotency.keys
-- (see README, "Privileges").
REVOKE ALL ON FUNCTION
    idempotency.claim(text, text, bytea, interval, interval, interval),
    idempotency.finish(text, text, bigint, integer, bytea, jsonb),
    idempotency.checkpoint(text, text, bigint, text, interval),
    idempotency.release(text, text, bigint),
    idempotency.lookup(text, text),
    idempotency.fingerprint(jsonb),
    idempotency.sweep(integer),
    idempotency._stats()
FROM PUBLIC;

-- 1.1: idempotent consumers. true = this transaction is the first to process
-- the key (recorded completed with the caller's transaction); false = already
-- processed; 55P03 while another transaction may still commit or roll it back.
CREATE FUNCTION idempotency.once(scope text, key text, ttl interval DEFAULT NULL, wait interval DEFAULT '0')
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_once' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION idempotency.once(text, text, interval, interval) FROM PUBLIC;
