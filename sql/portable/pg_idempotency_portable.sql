-- pg_idempotency 1.2, portable edition: the API of the pg_idempotency extension
-- (API.md) in plain SQL and PL/pgSQL, for servers where a C++ extension cannot
-- be installed or preloaded (Amazon RDS/Aurora, Cloud SQL, Azure, Supabase,
-- Neon, ...).
--
--   psql -d DB -f pg_idempotency_portable.sql
--
-- Run it as any role with CREATE on the database (no superuser needed); that
-- role owns the schema. Running it again upgrades in place and keeps every
-- key and every grant: types and the table are created only when missing,
-- functions are replaced (same oids), and a later version's file changes what
-- it must after reading idempotency._portable_version(). It refuses, changing
-- nothing, where the extension is installed. The whole script is one
-- transaction. Moving to or from the extension: to_extension.sql,
-- from_extension.sql beside this file.
--
-- The same discipline as the extension:
--   * callers' rights (no SECURITY DEFINER): privileges and row-level security
--     on idempotency.keys apply to every function;
--   * every function pins search_path = pg_catalog, pg_temp and spells its
--     operators OPERATOR(pg_catalog.x), so a hostile search_path changes nothing;
--   * no session state at all (no session SET, no session advisory locks, no
--     temporary tables): it works through PgBouncer in transaction mode;
--   * fencing tokens are made in PL/pgSQL and passed to the statements as
--     parameters (a volatile function inside an UPDATE breaks on Citus).
--
-- Differences from the extension (README, "Managed Postgres";
-- test/portable/differences.md) are not behaviour of the functions:
--   * The key lock (is another open transaction claiming this key?) is a
--     transaction-scoped advisory lock, pg_try_advisory_xact_lock(1768187245,
--     hash32(scope, key)): 1768187245 is "idem" in ASCII. It shares the
--     two-int4 advisory-lock space of the database: an application that takes
--     pg_advisory_xact_lock(1768187245, n) itself can make a claim answer
--     in_progress (or finish wait) for the key that hashes to n, and two keys
--     whose 32-bit hashes collide exclude each other for the length of a
--     transaction (a spurious in_progress at a rate of about [keys claimed at
--     the same moment] / 2^32). The one-bigint form pg_advisory_lock(bigint)
--     never collides with it. Keys are never mixed up: the lock only decides who
--     may write; every read and write names the full (scope, key).
--   * No shared memory: idempotency.stats has the extension's columns, all NULL.
--   * No background sweeper: schedule idempotency.sweep() (pg_cron, README).
--   * Settings are read as placeholder settings with the extension's names and
--     defaults (idempotency.default_ttl, default_lease, max_response_size,
--     sweep_batch_size); a bare number means the extension's unit.
--   * idempotency.keys is an ordinary table: pg_dump dumps it with its rows.

\set idempotency_portable_on_error_stop :ON_ERROR_STOP
\set ON_ERROR_STOP on
-- sql/portable/from_extension.sql includes this file inside its own transaction.
\if :{?idempotency_portable_in_transaction}
\else
BEGIN;
\endif
SET LOCAL client_min_messages = warning;

-- Refuse, before anything changes, beside the extension or a foreign schema.
DO $refuse$
DECLARE
  ns oid := (SELECT n.oid FROM pg_catalog.pg_namespace AS n WHERE n.nspname OPERATOR(pg_catalog.=) 'idempotency');
BEGIN
  IF EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname OPERATOR(pg_catalog.=) 'pg_idempotency') THEN
    RAISE EXCEPTION 'the pg_idempotency extension is installed in database "%": the portable edition was not installed',
      pg_catalog.current_database()
      USING ERRCODE = '42710',
            DETAIL = 'The extension already serves the same API in schema idempotency; nothing was changed.',
            HINT = 'Keep the extension, or move its keys to the portable edition with sql/portable/from_extension.sql.';
  END IF;
  IF ns IS NOT NULL
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                      WHERE p.pronamespace OPERATOR(pg_catalog.=) ns
                        AND p.proname OPERATOR(pg_catalog.=) '_portable_version')
     AND (EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.relnamespace OPERATOR(pg_catalog.=) ns)
          OR EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.pronamespace OPERATOR(pg_catalog.=) ns)
          OR EXISTS (SELECT FROM pg_catalog.pg_type AS t WHERE t.typnamespace OPERATOR(pg_catalog.=) ns)) THEN
    RAISE EXCEPTION 'schema "idempotency" in database "%" holds objects that are not the portable edition: nothing was installed',
      pg_catalog.current_database()
      USING ERRCODE = '42710',
            HINT = 'Rename or drop that schema first, or install into another database.';
  END IF;
END
$refuse$;

CREATE SCHEMA IF NOT EXISTS idempotency;
COMMENT ON SCHEMA idempotency IS 'pg_idempotency, portable edition (sql/portable/pg_idempotency_portable.sql)';

-- Types and the table: created once, kept by every later run (upgrades alter them).
DO $types$
BEGIN
  IF pg_catalog.to_regtype('idempotency.state') IS NULL THEN
    CREATE TYPE idempotency.state AS ENUM ('in_progress', 'completed');
  END IF;
  IF pg_catalog.to_regtype('idempotency.outcome') IS NULL THEN
    CREATE TYPE idempotency.outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');
  END IF;
END
$types$;

CREATE TABLE IF NOT EXISTS idempotency.keys (
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
    trace_context    text,  -- 1.2: the claiming request's W3C traceparent
    PRIMARY KEY (scope, key)
) WITH (fillfactor = 80);  -- room for finish()'s HOT update on the same page
COMMENT ON TABLE idempotency.keys IS 'Idempotency keys: one row per (scope, key), kept until expires_at';
-- 1.2 over 1.1: the column, last (as the extension's update adds it).
ALTER TABLE idempotency.keys ADD COLUMN IF NOT EXISTS trace_context text;
-- sweep() walks expired rows in expires_at order; finish() changes no indexed column (HOT).
CREATE INDEX IF NOT EXISTS keys_expires_at_idx ON idempotency.keys (expires_at);

DO $types$
BEGIN
  IF pg_catalog.to_regtype('idempotency.claim_result') IS NULL THEN
    CREATE TYPE idempotency.claim_result AS (
        outcome          idempotency.outcome,
        token            bigint,
        attempt          integer,
        recovery_point   text,
        response_status  integer,
        response_headers jsonb,
        response_body    bytea,
        expires_at       timestamptz,
        locked_until     timestamptz,
        trace_context    text
    );
  ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                     WHERE a.attrelid OPERATOR(pg_catalog.=) 'idempotency.claim_result'::pg_catalog.regclass
                       AND a.attname OPERATOR(pg_catalog.=) 'trace_context' AND NOT a.attisdropped) THEN
    ALTER TYPE idempotency.claim_result ADD ATTRIBUTE trace_context text;  -- 1.2 over 1.1
  END IF;
