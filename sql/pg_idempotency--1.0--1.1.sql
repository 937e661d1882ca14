-- pg_idempotency 1.0 -> 1.1 (ALTER EXTENSION pg_idempotency UPDATE).
-- Every SQL change of 1.1 is made here and in pg_idempotency--1.1.sql alike;
-- the upgrade test compares an updated 1.0 with a fresh 1.1.
\echo Use "ALTER EXTENSION pg_idempotency UPDATE TO '1.1'" to load this file. \quit
