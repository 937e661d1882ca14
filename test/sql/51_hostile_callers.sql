-- Hostile callers (issue 7): SQL-injection strings and control characters as
-- scope/key are stored and matched literally; a search_path that puts look-alike
-- tables, functions and operators first changes nothing; the functions run with
-- the caller's rights (documented grants: the whole API; no grants: 42501 from
-- every function and nothing changes).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_idempotency;

-- ------------------------------------------------------------------------
-- 1. Injection strings and control characters, stored and matched literally.
CREATE TEMP TABLE hostile (n int, s text, k text);
INSERT INTO hostile VALUES
  (1, 'hostile51', $$'; DROP TABLE idempotency.keys; --$$),
  (2, 'hostile51', $$' OR '1'='1$$),
  (3, 'hostile51', $$" OR ""="$$),
  (4, 'hostile51', $$$1$$),
  (5, 'hostile51', $$%s%n%x$$),
  (6, 'hostile51', $$\$$),
  (7, 'hostile51', E'tab\there\nnewline\rcr\x01\x1b[31m\x7f'),
  (8, 'hostile51', $$%$$),
  (9, 'hostile51', $$_$$),
  (10, 'hostile51', 'a'),
  (11, 'hostile51', 'A'),
  (12, 'hostile51', 'a '),
  (13, 'hostile51', ' a'),
  (14, 'hostile51', E'a\u200b'),                  -- zero-width space
  (15, 'hostile51', E'\u202eevil'),               -- right-to-left override
  (16, 'hostile51', $$key'); SELECT pg_sleep(10); --$$),
  (17, 'hostile51', $$*/ SELECT 1 /*$$),
  (18, E'hostile51\nx', 'a'),                      -- control character in the scope
  (19, $$hostile51' OR 'x'='x$$, 'a'),
  (20, 'hostile5', '1a'),                          -- ("hostile5","1a") vs ("hostile51","a")
  (21, 'hostile51a', ''''),
  (22, 'HOSTILE51', 'a');

-- Every one is a distinct key: claimed once, finished with its own number.
SELECT h.n, c.outcome, c.attempt
FROM hostile h, LATERAL idempotency.claim(h.s, h.k) c ORDER BY h.n;
SELECT bool_and(idempotency.finish(h.s, h.k, k.token, 200 + h.n, convert_to(h.k, 'UTF8'), jsonb_build_object('k', h.k)))
  AS all_finished
FROM hostile h JOIN idempotency.keys k ON k.scope = h.s AND k.key = h.k;
-- Stored byte for byte, one row each, found again by lookup and replayed.
SELECT count(*) AS rows_stored, count(DISTINCT (scope, key)) AS distinct_keys
FROM idempotency.keys WHERE scope IN (SELECT s FROM hostile);
SELECT h.n,
       k.scope = h.s AND k.key = h.k AS stored_literally,
       (idempotency.lookup(h.s, h.k)).response_status = 200 + h.n AS lookup_matches,
       r.outcome, r.response_status = 200 + h.n AS replay_matches,
       convert_from(r.response_body, 'UTF8') = h.k AS body_matches
FROM hostile h
JOIN idempotency.keys k ON k.scope = h.s AND k.key = h.k,
LATERAL idempotency.claim(h.s, h.k) r
ORDER BY h.n;
-- The table is still there and nothing else matched.
SELECT count(*) AS lookalikes_found FROM (VALUES ('hostile51', 'b'), ('hostile51', 'a  '), ('hostile51', '%a'),
  ('hostile51', 'A '), ('hostile51', '_a'), ('hostile5', '1')) v(s, k)
WHERE idempotency.lookup(v.s, v.k) IS NOT NULL;
DELETE FROM idempotency.keys WHERE scope IN (SELECT s FROM hostile);

-- ------------------------------------------------------------------------
-- 2. A search_path with look-alike tables, functions and operators first.
--    Every look-alike raises an error when used, so any use is seen.
CREATE SCHEMA evil51;
CREATE TABLE evil51.keys (LIKE idempotency.keys);
CREATE FUNCTION evil51.trap() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51.keys was written'; END$$;
CREATE TRIGGER trap BEFORE INSERT OR UPDATE OR DELETE ON evil51.keys FOR EACH STATEMENT EXECUTE FUNCTION evil51.trap();
CREATE FUNCTION evil51.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 = on text was called'; END$$;
CREATE OPERATOR evil51.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil51.text_eq);
CREATE FUNCTION evil51.bytea_eq(bytea, bytea) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 = on bytea was called'; END$$;
CREATE OPERATOR evil51.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = evil51.bytea_eq);
CREATE FUNCTION evil51.bigint_eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 = on bigint was called'; END$$;
CREATE OPERATOR evil51.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil51.bigint_eq);
CREATE FUNCTION evil51.enum_eq(anyenum, anyenum) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 = on an enum was called'; END$$;
CREATE OPERATOR evil51.= (LEFTARG = anyenum, RIGHTARG = anyenum, FUNCTION = evil51.enum_eq);
CREATE OPERATOR evil51.<> (LEFTARG = anyenum, RIGHTARG = anyenum, FUNCTION = evil51.enum_eq);
CREATE FUNCTION evil51.ts_cmp(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 comparison on timestamptz was called'; END$$;
CREATE OPERATOR evil51.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil51.ts_cmp);
CREATE OPERATOR evil51.> (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil51.ts_cmp);
CREATE OPERATOR evil51.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil51.ts_cmp);
CREATE FUNCTION evil51.int_plus(integer, integer) RETURNS integer LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 + on integer was called'; END$$;
CREATE OPERATOR evil51.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil51.int_plus);
CREATE FUNCTION evil51.tid_eq(tid, tid) RETURNS boolean LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51 = on tid was called'; END$$;
CREATE OPERATOR evil51.= (LEFTARG = tid, RIGHTARG = tid, FUNCTION = evil51.tid_eq);
CREATE FUNCTION evil51.now() RETURNS timestamptz LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51.now() was called'; END$$;
CREATE FUNCTION evil51.coalesce(bytea, bytea) RETURNS bytea LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51.coalesce() was called'; END$$;
CREATE FUNCTION evil51.array(anyelement) RETURNS anyarray LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'evil51.array() was called'; END$$;
CREATE TYPE evil51.state AS ENUM ('completed', 'in_progress');
CREATE TABLE evil51.result (n int, what text, ok boolean);

-- A fresh backend, so that the extension prepares its statements under the
-- hostile search_path (pg_catalog placed after the look-alikes).
\c
SET client_min_messages = warning;
SET search_path = evil51, pg_catalog, public;
DO $$
DECLARE
  c idempotency.claim_result;
  t bigint;
BEGIN
  c := idempotency.claim('hostile51-path', 'k1', '\x0102'::bytea, '1 hour', '1 millisecond');
  INSERT INTO evil51.result VALUES (1, 'claim', c.outcome::text OPERATOR(pg_catalog.=) 'claimed');
  t := c.token;
  PERFORM pg_catalog.pg_sleep(0.01);
  -- lease over: a takeover (matching fingerprint), then checkpoint, finish, replay
  c := idempotency.claim('hostile51-path', 'k1', '\x0102'::bytea);
  INSERT INTO evil51.result VALUES (2, 'claim after the lease (same transaction: still ours)',
                                    c.outcome::text OPERATOR(pg_catalog.=) 'in_progress');
  PERFORM idempotency.checkpoint('hostile51-path', 'k1', t, 'step1');
  INSERT INTO evil51.result VALUES (3, 'finish', idempotency.finish('hostile51-path', 'k1', t, 201, '\x6f6b'::bytea, '{"a":1}'));
  INSERT INTO evil51.result VALUES (4, 'finish again (same response)',
                                    NOT idempotency.finish('hostile51-path', 'k1', t, 201, '\x6f6b'::bytea, '{"a":1}'));
  c := idempotency.claim('hostile51-path', 'k1', '\x0102'::bytea);
  INSERT INTO evil51.result VALUES (5, 'replay', c.outcome::text OPERATOR(pg_catalog.=) 'replay');
  c := idempotency.claim('hostile51-path', 'k1', '\x0103'::bytea);
  INSERT INTO evil51.result VALUES (6, 'mismatch', c.outcome::text OPERATOR(pg_catalog.=) 'mismatch');
  INSERT INTO evil51.result VALUES (7, 'lookup', (idempotency.lookup('hostile51-path', 'k1')).response_status OPERATOR(pg_catalog.=) 201);
  c := idempotency.claim('hostile51-path', 'k2');
  INSERT INTO evil51.result VALUES (8, 'release', idempotency.release('hostile51-path', 'k2', c.token));
  c := idempotency.claim('hostile51-path', 'k3', NULL, '1 microsecond');
  INSERT INTO evil51.result VALUES (9, 'fingerprint', idempotency.fingerprint('{"b":1,"a":2}') IS NOT NULL);
  BEGIN
    PERFORM idempotency.finish('hostile51-path', 'k1', t OPERATOR(pg_catalog.+) 1, 201);
    INSERT INTO evil51.result VALUES (10, 'wrong token raises IK001', false);
  EXCEPTION WHEN sqlstate 'IK001' THEN
    INSERT INTO evil51.result VALUES (10, 'wrong token raises IK001', true);
  END;
END $$;
-- In a later transaction: the expired key k3 is swept under the same path.
SELECT pg_catalog.pg_sleep(0.01);
INSERT INTO evil51.result SELECT 11, 'sweep', idempotency.sweep() OPERATOR(pg_catalog.>=) 0;
RESET search_path;
SELECT n, what, ok FROM evil51.result ORDER BY n;
SELECT count(*) AS rows_in_lookalike_table FROM evil51.keys;
SELECT key, state, attempt, recovery_point, response_status, response_body, response_headers
FROM idempotency.keys WHERE scope = 'hostile51-path' ORDER BY key;
DELETE FROM idempotency.keys WHERE scope = 'hostile51-path';
DROP SCHEMA evil51 CASCADE;

-- ------------------------------------------------------------------------
-- 3. Callers' rights. pgi51_app has the documented grants; pgi51_nobody has
--    none; pgi51_noexec has table privileges but no EXECUTE; pgi51_notable
--    has USAGE and EXECUTE but no table privileges.
CREATE ROLE pgi51_app;
CREATE ROLE pgi51_nobody;
CREATE ROLE pgi51_noexec;
CREATE ROLE pgi51_notable;
GRANT USAGE ON SCHEMA idempotency TO pgi51_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi51_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi51_app;
GRANT USAGE ON SCHEMA idempotency TO pgi51_noexec;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency.keys TO pgi51_noexec;
GRANT USAGE ON SCHEMA idempotency TO pgi51_notable;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA idempotency TO pgi51_notable;

SELECT token AS priv_token FROM idempotency.claim('hostile51-priv', 'held') \gset
SELECT token AS done_token FROM idempotency.claim('hostile51-priv', 'done') \gset
SELECT idempotency.finish('hostile51-priv', 'done', :done_token, 200, '\x6f6b'::bytea);
SELECT outcome AS expired_fixture
FROM idempotency.claim('hostile51-priv', 'expired', ttl => '1 microsecond', lease => '1 microsecond');

CREATE FUNCTION pg_temp.keys_md5() RETURNS text LANGUAGE sql AS $$
  SELECT md5(coalesce(string_agg(k::text || ' ' || k.xmin::text || ' ' || k.ctid::text, E'\n'
                                 ORDER BY k.scope, k.key), ''))
  FROM idempotency.keys AS k WHERE k.scope LIKE 'hostile51%'
   AND k.key <> 'expired'  -- the background sweeper may delete that one at any time
$$;
-- The calls each role makes, in order; each in a subtransaction, with the
-- SQLSTATE recorded (nothing undone: the app role's calls are meant to stick).
CREATE TABLE public.priv51_calls (n int, label text, call text);
GRANT SELECT ON public.priv51_calls TO PUBLIC;
INSERT INTO public.priv51_calls VALUES
  (1, 'claim a new key', $$idempotency.claim('hostile51-priv', 'new')$$),
  (2, 'finish a held key', $$idempotency.finish('hostile51-priv', 'held', $$ || :priv_token || $$, 201, '\x6f6b'::bytea, '{"a":1}')$$),
  (3, 'claim a completed key', $$idempotency.claim('hostile51-priv', 'held')$$),
  (4, 'checkpoint', $$idempotency.checkpoint('hostile51-priv', 'new', (idempotency.lookup('hostile51-priv', 'new')).token, 'step1')$$),
  (5, 'release', $$idempotency.release('hostile51-priv', 'new', (idempotency.lookup('hostile51-priv', 'new')).token)$$),
  (6, 'lookup', $$idempotency.lookup('hostile51-priv', 'done')$$),
  (7, 'fingerprint', $$idempotency.fingerprint('{"a":1}')$$),
  (8, 'sweep', $$idempotency.sweep()$$),
  (9, '_stats()', $$idempotency._stats()$$),
  (10, 'read the table', $$(SELECT count(*) FROM idempotency.keys)$$);
CREATE TABLE public.priv51_results (role text, n int, sqlstate text);
GRANT INSERT ON public.priv51_results TO PUBLIC;
CREATE FUNCTION public.priv51_run() RETURNS void LANGUAGE plpgsql AS $$
DECLARE c record; st text;
BEGIN
  FOR c IN SELECT * FROM public.priv51_calls ORDER BY n LOOP
    BEGIN
      EXECUTE 'SELECT ' || c.call;
      st := 'ok';
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
    END;
    INSERT INTO public.priv51_results VALUES (current_user, c.n, st);
  END LOOP;
END $$;

SELECT pg_temp.keys_md5() AS md5_before \gset
SET ROLE pgi51_nobody;
SELECT public.priv51_run();
RESET ROLE;
SET ROLE pgi51_noexec;
SELECT public.priv51_run();
RESET ROLE;
SET ROLE pgi51_notable;
SELECT public.priv51_run();
RESET ROLE;
SELECT pg_temp.keys_md5() = :'md5_before' AS unchanged_by_unprivileged_roles;
SET ROLE pgi51_app;
SELECT public.priv51_run();
RESET ROLE;

SELECT c.n, c.label, r1.sqlstate AS nobody, r2.sqlstate AS noexec, r3.sqlstate AS notable, r4.sqlstate AS app
FROM public.priv51_calls c
LEFT JOIN public.priv51_results r1 ON r1.n = c.n AND r1.role = 'pgi51_nobody'
LEFT JOIN public.priv51_results r2 ON r2.n = c.n AND r2.role = 'pgi51_noexec'
LEFT JOIN public.priv51_results r3 ON r3.n = c.n AND r3.role = 'pgi51_notable'
LEFT JOIN public.priv51_results r4 ON r4.n = c.n AND r4.role = 'pgi51_app'
ORDER BY c.n;
-- What the application role did is there: held finished, new claimed,
-- checkpointed and released, the expired key swept.
SELECT key, state, response_status, recovery_point FROM idempotency.keys
WHERE scope = 'hostile51-priv' ORDER BY key;

DELETE FROM idempotency.keys WHERE scope LIKE 'hostile51%';
DROP FUNCTION public.priv51_run();
DROP TABLE public.priv51_calls, public.priv51_results;
DROP OWNED BY pgi51_app, pgi51_nobody, pgi51_noexec, pgi51_notable;
DROP ROLE pgi51_app, pgi51_nobody, pgi51_noexec, pgi51_notable;