END
$types$;

-- 1.2 over 1.1: claim() gains a seventh parameter, a new signature. The old
-- claim steps aside here; once the new one is made, its grants are given to
-- the new one and it goes (at the end of this file).
DO $claim$
BEGIN
  IF pg_catalog.to_regprocedure('idempotency.claim(text, text, bytea, interval, interval, interval)') IS NOT NULL THEN
    ALTER FUNCTION idempotency.claim(text, text, bytea, interval, interval, interval) RENAME TO claim_before_1_2;
  END IF;
END
$claim$;

-- The edition and version of what is installed; also how a second run knows
-- that schema idempotency is ours.
CREATE OR REPLACE FUNCTION idempotency._portable_version()
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT '1.2'::text $fn$;

-- ---------------------------------------------------------------- helpers
-- Called only on bad input or to build a message; the hot paths test inline.

-- At most 64 bytes of a scope or key for a message, cut at a character boundary.
CREATE OR REPLACE FUNCTION idempotency._clip(t text)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE c text := pg_catalog.left(t, 64);
BEGIN
  WHILE pg_catalog.octet_length(c) OPERATOR(pg_catalog.>) 64 LOOP
    c := pg_catalog.left(c, -1);
  END LOOP;
  RETURN c;
END
$fn$;

-- 22004 / 22023 for a bad (scope, key), with the extension's messages.
CREATE OR REPLACE FUNCTION idempotency._check_key(scope text, key text)
RETURNS void LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  detail text := '';
  what text;
  context text;
BEGIN
  IF scope IS NULL OR key IS NULL THEN
    IF key IS NOT NULL THEN
      detail := pg_catalog.format('The key is "%s".', idempotency._clip(key));
    ELSIF scope IS NOT NULL THEN
      detail := pg_catalog.format('The scope is "%s".', idempotency._clip(scope));
    END IF;
    RAISE EXCEPTION 'idempotency % must not be NULL', CASE WHEN scope IS NULL THEN 'scope' ELSE 'key' END
      USING ERRCODE = '22004', DETAIL = detail,
            HINT = 'Pass the scope (tenant, user or endpoint) and the client''s idempotency key.';
  END IF;
  FOR what IN SELECT w FROM pg_catalog.unnest(ARRAY['scope', 'key']) AS w LOOP
    IF what OPERATOR(pg_catalog.=) 'scope' THEN
      context := pg_catalog.format('The scope is "%s" (key "%s").', idempotency._clip(scope), idempotency._clip(key));
    ELSE
      context := pg_catalog.format('The key is "%s" in scope "%s".', idempotency._clip(key), idempotency._clip(scope));
    END IF;
    IF pg_catalog.octet_length(CASE WHEN what OPERATOR(pg_catalog.=) 'scope' THEN scope ELSE key END) OPERATOR(pg_catalog.=) 0 THEN
      RAISE EXCEPTION 'idempotency % must not be empty', what
        USING ERRCODE = '22023', DETAIL = context, HINT = 'Pass a non-empty value of at most 255 bytes.';
    ELSIF pg_catalog.octet_length(CASE WHEN what OPERATOR(pg_catalog.=) 'scope' THEN scope ELSE key END) OPERATOR(pg_catalog.>) 255 THEN
      RAISE EXCEPTION 'idempotency % is % bytes long, more than 255', what,
        pg_catalog.octet_length(CASE WHEN what OPERATOR(pg_catalog.=) 'scope' THEN scope ELSE key END)
        USING ERRCODE = '22023', DETAIL = context,
              HINT = 'Use a shorter value, for example a UUID or a digest of the long one.';
    END IF;
  END LOOP;
END
$fn$;

-- A setting with the extension's name, default and unit: the extension's own
-- setting when its library is loaded in this server, else a placeholder.
-- unit: 's' or 'ms' (a bare number means that unit, as for the extension).
CREATE OR REPLACE FUNCTION idempotency._setting_interval(name text, unit text, fallback interval)
RETURNS interval LANGUAGE plpgsql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE v text := pg_catalog.current_setting(name, true);
BEGIN
  IF v IS NULL OR v OPERATOR(pg_catalog.=) '' THEN
    RETURN fallback;
  ELSIF v OPERATOR(pg_catalog.~) '^\s*[0-9]+\s*$' THEN
    RETURN pg_catalog.make_interval(secs => v::double precision OPERATOR(pg_catalog./)
                                    CASE WHEN unit OPERATOR(pg_catalog.=) 'ms' THEN 1000 ELSE 1 END);
  END IF;
  RETURN v::interval;
END
$fn$;

-- now() + an interval, with the extension's 22023 when it leaves timestamptz's range.
CREATE OR REPLACE FUNCTION idempotency._add(base timestamptz, i interval, what text, scope text, key text)
RETURNS timestamptz LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN base OPERATOR(pg_catalog.+) i;
EXCEPTION WHEN datetime_field_overflow THEN
  RAISE EXCEPTION '% is too large for key "%" in scope "%"', what, key, scope
    USING ERRCODE = '22023', DETAIL = pg_catalog.format('now() + %s is beyond the range of timestamptz.', what),
          HINT = 'Pass a smaller interval.';
END
$fn$;

-- 22023 for an interval argument that is not positive.
CREATE OR REPLACE FUNCTION idempotency._not_positive(what text, scope text, key text)
RETURNS void LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RAISE EXCEPTION '% must be positive for key "%" in scope "%"', what, key, scope
    USING ERRCODE = '22023', HINT = 'Pass a positive interval such as ''30 seconds'', or NULL for the default.';
END
$fn$;

