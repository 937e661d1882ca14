-- Part of sql/portable/to_extension.sql and from_extension.sql: puts what
-- move/save.sql kept into the edition now in schema idempotency (every key
-- with its token, attempt, recovery point, lease and response; grants; row-level
-- security and policies), then drops schema idempotency_move.
INSERT INTO idempotency.keys (scope, key, fingerprint, state, token, attempt, recovery_point, locked_until,
                              created_at, completed_at, expires_at, response_status, response_headers, response_body,
                              trace_context)
  SELECT scope, key, fingerprint, state::idempotency.state, token, attempt, recovery_point, locked_until,
         created_at, completed_at, expires_at, response_status, response_headers, response_body, trace_context
    FROM idempotency_move.keys;
DO $restore$
DECLARE
  g record;
  p record;
  s record;
BEGIN
  FOR g IN SELECT * FROM idempotency_move.grants LOOP
    CONTINUE WHEN g.kind = 'FUNCTION' AND pg_catalog.to_regprocedure('idempotency.' || g.object) IS NULL;
    EXECUTE pg_catalog.format('GRANT %s ON %s %s TO %s', g.privilege_type,
      CASE g.kind WHEN 'VIEW' THEN 'TABLE' ELSE g.kind END,
      CASE g.kind WHEN 'SCHEMA' THEN 'idempotency' ELSE 'idempotency.' || g.object END,
      CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.grantee::regrole::text) END);
  END LOOP;
  SELECT * INTO s FROM idempotency_move.security;
  IF s.relrowsecurity THEN EXECUTE 'ALTER TABLE idempotency.keys ENABLE ROW LEVEL SECURITY'; END IF;
  IF s.relforcerowsecurity THEN EXECUTE 'ALTER TABLE idempotency.keys FORCE ROW LEVEL SECURITY'; END IF;
  FOR p IN SELECT * FROM idempotency_move.policies LOOP
    EXECUTE pg_catalog.format('CREATE POLICY %I ON idempotency.keys AS %s FOR %s TO %s%s%s', p.polname,
      CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
      CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
      (SELECT pg_catalog.string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r::regrole::text) END, ', ')
         FROM pg_catalog.unnest(p.polroles) AS r),
      CASE WHEN p.qual IS NULL THEN '' ELSE ' USING (' || p.qual || ')' END,
      CASE WHEN p.with_check IS NULL THEN '' ELSE ' WITH CHECK (' || p.with_check || ')' END);
  END LOOP;
END
$restore$;
DROP TABLE idempotency_move.keys, idempotency_move.grants, idempotency_move.security, idempotency_move.policies;
DROP SCHEMA idempotency_move;
