-- pg_idempotency 1.1 -> 1.2 (ALTER EXTENSION pg_idempotency UPDATE).
-- Every SQL change of 1.2 is made here and in pg_idempotency--1.2.sql alike;
-- the upgrade test compares an updated 1.0 and an updated 1.1 with a fresh
-- 1.2: objects, privileges, initial privileges and pg_dump's output.
-- As the install script, it may run as the bootstrap superuser on behalf of
-- a database owner (trusted): every name is schema-qualified.
\echo Use "ALTER EXTENSION pg_idempotency UPDATE TO '1.2'" to load this file. \quit

-- 1.2: the W3C traceparent of the request that claimed a key, so that a
-- replay can link to the trace of the request that did the work. Added last,
-- where a fresh 1.2 has it too. IF NOT EXISTS: on a Citus cluster the
-- coordinator's ALTER TABLE reaches the workers' copy of the table before the
-- workers run this script themselves.
ALTER TABLE idempotency.keys ADD COLUMN IF NOT EXISTS trace_context pg_catalog.text;
ALTER TYPE idempotency.claim_result ADD ATTRIBUTE trace_context pg_catalog.text;

-- claim() gains a seventh parameter. A function's arguments cannot change in
-- place, so the old one steps aside, the new one is made, the old one's
-- privileges are given to the new one, and the old one goes.
ALTER FUNCTION idempotency.claim(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval,
                                 pg_catalog.interval, pg_catalog.interval)
    RENAME TO claim_before_1_2;

-- 1.2: claim's planner support: plans claim(scope, key, fingerprint) with those
-- three arguments instead of the seven the defaults fill in, which a replay in
-- FROM pays for at every execution (extension/request/claim_support.cpp).
CREATE FUNCTION idempotency._claim_support(pg_catalog.internal)
RETURNS pg_catalog.internal
AS 'MODULE_PATHNAME', 'idempotency_claim_support' LANGUAGE C STRICT;

REVOKE ALL ON FUNCTION idempotency._claim_support(pg_catalog.internal) FROM PUBLIC;

CREATE FUNCTION idempotency.claim(
    scope pg_catalog.text, key pg_catalog.text, fingerprint pg_catalog.bytea DEFAULT NULL,
    ttl pg_catalog.interval DEFAULT NULL, lease pg_catalog.interval DEFAULT NULL,
    wait pg_catalog.interval DEFAULT '0', trace_context pg_catalog.text DEFAULT NULL)
RETURNS idempotency.claim_result
AS 'MODULE_PATHNAME', 'idempotency_claim' LANGUAGE C VOLATILE PARALLEL UNSAFE
SUPPORT idempotency._claim_support;
REVOKE ALL ON FUNCTION idempotency.claim(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval,
                                         pg_catalog.interval, pg_catalog.interval, pg_catalog.text)
FROM PUBLIC;

-- The extension's privileges on every object, as a fresh 1.2 has them, and
-- everyone else's grants kept. A GRANT run inside an extension script is
-- recorded as the object's initial privilege (pg_init_privs), which pg_dump
-- leaves out of a dump because CREATE EXTENSION recreates it. So:
--   1. the extension's owner gets the privileges of pg_idempotency--1.2.sql
--      (when it is not the objects' owner), and each object's initial
--      privileges become what they were plus that grant;
--   2. the old claim's grants (an application role's EXECUTE) are granted
--      again on the new claim, and its initial privileges are set back to
--      those of a fresh 1.2, so that pg_dump still dumps those grants.
-- pg_shdepend's initial-privilege entries (PostgreSQL 17+) follow suit.
DO $$
DECLARE
  owner_oid pg_catalog.oid := (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER);
  ext_owner pg_catalog.oid;
  ext_owner_name pg_catalog.text;
  old_claim pg_catalog.regprocedure := 'idempotency.claim_before_1_2(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval)';
  new_claim pg_catalog.regprocedure := 'idempotency.claim(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval, pg_catalog.interval, pg_catalog.interval, pg_catalog.text)';
  target record;
  before_init pg_catalog.aclitem[];
  granted pg_catalog.aclitem;
  entry record;