-- 25006 on a hot standby for a call that must write, with the extension's
-- message, before any lock or statement (never the INSERT's "read-only transaction").
CREATE OR REPLACE FUNCTION idempotency._require_primary(verb text, scope text, key text, why text DEFAULT NULL)
RETURNS void LANGUAGE plpgsql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NOT pg_catalog.pg_is_in_recovery() THEN
    RETURN;
  END IF;
  RAISE EXCEPTION 'cannot % % on a hot standby', verb,
    CASE WHEN key IS NULL THEN 'expired idempotency keys'
         ELSE pg_catalog.format('idempotency key "%s" in scope "%s"', key, scope) END
    USING ERRCODE = '25006',
          DETAIL = coalesce(why, 'This server is in recovery (a read replica) and cannot write.'),
          HINT = CASE WHEN key IS NULL THEN 'Run it on the primary.'
                      ELSE pg_catalog.format('Send the request to the primary and %s the key there; a standby serves only replays, mismatches and keys in progress.', verb) END;
END
$fn$;

-- IK001 with the extension's message; row: the key's row as it is now (NULL: absent).
CREATE OR REPLACE FUNCTION idempotency._not_holder(scope text, key text, token bigint, r idempotency.keys, t_now timestamptz)
RETURNS void LANGUAGE plpgsql STABLE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE why text;
BEGIN
  IF r.expires_at IS NULL THEN  -- (expires_at is NOT NULL in the table: absent)
    why := 'No such key exists (never claimed, released, or swept).';
  ELSIF r.expires_at OPERATOR(pg_catalog.<=) t_now THEN
    why := 'The key has expired.';
  ELSIF r.token OPERATOR(pg_catalog.<>) token AND r.state OPERATOR(pg_catalog.=) 'completed'::idempotency.state THEN
    why := 'Another holder completed the key.';
  ELSIF r.token OPERATOR(pg_catalog.<>) token THEN
    why := pg_catalog.format('Another claim holds the key (attempt %s); a holder whose lease ran out loses the key to the next claim.', r.attempt);
  ELSE
    why := 'The key is already completed.';
  END IF;
  RAISE EXCEPTION 'idempotency key "%" in scope "%" is not held by the given token', key, scope
    USING ERRCODE = 'IK001', DETAIL = pg_catalog.format('Token %s: %s', token, why),
          HINT = 'Do not store a result for this request: claim the key again and act on the answer.';
END
$fn$;

-- Inlined on the hot paths (a call of a function with a SET clause costs a
-- GUC save and restore), spelled the same way everywhere:
--   key lock id: a 32-bit fold of hashtextextended(key, hashtext(scope)), the
--     key's hash chained off the scope's so that ("a","bc") and ("ab","c") differ;
--   fencing token: positive, non-zero, 64 bits of gen_random_uuid() (the strong
--     random source: unlike random(), a caller's setseed() cannot make two
--     claims share a token) with its version nibble, so 59 random bits.

-- ---------------------------------------------------------------- claim
CREATE OR REPLACE FUNCTION idempotency.claim(
    scope text, key text, fingerprint bytea DEFAULT NULL, ttl interval DEFAULT NULL,
    lease interval DEFAULT NULL, wait interval DEFAULT '0', trace_context text DEFAULT NULL)
RETURNS idempotency.claim_result LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope   text := claim.scope;
  p_key     text := claim.key;
  p_fp      bytea := claim.fingerprint;
  p_trace   text := claim.trace_context;
  t_now     timestamptz := pg_catalog.now();
  v_ttl     interval := claim.ttl;
  v_lease   interval := claim.lease;
  v_wait    interval := coalesce(claim.wait, interval '0');
  v_expires timestamptz;
  v_locked  timestamptz;
  wait_until timestamptz;
  left_ms   bigint;
  r         idempotency.keys;
  seen      idempotency.keys;
  found_row boolean;
  res       idempotency.claim_result;
  v_token   bigint;
  lock_id   integer;
  tries     integer := 0;
  claimed   boolean;
  timed_out boolean;
  saved_timeout text;
  setting   text;
BEGIN
  -- Arguments, in the extension's order; messages only on the rare bad path.
  IF p_scope IS NULL OR p_key IS NULL OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.=) 0
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.=) 0 OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.>) 255
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.>) 255 THEN
    PERFORM idempotency._check_key(p_scope, p_key);
  END IF;
  IF pg_catalog.octet_length(p_fp) OPERATOR(pg_catalog.>) 64 THEN
    RAISE EXCEPTION 'fingerprint for key "%" in scope "%" is % bytes, more than 64', p_key, p_scope, pg_catalog.octet_length(p_fp)
      USING ERRCODE = '22023', HINT = 'Pass a digest of the request, such as idempotency.fingerprint(request_json).';
  END IF;
  IF v_ttl IS NULL THEN
    setting := pg_catalog.current_setting('idempotency.default_ttl', true);
    IF setting IS NULL OR setting OPERATOR(pg_catalog.=) '' THEN
      v_ttl := interval '24 hours';
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]+\s*$' THEN  -- a bare number: the extension's unit
      v_ttl := idempotency._setting_interval('idempotency.default_ttl', 's', interval '24 hours');
    ELSE
      v_ttl := setting::interval;
    END IF;
  ELSIF v_ttl OPERATOR(pg_catalog.<=) interval '0' THEN
    PERFORM idempotency._not_positive('ttl', p_scope, p_key);
  END IF;
  IF v_lease IS NULL THEN
    setting := pg_catalog.current_setting('idempotency.default_lease', true);
    IF setting IS NULL OR setting OPERATOR(pg_catalog.=) '' THEN
      v_lease := interval '60 seconds';
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]+\s*$' THEN  -- a bare number: the extension's unit
      v_lease := idempotency._setting_interval('idempotency.default_lease', 'ms', interval '60 seconds');
    ELSE
      v_lease := setting::interval;
    END IF;
  ELSIF v_lease OPERATOR(pg_catalog.<=) interval '0' THEN
    PERFORM idempotency._not_positive('lease', p_scope, p_key);
  END IF;
  IF v_wait OPERATOR(pg_catalog.<) interval '0' THEN
    RAISE EXCEPTION 'wait must not be negative for key "%" in scope "%"', p_key, p_scope
      USING ERRCODE = '22023', HINT = 'Pass ''0'' to answer at once, or how long to wait for a concurrent holder.';
  END IF;
  -- 1.2: a W3C traceparent in the version-00 form, lower case; version ff and
  -- all-zero ids are invalid (the extension's check, strict).
  IF p_trace IS NOT NULL AND (
       p_trace OPERATOR(pg_catalog.!~) '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       OR pg_catalog.substr(p_trace, 1, 2) OPERATOR(pg_catalog.=) 'ff'
       OR pg_catalog.substr(p_trace, 4, 32) OPERATOR(pg_catalog.=) '00000000000000000000000000000000'
       OR pg_catalog.substr(p_trace, 37, 16) OPERATOR(pg_catalog.=) '0000000000000000') THEN
    RAISE EXCEPTION 'trace_context for key "%" in scope "%" is not a W3C traceparent', p_key, p_scope
      USING ERRCODE = '22023',
            DETAIL = pg_catalog.format('The value is "%s" (%s bytes).', idempotency._clip(p_trace), pg_catalog.octet_length(p_trace)),
            HINT = 'Pass the request''s traceparent header, for example 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01, or NULL.';
  END IF;
  -- The wait runs on the wall clock from here (now() is the transaction's start).
  IF v_wait OPERATOR(pg_catalog.>) interval '0' THEN
    wait_until := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) least(v_wait, interval '100 years');
  END IF;
  IF v_ttl OPERATOR(pg_catalog.<) interval '1000 years' THEN
    v_expires := t_now OPERATOR(pg_catalog.+) v_ttl;
  ELSE
    v_expires := idempotency._add(t_now, v_ttl, 'ttl', p_scope, p_key);
  END IF;
  IF v_lease OPERATOR(pg_catalog.<) interval '1000 years' THEN
    v_locked := t_now OPERATOR(pg_catalog.+) v_lease;
  ELSE
    v_locked := idempotency._add(t_now, v_lease, 'lease', p_scope, p_key);
  END IF;

  -- 1. First look, read-only: replays and mismatches answer here without a
  -- lock, a row lock, an xid or WAL. Every read names the columns the
  -- extension reads (not created_at, completed_at), so column privileges on
  -- those suffice, as for the extension.
  SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
         , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body, k.trace_context
    INTO seen.fingerprint, seen.state, seen.token, seen.attempt, seen.recovery_point
         , seen.expires_at, seen.locked_until, seen.response_status, seen.response_headers, seen.response_body
         , seen.trace_context
    FROM idempotency.keys AS k
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
  found_row := FOUND;
  r := seen;

  -- 2. Then the key lock, unless the row answers; 3. the write; a row that is
  -- not what was seen is judged again (at most three times, as the extension).
  LOOP
    IF found_row AND r.expires_at OPERATOR(pg_catalog.>) t_now THEN
      IF p_fp IS NOT NULL AND r.fingerprint IS NOT NULL AND r.fingerprint OPERATOR(pg_catalog.<>) p_fp THEN
        res.outcome := 'mismatch';
        RETURN res;
      ELSIF r.state OPERATOR(pg_catalog.=) 'completed'::idempotency.state THEN
        res.outcome := 'replay';
        res.attempt := r.attempt;
        res.recovery_point := r.recovery_point;
        res.response_status := r.response_status;
        res.response_headers := r.response_headers;
        res.response_body := r.response_body;
        res.expires_at := r.expires_at;
        res.trace_context := r.trace_context;  -- the link to the request that did the work
        RETURN res;
      ELSIF r.locked_until OPERATOR(pg_catalog.>) t_now THEN
        res.outcome := 'in_progress';
        res.attempt := r.attempt;
        res.expires_at := r.expires_at;
        res.locked_until := r.locked_until;
        res.trace_context := r.trace_context;  -- the holder's request
        RETURN res;
      END IF;
    END IF;
    EXIT WHEN tries OPERATOR(pg_catalog.>=) 3;

    IF tries OPERATOR(pg_catalog.=) 0 THEN
      IF pg_catalog.pg_is_in_recovery() THEN  -- a read replica answers only what needs no write
        PERFORM idempotency._require_primary('claim', p_scope, p_key,
          'The key is new, expired or its lease is over: claiming it writes, and this server is in recovery (a read replica).');
      END IF;
      -- The key lock: another open transaction claiming this key holds it.
      lock_id := ((pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.#)
           (pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.>>) 32))
          OPERATOR(pg_catalog.&) 4294967295 OPERATOR(pg_catalog.-) 2147483648)::integer;
      IF NOT pg_catalog.pg_try_advisory_xact_lock(1768187245, lock_id) THEN
        timed_out := true;
        IF wait_until IS NOT NULL THEN
          -- A real lock wait (visible in pg_locks), bounded by lock_timeout in
          -- a subtransaction; the function's SET clause restores lock_timeout.
          left_ms := pg_catalog.ceil(pg_catalog.date_part('epoch', wait_until OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp())
                                     OPERATOR(pg_catalog.*) 1000)::bigint;
          saved_timeout := pg_catalog.current_setting('lock_timeout');
          BEGIN
            PERFORM pg_catalog.set_config('lock_timeout', greatest(1, left_ms)::text, true);
            PERFORM pg_catalog.pg_advisory_xact_lock(1768187245, lock_id);
            PERFORM pg_catalog.set_config('lock_timeout', saved_timeout, true);
            timed_out := false;
          EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            timed_out := true;
          END;
        END IF;
        IF timed_out THEN
          r := seen;
          EXIT;
        END IF;
      END IF;
    END IF;
    tries := tries OPERATOR(pg_catalog.+) 1;

    v_token := greatest(1, ('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr(
                 pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 1, 8), 'hex'))::bit(64)::bigint
               OPERATOR(pg_catalog.&) 9223372036854775807);
    claimed := false;
    IF NOT found_row THEN
      -- A new key: one plain INSERT; DO NOTHING answers a conflict without a row lock.
      INSERT INTO idempotency.keys AS k (scope, key, fingerprint, state, token, attempt, recovery_point,
                                         locked_until, created_at, completed_at, expires_at,
                                         response_status, response_headers, response_body, trace_context)
      VALUES (p_scope, p_key, p_fp, 'in_progress'::idempotency.state, v_token, 1, NULL,
              v_locked, t_now, NULL, v_expires, NULL, NULL, NULL, p_trace)
      ON CONFLICT (scope, key) DO NOTHING
      RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until
           INTO r.attempt, r.recovery_point, r.expires_at, r.locked_until;
      claimed := FOUND;
    ELSE
      -- An existing row: re-use it when expired, take it over when its lease
      -- is over (fingerprint permitting). Its row lock is waited for no
      -- longer than the caller's wait: a sweep deleting that expired row is
      -- the one writer that does not take the key lock.
      left_ms := 1;
      IF wait_until IS NOT NULL THEN
        left_ms := greatest(1, pg_catalog.ceil(pg_catalog.date_part('epoch',
                     wait_until OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) OPERATOR(pg_catalog.*) 1000)::bigint);
      END IF;
      saved_timeout := pg_catalog.current_setting('lock_timeout');
      BEGIN
        IF wait_until IS NULL THEN  -- no wait: never block, not even for a moment
          PERFORM FROM idempotency.keys AS k
            WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key FOR UPDATE NOWAIT;
        ELSE
          PERFORM pg_catalog.set_config('lock_timeout', left_ms::text, true);
        END IF;
        UPDATE idempotency.keys AS k SET
               fingerprint = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN p_fp
                                  ELSE coalesce(k.fingerprint, p_fp) END,
               state = 'in_progress'::idempotency.state, token = v_token,
               attempt = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN 1
                              ELSE k.attempt OPERATOR(pg_catalog.+) 1 END,
               recovery_point = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN NULL ELSE k.recovery_point END,
               locked_until = v_locked,
               created_at = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN t_now ELSE k.created_at END,
               completed_at = NULL,
               expires_at = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN v_expires ELSE k.expires_at END,
               response_status = NULL, response_headers = NULL, response_body = NULL,
               trace_context = p_trace  -- a takeover is a new claim: the new claimer's context
         WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
           AND (k.expires_at OPERATOR(pg_catalog.<=) t_now
                OR (k.state OPERATOR(pg_catalog.=) 'in_progress'::idempotency.state
                    AND k.locked_until OPERATOR(pg_catalog.<=) t_now
                    AND (k.fingerprint IS NULL OR p_fp IS NULL OR k.fingerprint OPERATOR(pg_catalog.=) p_fp)))
        RETURNING k.attempt, k.recovery_point, k.expires_at, k.locked_until
             INTO r.attempt, r.recovery_point, r.expires_at, r.locked_until;
        claimed := FOUND;
        PERFORM pg_catalog.set_config('lock_timeout', saved_timeout, true);
      EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
        r := seen;
        EXIT;
      END;
    END IF;

    IF claimed THEN
      res.outcome := 'claimed';
      res.token := v_token;
      res.attempt := r.attempt;
      res.recovery_point := r.recovery_point;
      res.expires_at := r.expires_at;
      res.locked_until := r.locked_until;
      res.trace_context := p_trace;
      RETURN res;
    END IF;
    -- The row is not what the first look saw (committed or swept since).
    SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
           , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body, k.trace_context
      INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
           , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body, r.trace_context
      FROM idempotency.keys AS k
     WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
    found_row := FOUND;
  END LOOP;

  -- in_progress: what is known of the holder, if its row is visible at all.
  res.outcome := 'in_progress';
  IF found_row AND r.expires_at OPERATOR(pg_catalog.>) t_now THEN
    res.attempt := r.attempt;
    res.expires_at := r.expires_at;
    res.locked_until := r.locked_until;
    res.trace_context := r.trace_context;
  END IF;
  RETURN res;
