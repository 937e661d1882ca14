-- Part of sql/portable/to_extension.sql and from_extension.sql (included with
-- \ir inside their transaction): copies every key, and who may do what, from
-- schema idempotency into schema idempotency_move, so that the edition can be
-- replaced. Enum values are kept as text, so either edition's types fit.
CREATE SCHEMA idempotency_move;
CREATE TABLE idempotency_move.keys AS
  SELECT scope, key, fingerprint, state::text AS state, token, attempt, recovery_point, locked_until,
         created_at, completed_at, expires_at, response_status, response_headers, response_body,
         -- 1.2's column, read so that an edition still at 1.1 (no such column) moves too
         pg_catalog.to_jsonb(k) OPERATOR(pg_catalog.->>) 'trace_context' AS trace_context
    FROM idempotency.keys AS k;
-- Grants on the schema, the table, the view and the API functions (by name and arguments).
CREATE TABLE idempotency_move.grants AS
  SELECT 'SCHEMA' AS kind, 'idempotency' AS object, a.grantee, a.privilege_type
    FROM pg_catalog.pg_namespace AS n, pg_catalog.aclexplode(n.nspacl) AS a
   WHERE n.nspname OPERATOR(pg_catalog.=) 'idempotency' AND a.grantee OPERATOR(pg_catalog.<>) n.nspowner
  UNION ALL
  SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END, c.relname::text, a.grantee, a.privilege_type
    FROM pg_catalog.pg_class AS c, pg_catalog.aclexplode(c.relacl) AS a
   WHERE c.relnamespace OPERATOR(pg_catalog.=) 'idempotency'::regnamespace
     AND c.relname OPERATOR(pg_catalog.=) ANY (ARRAY['keys', 'stats']::name[]) AND a.grantee OPERATOR(pg_catalog.<>) c.relowner
  UNION ALL
  SELECT 'FUNCTION', pg_catalog.regexp_replace(p.oid::regprocedure::text, '^idempotency\.', ''), a.grantee, a.privilege_type
    FROM pg_catalog.pg_proc AS p, pg_catalog.aclexplode(p.proacl) AS a
   WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idempotency'::regnamespace AND p.proname !~ '^_'
     AND a.grantee OPERATOR(pg_catalog.<>) p.proowner AND a.grantee OPERATOR(pg_catalog.<>) 0;
-- Row-level security on the table and its policies.
CREATE TABLE idempotency_move.security AS
  SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_catalog.pg_class AS c WHERE c.oid OPERATOR(pg_catalog.=) 'idempotency.keys'::regclass;
CREATE TABLE idempotency_move.policies AS
  SELECT p.polname, p.polcmd, p.polpermissive, p.polroles,
         pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
    FROM pg_catalog.pg_policy AS p WHERE p.polrelid OPERATOR(pg_catalog.=) 'idempotency.keys'::regclass;
