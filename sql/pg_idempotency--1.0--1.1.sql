-- pg_idempotency 1.0 -> 1.1 (ALTER EXTENSION pg_idempotency UPDATE).
-- Every SQL change of 1.1 is made here and in pg_idempotency--1.1.sql alike;
-- the upgrade test compares an updated 1.0 with a fresh 1.1.
\echo Use "ALTER EXTENSION pg_idempotency UPDATE TO '1.1'" to load this file. \quit

-- 1.1: idempotent consumers. true = this transaction is the first to process
-- the key (recorded completed with the caller's transaction); false = already
-- processed; 55P03 while another transaction may still commit or roll it back.
CREATE FUNCTION idempotency.once(scope text, key text, ttl interval DEFAULT NULL, wait interval DEFAULT '0')
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_once' LANGUAGE C VOLATILE PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION idempotency.once(text, text, interval, interval) FROM PUBLIC;
