-- Exactly-once invariants after `torture load` (psql -v scope=...).
-- Prints one row per check: its name and the number of violations (must be 0).
WITH k AS (SELECT * FROM idempotency.keys WHERE scope = :'scope'),
     b AS (SELECT key, count(*) AS n, min(id) AS id, min(token) AS token
           FROM torture.business WHERE scope = :'scope' GROUP BY key),
     s AS (SELECT * FROM torture.seen WHERE scope = :'scope')
SELECT 'completed key without exactly one business row' AS check, count(*) AS violations
  FROM k LEFT JOIN b USING (key) WHERE k.state = 'completed' AND coalesce(b.n, 0) <> 1
UNION ALL
SELECT 'stored response differs from the business row', count(*)
  FROM k JOIN b USING (key)
 WHERE k.state = 'completed'
   AND (k.response_status IS DISTINCT FROM 201
        OR convert_from(k.response_body, 'UTF8') IS DISTINCT FROM 'id=' || b.id
        OR k.response_headers IS DISTINCT FROM jsonb_build_object('id', b.id)
        OR k.token IS DISTINCT FROM b.token)
UNION ALL
SELECT 'business rows of a key that is not completed', coalesce(sum(b.n), 0)
  FROM b LEFT JOIN k USING (key) WHERE k.state IS DISTINCT FROM 'completed'
UNION ALL
SELECT 'acknowledged finish missing or different', count(*)
  FROM s LEFT JOIN k USING (key)
 WHERE s.kind = 'F'
   AND (k.state IS DISTINCT FROM 'completed' OR convert_from(k.response_body, 'UTF8') IS DISTINCT FROM s.value)
UNION ALL
SELECT 'key finished (commit acknowledged) more than once', count(*)
  FROM (SELECT key FROM s WHERE kind = 'F' GROUP BY key HAVING count(*) > 1) AS twice
UNION ALL
SELECT 'replay differs from the stored response', count(*)
  FROM s LEFT JOIN k USING (key)
 WHERE s.kind = 'R'
   AND (k.state IS DISTINCT FROM 'completed' OR convert_from(k.response_body, 'UTF8') IS DISTINCT FROM s.value)
UNION ALL
SELECT 'in_progress key with a stored response', count(*)
  FROM k WHERE k.state = 'in_progress'
   AND (k.response_status IS NOT NULL OR k.response_body IS NOT NULL OR k.locked_until IS NULL)
UNION ALL
SELECT 'completed key with a lease', count(*)
  FROM k WHERE k.state = 'completed' AND (k.locked_until IS NOT NULL OR k.completed_at IS NULL);