END
$fn$;

-- ---------------------------------------------------------------- finish
CREATE OR REPLACE FUNCTION idempotency.finish(
    scope text, key text, token bigint, response_status integer,
    response_body bytea DEFAULT NULL, response_headers jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope  text := finish.scope;
  p_key    text := finish.key;
  p_token  bigint := finish.token;
  p_status integer := finish.response_status;
  p_body   bytea := finish.response_body;
  p_hdrs   jsonb := finish.response_headers;
  t_now    timestamptz := pg_catalog.now();
  lim      bigint;
  size     bigint;
  r        idempotency.keys;
BEGIN
  IF p_scope IS NULL OR p_key IS NULL OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.=) 0
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.=) 0 OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.>) 255
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.>) 255 THEN
    PERFORM idempotency._check_key(p_scope, p_key);
  END IF;
  IF p_token IS NULL THEN
    RAISE EXCEPTION 'token must not be NULL for key "%" in scope "%"', p_key, p_scope USING ERRCODE = '22004';
  END IF;
  IF p_status IS NULL THEN
    RAISE EXCEPTION 'response_status must not be NULL for key "%" in scope "%"', p_key, p_scope USING ERRCODE = '22004';
  END IF;
  -- Body bytes plus the headers' binary jsonb size (without its 4-byte header), as the extension counts.
  size := coalesce(pg_catalog.octet_length(p_body), 0)
          OPERATOR(pg_catalog.+) coalesce(pg_catalog.pg_column_size(p_hdrs) OPERATOR(pg_catalog.-) 4, 0);
  lim := coalesce(pg_catalog.pg_size_bytes(nullif(
           pg_catalog.current_setting('idempotency.max_response_size', true), '')), 1048576);
  IF size OPERATOR(pg_catalog.>) lim THEN
    RAISE EXCEPTION 'response for idempotency key "%" in scope "%" is % bytes, more than idempotency.max_response_size (% bytes)',
      p_key, p_scope, size, lim
      USING ERRCODE = '54000',
            HINT = 'Store a smaller response (for example a reference to it), or raise idempotency.max_response_size.';
  END IF;

  IF pg_catalog.pg_is_in_recovery() THEN
    PERFORM idempotency._require_primary('finish', p_scope, p_key);
  END IF;
  -- The key lock: a claim racing with this finish answers in_progress at once
  -- instead of waiting for this transaction's row lock.
  PERFORM pg_catalog.pg_advisory_xact_lock(1768187245,
    ((pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.#)
           (pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.>>) 32))
          OPERATOR(pg_catalog.&) 4294967295 OPERATOR(pg_catalog.-) 2147483648)::integer);
  UPDATE idempotency.keys AS k
     SET state = 'completed'::idempotency.state, completed_at = t_now, locked_until = NULL,
         response_status = p_status, response_body = p_body, response_headers = p_hdrs
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
     AND k.token OPERATOR(pg_catalog.=) p_token AND k.state OPERATOR(pg_catalog.=) 'in_progress'::idempotency.state
     AND k.expires_at OPERATOR(pg_catalog.>) t_now;
  IF FOUND THEN
    RETURN true;
  END IF;

  SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
         , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
    INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
         , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
    FROM idempotency.keys AS k
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
  IF NOT FOUND OR r.expires_at OPERATOR(pg_catalog.<=) t_now OR r.token OPERATOR(pg_catalog.<>) p_token
     OR r.state OPERATOR(pg_catalog.<>) 'completed'::idempotency.state THEN
    PERFORM idempotency._not_holder(p_scope, p_key, p_token, r, t_now);
  END IF;
  IF r.response_status IS NOT DISTINCT FROM p_status AND r.response_body IS NOT DISTINCT FROM p_body
     AND r.response_headers IS NOT DISTINCT FROM p_hdrs THEN
    RETURN false;  -- the same response again: nothing changes
  END IF;
  RAISE EXCEPTION 'idempotency key "%" in scope "%" was already finished with a different response', p_key, p_scope
    USING ERRCODE = 'IK002',
          DETAIL = pg_catalog.format('Token %s stored status %s; this call gave status %s.', p_token,
                                     coalesce(r.response_status::text, ''), p_status),
          HINT = 'A request''s response is stored once; replay the stored one instead of finishing again.';
