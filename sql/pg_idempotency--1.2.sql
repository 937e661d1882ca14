-- pg_idempotency 1.2: idempotency keys claimed and finished inside the
-- caller's transaction. See the README for the contract.
--
-- 1.2 is a trusted extension (docs/security-review.md): a database owner
-- without superuser may install it, and this script then runs as the
-- bootstrap superuser. So it depends on nothing the installer controls:
-- every type, function and operator is spelled pg_catalog.x or idempotency.x
-- (CREATE EXTENSION puts pg_catalog first and pg_temp last in the script's
-- search_path; the spelling makes that not matter), it creates objects only
-- in schema idempotency and refuses a schema that already holds any, and it
-- leaves no SECURITY DEFINER function behind.
\echo Use "CREATE EXTENSION pg_idempotency" to load this file. \quit

-- A schema idempotency made beforehand (CREATE EXTENSION uses an existing
-- one) must be empty: nothing of someone else's may sit next to ours or
-- stand in for it while this script runs.
DO $$
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_opfamily f WHERE f.opfnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
     OR EXISTS (SELECT FROM pg_catalog.pg_statistic_ext se WHERE se.stxnamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace)
  THEN
    RAISE EXCEPTION USING ERRCODE = '42P06',
      MESSAGE = 'schema "idempotency" already holds objects',
      HINT = 'pg_idempotency creates everything in schema idempotency itself: drop or rename that schema, then CREATE EXTENSION again.';
  END IF;
END
$$;

CREATE TYPE idempotency.state AS ENUM ('in_progress', 'completed');
CREATE TYPE idempotency.outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');

CREATE TABLE idempotency.keys (
    scope            pg_catalog.text        NOT NULL,
    key              pg_catalog.text        NOT NULL,
    fingerprint      pg_catalog.bytea,
    state            idempotency.state      NOT NULL,
    token            pg_catalog.int8        NOT NULL,
    attempt          pg_catalog.int4        NOT NULL,
    recovery_point   pg_catalog.text,
    locked_until     pg_catalog.timestamptz,
    created_at       pg_catalog.timestamptz NOT NULL,
    completed_at     pg_catalog.timestamptz,
    expires_at       pg_catalog.timestamptz NOT NULL,
    response_status  pg_catalog.int4,
    response_headers pg_catalog.jsonb,
    response_body    pg_catalog.bytea,
    -- 1.2: the W3C traceparent of the request that claimed the key (last, as
    -- ALTER TABLE ADD COLUMN puts it in an updated database)
    trace_context    pg_catalog.text,
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
    token            pg_catalog.int8,
    attempt          pg_catalog.int4,
    recovery_point   pg_catalog.text,
    response_status  pg_catalog.int4,
    response_headers pg_catalog.jsonb,
    response_body    pg_catalog.bytea,
    expires_at       pg_catalog.timestamptz,
    locked_until     pg_catalog.timestamptz,
    trace_context    pg_catalog.text
);

-- claim's planner support: plans claim(scope, key, fingerprint) with those
-- three arguments instead of the seven the defaults fill in, which a replay in
-- FROM pays for at every execution (extension/request/claim_support.cpp).
CREATE FUNCTION idempotency._claim_support(pg_catalog.internal)
RETURNS pg_catalog.internal
AS 'MODULE_PATHNAME', 'idempotency_claim_support' LANGUAGE C STRICT;

CREATE FUNCTION idempotency.claim(
    scope pg_catalog.text, key pg_catalog.text, fingerprint pg_catalog.bytea DEFAULT NULL,
    ttl pg_catalog.interval DEFAULT NULL, lease pg_catalog.interval DEFAULT NULL,
    wait pg_catalog.interval DEFAULT '0', trace_context pg_catalog.text DEFAULT NULL)
RETURNS idempotency.claim_result
AS 'MODULE_PATHNAME', 'idempotency_claim' LANGUAGE C VOLATILE PARALLEL UNSAFE
SUPPORT idempotency._claim_support;

CREATE FUNCTION idempotency.finish(
    scope pg_catalog.text, key pg_catalog.text, token pg_catalog.int8, response_status pg_catalog.int4,
    response_body pg_catalog.bytea DEFAULT NULL, response_headers pg_catalog.jsonb DEFAULT NULL)
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'idempotency_finish' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.checkpoint(
    scope pg_catalog.text, key pg_catalog.text, token pg_catalog.int8, recovery_point pg_catalog.text,
    lease pg_catalog.interval DEFAULT NULL)