BEGIN
  SELECT e.extowner, pg_catalog.quote_ident(r.rolname::pg_catalog.text) INTO ext_owner, ext_owner_name
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) e.extowner
  WHERE e.extname OPERATOR(pg_catalog.=) 'pg_idempotency';

  -- 1. The extension owner's privileges, object by object.
  IF ext_owner OPERATOR(pg_catalog.<>) owner_oid THEN
    FOR target IN
      SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass AS classid, n.oid AS objid, n.nspowner AS objowner,
             'n'::"char" AS kind, pg_catalog.format('SCHEMA idempotency') AS what, 'USAGE' AS privileges
      FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'idempotency'
      UNION ALL
      SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.proowner, 'f'::"char",
             pg_catalog.format('FUNCTION %s', p.oid::pg_catalog.regprocedure), 'EXECUTE'
      FROM pg_catalog.pg_proc p
      WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idempotency'::pg_catalog.regnamespace
        AND p.oid OPERATOR(pg_catalog.<>) old_claim
      UNION ALL
      SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, 'idempotency.keys'::pg_catalog.regclass, c.relowner,
             'r'::"char", 'TABLE idempotency.keys', 'SELECT, INSERT, UPDATE, DELETE'
      FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) 'idempotency.keys'::pg_catalog.regclass
      UNION ALL
      SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, 'idempotency.stats'::pg_catalog.regclass, c.relowner,
             'r'::"char", 'TABLE idempotency.stats', 'SELECT'
      FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) 'idempotency.stats'::pg_catalog.regclass
    LOOP
      CONTINUE WHEN target.objowner OPERATOR(pg_catalog.=) ext_owner;
      SELECT ip.initprivs INTO before_init FROM pg_catalog.pg_init_privs ip
      WHERE ip.classoid OPERATOR(pg_catalog.=) target.classid AND ip.objoid OPERATOR(pg_catalog.=) target.objid
        AND ip.objsubid OPERATOR(pg_catalog.=) 0;
      EXECUTE pg_catalog.format('GRANT %s ON %s TO %s WITH GRANT OPTION', target.privileges, target.what, ext_owner_name);
      -- the owner's entry as the GRANT left it in the object's ACL
      SELECT a INTO granted
      FROM pg_catalog.unnest(CASE target.kind
                               WHEN 'n' THEN (SELECT n.nspacl FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) target.objid)
                               WHEN 'f' THEN (SELECT p.proacl FROM pg_catalog.pg_proc p WHERE p.oid OPERATOR(pg_catalog.=) target.objid)
                               ELSE (SELECT c.relacl FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) target.objid)
                             END) AS a
      WHERE (SELECT x.grantee FROM pg_catalog.aclexplode(ARRAY[a]) AS x LIMIT 1) OPERATOR(pg_catalog.=) ext_owner;
      UPDATE pg_catalog.pg_init_privs ip
      SET initprivs = pg_catalog.array_append(
            COALESCE(before_init, pg_catalog.acldefault(target.kind, target.objowner)), granted)
      WHERE ip.classoid OPERATOR(pg_catalog.=) target.classid AND ip.objoid OPERATOR(pg_catalog.=) target.objid
        AND ip.objsubid OPERATOR(pg_catalog.=) 0;
    END LOOP;
  END IF;

  -- 2. The old claim's grants, on the new claim.
  SELECT ip.initprivs INTO before_init FROM pg_catalog.pg_init_privs ip
  WHERE ip.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
    AND ip.objoid OPERATOR(pg_catalog.=) new_claim AND ip.objsubid OPERATOR(pg_catalog.=) 0;
  FOR entry IN
    SELECT x.grantee, x.is_grantable
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) AS x
    WHERE p.oid OPERATOR(pg_catalog.=) old_claim AND x.grantee OPERATOR(pg_catalog.<>) p.proowner
  LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', new_claim,
      CASE WHEN entry.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
           ELSE pg_catalog.quote_ident((SELECT r.rolname FROM pg_catalog.pg_roles r
                                        WHERE r.oid OPERATOR(pg_catalog.=) entry.grantee)::pg_catalog.text) END,
      CASE WHEN entry.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
  UPDATE pg_catalog.pg_init_privs ip SET initprivs = before_init
  WHERE ip.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
    AND ip.objoid OPERATOR(pg_catalog.=) new_claim AND ip.objsubid OPERATOR(pg_catalog.=) 0;

  -- PostgreSQL 17+ records the roles named in initial privileges in
  -- pg_shdepend (deptype 'i'): keep only those still named.
  DELETE FROM pg_catalog.pg_shdepend sd
  WHERE sd.dbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                        WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
    AND sd.deptype OPERATOR(pg_catalog.=) 'i'::"char"
    AND NOT EXISTS (
      SELECT FROM pg_catalog.pg_init_privs ip, pg_catalog.aclexplode(ip.initprivs) AS x
      WHERE ip.classoid OPERATOR(pg_catalog.=) sd.classid AND ip.objoid OPERATOR(pg_catalog.=) sd.objid
        AND ip.objsubid OPERATOR(pg_catalog.=) sd.objsubid
        AND sd.refobjid OPERATOR(pg_catalog.=) ANY (ARRAY[x.grantee, x.grantor]))
    AND (sd.classid, sd.objid) IN (
      SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid
      WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
        AND d.deptype OPERATOR(pg_catalog.=) 'e' AND e.extname OPERATOR(pg_catalog.=) 'pg_idempotency'
      UNION ALL
      SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, 'idempotency'::pg_catalog.regnamespace);
END
$$;

DROP FUNCTION idempotency.claim_before_1_2(pg_catalog.text, pg_catalog.text, pg_catalog.bytea, pg_catalog.interval,
                                           pg_catalog.interval, pg_catalog.interval);
