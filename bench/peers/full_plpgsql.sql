-- peer_full: the whole pg_idempotency contract (../shared/API.md) hand-written in
-- PL/pgSQL, as a team would have to write it without the extension. It is the
-- "full-contract peer" of bench/run, and bench/peers/check-full-peer.sh runs the
-- extension's SQL tests against it (installed under the schema name
-- `idempotency`, by rewriting every `peer_full` in this file).
--
-- Same table shape and indexes as idempotency.keys. Differences that are not
-- behaviour of the functions:
--   * the key lock is an advisory lock (pg_try_advisory_xact_lock) on a 64-bit
--     hash of (scope, key), so it shares the application's advisory-lock space;
--   * settings are read as placeholder GUCs named like this schema
--     (peer_full.default_ttl, ... ; idempotency.* once renamed), defaults as in
--     API.md;
--   * no shared-memory counters: the stats view exists but reports NULLs;
--   * no background sweeper: sweep() must be called (e.g. from pg_cron).
--
-- Install: psql -f full_plpgsql.sql (idempotent: drops and recreates the schema).

DROP SCHEMA IF EXISTS peer_full CASCADE;
CREATE SCHEMA peer_full;

CREATE TYPE peer_full.state AS ENUM ('in_progress', 'completed');
CREATE TYPE peer_full.outcome AS ENUM ('claimed', 'replay', 'in_progress', 'mismatch');