END
$fn$;

-- ---------------------------------------------------------------- checkpoint
CREATE OR REPLACE FUNCTION idempotency.checkpoint(
    scope text, key text, token bigint, recovery_point text, lease interval DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope  text := checkpoint.scope;
  p_key    text := checkpoint.key;
  p_token  bigint := checkpoint.token;
  p_rp     text := checkpoint.recovery_point;
  v_lease  interval := checkpoint.lease;
  t_now    timestamptz := pg_catalog.now();
  v_locked timestamptz;
  r        idempotency.keys;
  setting  text;
BEGIN
  PERFORM idempotency._check_key(p_scope, p_key);
  IF p_token IS NULL THEN
    RAISE EXCEPTION 'token must not be NULL for key "%" in scope "%"', p_key, p_scope USING ERRCODE = '22004';
  END IF;
  IF v_lease IS NULL THEN
    setting := pg_catalog.current_setting('idempotency.default_lease', true);
    IF setting IS NULL OR setting OPERATOR(pg_catalog.=) '' THEN
      v_lease := interval '60 seconds';
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]+\s*$' THEN  -- a bare number: the extension's unit
      v_lease := idempotency._setting_interval('idempotency.default_lease', 'ms', interval '60 seconds');
    ELSE
      v_lease := setting::interval;
    END IF;
  ELSIF v_lease OPERATOR(pg_catalog.<=) interval '0' THEN
    PERFORM idempotency._not_positive('lease', p_scope, p_key);
  END IF;
  IF v_lease OPERATOR(pg_catalog.<) interval '1000 years' THEN
    v_locked := t_now OPERATOR(pg_catalog.+) v_lease;
  ELSE  -- may leave timestamptz's range: 22023 (an exception block, so only here)
    v_locked := idempotency._add(t_now, v_lease, 'lease', p_scope, p_key);
  END IF;
  IF pg_catalog.pg_is_in_recovery() THEN
    PERFORM idempotency._require_primary('checkpoint', p_scope, p_key);
  END IF;
  PERFORM pg_catalog.pg_advisory_xact_lock(1768187245,
    ((pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.#)
           (pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.>>) 32))
          OPERATOR(pg_catalog.&) 4294967295 OPERATOR(pg_catalog.-) 2147483648)::integer);
  -- A NULL recovery point renews the lease and keeps the last one.
  UPDATE idempotency.keys AS k
     SET recovery_point = coalesce(p_rp, k.recovery_point), locked_until = v_locked
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
     AND k.token OPERATOR(pg_catalog.=) p_token AND k.state OPERATOR(pg_catalog.=) 'in_progress'::idempotency.state
     AND k.expires_at OPERATOR(pg_catalog.>) t_now;
  IF NOT FOUND THEN
    SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
           , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
      INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
           , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
      FROM idempotency.keys AS k
     WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
    PERFORM idempotency._not_holder(p_scope, p_key, p_token, r, t_now);
  END IF;
  RETURN v_locked;