RETURNS pg_catalog.timestamptz
AS 'MODULE_PATHNAME', 'idempotency_checkpoint' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.release(scope pg_catalog.text, key pg_catalog.text, token pg_catalog.int8)
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'idempotency_release' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency.lookup(scope pg_catalog.text, key pg_catalog.text)
RETURNS idempotency.keys
AS 'MODULE_PATHNAME', 'idempotency_lookup' LANGUAGE C STABLE PARALLEL RESTRICTED;  -- runs SPI

CREATE FUNCTION idempotency.fingerprint(request pg_catalog.jsonb)
RETURNS pg_catalog.bytea
AS 'MODULE_PATHNAME', 'idempotency_fingerprint' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE FUNCTION idempotency.sweep(batch_size pg_catalog.int4 DEFAULT NULL)
RETURNS pg_catalog.int8
AS 'MODULE_PATHNAME', 'idempotency_sweep' LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION idempotency._stats(
    OUT claims pg_catalog.int8, OUT replays pg_catalog.int8, OUT in_progress pg_catalog.int8,
    OUT mismatches pg_catalog.int8, OUT takeovers pg_catalog.int8, OUT finishes pg_catalog.int8,
    OUT releases pg_catalog.int8, OUT swept pg_catalog.int8, OUT last_sweep_at pg_catalog.timestamptz)
RETURNS pg_catalog.record
AS 'MODULE_PATHNAME', 'idempotency_stats' LANGUAGE C VOLATILE PARALLEL SAFE;

CREATE VIEW idempotency.stats AS SELECT * FROM idempotency._stats();
COMMENT ON VIEW idempotency.stats IS 'pg_idempotency counters since server start (needs the library preloaded)';

-- 1.1: idempotent consumers. true = this transaction is the first to process
-- the key (recorded completed with the caller's transaction); false = already
-- processed; 55P03 while another transaction may still commit or roll it back.
CREATE FUNCTION idempotency.once(
    scope pg_catalog.text, key pg_catalog.text, ttl pg_catalog.interval DEFAULT NULL,
    wait pg_catalog.interval DEFAULT '0')
RETURNS pg_catalog.bool
AS 'MODULE_PATHNAME', 'idempotency_once' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Callers' rights: nothing is granted to PUBLIC. An application role needs
-- USAGE on the schema, EXECUTE on the functions and DML on idempotency.keys
-- (see README, "Privileges").
REVOKE ALL ON FUNCTION
    idempotency._claim_support(pg_catalog.internal),
    idempotency.claim(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval,
                      pg_catalog.interval, pg_catalog.interval, pg_catalog.text),
    idempotency.finish(pg_catalog.text, pg_catalog.text, pg_catalog.int8, pg_catalog.int4, pg_catalog.bytea,
                       pg_catalog.jsonb),
    idempotency.checkpoint(pg_catalog.text, pg_catalog.text, pg_catalog.int8, pg_catalog.text, pg_catalog.interval),
    idempotency.release(pg_catalog.text, pg_catalog.text, pg_catalog.int8),
    idempotency.lookup(pg_catalog.text, pg_catalog.text),
    idempotency.fingerprint(pg_catalog.jsonb),
    idempotency.sweep(pg_catalog.int4),
    idempotency._stats(),
    idempotency.once(pg_catalog.text, pg_catalog.text, pg_catalog.interval, pg_catalog.interval)
FROM PUBLIC;

-- 1.2, trusted: the role that owns the extension (@extowner@, the one that
-- ran CREATE EXTENSION) gets exactly the privileges an application role
-- needs, with the right to grant them on; nobody else gets anything. When a
-- superuser installs, it owns every object already and nothing is granted.
-- (The same block ends pg_idempotency--1.1--1.2.sql.)
DO $$
DECLARE
  owner_name pg_catalog.text := pg_catalog.quote_ident(CURRENT_USER::pg_catalog.text);
  ext_owner pg_catalog.oid;
  ext_owner_name pg_catalog.text;
BEGIN
  SELECT e.extowner, pg_catalog.quote_ident(r.rolname::pg_catalog.text) INTO ext_owner, ext_owner_name
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) e.extowner
  WHERE e.extname OPERATOR(pg_catalog.=) 'pg_idempotency';
  IF ext_owner_name OPERATOR(pg_catalog.=) owner_name THEN
    RETURN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n
                 WHERE n.nspname OPERATOR(pg_catalog.=) 'idempotency' AND n.nspowner OPERATOR(pg_catalog.=) ext_owner) THEN
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA idempotency TO %s WITH GRANT OPTION', ext_owner_name);
  END IF;
  EXECUTE pg_catalog.format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO %s WITH GRANT OPTION', ext_owner_name);
  EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO %s WITH GRANT OPTION', ext_owner_name);
  EXECUTE pg_catalog.format('GRANT SELECT ON idempotency.stats TO %s WITH GRANT OPTION', ext_owner_name);
END
$$;