CREATE TABLE peer_full.keys (
  scope            text NOT NULL,
  key              text NOT NULL,
  fingerprint      bytea,
  state            peer_full.state NOT NULL,
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
CREATE INDEX keys_expires_at_idx ON peer_full.keys (expires_at);

CREATE TYPE peer_full.claim_result AS (
  outcome          peer_full.outcome,
  token            bigint,
  attempt          int,
  recovery_point   text,
  response_status  int,
  response_headers jsonb,
  response_body    bytea,
  expires_at       timestamptz,
  locked_until     timestamptz
);

-- Shared argument checks (22004 / 22023), as the extension's args layer does.
CREATE FUNCTION peer_full._check_key(scope text, key text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  IF scope IS NULL OR key IS NULL THEN
    RAISE EXCEPTION 'idempotency % must not be NULL (key %, scope %)',
      CASE WHEN scope IS NULL THEN 'scope' ELSE 'key' END,
      coalesce(quote_ident(key), 'NULL'), coalesce(quote_ident(scope), 'NULL')
      USING ERRCODE = '22004', HINT = 'Pass the scope (tenant, user or endpoint) and the client''s idempotency key.';
  END IF;
  IF scope = '' OR octet_length(scope) > 255 THEN
    RAISE EXCEPTION 'idempotency scope must be 1 to 255 bytes, not % (key %)', octet_length(scope), quote_ident(key)
      USING ERRCODE = '22023';
  END IF;
  IF key = '' OR octet_length(key) > 255 THEN
    RAISE EXCEPTION 'idempotency key must be 1 to 255 bytes, not % (key %, scope %)', octet_length(key),
      quote_ident(key), quote_ident(scope)
      USING ERRCODE = '22023', HINT = 'Use a shorter key, for example a UUID.';
  END IF;
END
$fn$;

CREATE FUNCTION peer_full._interval_setting(name text, given interval, fallback interval, what text, key text)
RETURNS interval LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE v interval;
BEGIN
  v := coalesce(given, nullif(current_setting(name, true), '')::interval, fallback);
  IF v <= interval '0' OR v > interval '100000 years' THEN
    RAISE EXCEPTION '% must be positive and at most 100000 years, not % (key %)', what, v, quote_ident(key)
      USING ERRCODE = '22023';
  END IF;
  RETURN v;
END
$fn$;

CREATE FUNCTION peer_full.claim(scope text, key text, fingerprint bytea DEFAULT NULL,
                                ttl interval DEFAULT NULL, lease interval DEFAULT NULL,
                                wait interval DEFAULT '0')
RETURNS peer_full.claim_result LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE
  r        peer_full.keys;
  res      peer_full.claim_result;
  t_now    timestamptz := now();
  v_ttl    interval;
  v_lease  interval;
  v_token  bigint;
  lk       bigint;
  old_timeout text;
  tries    int := 0;
  seen     boolean;
  found_row boolean;
  expired_seen boolean;
  inserted boolean;
  got      boolean;
BEGIN
  -- Checks inlined on the hot path (a PERFORM of a helper costs an executor call).
  IF claim.scope IS NULL OR claim.key IS NULL THEN
    PERFORM peer_full._check_key(claim.scope, claim.key);
  ELSIF claim.scope = '' OR claim.key = '' OR octet_length(claim.scope) > 255 OR octet_length(claim.key) > 255 THEN
    PERFORM peer_full._check_key(claim.scope, claim.key);
  END IF;
  IF octet_length(claim.fingerprint) > 64 THEN
    RAISE EXCEPTION 'fingerprint for idempotency key % is % bytes; at most 64',
      quote_literal(claim.key), octet_length(claim.fingerprint) USING ERRCODE = '22023';
  END IF;
  v_ttl := coalesce(claim.ttl, nullif(current_setting('peer_full.default_ttl', true), '')::interval, interval '24 hours');
  v_lease := coalesce(claim.lease, nullif(current_setting('peer_full.default_lease', true), '')::interval, interval '60 seconds');
  IF v_ttl <= interval '0' OR v_lease <= interval '0'
     OR v_ttl > interval '100000 years' OR v_lease > interval '100000 years' THEN
    RAISE EXCEPTION 'ttl and lease must be positive and at most 100000 years, not % and % (key %)', v_ttl, v_lease,
      quote_ident(claim.key) USING ERRCODE = '22023';
  END IF;
  IF claim.wait < interval '0' THEN
    RAISE EXCEPTION 'wait must not be negative, not % (key %)', claim.wait, quote_ident(claim.key) USING ERRCODE = '22023';
  END IF;

  -- 1. Replays first, read-only: no lock, no row lock, no XID.
  SELECT * INTO r FROM peer_full.keys k WHERE k.scope = claim.scope AND k.key = claim.key;
  found_row := FOUND;
  seen := found_row AND r.expires_at > t_now;
  IF seen THEN
    IF claim.fingerprint IS NOT NULL AND r.fingerprint IS NOT NULL AND r.fingerprint <> claim.fingerprint THEN
      res.outcome := 'mismatch';
      RETURN res;
    ELSIF r.state = 'completed' THEN
      res.outcome := 'replay';
      res.attempt := r.attempt;
      res.recovery_point := r.recovery_point;
      res.response_status := r.response_status;
      res.response_headers := r.response_headers;
      res.response_body := r.response_body;
      res.expires_at := r.expires_at;
      RETURN res;
    ELSIF r.locked_until > t_now THEN
      res.outcome := 'in_progress';
      res.attempt := r.attempt;
      res.expires_at := r.expires_at;
      res.locked_until := r.locked_until;
      RETURN res;
    END IF;
  END IF;

  -- 2. The key lock: another open transaction that claims this key holds it.
  lk := hashtextextended(claim.key, hashtext(claim.scope));
  IF NOT pg_try_advisory_xact_lock(lk) THEN
    res.outcome := 'in_progress';
    IF seen THEN  -- what is known of the holder
      res.attempt := r.attempt;
      res.expires_at := r.expires_at;
      res.locked_until := r.locked_until;
    END IF;
    IF coalesce(claim.wait, interval '0') = interval '0' THEN
      RETURN res;
    END IF;
    -- Wait for the holder's transaction as a lock wait bounded by lock_timeout
    -- (a subtransaction, on this rare path only); the caller's setting is kept.
    old_timeout := current_setting('lock_timeout');
    BEGIN
      PERFORM set_config('lock_timeout', greatest(1, ceil(extract(epoch FROM claim.wait) * 1000))::bigint::text, true);
      PERFORM pg_advisory_xact_lock(lk);
      PERFORM set_config('lock_timeout', old_timeout, true);
    EXCEPTION WHEN lock_not_available THEN
      RETURN res;
    END;
  END IF;

  v_token := (random() * 9.2e18 - 4.6e18)::bigint;
  -- Only a sweep deleting an expired row holds a row lock without the key lock:
  -- when the first look saw an expired row, wait for that row no longer than
  -- `wait` (lock_timeout in a subtransaction, on this rare path only).
  expired_seen := found_row AND r.expires_at <= t_now;

  LOOP
    tries := tries + 1;
    IF expired_seen THEN
      old_timeout := current_setting('lock_timeout');
      BEGIN
        PERFORM set_config('lock_timeout',
          greatest(1, ceil(extract(epoch FROM coalesce(claim.wait, interval '0')) * 1000))::bigint::text, true);
        INSERT INTO peer_full.keys AS k (scope, key, fingerprint, state, token, attempt,
                                         locked_until, created_at, expires_at)
        VALUES (claim.scope, claim.key, claim.fingerprint, 'in_progress', v_token, 1,
                t_now + v_lease, t_now, t_now + v_ttl)
        ON CONFLICT (scope, key) DO NOTHING
        RETURNING k.* INTO r;
        inserted := FOUND;
        IF NOT inserted THEN
          SELECT * INTO r FROM peer_full.keys k
           WHERE k.scope = claim.scope AND k.key = claim.key FOR UPDATE;
          got := FOUND;
        END IF;
        PERFORM set_config('lock_timeout', old_timeout, true);
      EXCEPTION WHEN lock_not_available THEN
        res.outcome := 'in_progress';
        RETURN res;
      END;
      EXIT WHEN inserted;
      IF NOT got THEN  -- swept meanwhile: insert afresh
        expired_seen := false;
        CONTINUE;
      END IF;
    ELSE
      -- 3. A new key: one INSERT. Nobody else can be inserting it (we hold the key lock).
      INSERT INTO peer_full.keys AS k (scope, key, fingerprint, state, token, attempt,
                                       locked_until, created_at, expires_at)
      VALUES (claim.scope, claim.key, claim.fingerprint, 'in_progress', v_token, 1,
              t_now + v_lease, t_now, t_now + v_ttl)
      ON CONFLICT (scope, key) DO NOTHING
      RETURNING k.* INTO r;
      EXIT WHEN FOUND;

      -- 4. The row is there: lock it. Holders' finish/checkpoint/release take the
      -- key lock first, so nobody else can have it locked but a sweeper.
      SELECT * INTO r FROM peer_full.keys k
       WHERE k.scope = claim.scope AND k.key = claim.key FOR UPDATE SKIP LOCKED;
      IF NOT FOUND THEN
        SELECT * INTO r FROM peer_full.keys k WHERE k.scope = claim.scope AND k.key = claim.key;
        IF FOUND AND r.expires_at <= t_now AND tries < 3 THEN
          expired_seen := true;  -- a sweeper has it: wait for it as above
          CONTINUE;
        END IF;
        IF FOUND OR tries >= 3 THEN
          res.outcome := 'in_progress';
          RETURN res;
        END IF;
        CONTINUE;  -- deleted meanwhile
      END IF;
    END IF;

    IF r.expires_at <= t_now THEN
      -- Expired, not swept yet: re-use the row as a fresh claim.
      UPDATE peer_full.keys k
         SET fingerprint = claim.fingerprint, state = 'in_progress', token = v_token,
             attempt = 1, recovery_point = NULL, locked_until = t_now + v_lease,
             created_at = t_now, completed_at = NULL, expires_at = t_now + v_ttl,
             response_status = NULL, response_headers = NULL, response_body = NULL
       WHERE k.scope = claim.scope AND k.key = claim.key
      RETURNING k.* INTO r;
      EXIT;
    ELSIF claim.fingerprint IS NOT NULL AND r.fingerprint IS NOT NULL AND r.fingerprint <> claim.fingerprint THEN
      res.outcome := 'mismatch';
      RETURN res;
    ELSIF r.state = 'completed' THEN
      res.outcome := 'replay';
      res.attempt := r.attempt;
      res.recovery_point := r.recovery_point;
      res.response_status := r.response_status;
      res.response_headers := r.response_headers;
      res.response_body := r.response_body;
      res.expires_at := r.expires_at;
      RETURN res;
    ELSIF r.locked_until > t_now THEN
      res.outcome := 'in_progress';
      res.attempt := r.attempt;
      res.expires_at := r.expires_at;
      res.locked_until := r.locked_until;
      RETURN res;
    ELSE
      -- Takeover: the holder's lease is over. New token, attempt + 1, keep the recovery point.
      UPDATE peer_full.keys k
         SET token = v_token, attempt = k.attempt + 1, locked_until = t_now + v_lease,
             fingerprint = coalesce(k.fingerprint, claim.fingerprint)
       WHERE k.scope = claim.scope AND k.key = claim.key
      RETURNING k.* INTO r;
      EXIT;
    END IF;
  END LOOP;

  res.outcome := 'claimed';
  res.token := r.token;
  res.attempt := r.attempt;
  res.recovery_point := r.recovery_point;
  res.expires_at := r.expires_at;
  res.locked_until := r.locked_until;
  RETURN res;
END
$fn$;

CREATE FUNCTION peer_full.finish(scope text, key text, token bigint, response_status int,
                                 response_body bytea DEFAULT NULL, response_headers jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE
  r     peer_full.keys;
  t_now timestamptz := now();
  lim   bigint;
BEGIN
  IF finish.scope IS NULL OR finish.key IS NULL OR finish.scope = '' OR finish.key = ''
     OR octet_length(finish.scope) > 255 OR octet_length(finish.key) > 255 THEN
    PERFORM peer_full._check_key(finish.scope, finish.key);
  END IF;
  IF finish.token IS NULL OR finish.response_status IS NULL THEN
    RAISE EXCEPTION 'token and response_status must not be NULL (idempotency key %)', quote_literal(finish.key)
      USING ERRCODE = '22004';
  END IF;
  lim := coalesce(pg_size_bytes(nullif(current_setting('peer_full.max_response_size', true), '')), 1048576);
  IF coalesce(octet_length(finish.response_body), 0) + coalesce(octet_length(finish.response_headers::text), 0) > lim THEN
    RAISE EXCEPTION 'response for idempotency key % is larger than peer_full.max_response_size (% bytes)',
      quote_literal(finish.key), lim
      USING ERRCODE = '54000', HINT = 'Store a smaller response or raise peer_full.max_response_size.';
  END IF;

  -- The key lock: a claim racing with this finish answers in_progress at once
  -- instead of waiting for this transaction's row lock.
  PERFORM pg_advisory_xact_lock(hashtextextended(finish.key, hashtext(finish.scope)));
  UPDATE peer_full.keys k
     SET state = 'completed', response_status = finish.response_status,
         response_body = finish.response_body, response_headers = finish.response_headers,
         completed_at = t_now, locked_until = NULL
   WHERE k.scope = finish.scope AND k.key = finish.key AND k.token = finish.token
     AND k.state = 'in_progress' AND k.expires_at > t_now;
  IF FOUND THEN
    RETURN true;
  END IF;

  SELECT * INTO r FROM peer_full.keys k WHERE k.scope = finish.scope AND k.key = finish.key;
  IF FOUND AND r.token = finish.token AND r.state = 'completed' AND r.expires_at > t_now THEN
    IF r.response_status = finish.response_status
       AND r.response_body IS NOT DISTINCT FROM finish.response_body
       AND r.response_headers IS NOT DISTINCT FROM finish.response_headers THEN
      RETURN false;
    END IF;
    RAISE EXCEPTION 'idempotency key "%" in scope "%" was already finished with a different response',
      finish.key, finish.scope
      USING ERRCODE = 'IK002',
            DETAIL = format('Token %s stored status %s; this call gave status %s.', finish.token, r.response_status, finish.response_status),
            HINT = 'A request''s response is stored once; replay the stored one instead of finishing again.';
  END IF;
  RAISE EXCEPTION 'idempotency key "%" in scope "%" is not held by the given token', finish.key, finish.scope
      USING ERRCODE = 'IK001',
            DETAIL = format('Token %s: the key is absent, expired, completed or held by another claim.', finish.token),
            HINT = 'Do not store a result for this request: claim the key again and act on the answer.';
END
$fn$;

CREATE FUNCTION peer_full.checkpoint(scope text, key text, token bigint, recovery_point text,
                                     lease interval DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE
  t_now   timestamptz := now();
  v_lease interval;
  v_until timestamptz;
BEGIN
  PERFORM peer_full._check_key(checkpoint.scope, checkpoint.key);
  IF checkpoint.token IS NULL THEN
    RAISE EXCEPTION 'token must not be NULL (idempotency key %)', quote_literal(checkpoint.key)
      USING ERRCODE = '22004';
  END IF;
  v_lease := peer_full._interval_setting('peer_full.default_lease', checkpoint.lease, interval '60 seconds', 'lease', checkpoint.key);
  PERFORM pg_advisory_xact_lock(hashtextextended(checkpoint.key, hashtext(checkpoint.scope)));
  UPDATE peer_full.keys k
     SET recovery_point = coalesce(checkpoint.recovery_point, k.recovery_point), locked_until = t_now + v_lease
   WHERE k.scope = checkpoint.scope AND k.key = checkpoint.key AND k.token = checkpoint.token
     AND k.state = 'in_progress' AND k.expires_at > t_now
  RETURNING k.locked_until INTO v_until;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'idempotency key "%" in scope "%" is not held by the given token', checkpoint.key, checkpoint.scope
      USING ERRCODE = 'IK001',
            DETAIL = format('Token %s: the key is absent, expired, completed or held by another claim.', checkpoint.token),
            HINT = 'Do not store a result for this request: claim the key again and act on the answer.';
  END IF;
  RETURN v_until;
END
$fn$;

CREATE FUNCTION peer_full.release(scope text, key text, token bigint)
RETURNS boolean LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
BEGIN
  PERFORM peer_full._check_key(release.scope, release.key);
  IF release.token IS NULL THEN
    RAISE EXCEPTION 'token must not be NULL (idempotency key %)', quote_literal(release.key)
      USING ERRCODE = '22004';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended(release.key, hashtext(release.scope)));
  DELETE FROM peer_full.keys k
   WHERE k.scope = release.scope AND k.key = release.key AND k.token = release.token
     AND k.state = 'in_progress' AND k.expires_at > now();
  IF NOT FOUND THEN
    RAISE EXCEPTION 'idempotency key "%" in scope "%" is not held by the given token', release.key, release.scope
      USING ERRCODE = 'IK001',
            DETAIL = format('Token %s: the key is absent, expired, completed or held by another claim.', release.token),
            HINT = 'Do not store a result for this request: claim the key again and act on the answer.';
  END IF;
  RETURN true;
END
$fn$;

CREATE FUNCTION peer_full.lookup(scope text, key text)
RETURNS peer_full.keys LANGUAGE plpgsql STABLE
  SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE r peer_full.keys;
BEGIN
  PERFORM peer_full._check_key(lookup.scope, lookup.key);
  SELECT * INTO r FROM peer_full.keys k
   WHERE k.scope = lookup.scope AND k.key = lookup.key AND k.expires_at > now();
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  RETURN r;
END
$fn$;

-- The extension's canonical form: compact JSON, object keys in jsonb's order
-- (by length, then bytes; duplicates dropped), numbers without trailing zeros
-- or exponents, strings escaped as JSON does; then SHA-256.
CREATE FUNCTION peer_full._canonical(j jsonb)
RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT
  SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
  RETURN CASE jsonb_typeof(j)
    WHEN 'object' THEN '{' || coalesce((SELECT string_agg(to_json(e.k)::text || ':' || peer_full._canonical(e.v), ',' ORDER BY e.n)
                                          FROM jsonb_each(j) WITH ORDINALITY AS e(k, v, n)), '') || '}'
    WHEN 'array' THEN '[' || coalesce((SELECT string_agg(peer_full._canonical(e.v), ',' ORDER BY e.n)
                                         FROM jsonb_array_elements(j) WITH ORDINALITY AS e(v, n)), '') || ']'
    WHEN 'number' THEN trim_scale((j #>> '{}')::numeric)::text
    WHEN 'string' THEN to_json(j #>> '{}')::text
    ELSE j::text
  END;
END
$fn$;

CREATE FUNCTION peer_full.fingerprint(request jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT sha256(convert_to(peer_full._canonical(request), 'UTF8'))
$fn$;

CREATE FUNCTION peer_full.sweep(batch_size int DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  n   bigint;
  lim bigint := coalesce(batch_size, nullif(current_setting('peer_full.sweep_batch_size', true), '')::bigint, 10000);
BEGIN
  IF batch_size <= 0 THEN
    RAISE EXCEPTION 'batch_size must be positive, not %', batch_size
      USING ERRCODE = '22023', HINT = 'Pass how many expired keys to delete at most, or NULL for the default.';
  END IF;
  -- Oldest first through the expires_at index; rows someone is working on are
  -- skipped, never waited for; deleted by ctid.
  DELETE FROM peer_full.keys
   WHERE ctid = ANY (ARRAY(
     SELECT e.ctid FROM peer_full.keys e
      WHERE e.expires_at <= now()
        AND (e.state <> 'in_progress' OR e.locked_until IS NULL OR e.locked_until <= now())
      ORDER BY e.expires_at LIMIT lim
        FOR UPDATE SKIP LOCKED));
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$;

-- No shared memory in PL/pgSQL: the view has the extension's shape, not its counts.
CREATE FUNCTION peer_full._stats(
    OUT claims bigint, OUT replays bigint, OUT in_progress bigint, OUT mismatches bigint,
    OUT takeovers bigint, OUT finishes bigint, OUT releases bigint, OUT swept bigint,
    OUT last_sweep_at timestamptz)
RETURNS record LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp AS $fn$
  SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
         NULL::bigint, NULL::bigint, NULL::timestamptz
$fn$;
CREATE VIEW peer_full.stats AS SELECT * FROM peer_full._stats();

-- Callers' rights, nothing granted to PUBLIC (as the extension does).
REVOKE ALL ON FUNCTION
    peer_full.claim(text, text, bytea, interval, interval, interval),
    peer_full.finish(text, text, bigint, integer, bytea, jsonb),
    peer_full.checkpoint(text, text, bigint, text, interval),
    peer_full.release(text, text, bigint),
    peer_full.lookup(text, text),
    peer_full.fingerprint(jsonb),
    peer_full.sweep(integer),
    peer_full._stats()
FROM PUBLIC;