END
$fn$;

-- ---------------------------------------------------------------- release
CREATE OR REPLACE FUNCTION idempotency.release(scope text, key text, token bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope text := release.scope;
  p_key   text := release.key;
  p_token bigint := release.token;
  t_now   timestamptz := pg_catalog.now();
  r       idempotency.keys;
BEGIN
  PERFORM idempotency._check_key(p_scope, p_key);
  IF p_token IS NULL THEN
    RAISE EXCEPTION 'token must not be NULL for key "%" in scope "%"', p_key, p_scope USING ERRCODE = '22004';
  END IF;
  IF pg_catalog.pg_is_in_recovery() THEN
    PERFORM idempotency._require_primary('release', p_scope, p_key);
  END IF;
  PERFORM pg_catalog.pg_advisory_xact_lock(1768187245,
    ((pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.#)
           (pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.>>) 32))
          OPERATOR(pg_catalog.&) 4294967295 OPERATOR(pg_catalog.-) 2147483648)::integer);
  DELETE FROM idempotency.keys AS k
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
     AND k.token OPERATOR(pg_catalog.=) p_token AND k.state OPERATOR(pg_catalog.=) 'in_progress'::idempotency.state
     AND k.expires_at OPERATOR(pg_catalog.>) t_now;
  IF NOT FOUND THEN
    SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
           , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
      INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
           , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
      FROM idempotency.keys AS k
     WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
    PERFORM idempotency._not_holder(p_scope, p_key, p_token, r, t_now);
  END IF;
  RETURN true;
END
$fn$;

-- ---------------------------------------------------------------- lookup
CREATE OR REPLACE FUNCTION idempotency.lookup(scope text, key text)
RETURNS idempotency.keys LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope text := lookup.scope;
  p_key   text := lookup.key;
  r idempotency.keys;
BEGIN
  PERFORM idempotency._check_key(p_scope, p_key);
  SELECT * INTO r FROM idempotency.keys AS k
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
     AND k.expires_at OPERATOR(pg_catalog.>) pg_catalog.now();
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  RETURN r;
END
$fn$;

