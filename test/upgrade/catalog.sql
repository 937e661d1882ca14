-- Everything pg_idempotency puts in a database, described by name (never by
-- OID), one line per object or property, in a stable order. The upgrade test
-- runs it in a database updated from 1.0 and in a fresh install and diffs the
-- two outputs. It lists what is there rather than what is expected, so it
-- keeps comparing whatever later versions add.
\pset footer off
\pset tuples_only on
\pset format unaligned
\pset fieldsep ' | '
\pset null '<null>'

-- the extension row and its pg_dump registration (extconfig/extcondition pairs)
SELECT 'extension', e.extname, e.extversion, e.extrelocatable, e.extnamespace::regnamespace,
       (SELECT string_agg(format('%s where %L', c::regclass, cond), ', ' ORDER BY c::regclass::text)
        FROM unnest(e.extconfig, e.extcondition) AS u(c, cond))
FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_idempotency';

-- every member object, whatever its kind (functions, types, tables, casts, ...)
SELECT 'member', pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_idempotency'
ORDER BY 2;

-- the schema
SELECT 'schema', n.nspname, n.nspowner::regrole, n.nspacl, pg_catalog.obj_description(n.oid, 'pg_namespace')
FROM pg_catalog.pg_namespace n WHERE n.nspname = 'idempotency';

-- functions: signature, defaults, result, every property, ACL, comment, definition
SELECT 'function', p.oid::regprocedure, pg_catalog.pg_get_function_arguments(p.oid),
       pg_catalog.pg_get_function_result(p.oid), p.prokind, 'volatile=' || p.provolatile::text,
       'parallel=' || p.proparallel::text, 'strict=' || p.proisstrict::text, 'secdef=' || p.prosecdef::text,
       'leakproof=' || p.proleakproof::text, p.proconfig, p.procost, p.prorows, p.proretset, l.lanname,
       p.prosrc, p.probin, p.proowner::regrole, p.proacl, pg_catalog.obj_description(p.oid, 'pg_proc')
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'idempotency'::regnamespace
ORDER BY p.oid::regprocedure::text;
SELECT 'functiondef', p.oid::regprocedure, pg_catalog.pg_get_functiondef(p.oid)
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'idempotency'::regnamespace AND p.prokind IN ('f', 'p', 'w')
ORDER BY p.oid::regprocedure::text;

-- types: kind, enum labels in order, composite attributes in order, ACL
SELECT 'type', t.oid::regtype, t.typtype, t.typlen, t.typbyval, t.typcategory, t.typnotnull,
       t.typowner::regrole, t.typacl, pg_catalog.obj_description(t.oid, 'pg_type'),
       (SELECT string_agg(en.enumlabel, ',' ORDER BY en.enumsortorder) FROM pg_catalog.pg_enum en
        WHERE en.enumtypid = t.oid),
       (SELECT string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_catalog.pg_type t
WHERE t.typnamespace = 'idempotency'::regnamespace
ORDER BY t.oid::regtype::text;

-- relations (tables, indexes, views, sequences): kind, options, ACL, RLS, comment
SELECT 'relation', c.oid::regclass, c.relkind, c.relpersistence, c.reloptions, c.relowner::regrole, c.relacl,
       'rls=' || c.relrowsecurity::text, 'force_rls=' || c.relforcerowsecurity::text, c.relreplident,
       pg_catalog.obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'idempotency'::regnamespace
ORDER BY c.oid::regclass::text;

-- columns in their order (a table's row type is lookup()'s result type)
SELECT 'column', c.oid::regclass,
       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum), a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod), 'not_null=' || a.attnotnull::text,
       pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attstorage,
       a.attcompression, co.collname, a.attstattarget, a.attacl, pg_catalog.col_description(c.oid, a.attnum)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
WHERE c.relnamespace = 'idempotency'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
ORDER BY c.oid::regclass::text, a.attnum;

-- indexes, constraints, triggers, policies, view definitions
SELECT 'index', i.indexrelid::regclass, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique,
       i.indisprimary, i.indisclustered, i.indisreplident
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
WHERE c.relnamespace = 'idempotency'::regnamespace
ORDER BY i.indexrelid::regclass::text;
SELECT 'constraint', co.conrelid::regclass, co.contypid::regtype, co.conname, co.contype,
       pg_catalog.pg_get_constraintdef(co.oid), co.condeferrable, co.condeferred, co.convalidated
FROM pg_catalog.pg_constraint co
WHERE co.connamespace = 'idempotency'::regnamespace
ORDER BY 2::text, 3::text, co.conname;
SELECT 'trigger', t.tgrelid::regclass, t.tgname, pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'idempotency'::regnamespace AND NOT t.tgisinternal
ORDER BY 2::text, t.tgname;
SELECT 'policy', p.schemaname, p.tablename, p.policyname, p.permissive, p.roles, p.cmd, p.qual, p.with_check
FROM pg_catalog.pg_policies p WHERE p.schemaname = 'idempotency'
ORDER BY p.tablename, p.policyname;
SELECT 'view', c.oid::regclass, pg_catalog.pg_get_viewdef(c.oid, true)
FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'idempotency'::regnamespace AND c.relkind IN ('v', 'm')
ORDER BY c.oid::regclass::text;

-- the privileges pg_dump treats as the extension's own (pg_init_privs)
SELECT 'init_priv', pg_catalog.pg_describe_object(ip.classoid, ip.objoid, ip.objsubid), ip.privtype, ip.initprivs
FROM pg_catalog.pg_init_privs ip
WHERE (ip.classoid, ip.objoid) IN (
        SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_idempotency')
   OR (ip.classoid = 'pg_catalog.pg_namespace'::regclass AND ip.objoid = 'idempotency'::regnamespace)
ORDER BY 2, ip.objsubid;

-- 1.2: which roles each object depends on (owner 'o', ACL 'a', initial
-- privileges 'i' from PostgreSQL 17), by name: an update that replays grants
-- must leave the same dependencies as a fresh install granted the same way
SELECT 'shdepend', pg_catalog.pg_describe_object(sd.classid, sd.objid, sd.objsubid), sd.deptype,
       CASE WHEN sd.refobjid = 10 THEN '<bootstrap superuser>' ELSE sd.refobjid::regrole::text END
FROM pg_catalog.pg_shdepend sd
WHERE sd.dbid = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  AND ((sd.classid, sd.objid) IN (
        SELECT d.classid, d.objid FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
        WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'pg_idempotency')
       OR (sd.classid = 'pg_catalog.pg_namespace'::regclass AND sd.objid = 'idempotency'::regnamespace))
ORDER BY 2, 3, 4;