-- ---------------------------------------------------------------- fingerprint
-- The extension's canonical form: compact JSON, object keys in jsonb's order
-- (by length, then bytes; duplicates dropped), numbers without trailing zeros
-- or exponents, strings escaped as JSON does; then SHA-256.
CREATE OR REPLACE FUNCTION idempotency._canonical(j jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  RETURN CASE pg_catalog.jsonb_typeof(j)
    WHEN 'object' THEN '{' OPERATOR(pg_catalog.||) coalesce((
        SELECT pg_catalog.string_agg(pg_catalog.to_json(e.k)::text OPERATOR(pg_catalog.||) ':'
                                     OPERATOR(pg_catalog.||) idempotency._canonical(e.v), ',' ORDER BY e.n)
          FROM pg_catalog.jsonb_each(j) WITH ORDINALITY AS e(k, v, n)), '') OPERATOR(pg_catalog.||) '}'
    WHEN 'array' THEN '[' OPERATOR(pg_catalog.||) coalesce((
        SELECT pg_catalog.string_agg(idempotency._canonical(e.v), ',' ORDER BY e.n)
          FROM pg_catalog.jsonb_array_elements(j) WITH ORDINALITY AS e(v, n)), '') OPERATOR(pg_catalog.||) ']'
    WHEN 'number' THEN pg_catalog.trim_scale((j OPERATOR(pg_catalog.#>>) '{}')::numeric)::text
    WHEN 'string' THEN pg_catalog.to_json(j OPERATOR(pg_catalog.#>>) '{}')::text
    ELSE j::text
  END;
END
$fn$;

CREATE OR REPLACE FUNCTION idempotency.fingerprint(request jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT pg_catalog.sha256(pg_catalog.convert_to(idempotency._canonical(request), 'UTF8'))
$fn$;

-- ---------------------------------------------------------------- sweep
-- Schedule it where pg_cron exists:
--   SELECT cron.schedule('idempotency-sweep', '* * * * *', 'SELECT idempotency.sweep()');
CREATE OR REPLACE FUNCTION idempotency.sweep(batch_size integer DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n     bigint;
  lim   bigint := sweep.batch_size;
  t_now timestamptz := pg_catalog.now();
BEGIN
  IF lim IS NULL THEN
    lim := coalesce(nullif(pg_catalog.current_setting('idempotency.sweep_batch_size', true), '')::bigint, 10000);
  ELSIF lim OPERATOR(pg_catalog.<=) 0 THEN
    RAISE EXCEPTION 'batch_size must be positive, not %', lim
      USING ERRCODE = '22023',
            HINT = 'Pass how many expired keys to delete at most, or NULL for idempotency.sweep_batch_size.';
  END IF;
  IF pg_catalog.pg_is_in_recovery() THEN
    PERFORM idempotency._require_primary('sweep', NULL, NULL);
  END IF;
  -- Oldest first through the expires_at index; a row a claim is working on is
  -- skipped, never waited for; deleted by ctid (a TID scan).
  DELETE FROM idempotency.keys
   WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
     SELECT e.ctid FROM idempotency.keys AS e
      WHERE e.expires_at OPERATOR(pg_catalog.<=) t_now
        AND (e.state OPERATOR(pg_catalog.<>) 'in_progress'::idempotency.state OR e.locked_until IS NULL
             OR e.locked_until OPERATOR(pg_catalog.<=) t_now)
      ORDER BY e.expires_at LIMIT lim
        FOR UPDATE SKIP LOCKED));
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$;

-- ---------------------------------------------------------------- once (1.1)
-- For idempotent consumers: true when this transaction is the first to
-- process the key (recorded as completed, with no response, in the caller's
-- transaction); false when it was processed already; 55P03 when another
-- transaction holds it past `wait` (never false: that one may still roll back).
CREATE OR REPLACE FUNCTION idempotency.once(
    scope text, key text, ttl interval DEFAULT NULL, wait interval DEFAULT '0')
RETURNS boolean LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  p_scope   text := once.scope;
  p_key     text := once.key;
  t_now     timestamptz := pg_catalog.now();
  v_ttl     interval := once.ttl;
  v_wait    interval := coalesce(once.wait, interval '0');
  v_expires timestamptz;
  wait_until timestamptz;
  left_ms   bigint;
  r         idempotency.keys;
  found_row boolean;
  lock_id   integer;
  locked    boolean := false;
  writes    integer := 0;
  written   boolean;
  leased    boolean := false;
  saved_timeout text;
  setting   text;
  v_token   bigint;
BEGIN
  IF p_scope IS NULL OR p_key IS NULL OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.=) 0
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.=) 0 OR pg_catalog.octet_length(p_scope) OPERATOR(pg_catalog.>) 255
     OR pg_catalog.octet_length(p_key) OPERATOR(pg_catalog.>) 255 THEN
    PERFORM idempotency._check_key(p_scope, p_key);
  END IF;
  IF v_ttl IS NULL THEN
    setting := pg_catalog.current_setting('idempotency.default_ttl', true);
    IF setting IS NULL OR setting OPERATOR(pg_catalog.=) '' THEN
      v_ttl := interval '24 hours';
    ELSIF setting OPERATOR(pg_catalog.~) '^\s*[0-9]+\s*$' THEN  -- a bare number: the extension's unit
      v_ttl := idempotency._setting_interval('idempotency.default_ttl', 's', interval '24 hours');
    ELSE
      v_ttl := setting::interval;
    END IF;
  ELSIF v_ttl OPERATOR(pg_catalog.<=) interval '0' THEN
    PERFORM idempotency._not_positive('ttl', p_scope, p_key);
  END IF;
  IF v_wait OPERATOR(pg_catalog.<) interval '0' THEN
    RAISE EXCEPTION 'wait must not be negative for key "%" in scope "%"', p_key, p_scope
      USING ERRCODE = '22023', HINT = 'Pass ''0'' to answer at once, or how long to wait for a concurrent holder.';
  END IF;
  -- The wait runs on the wall clock from here; every other time is now().
  IF v_wait OPERATOR(pg_catalog.>) interval '0' THEN
    wait_until := pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) least(v_wait, interval '100 years');
  END IF;
  IF v_ttl OPERATOR(pg_catalog.<) interval '1000 years' THEN
    v_expires := t_now OPERATOR(pg_catalog.+) v_ttl;
  ELSE  -- may leave timestamptz's range: 22023 (an exception block, so only here)
    v_expires := idempotency._add(t_now, v_ttl, 'ttl', p_scope, p_key);
  END IF;

  -- Every call may have to record the key: a standby refuses them all alike.
  IF pg_catalog.pg_is_in_recovery() THEN
    PERFORM idempotency._require_primary('process', p_scope, p_key,
      'once() records the key it processes, and this server is in recovery (a read replica).');
  END IF;
  -- First look, read-only: a processed key answers here without a lock or an xid.
  SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
         , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
    INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
         , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
    FROM idempotency.keys AS k
   WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
  found_row := FOUND;
  <<decide>>
  LOOP
    IF found_row AND r.expires_at OPERATOR(pg_catalog.>) t_now THEN
      IF r.state OPERATOR(pg_catalog.=) 'completed'::idempotency.state THEN
        RETURN false;
      ELSIF r.locked_until OPERATOR(pg_catalog.>) t_now THEN
        -- A committed claim() holds it with a running lease: it may finish
        -- (false) or release it; look again every 50 ms while the wait lasts.
        IF wait_until IS NULL OR pg_catalog.clock_timestamp() OPERATOR(pg_catalog.>=) wait_until THEN
          leased := true;
          EXIT decide;
        END IF;
        PERFORM pg_catalog.pg_sleep(least(0.05, greatest(0.001, pg_catalog.date_part('epoch',
                  wait_until OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()))));
        SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
               , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
          INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
               , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
          FROM idempotency.keys AS k
         WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
        found_row := FOUND;
        CONTINUE decide;
      END IF;
    END IF;
    -- Absent, expired or lease over: the key lock, which waits for an open
    -- transaction working on the same key.
    IF NOT locked THEN
      lock_id := ((pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.#)
           (pg_catalog.hashtextextended(p_key, pg_catalog.hashtext(p_scope)::bigint) OPERATOR(pg_catalog.>>) 32))
          OPERATOR(pg_catalog.&) 4294967295 OPERATOR(pg_catalog.-) 2147483648)::integer;
      locked := pg_catalog.pg_try_advisory_xact_lock(1768187245, lock_id);
      IF NOT locked AND wait_until IS NOT NULL THEN
        left_ms := greatest(1, pg_catalog.ceil(pg_catalog.date_part('epoch',
                     wait_until OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) OPERATOR(pg_catalog.*) 1000)::bigint);
        saved_timeout := pg_catalog.current_setting('lock_timeout');
        BEGIN
          PERFORM pg_catalog.set_config('lock_timeout', left_ms::text, true);
          PERFORM pg_catalog.pg_advisory_xact_lock(1768187245, lock_id);
          PERFORM pg_catalog.set_config('lock_timeout', saved_timeout, true);
          locked := true;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
          locked := false;
        END;
      END IF;
      EXIT decide WHEN NOT locked;
    END IF;
    EXIT decide WHEN writes OPERATOR(pg_catalog.=) 3;
    writes := writes OPERATOR(pg_catalog.+) 1;
    -- The token is made here and passed to the statement as a parameter.
    v_token := greatest(1, ('x' OPERATOR(pg_catalog.||) pg_catalog.encode(pg_catalog.substr(
                 pg_catalog.uuid_send(pg_catalog.gen_random_uuid()), 1, 8), 'hex'))::bit(64)::bigint
               OPERATOR(pg_catalog.&) 9223372036854775807);
    IF NOT found_row THEN
      INSERT INTO idempotency.keys AS k (scope, key, fingerprint, state, token, attempt, recovery_point,
                                         locked_until, created_at, completed_at, expires_at,
                                         response_status, response_headers, response_body)
      VALUES (p_scope, p_key, NULL, 'completed'::idempotency.state, v_token, 1, NULL,
              NULL, t_now, t_now, v_expires, NULL, NULL, NULL)
      ON CONFLICT (scope, key) DO NOTHING;
      written := FOUND;
    ELSE
      -- The rows claim() takes over (expired, or in_progress with the lease
      -- over), recorded completed at once; the row wait is bounded by `wait`.
      left_ms := 1;
      IF wait_until IS NOT NULL THEN
        left_ms := greatest(1, pg_catalog.ceil(pg_catalog.date_part('epoch',
                     wait_until OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) OPERATOR(pg_catalog.*) 1000)::bigint);
      END IF;
      saved_timeout := pg_catalog.current_setting('lock_timeout');
      BEGIN
        IF wait_until IS NULL THEN  -- no wait: never block, not even for a moment
          PERFORM FROM idempotency.keys AS k
            WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key FOR UPDATE NOWAIT;
        ELSE
          PERFORM pg_catalog.set_config('lock_timeout', left_ms::text, true);
        END IF;
        UPDATE idempotency.keys AS k SET
               fingerprint = NULL, state = 'completed'::idempotency.state, token = v_token,
               attempt = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN 1
                              ELSE k.attempt OPERATOR(pg_catalog.+) 1 END,
               recovery_point = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN NULL ELSE k.recovery_point END,
               locked_until = NULL,
               created_at = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN t_now ELSE k.created_at END,
               completed_at = t_now,
               expires_at = CASE WHEN k.expires_at OPERATOR(pg_catalog.<=) t_now THEN v_expires ELSE k.expires_at END,
               response_status = NULL, response_headers = NULL, response_body = NULL,
               trace_context = NULL  -- a new claim with no context: the old claimer's is not this one's
         WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key
           AND (k.expires_at OPERATOR(pg_catalog.<=) t_now
                OR (k.state OPERATOR(pg_catalog.=) 'in_progress'::idempotency.state
                    AND k.locked_until OPERATOR(pg_catalog.<=) t_now));
        written := FOUND;
        PERFORM pg_catalog.set_config('lock_timeout', saved_timeout, true);
      EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
        EXIT decide;
      END;
    END IF;
    IF written THEN
      RETURN true;
    END IF;
    -- Someone else's row is there now (committed since the first look): look
    -- again and answer for it.
    SELECT k.fingerprint, k.state, k.token, k.attempt, k.recovery_point
           , k.expires_at, k.locked_until, k.response_status, k.response_headers, k.response_body
      INTO r.fingerprint, r.state, r.token, r.attempt, r.recovery_point
           , r.expires_at, r.locked_until, r.response_status, r.response_headers, r.response_body
      FROM idempotency.keys AS k
     WHERE k.scope OPERATOR(pg_catalog.=) p_scope AND k.key OPERATOR(pg_catalog.=) p_key;
    found_row := FOUND;
  END LOOP;

  -- Held by another transaction that may still commit or roll back: never false.
  RAISE EXCEPTION 'idempotency key "%" in scope "%" is being processed by another transaction', p_key, p_scope
    USING ERRCODE = '55P03',
          DETAIL = CASE WHEN v_wait OPERATOR(pg_catalog.=) interval '0' THEN 'once() was called without a wait.'
                        ELSE pg_catalog.format('It was still held after waiting %s ms.',
                               pg_catalog.ceil(pg_catalog.date_part('epoch', v_wait) OPERATOR(pg_catalog.*) 1000)::bigint) END
                   OPERATOR(pg_catalog.||)
                   CASE WHEN leased THEN pg_catalog.format(' A claim holds it in_progress with a lease running until %s; it may still finish or release it.', r.locked_until)
                        ELSE ' That transaction may still commit or roll back.' END
                   OPERATOR(pg_catalog.||) ' Whether the key was processed is not known yet.',
          HINT = 'Do not acknowledge the message: let it be delivered again, or call once() with a longer wait.';
END
$fn$;

-- ---------------------------------------------------------------- stats
-- No shared memory in SQL: the view has the extension's shape, and counters
-- that are not kept are NULL (a shared counter row would serialise every claim).
CREATE OR REPLACE FUNCTION idempotency._stats(
    OUT claims bigint, OUT replays bigint, OUT in_progress bigint, OUT mismatches bigint,
    OUT takeovers bigint, OUT finishes bigint, OUT releases bigint, OUT swept bigint,
    OUT last_sweep_at timestamptz)
RETURNS record LANGUAGE sql VOLATILE PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
         NULL::bigint, NULL::bigint, NULL::timestamptz
$fn$;
CREATE OR REPLACE VIEW idempotency.stats AS SELECT * FROM idempotency._stats();
COMMENT ON VIEW idempotency.stats IS 'pg_idempotency counters: NULL in the portable edition (no shared memory)';

-- Callers' rights: nothing of the API is granted to PUBLIC, as in the
-- extension. An application role needs USAGE on the schema, EXECUTE on the
-- functions and SELECT, INSERT, UPDATE, DELETE on idempotency.keys. The
-- helpers (_*) stay executable by PUBLIC: they read nothing and only build
-- values and messages. Grants given to roles survive a re-run.
REVOKE ALL ON FUNCTION
    idempotency.claim(text, text, bytea, interval, interval, interval, text),
    idempotency.finish(text, text, bigint, integer, bytea, jsonb),
    idempotency.checkpoint(text, text, bigint, text, interval),
    idempotency.release(text, text, bigint),
    idempotency.lookup(text, text),
    idempotency.fingerprint(jsonb),
    idempotency.sweep(integer),
    idempotency.once(text, text, interval, interval),
    idempotency._stats()
FROM PUBLIC;

-- 1.2 over 1.1: the old claim's grants on the new claim, then the old one goes.
DO $claim$
DECLARE
  entry record;
BEGIN
  IF pg_catalog.to_regprocedure('idempotency.claim_before_1_2(text, text, bytea, interval, interval, interval)') IS NULL THEN
    RETURN;
  END IF;
  FOR entry IN
    SELECT x.grantee, x.is_grantable
      FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS x
     WHERE p.oid OPERATOR(pg_catalog.=) 'idempotency.claim_before_1_2(text, text, bytea, interval, interval, interval)'::pg_catalog.regprocedure
       AND x.grantee OPERATOR(pg_catalog.<>) p.proowner
  LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION idempotency.claim(text, text, bytea, interval, interval, interval, text) TO %s%s',
      CASE WHEN entry.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
           ELSE pg_catalog.quote_ident((SELECT r.rolname FROM pg_catalog.pg_roles AS r
                                        WHERE r.oid OPERATOR(pg_catalog.=) entry.grantee)::text) END,
      CASE WHEN entry.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
  DROP FUNCTION idempotency.claim_before_1_2(text, text, bytea, interval, interval, interval);
END
$claim$;

\if :{?idempotency_portable_in_transaction}
\else
COMMIT;
\endif
\set ON_ERROR_STOP :idempotency_portable_on_error_stop
\unset idempotency_portable_on_error_stop
